"""Linear algebra on flat parameter vectors, shared by the meta-updates and iMAML.

Conjugate gradient (Nocedal & Wright, Algorithm 5.2) solves ``A x = b`` with only products
``A v``; Pearlmutter's identity gives Hessian-vector products ``H v = d/dtheta (grad f . v)``
without forming ``H``. TRPO (Schulman et al. 2015, Appendix C) uses both for its natural-gradient
step, iMAML (Rajeswaran et al. 2019) for its implicit meta-gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from maml_rl.adaptation import Params

__all__ = [
    "assign_flat",
    "conjugate_gradient",
    "conjugate_gradient_fixed",
    "flat_grad",
    "flat_product",
    "hessian_vector_product",
]

Closure = Callable[[], Tensor]
#: ``v -> H v`` on parameter dicts.
Product = Callable[[Params], Params]


def flat_grad(
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


def assign_flat(vec: Tensor, params: list[Tensor]) -> None:
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


def as_scalar(name: str, value: Tensor) -> Tensor:
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

    ``b`` may also hold independent systems as rows ``[..., n]`` whose ``matvec`` acts row by
    row (a block-diagonal matrix): each row then gets its own step sizes, as separate runs would.
    """
    def dot(u: Tensor, v: Tensor) -> Tensor:
        return (u * v).sum(-1, keepdim=True)

    x = torch.zeros_like(b)
    r, p = b, b
    r_dot_r = dot(r, r)
    frozen = r_dot_r < residual_tol
    for _ in range(iters):
        a_p = matvec(p)
        p_a_p = dot(p, a_p)
        frozen = frozen | ~(p_a_p > 0)
        alpha = torch.where(frozen, torch.zeros_like(p_a_p), r_dot_r / p_a_p.abs().clamp_min(1e-30))
        x = x + alpha * p
        r = r - alpha * a_p
        new_r_dot_r = dot(r, r)
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
    inner adaptation, so reusing it is much cheaper (docs/results/speed.md).
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
        value = as_scalar("scalar", scalar() if callable(scalar) else scalar)
        gradient = flat_grad(value, params, create_graph=True)
    numel = gradient.numel()

    def product(v: Tensor) -> Tensor:
        if v.numel() != numel:
            raise ValueError(f"vector has {v.numel()} entries but the parameters have {numel}")
        v = v.detach().reshape(-1).to(gradient)
        if not gradient.requires_grad:
            # The gradient does not depend on the parameters: f is linear there and H = 0.
            return damping * v
        with torch.enable_grad():
            grad_dot_v = torch.dot(gradient, v)
        hv = flat_grad(grad_dot_v, params, retain_graph=True)
        return hv.detach() + damping * v

    return product



def flat_product(
    product: Product, like: Params, damping: float = 0.0
) -> Callable[[Tensor], Tensor]:
    """Wrap a dict product as ``flat v -> flat (H + damping I) v`` in the order of ``like``."""
    shapes = [(k, v.shape, v.numel()) for k, v in like.items()]

    def flat(v: Tensor) -> Tensor:
        v = v.detach().reshape(-1)
        params, offset = {}, 0
        for name, shape, numel in shapes:
            params[name] = v[offset:offset + numel].view(shape)
            offset += numel
        out = product(params)
        return torch.cat([out[name].reshape(-1) for name, _, _ in shapes]).detach() + damping * v

    return flat


def graph_captured_product(build: Callable[[], Callable[[Tensor], Tensor]], size: int,
                           like: Tensor) -> Callable[[Tensor], Tensor]:
    """A matrix-vector product on CUDA replayed from a CUDA graph: ``build()`` makes the
    product (and the autograd graphs it differentiates through) on a side stream, one call is
    warmed up and one captured; every later call copies ``v`` into the captured input, replays
    the graph's kernels at once and returns a copy of the captured output. A TRPO meta-step's
    Fisher-vector products launch a few hundred small kernels each, which is what their time on
    a GPU goes into; the replay launches them as one (docs/results/speed.md).

    ``size``: the vectors' length; ``like``: a tensor of their dtype and device. The product
    must not synchronise with the host: torch.distributions' argument checks do, so they are
    off while it is built and captured (the replay runs no Python)."""
    from torch.distributions import Distribution

    device = like.device
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    validate = Distribution._validate_args
    Distribution.set_default_validate_args(False)
    try:
        with torch.cuda.stream(stream):
            product = build()
            static_v = torch.randn(size, dtype=like.dtype, device=device)
            product(static_v)  # warm-up: lazy library handles and workspaces
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=stream):
                static_out = product(static_v)
    finally:
        Distribution.set_default_validate_args(validate)
    torch.cuda.current_stream(device).wait_stream(stream)

    def replay(v: Tensor) -> Tensor:
        static_v.copy_(v.reshape(-1))
        graph.replay()
        return static_out.clone()

    # The graph's kernels read the tensors the product holds (the inner steps' saved
    # activations, the pullback's): they must live as long as the replay does. (Dropped, their
    # memory was reused and a replay read it: an illegal memory access, found on the H200.)
    replay.product = product  # type: ignore[attr-defined]
    return replay
