"""A task family of my own: a point on a line must reach a goal; the task is the goal.

The worked example of docs/guide/task_families.md (a test checks that the two agree).
"""

import gymnasium as gym
import numpy as np


class Point1DEnv(gym.Env):
    """Move a point on [-1, 1] towards a goal; reward is minus the distance after the move."""

    def __init__(self, goal_range=(-1.0, 1.0)):
        self.goal_range = goal_range
        self.observation_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-0.1, 0.1, shape=(1,), dtype=np.float32)
        self._task = {"goal": 0.5}
        self._x = np.zeros(1, dtype=np.float32)

    def sample_tasks(self, n, rng):
        """n tasks drawn with the numpy Generator rng: here a dict per task."""
        return [{"goal": float(g)} for g in rng.uniform(*self.goal_range, size=n)]

    def set_task(self, task):
        self._task = task

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._x = np.zeros(1, dtype=np.float32)
        return self._x.copy(), {}

    def step(self, action):
        move = np.clip(action, -0.1, 0.1).astype(np.float32)
        self._x = np.clip(self._x + move, -1.0, 1.0).astype(np.float32)
        reward = -abs(float(self._x[0]) - self._task["goal"])
        return self._x.copy(), reward, False, False, {"reward_distance": reward}


gym.register(id="my/Point1D-v0", entry_point=Point1DEnv, max_episode_steps=20)
