"""K-armed Bernoulli bandits (Duan et al. 2016, "RL^2", Sec. 4.1; pytorch-maml-rl's Bandit).

A task is the arms' success probabilities, each ~ U[0, 1]. An episode is ``horizon`` pulls;
a pull of arm ``a`` pays 1 with probability ``means[a]``, else 0. The observation is a constant:
a memoryless policy is one distribution over the arms, and what MAML adapts is that
distribution, from the rewards of the support episodes.

The single and the batched env share one numpy step function; each sub-env draws its rewards
from its own generator, so sub-env i is the single env computed in a batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.tasks import coerce_task
from envs.vector import TaskBatchVectorEnv


@dataclass(frozen=True)
class BanditTask:
    """The arms' success probabilities."""

    means: tuple[float, ...]


def sample_bandit_tasks(n: int, rng: np.random.Generator, arms: int) -> list[BanditTask]:
    """``n`` tasks with every arm's probability ~ U[0, 1]."""
    return [BanditTask(tuple(float(p) for p in row)) for row in rng.uniform(size=(n, arms))]


def bandit_step(means: np.ndarray, actions: np.ndarray, uniforms: np.ndarray
                ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Rewards of one pull per row: 1 where ``uniforms < means[row, action]``."""
    chosen = means[np.arange(len(means)), actions]
    reward = (uniforms < chosen).astype(np.float64)
    return reward, {"reward_arm": reward.copy()}


def ucb_pull_rewards(means: np.ndarray, pulls: int, rng: np.random.Generator) -> float:
    """Mean reward per pull of UCB1 (Auer et al. 2002) over ``pulls`` pulls of one task:
    each arm once, then the arm of highest ``mean + sqrt(2 ln t / n)``."""
    arms = len(means)
    counts, totals, reward = np.zeros(arms), np.zeros(arms), 0.0
    for t in range(pulls):
        if t < arms:
            arm = t
        else:
            arm = int(np.argmax(totals / counts + np.sqrt(2.0 * math.log(t) / counts)))
        r = float(rng.random() < means[arm])
        counts[arm] += 1
        totals[arm] += r
        reward += r
    return reward / pulls


class BanditEnv(gym.Env):
    """A K-armed Bernoulli bandit; each task is the arms' success probabilities.

    ## Description
    A task draws every arm's probability ~ U[0, 1]. An episode is ``horizon`` pulls (10 when
    made with ``gymnasium.make``, ``sampling.horizon`` in a config).

    ## Observation
    ``Box(0, 1, (1,), float32)``: always 0 (a bandit has no state).

    ## Action
    ``Discrete(arms)``: the arm to pull.

    ## Rewards
    1 with the arm's probability, else 0 (``info["reward_arm"]``).

    ## References
    ``reference_returns(tasks, horizon)``: per task, the expected return of pulling uniformly
    at random (``uniform``), of always pulling the best arm (``best arm``), and the mean over
    100 runs of UCB1 for ``horizon`` pulls (``UCB1``, which learns within the episode what a
    memoryless policy cannot).

    ## Arguments
    * ``arms``: K, default 5 (RL^2 and pytorch-maml-rl use 5, 10 and 50).
    """

    metadata: dict[str, Any] = {"render_modes": [], "baseline_timesteps": 200_000}  # noqa: RUF012

    def __init__(self, arms: int = 5) -> None:
        if int(arms) < 2:
            raise ValueError(f"arms must be at least 2, got {arms}")
        self.arms = int(arms)
        self.observation_space = spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = spaces.Discrete(self.arms)
        self._task = BanditTask((0.5,) * self.arms)
        self._means = np.full((1, self.arms), 0.5)

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[BanditTask]:
        """``n`` tasks: every arm's probability ~ U[0, 1]."""
        return sample_bandit_tasks(n, rng, self.arms)

    def set_task(self, task: BanditTask) -> None:
        task = coerce_task(task, BanditTask)
        if len(task.means) != self.arms:
            raise ValueError(f"a task of this {self.arms}-armed bandit needs {self.arms} "
                             f"probabilities, got {len(task.means)}")
        self._task = task
        self._means = np.array([task.means], dtype=np.float64)

    def get_task(self) -> BanditTask:
        return self._task

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action):
        uniform = np.array([self.np_random.random()])
        reward, info = bandit_step(self._means, np.array([int(action)]), uniform)
        info = {key: float(value[0]) for key, value in info.items()}
        return np.zeros(1, dtype=np.float32), float(reward[0]), False, False, info

    def reference_returns(self, tasks: list[BanditTask], horizon: int
                          ) -> dict[str, np.ndarray]:
        """Per-task expected returns of reference policies over ``horizon`` pulls."""
        means = np.array([coerce_task(t, BanditTask).means for t in tasks])
        rng = np.random.default_rng(0)
        ucb = np.array([np.mean([ucb_pull_rewards(m, horizon, rng) for _ in range(100)])
                        for m in means])
        return {"uniform": horizon * means.mean(1), "UCB1": horizon * ucb,
                "best arm": horizon * means.max(1)}


class BanditVectorEnv(TaskBatchVectorEnv[BanditTask]):
    """``num_envs`` bandits in numpy, each with its own task (``set_tasks``); takes
    ``BanditEnv``'s keyword arguments; batch semantics are those of ``envs.vector``."""

    task_type = BanditTask

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(num_envs, BanditEnv(**kwargs), max_episode_steps)
        self._means = np.full((num_envs, self.single_env.arms), 0.5)

    def _tasks_changed(self) -> None:
        arms = self.single_env.arms
        wrong = [t for t in self._tasks if len(t.means) != arms]
        if wrong:
            raise ValueError(f"a task of this {arms}-armed bandit needs {arms} probabilities, "
                             f"got {len(wrong[0].means)}")
        self._means = np.array([t.means for t in self._tasks], dtype=np.float64)

    def _reset_subenvs(self, idx: np.ndarray) -> np.ndarray:
        return np.zeros((len(idx), 1), dtype=np.float32)

    def _step_subenvs(self, idx: np.ndarray, actions: np.ndarray):
        # One draw per sub-env from its own generator, in the single env's order.
        uniforms = np.array([self._rngs[i].random() for i in idx])
        reward, info = bandit_step(self._means[idx], actions.astype(np.int64), uniforms)
        terminated = np.zeros(len(idx), dtype=bool)
        return np.zeros((len(idx), 1), dtype=np.float32), reward, terminated, info
