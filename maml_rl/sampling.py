"""Drawing data for a meta-batch of tasks from a batched (vector) task env.

RL learners see episodes through the :class:`Sampler` protocol and build their samplers with a
:data:`SamplerFactory` (default :func:`make_episode_sampler`, the local batched-env
:class:`EpisodeSampler`): the seam where a multi-process or multi-machine sampler plugs in.

The supervised families are one-step environments: ``reset`` gives the inputs, ``step`` gives
``info["target"]``. :class:`SupervisedSampler` steps ``M x S`` sub-envs at once, sub-env ``(i, s)``
holding task i, and returns tensors with a leading task dimension ``[M, S, ...]``. A family whose
shots depend on each other (``metadata["sequential_shots"]``: few-shot classification draws K
examples of every class, without replacement) gets one sub-env per task, stepped S times.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch

from envs.generic import family_metadata, make_task_vector_env
from envs.vector import EnvOutputError
from maml_rl.adaptation import forward
from maml_rl.episodes import Episodes, ShotBatch
from maml_rl.meta_updates.base import NonFiniteError
from maml_rl.policies import distribution_from_tensors, distribution_tensors
from maml_rl.seeding import ACTION_NOISE, RESET_NOISE, EpisodeKey, key_generators


class Sampler(Protocol):
    """What an RL learner needs of a sampler of episodes for a fixed number of tasks."""

    #: Environment steps sampled so far (for the throughput metric).
    steps_sampled: int

    def sample(self, tasks: Sequence[Any], policy: torch.nn.Module, params: Any,
               per_task: bool, keys: Sequence[EpisodeKey] | None = None) -> Episodes:
        """Episodes ``[M, N, T, ...]`` of ``policy`` with ``params`` on ``tasks`` (``params``
        stacked per task when ``per_task``), without any autograd graph. ``keys`` (one per task,
        :func:`maml_rl.seeding.episode_keys`) seed each task's reset noise and actions; without
        them the sampler carries its own generators on."""
        ...

    def close(self) -> None: ...


#: ``factory(env_id, env_kwargs, num_tasks, episodes_per_task, horizon, seed, device,
#: env_wrapper) -> Sampler``.
SamplerFactory = Callable[..., Sampler]


def make_episode_sampler(
    env_id: str, env_kwargs: dict[str, Any], num_tasks: int, episodes_per_task: int,
    horizon: int, seed: int, device: str | torch.device = "cpu",
    env_wrapper: Callable[[gym.vector.VectorEnv], gym.vector.VectorEnv] | None = None,
) -> Sampler:
    """The local sampler: every task's episodes in one batched env of this process."""
    return EpisodeSampler(env_id, env_kwargs, num_tasks, episodes_per_task, horizon, seed,
                          device, env_wrapper)


class _VectorEnvSampler:
    """What both samplers share: a task vector env, its sub-envs seeded per task by keys."""

    env: gym.vector.VectorEnv

    def _reset_options(self, keys: Sequence[EpisodeKey] | None, per_task: int
                       ) -> dict[str, Any] | None:
        """Reset options giving the ``per_task`` sub-envs of task i the generator of
        ``keys[i]`` (None without keys: each sub-env goes on with its own generator)."""
        if keys is None:
            return None
        if len(keys) != self.num_tasks:
            raise ValueError(f"{len(keys)} episode keys for {self.num_tasks} tasks")
        generators = key_generators(keys, RESET_NOISE)
        return {"np_random": [g for g in generators for _ in range(per_task)]}

    def close(self) -> None:
        self.env.close()


