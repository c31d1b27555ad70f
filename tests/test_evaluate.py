"""scripts/evaluate.py end to end on tiny runs: result files and keys, determinism, the paper's
baselines through stable-baselines3 (cache, weight transfer), videos and trajectory plots, and
the periodic evaluation during training."""

import json
import re
import tempfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from gymnasium.utils.env_checker import check_env

from envs.generic import make_task_vector_env
from envs.tasks import GoalPositionTask
from envs.wrappers import TaskObservationVectorEnv, TaskSamplingWrapper, task_features
from maml_rl.cli import evaluate_main
from maml_rl.comparison import PPOSettings, copy_sb3_weights, make_training_env
from maml_rl.config import ConfigError, load_config
from maml_rl.evaluation import AdaptationCurve, format_table, read_results, write_results
from maml_rl.family import load_family
from maml_rl.learners.reinforcement import RLMetaLearner
from maml_rl.logger import MetricsLogger, read_metrics
from maml_rl.policies import NONLINEARITIES, GaussianMLPPolicy
from maml_rl.trainer import Trainer

QUIET = ["logging.progress=false", "logging.tensorboard=false", "device=cpu"]
NAV = [*QUIET, "sampling.meta_batch_size=2", "sampling.support_size=3", "sampling.query_size=3",
       "policy.hidden_sizes=[8]", "evaluation.support_size=3", "evaluation.at_end=false",
       "training.iterations=2"]
SINE = [*QUIET, "sampling.meta_batch_size=4", "policy.hidden_sizes=[8]",
        "evaluation.num_tasks=10", "evaluation.steps=2", "evaluation.query_size=10",
        "evaluation.at_end=false", "training.iterations=3"]
KEYS = {"metric", "steps", "mean", "ci95", "tasks", "per_task", "flat", "median", "diverged"}


@pytest.fixture(scope="module")
def nav_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("nav")
    Trainer(load_config("configs/navigation_2d.yaml", NAV), run).train()
    return run


def _results(path, folder=""):
    """results.json of RUN/eval, or of RUN/eval/FOLDER (evaluations on other task sets)."""
    return json.loads((path / "eval" / folder / "results.json").read_text())


def test_nav_evaluate_writes_documented_files_and_repeats_for_a_seed(nav_run, capsys):
    args = [str(nav_run), "--tasks", "4", "--steps", "2", "--seed", "5"]
    assert evaluate_main([*args, "--video", "--video-tasks", "2"]) == 0
    folder = nav_run / "eval" / "4tasks-seed5"  # not the run's own held-out tasks
    results = _results(nav_run, "4tasks-seed5")
    assert set(results) == {"maml"} and KEYS <= set(results["maml"])
    maml = results["maml"]
    assert maml["steps"] == [0, 1, 2] and len(maml["mean"]) == len(maml["ci95"]) == 3
    assert maml["tasks"][0].keys() == {"x", "y"} and len(maml["tasks"]) == 4
    assert np.all(np.array(maml["mean"]) < 0)  # minus a distance at every step
    # How it was measured travels with it: the run's evaluation section as used.
    assert maml["settings"]["num_tasks"] == 4 and maml["settings"]["seed"] == 5
    assert maml["settings"]["steps"] == 2 and maml["settings"]["support_size"] == 3
    csv_bytes = (folder / "results.csv").read_bytes()
    assert b"\r" not in csv_bytes
    csv_text = csv_bytes.decode().splitlines()
    assert csv_text[0] == ("method,metric,steps,mean,ci95,num_tasks,flat,median,diverged,"
                           "change,change_ci95,improved")
    assert len(csv_text) == 1 + 3
    assert (folder / "adaptation.png").stat().st_size > 1000
    assert (folder / "videos" / "trajectories.png").stat().st_size > 5000
    out = capsys.readouterr().out
    assert "return on 4 held-out tasks" in out and "trajectories.png" in out
    assert evaluate_main(args) == 0
    assert _results(nav_run, "4tasks-seed5")["maml"]["per_task"] == maml["per_task"]
    # Three tasks at a time (fewer envs alive at once): the same numbers, task by task.
    chunked = nav_run / "eval" / "chunked"
    assert evaluate_main([*args, "evaluation.task_chunk=3", "--out", str(chunked)]) == 0
    result = json.loads((chunked / "results.json").read_text())["maml"]
    np.testing.assert_allclose(result["per_task"], maml["per_task"], rtol=1e-6)
    assert result["settings"]["task_chunk"] == 3
    assert evaluate_main([*args[:-1], "6"]) == 0
    assert _results(nav_run, "4tasks-seed6")["maml"]["per_task"] != maml["per_task"]
    assert _results(nav_run, "4tasks-seed5")["maml"]["per_task"] == maml["per_task"]


