"""The generic vector env (any registered task family) and the vector env factory."""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.vector import AutoresetMode

from envs.generic import TaskSyncVectorEnv, make_task_vector_env
from envs.navigation import Navigation2DVectorEnv

TOY_ID = "maml_test/GenericToy-v0"


@dataclass(frozen=True)
class TargetTask:
    target: float


class ToyTargetEnv(gym.Env):
    """Hit a target in [-1, 1]; terminates when within 0.1 of it; no batched version."""

    metadata = {"render_modes": []}  # noqa: RUF012

    def __init__(self) -> None:
        self.observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self._task = TargetTask(0.0)
        self._obs = np.zeros(2, dtype=np.float32)

    def sample_tasks(self, n, rng):
        return [TargetTask(float(t)) for t in rng.uniform(-1.0, 1.0, size=n)]

    def set_task(self, task):
        self._task = task

    def get_task(self):
        return self._task

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._obs = np.array([0.0, self.np_random.uniform()], dtype=np.float32)
        return self._obs.copy(), {}

    def step(self, action):
        error = abs(float(action[0]) - self._task.target)
        self._obs = np.array([self._obs[0] + 1.0, self.np_random.uniform()], dtype=np.float32)
        return self._obs.copy(), -error, error < 0.1, False, {"reward_error": -error}


if TOY_ID not in gym.registry:
    gym.register(TOY_ID, entry_point=ToyTargetEnv, max_episode_steps=6)


def test_fallback_is_a_task_sync_vector_env_with_disabled_autoreset():
    venv = make_task_vector_env(TOY_ID, 3)
    assert isinstance(venv, TaskSyncVectorEnv)
    assert venv.metadata["autoreset_mode"] == AutoresetMode.DISABLED
    assert venv.observation_space.shape == (3, 2)
    tasks = venv.sample_tasks(3, np.random.default_rng(0))
    venv.set_tasks(tasks)
    assert venv.get_tasks() == tasks
    assert [env.unwrapped.get_task() for env in venv.envs] == tasks
    with pytest.raises(ValueError, match="3 tasks"):
        venv.set_tasks(tasks[:2])
    with pytest.raises(RuntimeError, match="reset"):
        venv.step(np.zeros((3, 1), dtype=np.float32))
    venv.close()


def test_fallback_matches_single_envs_and_freezes_done_sub_envs():
    tasks = [TargetTask(0.5), TargetTask(-0.3), TargetTask(0.9)]
    # Sub-env 0 hits its target at step 2 (terminates); the others run into the time limit.
    actions = np.array([[[0.0], [0.0], [0.0]]] * 8, dtype=np.float32)
    actions[2, 0, 0] = 0.55
    venv = make_task_vector_env(TOY_ID, 3)
    venv.set_tasks(tasks)
    obs, _ = venv.reset(seed=4)
    results = [venv.step(a) for a in actions]
    single = gym.make(TOY_ID)
    for i, task in enumerate(tasks):
        single.unwrapped.set_task(task)
        obs_i, _ = single.reset(seed=4 + i)
        np.testing.assert_array_equal(obs[i], obs_i)
        for t in range(8):
            obs_i, reward, terminated, truncated, info = single.step(actions[t, i])
            b_obs, b_rew, b_term, b_trunc, b_info = results[t]
            np.testing.assert_array_equal(b_obs[i], obs_i)
            assert (b_rew[i], b_term[i], b_trunc[i]) == (reward, terminated, truncated)
            assert b_info["_reward_error"][i] and b_info["reward_error"][i] == info["reward_error"]
            if terminated or truncated:
                break
        for b_obs, b_rew, b_term, b_trunc, b_info in results[t + 1 :]:
            np.testing.assert_array_equal(b_obs[i], obs_i)
            assert b_rew[i] == 0.0 and (b_term[i] or b_trunc[i])
            assert not b_info.get("_reward_error", np.zeros(3, bool))[i]
    assert results[2][2].tolist() == [True, False, False]
    assert results[5][3].tolist() == [False, True, True]
    venv.close()


def test_fallback_reset_mask_resets_only_the_masked_sub_envs():
    venv = make_task_vector_env(TOY_ID, 3)
    first, _ = venv.reset(seed=0)
    stepped, *_ = venv.step(np.zeros((3, 1), dtype=np.float32))
    mask = np.array([True, False, True])
    obs, _ = venv.reset(seed=0, options={"reset_mask": mask})
    np.testing.assert_array_equal(obs[mask], first[mask])
    np.testing.assert_array_equal(obs[~mask], stepped[~mask])
    venv.close()


def test_fallback_and_batched_navigation_agree():
    batched = make_task_vector_env("maml/Navigation2D-v0", 4)
    assert isinstance(batched, Navigation2DVectorEnv)
    fallback = TaskSyncVectorEnv([lambda: gym.make("maml/Navigation2D-v0")] * 4)
    tasks = batched.sample_tasks(4, np.random.default_rng(3))
    actions = np.random.default_rng(3).uniform(-0.1, 0.1, size=(30, 4, 2)).astype(np.float32)
    for venv in (batched, fallback):
        venv.set_tasks(tasks)
    np.testing.assert_array_equal(batched.reset(seed=1)[0], fallback.reset(seed=1)[0])
    for action in actions:
        a, b = batched.step(action), fallback.step(action)
        for x, y in zip(a[:4], b[:4], strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(a[4]["reward_distance"], b[4]["reward_distance"])


def test_unknown_id_names_the_nearest_and_the_known_ids():
    with pytest.raises(ValueError, match="HalfCheetahVel-v0") as error:
        make_task_vector_env("maml/HalfCheetaVel-v0", 2)
    message = str(error.value)
    assert "Did you mean 'maml/HalfCheetahVel-v0'" in message
    assert "maml/AntGoal-v0" in message and "maml/Navigation2D-v0" in message
    with pytest.raises(ValueError, match="Did you mean 'maml/AntDir-v0'"):
        make_task_vector_env("AntDir-v0", 2)  # the namespace was forgotten


def test_an_env_without_tasks_is_rejected_clearly():
    # CartPole has a batched vector env, but neither it nor the single env has tasks.
    with (
        pytest.warns(UserWarning, match="no sample_tasks / set_tasks"),
        pytest.raises(TypeError, match=r"not a task family.*sample_tasks, set_task"),
    ):
        make_task_vector_env("CartPole-v1", 2)
    with pytest.raises(TypeError, match="not a task family"):
        make_task_vector_env("Pendulum-v1", 2)
