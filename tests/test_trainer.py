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
from maml_rl.meta_updates.base import NonFiniteError
from maml_rl.trainer import RESUMES_NAME, Trainer, read_resumes

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


def test_a_resume_that_changes_settings_is_recorded(tmp_path):
    # config.yaml holds the latest settings; resumes.yaml says from which iteration each
    # change applies and what it replaced. A resume that changes nothing records nothing.
    Trainer(_config("training.iterations=2", "evaluation.at_end=false"), tmp_path).train()
    Trainer(_config("training.iterations=2", "evaluation.at_end=false"), tmp_path,
            resume=True).train()
    assert not (tmp_path / RESUMES_NAME).exists() and read_resumes(tmp_path) == []
    Trainer(_config("training.iterations=3", "evaluation.at_end=false", "algorithm=anil"),
            tmp_path, resume=True).train()
    Trainer(_config("training.iterations=4", "evaluation.at_end=false", "algorithm=anil",
                    "inner.lr=0.02"), tmp_path, resume=True).train()
    first, second = read_resumes(tmp_path)
    assert first == {"iteration": 2,
                     "changed": {"algorithm": "anil", "training.iterations": 3},
                     "was": {"algorithm": "maml", "training.iterations": 2}}
    assert second["iteration"] == 3 and second["changed"] == {"inner.lr": 0.02,
                                                              "training.iterations": 4}
    assert second["was"]["inner.lr"] == load_config("configs/sinusoid.yaml").inner.lr
    assert load_config(tmp_path / "config.yaml").algorithm == "anil"
    (tmp_path / RESUMES_NAME).write_text("iteration: 3\n")
    with pytest.raises(ConfigError, match="expected a list of"):
        read_resumes(tmp_path)


