"""Implicit MAML (Rajeswaran, Finn, Kakade & Levine 2019, "Meta-Learning with Implicit
Gradients").

Inner problem (their Sec. 2.2): ``phi_i = argmin_phi L_s(phi) + lam/2 ||phi - theta||^2``,
solved approximately by ``inner.steps`` steps of ``inner.lr`` from ``phi = theta``, gradient
steps (``imaml.solver: gd``) or Hessian-free Newton steps (``newton_cg``), optionally
line-searched (``imaml.backtracks``): the implicit gradient does not depend on the
path of the inner solver (their Sec. 3), so a solver that cannot diverge is a free choice.
Meta-gradient (their Lemma 1, implicit Jacobian ``d phi_i/d theta = (I + H_s(phi_i)/lam)^-1``):
``g_i = (I + H_s(phi_i)/lam)^-1 grad L_q(phi_i)``, found by conjugate gradient with
Hessian-vector products (their Algorithm 2), never by differentiating through the inner steps.

Evaluation adapts with the same proximal steps (the paper's test-time procedure is its inner
solver), the prox centre being the meta-parameters; the first step starts at ``phi = theta``
where the proximal term has zero gradient, so with ``gd`` it is a plain gradient step
(line-searched on the proximal objective when ``backtracks`` > 0) and with ``newton_cg`` the
damped Newton step ``(H + lam I)^-1 grad L``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from maml_rl.adaptation import Batch, LossFn, Params, inner_gradient, map_tasks, model_params
from maml_rl.algorithms.base import Algorithm, detached
from maml_rl.config import Config
from maml_rl.linalg import (
    conjugate_gradient_fixed,
    flat_product,
    hessian_vector_product,
)
from maml_rl.seeding import EpisodeKey


def _descend(
    model: nn.Module,
    loss_fn: LossFn,
    theta: Params,
    phi: Params,
    batch: Batch,
    direction: Params,
    step_size: float,
    lam: float,
    backtracks: int,
) -> Params:
    """``phi - a direction`` with ``a = step_size`` or, given ``backtracks``, the one of
    ``step_size, step_size/2, ..., step_size/2^backtracks`` (or no step) that lowers the
    proximal objective ``L(phi) + lam/2 ||phi - theta||^2`` most."""
    if not backtracks:
        return {k: phi[k] - step_size * direction[k] for k in phi}

    def objective(p: Params) -> Tensor:
        penalty = sum(((p[k] - theta[k]) ** 2).sum() for k in p)
        return loss_fn(model, p, batch) + 0.5 * lam * penalty

    # Every candidate is evaluated and the best kept by a one-hot mix (no data-dependent
    # control flow), so the search runs under vmap, one task per lane.
    candidates = [phi] + [{k: phi[k] - step_size * 0.5**j * direction[k] for k in phi}
                          for j in range(backtracks + 1)]
    with torch.no_grad():
        values = torch.stack([objective(c) for c in candidates])
        best = torch.nn.functional.one_hot(values.nan_to_num(torch.inf).argmin(),
                                           len(candidates)).to(values.dtype)
    return {k: sum(w * c[k] for w, c in zip(best, candidates, strict=True)) for k in phi}


def proximal_step(
    model: nn.Module,
    loss_fn: LossFn,
    theta: Params,
    phi: Params,
    batch: Batch,
    step_size: float,
    lam: float,
    functional: bool = False,
    backtracks: int = 0,
) -> Params:
    """One gradient step on the proximal objective ``L(phi) + lam/2 ||phi - theta||^2``:
    ``phi - a (grad L(phi) + lam (phi - theta))`` (line-searched by :func:`_descend` given
    ``backtracks``). The penalty's gradient is added in closed form (cheaper than through
    autograd); nothing is differentiated through the step."""
    theta = detached(theta)
    grads = inner_gradient(model, phi, loss_fn, batch, first_order=True, functional=functional)
    direction = {k: grads[k] + lam * (phi[k] - theta[k]) for k in phi}
    return _descend(model, loss_fn, theta, phi, batch, direction, step_size, lam, backtracks)


def newton_cg_step(
    model: nn.Module,
    loss_fn: LossFn,
    theta: Params,
    phi: Params,
    batch: Batch,
    step_size: float,
    lam: float,
    cg_steps: int,
    backtracks: int = 0,
) -> Params:
    """One Newton step on the proximal objective ``F(phi) = L(phi) + lam/2 ||phi - theta||^2``:
    ``phi - a (H + lam I)^-1 grad F(phi)`` with ``H`` the Hessian of ``L`` at ``phi``.

    The direction comes from ``cg_steps`` iterations of
    :func:`maml_rl.meta_updates.trpo.conjugate_gradient_fixed` whose products ``(H + lam I) v`` are
    reverse-over-reverse Hessian-vector products (``torch.func.vjp`` of ``torch.func.grad``),
    so ``H`` is never formed ("Hessian-free", the inner solver of Rajeswaran et al. 2019).
    CG stops at a direction of negative curvature, so the direction stays one of descent.
    With ``a = 1`` and enough CG iterations, one step solves a quadratic ``L`` exactly. Written
    with ``torch.func`` only, it runs in a plain loop over tasks and under vmap alike; nothing
    is differentiated through the step.
    """
    theta, phi = detached(theta), detached(phi)
    loss_grad = torch.func.grad(lambda p: loss_fn(model, p, batch))
    with torch.enable_grad():  # torch.func transforms ignore an outer no_grad, but be explicit
        # The vjp of the gradient is H^T v = H v; its graph is built once and reused by every
        # CG product (forward-over-reverse jvp fails under vmap on ZeroTensor tangents).
        grads, hvp = torch.func.vjp(loss_grad, phi)
        rhs = torch.cat([(grads[k] + lam * (phi[k] - theta[k])).reshape(-1) for k in phi])
        matvec = flat_product(lambda v: hvp(v)[0], phi, damping=lam)  # (H + lam I) v
        solution = conjugate_gradient_fixed(matvec, rhs, cg_steps).detach()
    pieces = solution.split([v.numel() for v in phi.values()])
    direction = {k: piece.view_as(phi[k]) for k, piece in zip(phi, pieces, strict=True)}
    return _descend(model, loss_fn, theta, phi, batch, direction, step_size, lam, backtracks)


def implicit_meta_gradient(
    model: nn.Module,
    loss_fn: LossFn,
    adapted: Params,
    support: Batch,
    query: Batch,
    lam: float,
    cg_steps: int,
    batching: str = "vmap",
) -> tuple[Params, Tensor]:
    """Mean over tasks of ``(I + H_s(phi_i)/lam)^-1 grad L_q(phi_i)`` and the query losses.

    ``adapted`` holds the ``phi_i`` stacked along a leading task dimension. The sum over tasks
    of ``L_s,i(phi_i)`` has the block-diagonal Hessian ``diag(H_s,i)`` in the stacked
    parameters: each CG iteration is one batched product for all M tasks
    (:func:`maml_rl.linalg.hessian_vector_product`, the gradient graph built once and reused),
    and :func:`maml_rl.linalg.conjugate_gradient_fixed` keeps one system per task, with its own
    step sizes, so each task's solution is that of its own run, whatever tasks are beside it.
    """
    leaves = {k: v.detach().requires_grad_() for k, v in adapted.items()}
    params = list(leaves.values())

    def task_losses(batch: Batch) -> Tensor:
        return map_tasks(lambda p, b: loss_fn(model, p, b), leaves, batch,
                         batching=batching)

    with torch.enable_grad():
        losses = task_losses(query)
        query_grads = torch.autograd.grad(losses.sum(), params)
        hvp = hessian_vector_product(task_losses(support).sum(), params)
    tasks = int(losses.shape[0])
    sizes = [p.numel() // tasks for p in params]

    def rows(flat: Tensor) -> Tensor:  # the stacked layout -> one row per task [M, P]
        return torch.cat([block.reshape(tasks, -1)
                          for block in flat.split([p.numel() for p in params])], dim=1)

    def stacked(x: Tensor) -> Tensor:
        return torch.cat([block.reshape(-1) for block in x.split(sizes, dim=1)])

    rhs = rows(torch.cat([g.reshape(-1) for g in query_grads]))
    solution = conjugate_gradient_fixed(lambda v: v + rows(hvp(stacked(v))) / lam, rhs,
                                        cg_steps).detach()
    # The mean over tasks in float64: the same to the last bit however the tasks are split
    # over processes (maml_rl.distributed).
    grads = {name: block.double().mean(0).reshape(p.shape[1:])
             for (name, p), block in zip(leaves.items(), solution.split(sizes, dim=1),
                                         strict=True)}
    return grads, losses.detach()


class IMAML(Algorithm):
    """iMAML: a proximal inner solver (gradient or Newton-CG steps) and the CG implicit gradient."""

    supports_rl = False  # its meta-gradient is implicit, not a gradient through the adaptation
    first_order_by_construction = True

    def __init__(self, config: Config, model: nn.Module, loss_fn: LossFn, batching: str) -> None:
        super().__init__(config, model, loss_fn, batching)
        self.options = config.imaml

    def inner_step(
        self, theta: Params, phi: Params, batch: Batch, step_size: float, functional: bool,
        first_order: bool | None = None,
    ) -> Params:
        """One step of the configured inner solver (:func:`proximal_step` or
        :func:`newton_cg_step`) on the proximal problem around ``theta``."""
        o = self.options
        if o.solver == "newton_cg":
            return newton_cg_step(self.model, self.loss_fn, theta, phi, batch, step_size, o.lam,
                                  o.inner_cg_steps, o.backtracks)
        return proximal_step(self.model, self.loss_fn, theta, phi, batch, step_size, o.lam,
                             functional, o.backtracks)

    def meta_gradient(self, support: Batch, query: Batch,
                      keys: Sequence[EpisodeKey] | None = None) -> tuple[list[Tensor], Tensor]:
        theta = detached(model_params(self.model))
        with torch.no_grad():  # the inner gradient still runs: it enables grad itself
            adapted = map_tasks(lambda s: self.adapt(theta, s, self.functional), support,
                                batching=self.batching)
        grads, losses = implicit_meta_gradient(self.model, self.loss_fn, adapted, support, query,
                                               self.options.lam, self.options.cg_steps,
                                               self.batching)
        return [grads[k] for k in theta], losses
