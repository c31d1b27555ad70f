"""The plain meta-optimizer (Adam or SGD on the post-adaptation loss, MAML Eq. 3) and the
non-finite guard shared by every meta-update. The TRPO meta-update lives in
:mod:`maml_rl.trpo`; algorithms whose meta-gradient is not the gradient of a loss (Reptile,
iMAML) hand it to :func:`apply_meta_gradient`."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor


class NonFiniteError(RuntimeError):
    """A loss or gradient became NaN/inf; the parameters were left unchanged."""


def make_plain_optimizer(meta_config, parameters: Iterable[Tensor]) -> torch.optim.Optimizer:
    """Adam or SGD over the meta-parameters with ``meta.lr``."""
    if meta_config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=meta_config.lr)
    return torch.optim.Adam(parameters, lr=meta_config.lr)


def scheduled_lr(meta_config, iteration: int) -> float:
    """``meta.lr`` for the 1-based ``iteration`` under the step schedule ``meta.lr_milestones``
    / ``meta.lr_gamma``: a function of the iteration alone, so a resumed run continues it."""
    passed = sum(1 for m in meta_config.lr_milestones or () if m < iteration)
    return meta_config.lr * meta_config.lr_gamma**passed


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Restore ``optimizer`` (moments, step counts) from a checkpoint but keep its current
    learning rates, which come from the config: ``--resume RUN meta.lr=1e-4`` then lowers the
    rate, where ``Optimizer.load_state_dict`` alone would silently bring the saved one back."""
    rates = [group["lr"] for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, lr in zip(optimizer.param_groups, rates, strict=True):
        group["lr"] = lr


def check_finite(name: str, value: Tensor | float) -> None:
    v = float(value)
    if not math.isfinite(v):
        raise NonFiniteError(f"{name} is {v}; the parameters were not updated")


def plain_meta_step(
    optimizer: torch.optim.Optimizer, meta_loss: Tensor, parameters: Iterable[Tensor]
) -> None:
    """Backpropagate the meta-loss through the adaptation and take one optimizer step,
    refusing (with :class:`NonFiniteError`) to apply a NaN/inf loss or gradient."""
    check_finite("meta-loss", meta_loss.detach())
    optimizer.zero_grad(set_to_none=True)
    meta_loss.backward()
    _check_gradients(parameters)
    optimizer.step()


def apply_meta_gradient(
    optimizer: torch.optim.Optimizer, parameters: Sequence[Tensor], grads: Sequence[Tensor]
) -> None:
    """Take one optimizer step along ``grads`` (one per parameter, e.g. Reptile's
    ``theta - mean_i theta_i`` or iMAML's implicit gradient), with the same NaN/inf guard as
    :func:`plain_meta_step`."""
    if len(parameters) != len(grads):
        raise ValueError(f"{len(grads)} gradients for {len(parameters)} parameters")
    optimizer.zero_grad(set_to_none=True)
    for p, g in zip(parameters, grads, strict=True):
        p.grad = g.detach().to(p)
    _check_gradients(parameters)
    optimizer.step()


def _check_gradients(parameters: Iterable[Tensor]) -> None:
    params = [p for p in parameters if p.grad is not None]
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
    check_finite("meta-gradient norm", norm)