def test_task_file_fixes_the_tasks_and_reads_a_results_json(nav_run, tmp_path, capsys):
    # The paper's 40 test goals (cbfinn/maml_rl test_maml_point.py: legacy seed 1, U[-.5, .5]^2).
    np.random.seed(1)
    paper = np.random.uniform(-0.5, 0.5, size=(40, 2))
    shipped = yaml.safe_load(open("configs/tasks/navigation_2d_paper_test.yaml"))
    np.testing.assert_array_equal([[t["x"], t["y"]] for t in shipped], paper)
    out = tmp_path / "out"
    base = [str(nav_run), "--steps", "1", "--out", str(out)]
    assert evaluate_main([*base, "--task-file", "configs/tasks/navigation_2d_paper_test.yaml",
                          "--tasks", "3"]) == 0
    first = json.loads((out / "results.json").read_text())["maml"]
    assert first["tasks"] == shipped[:3]
    assert "return on 3 held-out tasks" in capsys.readouterr().out
    # An earlier evaluation's results.json gives the same tasks, hence the same curve.
    (tmp_path / "again.json").write_text((out / "results.json").read_text())
    assert evaluate_main([*base, "--task-file", str(tmp_path / "again.json")]) == 0
    again = json.loads((out / "results.json").read_text())["maml"]
    assert again["tasks"] == first["tasks"] and again["per_task"] == first["per_task"]
    # --seed then draws only the episodes: same tasks, other returns.
    assert evaluate_main([*base, "--task-file", str(tmp_path / "again.json"), "--seed", "9"]) == 0
    other = json.loads((out / "results.json").read_text())["maml"]
    assert other["tasks"] == first["tasks"] and other["per_task"] != first["per_task"]
    # Errors: one line each, nothing evaluated.
    (tmp_path / "velocity.yaml").write_text("- {velocity: 1.0}\n")
    (tmp_path / "empty.yaml").write_text("tasks: 3\n")
    for args, message in [
        (["--task-file", "nope.yaml"], "--task-file: 'nope.yaml' not found"),
        (["--task-file", str(tmp_path / "empty.yaml")], "holds no tasks; expected a non-empty"),
        (["--task-file", str(tmp_path / "velocity.yaml")],
         "--task-file: task 0 ({'velocity': 1.0}) is not a task of 'maml/Navigation2D-v0'"),
    ]:
        assert evaluate_main([*base, *args]) == 2
        assert message in capsys.readouterr().err


def test_sinusoid_evaluate_and_rl_only_flags(tmp_path, capsys):
    Trainer(load_config("configs/sinusoid.yaml", SINE), tmp_path).train()
    assert evaluate_main([str(tmp_path), "--tasks", "6", "--steps", "1"]) == 0
    results = _results(tmp_path, "6tasks")
    assert results["maml"]["metric"] == "mse" and results["maml"]["steps"] == [0, 1]
    assert KEYS <= set(results["maml"])
    # evaluation.* overrides, before or after the options
    assert evaluate_main([str(tmp_path), "--steps", "1", "evaluation.num_tasks=4"]) == 0
    assert len(_results(tmp_path)["maml"]["per_task"]) == 4
    capsys.readouterr()
    for flag in ("--video", "--task-file"):
        extra = ["configs/tasks/navigation_2d_paper_test.yaml"] if flag == "--task-file" else []
        assert evaluate_main([str(tmp_path), flag, *extra]) == 2
        assert f"{flag}: only for RL families" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--video-tasks", "0"], "--video-tasks: must be >= 1, got 0"),
    (["--baseline-steps", "100"], "--baseline-steps: only meaningful with --baselines"),
    (["--baselines", "--baseline-steps", "0"], "--baseline-steps: must be >= 1, got 0"),
    (["--steps", "-1"], "--steps: must be >= 0, got -1"),
    (["--checkpoint", "nope.pt"], "--checkpoint: 'nope.pt' not found"),
    (["inner.lr=0.3"], "override 'inner.lr=0.3': evaluate.py changes evaluation.* keys only"),
    (["evaluation.query_batch=-1"], "evaluation.query_batch: must be >= 0, got -1"),
    (["evaluation.query_batch=5"], "evaluation.query_batch: 5 applies to supervised families"),
])
def test_evaluate_command_line_errors(nav_run, capsys, args, message):
    assert evaluate_main([str(nav_run), *args]) == 2
    assert message in capsys.readouterr().err


