"""TRPO machinery: conjugate gradient, Hessian-vector products, line search, full step."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.nn.utils import parameters_to_vector

from maml_rl.episodes import PolicyBatch
from maml_rl.linalg import conjugate_gradient, hessian_vector_product
from maml_rl.meta_updates.trpo import backtracking_line_search, trpo_step

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    ),
]


def _spd(n: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(n, n, generator=gen, dtype=dtype)
    return q @ q.T + 0.5 * torch.eye(n, dtype=dtype)


# --------------------------------------------------------------------- conjugate gradient


@pytest.mark.parametrize("device", DEVICES)
def test_conjugate_gradient_solves_spd_system(device):
    a = _spd(8, seed=0).to(device)
    b = torch.linspace(-1.0, 2.0, 8, dtype=torch.float64, device=device)
    calls = []

    def matvec(v):
        calls.append(1)
        return a @ v

    # n iterations are exact in exact arithmetic; the tolerance stops it once converged.
    x = conjugate_gradient(matvec, b, iters=50, residual_tol=1e-20)
    torch.testing.assert_close(x, torch.linalg.solve(a, b), rtol=1e-8, atol=1e-8)
    assert len(calls) <= 12


def test_conjugate_gradient_float32_and_iteration_cap():
    a = _spd(6, seed=1)
    b = torch.ones(6, dtype=torch.float64)
    exact = torch.linalg.solve(a, b)
    x32 = conjugate_gradient(lambda v: a.float() @ v, b.float(), iters=30, residual_tol=1e-12)
    assert x32.dtype == torch.float32
    torch.testing.assert_close(x32.double(), exact, rtol=1e-3, atol=1e-3)
    # One iteration is a steepest-descent step with exact line search along b.
    x1 = conjugate_gradient(lambda v: a @ v, b, iters=1)
    torch.testing.assert_close(x1, (b @ b) / (b @ a @ b) * b)


def test_conjugate_gradient_zero_rhs_and_indefinite_matrix():
    a = _spd(4, seed=2)
    assert torch.equal(
        conjugate_gradient(lambda v: a @ v, torch.zeros(4, dtype=a.dtype)),
        torch.zeros(4, dtype=a.dtype),
    )
    # Negative curvature along the first direction: CG stops instead of stepping to a maximum.
    x = conjugate_gradient(lambda v: -v, torch.ones(3, dtype=torch.float64))
    assert torch.equal(x, torch.zeros(3, dtype=torch.float64))


# ------------------------------------------------------------ Hessian-vector products

SHAPES = [(3, 2), (2,)]


def _tiny_problem(dtype):
    """f(W, b) = sum(tanh(x W + b)^2) + 0.1 * ||W||^4: non-quadratic, couples W and b."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(5, 3, generator=gen, dtype=dtype)
    w = torch.randn(3, 2, generator=gen, dtype=dtype).requires_grad_(True)
    b = torch.randn(2, generator=gen, dtype=dtype).requires_grad_(True)

    def f(w_, b_):
        return torch.tanh(x @ w_ + b_).pow(2).sum() + 0.1 * (w_ * w_).sum() ** 2

    def f_flat(theta):
        return f(theta[:6].reshape(3, 2), theta[6:])

    return w, b, f, f_flat


