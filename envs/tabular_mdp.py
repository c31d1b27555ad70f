"""Random tabular MDPs (Duan et al. 2016, "RL^2", Sec. 4.2; pytorch-maml-rl's TabularMDP).

A task is an MDP with ``states`` states and ``actions`` actions: for every (state, action) the
next-state distribution ~ Dirichlet(1, ..., 1) (flat) and the mean reward ~ N(1, 1), drawn from
the task's seed; a step's reward is that mean plus N(0, 1) noise. Episodes start in state 0
and last ``horizon`` steps. The observation is the state, one-hot.

The single and the batched env share one numpy step function; each sub-env draws its
transitions and reward noise from its own generator, so sub-env i is the single env computed
in a batch.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.tasks import coerce_task
from envs.vector import TaskBatchVectorEnv


@dataclass(frozen=True)
class TabularMDPTask:
    """One MDP, named by the seed it is drawn from (:func:`mdp_of`): a few bytes in logs and
    results instead of its S x A x S probabilities (a task is a small value: ``envs.tasks``)."""

    seed: int


def sample_mdp_tasks(n: int, rng: np.random.Generator) -> list[TabularMDPTask]:
    """``n`` MDPs, as seeds drawn from ``rng``."""
    return [TabularMDPTask(int(s)) for s in rng.integers(0, 2**31 - 1, size=n)]


@functools.lru_cache(maxsize=4096)
def mdp_of(seed: int, states: int, actions: int) -> tuple[np.ndarray, np.ndarray]:
    """The MDP of ``seed``: transitions ``P [S, A, S]`` ~ flat Dirichlet and mean rewards
    ``R [S, A]`` ~ N(1, 1) (RL^2), drawn from ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(states), size=(states, actions))
    r = rng.normal(1.0, 1.0, size=(states, actions))
    p.flags.writeable = r.flags.writeable = False  # shared by the cache
    return p, r


