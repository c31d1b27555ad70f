"""Shipped meta-trained policies (pretrained/<config>/) load and adapt; the Python API works."""

from pathlib import Path

import numpy as np
import pytest
import torch

from envs.metaworld_ml1 import MissingExtraError
from maml_rl.config import ConfigError, load_config
from maml_rl.runs import load_run
from maml_rl.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p for p in (REPO / "pretrained").glob("*") if (p / "checkpoint.pt").is_file())


def _check_adapts(run, tasks) -> None:
    space = run.family.action_space
    meta = run.adapt(tasks[0], steps=0)
    for task in tasks:
        policy = run.adapt(task, steps=1, episodes=2)
        moved = [not torch.equal(policy.params[k], meta.params[k]) for k in meta.params]
        assert any(moved), "one inner step left every parameter where it was"
        obs = np.zeros(run.family.observation_space.shape, dtype=np.float32)
        action = policy.act(obs)
        assert action.shape == space.shape and np.all(np.isfinite(action))
        assert policy.act(obs, deterministic=False).shape == space.shape


@pytest.mark.parametrize("run_dir", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_checkpoint_loads_and_adapts_one_step_on_two_tasks(run_dir):
    try:
        run = load_run(run_dir)
    except MissingExtraError as err:  # Meta-World runs, where the extra is not installed
        pytest.skip(f"{run_dir.name}: {err}")
    # A run still in progress (continued with --resume across sessions) ships without eval/.
    finished = run.iteration == load_config(run_dir / "config.yaml").training.iterations
    try:
        assert run.iteration >= 1
        if run.family.supervised:
            curve = run.learner.evaluate(2, 1, 0)
            assert np.all(np.isfinite(curve.per_task))
        else:
            _check_adapts(run, run.sample_tasks(2, seed=0))
    finally:
        run.close()
    expected = ["config.yaml", "metrics.csv"]
    expected += ["eval/results.json", "eval/adaptation.png"] if finished else []
    for name in expected:
        assert (run_dir / name).is_file(), name


def test_load_run_adapt_act_on_a_fresh_run(tmp_path):
    config = load_config("configs/navigation_2d.yaml", [
        "training.iterations=2", "sampling.meta_batch_size=2", "sampling.support_size=2",
        "sampling.query_size=2", "policy.hidden_sizes=[8]", "evaluation.at_end=false",
        "logging.progress=false", "logging.tensorboard=false", "device=cpu", "threads=1"])
    Trainer(config, tmp_path / "run").train()
    run = load_run(tmp_path / "run")
    try:
        assert run.iteration == 2
        _check_adapts(run, [{"x": 0.3, "y": -0.2}, {"x": -0.4, "y": 0.1}])
        a = run.adapt({"x": 0.3, "y": -0.2}, steps=1, episodes=2, seed=3)
        b = run.adapt({"x": 0.3, "y": -0.2}, steps=1, episodes=2, seed=3)
        for k in a.params:  # seeded: the same episodes, the same adapted policy
            torch.testing.assert_close(a.params[k], b.params[k], rtol=0, atol=0)
        with pytest.raises(ValueError, match="not a task of"):
            run.adapt({"velocity": 1.0})
    finally:
        run.close()
    with pytest.raises(ConfigError, match="not a run directory"):
        load_run(tmp_path)


#: Shipped runs whose own evaluation (``eval/``, the run's evaluation settings) takes under
#: about 30 s here; the others (Ant, Meta-World) are checked by their results pages' commands.
QUICK_EVALUATIONS = ["navigation_2d", "navigation_2d_promp", "sinusoid", "sine_line",
                     "sine_line_platipus", "bandit_k5", "tabular_mdp", "halfcheetah_vel",
                     "halfcheetah_dir"]


@pytest.mark.slow
@pytest.mark.parametrize("name", QUICK_EVALUATIONS)
def test_shipped_evaluation_reproduces(name, tmp_path):
    """Evaluating a shipped checkpoint again gives its shipped eval/results.json: every mean
    within a twentieth of its 95% CI (the README's 2D navigation number once stopped
    reproducing after the episodes' seeding changed, by 0.4 of a CI; the later steps of a
    chaotic MuJoCo family move in their last digits with the number of threads)."""
    from maml_rl.cli import evaluate_main
    from maml_rl.evaluation import read_results

    run_dir = REPO / "pretrained" / name
    config = load_config(run_dir / "config.yaml")
    (shipped,) = [c for c in read_results(run_dir / "eval" / "results.json")
                  if c.method == config.algorithm]
    assert evaluate_main([str(run_dir), "--steps", str(shipped.steps[-1]),
                          "--out", str(tmp_path)]) == 0
    (again,) = [c for c in read_results(tmp_path / "results.json")
                if c.method == config.algorithm]
    assert again.steps == shipped.steps
    for k, old, new, ci in zip(shipped.steps, shipped.mean, again.mean, shipped.ci95,
                               strict=True):
        if not np.isfinite(old):  # a mean that overflowed (diverging tasks) overflows again
            assert not np.isfinite(new), f"{name}: finite {new} after {k} steps, shipped {old}"
            continue
        assert abs(new - old) <= 0.05 * ci, (
            f"{name}: {new:.4f} after {k} steps, shipped {old:.4f} +- {ci:.4f}; "
            f"re-evaluate with: maml-evaluate pretrained/{name}")
