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

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from maml_rl.adaptation import (
    Params,
    map_tasks,
    model_params,
    per_task,
    shared_for,
    task_slice,
    tree_map,
)
from maml_rl.algorithms import Algorithm
from maml_rl.distributed import SINGLE_PROCESS, ProcessGroup
from maml_rl.episodes import PolicyBatch
from maml_rl.linalg import flat_product, graph_captured_product, hessian_vector_product
from maml_rl.meta_updates.base import check_finite
from maml_rl.meta_updates.curvature import task_fisher_product
from maml_rl.objectives import clipped_surrogate_loss, kl_divergence, surrogate_loss


def curvature_subset(num_tasks: int, size: int) -> list[int]:
    """``size`` evenly spaced indices of a meta-batch of ``num_tasks`` (the tasks whose KL the
    curvature products use). Tasks are i.i.d., so any subset is a random one; evenly spaced, it
    spreads over the contiguous shards of the processes, which then share the products' work."""
    return [(j * num_tasks) // size for j in range(size)]


class RLMetaBatch:
    """One RL meta-batch (:class:`maml_rl.meta_updates.base.MetaBatch`): ``supports`` (one
    processed batch per inner step) and ``query``, tensors with a leading task dimension, and
    ``old_params``, the adapted parameters stacked per task that sampled the query episodes.

    Under torchrun these hold this process's tasks ``task_ids`` of a meta-batch of
    ``num_tasks``. Every mean over tasks is formed the same way whatever the layout: per-task
    values (losses, gradients, Fisher-vector products) are summed in float64, the sums
    all-reduced (:meth:`maml_rl.distributed.ProcessGroup.sum`) and divided by the number of
    tasks, so one process and N give the same numbers up to float64 rounding, far below
    float32's. That is why gradients are taken per task (:meth:`_gradient`): the gradient of a
    mean would sum over tasks inside autograd, in float32 and in an order set by the layout,
    and TRPO's conjugate gradient amplifies such differences."""

    def __init__(self, algorithm: Algorithm, supports: list[PolicyBatch], query: PolicyBatch,
                 old_params: Params, batching: str, group: ProcessGroup = SINGLE_PROCESS,
                 task_ids: Sequence[int] | None = None, num_tasks: int | None = None) -> None:
        self.algorithm, self.model = algorithm, algorithm.model
        self.supports, self.query, self.old_params = supports, query, old_params
        self.batching = batching
        self.meta_parameters = algorithm.meta_parameters()
        local = int(query.mask.shape[0])
        self.group = group
        self.task_ids = list(range(local)) if task_ids is None else list(task_ids)
        #: Tasks in the whole meta-batch (over every process).
        self.num_tasks = local if num_tasks is None else num_tasks

    def theta(self) -> Params:
        """A copy of the policy's current parameters (ProMP's pre-update reference)."""
        return {k: v.detach().clone() for k, v in model_params(self.model).items()}

    # -- means over tasks ------------------------------------------------------------------------
    def _mean(self, local_sums: Sequence[Tensor], tasks: int) -> list[Tensor]:
        """Float64 sums over this process's tasks -> float32 means over ``tasks`` tasks."""
        return [(v / tasks).float() for v in self.group.sum(local_sums)]

    def task_means(self, *per_task: Tensor) -> list[Tensor]:
        """Means over the meta-batch of per-task values (one entry per local task)."""
        return self.group.task_mean(per_task, self.num_tasks)

    def _local_subset(self, size: int | None) -> tuple[list[int] | None, int]:
        """Positions among this process's tasks of the curvature subset of ``size`` tasks
        (None: all tasks) and the subset's size."""
        if size is None or size >= self.num_tasks:
            return None, self.num_tasks
        chosen = set(curvature_subset(self.num_tasks, size))
        return [j for j, i in enumerate(self.task_ids) if i in chosen], size

    def _map(self, fn: Callable[..., Any], positions: list[int] | None,
             theta: Params | None = None) -> Any:
        """``fn(task_supports, task_query, task_old, task_theta)`` on every local task (or
        those at ``positions``), stacked; ``theta`` (default: the policy's parameters, shared)
        may be stacked per task."""
        if positions is None:
            pick = lambda tree: tree  # noqa: E731
        else:
            index = torch.tensor(positions, dtype=torch.long, device=self.query.mask.device)
            pick = lambda tree: tree_map(lambda v: v.index_select(0, index), tree)  # noqa: E731
        if theta is None:
            count = len(self.task_ids) if positions is None else len(positions)
            shared = shared_for(model_params(self.model), self.batching, count)
            return map_tasks(lambda s, q, o: fn(s, q, o, shared), pick(self.supports),
                             pick(self.query), pick(self.old_params), batching=self.batching)
        return map_tasks(fn, pick(self.supports), pick(self.query), pick(self.old_params),
                         theta, batching=self.batching)

    def _adapt(self, theta: Params, task_supports: list[PolicyBatch],
               first_order: bool | None = None) -> Params:
        return self.algorithm.adapt(theta, list(task_supports),
                                    functional=self.batching == "vmap", first_order=first_order)

    def _gradient(self, task_fn: Callable[..., tuple[Tensor, ...]]
                  ) -> tuple[Tensor, list[Tensor]]:
        """The float64 sum over this process's tasks of the gradient of ``task_fn``'s first
        output, flat in the order of :attr:`meta_parameters`, and every output's per-task
        values. Each task starts from its own leaf copy of theta, so that one backward pass
        gives each task's gradient: a list of leaves for a loop over tasks, one stacked leaf
        ``[M, ...]`` per parameter under vmap."""
        theta = model_params(self.model)
        local = len(self.task_ids)
        names = {id(v): k for k, v in theta.items()}
        extras = [p for p in self.meta_parameters if id(p) not in names]
        if self.batching == "loop":
            leaves = [{k: v.detach().requires_grad_() for k, v in theta.items()}
                      for _ in range(local)]
            outputs_per_task = [
                task_fn(*(task_slice(tree, i) for tree in
                          (self.supports, self.query, self.old_params)), leaves[i])
                for i in range(local)]
            outputs = tree_map(lambda *xs: torch.stack(xs), *outputs_per_task)
            inputs = [leaf[k] for leaf in leaves for k in theta]
        else:
            stacked = {k: v.detach().unsqueeze(0).repeat(local, *([1] * v.dim()))
                       .requires_grad_() for k, v in theta.items()}
            outputs = self._map(task_fn, None, stacked)
            inputs = list(stacked.values())
        grads = torch.autograd.grad(outputs[0].sum(), [*inputs, *extras], allow_unused=True)
        theta_grads, extra_grads = grads[:len(inputs)], grads[len(inputs):]
        sums: dict[str, Tensor] = {}
        for j, (k, v) in enumerate(theta.items()):
            if self.batching == "loop":
                task_grads = [theta_grads[i * len(theta) + j] for i in range(local)]
                task_grads = [torch.zeros_like(v) if g is None else g for g in task_grads]
                rows = torch.stack(task_grads)
            else:
                g = theta_grads[j]
                rows = torch.zeros(local, *v.shape, device=v.device) if g is None else g
            sums[k] = rows.reshape(local, -1).double().sum(0)
        # An algorithm's own tensors (Meta-SGD's rates) are shared: autograd sums their tasks.
        extra = {id(p): g for p, g in zip(extras, extra_grads, strict=True)}
        flat = []
        for p in self.meta_parameters:
            if id(p) in names:
                flat.append(sums[names[id(p)]])
            else:
                g = extra[id(p)]
                flat.append(torch.zeros(p.numel(), dtype=torch.float64, device=p.device)
                            if g is None else g.reshape(-1).double())
        return torch.cat(flat), [o.detach() for o in outputs]

    def _split(self, flat: Tensor) -> list[Tensor]:
        out, offset = [], 0
        for p in self.meta_parameters:
            out.append(flat[offset:offset + p.numel()].view_as(p))
            offset += p.numel()
        return out

    # -- the objective ---------------------------------------------------------------------------
    def _surrogate_and_kl(self, first_order: bool | None = None):
        def task(task_supports, task_query, task_old, task_theta):
            adapted = self._adapt(task_theta, task_supports, first_order)
            return (surrogate_loss(self.model, adapted, task_query),
                    kl_divergence(self.model, task_old, adapted, task_query))

        return task

    def losses(self, values_only: bool = False, tasks: int | None = None
               ) -> tuple[Tensor, Tensor]:
        """Per-task surrogate and KL of the adapted policies (this process's tasks, or those
        of the curvature subset of ``tasks`` tasks), differentiable in theta unless
        ``values_only`` (line-search evaluations need no graph, which makes them several times
        cheaper)."""
        positions, _ = self._local_subset(tasks)
        task = self._surrogate_and_kl(True if values_only else None)
        if values_only:
            with torch.no_grad():  # the inner gradient still runs (it enables grad itself)
                return self._map(task, positions)
        return self._map(task, positions)

    def surrogate_gradient(self) -> tuple[Tensor, Tensor, Tensor]:
        """The flat gradient of the mean post-adaptation surrogate (MAML Eq. 3), the mean
        surrogate and the mean KL from the sampling policies, over the meta-batch."""
        flat, (surrogate, kl) = self._gradient(self._surrogate_and_kl())
        grad, loss, kl = self._mean(
            [flat, surrogate.double().sum(0), kl.double().sum(0)], self.num_tasks)
        return grad, loss, kl

    def meta_gradient(self) -> tuple[list[Tensor], dict[str, float]]:
        """The gradient of the mean post-adaptation surrogate (MAML Eq. 3)."""
        grad, loss, kl = self.surrogate_gradient()
        check_finite("meta-loss", loss)
        return self._split(grad), {"surrogate/before": loss.item(), "kl": kl.item()}

    # -- curvature -------------------------------------------------------------------------------
    def fisher_product(self, tasks: int) -> Callable[[Tensor], Tensor]:
        """Flat ``v -> H v`` of the mean KL over the curvature subset of ``tasks`` tasks. On
        CUDA with stacked tasks in one process the product is captured once in a CUDA graph
        and replayed (:func:`maml_rl.linalg.graph_captured_product`; the same numbers)."""
        device = self.query.mask.device
        if self.batching == "stacked" and device.type == "cuda" and not self.group.distributed:
            size = sum(p.numel() for p in self.meta_parameters)
            return graph_captured_product(lambda: self._fisher_product(tasks), size,
                                          self.meta_parameters[0])
        return self._fisher_product(tasks)

    def _fisher_product(self, tasks: int) -> Callable[[Tensor], Tensor]:
        algorithm, theta = self.algorithm, model_params(self.model)
        rates = [algorithm.rate(a) for a in algorithm.config.inner_step_sizes()]
        positions, size = self._local_subset(tasks)
        if positions is None:
            positions = list(range(len(self.task_ids)))
        if self.batching == "stacked":
            # One product for the stack of tasks (parameters [P, ...], batched matmuls); its
            # result holds each task's product, summed over tasks in float64 as in the loop.
            index = torch.tensor(positions, dtype=torch.long, device=self.query.mask.device)
            pick = lambda tree: tree_map(lambda x: x.index_select(0, index), tree)  # noqa: E731
            # Materialised stacks: forward-mode AD refuses tensors whose entries share memory.
            def stack(params: Params) -> Params:
                return {k: x.contiguous() for k, x in per_task(params, len(positions)).items()}

            stacked = task_fisher_product(
                self.model, stack(theta), algorithm.loss_fn, [pick(b) for b in self.supports],
                pick(self.query), rates, algorithm.first_order, algorithm.trainable)

            def summed(v: Params) -> Params:
                v = {k: x.to(theta[k]) for k, x in v.items()}  # TRPO's vectors are float32
                return {k: x.double().sum(0) for k, x in stacked(stack(v)).items()}
        else:
            products = [
                task_fisher_product(
                    self.model, theta, algorithm.loss_fn,
                    [task_slice(b, i) for b in self.supports], task_slice(self.query, i),
                    rates, algorithm.first_order, algorithm.trainable)
                for i in positions
            ]

            def summed(v: Params) -> Params:  # float64 sums over the local tasks, task by task
                total = {k: torch.zeros_like(x, dtype=torch.float64) for k, x in v.items()}
                for task_product in products:
                    for k, x in task_product(v).items():
                        total[k] += x
                return total

        flat = flat_product(summed, theta)

        def product(v: Tensor) -> Tensor:
            return self._mean([flat(v).double()], size)[0]

        return product

    def kl_hessian_product(self, tasks: int) -> Callable[[Tensor], Tensor]:
        """Flat ``v -> H v`` with ``H`` the Hessian of the mean KL over the curvature subset
        of ``tasks`` tasks, differentiated twice through the adaptation (``meta.curvature:
        hessian``). Its sum over tasks runs inside autograd, so across process layouts it
        agrees to float32 rounding only."""
        positions, size = self._local_subset(tasks)
        local = len(self.task_ids) if positions is None else len(positions)
        hvp = None
        if local:
            kl_sum = self.losses(tasks=tasks)[1].sum()
            hvp = hessian_vector_product(kl_sum, self.meta_parameters)

        def product(v: Tensor) -> Tensor:
            out = hvp(v).double() if hvp is not None else torch.zeros_like(v, dtype=torch.float64)
            return self._mean([out], size)[0]

        return product

    # -- ProMP -----------------------------------------------------------------------------------
    def ppo_gradient(self, old_theta: Params, inner_kl_penalty: float
                     ) -> tuple[list[Tensor], Tensor, Tensor]:
        """ProMP's objective over the meta-batch: the gradient of the mean of the clipped
        surrogate of the adapted policy on the query episodes plus ``inner_kl_penalty`` times
        the KL of the pre-update policy from ``old_theta`` on the first support batch (the
        inner trust region); and the mean clipped surrogate and objective."""
        clip_eps = self.algorithm.config.meta.clip_eps

        def task(task_supports, task_query, task_old, task_theta):
            adapted = self._adapt(task_theta, task_supports)
            clipped = clipped_surrogate_loss(self.model, adapted, task_query, clip_eps)
            inner_kl = kl_divergence(self.model, old_theta, task_theta, task_supports[0])
            return clipped + inner_kl_penalty * inner_kl, clipped

        flat, (objective, clipped) = self._gradient(task)
        grad, objective, clipped = self._mean(
            [flat, objective.double().sum(0), clipped.double().sum(0)], self.num_tasks)
        return self._split(grad), objective, clipped

    def ppo_kls(self, old_theta: Params) -> tuple[Tensor, Tensor]:
        """Means over the meta-batch of ProMP's two KLs (see :meth:`ppo_gradient`): of the
        pre-update policy from ``old_theta``, and of the adapted policy from the sampling
        one."""

        def task(task_supports, task_query, task_old, task_theta):
            adapted = self._adapt(task_theta, task_supports, first_order=True)
            return (kl_divergence(self.model, old_theta, task_theta, task_supports[0]),
                    kl_divergence(self.model, task_old, adapted, task_query))

        with torch.no_grad():
            inner_kl, kl = self._map(task, None)
        return tuple(self.task_means(inner_kl, kl))

    def outer_lr(self) -> float | None:
        return self.algorithm.outer_lr()

    def after_step(self) -> dict[str, float]:
        return self.algorithm.after_meta_step()
