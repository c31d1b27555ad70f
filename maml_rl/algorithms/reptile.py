"""Reptile (Nichol, Achiam & Schulman 2018, "On First-Order Meta-Learning Algorithms",
Algorithm 2, the batched version).

Each task adapts by ``inner.steps`` plain SGD steps of ``inner.lr`` on its support set, giving
``theta_i``; the update is ``theta <- theta + epsilon * mean_i(theta_i - theta)``. We hand the
pseudo-gradient ``theta - mean_i theta_i`` to the meta-optimizer with step size ``meta.lr``
(= epsilon): with ``meta.optimizer: sgd`` that is the paper's update exactly; with ``adam`` it is
the Adam variant the paper also describes. ``reptile.anneal`` decays epsilon linearly to 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from maml_rl.adaptation import Batch, LossFn, Params, inner_step, map_tasks, model_params
from maml_rl.algorithms.base import Algorithm, detached
from maml_rl.config import Config
from maml_rl.meta_updates.base import scheduled_lr
from maml_rl.seeding import EpisodeKey


class Reptile(Algorithm):
    """Reptile; its inner rule is plain SGD, at training and at evaluation."""

    supports_rl = False  # its meta-gradient is a displacement, not a gradient of the surrogate
    first_order_by_construction = True

    def __init__(self, config: Config, model: nn.Module, loss_fn: LossFn, batching: str) -> None:
        super().__init__(config, model, loss_fn, batching)
        self.updates = 0  # meta-updates done, for the annealed step size (checkpointed)

    def inner_step(
        self, theta: Params, phi: Params, batch: Batch, step_size: float, functional: bool,
        first_order: bool | None = None,
    ) -> Params:
        """One SGD step ``phi - alpha * grad L(phi)``; nothing is differentiated through it."""
        return inner_step(self.model, phi, self.loss_fn, batch, step_size, first_order=True,
                          functional=functional)

    def meta_gradient(self, support: Batch, query: Batch,
                      keys: Sequence[EpisodeKey] | None = None) -> tuple[list[Tensor], Tensor]:
        """``theta - mean_i theta_i`` and the query losses of the ``theta_i``."""
        theta = detached(model_params(self.model))

        def task(task_support: Batch, task_query: Batch) -> tuple[Params, Tensor]:
            adapted = self.adapt(theta, task_support, self.functional)
            return adapted, self.loss_fn(self.model, adapted, task_query)

        with torch.no_grad():  # the inner gradient still runs: it enables grad itself
            adapted, losses = map_tasks(task, support, query, batching=self.batching)
        # The mean over tasks in float64: the same to the last bit however the tasks are split
        # over processes (maml_rl.distributed).
        return [(theta[k] - adapted[k]).double().mean(0) for k in theta], losses

    def outer_lr(self) -> float:
        """epsilon for the next update: ``meta.lr`` (under its ``lr_milestones`` schedule),
        annealed linearly to 0 if asked."""
        lr = scheduled_lr(self.config.meta, self.updates + 1)
        if self.config.reptile.anneal:
            lr *= max(0.0, 1.0 - self.updates / self.config.training.iterations)
        return lr

    def after_meta_step(self) -> dict[str, float]:
        lr = self.outer_lr()  # the rate the update just used
        self.updates += 1
        return {"reptile/outer_lr": lr}

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