class SupervisedSampler(_VectorEnvSampler):
    """K-shot data of M tasks in one vectorised env step.

    Returns a :class:`ShotBatch` of ``inputs [M, S, *obs_shape]``, ``targets [M, S,
    *target_shape]``. With ``keys`` the shots of task i come from the generator of
    ``keys[i]``; without, sub-env randomness is seeded once from ``seed`` and carried on.

    Shots are independent draws of ``M x S`` sub-envs, except for a family with
    ``metadata["sequential_shots"]``, whose S shots of a task are S consecutive episodes of one
    sub-env (M sub-envs, S vectorised steps): there the env itself makes the shots of a task
    class-balanced and distinct, which independent sub-envs could not.
    """

    def __init__(
        self,
        env_id: str,
        env_kwargs: dict[str, Any],
        num_tasks: int,
        shots: int,
        seed: int,
        device: str | torch.device = "cpu",
    ) -> None:
        self.num_tasks, self.shots, self.device = num_tasks, shots, torch.device(device)
        self.env_id = env_id
        self.sequential = bool(family_metadata(env_id).get("sequential_shots", False))
        num_envs = num_tasks if self.sequential else num_tasks * shots
        self.env = make_task_vector_env(env_id, num_envs, **env_kwargs)
        self.env.reset(seed=seed)
        space = self.env.single_action_space
        # The action does not change the target; a fixed valid one keeps the step cheap.
        self._action = np.zeros((self.env.num_envs, *space.shape), dtype=space.dtype)
        self._target_dtype = torch.long if isinstance(space, gym.spaces.Discrete) else torch.float32

    def sample(self, tasks: Sequence[Any], keys: Sequence[EpisodeKey] | None = None
               ) -> ShotBatch:
        if len(tasks) != self.num_tasks:
            raise ValueError(f"sampler built for {self.num_tasks} tasks, got {len(tasks)}")
        options = self._reset_options(keys, 1 if self.sequential else self.shots)
        if self.sequential:
            self.env.set_tasks(list(tasks))  # starts a new draw of every task's examples
            steps = [self._one_step(options if s == 0 else None) for s in range(self.shots)]
            # [M, S, ...] flattened task-major, the layout of the branch below.
            inputs, targets = (
                np.stack(arrays, axis=1).reshape(-1, *arrays[0].shape[1:])
                for arrays in zip(*steps, strict=True)
            )
        else:
            self.env.set_tasks([task for task in tasks for _ in range(self.shots)])
            inputs, targets = self._one_step(options)
        shape = (self.num_tasks, self.shots)
        for name, values in (("input", inputs), ("target", targets)):
            if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
                # Task-major: rows i * shots .. (i + 1) * shots - 1 belong to task i.
                row = int(np.flatnonzero(~np.isfinite(values.reshape(len(values), -1))
                                         .all(axis=1))[0])
                raise NonFiniteError(
                    f"env '{self.env_id}' returned a non-finite {name} for task "
                    f"{tasks[row // self.shots]!r}; its reset()/step() must return finite values"
                )
        inputs = torch.as_tensor(inputs).reshape(*shape, *inputs.shape[1:])
        targets = torch.as_tensor(targets)
        targets = targets.reshape(*shape, *targets.shape[1:]).to(self._target_dtype)
        return ShotBatch(inputs.to(self.device), targets.to(self.device))

    def _one_step(self, options: dict[str, Any] | None) -> tuple[np.ndarray, np.ndarray]:
        inputs, _ = self.env.reset(options=options)
        _, _, _, _, info = self.env.step(self._action)
        return np.asarray(inputs), np.asarray(info["target"])


def split_shots(batch: ShotBatch, first: int) -> tuple[ShotBatch, ShotBatch]:
    """Split ``[M, S, ...]`` tensors along the shot dim into ``[:first]`` and ``[first:]``."""
    return (ShotBatch(*(v[:, :first] for v in batch)), ShotBatch(*(v[:, first:] for v in batch)))


