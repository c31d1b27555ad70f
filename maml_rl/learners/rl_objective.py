"""The post-adaptation objective of one RL meta-batch, as the meta-updates consume it.

For the tasks of a meta-iteration it holds the processed support episodes of every inner step,
the query episodes and the adapted parameters that sampled them. Re-adapting from the current
theta through the algorithm's :meth:`~maml_rl.algorithms.base.Algorithm.adapt` gives, per task,
the surrogate loss of the adapted policy on the query episodes (MAML Eq. 3 with the policy
gradient's importance-weighted surrogate, Finn et al. 2017 Sec. 5.3) and its KL from the
sampling policy, TRPO's constraint; the Fisher-vector products of that KL
(:mod:`maml_rl.meta_updates.curvature`); and ProMP's clipped terms (Rothfuss et al. 2019).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from maml_rl.adaptation import Params, map_tasks, model_params, task_slice, tree_map
from maml_rl.algorithms import Algorithm
from maml_rl.episodes import PolicyBatch
from maml_rl.linalg import flat_product
from maml_rl.meta_updates.base import check_finite
from maml_rl.meta_updates.curvature import mean_fisher_product, task_fisher_product
from maml_rl.objectives import clipped_surrogate_loss, kl_divergence, surrogate_loss


class RLMetaBatch:
    """One RL meta-batch (:class:`maml_rl.meta_updates.base.MetaBatch`): ``supports`` (one
    processed batch per inner step) and ``query``, tensors with a leading task dimension, and
    ``old_params``, the adapted parameters stacked per task that sampled the query episodes."""

    def __init__(self, algorithm: Algorithm, supports: list[PolicyBatch], query: PolicyBatch,
                 old_params: Params, batching: str) -> None:
        self.algorithm, self.model = algorithm, algorithm.model
        self.supports, self.query, self.old_params = supports, query, old_params
        self.batching = batching
        self.meta_parameters = algorithm.meta_parameters()
        self.num_tasks = int(query.mask.shape[0])

    def theta(self) -> Params:
        """A copy of the policy's current parameters (ProMP's pre-update reference)."""
        return {k: v.detach().clone() for k, v in model_params(self.model).items()}

    def _map(self, fn: Callable[..., Any], tasks: int | None) -> Any:
        """``fn(task_supports, task_query, task_old)`` on every task (or the first ``tasks``:
        tasks are i.i.d., so they are a random subset), stacked."""
        head = (lambda tree: tree) if tasks is None else (
            lambda tree: tree_map(lambda v: v[:tasks], tree))
        return map_tasks(fn, head(self.supports), head(self.query), head(self.old_params),
                         batching=self.batching)

    def _adapt(self, task_supports: list[PolicyBatch], first_order: bool | None = None) -> Params:
        return self.algorithm.adapt(model_params(self.model), list(task_supports),
                                    functional=self.batching == "vmap", first_order=first_order)

    def losses(self, values_only: bool = False, tasks: int | None = None
               ) -> tuple[Tensor, Tensor]:
        """Per-task surrogate and KL of the adapted policies, differentiable in theta unless
        ``values_only`` (line-search evaluations need no graph, which makes them several times
        cheaper)."""
        first_order = True if values_only else None

        def task(task_supports, task_query, task_old):
            adapted = self._adapt(task_supports, first_order)
            return (surrogate_loss(self.model, adapted, task_query),
                    kl_divergence(self.model, task_old, adapted, task_query))

        if values_only:
            with torch.no_grad():  # the inner gradient still runs (it enables grad itself)
                return self._map(task, tasks)
        return self._map(task, tasks)

    def fisher_product(self, tasks: int) -> Callable[[Tensor], Tensor]:
        """Flat ``v -> H v`` of the mean KL over the first ``tasks`` tasks."""
        algorithm, theta = self.algorithm, model_params(self.model)
        rates = [algorithm.rate(a) for a in algorithm.config.inner_step_sizes()]
        products = [
            task_fisher_product(self.model, theta, algorithm.loss_fn,
                                [task_slice(b, i) for b in self.supports],
                                task_slice(self.query, i), rates, algorithm.first_order,
                                algorithm.trainable)
            for i in range(tasks)
        ]
        return flat_product(mean_fisher_product(products), theta)

    def ppo_terms(self, old_theta: Params) -> tuple[Tensor, Tensor, Tensor]:
        """Per-task ProMP terms: the clipped surrogate of the adapted policy on the query
        episodes, the KL of the pre-update policy from ``old_theta`` on the first support batch
        (the inner trust region) and the KL of the adapted policy from the sampling one."""
        clip_eps = self.algorithm.config.meta.clip_eps

        def task(task_supports, task_query, task_old):
            adapted = self._adapt(task_supports)
            params = model_params(self.model)
            return (clipped_surrogate_loss(self.model, adapted, task_query, clip_eps),
                    kl_divergence(self.model, old_theta, params, task_supports[0]),
                    kl_divergence(self.model, task_old, adapted, task_query))

        return self._map(task, None)

    def meta_gradient(self) -> tuple[list[Tensor], dict[str, float]]:
        """The gradient of the mean post-adaptation surrogate (MAML Eq. 3)."""
        surrogate, kl = self.losses()
        loss = surrogate.mean()
        check_finite("meta-loss", loss.detach())
        grads = torch.autograd.grad(loss, self.meta_parameters, allow_unused=True)
        return ([torch.zeros_like(p) if g is None else g
                 for p, g in zip(self.meta_parameters, grads, strict=True)],
                {"surrogate/before": loss.item(), "kl": kl.mean().item()})

    def outer_lr(self) -> float | None:
        return self.algorithm.outer_lr()

    def after_step(self) -> dict[str, float]:
        return self.algorithm.after_meta_step()
