"""What every meta-learning algorithm of the MAML family provides to the supervised learner.

An algorithm is two things (Finn et al. 2017, Algorithm 2, and its variants):

- its task adaptation rule, :meth:`SupervisedAlgorithm.inner_step`: one inner step from ``phi``
  given the meta-parameters ``theta``. Training and evaluation both adapt through it, so a
  Meta-SGD model is evaluated with its learned rates, ANIL adapts only its head, iMAML steps on
  its proximal objective.
- its meta-gradient on a meta-batch, :meth:`SupervisedAlgorithm.meta_gradient`: one tensor per
  meta-learned tensor (:meth:`SupervisedAlgorithm.parameters`), handed to the meta-optimizer by
  :meth:`SupervisedAlgorithm.meta_step` with the shared NaN/inf guard.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from maml_rl.adaptation import Batch, LossFn, Params, meta_parameters
from maml_rl.config import Config
from maml_rl.meta_optimizers import apply_meta_gradient, check_finite


class SupervisedAlgorithm:
    """Base of the algorithms: subclasses define :meth:`inner_step` and :meth:`meta_gradient`,
    and override the rest only where they differ."""

    def __init__(self, config: Config, model: nn.Module, loss_fn: LossFn, batching: str) -> None:
        self.config, self.model, self.loss_fn, self.batching = config, model, loss_fn, batching
        self.functional = batching == "vmap"

    def extra_parameters(self) -> list[Tensor]:
        """Meta-learned tensors besides the model's parameters (Meta-SGD's rates)."""
        return []

    def parameters(self) -> list[Tensor]:
        """Every meta-learned tensor, in the order of :meth:`meta_gradient`'s result."""
        return [*meta_parameters(self.model).values(), *self.extra_parameters()]

    def inner_step(
        self, theta: Params, phi: Params, batch: Batch, step_size: float, functional: bool
    ) -> Params:
        """One step of this algorithm's task adaptation from ``phi`` (meta-parameters
        ``theta``) with the configured step size ``step_size``."""
        raise NotImplementedError

    def adapt(self, theta: Params, batch: Batch, functional: bool) -> Params:
        """``inner.steps`` steps of :meth:`inner_step` from ``theta`` on one task's batch."""
        phi = theta
        for alpha in self.config.inner_step_sizes():
            phi = self.inner_step(theta, phi, batch, alpha, functional)
        return phi

    def meta_gradient(self, support: Batch, query: Batch) -> tuple[list[Tensor], Tensor]:
        """The meta-gradient of one meta-batch (tensors with a leading task dimension), one
        tensor per :meth:`parameters` entry, and the per-task post-adaptation query losses."""
        raise NotImplementedError

    def meta_step(
        self, optimizer: torch.optim.Optimizer, support: Batch, query: Batch
    ) -> dict[str, float]:
        """Compute the meta-gradient and take one meta-optimizer step; return the metrics."""
        grads, losses = self.meta_gradient(support, query)
        loss = losses.mean().item()
        check_finite("meta-loss", loss)
        apply_meta_gradient(optimizer, self.parameters(), grads)
        return {"loss/post_adaptation": loss}

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must hold besides the model and optimizer (nothing by default)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


def detached(params: Params) -> Params:
    """``params`` cut from the autograd graph (first-order algorithms need only the values)."""
    return {k: v.detach() for k, v in params.items()}
