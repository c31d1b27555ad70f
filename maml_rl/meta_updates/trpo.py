"""The TRPO meta-update (``meta.optimizer: trpo``; Schulman et al. 2015, "Trust region policy
optimization"), MAML's meta-update for RL (Finn et al. 2017, Sec. 5.3).

TRPO maximises the surrogate objective subject to a bound on the mean KL divergence between the
old and the new policy (eq. 12 and 14 of the paper). Appendix C there solves it approximately:
the step direction is ``s = -H^{-1} g`` for the loss gradient ``g`` and the Hessian ``H`` of the
KL at the current parameters, found by conjugate gradient with Hessian-vector products so ``H``
is never formed; ``s`` is scaled so that the quadratic model of the KL, ``0.5 s^T H s``, equals
``max_kl``; and a backtracking line search shrinks the step until the loss improves and the KL
bound holds for the actual, not the approximated, KL.

Everything works on a list of parameter tensors (leaves with ``requires_grad``), viewed as one
flat vector in the order given (``torch.nn.utils.parameters_to_vector``). The loss and KL come
from closures that recompute from the CURRENT parameter values, because for MAML each
evaluation runs the inner adaptation from the current meta-parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.nn.utils import parameters_to_vector

from maml_rl.linalg import (
    Closure,
    as_scalar,
    assign_flat,
    conjugate_gradient,
    flat_grad,
    hessian_vector_product,
)
from maml_rl.meta_updates.base import MetaUpdate, check_finite

__all__ = [
    "LineSearchResult",
    "TRPOMetaUpdate",
    "TRPOStepInfo",
    "backtracking_line_search",
    "trpo_step",
]


class LineSearchResult(NamedTuple):
    """Outcome of :func:`backtracking_line_search`, describing the parameters it leaves.

    When no step is accepted the parameters are the original ones, so ``step_fraction`` is 0,
    ``loss`` is ``old_loss`` and ``kl`` is 0.
    """

    accepted: bool
    step_fraction: float  # fraction of full_step applied
    steps_taken: int  # loss/KL evaluations done
    loss: float
    kl: float


def backtracking_line_search(
    params: Iterable[Tensor],
    full_step: Tensor,
    loss_fn: Closure,
    kl_fn: Closure,
    old_loss: float | Tensor,
    max_kl: float,
    backtrack_ratio: float = 0.8,
    max_steps: int = 15,
) -> LineSearchResult:
    """Try ``theta_old + backtrack_ratio^i * full_step`` for ``i = 0, 1, ...`` in place.

    A step is accepted at the first ``i`` where the recomputed loss is finite and strictly below
    ``old_loss`` AND the recomputed KL is finite and at most ``max_kl`` (TRPO Appendix C: the
    quadratic model under-estimates the KL far from ``theta_old``, so the bound is checked on
    the real one). If none of the ``max_steps`` candidates qualifies, the original parameter
    values are restored exactly, bit for bit; so are they when a closure raises (e.g. a second
    Ctrl-C), so that no trial step is ever left in the parameters.

    ``kl_fn`` is always called right after ``loss_fn`` at the same parameter values, so a caller
    whose loss and KL share one expensive forward pass (MAML's inner adaptation) may compute
    both in ``loss_fn`` and let ``kl_fn`` return the stored KL. The closures run in the
    caller's grad mode (an inner adaptation needs autograd); only their values are used.

    Args:
        params: the parameters to move, in the layout of ``full_step``.
        full_step: flat step vector (the scaled natural-gradient step).
        loss_fn: closure returning the scalar loss at the current parameters.
        kl_fn: closure returning the scalar mean KL from the old policy.
        old_loss: the loss at the original parameters.
        max_kl: trust-region size.
        backtrack_ratio: factor by which the step shrinks per try (TRPO/MAML: 0.8).
        max_steps: number of tries (TRPO/MAML: 15).

    Returns:
        :class:`LineSearchResult`.
    """
    params = list(params)
    old_params = parameters_to_vector(params).detach().clone()
    step = full_step.detach().reshape(-1).to(old_params)
    old_loss = float(old_loss.detach()) if isinstance(old_loss, Tensor) else float(old_loss)
    accepted = False
    try:
        for i in range(max_steps):
            fraction = backtrack_ratio**i
            assign_flat(old_params + fraction * step, params)
            loss = as_scalar("loss_fn", loss_fn()).item()
            kl = as_scalar("kl_fn", kl_fn()).item()
            if math.isfinite(loss) and math.isfinite(kl) and loss < old_loss and kl <= max_kl:
                accepted = True
                return LineSearchResult(True, fraction, i + 1, loss, kl)
    finally:
        if not accepted:
            assign_flat(old_params, params)
    return LineSearchResult(False, 0.0, max_steps, old_loss, 0.0)


class _CountedProduct:
    """Wraps a matrix-vector product and counts its calls (each is a costly double backward)."""

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        self.fn = fn
        self.calls = 0

    def __call__(self, v: Tensor) -> Tensor:
        self.calls += 1
        return self.fn(v)


class TRPOStepInfo(NamedTuple):
    """Diagnostics of one :func:`trpo_step`, all plain Python numbers for logging."""

    accepted: bool
    loss_before: float
    loss_after: float  # equals loss_before when the step was rejected
    kl: float  # KL after the step (0 when rejected)
    step_fraction: float  # fraction of the full step taken by the line search
    ls_steps: int  # loss/KL evaluations in the line search
    grad_norm: float  # ||g||
    expected_improvement: float  # -g . full_step, the linear model's predicted decrease
    num_hvp: int  # Hessian-vector products, the dominant cost on CPU


def trpo_step(
    params: Iterable[Tensor],
    loss_fn: Closure,
    kl_fn: Closure,
    max_kl: float = 0.01,
    cg_iters: int = 10,
    cg_damping: float = 1e-5,
    backtrack_ratio: float = 0.8,
    ls_max_steps: int = 15,
    curvature_product: Callable[[Tensor], Tensor] | None = None,
    gradient: tuple[Tensor, float] | None = None,
) -> TRPOStepInfo:
    """One TRPO update of ``params`` in place (Schulman et al. 2015, Appendix C).

    1. ``g = grad loss`` at the current parameters.
    2. ``s = CG(H + cg_damping I, -g)`` with ``H`` the Hessian of ``kl_fn()`` (whose value is 0
       and gradient 0 at the current parameters; its curvature is the Fisher information).
    3. ``full_step = s * sqrt(max_kl / (0.5 s^T H_d s))`` with the damped ``H_d``, so the
       quadratic KL model equals ``max_kl`` (the Lagrange-multiplier scaling of the
       natural-gradient step).
    4. :func:`backtracking_line_search` from that step; on failure nothing changes.

    ``kl_fn`` is called right after ``loss_fn`` at the same parameters, here and in the line
    search; the loss's graph is retained until the KL has been differentiated, so the two may
    share one forward pass.

    Args:
        params: the leaf tensors to optimise (e.g. ``list(policy.parameters())``).
        loss_fn: closure returning the scalar surrogate loss (to minimise) at the current
            parameter values.
        kl_fn: closure returning the scalar mean KL between the fixed old policy and the
            policy at the current parameter values.
        max_kl: trust-region size (MAML: 0.01).
        cg_iters: conjugate-gradient iterations (MAML: 10).
        cg_damping: damping added to the KL Hessian (MAML: 1e-5).
        backtrack_ratio: line-search shrink factor (MAML: 0.8).
        ls_max_steps: line-search tries (MAML: 15).
        curvature_product: ``v -> H v`` supplied by the caller instead of differentiating the KL
            twice (e.g. :mod:`maml_rl.meta_updates.curvature`'s Fisher-vector products, which equal
            the KL Hessian at the current parameters, or a product over a subset of tasks);
            ``cg_damping`` is added here. Built after ``loss_fn``/``kl_fn`` ran.
        gradient: ``(g, loss)``, the flat loss gradient and the loss at the current
            parameters, when the caller forms them itself (MAML-TRPO sums per-task gradients,
            so that the result does not depend on how tasks are split over processes); then
            ``loss_fn``/``kl_fn`` give values for the line search only and ``curvature_product``
            is required.

    Returns:
        :class:`TRPOStepInfo`.
    """
    params = list(params)
    loss = kl = None
    if gradient is not None:
        if curvature_product is None:
            raise ValueError("trpo_step: a given gradient needs a curvature_product")
        grad, loss_before = gradient[0].detach().reshape(-1), float(gradient[1])
    else:
        with torch.enable_grad():
            loss = as_scalar("loss_fn", loss_fn())
            # Retained in case the caller's KL shares the loss's graph (see above).
            grad = flat_grad(loss, params, retain_graph=True).detach()
            loss_before = loss.item()
            kl = kl_fn()
    if curvature_product is not None:
        damped = lambda v: curvature_product(v) + cg_damping * v  # noqa: E731
        hvp = _CountedProduct(damped)
    else:
        hvp = _CountedProduct(hessian_vector_product(kl, params, cg_damping))
    del loss, kl  # the product keeps only the KL-gradient graph it needs

    step_dir = conjugate_gradient(hvp, -grad, iters=cg_iters)
    quad_kl = 0.5 * torch.dot(step_dir, hvp(step_dir)).item()
    num_hvp = hvp.calls
    # Free the KL graph before the line search; its in-place parameter updates would make it
    # unusable anyway.
    del hvp
    grad_norm = grad.norm().item()
    if not (math.isfinite(quad_kl) and quad_kl > 0):
        # Zero gradient (nothing to do) or a degenerate curvature estimate: take no step.
        return TRPOStepInfo(False, loss_before, loss_before, 0.0, 0.0, 0, grad_norm, 0.0, num_hvp)
    full_step = step_dir * math.sqrt(max_kl / quad_kl)
    expected_improvement = -torch.dot(grad, full_step).item()
    result = backtracking_line_search(
        params,
        full_step,
        loss_fn,
        kl_fn,
        loss_before,
        max_kl,
        backtrack_ratio=backtrack_ratio,
        max_steps=ls_max_steps,
    )
    return TRPOStepInfo(
        accepted=result.accepted,
        loss_before=loss_before,
        loss_after=result.loss,
        kl=result.kl,
        step_fraction=result.step_fraction,
        ls_steps=result.steps_taken,
        grad_norm=grad_norm,
        expected_improvement=expected_improvement,
        num_hvp=num_hvp,
    )


class TRPOMetaUpdate(MetaUpdate):
    """MAML-TRPO: :func:`trpo_step` on the mean post-adaptation surrogate of the meta-batch,
    constrained by the mean KL between the adapted policies before and after the update
    (Finn et al. 2017, Sec. 5.3). The curvature is the KL's Hessian (``meta.curvature:
    hessian``) or its Fisher form through the adaptation (``fisher``,
    :mod:`maml_rl.meta_updates.curvature`), on the first ``meta.hvp_task_fraction`` of the
    tasks (i.i.d., so a random subset); the step is accepted on the full KL."""

    needs_policy = True

    def step(self, batch: Any) -> dict[str, float]:
        meta = self.config.meta
        grad, loss, _ = batch.surrogate_gradient()
        check_finite("surrogate loss", loss)
        stored: dict[str, Tensor] = {}

        def loss_fn() -> Tensor:  # the line search's values; kl_fn follows at the same theta
            surrogate, kl = batch.losses(values_only=True)
            loss, stored["kl"] = batch.task_means(surrogate, kl)
            return loss

        subset = max(1, math.ceil(meta.hvp_task_fraction * batch.num_tasks))
        if meta.curvature == "fisher":
            curvature_product = batch.fisher_product(subset)
        else:
            curvature_product = batch.kl_hessian_product(subset)
        info = trpo_step(
            batch.meta_parameters, loss_fn, lambda: stored["kl"], max_kl=meta.max_kl,
            cg_iters=meta.cg_iters, cg_damping=meta.cg_damping,
            backtrack_ratio=meta.ls_backtrack_ratio, ls_max_steps=meta.ls_max_steps,
            curvature_product=curvature_product, gradient=(grad, loss.item()),
        )
        return {
            "surrogate/before": info.loss_before,
            "surrogate/after": info.loss_after,
            "kl": info.kl,
            "trpo/ls_steps": info.ls_steps,
            "trpo/accepted": float(info.accepted),
        }
