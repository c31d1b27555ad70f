"""Trust-region policy optimisation machinery (Schulman et al. 2015, "Trust region policy
optimization"), as used for MAML's meta-update.

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
from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn.utils import parameters_to_vector

__all__ = [
    "LineSearchResult",
    "TRPOStepInfo",
    "backtracking_line_search",
    "conjugate_gradient",
    "conjugate_gradient_fixed",
    "hessian_vector_product",
    "trpo_step",
]

Closure = Callable[[], Tensor]


def _flat_grad(
    output: Tensor,
    params: list[Tensor],
    *,
    create_graph: bool = False,
    retain_graph: bool | None = None,
) -> Tensor:
    """Gradient of a scalar as one flat vector, with zeros for parameters it does not use."""
    grads = torch.autograd.grad(
        output, params, create_graph=create_graph, retain_graph=retain_graph, allow_unused=True
    )
    return torch.cat(
        [
            (torch.zeros_like(p) if g is None else g).reshape(-1)
            for g, p in zip(grads, params, strict=True)
        ]
    )


def _assign_flat(vec: Tensor, params: list[Tensor]) -> None:
    """Write a flat vector into the parameters, in place.

    ``torch.nn.utils.vector_to_parameters`` rebinds ``param.data`` to views of ``vec``: every
    parameter would then alias one shared buffer and the autograd version counters would not
    move, so a stale graph could silently read the new values. Copying in place keeps each
    parameter's own storage (anything holding a reference sees the update) and lets autograd
    detect misuse of graphs built before the update.
    """
    numel = sum(p.numel() for p in params)
    if vec.numel() != numel:
        raise ValueError(f"vector has {vec.numel()} entries but the parameters have {numel}")
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            p.copy_(vec[offset : offset + n].view_as(p))
            offset += n


def _as_scalar(name: str, value: Tensor) -> Tensor:
    if not isinstance(value, Tensor) or value.numel() != 1:
        raise ValueError(f"{name} must return a scalar tensor, got {value!r}")
    return value.reshape(())


def conjugate_gradient(
    matvec: Callable[[Tensor], Tensor],
    b: Tensor,
    iters: int = 10,
    residual_tol: float = 1e-10,
) -> Tensor:
    """Approximately solve ``A x = b`` for symmetric positive-definite ``A`` given only ``A v``.

    Plain conjugate gradient from ``x = 0`` (Nocedal & Wright, Algorithm 5.2), as in TRPO's
    Appendix C where ``A`` is the KL Hessian and each ``matvec`` is one Hessian-vector product.
    Stops after ``iters`` products or once the squared residual ``||b - A x||^2`` falls below
    ``residual_tol``. In exact arithmetic ``n`` iterations solve an ``n``-dimensional system.

    Args:
        matvec: ``v -> A v`` on flat vectors shaped like ``b``.
        b: right-hand side, a flat vector.
        iters: maximum number of ``matvec`` calls.
        residual_tol: threshold on the squared residual norm.

    Returns:
        ``x`` with the dtype and device of ``b``, detached.
    """
    b = b.detach()
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    r_dot_r = torch.dot(r, r)
    for _ in range(iters):
        if r_dot_r.item() < residual_tol:
            break
        a_p = matvec(p).detach()
        p_a_p = torch.dot(p, a_p)
        # A curvature that is not positive means A is not positive definite along p (e.g. too
        # little damping): continuing would step to a maximum, so keep the last good iterate.
        if not p_a_p.item() > 0:
            break
        alpha = r_dot_r / p_a_p
        x = x + alpha * p
        r = r - alpha * a_p
        new_r_dot_r = torch.dot(r, r)
        p = r + (new_r_dot_r / r_dot_r) * p
        r_dot_r = new_r_dot_r
    return x


def conjugate_gradient_fixed(
    matvec: Callable[[Tensor], Tensor],
    b: Tensor,
    iters: int,
    residual_tol: float = 1e-20,
) -> Tensor:
    """:func:`conjugate_gradient` without data-dependent control flow, so that it runs under
    ``torch.func.vmap`` (one system per lane) and inside ``torch.func`` transforms.

    Exactly ``iters`` products are computed; once the squared residual falls below
    ``residual_tol`` or a direction of non-positive curvature appears, the iterate is frozen
    (steps of length 0) instead of breaking out of the loop, which gives the same ``x`` as
    :func:`conjugate_gradient`. The result is not detached: the caller decides.
    """
    x = torch.zeros_like(b)
    r, p = b, b
    r_dot_r = torch.dot(r, r)
    frozen = r_dot_r < residual_tol
    for _ in range(iters):
        a_p = matvec(p)
        p_a_p = torch.dot(p, a_p)
        frozen = frozen | ~(p_a_p > 0)
        alpha = torch.where(frozen, torch.zeros_like(p_a_p), r_dot_r / p_a_p.abs().clamp_min(1e-30))
        x = x + alpha * p
        r = r - alpha * a_p
        new_r_dot_r = torch.dot(r, r)
        beta = torch.where(frozen, torch.zeros_like(r_dot_r),
                           new_r_dot_r / r_dot_r.clamp_min(1e-30))
        p = r + beta * p
        r_dot_r = new_r_dot_r
        frozen = frozen | (r_dot_r < residual_tol)
    return x


def hessian_vector_product(
    scalar: Tensor | Closure,
    params: Iterable[Tensor],
    damping: float = 0.0,
) -> Callable[[Tensor], Tensor]:
    """Return ``v -> (H + damping I) v`` for the Hessian ``H`` of ``scalar`` w.r.t. ``params``.

    Uses Pearlmutter's identity ``H v = d/dtheta (grad f(theta) . v)``. The gradient
    ``grad f`` is built ONCE, with ``create_graph=True``, and every product differentiates
    through that same graph with ``retain_graph=True``. Rebuilding it per product would repeat
    the forward pass and the first backward pass each time; for MAML-TRPO that pass includes the
    inner adaptation, and reuse measured about 3.5 s -> 1.4 s per product on CPU (DESIGN.md).
    ``damping`` is TRPO's ``cg_damping``: it keeps ``H`` positive definite for conjugate
    gradient when the KL is flat in some directions.

    The returned function holds the graph; drop it to free the memory. Parameters must not be
    modified in place while it is in use (autograd would raise).

    Args:
        scalar: the function value (e.g. the mean KL), already computed from ``params`` with
            grad enabled, or a closure computing it.
        params: the tensors to differentiate with respect to; their order defines the flat
            vector layout.
        damping: added multiple of the identity.

    Returns:
        A function mapping a flat vector ``v`` to the flat, detached ``(H + damping I) v``.
    """
    params = list(params)
    with torch.enable_grad():
        value = _as_scalar("scalar", scalar() if callable(scalar) else scalar)
        flat_grad = _flat_grad(value, params, create_graph=True)
    numel = flat_grad.numel()

    def product(v: Tensor) -> Tensor:
        if v.numel() != numel:
            raise ValueError(f"vector has {v.numel()} entries but the parameters have {numel}")
        v = v.detach().reshape(-1).to(flat_grad)
        if not flat_grad.requires_grad:
            # The gradient does not depend on the parameters: f is linear there and H = 0.
            return damping * v
        with torch.enable_grad():
            grad_dot_v = torch.dot(flat_grad, v)
        hv = _flat_grad(grad_dot_v, params, retain_graph=True)
        return hv.detach() + damping * v

    return product


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
            _assign_flat(old_params + fraction * step, params)
            loss = _as_scalar("loss_fn", loss_fn()).item()
            kl = _as_scalar("kl_fn", kl_fn()).item()
            if math.isfinite(loss) and math.isfinite(kl) and loss < old_loss and kl <= max_kl:
                accepted = True
                return LineSearchResult(True, fraction, i + 1, loss, kl)
    finally:
        if not accepted:
            _assign_flat(old_params, params)
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
    curvature_fn: Closure | None = None,
    curvature_product: Callable[[Tensor], Tensor] | None = None,
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
        curvature_fn: closure returning the KL whose Hessian the conjugate gradient uses, when
            it should differ from ``kl_fn`` (e.g. the KL on a subset of tasks, which makes each
            product proportionally cheaper); called once, after ``kl_fn``. The step is still
            scaled by this curvature and accepted on ``kl_fn``'s full KL.
        curvature_product: ``v -> H v`` supplied by the caller instead of differentiating the KL
            twice (e.g. :mod:`maml_rl.curvature`'s Fisher-vector products, which equal the KL
            Hessian at the current parameters); ``cg_damping`` is added here. Built after
            ``loss_fn``/``kl_fn`` ran; ``curvature_fn`` is then ignored.

    Returns:
        :class:`TRPOStepInfo`.
    """
    params = list(params)
    with torch.enable_grad():
        loss = _as_scalar("loss_fn", loss_fn())
        # Retained in case the caller's KL shares the loss's graph (see above).
        grad = _flat_grad(loss, params, retain_graph=True).detach()
        loss_before = loss.item()
        kl = kl_fn()
        if curvature_fn is not None and curvature_product is None:
            kl = curvature_fn()
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