def test_baselines_on_a_tiny_budget_are_cached_and_reported(nav_run, capsys):
    args = [str(nav_run), "--tasks", "3", "--steps", "1", "--seed", "2", "--baselines",
            "--baseline-steps", "600"]
    sb3_temp = set(Path(tempfile.gettempdir()).glob("SB3-*"))
    assert evaluate_main(args) == 0
    assert set(Path(tempfile.gettempdir()).glob("SB3-*")) == sb3_temp  # no stray log folders
    results = _results(nav_run, "3tasks-seed2")
    assert list(results) == ["maml", "pretrained", "random", "oracle"]
    for method in ("pretrained", "random"):
        assert results[method]["steps"] == [0, 1] and not results[method]["flat"]
    assert results["oracle"]["steps"] == [0] and results["oracle"]["flat"]
    assert all(KEYS <= set(entry) for entry in results.values())
    cache = nav_run / "baselines"
    for name in ("pretrained", "oracle"):
        summary = json.loads((cache / f"{name}.json").read_text())
        # PPO collects whole rollouts: 8 envs x 256 steps >= 600.
        assert summary["settings"]["timesteps"] == 600 and summary["timesteps_done"] == 2048
        assert summary["settings"]["hidden_sizes"] == [8]
        assert summary["learning_curve"][-1][0] == 2048  # (timesteps, mean training return)
        assert (cache / f"{name}.zip").is_file()
    stamps = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    capsys.readouterr()
    assert evaluate_main(args) == 0
    captured = capsys.readouterr()
    assert "cached PPO policy" in captured.err
    assert "oracle" in captured.out and "(not adapted)" in captured.out
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == stamps
    again = _results(nav_run, "3tasks-seed2")
    for method in results:
        assert again[method]["per_task"] == results[method]["per_task"], method
    # A later evaluation of MAML alone (here with videos) keeps the baselines' curves.
    assert evaluate_main([*args[:7], "--video", "--video-tasks", "1"]) == 0
    kept = _results(nav_run, "3tasks-seed2")
    assert list(kept) == ["maml", "pretrained", "random", "oracle"]
    for method in ("pretrained", "random", "oracle"):
        assert kept[method] == results[method], method
    csv_methods = {line.split(",")[0] for line in
                   (nav_run / "eval" / "3tasks-seed2" / "results.csv").read_text().splitlines()[1:]}
    assert csv_methods == {"maml", "pretrained", "random", "oracle"}


@pytest.mark.parametrize(("hidden", "nonlinearity"), [([8], "relu"), ([16, 8], "tanh")])
def test_ppo_actor_weights_are_our_policy(hidden, nonlinearity):
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    settings = PPOSettings("oracle", "maml/Navigation2D-v0", {}, 100, hidden, nonlinearity, 0.5,
                           1, 0, 0.99)
    venv = DummyVecEnv([lambda: make_training_env(settings, 0)])
    model = PPO("MlpPolicy", venv, device="cpu", seed=1, policy_kwargs={
        "net_arch": {"pi": hidden, "vf": hidden}, "activation_fn": NONLINEARITIES[nonlinearity],
        "log_std_init": np.log(0.5)})
    with torch.no_grad():
        for p in model.policy.parameters():  # off SB3's init, so a skipped layer shows
            p.add_(0.1 * torch.randn_like(p))
    ours = copy_sb3_weights(model.policy.state_dict(), GaussianMLPPolicy(4, 2, hidden,
                                                                         nonlinearity))
    obs = torch.randn(32, 4)
    theirs = model.policy.get_distribution(obs).distribution
    mine = ours(obs).base_dist
    torch.testing.assert_close(mine.loc, theirs.loc)
    torch.testing.assert_close(mine.scale.expand_as(mine.loc), theirs.scale)
    with pytest.raises(ValueError, match="linear layers"):
        copy_sb3_weights(model.policy.state_dict(), GaussianMLPPolicy(4, 2, [8, 8, 8]))
    with pytest.raises(ValueError, match="shape"):
        copy_sb3_weights(model.policy.state_dict(), GaussianMLPPolicy(3, 2, hidden))
    venv.close()


