"""Every fault: one line, exit 2, nothing lost (issue 13).

The command line is the contract here, so each case runs ``scripts/train.py`` or
``scripts/evaluate.py`` in a subprocess and checks: exit status 2, exactly one line on stderr
(``error: ...`` naming the file, key or env), no traceback anywhere, and every file that was in
the run directory before is byte-identical after. The helpers (:func:`run_cli`,
:func:`snapshot`, :func:`assert_one_line_error`, :func:`assert_kept`) are meant for more cases.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from maml_rl.checkpoint import CheckpointError, load_checkpoint

REPO = Path(__file__).resolve().parents[1]

# A real run in seconds: 2 iterations of 2 tasks x 2 episodes, evaluated on 2 tasks.
TINY = [
    "training.iterations=2", "sampling.meta_batch_size=2", "sampling.support_size=2",
    "sampling.query_size=2", "evaluation.num_tasks=2", "evaluation.steps=1",
    "logging.tensorboard=false", "logging.progress=false", "threads=1",
]

# A user's own family whose env misbehaves as its ``mode`` kwarg says; imported via env.module.
FAULTY_FAMILY = '''
import gymnasium as gym
import numpy as np


class FaultyPoint(gym.Env):
    """A point that does not move; ``mode`` picks the fault (``ok``: none)."""

    def __init__(self, mode="ok"):
        self.mode = mode
        self.observation_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-0.1, 0.1, shape=(1,), dtype=np.float32)
        self._task = 0.5

    def sample_tasks(self, n, rng):
        return [float(g) for g in rng.uniform(-1.0, 1.0, size=n)]

    def set_task(self, task):
        self._task = task

    def get_task(self):
        return self._task

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        size = 3 if self.mode == "reset_shape" else 2
        return np.zeros(size, dtype=np.float32), {}

    def step(self, action):
        obs = np.zeros((2, 2) if self.mode == "step_shape" else 2, dtype=np.float32)
        if self.mode == "inf_obs":
            obs[1] = np.inf
        reward = float("nan") if self.mode == "nan_reward" else -abs(self._task)
        return obs, reward, False, False, {}


gym.register(id="faulty/Point-v0", entry_point=FaultyPoint, max_episode_steps=5)
'''
FAULTY = ["env.id=faulty/Point-v0", "env.module=faulty_family"]


def run_cli(script: str, *args: str | Path, cwd: Path = REPO,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``scripts/<script>`` (or ``-c CODE`` when ``script`` is ``-c``) with ``args``."""
    command = [sys.executable, "-c" if script == "-c" else f"scripts/{script}"]
    command += [str(a) for a in args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (relative path -> bytes)."""
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def assert_one_line_error(proc: subprocess.CompletedProcess, *must_contain: str) -> str:
    """Exit status 2, exactly one non-empty line on stderr starting with ``error: `` and
    holding each of ``must_contain``, and no traceback anywhere; returns that line."""
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("error: "), line
    for text in must_contain:
        assert text in line, (text, line)
    assert proc.returncode == 2, (proc.returncode, line)
    return line


def assert_kept(before: dict[str, bytes], directory: Path, grown: tuple[str, ...] = ()) -> None:
    """Every file of ``before`` is still in ``directory``, byte-identical; those in ``grown``
    (appended logs) may only have grown, their old bytes a prefix of the new."""
    after = snapshot(directory)
    for name, data in before.items():
        assert name in after, f"{name} was deleted"
        if name in grown:
            assert after[name].startswith(data), f"{name} lost data"
        else:
            assert after[name] == data, f"{name} changed"


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory) -> dict[str, str]:
    """The subprocesses' environment: one torch thread, headless MuJoCo, the faulty family
    importable (PYTHONPATH, until env.module is also looked up next to the config)."""
    modules = tmp_path_factory.mktemp("modules")
    (modules / "faulty_family.py").write_text(textwrap.dedent(FAULTY_FAMILY))
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MUJOCO_GL="egl")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(modules), env.get("PYTHONPATH")]))
    return env


def _train(run_dir: Path, env: dict[str, str], *overrides: str) -> Path:
    proc = run_cli("train.py", "configs/navigation_2d.yaml", *TINY, *overrides,
                   "--run-dir", run_dir, env=env)
    assert proc.returncode == 0, proc.stderr
    return run_dir


@pytest.fixture(scope="module")
def nav_run(tmp_path_factory, cli_env) -> Path:
    """A finished 2-iteration 2D-navigation run (checkpoint at iteration 2, eval/ written)."""
    return _train(tmp_path_factory.mktemp("nav") / "run", cli_env)


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory, cli_env) -> Path:
    """A finished 2-iteration run of the faulty family in its ``ok`` mode."""
    return _train(tmp_path_factory.mktemp("faulty") / "run", cli_env, *FAULTY)


@pytest.fixture
def nav_copy(nav_run, tmp_path) -> Path:
    return shutil.copytree(nav_run, tmp_path / "run")


@pytest.fixture
def faulty_copy(faulty_run, tmp_path) -> Path:
    return shutil.copytree(faulty_run, tmp_path / "run")


def _edit_config(run_dir: Path, **changes) -> None:
    """Change ``section.key`` values of a run's config.yaml, written as train.py writes it."""
    path = run_dir / "config.yaml"
    data = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        section, name = key.split("__")
        data[section][name] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


# -- checkpoints ------------------------------------------------------------------------------


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:3000])


