"""Supervised inner/outer losses. They read the targets that the one-step envs return in
``info["target"]`` and compute the exact loss, so results compare with the paper's."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maml_rl.adaptation import Params, forward
from maml_rl.episodes import PolicyBatch, ShotBatch


def mse_loss(model: nn.Module, params: Params, batch: ShotBatch) -> Tensor:
    """Mean squared error of the regression (MAML paper, Sec. 5.1)."""
    return F.mse_loss(forward(model, params, batch.inputs), batch.targets)


def cross_entropy_loss(model: nn.Module, params: Params, batch: ShotBatch) -> Tensor:
    """Cross-entropy of the logits against integer labels (few-shot classification)."""
    logits = forward(model, params, batch.inputs)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.targets.reshape(-1))


def accuracy(model: nn.Module, params: Params, batch: ShotBatch) -> Tensor:
    """Fraction of correctly classified inputs."""
    logits = forward(model, params, batch.inputs)
    return (logits.argmax(-1) == batch.targets).float().mean()


SUPERVISED_LOSSES = {"mse": mse_loss, "cross_entropy": cross_entropy_loss}


# --- Reinforcement learning -------------------------------------------------------------------


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over a task's valid steps, the last two dimensions ``[N, T]`` (episodes, time):
    a scalar for one task's batch, one value per task for a stacked ``[M, N, T]`` batch."""
    return (values * mask).sum((-2, -1)) / mask.sum((-2, -1)).clamp_min(1.0)


def reinforce_loss(model: nn.Module, params: Params, batch: PolicyBatch) -> Tensor:
    """Vanilla policy gradient (REINFORCE with a baseline), the MAML paper's inner loss for RL
    (Sec. 5.2): ``-E[log pi(a|s) * A]`` over the valid steps of the task's episodes."""
    log_probs = forward(model, params, batch.observations).log_prob(batch.actions)
    return -_masked_mean(log_probs * batch.advantages, batch.mask)


def surrogate_loss(model: nn.Module, params: Params, batch: PolicyBatch) -> Tensor:
    """TRPO's surrogate (Schulman et al. 2015, Eq. 14): ``-E[pi(a|s) / pi_old(a|s) * A]``, with
    pi_old the policy that sampled the batch. Its gradient at pi = pi_old is the policy gradient."""
    log_probs = forward(model, params, batch.observations).log_prob(batch.actions)
    ratio = torch.exp(log_probs - batch.log_probs)
    return -_masked_mean(ratio * batch.advantages, batch.mask)


def clipped_surrogate_loss(
    model: nn.Module, params: Params, batch: PolicyBatch, clip_eps: float
) -> Tensor:
    """PPO's clipped surrogate (Schulman et al. 2017, Eq. 7), ProMP's outer objective:
    ``-E[min(r A, clip(r, 1 - eps, 1 + eps) A)]`` with ``r = pi / pi_old``."""
    log_probs = forward(model, params, batch.observations).log_prob(batch.actions)
    ratio = torch.exp(log_probs - batch.log_probs)
    advantages = batch.advantages
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    return -_masked_mean(torch.min(ratio * advantages, clipped * advantages), batch.mask)


#: Inner RL objectives by ``inner.objective``. ``lvc`` is ProMP's low-variance curvature
#: estimator (Rothfuss et al. 2019, Eq. 12), which is the TRPO surrogate with the sampling
#: policy's log-probabilities as the stop-gradient denominator.
INNER_RL_OBJECTIVES = {"reinforce": reinforce_loss, "lvc": surrogate_loss}


def kl_divergence(
    model: nn.Module, old_params: Params, params: Params, batch: PolicyBatch
) -> Tensor:
    """Mean ``KL(pi_old(.|s) || pi(.|s))`` over the valid states of the batch (TRPO's
    constraint)."""
    old = forward(model, {k: v.detach() for k, v in old_params.items()}, batch.observations)
    new = forward(model, params, batch.observations)
    return _masked_mean(torch.distributions.kl_divergence(old, new), batch.mask)