@pytest.mark.filterwarnings("ignore:.*(different from the unwrapped|infinity).*")
def test_task_wrappers_draw_tasks_and_show_them_to_the_oracle():
    env = TaskSamplingWrapper(gym.make("maml/Navigation2D-v0"), seed=3, observe_task=True)
    check_env(env, skip_render_check=True)
    goals = set()
    for _ in range(3):
        obs, info = env.reset()
        task = info["task"]
        np.testing.assert_array_equal(obs[2:], task_features(task))
        obs, *_ = env.step(env.action_space.sample())
        np.testing.assert_allclose(obs[2:], [task.x, task.y], rtol=1e-6)  # float32
        goals.add(task)
    assert len(goals) == 3  # a new task at every reset
    venv = TaskObservationVectorEnv(make_task_vector_env("maml/Navigation2D-v0", 2))
    venv.set_tasks([GoalPositionTask(0.1, 0.2), GoalPositionTask(-0.3, 0.4)])
    obs, _ = venv.reset(seed=0)
    np.testing.assert_allclose(obs, [[0, 0, 0.1, 0.2], [0, 0, -0.3, 0.4]], atol=1e-7)
    obs, *_ = venv.step(np.ones((2, 2), dtype=np.float32))
    np.testing.assert_allclose(obs[:, :2], 0.1, atol=1e-7)
    np.testing.assert_allclose(obs[:, 2:], [[0.1, 0.2], [-0.3, 0.4]], atol=1e-7)
    assert obs.shape[1:] == venv.single_observation_space.shape
    venv.close()


def _rendering_available() -> str | None:
    try:
        env = gym.make("maml/HalfCheetahVel-v0", render_mode="rgb_array", width=32, height=32)
        env.reset(seed=0)
        frame = env.render()
        env.close()
    except Exception as err:  # any EGL/OpenGL failure means: this machine cannot render
        return f"{type(err).__name__}: {err}"
    return None if frame is not None and frame.shape == (32, 32, 3) else "no frame rendered"


def test_video_has_one_frame_per_rendered_step(tmp_path, monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "egl")
    problem = _rendering_available()
    if problem:
        pytest.skip(f"MuJoCo cannot render headless here ({problem})")
    import imageio.v3 as iio

    from maml_rl.videos import record_adaptation

    config = load_config("configs/halfcheetah_vel.yaml", [
        *QUIET, "sampling.meta_batch_size=1", "sampling.support_size=2", "sampling.query_size=2",
        "sampling.horizon=20", "policy.hidden_sizes=[8]"])
    learner = RLMetaLearner(config, load_family(config.env.id, config.env.kwargs), "cpu")
    paths = record_adaptation(learner, 1, 2, 0, tmp_path, episodes=2, width=64, height=48)
    learner.close()
    video, stills = paths
    assert video.suffix in (".mp4", ".gif") and stills.suffix == ".png"
    frames = iio.imread(video, index=None)
    # 100 fps rendered at 50: every second of the 20 steps, plus the frame after reset.
    assert frames.shape[0] == 1 + 20 // 2
    assert frames.shape[1:3] == (48, 3 * 64)  # before | after 1 step | after 2 steps
    assert iio.imread(stills).shape[:2] == (4 * 48, 3 * 64)


@pytest.mark.parametrize(("config_path", "overrides", "metric"), [
    ("configs/sinusoid.yaml", SINE, "mse"),
    # Adam instead of TRPO: the test is about logging, and TRPO's steps are the slow part.
    ("configs/navigation_2d.yaml", [*NAV, "meta.optimizer=adam"], "return"),
])
def test_periodic_evaluation_is_logged_and_leaves_training_unchanged(
    tmp_path, config_path, overrides, metric
):
    every = [*overrides, "training.iterations=4", "evaluation.every=2",
             "evaluation.every_tasks=3", "evaluation.steps=1", "logging.tensorboard=true"]
    Trainer(load_config(config_path, every), tmp_path / "on").train()
    plain = load_config(config_path, [*overrides, "training.iterations=4"])
    Trainer(plain, tmp_path / "off").train()
    on, off = read_metrics(tmp_path / "on"), read_metrics(tmp_path / "off")
    keys = {f"eval/{metric}_step_0", f"eval/{metric}_step_1", "time/eval_s"}
    assert [sorted(keys & set(r)) for r in on] == [[], sorted(keys), [], sorted(keys)]
    assert not any(keys & set(r) for r in off)
    for a, b in zip(on, off, strict=True):
        shared = {k for k in a if not k.startswith(("time/", "eval/", "perf/"))}
        assert {k: a[k] for k in shared} == {k: b[k] for k in shared}
    assert any((tmp_path / "on" / "tensorboard").iterdir())