def _corrupt(path: Path) -> None:
    # Same length, so the archive still opens; its pickle then names a class that does not
    # exist, which torch's safe loader refuses with advice to load unsafely.
    data = path.read_bytes()
    assert b"collections\nOrderedDict" in data
    path.write_bytes(data.replace(b"collections\nOrderedDict", b"collections\nOrderedDicX"))


@pytest.mark.parametrize(("damage", "expected"), [
    (_truncate, "is truncated (3000 bytes"),
    (_corrupt, "is damaged and cannot be read safely"),
])
def test_evaluate_refuses_a_damaged_checkpoint(nav_copy, cli_env, damage, expected):
    damage(nav_copy / "checkpoint.pt")
    before = snapshot(nav_copy)
    proc = run_cli("evaluate.py", nav_copy, "--threads", "1", env=cli_env)
    line = assert_one_line_error(proc, f"checkpoint '{nav_copy / 'checkpoint.pt'}'", expected)
    assert "weights_only" not in line  # never advise an unsafe load
    assert_kept(before, nav_copy)


def test_evaluate_refuses_a_yaml_file_as_checkpoint(nav_copy, cli_env):
    before = snapshot(nav_copy)
    proc = run_cli("evaluate.py", nav_copy, "--checkpoint", nav_copy / "config.yaml",
                   "--threads", "1", env=cli_env)
    assert_one_line_error(proc, f"'{nav_copy / 'config.yaml'}'", "not a checkpoint",
                          "give the checkpoint.pt of a run")
    assert_kept(before, nav_copy)


def test_evaluate_refuses_a_directory_as_checkpoint(nav_copy, cli_env):
    before = snapshot(nav_copy)
    proc = run_cli("evaluate.py", nav_copy, "--checkpoint", nav_copy, env=cli_env)
    assert_one_line_error(proc, "--checkpoint", f"'{nav_copy}' is a directory")
    assert_kept(before, nav_copy)


def test_evaluate_refuses_a_checkpoint_of_another_config(nav_copy, faulty_run, cli_env):
    before = snapshot(nav_copy)
    other = faulty_run / "checkpoint.pt"
    proc = run_cli("evaluate.py", nav_copy, "--checkpoint", other, "--threads", "1",
                   env=cli_env)
    assert_one_line_error(proc, f"'{other}'", "env.id 'faulty/Point-v0'",
                          "env.id 'maml/Navigation2D-v0'", "mean.4.weight [1, 100] vs [2, 100]")
    assert_kept(before, nav_copy)


def test_resume_refuses_a_truncated_checkpoint(nav_copy, cli_env):
    _truncate(nav_copy / "checkpoint.pt")
    before = snapshot(nav_copy)
    proc = run_cli("train.py", "--resume", nav_copy, "training.iterations=3", env=cli_env)
    assert_one_line_error(proc, f"'{nav_copy / 'checkpoint.pt'}'", "is truncated")
    assert_kept(before, nav_copy)


def test_resume_refuses_a_config_edited_to_another_env(nav_copy, cli_env):
    _edit_config(nav_copy, env__id="faulty/Point-v0", env__module="faulty_family",
                 training__iterations=3)
    before = snapshot(nav_copy)
    proc = run_cli("train.py", "--resume", nav_copy, env=cli_env)
    assert_one_line_error(proc, f"'{nav_copy / 'checkpoint.pt'}'",
                          "env.id 'maml/Navigation2D-v0'", "env.id 'faulty/Point-v0'",
                          "mean.4.weight [2, 100] vs [1, 100]")
    assert_kept(before, nav_copy)


# One process, its os.fsync failing as on a full disk; then train.py's own entry point.
DISK_FULL = """
import errno, os, sys
def full(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
os.fsync = full
from maml_rl.cli import train_main
sys.exit(train_main(sys.argv[1:]))
"""


