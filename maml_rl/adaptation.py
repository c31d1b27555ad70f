"""The MAML inner loop: the one implementation used by training and evaluation.

Finn, Abbeel & Levine (2017), Eq. (1): ``theta_i' = theta - alpha * grad_theta L_Ti(f_theta)``,
repeated for K steps. The meta-objective, Eq. (2)/(3), is the loss of the adapted parameters on
fresh data of the same task, differentiated through the adaptation (second order) unless
``first_order`` drops the Hessian term.

Parameters are plain dicts ``name -> tensor`` passed through ``torch.func.functional_call``; the
inner gradient is taken by ``torch.func.grad`` under ``torch.func.vmap`` (``functional=True``) and
by ``torch.autograd.grad(create_graph=True)`` in a Python loop over tasks, which measured about
2.5x cheaper per call there (benchmarks/bench_meta_iteration.py). Both give the same parameters
(a test checks), and both stay differentiable by ordinary autograd in the meta-parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

Params = dict[str, Tensor]
Batch = Mapping[str, Any]
#: ``loss_fn(model, params, batch) -> scalar``: a task's loss for given parameters.
LossFn = Callable[[nn.Module, Params, Batch], Tensor]


def meta_parameters(model: nn.Module) -> Params:
    """The module's trainable parameters as a dict (the meta-parameters theta)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def forward(model: nn.Module, params: Params, *args: Any) -> Any:
    """Call ``model`` with ``params`` instead of its own parameters (buffers kept)."""
    return functional_call(model, params, args, strict=False)


def inner_step(
    model: nn.Module,
    params: Params,
    loss_fn: LossFn,
    batch: Batch,
    step_size: float,
    first_order: bool = False,
    trainable: Sequence[str] | None = None,
    functional: bool = False,
) -> Params:
    """One inner gradient step, Eq. (1). ``trainable`` restricts which parameters adapt;
    ``functional=True`` is required under ``torch.func`` transforms such as vmap."""
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
    else:
        grads = _autograd_grads(loss_of, adapting, first_order)
    return {**frozen, **{k: params[k] - step_size * grads[k] for k in names}}


def _autograd_grads(loss_of: Callable[[Params], Tensor], params: Params, first_order: bool):
    # Parameters that do not require grad (evaluation) get fresh leaves; then no graph is kept.
    leaves = {k: v if v.requires_grad else v.detach().requires_grad_() for k, v in params.items()}
    second_order = not first_order and any(v.requires_grad for v in params.values())
    with torch.enable_grad():
        loss = loss_of(leaves)
        grads = torch.autograd.grad(loss, list(leaves.values()), create_graph=second_order)
    return dict(zip(leaves, grads, strict=True))


def adapt(
    model: nn.Module,
    params: Params,
    loss_fn: LossFn,
    batches: Batch | Sequence[Batch],
    step_sizes: Sequence[float],
    first_order: bool = False,
    trainable: Sequence[str] | None = None,
    functional: bool = False,
) -> Params:
    """K inner steps from ``params``; ``len(step_sizes)`` is K.

    ``batches`` is one batch reused for every step (supervised K-shot data) or one batch per step
    (fresh episodes per step, as in RL). The result depends differentiably on ``params``.
    """
    per_step = batches if isinstance(batches, list | tuple) else [batches] * len(step_sizes)
    if len(per_step) != len(step_sizes):
        raise ValueError(f"adapt got {len(per_step)} batches for {len(step_sizes)} steps")
    for batch, alpha in zip(per_step, step_sizes, strict=True):
        params = inner_step(
            model, params, loss_fn, batch, alpha, first_order, trainable, functional
        )
    return params


def task_slice(batch: Batch, i: int) -> dict[str, Any]:
    """Task ``i`` of a batch whose tensors have a leading task dimension."""
    return {k: (v[i] if isinstance(v, Tensor) else v) for k, v in batch.items()}


def num_tasks(batch: Batch) -> int:
    return next(v.shape[0] for v in batch.values() if isinstance(v, Tensor))


def adapted_losses(
    model: nn.Module,
    params: Params,
    loss_fn: LossFn,
    support: Batch,
    query: Batch,
    step_sizes: Sequence[float],
    first_order: bool = False,
    batching: str = "vmap",
    trainable: Sequence[str] | None = None,
) -> Tensor:
    """Post-adaptation query loss of every task of a meta-batch, shape ``[M]`` (Eq. 3's terms).

    ``support`` and ``query`` hold tensors with a leading task dimension M. ``batching`` is
    ``"vmap"`` (``torch.func.vmap`` over tasks) or ``"loop"`` (a Python loop); both call the same
    :func:`adapt` and agree to rounding (a test checks).
    """

    def task_loss(task_support: Batch, task_query: Batch) -> Tensor:
        adapted = adapt(
            model, params, loss_fn, task_support, step_sizes, first_order, trainable,
            functional=batching == "vmap",
        )
        return loss_fn(model, adapted, task_query)

    if batching == "vmap":
        tensors = lambda b: {k: v for k, v in b.items() if isinstance(v, Tensor)}  # noqa: E731
        return vmap(task_loss, randomness="different")(tensors(support), tensors(query))
    if batching == "loop":
        return torch.stack(
            [task_loss(task_slice(support, i), task_slice(query, i)) for i in range(
                num_tasks(support))]
        )
    raise ValueError(f"batching must be 'vmap' or 'loop', got {batching!r}")
