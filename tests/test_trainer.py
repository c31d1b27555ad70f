"""The training run: determinism, resume, NaN guard, Ctrl-C, improvement, evaluation output."""

import json
import os
import re
import signal

import numpy as np
import pytest
import torch

from maml_rl.checkpoint import load_checkpoint
from maml_rl.config import ConfigError, load_config
from maml_rl.logger import read_metrics
from maml_rl.meta_optimizers import NonFiniteError
from maml_rl.trainer import Trainer

TINY = [
    "sampling.meta_batch_size=4", "sampling.support_size=5", "sampling.query_size=5",
    "policy.hidden_sizes=[16, 16]", "training.checkpoint_every=5", "logging.progress=false",
    "logging.tensorboard=false", "evaluation.num_tasks=20", "evaluation.steps=2",
    "evaluation.query_size=10", "device=cpu",
]


def _config(*overrides):
    return load_config("configs/sinusoid.yaml", [*TINY, *overrides])


def _params(run_dir):
    return load_checkpoint(run_dir / "checkpoint.pt")["learner"]["model"]


def test_same_seed_same_metrics(tmp_path):
    runs = []
    for name in ("a", "b"):
        result = Trainer(_config("training.iterations=6"), tmp_path / name).train()
        assert result.status == "completed" and result.iteration == 6
        runs.append(read_metrics(tmp_path / name))
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]  # noqa: E731
    assert strip(runs[0]) == strip(runs[1])
    other = Trainer(_config("training.iterations=6", "seed=1"), tmp_path / "c").train()
    assert strip(read_metrics(other.run_dir)) != strip(runs[0])


def test_resume_n_plus_n_equals_2n(tmp_path):
    Trainer(_config("training.iterations=10", "evaluation.at_end=false"), tmp_path / "full").train()
    Trainer(_config("training.iterations=5", "evaluation.at_end=false"), tmp_path / "half").train()
    resumed = Trainer(
        _config("training.iterations=10", "evaluation.at_end=false"), tmp_path / "half", resume=True
    )
    assert resumed.iteration == 5
    resumed.train()
    full, half = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "half")
    assert [r["iteration"] for r in half] == list(range(1, 11))
    for a, b in zip(full, half, strict=True):
        assert a["loss/post_adaptation"] == b["loss/post_adaptation"]
    for name, value in _params(tmp_path / "full").items():
        torch.testing.assert_close(_params(tmp_path / "half")[name], value, rtol=0, atol=0)


def test_meta_lr_milestones_step_the_rate_and_survive_a_resume(tmp_path):
    schedule = ["meta.lr=0.002", "meta.lr_milestones=[2, 4]", "meta.lr_gamma=0.5",
                "evaluation.at_end=false"]
    Trainer(_config("training.iterations=6", *schedule), tmp_path / "full").train()
    rates = [r["meta/lr"] for r in read_metrics(tmp_path / "full")]
    assert rates == pytest.approx([0.002, 0.002, 0.001, 0.001, 0.0005, 0.0005])
    # The rate is a function of the iteration: a run stopped at 3 and resumed continues it,
    # and ends with the same parameters.
    Trainer(_config("training.iterations=3", *schedule), tmp_path / "half").train()
    resumed = Trainer(_config("training.iterations=6", *schedule), tmp_path / "half", resume=True)
    resumed.train()
    assert [r["meta/lr"] for r in read_metrics(tmp_path / "half")] == rates
    assert [g["lr"] for g in resumed.learner.optimizer.param_groups] == [0.0005]
    for name, value in _params(tmp_path / "full").items():
        torch.testing.assert_close(_params(tmp_path / "half")[name], value, rtol=0, atol=0)
    # Without a schedule nothing is logged and the rate stays meta.lr.
    Trainer(_config("training.iterations=2", "evaluation.at_end=false"), tmp_path / "c").train()
    assert "meta/lr" not in read_metrics(tmp_path / "c")[0]


