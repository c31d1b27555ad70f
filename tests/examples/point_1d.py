"""The README's worked example of a user's own task family (kept runnable by the tests).

A point on a line must reach a goal position; the task is the goal. No batched version:
maml-rl steps copies of it through its generic fallback vector env.
"""

from dataclasses import dataclass

import gymnasium as gym
import numpy as np


@dataclass(frozen=True)
class GoalTask:
    goal: float


class Point1DEnv(gym.Env):
    """Move a point on [-1, 1] towards a goal; reward is minus the distance after the move."""

    def __init__(self, goal_range: tuple[float, float] = (-1.0, 1.0)) -> None:
        self.goal_range = goal_range
        self.observation_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-0.1, 0.1, shape=(1,), dtype=np.float32)
        self._task = GoalTask(0.5)
        self._x = np.zeros(1, dtype=np.float32)

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[GoalTask]:
        return [GoalTask(float(g)) for g in rng.uniform(*self.goal_range, size=n)]

    def set_task(self, task: GoalTask) -> None:
        self._task = task

    def get_task(self) -> GoalTask:
        return self._task

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._x = np.zeros(1, dtype=np.float32)
        return self._x.copy(), {}

    def step(self, action):
        move = np.clip(action, -0.1, 0.1).astype(np.float32)
        self._x = np.clip(self._x + move, -1.0, 1.0).astype(np.float32)
        reward = -abs(float(self._x[0]) - self._task.goal)
        return self._x.copy(), reward, False, False, {"reward_distance": reward}


gym.register(id="my/Point1D-v0", entry_point=Point1DEnv, max_episode_steps=20)