def test_disk_full_keeps_the_previous_checkpoint(nav_copy, cli_env):
    _edit_config(nav_copy, training__iterations=3)
    before = snapshot(nav_copy)
    proc = run_cli("-c", DISK_FULL, "--resume", nav_copy, env=cli_env)
    checkpoint = nav_copy / "checkpoint.pt"
    assert_one_line_error(proc, f"cannot write checkpoint '{checkpoint}'",
                          "No space left on device",
                          "the previous checkpoint there (iteration 2) is intact",
                          f"--resume {nav_copy}")
    assert_kept(before, nav_copy, grown=("metrics.csv",))
    assert set(snapshot(nav_copy)) == set(before)  # no temporary file left behind
    assert load_checkpoint(checkpoint)["iteration"] == 2


def test_a_damaged_checkpoint_is_always_a_checkpoint_error(nav_run, tmp_path):
    # Random damage fails in torch's reader as many exception types; all must become ours.
    data = (nav_run / "checkpoint.pt").read_bytes()
    rng = random.Random(0)
    for i in range(30):
        damaged = bytearray(data)
        for _ in range(5):
            damaged[rng.randrange(30, len(data) // 4)] = rng.randrange(256)
        path = tmp_path / f"{i}.pt"
        path.write_bytes(bytes(damaged))
        try:
            state = load_checkpoint(path)
        except CheckpointError as err:
            assert "\n" not in str(err) and "weights_only" not in str(err)
        else:  # damage that missed everything that matters
            assert {"iteration", "learner", "config"} <= set(state)


# -- the env's output -----------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "expected"), [
    ("nan_reward", "non-finite reward (nan) at step 1"),
    ("inf_obs", "non-finite observation (observation[1] = inf) at step 1"),
])
def test_a_non_finite_env_stops_training_and_keeps_the_checkpoint(faulty_copy, cli_env, mode,
                                                                  expected):
    _edit_config(faulty_copy, training__iterations=3, env__kwargs={"mode": mode})
    before = snapshot(faulty_copy)
    proc = run_cli("train.py", "--resume", faulty_copy, env=cli_env)
    assert_one_line_error(proc, "stopped at iteration 3", "env 'faulty/Point-v0'", expected,
                          "of task ", f"checkpoint is kept: {faulty_copy / 'checkpoint.pt'}")
    assert_kept(before, faulty_copy)


def test_a_non_finite_env_stops_evaluation(faulty_copy, cli_env):
    before = snapshot(faulty_copy)
    proc = run_cli("evaluate.py", faulty_copy, "evaluation.env_kwargs={mode: nan_reward}",
                   "--threads", "1", env=cli_env)
    assert_one_line_error(proc, "env 'faulty/Point-v0'", "non-finite reward (nan)", "of task ")
    assert_kept(before, faulty_copy)


def test_a_diverging_inner_step_names_the_loss_and_inner_lr(tmp_path, cli_env):
    proc = run_cli("train.py", "configs/navigation_2d.yaml", *TINY, "inner.lr=1e30",
                   "--run-dir", tmp_path / "run", env=cli_env)
    assert_one_line_error(proc, "stopped at iteration 1", "loss", "inner.lr",
                          "checkpoint is kept: none written yet")


@pytest.mark.parametrize(("mode", "expected"), [
    ("reset_shape", "reset() returned an observation of shape (3,), but its observation_space "
                    "has shape (2,)"),
    ("step_shape", "step() returned an observation of shape (2, 2), but its observation_space "
                   "has shape (2,)"),
])
def test_a_wrong_observation_shape_names_env_and_shapes(tmp_path, cli_env, mode, expected):
    proc = run_cli("train.py", "configs/navigation_2d.yaml", *TINY, *FAULTY,
                   f"env.kwargs={{mode: {mode}}}", "--run-dir", tmp_path / "run", env=cli_env)
    assert_one_line_error(proc, "env 'faulty/Point-v0'", expected)


def test_a_wrong_observation_shape_in_evaluation(faulty_copy, cli_env):
    before = snapshot(faulty_copy)
    proc = run_cli("evaluate.py", faulty_copy, "evaluation.env_kwargs={mode: step_shape}",
                   "--threads", "1", env=cli_env)
    assert_one_line_error(proc, "env 'faulty/Point-v0'", "step()", "shape (2, 2)",
                          "shape (2,)")
    assert_kept(before, faulty_copy)


