"""A vector env for any task family, and the factory that picks the fastest available one.

``make_task_vector_env(env_id, num_envs)`` returns the family's batched env when it registered a
``vector_entry_point`` and otherwise ``TaskSyncVectorEnv``: ``num_envs`` copies of the single env
stepped in a Python loop, with the same batch semantics as the batched envs (see
``envs.vector``): autoreset disabled, ``set_tasks`` distributing one task per sub-env, seeding
``seed + i``, ``reset_mask``, done sub-envs frozen. A user's own family therefore works with the
sampler as soon as it is registered; writing a batched version only makes it faster.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable, Sequence
from copy import deepcopy
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array, iterate

from envs.registration import NAMESPACE, register_all
from envs.tasks import thaw_task
from envs.vector import generators_from, observation_shape_error, reset_mask_from, seeds_for

TASK_METHODS = ("sample_tasks", "set_task")
VECTOR_TASK_METHODS = ("sample_tasks", "set_tasks")


def _task_family(env: gym.Env) -> gym.Env:
    """The unwrapped env, after checking it has the task-family methods."""
    base = env.unwrapped
    missing = [name for name in TASK_METHODS if not callable(getattr(base, name, None))]
    if missing:
        raise TypeError(
            f"{type(base).__name__} is not a task family: it lacks {', '.join(missing)} "
            "(a task family is a gymnasium.Env with sample_tasks(n, rng) and set_task(task))"
        )
    return base


class TaskSyncVectorEnv(VectorEnv):
    """``num_envs`` single task envs stepped one after the other; each holds its own task.

    Like ``gymnasium.vector.SyncVectorEnv`` with ``AutoresetMode.DISABLED``, except that a
    sub-env which has terminated or been truncated is frozen (its action is ignored, it returns
    its last observation, reward 0 and its done flags) instead of being an error to step.
    """

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]]) -> None:
        self.envs = [fn() for fn in env_fns]
        if not self.envs:
            raise ValueError("TaskSyncVectorEnv needs at least one env")
        self._families = [_task_family(env) for env in self.envs]
        self.num_envs = len(self.envs)
        first = self.envs[0]
        self.metadata = {**first.metadata, "autoreset_mode": AutoresetMode.DISABLED}
        self.render_mode = first.render_mode
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        for env in self.envs[1:]:
            if env.observation_space != first.observation_space:
                raise ValueError("sub-envs have different observation spaces")
            if env.action_space != first.action_space:
                raise ValueError("sub-envs have different action spaces")
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._env_obs: list[Any] = [None] * self.num_envs
        self._observations = create_empty_array(
            self.single_observation_space, n=self.num_envs, fn=np.zeros
        )
        self._terminated = np.zeros(self.num_envs, dtype=bool)
        self._truncated = np.zeros(self.num_envs, dtype=bool)
        self._needs_reset = True

    # -- tasks -------------------------------------------------------------------------------
    def sample_tasks(self, n: int, rng: np.random.Generator) -> list:
        """Draw ``n`` tasks from the family's distribution."""
        return self._families[0].sample_tasks(n, rng)

    def set_tasks(self, tasks: Sequence[Any]) -> None:
        """Give sub-env i the task ``tasks[i]``."""
        if len(tasks) != self.num_envs:
            raise ValueError(
                f"set_tasks needs {self.num_envs} tasks (one per sub-env), got {len(tasks)}"
            )
        for family, task in zip(self._families, tasks, strict=True):
            family.set_task(thaw_task(task))

    def get_tasks(self) -> list:
        """The task of every sub-env (needs ``get_task`` on the single env)."""
        return [family.get_task() for family in self._families]

    # -- episodes ----------------------------------------------------------------------------
    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict | None = None):
        mask = reset_mask_from(options, self.num_envs)
        generators = generators_from(options, self.num_envs)
        env_options = {k: v for k, v in (options or {}).items()
                       if k not in ("reset_mask", "np_random")} or None
        infos: dict[str, Any] = {}
        for i, single_seed in enumerate(seeds_for(seed, self.num_envs)):
            if mask[i]:
                if generators is not None:  # gymnasium.Env.np_random is settable
                    self.envs[i].np_random = generators[i]
                    single_seed = None
                self._env_obs[i], info = self.envs[i].reset(seed=single_seed, options=env_options)
                infos = self._add_info(infos, info, i)
        self._gather_observations("reset")
        self._terminated[mask] = False
        self._truncated[mask] = False
        self._needs_reset = False
        return deepcopy(self._observations), infos

    def step(self, actions):
        if self._needs_reset:
            raise RuntimeError("call reset() before step()")
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        infos: dict[str, Any] = {}
        for i, action in enumerate(iterate(self.action_space, actions)):
            if self._terminated[i] or self._truncated[i]:
                continue
            obs, reward, terminated, truncated, info = self.envs[i].step(action)
            self._env_obs[i] = obs
            rewards[i] = reward
            self._terminated[i] = terminated
            self._truncated[i] = truncated
            infos = self._add_info(infos, info, i)
        self._gather_observations("step")
        return (
            deepcopy(self._observations),
            rewards,
            self._terminated.copy(),
            self._truncated.copy(),
            infos,
        )

    def _gather_observations(self, method: str) -> None:
        """Stack the sub-envs' observations into the batch; one of the wrong shape raises
        EnvOutputError naming the env, the method, both shapes and the sub-env's task."""
        try:
            self._observations = concatenate(
                self.single_observation_space, self._env_obs, self._observations
            )
        except ValueError:
            expected = self.single_observation_space.shape
            for i, obs in enumerate(self._env_obs):
                if expected is not None and np.shape(obs) != expected:
                    spec = self.envs[i].spec
                    env_id = spec.id if spec is not None else type(self._families[i]).__name__
                    get_task = getattr(self._families[i], "get_task", None)
                    task = f", task {get_task()!r}" if callable(get_task) else ""
                    raise observation_shape_error(env_id, method, expected, np.shape(obs),
                                                  f"sub-env {i}{task}") from None
            raise  # not a shape mismatch of a Box space: gymnasium's own error

    def render(self) -> tuple[Any, ...]:
        return tuple(env.render() for env in self.envs)

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Call (or read) ``name`` on every sub-env, as ``SyncVectorEnv.call``."""
        results = []
        for env in self.envs:
            attr = env.get_wrapper_attr(name)
            results.append(attr(*args, **kwargs) if callable(attr) else attr)
        return tuple(results)

    def close_extras(self, **kwargs: Any) -> None:
        for env in self.envs:
            env.close()


def known_env_ids(namespace: str = NAMESPACE) -> list[str]:
    """Registered ids of ``namespace``, sorted."""
    register_all()
    return sorted(i for i in gym.registry if i.startswith(f"{namespace}/"))


def unknown_env_message(env_id: str) -> str:
    """Error text for an unknown id: the nearest registered ids and every ``maml/`` id."""
    known = known_env_ids()
    # The whole registry first (a user's own namespace), then the looser maml/ match.
    close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
    close = close or difflib.get_close_matches(env_id, known, n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown environment id {env_id!r}.{hint} Known {NAMESPACE}/ ids: {', '.join(known)}"


def family_metadata(env_id: str) -> dict[str, Any]:
    """The ``metadata`` class attribute of ``env_id``'s env, read without making an env (what a
    caller must know before it builds one, e.g. ``sequential_shots``); ``{}`` when its entry
    point is not a class."""
    register_all()
    if env_id not in gym.registry:
        raise ValueError(unknown_env_message(env_id))
    entry_point = gym.spec(env_id).entry_point
    # A registration may name its entry point ("module:Class") or pass the class itself.
    creator = (entry_point if callable(entry_point)
               else gym.envs.registration.load_env_creator(entry_point))
    return dict(getattr(creator, "metadata", None) or {})


def make_task_vector_env(env_id: str, num_envs: int, **kwargs: Any) -> VectorEnv:
    """A vector env of ``num_envs`` sub-envs of the task family ``env_id``.

    Uses the family's registered ``vector_entry_point`` (a batched env) when it has one,
    ``TaskSyncVectorEnv`` over ``gymnasium.make(env_id, **kwargs)`` otherwise. ``kwargs`` are the
    family's keyword arguments; the time limit is the registered ``max_episode_steps`` (pass
    ``max_episode_steps=...`` to change it). Raises ``ValueError`` for an unknown id, naming the
    nearest known ones.
    """
    register_all()
    if env_id not in gym.registry:
        raise ValueError(unknown_env_message(env_id))
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    spec = gym.spec(env_id)
    if spec.vector_entry_point is not None:
        venv = gym.make_vec(
            env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs
        )
        if all(callable(getattr(venv, name, None)) for name in VECTOR_TASK_METHODS):
            return venv
        venv.close()
        # Not a batched task env (e.g. gymnasium's own CartPole vector env): fall back below,
        # which raises a clear error if the single env is not a task family either.
        warnings.warn(
            f"the vector_entry_point of {env_id} has no {' / '.join(VECTOR_TASK_METHODS)}; "
            "using TaskSyncVectorEnv",
            stacklevel=2,
        )
    return TaskSyncVectorEnv([partial(gym.make, env_id, **kwargs) for _ in range(num_envs)])