@pytest.mark.parametrize(("override", "message"), [
    ("evaluation.every=-1", "evaluation.every: must be >= 0, got -1"),
    ("evaluation.every_tasks=0", "evaluation.every_tasks: must be >= 1, got 0"),
    ("evaluation.every=often", "evaluation.every: expected an integer, got 'often'"),
    ("evaluation.every_task=3", "did you mean 'evaluation.every_tasks'"),
])
def test_evaluation_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("configs/sinusoid.yaml", [override])


def test_metrics_logger_adds_columns_that_appear_later(tmp_path):
    logger = MetricsLogger(tmp_path, tensorboard=False)
    logger.log(1, {"loss": 1.0})
    logger.log(2, {"loss": 0.5, "eval/mse_step_0": 2.0})
    logger.log(3, {"loss": 0.25})
    logger.close()
    assert read_metrics(tmp_path) == [
        {"iteration": 1, "loss": 1.0}, {"iteration": 2, "loss": 0.5, "eval/mse_step_0": 2.0},
        {"iteration": 3, "loss": 0.25}]


def test_results_json_of_earlier_versions_still_reads(tmp_path):
    curve = AdaptationCurve("maml", "return", [0, 1], np.array([[-3.0, -1.0], [-5.0, -2.0]]),
                            [GoalPositionTask(0.1, 0.2)] * 2)
    oracle = AdaptationCurve("oracle", "return", [0], np.array([[-0.5], [-0.7]]), flat=True)
    write_results([curve, oracle], tmp_path)
    back = read_results(tmp_path / "results.json")
    assert [c.method for c in back] == ["maml", "oracle"] and back[1].flat and not back[0].flat
    np.testing.assert_array_equal(back[0].per_task, curve.per_task)
    old = {"maml": {k: v for k, v in curve.to_dict().items() if k != "flat"}}
    (tmp_path / "old.json").write_text(json.dumps(old))
    (maml,) = read_results(tmp_path / "old.json")
    assert not maml.flat and maml.mean == curve.mean and maml.tasks == [{"x": 0.1, "y": 0.2}] * 2


def test_end_of_training_evaluation_keeps_baselines_on_the_same_tasks(tmp_path):
    config = load_config("configs/navigation_2d.yaml",
                         [*NAV, "evaluation.num_tasks=3", "evaluation.steps=1",
                          "evaluation.seed=2"])
    trainer = Trainer(config, tmp_path)
    tasks = trainer.learner.evaluate(3, 1, 2).tasks
    pretrained = AdaptationCurve("pretrained", "return", [0, 1], np.full((3, 2), -9.0), tasks)
    oracle = AdaptationCurve("oracle", "return", [0], np.full((3, 1), -1.0), tasks, flat=True)
    write_results([pretrained, oracle], tmp_path / "eval")
    curve = trainer.evaluate()
    results = _results(tmp_path)
    assert list(results) == ["maml", "pretrained", "oracle"]
    assert results["maml"]["mean"] == curve.mean
    assert results["pretrained"]["mean"] == [-9.0, -9.0] and results["oracle"]["flat"]
    # A folder holding curves on other tasks is left alone; the curve goes beside it.
    elsewhere = AdaptationCurve("random", "return", [0, 1], np.full((3, 2), -50.0),
                                [GoalPositionTask(0.3, 0.3)] * 3)
    write_results([elsewhere], tmp_path / "eval", merge=False)
    before = (tmp_path / "eval" / "results.json").read_bytes()
    trainer.evaluate()
    assert (tmp_path / "eval" / "results.json").read_bytes() == before
    assert list(_results(tmp_path, "iteration-0")) == ["maml"]
    trainer.learner.close()


