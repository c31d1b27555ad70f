"""Returns and advantages on padded episode tensors.

Every function here is pure and works on tensors whose LAST dimension is time: ``rewards``,
``values`` and ``mask`` have shape ``[..., T]`` (typically ``[M tasks, N episodes, T]``).
``mask[..., t]`` is 1 for a step that happened and 0 for padding after the episode ended; the
valid steps of an episode are a prefix of its row. Padded steps are 0 in every output, so
consumers can sum over time without masking again.

The episode end (the last valid step, or the last column of the tensor) is treated as terminal:
nothing is bootstrapped beyond it. That is what rllab, and therefore the MAML paper's runs, do.
The recursions loop over T (a few hundred steps at most) and are vectorised over all leading
dimensions; they keep the input's device and floating dtype and are differentiable.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["discounted_returns", "gae", "normalize_advantages"]


def _check_time_major(name: str, x: Tensor, mask: Tensor) -> None:
    if x.shape != mask.shape:
        raise ValueError(
            f"{name} and mask must have the same shape [..., T], got {tuple(x.shape)} "
            f"and {tuple(mask.shape)}"
        )
    if x.dim() < 1:
        raise ValueError(f"{name} needs a time dimension (the last one), got a scalar")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")


def discounted_returns(rewards: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """Discounted reward-to-go ``R_t = sum_{l >= 0} gamma^l r_{t+l}`` within each episode.

    Args:
        rewards: ``[..., T]`` rewards; values at padded steps are ignored.
        mask: ``[..., T]``, 1.0 at valid steps and 0.0 after the episode ended (bool accepted).
        gamma: discount factor in [0, 1].

    Returns:
        ``[..., T]`` returns, same dtype and device as ``rewards``; 0 at padded steps.
    """
    _check_time_major("rewards", rewards, mask)
    mask = mask.to(rewards.dtype)
    out = torch.empty_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        # Multiplying by the mask both drops padded rewards and resets the running sum, so
        # nothing leaks from padding into the last valid step.
        running = mask[..., t] * (rewards[..., t] + gamma * running)
        out[..., t] = running
    return out


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> Tensor:
    """Generalized advantage estimation (Schulman et al. 2016, "High-dimensional continuous
    control using generalized advantage estimation", eq. 16).

    ``A_t = sum_{l >= 0} (gamma * lam)^l delta_{t+l}`` with the TD errors (eq. 10 there)
    ``delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)``, where ``V`` after the last valid step is 0
    (the episode end is terminal, as in rllab). Special cases that the tests check:
    ``lam = 1`` gives ``discounted_returns - values`` (eq. 18) and ``lam = 0`` gives ``delta_t``
    (eq. 17).

    Args:
        rewards: ``[..., T]`` rewards.
        values: ``[..., T]`` with ``values[..., t] = V(s_t)``; ignored at padded steps.
        mask: ``[..., T]``, 1.0 at valid steps, 0.0 after the episode ended.
        gamma: discount factor.
        lam: GAE lambda in [0, 1].

    Returns:
        ``[..., T]`` advantages, 0 at padded steps.
    """
    _check_time_major("rewards", rewards, mask)
    _check_time_major("values", values, mask)
    mask = mask.to(rewards.dtype)
    values = values.to(rewards.dtype) * mask
    # V(s_{t+1}) is the next column, which the mask has already zeroed after the last valid
    # step; past the tensor's last column there is no next state either.
    next_values = torch.cat([values[..., 1:], torch.zeros_like(values[..., :1])], dim=-1)
    deltas = (rewards + gamma * next_values - values) * mask
    out = torch.empty_like(deltas)
    running = torch.zeros_like(deltas[..., 0])
    decay = gamma * lam
    for t in range(deltas.shape[-1] - 1, -1, -1):
        running = deltas[..., t] + decay * mask[..., t] * running
        out[..., t] = running
    return out


def normalize_advantages(adv: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """Centre and scale advantages per task: ``(A - mean) / (std + eps)`` over valid steps.

    The statistics are taken separately for each index of the FIRST dimension (the task) over
    all remaining dimensions (episodes and time), counting only entries where ``mask`` is 1.
    MAML's REINFORCE inner loss centres and normalises advantages per task (rllab's
    ``center_adv``), so one task's return scale does not set another task's step size. The
    standard deviation is the population one (divide by the count), as rllab's ``np.std``.

    Args:
        adv: ``[M, ...]`` advantages, at least 2-D (task first, time last).
        mask: same shape as ``adv``.
        eps: added to the standard deviation so a task with constant advantages maps to 0.

    Returns:
        ``[M, ...]`` normalised advantages, 0 at padded steps. A task without valid steps is
        all zeros.
    """
    _check_time_major("adv", adv, mask)
    if adv.dim() < 2:
        raise ValueError(
            f"adv must be at least 2-D with the task first, got shape {tuple(adv.shape)}; "
            "use adv.unsqueeze(0) for a single task"
        )
    mask = mask.to(adv.dtype)
    dims = tuple(range(1, adv.dim()))
    count = mask.sum(dim=dims, keepdim=True).clamp_min(1.0)
    mean = (adv * mask).sum(dim=dims, keepdim=True) / count
    centred = (adv - mean) * mask
    var = (centred * centred).sum(dim=dims, keepdim=True) / count
    return centred / (var.sqrt() + eps)
