"""Wrappers that turn a task family into the environments of the paper's comparison methods.

The MAML paper (Finn et al. 2017, Sec. 5.3) compares against a policy *pretrained* on every task
of the family at once and an *oracle* that receives the task as part of its observation:

* ``TaskSamplingWrapper`` draws a new task from the family at every ``reset`` (the multi-task env
  the pretrained policy and the oracle are trained on); with ``observe_task=True`` it appends the
  task's parameters to each observation (the oracle's env).
* ``TaskObservationVectorEnv`` appends each sub-env's task parameters to the observations of a
  batched task env (``envs.vector``), so the oracle is evaluated by the same episode sampler, on
  the same held-out tasks, as every other method.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import VectorEnv
from gymnasium.vector.utils import batch_space

from envs.tasks import thaw_task


def task_features(task: Any) -> np.ndarray:
    """A task as a flat float32 vector: a dataclass's or mapping's fields in order, a number, or
    an array. This is what the oracle sees of the task."""
    task = thaw_task(task)
    if dataclasses.is_dataclass(task) and not isinstance(task, type):
        values: Any = [getattr(task, f.name) for f in dataclasses.fields(task)]
    elif isinstance(task, Mapping):
        values = list(task.values())
    else:
        values = task
    try:
        return np.asarray(values, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError):
        raise TypeError(
            f"the oracle needs a task made of numbers (a dataclass or mapping of floats), "
            f"got {task!r}"
        ) from None


def _with_task_space(space: gym.Space, task_dim: int) -> spaces.Box:
    if not isinstance(space, spaces.Box) or len(space.shape) != 1:
        raise ValueError(f"observe_task needs a flat Box observation space, got {space}")
    low = np.concatenate([space.low, np.full(task_dim, -np.inf)]).astype(np.float32)
    high = np.concatenate([space.high, np.full(task_dim, np.inf)]).astype(np.float32)
    return spaces.Box(low, high, dtype=np.float32)


class TaskSamplingWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """A new task from the family at every ``reset``, drawn from the wrapper's own generator.

    ``seed`` seeds that generator; ``observe_task`` appends ``task_features(task)`` to every
    observation. ``info["task"]`` at reset is the task drawn.
    """

    def __init__(self, env: gym.Env, seed: int | None = None, observe_task: bool = False) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, seed=seed, observe_task=observe_task)
        gym.Wrapper.__init__(self, env)
        family = env.unwrapped
        for method in ("sample_tasks", "set_task"):
            if not callable(getattr(family, method, None)):
                raise TypeError(f"{type(family).__name__} is not a task family (no {method}())")
        self.family = family
        self.task_rng = np.random.default_rng(seed)
        self.observe_task = bool(observe_task)
        self.task = family.sample_tasks(1, np.random.default_rng(0))[0]
        self._features = task_features(self.task)
        if self.observe_task:
            self.observation_space = _with_task_space(env.observation_space, len(self._features))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            # Seeding the env also fixes the task sequence, as a user of reset(seed=) expects.
            self.task_rng = np.random.default_rng(seed)
        self.task = self.family.sample_tasks(1, self.task_rng)[0]
        self.family.set_task(self.task)
        self._features = task_features(self.task)
        obs, info = self.env.reset(seed=seed, options=options)
        return self._observe(obs), {**info, "task": self.task}

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._observe(obs), reward, terminated, truncated, info

    def _observe(self, obs: np.ndarray) -> np.ndarray:
        if not self.observe_task:
            return obs
        return np.concatenate([np.asarray(obs, dtype=np.float32), self._features])


class TaskObservationVectorEnv(VectorEnv):
    """A batched task env whose observations end with each sub-env's task parameters.

    Forwards ``set_tasks``, ``sample_tasks``, ``get_tasks`` and the generator state of the
    wrapped env (``rng_state`` / ``set_rng_state``), so the episode sampler uses it unchanged.
    """

    def __init__(self, env: VectorEnv) -> None:
        self.env = env
        self.num_envs = env.num_envs
        self.metadata = env.metadata
        tasks = env.get_tasks() if callable(getattr(env, "get_tasks", None)) else None
        if tasks is None:
            tasks = env.sample_tasks(self.num_envs, np.random.default_rng(0))
        self._features = np.stack([task_features(t) for t in tasks])
        self.single_observation_space = _with_task_space(
            env.single_observation_space, self._features.shape[1]
        )
        self.single_action_space = env.single_action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = env.action_space

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list:
        return self.env.sample_tasks(n, rng)

    def set_tasks(self, tasks: Sequence[Any]) -> None:
        self.env.set_tasks(tasks)
        self._features = np.stack([task_features(t) for t in tasks])

    def get_tasks(self) -> list:
        return self.env.get_tasks()

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        return self._observe(obs), info

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        return self._observe(obs), reward, terminated, truncated, info

    def _observe(self, obs: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(obs, dtype=np.float32), self._features], axis=1)

    def rng_state(self) -> Any:
        return self.env.rng_state() if hasattr(self.env, "rng_state") else None

    def set_rng_state(self, state: Any) -> None:
        if state is not None and hasattr(self.env, "set_rng_state"):
            self.env.set_rng_state(state)

    def close_extras(self, **kwargs: Any) -> None:
        self.env.close()