def test_resuming_a_finished_run_says_there_is_nothing_to_train(tmp_path, capsys):
    from maml_rl.cli import train_main

    argv = ["configs/sinusoid.yaml", *TINY, "training.iterations=2", "evaluation.at_end=false"]
    assert train_main([*argv, "--run-dir", str(tmp_path)]) == 0
    capsys.readouterr()
    before = (tmp_path / "metrics.csv").read_bytes()
    assert train_main(["--resume", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "has 2 of training.iterations=2: nothing to train" in out
    assert (tmp_path / "metrics.csv").read_bytes() == before


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    trainer = Trainer(_config("training.iterations=20"), tmp_path)
    real = trainer.learner.meta_iteration
    calls = {"n": 0}

    def poisoned(tasks, iteration=None):
        calls["n"] += 1
        if calls["n"] == 8:
            raise NonFiniteError("meta-loss is nan; the parameters were not updated")
        return real(tasks, iteration)

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

    def interrupted(tasks, iteration=None):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return real(tasks, iteration)

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
    assert b"\r" not in (tmp_path / "metrics.csv").read_bytes()  # plain LF line endings


def test_progress_bar_names_returns_and_losses_not_surrogates():
    import io

    from tqdm import tqdm

    from maml_rl.trainer import _update_progress

    out = io.StringIO()
    bar = tqdm(total=10, file=out, mininterval=0)
    for _ in range(10):
        _update_progress(bar, {"surrogate/before": -1e-10, "surrogate/after": -0.0094,
                               "return/pre_adaptation": -256.7,
                               "return/post_adaptation": -254.6, "kl": 0.0096})
    bar.close()
    text = out.getvalue()
    assert "return before=-256.7" in text and "return after=-254.6" in text
    assert "-1e-10" not in text and "-0.0094" not in text


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
    # Other tasks than the run's own held-out set: a folder of their own under eval/.
    out = tmp_path / "eval" / "12tasks-seed5"
    results = json.loads((out / "results.json").read_text())
    assert results["maml"]["steps"] == [0, 1, 2] and len(results["maml"]["tasks"]) == 12
    first = results["maml"]["mean"]
    assert evaluate_main([str(tmp_path), "--steps", "2", "--tasks", "12", "--seed", "5"]) == 0
    assert json.loads((out / "results.json").read_text())["maml"]["mean"] == first
    assert "mse on 12 held-out tasks" in capsys.readouterr().out
    assert evaluate_main([str(tmp_path / "nope")]) == 2
    assert evaluate_main([str(tmp_path), "--tasks", "0"]) == 2
    assert "--tasks: must be >= 1, got 0" in capsys.readouterr().err


NAV_TINY = [
    "sampling.meta_batch_size=3", "sampling.support_size=3", "sampling.query_size=3",
    "sampling.horizon=20", "policy.hidden_sizes=[8, 8]", "logging.progress=false",
    "logging.tensorboard=false", "evaluation.at_end=false", "device=cpu", "threads=1",
]


def test_double_ctrl_c_in_the_line_search_resumes_as_an_uninterrupted_run(tmp_path, monkeypatch):
    # The second Ctrl-C lands inside TRPO's line search of iteration 4, with a trial step in
    # the parameters and every RNG already advanced by that iteration's sampling. The
    # checkpoint must hold iteration 3's parameters with iteration 3's RNG states, so that
    # 3 + resume to 6 equals 6 uninterrupted iterations, metric for metric.
    from maml_rl.meta_updates import trpo

    config = lambda n: load_config("configs/navigation_2d.yaml",  # noqa: E731
                                   [*NAV_TINY, f"training.iterations={n}"])
    Trainer(config(6), tmp_path / "full").train()
    half = Trainer(config(6), tmp_path / "half")
    real_search = trpo.backtracking_line_search
    searches = {"n": 0}

    def interrupted_search(params, full_step, loss_fn, kl_fn, *args, **kwargs):
        searches["n"] += 1
        if searches["n"] < 4:
            return real_search(params, full_step, loss_fn, kl_fn, *args, **kwargs)

        def second_ctrl_c():
            raise KeyboardInterrupt

        return real_search(params, full_step, loss_fn, second_ctrl_c, *args, **kwargs)

    monkeypatch.setattr(trpo, "backtracking_line_search", interrupted_search)
    result = half.train()
    assert result.status == "interrupted" and result.iteration == 3
    assert load_checkpoint(tmp_path / "half" / "checkpoint.pt")["iteration"] == 3
    monkeypatch.setattr(trpo, "backtracking_line_search", real_search)
    Trainer(config(6), tmp_path / "half", resume=True).train()
    strip = lambda rows: [{k: v for k, v in r.items()  # noqa: E731
                           if not k.startswith(("time/", "perf/"))} for r in rows]
    assert strip(read_metrics(tmp_path / "half")) == strip(read_metrics(tmp_path / "full"))
    for name, value in _params(tmp_path / "full").items():
        torch.testing.assert_close(_params(tmp_path / "half")[name], value, rtol=0, atol=0)


def test_ctrl_c_during_the_final_evaluation_keeps_the_checkpoint(tmp_path, monkeypatch):
    trainer = Trainer(_config("training.iterations=2"), tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer.learner, "evaluate", interrupted)
    result = trainer.train()
    assert result.status == "interrupted"
    assert "final evaluation" in result.message and "maml-evaluate" in result.message
    assert load_checkpoint(tmp_path / "checkpoint.pt")["iteration"] == 2
    assert not (tmp_path / "eval").exists()


def test_an_existing_run_is_refused_unless_resume_or_overwrite(tmp_path):
    run = tmp_path / "run"
    Trainer(_config("training.iterations=2", "evaluation.at_end=false"), run).train()
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match=r"already holds a run.*--resume.*--overwrite"):
        Trainer(_config("training.iterations=3"), run)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    (run / "eval").mkdir()
    (run / "eval" / "stale.json").write_text("{}")
    Trainer(_config("training.iterations=1", "evaluation.at_end=false"), run,
            overwrite=True).train()
    assert not (run / "eval").exists()  # the old run is gone completely
    assert [r["iteration"] for r in read_metrics(run)] == [1]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds other files"):
        Trainer(_config(), other, overwrite=True)
    assert (other / "notes.txt").read_text() == "mine"
