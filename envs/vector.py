"""Common machinery of the batched task vector envs: seeding, partial resets, time limit, freezing.

A batched env computes all its sub-envs together (numpy or ``mujoco.rollout``) instead of
stepping ``num_envs`` Python objects. Sub-env i must reproduce the single env exactly: it draws
its reset noise from its own generator, seeded like ``gymnasium.Env.reset(seed=...)``.

Semantics shared by every batched env of this package (and by ``envs.generic.TaskSyncVectorEnv``):

* ``metadata["autoreset_mode"]`` is ``AutoresetMode.DISABLED``: nothing resets by itself.
* ``reset(seed=s)`` seeds sub-env i with ``s + i`` (a list gives one seed per sub-env, ``None``
  entries keep that sub-env's generator); ``reset(options={"reset_mask": mask})`` resets only the
  sub-envs where ``mask`` is True and leaves the others untouched;
  ``reset(options={"np_random": generators})`` makes sub-env i draw its reset noise from
  ``generators[i]`` from then on (one ``numpy.random.Generator`` per sub-env; sub-envs may share
  one, drawing from it in sub-env order). Samplers seed each task's episodes this way, one
  generator per task, which costs a few microseconds per task instead of per sub-env.
* A sub-env that has terminated or been truncated (``max_episode_steps``, like ``TimeLimit``) is
  frozen: later steps ignore its action, return its last observation, reward 0 and the same
  flags, and its info entries are masked out (``info["_key"][i]`` is False). A sampler that rolls
  out a fixed horizon therefore needs no bookkeeping beyond masking by the done flags.
* ``info`` follows gymnasium's vector convention: ``info[key]`` is an array over sub-envs and
  ``info["_" + key]`` the boolean mask of sub-envs that produced it this step. Keys starting with
  ``reward_`` are the reward terms; they sum to the reward.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

from envs.tasks import coerce_tasks

TaskT = TypeVar("TaskT")


class EnvOutputError(ValueError):
    """A task env returned something its spaces rule out (an observation of the wrong shape).
    The message is one line naming the env id, the method and what was expected and received."""


def observation_shape_error(
    env_id: str, method: str, expected: tuple[int, ...], received: tuple[int, ...], where: str
) -> EnvOutputError:
    """The one wording of a wrong observation shape, for every vector env of this package."""
    return EnvOutputError(
        f"env '{env_id}': {method}() returned an observation of shape {received}, but its "
        f"observation_space has shape {expected} ({where}); make the two agree"
    )


def seeds_for(seed: int | Sequence[int | None] | None, num_envs: int) -> list[int | None]:
    """Per-sub-env seeds, the convention of ``gymnasium.vector.SyncVectorEnv``."""
    if seed is None:
        return [None] * num_envs
    if isinstance(seed, (int, np.integer)):
        return [int(seed) + i for i in range(num_envs)]
    seeds = list(seed)
    if len(seeds) != num_envs:
        raise ValueError(f"reset needs {num_envs} seeds (one per sub-env), got {len(seeds)}")
    return seeds


def generators_from(options: dict | None, num_envs: int) -> list[np.random.Generator] | None:
    """The ``options["np_random"]`` generators (one per sub-env), or None."""
    if not options or options.get("np_random") is None:
        return None
    generators = list(options["np_random"])
    if len(generators) != num_envs or not all(
            isinstance(g, np.random.Generator) for g in generators):
        raise ValueError(f"options['np_random'] must hold {num_envs} numpy Generators, one per "
                         f"sub-env, got {len(generators)} objects")
    return generators


def reset_mask_from(options: dict | None, num_envs: int) -> np.ndarray:
    """The ``options["reset_mask"]`` boolean array, or all True."""
    if not options or options.get("reset_mask") is None:
        return np.ones(num_envs, dtype=bool)
    mask = np.asarray(options["reset_mask"])
    if mask.shape != (num_envs,) or mask.dtype != np.bool_:
        raise ValueError(
            f"options['reset_mask'] must be a bool array of shape ({num_envs},), "
            f"got dtype {mask.dtype} and shape {mask.shape}"
        )
    return mask


class TaskBatchVectorEnv(VectorEnv, Generic[TaskT]):
    """Base of the batched envs: subclasses implement ``_reset_subenvs`` and ``_step_subenvs``.

    ``_reset_subenvs(idx)`` resets the sub-envs ``idx`` (drawing from ``self._rngs[i]``) and
    returns their observations; ``_step_subenvs(idx, actions)`` advances the (not done) sub-envs
    ``idx`` and returns ``(obs, reward, terminated, info)`` for them, ``info`` a dict of arrays.
    ``_tasks_changed()`` is called after ``set_tasks``.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.DISABLED}  # noqa: RUF012
    task_type: type[TaskT]

    def __init__(
        self,
        num_envs: int,
        single_env: gym.Env,
        max_episode_steps: int | None = None,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs = num_envs
        # A single env of the same family: spaces, task sampling and documentation in one place.
        self.single_env = single_env
        self.single_observation_space = single_env.observation_space
        self.single_action_space = single_env.action_space
        self.observation_space = gym.vector.utils.batch_space(
            self.single_observation_space, num_envs
        )
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self.max_episode_steps = max_episode_steps
        self._rngs = [np.random.default_rng() for _ in range(num_envs)]
        self._tasks: list[TaskT] = [single_env.get_task()] * num_envs
        self._obs = np.zeros(
            (num_envs, *self.single_observation_space.shape),
            dtype=self.single_observation_space.dtype,
        )
        self._terminated = np.zeros(num_envs, dtype=bool)
        self._truncated = np.zeros(num_envs, dtype=bool)
        self._elapsed = np.zeros(num_envs, dtype=np.int64)
        self._needs_reset = True

    # -- tasks -------------------------------------------------------------------------------
    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[TaskT]:
        """Draw ``n`` tasks from the family's distribution (same as the single env)."""
        return self.single_env.sample_tasks(n, rng)

    def set_tasks(self, tasks: Sequence[TaskT]) -> None:
        """Give sub-env i the task ``tasks[i]``; takes effect from the next step."""
        self._tasks = coerce_tasks(tasks, self.task_type, self.num_envs)
        self._tasks_changed()

    def get_tasks(self) -> list[TaskT]:
        """The task of every sub-env."""
        return list(self._tasks)

    def _tasks_changed(self) -> None:
        """Hook: recompute whatever the subclass derives from ``self._tasks``."""

    # -- episodes ----------------------------------------------------------------------------
    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict | None = None):
        mask = reset_mask_from(options, self.num_envs)
        for i, s in enumerate(seeds_for(seed, self.num_envs)):
            if s is not None and mask[i]:
                # The same seeding as gymnasium.Env.reset, so sub-env i matches the single env.
                self._rngs[i] = gym.utils.seeding.np_random(s)[0]
        generators = generators_from(options, self.num_envs)
        if generators is not None:
            for i in np.flatnonzero(mask):
                self._rngs[i] = generators[i]
        idx = np.flatnonzero(mask)
        self._store_obs(idx, self._reset_subenvs(idx), "reset")
        self._terminated[idx] = False
        self._truncated[idx] = False
        self._elapsed[idx] = 0
        self._needs_reset = False
        return self._obs.copy(), {}

    def step(self, actions):
        if self._needs_reset:
            raise RuntimeError("call reset() before step()")
        actions = np.asarray(actions, dtype=np.float64)
        expected = (self.num_envs, *self.single_action_space.shape)
        if actions.shape != expected:
            raise ValueError(f"actions must have shape {expected}, got {actions.shape}")
        active = ~(self._terminated | self._truncated)
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        infos: dict[str, Any] = {}
        if active.all():
            idx = np.arange(self.num_envs)
            sub_actions = actions
        else:
            idx = np.flatnonzero(active)
            sub_actions = actions[idx]
        if idx.size:
            obs, reward, terminated, info = self._step_subenvs(idx, sub_actions)
            self._store_obs(idx, obs, "step")
            rewards[idx] = reward
            self._terminated[idx] = terminated
            self._elapsed[idx] += 1
            if self.max_episode_steps is not None:
                self._truncated[idx] = self._elapsed[idx] >= self.max_episode_steps
            for key, value in info.items():
                value = np.asarray(value)
                full = np.zeros((self.num_envs, *value.shape[1:]), dtype=value.dtype)
                full[idx] = value
                infos[key] = full
                infos["_" + key] = active.copy()
        return (
            self._obs.copy(),
            rewards,
            self._terminated.copy(),
            self._truncated.copy(),
            infos,
        )

    def _store_obs(self, idx: np.ndarray, obs: np.ndarray, method: str) -> None:
        # Compared, not left to numpy: a (k, 1) array would broadcast silently into (k, d).
        received = np.shape(obs)[1:]
        if received != self._obs.shape[1:]:
            spec = getattr(self, "spec", None)
            env_id = spec.id if spec is not None else type(self).__name__
            raise observation_shape_error(env_id, method, self._obs.shape[1:], received,
                                          f"batched {type(self).__name__}")
        self._obs[idx] = obs

    def _reset_subenvs(self, idx: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _step_subenvs(self, idx: np.ndarray, actions: np.ndarray):
        raise NotImplementedError

    # -- exact resume ------------------------------------------------------------------------
    def rng_state(self) -> list[dict]:
        """States of the per-sub-env generators (for exact resume)."""
        return [rng.bit_generator.state for rng in self._rngs]

    def set_rng_state(self, states: list[dict]) -> None:
        """Restore the per-sub-env generators from ``rng_state()``."""
        if len(states) != self.num_envs:
            raise ValueError(f"need {self.num_envs} generator states, got {len(states)}")
        for rng, state in zip(self._rngs, states, strict=True):
            rng.bit_generator.state = state

    def close_extras(self, **kwargs: Any) -> None:
        self.single_env.close()
