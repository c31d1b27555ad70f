"""The MAML inner loop: the one implementation used by training and evaluation.

Finn, Abbeel & Levine (2017), Eq. (1): ``theta_i' = theta - alpha * grad_theta L_Ti(f_theta)``,
repeated for K steps. The meta-objective, Eq. (2)/(3), is the loss of the adapted parameters on
fresh data of the same task, differentiated through the adaptation (second order) unless
``first_order`` drops the Hessian term.

Parameters are plain dicts ``name -> tensor`` passed through ``torch.func.functional_call``; the
inner gradient is taken by ``torch.func.grad`` under ``torch.func.vmap`` (``functional=True``) and
by ``torch.autograd.grad(create_graph=True)`` in a Python loop over tasks, which is cheaper per
call there (docs/results/speed.md). Both give the same parameters
(a test checks), and both stay differentiable by ordinary autograd in the meta-parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

# The one use of torch's private pytree module (nested dicts/lists/tuples of tensors, as vmap
# sees them): torch 2.13 has no public equivalent; everything else imports these two from here.
from torch.utils._pytree import tree_leaves, tree_map

Params = dict[str, Tensor]
Batch = Mapping[str, Any]
#: ``loss_fn(model, params, batch) -> scalar``: a task's loss for given parameters.
LossFn = Callable[[nn.Module, Params, Batch], Tensor]
#: An inner step size: one number, or one tensor per parameter (Meta-SGD's learned rates).
StepSize = float | Params
#: ``step_fn(theta, phi, batch, step_size, functional) -> phi'``: one step of an algorithm's task
#: adaptation from ``phi`` for meta-parameters ``theta`` (see :mod:`maml_rl.algorithms`).
StepFn = Callable[[Params, Params, Batch, float, bool], Params]


def model_params(model: nn.Module) -> Params:
    """The module's trainable parameters as a dict ``name -> tensor``, for functional calls:
    theta. (Everything meta-learned, theta and an algorithm's own tensors such as Meta-SGD's
    rates, is :meth:`maml_rl.algorithms.Algorithm.meta_parameters`.)"""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def forward(model: nn.Module, params: Params, *args: Any) -> Any:
    """Call ``model`` with ``params`` instead of its own parameters (buffers kept)."""
    return functional_call(model, params, args, strict=False)


def inner_gradient(
    model: nn.Module,
    params: Params,
    loss_fn: LossFn,
    batch: Batch,
    first_order: bool = False,
    trainable: Sequence[str] | None = None,
    functional: bool = False,
) -> Params:
    """Gradient of the task's inner loss with respect to the ``trainable`` parameters (all by
    default); a constant of ``params`` when ``first_order``, else differentiable in them."""
    names = list(params) if trainable is None else list(trainable)
    frozen = {k: v for k, v in params.items() if k not in names}
    adapting = {k: params[k] for k in names}

    def loss_of(adapted: Params) -> Tensor:
        return loss_fn(model, {**frozen, **adapted}, batch)

    if functional:
        grads = grad(loss_of)(adapting)
        if first_order:
            # First-order MAML: treat the inner gradient as a constant of theta.
            grads = {k: g.detach() for k, g in grads.items()}
        return grads
    return _autograd_grads(loss_of, adapting, first_order)


def inner_step(
    model: nn.Module,
    params: Params,
    loss_fn: LossFn,
    batch: Batch,
    step_size: StepSize,
    first_order: bool = False,
    trainable: Sequence[str] | None = None,
    functional: bool = False,
) -> Params:
    """One inner gradient step, Eq. (1). ``trainable`` restricts which parameters adapt (ANIL);
    ``step_size`` may hold one tensor per parameter, multiplied elementwise with the gradient
    (Meta-SGD, Li et al. 2017: ``theta' = theta - alpha o grad L``); ``functional=True`` is
    required under ``torch.func`` transforms such as vmap."""
    grads = inner_gradient(model, params, loss_fn, batch, first_order, trainable, functional)
    rate = (lambda k: step_size[k]) if isinstance(step_size, Mapping) else lambda k: step_size
    return {**params, **{k: params[k] - rate(k) * g for k, g in grads.items()}}


def _autograd_grads(loss_of: Callable[[Params], Tensor], params: Params, first_order: bool):
    # Parameters that do not require grad (evaluation) get fresh leaves; then no graph is kept.
    leaves = {k: v if v.requires_grad else v.detach().requires_grad_() for k, v in params.items()}
    second_order = not first_order and any(v.requires_grad for v in params.values())
    with torch.enable_grad():
        # A stacked batch's losses are one per task, each a function of its task's slice of
        # the stacked parameters only: the gradient of their sum is every task's gradient.
        loss = loss_of(leaves).sum()
        grads = torch.autograd.grad(loss, list(leaves.values()), create_graph=second_order)
    return dict(zip(leaves, grads, strict=True))


def adapt(
    model: nn.Module,
    params: Params,
    loss_fn: LossFn,
    batches: Batch | Sequence[Batch],
    step_sizes: Sequence[StepSize],
    first_order: bool = False,
    trainable: Sequence[str] | None = None,
    functional: bool = False,
) -> Params:
    """K inner steps from ``params``; ``len(step_sizes)`` is K.

    ``batches`` is one batch reused for every step (supervised K-shot data) or one batch per step
    (fresh episodes per step, as in RL). The result depends differentiably on ``params``.
    """
    per_step = batches if is_per_step(batches) else [batches] * len(step_sizes)
    if len(per_step) != len(step_sizes):
        raise ValueError(f"adapt got {len(per_step)} batches for {len(step_sizes)} steps")
    for batch, alpha in zip(per_step, step_sizes, strict=True):
        params = inner_step(
            model, params, loss_fn, batch, alpha, first_order, trainable, functional
        )
    return params


def gradient_step(model: nn.Module, loss_fn: LossFn) -> StepFn:
    """Eq. (1) with a single step size on every parameter of ``model``, as a :data:`StepFn`
    (how a model without an algorithm of its own adapts: the pretrained baseline)."""

    def step(theta: Params, phi: Params, batch: Batch, alpha: float, functional: bool) -> Params:
        return inner_step(model, phi, loss_fn, batch, alpha, functional=functional)

    return step


def backtracking(step_fn: StepFn, model: nn.Module, loss_fn: LossFn,
                 max_backtracks: int) -> StepFn:
    """``step_fn`` with a backtracking safeguard on the support loss, for evaluation.

    Each step first goes from ``phi`` to ``step_fn``'s ``phi'`` (Eq. 1 with the configured
    alpha); when that raises the task's support loss ``L(phi)`` or makes it non-finite, the step
    ``phi' - phi`` is halved, up to ``max_backtracks`` times, and the first length that does not
    raise it is taken (none: ``phi`` stays). Plain gradient descent diverges on a task whose
    support loss has curvature above ``2 / alpha`` (docs/results/sinusoid.md); this keeps every
    task's support loss from rising while leaving each step that already lowers it exactly as
    it was. It uses only the support data, so the held-out measure stays honest. Every candidate
    is evaluated and chosen by ``torch.where``, so it runs under ``vmap``; values only (no
    meta-gradient flows through the choice)."""

    def step(theta: Params, phi: Params, batch: Batch, alpha: float, functional: bool) -> Params:
        full = step_fn(theta, phi, batch, alpha, functional)
        before = loss_fn(model, phi, batch)
        chosen = phi
        # From the shortest candidate to the full step, so the longest acceptable one wins.
        for halvings in range(max_backtracks, -1, -1):
            fraction = 0.5**halvings
            # The full step as step_fn gave it: phi + (full - phi) may differ in the last bit.
            candidate = full if halvings == 0 else {
                k: phi[k] + fraction * (full[k] - phi[k]) for k in phi}
            loss = loss_fn(model, candidate, batch)
            keep = torch.isfinite(loss) & (loss <= before)
            chosen = {k: torch.where(keep, candidate[k], chosen[k]) for k in phi}
        return chosen

    return step


def is_per_step(batches: Any) -> bool:
    """Whether ``batches`` is a sequence of one batch per inner step (a list or plain tuple),
    rather than one batch (a mapping, or a NamedTuple such as a ``PolicyBatch``)."""
    return isinstance(batches, list) or (isinstance(batches, tuple)
                                         and not hasattr(batches, "_fields"))


def task_slice(batch: Any, i: int) -> Any:
    """Task ``i`` of a (nested) batch whose tensors have a leading task dimension."""
    return tree_map(lambda v: v[i] if isinstance(v, Tensor) else v, batch)


def num_tasks(batch: Any) -> int:
    return next(v.shape[0] for v in tree_leaves(batch) if isinstance(v, Tensor))


#: How the tasks of a meta-batch are processed together (``meta.task_batching``).
BATCHINGS = ("vmap", "loop", "stacked")


def map_tasks(fn: Callable[..., Any], *batched: Any, batching: str = "vmap") -> Any:
    """Apply ``fn`` to each task of ``batched`` (pytrees with a leading task dimension) and
    stack the results: by ``torch.func.vmap`` (``batching="vmap"``), a Python loop
    (``"loop"``), or one call on the whole stack (``"stacked"``: ``fn`` sees every task at
    once, parameters stacked per task, :func:`per_task`, and the model evaluates them with
    batched matmuls, :class:`maml_rl.policies.Linear`; RL policies only).
    ``fn`` must pass ``functional=batching == "vmap"`` on to :func:`adapt`."""
    if batching == "vmap":
        return vmap(fn, randomness="different")(*batched)
    if batching == "loop":
        outputs = [fn(*(task_slice(b, i) for b in batched)) for i in range(num_tasks(batched))]
        return tree_map(lambda *xs: torch.stack(xs), *outputs)
    if batching == "stacked":
        return fn(*batched)
    raise ValueError(f"batching must be one of {', '.join(BATCHINGS)}, got {batching!r}")


def per_task(params: Params, tasks: int) -> Params:
    """``params`` shared by ``tasks`` tasks, as a stack with a leading task dimension (a view,
    differentiable: the gradient of a stacked computation flows back summed over tasks).
    Under ``torch.no_grad`` the stack is detached: a view made there of a tensor that requires
    grad would still claim to require it, yet not be part of any graph."""
    if not torch.is_grad_enabled():
        params = {k: v.detach() for k, v in params.items()}
    return {k: v.unsqueeze(0).expand(tasks, *v.shape) for k, v in params.items()}


def shared_for(params: Params, batching: str, tasks: int) -> Params:
    """Parameters shared by every task, as :func:`map_tasks`' ``fn`` takes them under
    ``batching``: stacked per task under ``"stacked"``, else as they are."""
    return per_task(params, tasks) if batching == "stacked" else params


def adapt_tasks(
    model: nn.Module,
    params: Params,
    loss_fn: LossFn,
    supports: Sequence[Batch],
    step_sizes: Sequence[float],
    first_order: bool = False,
    batching: str = "vmap",
    trainable: Sequence[str] | None = None,
) -> Params:
    """Adapt ``params`` to every task: one support batch (leading task dim) per inner step.
    Returns the adapted parameters stacked along a leading task dimension. ``trainable``: the
    parameters that adapt (all by default; ANIL: the head)."""
    functional = batching == "vmap"
    theta = shared_for(params, batching, num_tasks(list(supports)))

    def one(task_supports):
        return adapt(model, theta, loss_fn, list(task_supports), step_sizes, first_order,
                     trainable, functional=functional)

    return map_tasks(one, list(supports), batching=batching)


def adapted_losses(
    model: nn.Module,
    params: Params,
    loss_fn: LossFn,
    support: Batch,
    query: Batch,
    step_sizes: Sequence[StepSize],
    first_order: bool = False,
    batching: str = "vmap",
    trainable: Sequence[str] | None = None,
) -> Tensor:
    """Post-adaptation query loss of every task of a meta-batch, shape ``[M]`` (Eq. 3's terms).

    ``support`` and ``query`` hold tensors with a leading task dimension M. ``batching`` is
    ``"vmap"`` (``torch.func.vmap`` over tasks) or ``"loop"`` (a Python loop); both call the same
    :func:`adapt` and agree to rounding (a test checks).
    """
    functional = batching == "vmap"
    theta = shared_for(params, batching, num_tasks(support))

    def task_loss(task_support: Batch, task_query: Batch) -> Tensor:
        adapted = adapt(model, theta, loss_fn, task_support, step_sizes, first_order, trainable,
                        functional=functional)
        return loss_fn(model, adapted, task_query)

    return map_tasks(task_loss, support, query, batching=batching)