@pytest.mark.parametrize(
    ("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-4)], ids=["f64", "f32"]
)
def test_hvp_matches_explicit_hessian(dtype, tol):
    w, b, f, f_flat = _tiny_problem(dtype)
    theta = parameters_to_vector([w, b]).detach()
    hessian = torch.autograd.functional.hessian(f_flat, theta)
    damping = 0.01
    hvp = hessian_vector_product(f(w, b), [w, b], damping=damping)
    gen = torch.Generator().manual_seed(4)
    for _ in range(3):
        v = torch.randn(8, generator=gen, dtype=dtype)
        hv = hvp(v)
        assert hv.dtype == dtype and hv.shape == (8,) and not hv.requires_grad
        torch.testing.assert_close(hv, hessian @ v + damping * v, rtol=tol, atol=tol)
    # Every column: the products reproduce the whole Hessian.
    eye = torch.eye(8, dtype=dtype)
    columns = torch.stack([hvp(e) for e in eye], dim=1)
    torch.testing.assert_close(columns, hessian + damping * eye, rtol=tol, atol=tol)


def test_hvp_builds_the_gradient_graph_once():
    w, b, f, _ = _tiny_problem(torch.float64)
    evaluations = []

    def closure():
        evaluations.append(1)
        return f(w, b)

    hvp = hessian_vector_product(closure, [w, b], damping=0.0)
    v = torch.arange(8, dtype=torch.float64)
    first = hvp(v)
    second = hvp(v)  # would raise "backward through the graph a second time" without retain
    third = hvp(2.0 * v)
    assert len(evaluations) == 1
    assert torch.equal(first, second)
    torch.testing.assert_close(third, 2.0 * first)


def test_hvp_with_unused_and_linear_parameters():
    a = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    unused = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    # f = a0^2 * a1: Hessian [[2 a1, 2 a0], [2 a0, 0]] = [[4, 2], [2, 0]]; zero for `unused`.
    hvp = hessian_vector_product(a[0] ** 2 * a[1], [a, unused], damping=0.5)
    v = torch.tensor([1.0, -1.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    expected = torch.tensor([4.0 - 2.0, 2.0, 0.0, 0.0, 0.0], dtype=torch.float64) + 0.5 * v
    torch.testing.assert_close(hvp(v), expected)
    # A function linear in the parameters has a zero Hessian: only the damping remains.
    linear = hessian_vector_product((3.0 * a).sum(), [a], damping=0.1)
    torch.testing.assert_close(
        linear(torch.ones(2, dtype=torch.float64)), torch.full((2,), 0.1, dtype=torch.float64)
    )


# ----------------------------------------------------------------------- line search


def _quadratic_setup(dtype=torch.float64, device="cpu"):
    """Two parameter tensors; loss 0.5 ||theta - target||^2, KL 0.5 ||theta - theta_old||^2."""
    w = torch.tensor([[1.0, -1.0], [0.5, 2.0]], dtype=dtype, device=device, requires_grad=True)
    b = torch.tensor([0.0, 1.0, -2.0], dtype=dtype, device=device, requires_grad=True)
    params = [w, b]
    theta_old = parameters_to_vector(params).detach().clone()
    target = torch.tensor([2.0, 1.0, 0.5, 0.0, 1.0, 1.0, 0.0], dtype=dtype, device=device)

    def loss_fn():
        return 0.5 * (parameters_to_vector(params) - target).pow(2).sum()

    def kl_fn():
        return 0.5 * (parameters_to_vector(params) - theta_old).pow(2).sum()

    return params, theta_old, target, loss_fn, kl_fn


def test_line_search_accepts_the_largest_feasible_fraction():
    params, theta_old, target, loss_fn, kl_fn = _quadratic_setup()
    full_step = target - theta_old  # jumps to the optimum but violates the KL bound
    max_kl = 0.05
    old_loss = loss_fn().item()
    result = backtracking_line_search(params, full_step, loss_fn, kl_fn, old_loss, max_kl)
    # KL(fraction) = 0.5 fraction^2 ||step||^2 <= max_kl: the first 0.8^i below the root.
    bound = math.sqrt(2 * max_kl / full_step.pow(2).sum().item())
    i = math.ceil(math.log(bound) / math.log(0.8))
    assert result.accepted
    assert result.steps_taken == i + 1
    assert result.step_fraction == pytest.approx(0.8**i)
    assert result.kl <= max_kl
    assert result.loss < old_loss
    theta = parameters_to_vector(params).detach()
    torch.testing.assert_close(theta, theta_old + 0.8**i * full_step)
    assert result.loss == pytest.approx(loss_fn().item())
    assert result.kl == pytest.approx(kl_fn().item())


def test_line_search_full_step_accepted_when_feasible():
    params, theta_old, target, loss_fn, kl_fn = _quadratic_setup()
    full_step = 0.01 * (target - theta_old)
    result = backtracking_line_search(params, full_step, loss_fn, kl_fn, loss_fn(), max_kl=1.0)
    assert (result.accepted, result.step_fraction, result.steps_taken) == (True, 1.0, 1)


@pytest.mark.parametrize("case", ["uphill", "kl_too_small", "nan_loss"])
def test_line_search_failure_restores_parameters_bit_for_bit(case):
    params, theta_old, target, loss_fn, kl_fn = _quadratic_setup()
    storages = [p.data_ptr() for p in params]
    originals = [p.detach().clone() for p in params]
    step = target - theta_old
    old_loss = loss_fn().item()
    if case == "uphill":  # every fraction of the step increases the loss
        full_step, max_kl = -step, 100.0
    elif case == "kl_too_small":  # even 0.8^14 of the step leaves the trust region
        full_step, max_kl = step, 1e-12
    else:  # a non-finite loss is never an improvement, whatever old_loss is
        full_step, max_kl, old_loss = step, 100.0, 1e9

        def loss_fn():
            return torch.tensor(float("nan"), dtype=torch.float64)

    result = backtracking_line_search(params, full_step, loss_fn, kl_fn, old_loss, max_kl)
    assert not result.accepted
    assert (result.step_fraction, result.steps_taken, result.kl) == (0.0, 15, 0.0)
    for p, original, ptr in zip(params, originals, storages, strict=True):
        assert torch.equal(p, original)  # exact equality, not allclose
        assert p.data_ptr() == ptr  # updated in place, never rebound to another buffer
        assert p.requires_grad and p.is_leaf


def test_line_search_interrupted_mid_trial_restores_parameters():
    # A KeyboardInterrupt (a second Ctrl-C) while a trial step is in the parameters must not
    # leave it there: the trainer would checkpoint it.
    params, theta_old, target, loss_fn, _ = _quadratic_setup()
    originals = [p.detach().clone() for p in params]
    calls = []

    def kl_fn():
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return torch.tensor(1.0, dtype=torch.float64)  # above max_kl: keep backtracking

    with pytest.raises(KeyboardInterrupt):
        backtracking_line_search(params, target - theta_old, loss_fn, kl_fn,
                                 loss_fn().item() + 1.0, max_kl=1e-3)
    assert len(calls) == 3
    for p, original in zip(params, originals, strict=True):
        assert torch.equal(p, original)


# ---------------------------------------------------------------------------- trpo_step


@pytest.mark.parametrize("device", DEVICES)
def test_trpo_step_on_quadratic_with_fisher_kl(device):
    # loss = 0.5 (theta - c)^T A (theta - c), KL = 0.5 ||theta - theta_old||_F^2 with an SPD
    # "Fisher" F. The step must be the natural gradient -F^{-1} g scaled to the KL boundary.
    n = 7
    a = _spd(n, seed=5).to(device)
    fisher = _spd(n, seed=6).to(device)
    params, theta_old, _, _, _ = _quadratic_setup(device=device)
    c = 3.0 * torch.ones(n, dtype=torch.float64, device=device)

    def loss_fn():
        d = parameters_to_vector(params) - c
        return 0.5 * d @ a @ d

    def kl_fn():
        d = parameters_to_vector(params) - theta_old
        return 0.5 * d @ fisher @ d

    max_kl, damping = 0.01, 1e-5
    loss_before = loss_fn().item()
    info = trpo_step(params, loss_fn, kl_fn, max_kl=max_kl, cg_iters=n, cg_damping=damping)
    assert info.accepted and info.step_fraction == 1.0 and info.ls_steps == 1
    assert info.loss_before == pytest.approx(loss_before)
    assert info.loss_after < loss_before
    # The KL is exactly quadratic, so the full step sits on the boundary of the damped model,
    # just inside the true one (damping adds d ||s||^2 to the model's curvature).
    assert info.kl <= max_kl
    assert info.kl == pytest.approx(max_kl, rel=1e-4)
    assert info.num_hvp == n + 1  # n CG products + one for s^T H s
    g = a @ (theta_old - c)
    damped = fisher + damping * torch.eye(n, dtype=torch.float64, device=device)
    natural = -torch.linalg.solve(damped, g)
    expected = theta_old + natural * math.sqrt(2 * max_kl / (natural @ damped @ natural).item())
    torch.testing.assert_close(parameters_to_vector(params).detach(), expected)
    assert info.expected_improvement == pytest.approx((-g @ (expected - theta_old)).item())
    assert info.grad_norm == pytest.approx(g.norm().item())


def test_trpo_step_converges_with_repeated_steps():
    params, _, _, loss_fn, _ = _quadratic_setup()
    losses = [loss_fn().item()]
    for _ in range(30):
        anchor = parameters_to_vector(params).detach().clone()

        def kl_fn(anchor=anchor):
            return 0.5 * (parameters_to_vector(params) - anchor).pow(2).sum()

        info = trpo_step(params, loss_fn, kl_fn, max_kl=0.05)
        assert info.kl <= 0.05
        losses.append(loss_fn().item())
    assert all(b <= a for a, b in itertools.pairwise(losses))
    assert losses[-1] < 1e-3 * losses[0]


def test_trpo_step_through_an_inner_adaptation_step():
    # The MAML use: loss and KL are evaluated at theta' = theta - alpha grad L_inner(theta),
    # which needs autograd inside the closures (also during the line search), and both share
    # that forward pass: loss_fn computes both and kl_fn returns the stored KL.
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(20, 3, generator=gen, dtype=torch.float64)
    y_inner = x @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    y_outer = x @ torch.tensor([1.5, -1.0, 0.0], dtype=torch.float64)
    theta = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    stash = {}

    def adapted_prediction():
        inner = 0.5 * (x @ theta - y_inner).pow(2).mean()
        (grad,) = torch.autograd.grad(inner, theta, create_graph=True)
        return x @ (theta - 0.1 * grad)

    old_pred = adapted_prediction().detach()  # the old policy is the adapted one at theta_old

    def loss_fn():
        pred = adapted_prediction()
        stash["kl"] = 0.5 * (pred - old_pred).pow(2).mean()  # Gaussian KL, unit variance
        return 0.5 * (pred - y_outer).pow(2).mean()

    loss_before = loss_fn().item()
    info = trpo_step([theta], loss_fn, lambda: stash["kl"], max_kl=0.01)
    assert info.accepted and info.loss_after < loss_before
    assert info.kl <= 0.01
    assert loss_fn().item() == pytest.approx(info.loss_after)


def test_trpo_step_at_an_optimum_takes_no_step():
    params, _, target, _, _ = _quadratic_setup()
    with torch.no_grad():
        for p, chunk in zip(params, torch.split(target, [4, 3]), strict=True):
            p.copy_(chunk.view_as(p))
    before = [p.detach().clone() for p in params]

    def loss_fn():
        return 0.5 * (parameters_to_vector(params) - target).pow(2).sum()

    def kl_fn():
        return 0.5 * (parameters_to_vector(params) - target).pow(2).sum()

    info = trpo_step(params, loss_fn, kl_fn)
    assert not info.accepted and info.grad_norm == 0.0 and info.loss_after == info.loss_before
    assert all(torch.equal(p, q) for p, q in zip(params, before, strict=True))


# -- Fisher-vector products through the adaptation (maml_rl/meta_updates/curvature.py) ---
@pytest.mark.parametrize(("steps", "first_order", "discrete", "anil"),
                         [(1, False, False, False), (2, False, False, False),
                          (1, True, False, False), (2, False, True, False),
                          (2, False, False, True), (1, False, True, True)])
def test_fisher_product_equals_the_kl_hessian_through_the_adaptation(steps, first_order, discrete,
                                                                     anil):
    # anil: only the last layer adapts, so each inner step's Jacobian I - a M H is not symmetric.
    from maml_rl.adaptation import adapt, model_params
    from maml_rl.algorithms.anil import head_parameter_names
    from maml_rl.linalg import flat_product
    from maml_rl.meta_updates.curvature import task_fisher_product
    from maml_rl.objectives import kl_divergence, reinforce_loss
    from maml_rl.policies import CategoricalMLPPolicy, GaussianMLPPolicy

    torch.manual_seed(0)
    policy = (CategoricalMLPPolicy(3, 4, (5,), "tanh") if discrete
              else GaussianMLPPolicy(3, 2, (5,), "tanh", init_std=0.7)).double()
    theta = {k: v.detach().clone().requires_grad_() for k, v in model_params(policy).items()}
    g = torch.Generator().manual_seed(1)

    def batch():
        mask = torch.ones(3, 4, dtype=torch.float64)
        mask[0, -1] = 0.0
        return PolicyBatch(
            observations=torch.randn(3, 4, 3, generator=g, dtype=torch.float64),
            actions=(torch.randint(0, 4, (3, 4), generator=g) if discrete
                     else torch.randn(3, 4, 2, generator=g, dtype=torch.float64)),
            advantages=torch.randn(3, 4, generator=g, dtype=torch.float64), mask=mask,
            log_probs=torch.zeros(3, 4, dtype=torch.float64))  # not read by REINFORCE

    tasks = [([batch() for _ in range(steps)], batch()) for _ in range(2)]
    sizes = [0.3, 0.2][:steps]
    head = head_parameter_names(policy) if anil else None
    adapted_old = [
        {k: v.detach() for k, v in adapt(policy, theta, reinforce_loss, s, sizes,
                                         trainable=head).items()}
        for s, _ in tasks
    ]

    def mean_kl() -> torch.Tensor:
        kls = [kl_divergence(policy, old, adapt(policy, theta, reinforce_loss, s, sizes,
                                                 first_order=first_order, trainable=head), q)
               for (s, q), old in zip(tasks, adapted_old, strict=True)]
        return torch.stack(kls).mean()

    exact = hessian_vector_product(mean_kl, list(theta.values()))
    products = [task_fisher_product(policy, theta, reinforce_loss, s, q, sizes, first_order, head)
                for s, q in tasks]

    def mean_product(v):  # the mean KL's product: the mean of the tasks' products
        outs = [p(v) for p in products]
        return {k: sum(o[k] for o in outs) / len(outs) for k in v}

    fisher = flat_product(mean_product, theta)
    n = sum(v.numel() for v in theta.values())
    for _ in range(3):
        v = torch.randn(n, generator=g, dtype=torch.float64)
        torch.testing.assert_close(fisher(v), exact(v), rtol=1e-7, atol=1e-10)