# -- config and task files --------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("", "is empty"),
    ("# nothing but a comment\n", "is empty"),
    ("- 1\n- 2\n", "expected a mapping of sections"),
    ("just text\n", "expected a mapping of sections"),
])
def test_a_config_that_is_not_a_mapping_is_refused(tmp_path, cli_env, text, expected):
    config = tmp_path / "config.yaml"
    config.write_text(text)
    proc = run_cli("train.py", config, "--run-dir", tmp_path / "run", env=cli_env)
    assert_one_line_error(proc, f"config file '{config}'", expected)
    assert not (tmp_path / "run").exists()


def test_a_config_path_that_is_a_directory_is_refused(tmp_path, cli_env):
    proc = run_cli("train.py", "configs", "--run-dir", tmp_path / "run", env=cli_env)
    assert_one_line_error(proc, "config file 'configs' is a directory")


@pytest.mark.parametrize(("content", "expected"), [
    (b"[{x: 0.1, y: 0.2}]  # caf\xe9\n", "is not UTF-8 text (byte 0xe9"),
    (None, "is a directory"),
])
def test_a_bad_task_file_names_the_flag_and_the_file(nav_copy, tmp_path, cli_env, content,
                                                     expected):
    task_file = tmp_path / "tasks"
    if content is None:
        task_file.mkdir()
    else:
        task_file.write_bytes(content)
    before = snapshot(nav_copy)
    proc = run_cli("evaluate.py", nav_copy, "--task-file", task_file, env=cli_env)
    assert_one_line_error(proc, f"--task-file: '{task_file}'", expected)
    assert_kept(before, nav_copy)


# -- the run directory ------------------------------------------------------------------------


def test_an_existing_run_is_never_overwritten_without_being_asked(nav_copy, cli_env):
    before = snapshot(nav_copy)
    proc = run_cli("train.py", "configs/navigation_2d.yaml", *TINY, "--run-dir", nav_copy,
                   env=cli_env)
    assert_one_line_error(proc, f"--run-dir: '{nav_copy}' already holds a run",
                          f"--resume {nav_copy}", "--overwrite")
    assert_kept(before, nav_copy)
    assert snapshot(nav_copy).keys() == before.keys()


def test_overwrite_replaces_the_old_run_completely(nav_copy, cli_env):
    (nav_copy / "eval" / "stale.json").write_text("{}")
    (nav_copy / "baselines").mkdir()
    proc = run_cli("train.py", "configs/navigation_2d.yaml", *TINY, "training.iterations=1",
                   "evaluation.at_end=false", "--run-dir", nav_copy, "--overwrite", env=cli_env)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in nav_copy.iterdir()) == [
        "checkpoint.pt", "config.yaml", "metrics.csv"]
    assert load_checkpoint(nav_copy / "checkpoint.pt")["iteration"] == 1


def test_overwrite_is_not_applied_when_the_new_config_is_wrong(nav_copy, cli_env):
    before = snapshot(nav_copy)
    proc = run_cli("train.py", "configs/navigation_2d.yaml", *TINY, "inner.lrr=0.1",
                   "--run-dir", nav_copy, "--overwrite", env=cli_env)
    assert_one_line_error(proc, "inner.lrr", "did you mean 'inner.lr'")
    assert_kept(before, nav_copy)


@pytest.mark.parametrize("where", ["file", "proc"])
def test_a_run_dir_that_cannot_be_a_run_directory(tmp_path, cli_env, where):
    if where == "file":
        target = tmp_path / "notes.txt"
        target.write_text("mine")
        expected = "is a file, not a directory"
    else:
        target = Path("/proc/maml-rl-test")
        expected = "cannot write to '/proc/maml-rl-test'"
    proc = run_cli("train.py", "configs/navigation_2d.yaml", *TINY, "--run-dir", target,
                   env=cli_env)
    assert_one_line_error(proc, "--run-dir", expected)
    if where == "file":
        assert target.read_text() == "mine"


# -- Ctrl-C -----------------------------------------------------------------------------------


@pytest.mark.parametrize("signals", [1, 2])
def test_ctrl_c_ends_with_one_line_status_130_and_a_loadable_checkpoint(tmp_path, cli_env,
                                                                        signals):
    import signal
    import time

    run = tmp_path / "run"
    command = [sys.executable, "scripts/train.py", "configs/navigation_2d.yaml", *TINY,
               "training.iterations=500", "--run-dir", str(run)]
    proc = subprocess.Popen(command, cwd=REPO, env=cli_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (run / "metrics.csv").is_file():
        time.sleep(0.05)
    time.sleep(0.5)  # a few iterations in
    for _ in range(signals):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.01)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "interrupted at iteration" in lines[0], err
    state = load_checkpoint(run / "checkpoint.pt")
    assert 0 <= state["iteration"] < 500
    assert f"--resume {run}" in lines[0]