def test_curve_reports_median_and_diverging_tasks(tmp_path):
    # Task 0 improves then blows up (4x its best, then inf, then NaN); task 1 improves; task 2
    # holds. The mean is inf/NaN from step 4 on, the median and the count say what happened.
    per_task = np.array([[3.0, 1.0, 0.5, 2.0, np.inf, np.nan],
                         [2.0, 0.5, 0.4, 0.3, 0.3, 0.2],
                         [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    curve = AdaptationCurve("maml", "mse", list(range(6)), per_task)
    assert curve.median == [2.0, 1.0, 0.5, 1.0, 1.0, 1.0]  # inf and NaN count as the worst
    assert curve.diverged == [0, 0, 0, 1, 1, 1]  # 2.0 > 3 x 0.5, then non-finite
    write_results([curve], tmp_path)
    (maml,) = json.loads((tmp_path / "results.json").read_text()).values()
    assert maml["median"] == curve.median and maml["diverged"] == curve.diverged
    rows = (tmp_path / "results.csv").read_text().splitlines()
    assert rows[0].endswith(",median,diverged,change,change_ci95,improved")
    assert rows[4].split(",")[7:9] == ["1.0", "1"]
    table = format_table([curve]).splitlines()
    assert table[3].split() == ["median", "2.000", "1.000", "0.500", "1.000", "1.000", "1.000"]
    assert table[4].split() == ["diverged", "0", "0", "0", "1", "1", "1"]
    # A score (return, accuracy) only diverges by turning non-finite; its NaN is the lowest.
    returns = AdaptationCurve("maml", "return", [0, 1, 2],
                              np.array([[-30.0, -5.0, -20.0], [-40.0, -10.0, np.nan]]))
    assert returns.diverged == [0, 0, 1] and returns.median[:2] == [-35.0, -7.5]


def test_curve_reports_the_change_from_zero_steps_paired_by_task(tmp_path):
    # Tasks far apart (offsets 0..900) that each gain 10 +- 1 from one step: the means' CIs
    # overlap widely, the paired change's CI excludes zero.
    rng = np.random.default_rng(0)
    offset = np.linspace(0.0, 900.0, 20)
    gain = 10.0 + rng.normal(0.0, 1.0, size=20)
    per_task = np.stack([offset, offset + gain, offset - 1.0], axis=1)
    success = np.stack([np.full(20, 0.5), np.where(gain > 10.0, 0.6, 0.5), np.full(20, 0.4)],
                       axis=1)
    curve = AdaptationCurve("maml", "return", [0, 1, 2], per_task, success=success)
    np.testing.assert_allclose(curve.change, np.array(curve.mean) - curve.mean[0], atol=1e-9)
    assert curve.change_ci95[0] == 0.0
    np.testing.assert_allclose(curve.change_ci95[1], 1.96 * gain.std(ddof=1) / np.sqrt(20))
    assert curve.change_ci95[1] < 1.5 and curve.ci95[1] > 100  # the tasks' spread cancels
    assert curve.change_ci95[2] == 0.0 and curve.change[2] == -1.0
    assert curve.improved == [0, 20, 0]
    change, ci = curve.success_change
    assert change[1] == pytest.approx(0.1 * (gain > 10.0).mean())
    assert ci[2] == pytest.approx(0.0, abs=1e-12)  # every task lost exactly 0.1
    # A loss improves by falling; a non-finite value never counts as improved.
    mse = AdaptationCurve("maml", "mse", [0, 1, 2], np.array([[2.0, 1.0, np.inf],
                                                               [1.0, 1.5, np.nan]]))
    assert mse.improved == [0, 1, 0] and mse.change[1] == pytest.approx(-0.25)
    write_results([curve], tmp_path)
    (maml,) = json.loads((tmp_path / "results.json").read_text()).values()
    assert maml["change"] == curve.change and maml["improved"] == curve.improved
    assert maml["success_change"] == change and maml["success_change_ci95"] == ci
    table = format_table([curve]).splitlines()
    assert table[-2].split()[:4] == ["vs", "0", "steps", f"+{curve.change[1]:.3f}"]
    assert table[-1].split() == ["improved", "20/20", "0/20"]
    from maml_rl.results_tables import _change_row

    row = _change_row("ours: maml, change", curve, [0, 1, 2], 1)
    cell = f"+{curve.change[1]:.1f} ± {curve.change_ci95[1]:.1f} (20/20)"
    assert row.split(" | ")[1:3] == ["", cell]


def test_table_columns_stay_apart_for_large_returns():
    # Returns of 1e4-1e5 (Meta-World's "v1" reward) once ran "62837.360 ± 11378.820" into the
    # next column's number: every cell keeps two spaces before the next, and rows align.
    per_task = np.array([[62837.36, 56941.67], [51000.0, 70000.0], [12000.0, 9000.0]])
    curve = AdaptationCurve("maml", "return", [0, 1], per_task)
    table = format_table([curve]).splitlines()
    cells = [re.split(r"\s{2,}", line.strip()) for line in table[1:]]
    means = [f"{m:.3f} ± {h:.3f}" for m, h in zip(curve.mean, curve.ci95, strict=True)]
    assert cells[1] == ["maml", *means]
    assert cells[-2] == ["vs 0 steps", f"+{curve.change[1]:.3f} ± {curve.change_ci95[1]:.3f}"]
    assert len({len(line) for line in table[1:5]}) == 1


def test_evaluate_draws_the_fits_of_a_regression_family(tmp_path):
    """The MAML paper's Fig. 2 for a run: support points, the true sine, and the model before
    and after adaptation, for the first held-out tasks of the evaluation (regression only)."""
    config = load_config("configs/sinusoid.yaml", [
        "training.iterations=3", "evaluation.at_end=false", "logging.progress=false",
        "logging.tensorboard=false", "device=cpu"])
    Trainer(config, tmp_path / "run").train()
    assert evaluate_main([str(tmp_path / "run"), "--steps", "2", "--tasks", "6",
                          "--out", str(tmp_path / "out")]) == 0
    fits = tmp_path / "out" / "fits.png"
    assert fits.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from envs.sinusoid import SinusoidEnv, SinusoidTask

    env = SinusoidEnv()
    env.set_task(SinusoidTask(2.0, 0.5))
    np.testing.assert_allclose(env.target(np.array([[0.5], [0.5 + np.pi / 2]])),
                               [[0.0], [2.0]], atol=1e-6)


def test_regression_baselines_pretrained_is_trained_cached_and_drawn(tmp_path, capsys):
    """--baselines on a regression run: the pretrained model (trained on every task jointly,
    then fine-tuned by plain gradient steps) on the same tasks and shots, cached, in fits.png."""
    config = load_config("configs/sinusoid.yaml", [
        "training.iterations=3", "evaluation.at_end=false", "logging.progress=false",
        "logging.tensorboard=false", "device=cpu"])
    run = tmp_path / "run"
    Trainer(config, run).train()
    args = [str(run), "--steps", "2", "--tasks", "6", "--baselines", "--baseline-steps", "30",
            "--out", str(tmp_path / "out")]
    assert evaluate_main(args) == 0
    assert "training jointly on the family's tasks for 30 iterations" in capsys.readouterr().err
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(results) == {"maml", "pretrained"}
    assert results["pretrained"]["tasks"] == results["maml"]["tasks"]
    assert (run / "baselines" / "pretrained.pt").is_file()
    # Its unadapted loss is the mean query loss of the cached model on the same shots.
    from maml_rl.runs import load_run
    from maml_rl.supervised_baseline import load_or_train_pretrained

    loaded = load_run(run)
    model = load_or_train_pretrained(loaded.config, loaded.family, run / "baselines", 30, "cpu",
                                     progress=False, log=lambda text: None)
    again = loaded.learner.evaluate(6, 2, config.evaluation.seed, "pretrained", model=model)
    np.testing.assert_allclose(again.per_task, results["pretrained"]["per_task"], rtol=1e-6)
    assert evaluate_main(args) == 0  # a second evaluation reuses the cache
    assert "pretrained: cached model" in capsys.readouterr().err
    assert (tmp_path / "out" / "fits.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_regression_landscape_passes_through_both_models(tmp_path, capsys):
    from maml_rl.cli import plot_main
    from maml_rl.landscape import meta_loss_landscape
    from maml_rl.runs import load_run
    from maml_rl.supervised_baseline import load_or_train_pretrained

    config = load_config("configs/sinusoid.yaml", [
        "training.iterations=3", "evaluation.at_end=false", "logging.progress=false",
        "logging.tensorboard=false", "device=cpu"])
    run = tmp_path / "run"
    Trainer(config, run).train()
    out = tmp_path / "landscape.png"
    argv = [str(run), "--landscape", "--inner-steps", "0", "1", "--points", "5",
            "--baseline-steps", "20", "--out", str(out)]
    assert plot_main(argv) == 0 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_main(argv) == 2 and "exists; pass --overwrite" in capsys.readouterr().err
    # At (0, 0) the landscape is MAML's loss, at (1, 0) the pretrained model's: with no inner
    # step, the mean query loss of each on the same shots.
    loaded = load_run(run)
    pretrained = load_or_train_pretrained(loaded.config, loaded.family, run / "baselines", 20,
                                          "cpu", progress=False, log=lambda text: None)
    land = meta_loss_landscape(loaded.learner, pretrained, [0], num_tasks=25, points=5)
    grid = land["losses"][0]
    ours = loaded.learner.evaluate(25, 0, 0).per_task.mean()
    theirs = loaded.learner.evaluate(25, 0, 0, "pretrained", model=pretrained).per_task.mean()
    assert land["alphas"][1] == 0.0 and land["alphas"][3] == 1.0 and land["betas"][2] == 0.0
    assert grid[2, 1] == pytest.approx(ours, rel=1e-5)
    assert grid[2, 3] == pytest.approx(theirs, rel=1e-5)
    assert abs(ours - theirs) > 1e-3  # two different points
    assert plot_main([str(tmp_path), "--landscape"]) == 2


def test_a_folder_of_other_tasks_is_refused_before_any_rollout(tmp_path, monkeypatch, capsys):
    config = load_config("configs/sinusoid.yaml", [
        "training.iterations=2", "evaluation.at_end=false", "logging.progress=false",
        "logging.tensorboard=false", "device=cpu"])
    Trainer(config, tmp_path / "run").train()
    other = AdaptationCurve("pretrained", "mse", [0, 1], np.ones((2, 2)),
                            [{"amplitude": 1.0, "phase": 0.0}, {"amplitude": 2.0, "phase": 1.0}])
    write_results([other], tmp_path / "out")
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}

    def no_rollouts(*args, **kwargs):
        raise AssertionError("evaluated before checking the output folder")

    from maml_rl.learners.supervised import SupervisedMetaLearner

    monkeypatch.setattr(SupervisedMetaLearner, "evaluate", no_rollouts)
    assert evaluate_main([str(tmp_path / "run"), "--tasks", "5", "--steps", "1",
                          "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds the curve of 'pretrained' on other held-out" in err
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before


def test_results_tables_give_the_command_of_an_evaluation_with_other_settings():
    from maml_rl.evaluation import AdaptationCurve, evaluation_settings
    from maml_rl.results_tables import evaluation_command

    config = load_config("configs/sinusoid.yaml")
    ev = config.evaluation
    own = evaluation_settings(config, ev.num_tasks, ev.steps, ev.seed)
    curve = lambda settings, method="maml": AdaptationCurve(  # noqa: E731
        method, "mse", [0, 1], np.ones((2, 2)), settings=settings)
    # The run's own end-of-training evaluation, or a file from before settings were recorded.
    assert evaluation_command("sinusoid", config, [curve(own)], None) is None
    assert evaluation_command("sinusoid", config, [curve(None)], "eval/x") is None
    other = {**own, "max_backtracks": 6, "seed": 7, "task_chunk": 5}
    assert evaluation_command("sinusoid", config, [curve(other), curve(other, "pretrained")],
                              "eval/backtracking") == (
        "maml-evaluate pretrained/sinusoid evaluation.max_backtracks=6 --seed 7 --baselines "
        "--out pretrained/sinusoid/eval/backtracking")
    lr = {**own, "lr": [0.01, 0.005]}
    assert evaluation_command("sinusoid", config, [curve(lr)], None) == (
        "maml-evaluate pretrained/sinusoid evaluation.lr=[0.01,0.005]")


def test_results_json_keeps_each_curves_settings_when_merged(tmp_path):
    from maml_rl.evaluation import AdaptationCurve, read_results, write_results

    tasks = [{"x": 0.1, "y": 0.2}, {"x": 0.3, "y": 0.4}]
    first = AdaptationCurve("maml", "return", [0, 1], np.ones((2, 2)), tasks)
    write_results([first], tmp_path, settings={"seed": 1})
    later = AdaptationCurve("pretrained", "return", [0, 1], np.zeros((2, 2)), tasks)
    write_results([later], tmp_path, settings={"seed": 1, "lr": 0.5})
    curves = {c.method: c for c in read_results(tmp_path / "results.json")}
    assert curves["maml"].settings == {"seed": 1}
    assert curves["pretrained"].settings == {"seed": 1, "lr": 0.5}