def mdp_arrays(tasks: list[TabularMDPTask], states: int, actions: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """``(P [n, S, A, S], R [n, S, A])`` of ``tasks``."""
    pairs = [mdp_of(t.seed, states, actions) for t in tasks]
    return np.stack([p for p, _ in pairs]), np.stack([r for _, r in pairs])


def mdp_step(p: np.ndarray, r: np.ndarray, state: np.ndarray, action: np.ndarray,
             draws: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """One step per row: the next state by inverting the CDF of ``P[row, s, a]`` at
    ``draws[:, 0]`` (uniform), the reward ``R[row, s, a] + draws[:, 1]`` (standard normal)."""
    rows = np.arange(len(state))
    cdf = np.cumsum(p[rows, state, action], axis=-1)
    next_state = np.minimum((cdf < draws[:, :1]).sum(-1), p.shape[-1] - 1)
    reward = r[rows, state, action] + draws[:, 1]
    return next_state, reward, {"reward_mdp": reward.copy()}


def finite_horizon_values(p: np.ndarray, r: np.ndarray, horizon: int, greedy: bool
                          ) -> np.ndarray:
    """Expected return from every state over ``horizon`` steps, ``[n, S]``: of the optimal
    policy (``greedy``, value iteration) or of uniformly random actions."""
    v = np.zeros(p.shape[:2])
    for _ in range(horizon):
        q = r + np.einsum("nsat,nt->nsa", p, v)
        v = q.max(-1) if greedy else q.mean(-1)
    return v


class TabularMDPEnv(gym.Env):
    """A random finite MDP; each task is its transition probabilities and mean rewards.

    ## Description
    For every (state, action): next-state probabilities ~ Dirichlet(1, ..., 1), mean reward
    ~ N(1, 1) (RL^2's tabular MDPs). Episodes start in state 0 and last ``horizon`` steps (10
    when made with ``gymnasium.make``, ``sampling.horizon`` in a config).

    ## Observation
    ``Box(0, 1, (states,), float32)``: the state, one-hot.

    ## Action
    ``Discrete(actions)``.

    ## Rewards
    The task's mean reward of (state, action) plus N(0, 1) noise (``info["reward_mdp"]``).

    ## References
    ``reference_returns(tasks, horizon)``: per task, the expected return from state 0 of
    uniformly random actions (``uniform``) and of the optimal policy of the known MDP
    (``optimal``, finite-horizon value iteration).

    ## Arguments
    * ``states``: S, default 10; ``actions``: A, default 5 (RL^2's sizes).
    """

    metadata: dict[str, Any] = {"render_modes": [], "baseline_timesteps": 200_000}  # noqa: RUF012

    def __init__(self, states: int = 10, actions: int = 5) -> None:
        if int(states) < 2 or int(actions) < 2:
            raise ValueError(f"states and actions must be at least 2, got {states}, {actions}")
        self.states, self.actions = int(states), int(actions)
        self.observation_space = spaces.Box(0.0, 1.0, shape=(self.states,), dtype=np.float32)
        self.action_space = spaces.Discrete(self.actions)
        self.set_task(TabularMDPTask(0))
        self._state = np.zeros(1, dtype=np.int64)

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[TabularMDPTask]:
        """``n`` MDPs: flat-Dirichlet transitions, N(1, 1) mean rewards."""
        return sample_mdp_tasks(n, rng)

    def set_task(self, task: TabularMDPTask) -> None:
        task = coerce_task(task, TabularMDPTask)
        self._p, self._r = mdp_arrays([task], self.states, self.actions)
        self._task = task

    def get_task(self) -> TabularMDPTask:
        return self._task

    def _obs(self, state: np.ndarray) -> np.ndarray:
        return np.eye(self.states, dtype=np.float32)[state]

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._state = np.zeros(1, dtype=np.int64)
        return self._obs(self._state)[0], {}

    def step(self, action):
        draws = np.array([[self.np_random.random(), self.np_random.standard_normal()]])
        self._state, reward, info = mdp_step(self._p, self._r, self._state,
                                             np.array([int(action)]), draws)
        info = {key: float(value[0]) for key, value in info.items()}
        return self._obs(self._state)[0], float(reward[0]), False, False, info

    def reference_returns(self, tasks: list[TabularMDPTask], horizon: int
                          ) -> dict[str, np.ndarray]:
        """Per-task expected returns from state 0 of reference policies over ``horizon``."""
        p, r = mdp_arrays([coerce_task(t, TabularMDPTask) for t in tasks], self.states,
                          self.actions)
        return {"uniform": finite_horizon_values(p, r, horizon, greedy=False)[:, 0],
                "optimal": finite_horizon_values(p, r, horizon, greedy=True)[:, 0]}


class TabularMDPVectorEnv(TaskBatchVectorEnv[TabularMDPTask]):
    """``num_envs`` tabular MDPs in numpy, each with its own task (``set_tasks``); takes
    ``TabularMDPEnv``'s keyword arguments; batch semantics are those of ``envs.vector``."""

    task_type = TabularMDPTask

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(num_envs, TabularMDPEnv(**kwargs), max_episode_steps)
        self._state = np.zeros(num_envs, dtype=np.int64)
        self._tasks_changed()

    def _tasks_changed(self) -> None:
        env = self.single_env
        self._p, self._r = mdp_arrays(self._tasks, env.states, env.actions)

    def _reset_subenvs(self, idx: np.ndarray) -> np.ndarray:
        self._state[idx] = 0
        return self.single_env._obs(self._state[idx])

    def _step_subenvs(self, idx: np.ndarray, actions: np.ndarray):
        # Two draws per sub-env from its own generator, in the single env's order.
        draws = np.array([[self._rngs[i].random(), self._rngs[i].standard_normal()]
                          for i in idx])
        state, reward, info = mdp_step(self._p[idx], self._r[idx], self._state[idx],
                                       actions.astype(np.int64), draws)
        self._state[idx] = state
        terminated = np.zeros(len(idx), dtype=bool)
        return self.single_env._obs(state), reward, terminated, info
