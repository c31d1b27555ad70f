"""What every meta-update is: :class:`MetaUpdate` moves the meta-parameters theta given one
meta-batch's objective (:class:`MetaBatch`), MAML's outer step (Finn et al. 2017, Eq. 3 and
Algorithm 3, line 10). Also the non-finite guard and the learning-rate helpers they share.

The meta-updates (:mod:`maml_rl.meta_updates`) are strategies chosen by ``meta.optimizer``:
plain Adam/SGD, TRPO, ProMP's PPO-style update. A learner builds the meta-batch (for RL: the
support and query episodes and what differentiates through the adaptation) and hands it to the
configured update; neither knows the other's internals.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor

from maml_rl.config import Config


class NonFiniteError(RuntimeError):
    """A loss or gradient became NaN/inf; the parameters were left unchanged."""


class MetaBatch(Protocol):
    """One meta-batch as a meta-update sees it (built by the learner each iteration).

    Every meta-update needs :attr:`meta_parameters` and :meth:`meta_gradient`. The RL meta-batch
    (:class:`maml_rl.learners.rl_objective.RLMetaBatch`) also gives the per-task surrogate and KL
    and the curvature products that TRPO and ProMP use."""

    #: Every meta-learned tensor (the policy's parameters, then e.g. Meta-SGD's rates).
    meta_parameters: list[Tensor]

    def meta_gradient(self) -> tuple[list[Tensor], dict[str, float]]:
        """One gradient per :attr:`meta_parameters` entry (descent direction: the update subtracts
        it) and the metrics to log."""
        ...

    def outer_lr(self) -> float | None:
        """A learning rate the algorithm asks for this update (Reptile's annealing), or None."""
        ...

    def after_step(self) -> dict[str, float]:
        """Called once the parameters moved; more metrics to log."""
        ...


class MetaUpdate:
    """Base of the meta-updates; subclasses define :meth:`step`.

    Register one with :func:`maml_rl.meta_updates.register_meta_update` to make it a value of
    ``meta.optimizer``."""

    #: True for updates that constrain a policy's change (TRPO, ProMP): RL families only.
    needs_policy: ClassVar[bool] = False

    def __init__(self, config: Config, parameters: Sequence[Tensor]) -> None:
        self.config = config
        #: The torch optimizer, if the update has one (``meta.lr`` and its schedule act on it).
        self.optimizer: torch.optim.Optimizer | None = None

    def step(self, batch: MetaBatch) -> dict[str, float]:
        """Update the meta-parameters in place from one meta-batch; return the metrics."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict() if self.optimizer is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.optimizer is not None:
            load_optimizer_state(self.optimizer, state)


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


def apply_meta_gradient(
    optimizer: torch.optim.Optimizer, parameters: Sequence[Tensor], grads: Sequence[Tensor]
) -> None:
    """Take one optimizer step along ``grads`` (one per parameter, e.g. Reptile's
    ``theta - mean_i theta_i`` or iMAML's implicit gradient), refusing (with
    :class:`NonFiniteError`) to apply a NaN/inf gradient."""
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