class EpisodeSampler(_VectorEnvSampler):
    """Rolls out M tasks x N episodes together in one batched task env.

    Sub-env ``i * N + n`` holds task i. The policy runs on ``device`` with either one set of
    parameters for every task (the meta-parameters, before adaptation) or per-task parameters
    stacked along a leading task dimension (after adaptation), evaluated for every task at
    once per step (one batched matmul per layer). Physics stays on the CPU. Episodes that end early
    (terminated, e.g. Ant falling) are masked from that step on. ``env_wrapper``, if given, wraps
    the batched env (e.g. ``envs.wrappers.TaskObservationVectorEnv`` for the oracle).
    """

    def __init__(
        self,
        env_id: str,
        env_kwargs: dict[str, Any],
        num_tasks: int,
        episodes_per_task: int,
        horizon: int,
        seed: int,
        device: str | torch.device = "cpu",
        env_wrapper: Callable[[gym.vector.VectorEnv], gym.vector.VectorEnv] | None = None,
    ) -> None:
        self.num_tasks, self.episodes_per_task = num_tasks, episodes_per_task
        self.horizon, self.device = horizon, torch.device(device)
        self.env_id = env_id
        self.env = make_task_vector_env(
            env_id, num_tasks * episodes_per_task, max_episode_steps=horizon, **env_kwargs
        )
        if env_wrapper is not None:
            self.env = env_wrapper(self.env)
        with _env_checker_warnings_held():
            self.env.reset(seed=seed)
        self._first_sample = True
        space = self.env.single_action_space
        self.discrete = isinstance(space, gym.spaces.Discrete)
        #: The ``info`` key that says a step solved the task (None: the family has none).
        self.success_key = family_metadata(env_id).get("success_key")
        self._low = None if self.discrete else space.low
        self._high = None if self.discrete else space.high
        self.steps_sampled = 0

    def sample(self, tasks: Sequence[Any], policy: torch.nn.Module, params, per_task: bool,
               keys: Sequence[EpisodeKey] | None = None) -> Episodes:
        """Episodes ``[M, N, T, ...]`` of ``policy`` with ``params`` (stacked per task when
        ``per_task``), sampled without building any autograd graph. With ``keys`` task i's
        reset noise and action noise come from generators of ``keys[i]`` alone."""
        if len(tasks) != self.num_tasks:
            raise ValueError(f"sampler built for {self.num_tasks} tasks, got {len(tasks)}")
        # The env checker's other call is each sub-env's first step().
        first, self._first_sample = self._first_sample, False
        with _env_checker_warnings_held() if first else contextlib.nullcontext():
            return self._rollout(tasks, policy, params, per_task, keys)

    def _action_noise(self, keys: Sequence[EpisodeKey] | None) -> torch.Tensor | None:
        """``[T, M * N, ...]`` noise from each task's action generator: standard normal per
        action dimension (Gaussian policies), uniform per step (categorical), or None."""
        if keys is None:
            return None
        shape = (self.horizon, self.episodes_per_task)
        if self.discrete:
            draws = [g.random(shape, dtype=np.float32) for g in key_generators(keys, ACTION_NOISE)]
        else:
            shape = (*shape, *self._low.shape)
            draws = [g.standard_normal(shape, dtype=np.float32)
                     for g in key_generators(keys, ACTION_NOISE)]
        return torch.from_numpy(np.concatenate(draws, axis=1)).to(self.device)

    def _rollout(self, tasks: Sequence[Any], policy: torch.nn.Module, params, per_task: bool,
                 keys: Sequence[EpisodeKey] | None):
        """The rollout behind :meth:`sample`."""
        m, n, horizon = self.num_tasks, self.episodes_per_task, self.horizon
        self.env.set_tasks([task for task in tasks for _ in range(n)])
        obs, _ = self.env.reset(options=self._reset_options(keys, n))
        noise = self._action_noise(keys)
        b = m * n
        obs_buf = np.zeros((horizon, b, *obs.shape[1:]), dtype=np.float32)
        act_buf: list[torch.Tensor] = []
        logp_buf: list[torch.Tensor] = []
        rew_buf = np.zeros((horizon, b), dtype=np.float32)
        alive_buf = np.zeros((horizon, b), dtype=np.float32)
        done = np.zeros(b, dtype=bool)
        solved = np.zeros(b, dtype=bool) if self.success_key else None
        if not per_task:
            # One set of parameters, still applied task by task (a batched matmul): a task's
            # actions are then the same bits whatever the number of tasks beside it, which one
            # matmul over every sub-env does not guarantee (its kernel depends on the rows).
            params = {k: v.unsqueeze(0).expand(m, *v.shape) for k, v in params.items()}
        act = _actor(policy, params, m)
        with torch.no_grad():
            for t in range(horizon):
                obs_buf[t] = obs
                try:
                    actions, log_probs = act(torch.as_tensor(obs_buf[t], device=self.device),
                                             None if noise is None else noise[t])
                except ValueError as err:
                    self._explain_invalid_policy_output(err, obs_buf[: t + 1], tasks, per_task)
                    raise
                act_buf.append(actions)
                logp_buf.append(log_probs)
                env_actions = actions.cpu().numpy()
                if not self.discrete:
                    env_actions = np.clip(env_actions, self._low, self._high)
                alive_buf[t] = ~done
                obs, reward, terminated, truncated, info = self.env.step(env_actions)
                if solved is not None and self.success_key in info:
                    # Vector infos carry "_key", the sub-envs that reported it this step.
                    reported = info.get(f"_{self.success_key}", np.ones(b, dtype=bool))
                    solved |= reported & ~done & (np.asarray(info[self.success_key]) > 0)
                rew_buf[t] = reward
                done |= terminated | truncated
                if done.all():
                    horizon = t + 1
                    break
        # Once per batch, on whole arrays: an env's NaN/inf would otherwise surface as a NaN
        # loss or a torch.distributions error far from its cause.
        self._check_finite(obs_buf[:horizon], "observation", tasks)
        self._check_finite(rew_buf[:horizon], "reward", tasks)
        self.steps_sampled += int(alive_buf[:horizon].sum())

        def shaped(x: torch.Tensor) -> torch.Tensor:  # [T, B, ...] -> [M, N, T, ...]
            x = x[:horizon].to(self.device)
            return x.reshape(horizon, m, n, *x.shape[2:]).movedim(0, 2).contiguous()

        mask = shaped(torch.from_numpy(alive_buf))
        return Episodes(
            observations=shaped(torch.from_numpy(obs_buf)),
            actions=shaped(torch.stack(act_buf)),
            rewards=shaped(torch.from_numpy(rew_buf)) * mask,
            mask=mask,
            log_probs=shaped(torch.stack(logp_buf)),
            lengths=mask.sum(-1).long(),
            successes=None if solved is None else torch.from_numpy(
                solved.reshape(m, n).astype(np.float32)).to(self.device),
        )

    def _explain_invalid_policy_output(self, err: ValueError, observations: np.ndarray,
                                       tasks: Sequence[Any], adapted: bool) -> None:
        """torch.distributions refuses NaN/inf distribution parameters with a long ValueError;
        raise NonFiniteError naming the cause instead: the env's observation, or else the
        policy's parameters (diverged in the inner loop). Returns for any other ValueError."""
        if "found invalid values" not in str(err):
            return
        self._check_finite(observations, "observation", tasks)
        which = "adapted by the inner loop's step" if adapted else "meta-parameters"
        raise NonFiniteError(
            f"the policy's output is non-finite on finite observations of env '{self.env_id}': "
            f"its parameters ({which}) diverged, from a non-finite inner loss or a step too "
            "large for it (lower inner.lr)"
        ) from None

    def _check_finite(self, values: np.ndarray, quantity: str, tasks: Sequence[Any]) -> None:
        """Raise NonFiniteError naming the env, the task of the first sub-env whose
        ``values [T, B, ...]`` hold a NaN/inf, the step and the value."""
        finite = np.isfinite(values)
        if finite.all():
            return
        per_env = finite.reshape(*finite.shape[:2], -1).all(axis=2)  # [T, B]
        env = int(np.flatnonzero(~per_env.all(axis=0))[0])
        step = int(np.flatnonzero(~per_env[:, env])[0])
        value = values[step, env].ravel()
        index = int(np.flatnonzero(~np.isfinite(value))[0])
        shown = f"{quantity}[{index}] = {value[index]}" if value.size > 1 else str(value[0])
        # obs_buf[t] came from step t (reset() at t = 0); rew_buf[t] from step t + 1.
        if quantity == "reward":
            when = f"step {step + 1}"
        else:
            when = "reset()" if step == 0 else f"step {step}"
        task = tasks[env // self.episodes_per_task]
        raise NonFiniteError(
            f"env '{self.env_id}' returned a non-finite {quantity} ({shown}) at {when} of an "
            f"episode of task {task!r}; its reset()/step() must return finite values"
        )


# Warnings re-issued by _env_checker_warnings_held, each once per process as warnings.warn's
# "default" action would show it (a registry passed to warn_explicit would not do: entering
# catch_warnings clears every registry).
_REISSUED: set[tuple[str, type[Warning], str, int]] = set()


@contextlib.contextmanager
def _env_checker_warnings_held() -> Iterator[None]:
    """Hold back the warnings raised inside and re-issue them afterwards, unless the env's
    output is found faulty (NonFiniteError, EnvOutputError): gymnasium's passive env checker,
    which inspects each sub-env's first reset() and step(), warns about a NaN reward or an
    observation outside its space before our error names the env, the task and the value, and
    a fault should read as that one line."""
    reissue = True
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield
            except (NonFiniteError, EnvOutputError):
                reissue = False
                raise
    finally:
        for w in caught if reissue else ():
            key = (str(w.message), w.category, w.filename, w.lineno)
            if key not in _REISSUED:
                _REISSUED.add(key)
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def draw_actions(dist: torch.distributions.Distribution, noise: torch.Tensor | None
                 ) -> torch.Tensor:
    """Actions of ``dist`` from given noise: ``loc + scale * noise`` for a Gaussian (noise
    standard normal), the inverse CDF at ``noise`` for a categorical (noise uniform on [0, 1)).
    Without noise, ``dist.sample()`` from torch's global generator."""
    if noise is None:
        return dist.sample()
    kind, tensors = distribution_tensors(dist)
    if kind == "gaussian":
        loc, scale = tensors
        return loc + scale * noise
    cdf = dist.probs.cumsum(-1)
    return (cdf < noise.unsqueeze(-1)).sum(-1).clamp_max(cdf.shape[-1] - 1)


def _actor(policy, params, num_tasks: int):
    """``(obs [B, D], noise) -> (actions [B, ...], log_probs [B])`` for parameters stacked per
    task (:func:`draw_actions`): the policy evaluated for every task at once, task i's
    parameters on task i's sub-envs (:class:`maml_rl.policies.Linear`'s batched matmul)."""

    def act(obs, noise):
        dist = forward(policy, params, obs.reshape(num_tasks, -1, *obs.shape[1:]))
        kind, values = distribution_tensors(dist)
        dist = distribution_from_tensors(kind, [v.flatten(0, 1) for v in values])
        actions = draw_actions(dist, noise)
        return actions, dist.log_prob(actions)

    return act
