"""The plain meta-optimizer (Adam or SGD on the post-adaptation loss, MAML Eq. 3) and the
non-finite guard shared by every meta-update. The TRPO meta-update lives in
:mod:`maml_rl.trpo`."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor


class NonFiniteError(RuntimeError):
    """A loss or gradient became NaN/inf; the parameters were left unchanged."""


def make_plain_optimizer(meta_config, parameters: Iterable[Tensor]) -> torch.optim.Optimizer:
    """Adam or SGD over the meta-parameters with ``meta.lr``."""
    if meta_config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=meta_config.lr)
    return torch.optim.Adam(parameters, lr=meta_config.lr)


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
    params = [p for p in parameters if p.grad is not None]
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
    check_finite("meta-gradient norm", norm)
    optimizer.step()
