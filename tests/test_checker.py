"""``envs.checker.check_task_family``: passes on good families, names the fault of broken ones."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from envs.checker import check_task_family, main
from envs.generic import TaskSyncVectorEnv


@dataclass(frozen=True)
class GoalTask:
    goal: float


class ToyGoalEnv(gym.Env):
    """Move a point on a line towards a goal; episodes end after 10 steps (time limit)."""

    metadata = {"render_modes": []}  # noqa: RUF012

    def __init__(self, ignore_task: bool = False, bad_terms: bool = False, bad_obs: bool = False):
        self.ignore_task, self.bad_terms, self.bad_obs = ignore_task, bad_terms, bad_obs
        self.observation_space = spaces.Box(-10.0, 10.0, (1,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self._task = GoalTask(0.0)
        self._x = 0.0

    def sample_tasks(self, n, rng):
        return [GoalTask(float(g)) for g in rng.uniform(-2.0, 2.0, size=n)]

    def set_task(self, task):
        self._task = task

    def get_task(self):
        return self._task

    def _obs(self):
        x = 20.0 if self.bad_obs else self._x  # outside the observation space
        return np.array([x], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._x = float(self.np_random.uniform(-0.1, 0.1))
        return self._obs(), {}

    def step(self, action):
        self._x = float(np.clip(self._x + 0.1 * float(action[0]), -10, 10))
        goal = 0.0 if self.ignore_task else self._task.goal  # the bug: the task is stored, unused
        distance = -abs(self._x - goal)
        terms = {"reward_distance": distance, "reward_bonus": 1.0 if self.bad_terms else 0.0}
        return self._obs(), distance, False, False, terms


class ShiftedSeedVectorEnv(TaskSyncVectorEnv):
    """A 'batched' version with a bug: sub-env i is seeded with seed + i + 1."""

    def __init__(self, num_envs=1, max_episode_steps=None, **kwargs):
        super().__init__([lambda: gym.make("maml_test/CheckerGood-v0")] * num_envs)

    def reset(self, *, seed=None, options=None):
        return super().reset(seed=None if seed is None else seed + 1, options=options)


def _register(name, vector_entry_point=None, **kwargs):
    env_id = f"maml_test/{name}-v0"
    if env_id not in gym.registry:
        gym.register(
            env_id,
            entry_point=ToyGoalEnv,
            vector_entry_point=vector_entry_point,
            max_episode_steps=10,
            kwargs=kwargs,
        )
    return env_id


GOOD = _register("CheckerGood")
IGNORES_TASK = _register("CheckerIgnoresTask", ignore_task=True)
BAD_TERMS = _register("CheckerBadTerms", bad_terms=True)
BAD_OBS = _register("CheckerBadObs", bad_obs=True)
BAD_BATCH = _register("CheckerBadBatch", vector_entry_point=ShiftedSeedVectorEnv)


@pytest.mark.parametrize("env_id", [GOOD, "maml/Navigation2D-v0", "maml/AntDir-v0",
                                    "maml/SineLine-v0"])
def test_good_families_pass(env_id):
    check_task_family(env_id, n_tasks=3, seed=0, steps=20)


@pytest.mark.parametrize(
    ("env_id", "message"),
    [
        (IGNORES_TASK, "does set_task take effect"),
        (BAD_TERMS, "sum of info terms"),
        (BAD_OBS, "check_env"),
        (BAD_BATCH, r"ShiftedSeedVectorEnv\), sub-env 0.*reset observations differ"),
        ("maml/NoSuchFamily-v0", "unknown environment id"),
    ],
)
def test_broken_families_fail_with_a_clear_message(env_id, message):
    with pytest.raises(AssertionError, match=message):
        check_task_family(env_id, n_tasks=2, seed=0, steps=10)


def test_an_env_without_task_methods_fails():
    with pytest.raises(AssertionError, match=r"has no sample_tasks\(\)"):
        check_task_family("CartPole-v1")


def test_command_line(capsys):
    assert main(["maml/Navigation2D-v0", "--tasks", "2"]) == 0
    assert main(["maml/NavigationD-v0"]) == 1
    out = capsys.readouterr().out
    assert "ok   maml/Navigation2D-v0" in out
    assert "FAIL maml/NavigationD-v0" in out and "Did you mean" in out
    assert main(["my/Nothing-v0", "--module", "no_such_module_here"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --module: cannot import 'no_such_module_here'")
    assert "\n" not in err


def test_runs_as_a_module():
    result = subprocess.run(
        [sys.executable, "-m", "envs.checker", "maml/HalfCheetahDir-v0", "--tasks", "2"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok   maml/HalfCheetahDir-v0" in result.stdout


class DictTaskEnv(ToyGoalEnv):
    """The same family with the task a plain dict of floats, as users naturally write it, and
    no get_task (optional)."""

    get_task = None

    def sample_tasks(self, n, rng):
        return [{"goal": float(g)} for g in rng.uniform(-2.0, 2.0, size=n)]

    def set_task(self, task):
        self._task = GoalTask(task["goal"])


def test_a_family_with_plain_dict_tasks_passes_and_trains(tmp_path):
    env_id = "maml_test/CheckerDictTask-v0"
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=DictTaskEnv, max_episode_steps=10)
    check_task_family(env_id, n_tasks=3, seed=0, steps=10)
    from maml_rl.family import load_family

    family = load_family(env_id, {})
    tasks = family.sample_tasks(3, np.random.default_rng(0))
    assert len(set(tasks)) == 3  # held immutably (hashable) inside the library
    venv = TaskSyncVectorEnv([lambda: gym.make(env_id)] * 3)
    venv.set_tasks(tasks)  # the env gets back the dicts it gave
    assert [e.unwrapped._task.goal for e in venv.envs] == [t.thaw()["goal"] for t in tasks]
    from maml_rl.config import load_config
    from maml_rl.trainer import Trainer

    config = load_config(None, [f"env.id={env_id}", "meta.optimizer=trpo",
                                "policy.hidden_sizes=[8]", "sampling.meta_batch_size=2",
                                "sampling.support_size=2",
                                "sampling.query_size=2", "training.iterations=2",
                                "evaluation.num_tasks=2", "evaluation.steps=1",
                                "logging.progress=false", "logging.tensorboard=false",
                                "device=cpu"])
    result = Trainer(config, tmp_path / "run").train()
    assert result.status == "completed"
    import json

    saved = json.loads((tmp_path / "run" / "eval" / "results.json").read_text())
    assert all(set(t) == {"goal"} for t in saved["maml"]["tasks"])