@pytest.mark.parametrize(("overrides", "message"), [
    (["meta.lr_milestones=[4, 2]"], "meta.lr_milestones: expected strictly increasing iterations"),
    (["meta.lr_milestones=[0]"], "meta.lr_milestones: expected strictly increasing iterations"),
    (["meta.lr_milestones=3"], "meta.lr_milestones: expected a non-empty list of integers"),
    (["meta.lr_gamma=1.5"], "meta.lr_gamma: must be <= 1, got 1.5"),
])
def test_meta_lr_schedule_errors(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        _config(*overrides)
    with pytest.raises(ConfigError, match=r"which meta\.optimizer: trpo does not use"):
        load_config("configs/navigation_2d.yaml", ["meta.lr_milestones=[10]"])


def test_resume_applies_a_new_meta_learning_rate_and_keeps_adams_moments(tmp_path):
    Trainer(_config("training.iterations=5", "evaluation.at_end=false"), tmp_path).train()
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["learner"]["optimizer"]
    resumed = Trainer(
        _config("training.iterations=6", "evaluation.at_end=false", "meta.lr=0.0001"),
        tmp_path, resume=True,
    )
    optimizer = resumed.learner.optimizer
    assert [group["lr"] for group in optimizer.param_groups] == [0.0001]
    assert saved["param_groups"][0]["lr"] != 0.0001
    moments = [optimizer.state[p]["exp_avg"] for p in optimizer.param_groups[0]["params"]]
    for moment, old in zip(moments, saved["state"].values(), strict=True):
        torch.testing.assert_close(moment, old["exp_avg"])


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    trainer = Trainer(_config("training.iterations=20"), tmp_path)
    real = trainer.learner.meta_iteration
    calls = {"n": 0}

    def poisoned(tasks):
        calls["n"] += 1
        if calls["n"] == 8:
            raise NonFiniteError("meta-loss is nan; the parameters were not updated")
        return real(tasks)

    monkeypatch.setattr(trainer.learner, "meta_iteration", poisoned)
    result = trainer.train()
    assert result.status == "non-finite"
    assert "iteration 8" in result.message and "checkpoint.pt" in result.message
    assert load_checkpoint(tmp_path / "checkpoint.pt")["iteration"] == 5
    assert all(torch.isfinite(v).all() for v in _params(tmp_path).values())


def test_nan_from_a_diverging_inner_step_is_detected(tmp_path):
    result = Trainer(_config("training.iterations=3", "inner.lr=1e30"), tmp_path).train()
    assert result.status == "non-finite"
    assert "meta-loss is" in result.message or "meta-gradient" in result.message


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path, monkeypatch):
    trainer = Trainer(_config("training.iterations=50"), tmp_path)
    real = trainer.learner.meta_iteration
    calls = {"n": 0}

    def interrupted(tasks):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return real(tasks)

    monkeypatch.setattr(trainer.learner, "meta_iteration", interrupted)
    result = trainer.train()
    assert result.status == "interrupted" and result.iteration == 3
    assert "--resume" in result.message
    assert load_checkpoint(tmp_path / "checkpoint.pt")["iteration"] == 3
    assert len(read_metrics(tmp_path)) == 3


def test_short_training_run_improves_post_adaptation_loss(tmp_path):
    config = _config("training.iterations=300", "sampling.meta_batch_size=10",
                     "policy.hidden_sizes=[40, 40]", "evaluation.at_end=false")
    Trainer(config, tmp_path).train()
    rows = read_metrics(tmp_path)
    first = np.mean([r["loss/post_adaptation"] for r in rows[:30]])
    last = np.mean([r["loss/post_adaptation"] for r in rows[-30:]])
    assert last < 0.75 * first
    last_pre = np.mean([r["loss/pre_adaptation"] for r in rows[-30:]])
    assert last < last_pre  # adaptation helps


def test_run_directory_and_evaluation_files(tmp_path):
    config = _config("training.iterations=5", "logging.tensorboard=true")
    Trainer(config, tmp_path).train()
    assert (tmp_path / "config.yaml").is_file()
    assert any((tmp_path / "tensorboard").iterdir())
    assert load_config(tmp_path / "config.yaml") == config
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    maml = results["maml"]
    assert {"steps", "mean", "ci95", "tasks", "metric"} <= set(maml)
    assert maml["steps"] == [0, 1, 2] and len(maml["tasks"]) == 20
    assert (tmp_path / "eval" / "adaptation.png").stat().st_size > 1000
    assert (tmp_path / "eval" / "results.csv").read_text().startswith("method,metric,steps")


def test_evaluation_is_deterministic_for_a_seed(tmp_path):
    trainer = Trainer(_config("training.iterations=2", "evaluation.at_end=false"), tmp_path)
    trainer.train()
    a = trainer.learner.evaluate(15, 2, seed=7)
    b = trainer.learner.evaluate(15, 2, seed=7)
    c = trainer.learner.evaluate(15, 2, seed=8)
    np.testing.assert_array_equal(a.per_task, b.per_task)
    assert not np.array_equal(a.per_task, c.per_task)


def test_resume_without_checkpoint_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        Trainer(_config("training.iterations=2"), tmp_path, resume=True)


def test_evaluate_script_on_a_run_directory(tmp_path, capsys):
    from maml_rl.cli import evaluate_main

    Trainer(_config("training.iterations=3", "evaluation.at_end=false"), tmp_path).train()
    assert evaluate_main([str(tmp_path), "--steps", "2", "--tasks", "12", "--seed", "5"]) == 0
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["maml"]["steps"] == [0, 1, 2] and len(results["maml"]["tasks"]) == 12
    first = results["maml"]["mean"]
    assert evaluate_main([str(tmp_path), "--steps", "2", "--tasks", "12", "--seed", "5"]) == 0
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["maml"]["mean"] == first
    assert "mse on 12 held-out tasks" in capsys.readouterr().out
    assert evaluate_main([str(tmp_path / "nope")]) == 2
    assert evaluate_main([str(tmp_path), "--tasks", "0"]) == 2
    assert "--tasks: must be >= 1, got 0" in capsys.readouterr().err
