"""Curvature of MAML-TRPO's KL constraint through the adaptation, as Fisher-vector products.

TRPO's step needs products ``H v`` with the Hessian of the mean KL between the old and the new
adapted policies, ``KL(theta) = KL(pi_old || pi_{U(theta)})`` where ``U`` is the inner adaptation
(MAML Eq. 1, K steps). Write ``o(theta)`` for the distribution parameters of the adapted policy
on the query states. By the chain rule

    H = J^T F J + sum_j (dKL/do_j) d^2 o_j / dtheta^2,    J = do/dtheta,  F = d^2 KL / do^2,

and at the current parameters the new policy IS the old one, where the KL is minimal in ``o``:
``dKL/do = 0`` and the second term vanishes. So ``H v = J^T F J v`` exactly (Schulman et al.
2015, Appendix C: the KL Hessian is the Fisher information). That avoids differentiating the
KL's gradient through the inner step again (third derivatives of the inner loss); what is left:

    J = J_out(theta_K) A,   A = (I - a_K H_K(theta_{K-1})) ... (I - a_1 H_1(theta_0)),

with ``J_out`` the plain policy Jacobian at the adapted parameters and ``H_k`` the Hessian of the
k-th inner loss. A product costs one forward-mode and one reverse-mode pass of the policy on the
query states and two Hessian-vector products of each inner loss (``A v`` and ``A^T w``, each
``H_k`` symmetric). First-order MAML treats ``U`` as ``theta + constant``: ``A = I``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp, vjp

from maml_rl.adaptation import Batch, LossFn, Params
from maml_rl.linalg import Product
from maml_rl.policies import distribution_tensors


class _InnerStep:
    """One inner step's gradient graph at its own leaves, reused for every Hessian product.

    ``trainable`` (ANIL) restricts the step to some parameters: ``U(theta) = theta - a M g``
    with ``M`` the mask of the trainable ones, whose Jacobian ``I - a M H`` is no longer
    symmetric: ``J v = v - a M H v`` and ``J^T w = w - a H M w``."""

    def __init__(self, model: nn.Module, theta: Params, loss_fn: LossFn, batch: Batch,
                 step_size: float, first_order: bool,
                 trainable: Sequence[str] | None = None) -> None:
        self.leaves = {k: v.detach().requires_grad_() for k, v in theta.items()}
        self.step_size, self.first_order = step_size, first_order
        self.trainable = set(self.leaves if trainable is None else trainable)
        with torch.enable_grad():
            # .sum(): a stacked batch's losses are one per task (see adaptation._autograd_grads)
            loss = loss_fn(model, self.leaves, batch).sum()
            grads = torch.autograd.grad(loss, list(self.leaves.values()),
                                        create_graph=not first_order, allow_unused=True)
        self.grads = [torch.zeros_like(v) if g is None else g
                      for g, v in zip(grads, self.leaves.values(), strict=True)]
        self.next = {k: (v - step_size * g).detach() if k in self.trainable else v.detach()
                     for (k, v), g in zip(self.leaves.items(), self.grads, strict=True)}

    def _mask(self, v: Params) -> Params:
        return {k: x if k in self.trainable else torch.zeros_like(x) for k, x in v.items()}

    def _hessian_product(self, v: Params) -> Params:
        with torch.enable_grad():
            hv = torch.autograd.grad(self.grads, list(self.leaves.values()),
                                     grad_outputs=[v[k] for k in self.leaves], retain_graph=True,
                                     allow_unused=True)
        return {k: h if h is not None else torch.zeros_like(v[k])
                for k, h in zip(self.leaves, hv, strict=True)}

    def jacobian_product(self, v: Params, transpose: bool = False) -> Params:
        """``J v`` (or ``J^T v``) for the step's Jacobian ``J = I - a M H``."""
        if self.first_order or not any(g.requires_grad for g in self.grads):
            return v
        if transpose:
            hv = self._hessian_product(self._mask(v))
        else:
            hv = self._mask(self._hessian_product(v))
        return {k: v[k] - self.step_size * hv[k] for k in v}


def task_fisher_product(
    model: nn.Module,
    theta: Params,
    loss_fn: LossFn,
    supports: Sequence[Batch],
    query: Batch,
    step_sizes: Sequence[float],
    first_order: bool = False,
    trainable: Sequence[str] | None = None,
) -> Product:
    """``v -> H v`` for one task's KL between the adapted policy at ``theta`` and itself, on the
    query states (see the module docstring). ``v`` and the result are parameter dicts."""
    steps = []
    current = {k: v.detach() for k, v in theta.items()}
    for batch, alpha in zip(supports, step_sizes, strict=True):
        steps.append(_InnerStep(model, current, loss_fn, batch, alpha, first_order, trainable))
        current = steps[-1].next
    adapted = current
    observations, mask = query.observations, query.mask

    def outputs_of(params: Params) -> tuple[Tensor, ...]:
        return distribution_tensors(functional_call(model, params, (observations,)))[1]

    kind = distribution_tensors(functional_call(model, adapted, (observations[..., :1, :],)))[0]
    outputs, pullback = vjp(outputs_of, adapted)
    # The KL is a masked mean over a task's states (the last two dimensions, episodes x time).
    weights = mask / mask.sum((-2, -1), keepdim=True).clamp_min(1.0)

    def product(v: Params) -> Params:
        for step in steps:
            v = step.jacobian_product(v)
        _, tangent = jvp(outputs_of, (adapted,), (v,))
        (w,) = pullback(fisher_output_product(kind, outputs, tangent, weights))
        for step in reversed(steps):
            w = step.jacobian_product(w, transpose=True)
        return w

    return product


def fisher_output_product(
    kind: str, outputs: tuple[Tensor, ...], tangent: tuple[Tensor, ...], weights: Tensor
) -> tuple[Tensor, ...]:
    """``F t`` for ``F`` the Hessian of ``sum_s weights_s KL(p_s || q_s)`` in the outputs of
    ``q`` at ``q = p``, in closed form (the Fisher information of the output parametrisation).

    Gaussian ``(loc, scale)``: ``F = diag(1 / scale^2, 2 / scale^2)`` per action dimension.
    Categorical ``logits``: ``F = diag(p) - p p^T`` per state.
    """
    if kind == "gaussian":
        loc_t, scale_t = tangent
        precision = outputs[1].detach().pow(-2) * weights.unsqueeze(-1)
        return (loc_t * precision, 2.0 * scale_t * precision)
    probs = torch.softmax(outputs[0].detach(), dim=-1)
    (logit_t,) = tangent
    centred = logit_t - (probs * logit_t).sum(-1, keepdim=True)
    return (probs * centred * weights.unsqueeze(-1),)
