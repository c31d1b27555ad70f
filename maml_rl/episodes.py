"""Padded episode batches with a leading task dimension, and their per-task processing.

``Episodes`` tensors are ``[M tasks, N episodes, T steps, ...]`` with a ``mask`` (1.0 on steps
that happened, 0.0 after an episode ended) and ``lengths``. They are never mutated: processing
returns a new mapping (the batch that the RL losses read).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from torch import Tensor

from maml_rl.baselines import LinearFeatureBaseline
from maml_rl.returns import discounted_returns, gae, normalize_advantages


@dataclass(frozen=True)
class Episodes:
    """A batch of episodes of M tasks, N episodes each, padded to T steps."""

    observations: Tensor  # [M, N, T, obs_dim]
    actions: Tensor  # [M, N, T, act_dim] (Box) or [M, N, T] (Discrete)
    rewards: Tensor  # [M, N, T]
    mask: Tensor  # [M, N, T]
    log_probs: Tensor  # [M, N, T], log-probability of the actions under the sampling policy
    lengths: Tensor  # [M, N]
    #: [M, N]: 1.0 for an episode that solved its task at some step, for a family that reports
    #: success (``metadata["success_key"]``, e.g. Meta-World's ``info["success"]``); else None.
    successes: Tensor | None = None

    @property
    def num_tasks(self) -> int:
        return self.rewards.shape[0]

    def task_returns(self) -> Tensor:
        """Mean undiscounted return per task, ``[M]`` (what the paper's tables report)."""
        return (self.rewards * self.mask).sum(-1).mean(-1)

    def task_success(self) -> Tensor | None:
        """Share of each task's episodes that solved it, ``[M]`` (None without success)."""
        return None if self.successes is None else self.successes.mean(-1)

    def num_steps(self) -> int:
        return int(self.mask.sum().item())


class ShotBatch(NamedTuple):
    """A supervised task's shots: ``inputs`` and ``targets`` with leading task and shot
    dimensions (``[M, S, ...]``), or one task's (``[S, ...]``); a pytree, so ``vmap`` maps
    over it."""

    inputs: Tensor
    targets: Tensor


class PolicyBatch(NamedTuple):
    """What the RL losses read of a batch of episodes (like stable-baselines3's
    ``RolloutBufferSamples``): tensors ``[..., N, T, ...]`` with any leading task dimension; a
    pytree, so ``torch.func.vmap`` maps over its fields."""

    observations: Tensor
    actions: Tensor
    mask: Tensor
    log_probs: Tensor
    """Log-probabilities of the actions under the policy that sampled them."""
    advantages: Tensor


def process_episodes(
    episodes: Episodes,
    baseline: LinearFeatureBaseline,
    gamma: float,
    gae_lambda: float,
    normalize: bool = True,
) -> PolicyBatch:
    """The batch the RL losses read: observations, actions, mask, behaviour log-probs and
    advantages, with the linear baseline fitted per task on this batch (rllab's protocol:
    fit on the same episodes, then GAE, then per-task normalisation)."""
    returns = discounted_returns(episodes.rewards, episodes.mask, gamma)
    values = baseline.fit_predict(episodes.observations, returns, episodes.mask)
    advantages = gae(episodes.rewards, values.to(episodes.rewards.dtype), episodes.mask, gamma,
                     gae_lambda)
    if normalize:
        advantages = normalize_advantages(advantages, episodes.mask)
    return PolicyBatch(episodes.observations, episodes.actions, episodes.mask,
                       episodes.log_probs, advantages.detach())
