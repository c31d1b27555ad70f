"""MAML and first-order MAML (Finn, Abbeel & Levine 2017).

The meta-gradient is the gradient of the mean post-adaptation query loss, Eq. (3), through the
inner steps of Eq. (1): ``d/dtheta L_q(theta - alpha grad L_s(theta))``. First-order MAML (their
Sec. 5.2) drops the Hessian term ``-alpha H_s`` of that chain rule, i.e. treats the inner
gradient as a constant; it is ``algorithm: fomaml`` or, equivalently, ``inner.first_order``.
ANIL and Meta-SGD subclass :class:`MAML`: they change which parameters adapt and with which
step sizes, not how the meta-gradient is taken.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from maml_rl.adaptation import (
    Batch,
    LossFn,
    Params,
    StepSize,
    adapted_losses,
    inner_step,
    meta_parameters,
)
from maml_rl.algorithms.base import SupervisedAlgorithm
from maml_rl.config import Config


class MAML(SupervisedAlgorithm):
    """Second-order MAML (first order when ``inner.first_order`` is set)."""

    #: Names of the parameters that adapt in the inner loop (None: all of them).
    trainable: Sequence[str] | None = None

    def __init__(self, config: Config, model: nn.Module, loss_fn: LossFn, batching: str) -> None:
        super().__init__(config, model, loss_fn, batching)
        self.first_order = config.inner.first_order

    def rate(self, step_size: float) -> StepSize:
        """The step size an inner step multiplies the gradient with (Meta-SGD: its rates)."""
        return step_size

    def inner_step(
        self, theta: Params, phi: Params, batch: Batch, step_size: float, functional: bool
    ) -> Params:
        """Eq. (1): ``phi - alpha * grad L(phi)`` on the :attr:`trainable` parameters."""
        return inner_step(self.model, phi, self.loss_fn, batch, self.rate(step_size),
                          trainable=self.trainable, functional=functional)

    def meta_gradient(self, support: Batch, query: Batch) -> tuple[list[Tensor], Tensor]:
        """Gradient of Eq. (3) through the same inner steps as :meth:`inner_step` (same rate,
        same trainable subset), second order unless :attr:`first_order`."""
        losses = adapted_losses(
            self.model, meta_parameters(self.model), self.loss_fn, support, query,
            [self.rate(a) for a in self.config.inner_step_sizes()], self.first_order,
            self.batching, self.trainable,
        )
        params = self.parameters()
        grads = torch.autograd.grad(losses.mean(), params, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)
                ], losses.detach()


class FOMAML(MAML):
    """First-order MAML (Finn et al. 2017, Sec. 5.2): the meta-gradient is the query-loss
    gradient at the adapted parameters, ``grad L_q(theta')``, averaged over tasks."""

    def __init__(self, config: Config, model: nn.Module, loss_fn: LossFn, batching: str) -> None:
        super().__init__(config, model, loss_fn, batching)
        self.first_order = True
