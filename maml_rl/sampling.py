"""Drawing data for a meta-batch of tasks from a batched (vector) task env.

The supervised families are one-step environments: ``reset`` gives the inputs, ``step`` gives
``info["target"]``. :class:`SupervisedSampler` steps ``M x S`` sub-envs at once, sub-env ``(i, s)``
holding task i, and returns tensors with a leading task dimension ``[M, S, ...]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from envs.generic import make_task_vector_env


class SupervisedSampler:
    """K-shot data of M tasks in one vectorised env step.

    Returns ``{"inputs": [M, S, *obs_shape], "targets": [M, S, *target_shape]}``. Sub-env
    randomness is seeded once from ``seed`` and then carried on (its state is checkpointed via
    :meth:`rng_state`), so re-seeding costs nothing per iteration.
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
        self.env = make_task_vector_env(env_id, num_tasks * shots, **env_kwargs)
        self.env.reset(seed=seed)
        space = self.env.single_action_space
        # The action does not change the target; a fixed valid one keeps the step cheap.
        self._action = np.zeros((self.env.num_envs, *space.shape), dtype=space.dtype)
        self._target_dtype = (
            torch.long if isinstance(space, gym.spaces.Discrete) else torch.float32
        )

    def sample(self, tasks: Sequence[Any]) -> dict[str, torch.Tensor]:
        if len(tasks) != self.num_tasks:
            raise ValueError(f"sampler built for {self.num_tasks} tasks, got {len(tasks)}")
        self.env.set_tasks([task for task in tasks for _ in range(self.shots)])
        inputs, _ = self.env.reset()
        _, _, _, _, info = self.env.step(self._action)
        shape = (self.num_tasks, self.shots)
        inputs = torch.as_tensor(np.asarray(inputs)).reshape(*shape, *inputs.shape[1:])
        targets = torch.as_tensor(np.asarray(info["target"]))
        targets = targets.reshape(*shape, *targets.shape[1:]).to(self._target_dtype)
        return {"inputs": inputs.to(self.device), "targets": targets.to(self.device)}

    def rng_state(self) -> Any:
        return self.env.rng_state() if hasattr(self.env, "rng_state") else None

    def set_rng_state(self, state: Any) -> None:
        if state is not None and hasattr(self.env, "set_rng_state"):
            self.env.set_rng_state(state)

    def close(self) -> None:
        self.env.close()


def split_shots(batch: dict[str, torch.Tensor], first: int):
    """Split ``[M, S, ...]`` tensors along the shot dim into ``[:first]`` and ``[first:]``."""
    return ({k: v[:, :first] for k, v in batch.items()}, {k: v[:, first:] for k, v in batch.items()})
