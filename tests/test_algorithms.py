"""The MAML family: each algorithm's update against one computed by hand on a tiny problem,
config errors, checkpoint resume, and a short sinusoid run per algorithm."""

import itertools
import os
import signal

import numpy as np
import pytest
import torch

from maml_rl.adaptation import map_tasks, model_params
from maml_rl.algorithms import ALGORITHMS, build_algorithm
from maml_rl.algorithms.anil import head_parameter_names
from maml_rl.algorithms.imaml import implicit_meta_gradient
from maml_rl.checkpoint import load_checkpoint
from maml_rl.cli import train_main
from maml_rl.config import (
    ALGORITHM_NAMES,
    META_UPDATE_NAMES,
    ConfigError,
    load_config,
    save_config,
)
from maml_rl.episodes import ShotBatch
from maml_rl.family import load_family
from maml_rl.learners.supervised import SupervisedMetaBatch
from maml_rl.logger import read_metrics
from maml_rl.meta_updates import META_UPDATES
from maml_rl.meta_updates.plain import PlainMetaUpdate
from maml_rl.objectives import mse_loss
from maml_rl.policies import RegressionMLP
from maml_rl.trainer import Trainer, build_learner
from maml_rl.validation import validate

BATCHINGS = ["vmap", "loop"]


def _problem(num_tasks=3, hidden=(6, 5), in_dim=1, seed=0):
    torch.manual_seed(seed)
    model = RegressionMLP(in_dim, 1, hidden, "tanh").double()
    g = torch.Generator().manual_seed(seed)
    data = lambda n: ShotBatch(  # noqa: E731
        inputs=torch.randn(num_tasks, n, in_dim, generator=g, dtype=torch.float64),
        targets=torch.randn(num_tasks, n, 1, generator=g, dtype=torch.float64),
    )
    return model, data(5), data(7)


def _algorithm(name, model, *overrides, batching="loop"):
    config = load_config(None, [f"algorithm={name}", "device=cpu", *overrides])
    return build_algorithm(config, model, mse_loss, batching)


def _plain_update(algorithm):
    """The supervised learner's meta-update for ``algorithm``: its config's ``meta.optimizer``
    with ``meta.lr``."""
    return PlainMetaUpdate(algorithm.config, algorithm.meta_parameters())


def _task(batch, i):
    return ShotBatch(*(v[i] for v in batch))


def _grad(loss, params):
    return torch.autograd.grad(loss, list(params.values()))


def test_registry_matches_the_config_choices():
    assert set(ALGORITHM_NAMES) == set(ALGORITHMS)
    assert set(META_UPDATE_NAMES) == set(META_UPDATES)


# --- MAML and first-order MAML -----------------------------------------------------------------


@pytest.mark.parametrize("batching", BATCHINGS)
def test_fomaml_is_maml_with_the_hessian_term_dropped(batching):
    model, support, query = _problem()
    alpha = 0.3
    fomaml = _algorithm("fomaml", model, f"inner.lr={alpha}", batching=batching)
    grads, _ = fomaml.meta_gradient(support, query)
    # By hand: the query gradient at the adapted parameters, theta' treated as a leaf.
    theta = model_params(model)
    expected = [torch.zeros_like(p) for p in theta.values()]
    for i in range(3):
        inner = _grad(mse_loss(model, theta, _task(support, i)), theta)
        adapted = {k: (p - alpha * g).detach().requires_grad_()
                   for (k, p), g in zip(theta.items(), inner, strict=True)}
        outer = _grad(mse_loss(model, adapted, _task(query, i)), adapted)
        expected = [e + o / 3 for e, o in zip(expected, outer, strict=True)]
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want)
    second, _ = _algorithm("maml", model, f"inner.lr={alpha}").meta_gradient(support, query)
    assert any(not torch.allclose(a, b) for a, b in zip(grads, second, strict=True))
    # The legacy flag is the same algorithm.
    legacy = _algorithm("maml", model, f"inner.lr={alpha}", "inner.first_order=true")
    for a, b in zip(legacy.meta_gradient(support, query)[0], grads, strict=True):
        torch.testing.assert_close(a, b)


def test_fomaml_and_the_first_order_flag_are_one_setting(tmp_path):
    config = load_config(None, ["algorithm=fomaml"])
    assert config.inner.first_order
    save_config(config, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == config


# --- Reptile -----------------------------------------------------------------------------------


@pytest.mark.parametrize("batching", BATCHINGS)
def test_reptile_step_is_theta_plus_epsilon_mean_of_task_displacements(batching):
    model, support, query = _problem()
    eps, alpha, steps = 0.4, 0.1, 3
    reptile = _algorithm("reptile", model, "meta.optimizer=sgd", f"meta.lr={eps}",
                         f"inner.lr={alpha}", f"inner.steps={steps}", batching=batching)
    theta = {k: v.detach().clone() for k, v in model_params(model).items()}
    expected = {k: torch.zeros_like(v) for k, v in theta.items()}
    for i in range(3):  # k plain SGD steps on the task's support set, by hand
        phi = {k: v.clone().requires_grad_() for k, v in theta.items()}
        for _ in range(steps):
            grads = _grad(mse_loss(model, phi, _task(support, i)), phi)
            phi = {k: (v - alpha * g).detach().requires_grad_()
                   for (k, v), g in zip(phi.items(), grads, strict=True)}
        for k in theta:
            expected[k] += (phi[k].detach() - theta[k]) / 3
    _plain_update(reptile).step(SupervisedMetaBatch(reptile, support, query))
    for k, v in model_params(model).items():
        torch.testing.assert_close(v.detach(), theta[k] + eps * expected[k])


def test_reptile_anneals_its_outer_step_size_linearly():
    model, support, query = _problem()
    reptile = _algorithm("reptile", model, "meta.optimizer=sgd", "meta.lr=0.5",
                         "reptile.anneal=true", "training.iterations=4")
    update = _plain_update(reptile)
    rates = [update.step(SupervisedMetaBatch(reptile, support, query))["reptile/outer_lr"]
             for _ in range(4)]
    assert rates == pytest.approx([0.5, 0.375, 0.25, 0.125])
    assert reptile.state_dict() == {"updates": 4}
    # meta.lr_milestones scales epsilon before the annealing.
    reptile = _algorithm("reptile", model, "meta.optimizer=sgd", "meta.lr=0.5",
                         "reptile.anneal=true", "training.iterations=4",
                         "meta.lr_milestones=[2]", "meta.lr_gamma=0.1")
    update = _plain_update(reptile)
    rates = [update.step(SupervisedMetaBatch(reptile, support, query))["reptile/outer_lr"]
             for _ in range(4)]
    assert rates == pytest.approx([0.5, 0.375, 0.025, 0.0125])
    assert update.optimizer.param_groups[0]["lr"] == pytest.approx(0.0125)


# --- Meta-SGD ----------------------------------------------------------------------------------


def _metasgd_with_random_rates(model, batching="loop"):
    metasgd = _algorithm("metasgd", model, "inner.lr=0.05", batching=batching)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for rate in metasgd.rates.values():
            assert torch.all(rate == 0.05)  # initialised to inner.lr
            rate.copy_(torch.rand(rate.shape, generator=g, dtype=rate.dtype) * 0.2)
    return metasgd


@pytest.mark.parametrize("batching", BATCHINGS)
def test_metasgd_adapts_elementwise_with_its_learned_rates(batching):
    model, support, _ = _problem()
    metasgd = _metasgd_with_random_rates(model, batching)
    theta = model_params(model)
    s = _task(support, 0)
    adapted = metasgd.inner_step(theta, theta, s, 0.05, functional=batching == "vmap")
    grads = _grad(mse_loss(model, theta, s), theta)
    for (k, p), g in zip(theta.items(), grads, strict=True):
        torch.testing.assert_close(adapted[k], p - metasgd.rates[k] * g)


@pytest.mark.parametrize("batching", BATCHINGS)
def test_metasgd_rates_receive_the_meta_gradient(batching):
    model, support, query = _problem()
    metasgd = _metasgd_with_random_rates(model, batching)
    grads, _ = metasgd.meta_gradient(support, query)
    names = list(model_params(model))
    rate_grads = dict(zip(names, grads[len(names):], strict=True))
    # By hand, one step: d/d alpha L_q(theta - alpha o g) = -g o grad L_q(theta').
    theta = model_params(model)
    expected = {k: torch.zeros_like(v) for k, v in theta.items()}
    for i in range(3):
        inner = dict(zip(names, _grad(mse_loss(model, theta, _task(support, i)), theta),
                         strict=True))
        adapted = {k: (theta[k] - metasgd.rates[k] * inner[k]).detach().requires_grad_()
                   for k in names}
        outer = dict(zip(names, _grad(mse_loss(model, adapted, _task(query, i)), adapted),
                         strict=True))
        for k in names:
            expected[k] -= inner[k] * outer[k] / 3
    for k in names:
        assert rate_grads[k].abs().sum() > 0
        torch.testing.assert_close(rate_grads[k], expected[k])


# --- ANIL --------------------------------------------------------------------------------------


@pytest.mark.parametrize("batching", BATCHINGS)
def test_anil_adapts_only_the_head_and_still_meta_learns_the_body(batching):
    model, support, query = _problem()
    anil = _algorithm("anil", model, "inner.lr=0.3", "inner.steps=2", batching=batching)
    head = head_parameter_names(model)
    assert head == ["net.4.weight", "net.4.bias"]
    theta = model_params(model)
    adapted = anil.adapt(theta, _task(support, 0), functional=batching == "vmap")
    for k in theta:
        assert torch.equal(adapted[k], theta[k]) == (k not in head), k
    grads, _ = anil.meta_gradient(support, query)
    for k, g in zip(theta, grads, strict=True):
        assert g.abs().sum() > 0, k
    # The body's meta-gradient flows through the head's adaptation: not the pre-adaptation one.
    names = list(theta)
    plain = _grad(torch.stack([mse_loss(model, theta, _task(query, i)) for i in range(3)]).mean(),
                  theta)
    body = [i for i, k in enumerate(names) if k not in head]
    assert any(not torch.allclose(grads[i], plain[i]) for i in body)


# --- iMAML -------------------------------------------------------------------------------------


def _linear_regression_problem(num_tasks=2, in_dim=3):
    """A linear model: the MSE is quadratic in the parameters, so the proximal inner problem
    has a closed form."""
    model, support, query = _problem(num_tasks, hidden=(), in_dim=in_dim, seed=3)
    return model, support, query


def _design(batch):
    x = batch.inputs
    return torch.cat([x, torch.ones(*x.shape[:-1], 1, dtype=x.dtype)], dim=-1)


def _closed_form(theta_vec, support, lam):
    """phi* = argmin (1/n)||A phi - y||^2 + lam/2 ||phi - theta||^2, per task."""
    a, y = _design(support), support.targets[..., 0]
    n, dim = a.shape[1], a.shape[2]
    hessian = 2 / n * a.transpose(1, 2) @ a
    rhs = lam * theta_vec + 2 / n * (a.transpose(1, 2) @ y[..., None])[..., 0]
    return torch.linalg.solve(hessian + lam * torch.eye(dim, dtype=a.dtype), rhs)


def _as_params(vec, in_dim):
    return {"net.0.weight": vec[..., :in_dim].reshape(*vec.shape[:-1], 1, in_dim),
            "net.0.bias": vec[..., in_dim:]}


@pytest.mark.parametrize("batching", BATCHINGS)
def test_imaml_implicit_gradient_equals_the_exact_one_on_a_quadratic(batching):
    model, support, query = _linear_regression_problem()
    lam = 2.0
    theta = model_params(model)
    theta_vec = torch.cat([theta["net.0.weight"].reshape(-1), theta["net.0.bias"]])
    # Exact: differentiate the query loss through the closed-form solution of the inner problem.
    theta_leaf = theta_vec.detach().clone().requires_grad_()
    phi_star = _closed_form(theta_leaf, support, lam)
    a_q, y_q = _design(query), query.targets[..., 0]
    exact_loss = (((a_q @ phi_star[..., None])[..., 0] - y_q) ** 2).mean(dim=1).mean()
    (exact,) = torch.autograd.grad(exact_loss, theta_leaf)
    # Implicit: (I + H/lam)^-1 grad L_q(phi*) by conjugate gradient, at the same phi*.
    adapted = _as_params(phi_star.detach(), in_dim=3)
    grads, losses = implicit_meta_gradient(model, mse_loss, adapted, support, query, lam,
                                           cg_steps=20, batching=batching)
    got = torch.cat([grads["net.0.weight"].reshape(-1), grads["net.0.bias"]])
    torch.testing.assert_close(got, exact, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(losses.mean(), exact_loss.detach())
    # The test can tell: first-order MAML's gradient (identity Jacobian) is not the exact one.
    residual = (a_q @ phi_star.detach()[..., None])[..., 0] - y_q
    first_order = (2 / a_q.shape[1] * (a_q.transpose(1, 2) @ residual[..., None])[..., 0]).mean(0)
    assert not torch.allclose(first_order, exact, rtol=1e-3)


def _assert_exact_implicit_gradient(imaml, theta_vec, support, query, lam):
    """iMAML's meta-gradient equals the query loss's gradient through the closed-form proximal
    solution of the linear regression."""
    theta_leaf = theta_vec.clone().requires_grad_()
    a_q, y_q = _design(query), query.targets[..., 0]
    pred = (a_q @ _closed_form(theta_leaf, support, lam)[..., None])[..., 0]
    (exact,) = torch.autograd.grad(((pred - y_q) ** 2).mean(dim=1).mean(), theta_leaf)
    grads, _ = imaml.meta_gradient(support, query)
    torch.testing.assert_close(torch.cat([grads[0].reshape(-1), grads[1]]), exact,
                               rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("batching", BATCHINGS)
@pytest.mark.parametrize("backtracks", [0, 3])
def test_imaml_inner_solver_and_meta_gradient_converge_to_the_closed_form(batching, backtracks):
    model, support, query = _linear_regression_problem()
    lam = 2.0
    imaml = _algorithm("imaml", model, f"imaml.lam={lam}", "imaml.cg_steps=20",
                       "inner.lr=0.1", "inner.steps=400", f"imaml.backtracks={backtracks}",
                       batching=batching)
    theta = model_params(model)
    theta_vec = torch.cat([theta["net.0.weight"].reshape(-1), theta["net.0.bias"]]).detach()
    phi_star = _closed_form(theta_vec, support, lam)
    for i in range(2):
        with torch.no_grad():
            phi = imaml.adapt({k: v.detach() for k, v in theta.items()}, _task(support, i),
                              functional=batching == "vmap")
        got = torch.cat([phi["net.0.weight"].reshape(-1), phi["net.0.bias"]])
        # Best-of-grid steps zig-zag a little: slower, still monotone, convergence.
        tol = 1e-9 if backtracks == 0 else 1e-7
        torch.testing.assert_close(got, phi_star[i], rtol=tol, atol=tol)
    _assert_exact_implicit_gradient(imaml, theta_vec, support, query, lam)


@pytest.mark.parametrize("batching", BATCHINGS)
def test_imaml_newton_cg_step_solves_the_quadratic_inner_problem_in_one_step(batching):
    # Linear regression: L is quadratic, so one full Newton step (inner.lr = 1) with as many CG
    # iterations as parameters (4) lands on the closed-form proximal solution, at any lam.
    model, support, query = _linear_regression_problem()
    lam = 0.5
    imaml = _algorithm("imaml", model, f"imaml.lam={lam}", "imaml.solver=newton_cg",
                       "imaml.inner_cg_steps=4", "imaml.cg_steps=20", "inner.lr=1.0",
                       "inner.steps=1", batching=batching)
    theta = model_params(model)
    theta_vec = torch.cat([theta["net.0.weight"].reshape(-1), theta["net.0.bias"]]).detach()
    phi_star = _closed_form(theta_vec, support, lam)
    detached_theta = {k: v.detach() for k, v in theta.items()}
    with torch.no_grad():
        phis = map_tasks(lambda b: imaml.adapt(detached_theta, b, functional=batching == "vmap"),
                         support, batching=batching)
    got = torch.cat([phis["net.0.weight"].flatten(1), phis["net.0.bias"]], dim=1)
    torch.testing.assert_close(got, phi_star, rtol=1e-9, atol=1e-10)
    # A gradient step of the same size is nowhere near it (the test can tell).
    gd = _algorithm("imaml", model, f"imaml.lam={lam}", "inner.lr=1.0", "inner.steps=1")
    one = gd.adapt(detached_theta, _task(support, 0), functional=False)
    assert not torch.allclose(one["net.0.bias"], phi_star[0, 3:], atol=1e-3)
    # And the meta-gradient through the Newton-solved phi is the exact one.
    _assert_exact_implicit_gradient(imaml, theta_vec, support, query, lam)


@pytest.mark.parametrize("batching", BATCHINGS)
def test_imaml_newton_cg_converges_on_a_nonlinear_network_like_gradient_descent(batching):
    # Tanh network: a few line-searched Newton-CG steps reach the proximal minimiser that 600
    # small gradient steps reach, and the proximal objective falls at every step.
    model, support, _ = _problem(num_tasks=2)
    lam = 2.0
    theta = {k: v.detach().clone() for k, v in model_params(model).items()}
    newton = _algorithm("imaml", model, f"imaml.lam={lam}", "imaml.solver=newton_cg",
                        "imaml.inner_cg_steps=30", "inner.lr=1.0", "imaml.backtracks=4",
                        batching=batching)
    gd = _algorithm("imaml", model, f"imaml.lam={lam}", "inner.lr=0.1", "inner.steps=600")

    def objective(phi, b):
        penalty = sum(((phi[k] - theta[k]) ** 2).sum() for k in phi)
        return (mse_loss(model, phi, b) + lam / 2 * penalty).item()

    for i in range(2):
        b = _task(support, i)
        with torch.no_grad():
            reference = gd.adapt(theta, b, functional=False)
            phi, values = theta, [objective(theta, b)]
            for _ in range(8):
                phi = newton.inner_step(theta, phi, b, 1.0, functional=batching == "vmap")
                values.append(objective(phi, b))
        assert all(a >= b_ for a, b_ in itertools.pairwise(values)), values
        for k in theta:
            torch.testing.assert_close(phi[k], reference[k], rtol=1e-6, atol=1e-7)


def test_imaml_implicit_gradient_matches_finite_differences_on_a_nonlinear_network():
    # Differentiate the query loss at the converged proximal solution numerically: re-solve
    # the inner problem at theta +- eps.
    model, support, query = _problem(num_tasks=2)
    lam = 2.0
    imaml = _algorithm("imaml", model, f"imaml.lam={lam}", "inner.lr=0.1", "inner.steps=600")
    theta = {k: v.detach().clone() for k, v in model_params(model).items()}

    def solve(th):
        with torch.no_grad():
            return [imaml.adapt(th, _task(support, i), functional=False) for i in range(2)]

    def outer(th):
        return sum(mse_loss(model, phi, _task(query, i))
                   for i, phi in enumerate(solve(th))).item() / 2

    phis = solve(theta)
    adapted = {k: torch.stack([phi[k] for phi in phis]) for k in theta}
    grads, _ = implicit_meta_gradient(model, mse_loss, adapted, support, query, lam,
                                      cg_steps=100, batching="loop")
    eps = 1e-5
    for name in ("net.0.weight", "net.2.bias", "net.4.weight"):
        idx = (0,) * theta[name].dim()
        shifted = []
        for sign in (1, -1):
            th = {k: v.clone() for k, v in theta.items()}
            th[name][idx] += sign * eps
            shifted.append(outer(th))
        fd = (shifted[0] - shifted[1]) / (2 * eps)
        assert grads[name][idx].item() == pytest.approx(fd, rel=1e-4, abs=1e-8), name


def test_imaml_first_evaluation_step_is_a_plain_gradient_step():
    model, support, _ = _problem()
    imaml = _algorithm("imaml", model, "imaml.lam=5")
    theta = {k: v.detach() for k, v in model_params(model).items()}
    s = _task(support, 0)
    one = imaml.inner_step(theta, theta, s, 0.1, functional=False)
    plain = _algorithm("maml", model).inner_step(theta, theta, s, 0.1, functional=False)
    two = imaml.inner_step(theta, one, s, 0.1, functional=False)
    plain_two = _algorithm("maml", model).inner_step(theta, plain, s, 0.1, functional=False)
    for k in theta:
        torch.testing.assert_close(one[k], plain[k])
        # From the second step on, the proximal term pulls towards theta.
        expected = plain_two[k] - 0.1 * 5 * (one[k] - theta[k])
        torch.testing.assert_close(two[k], expected)


# --- Config ------------------------------------------------------------------------------------


def _error(overrides):
    with pytest.raises(ConfigError) as info:
        config = load_config(None, overrides)
        validate(config, load_family(config.env.id, config.env.kwargs))
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["algorithm=mamll"], "algorithm: expected one of maml, fomaml, reptile, metasgd, anil, "
                              "imaml, platipus, got 'mamll'"),
        (["algorithm=reptile", "inner.first_order=true"],
         "inner.first_order: true has no meaning for algorithm 'reptile'"),
        (["algorithm=imaml", "inner.first_order=true"], "allowed with: maml, fomaml, metasgd"),
        (["algorithm=metasgd", "evaluation.lr=0.1"],
         "evaluation.lr: 0.1 is not used by algorithm 'metasgd'"),
        (["algorithm=metasgd", "inner.lr=[0.1, 0.05]"],
         "inner.lr: algorithm 'metasgd' initialises its learned rates from one number"),
        (["imaml.lam=0"], "imaml.lam: must be > 0, got 0.0"),
        (["imaml.cg_steps=0"], "imaml.cg_steps: must be >= 1, got 0"),
        (["imaml.lamb=1"], "unknown config key 'imaml.lamb' (did you mean 'imaml.lam'?)"),
        (["reptile.aneal=true"], "did you mean 'reptile.anneal'"),
        (["reptile.anneal=sometimes"], "reptile.anneal: expected true or false, got 'sometimes'"),
    ],
)
def test_config_errors_name_key_value_and_what_is_allowed(overrides, expected):
    assert expected in _error(overrides)


def test_rl_families_reject_the_algorithms_they_lack(tmp_path, capsys):
    family = load_family("maml/Navigation2D-v0", {})
    for name in ("reptile", "imaml"):
        with pytest.raises(ConfigError, match=f"algorithm: '{name}' is not implemented for RL "
                                              "families .*; allowed for RL: maml, fomaml, "
                                              "metasgd, anil"):
            build_learner(load_config(None, [f"algorithm={name}"]), family, "cpu")
    assert train_main(["configs/navigation_2d.yaml", "algorithm=imaml", "threads=1",
                       "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "allowed for RL: maml, fomaml, metasgd, anil" in err


# --- Training runs -----------------------------------------------------------------------------

TINY = [
    "sampling.meta_batch_size=4", "sampling.support_size=5", "sampling.query_size=5",
    "policy.hidden_sizes=[16, 16]", "training.checkpoint_every=5", "logging.progress=false",
    "logging.tensorboard=false", "evaluation.num_tasks=20", "evaluation.steps=2",
    "evaluation.query_size=10", "evaluation.at_end=false", "device=cpu",
]


def _config(*overrides):
    return load_config("configs/sinusoid.yaml", [*TINY, *overrides])


@pytest.mark.parametrize("name", ["metasgd", "reptile", "platipus"])
def test_resume_n_plus_n_equals_2n_with_the_algorithm_state(tmp_path, monkeypatch, name):
    # Reptile's annealed step size depends on training.iterations: the run to compare with is
    # a 10-iteration run interrupted (Ctrl-C) after 5, then resumed.
    config = lambda: _config(f"algorithm={name}", "training.iterations=10",  # noqa: E731
                             "reptile.anneal=true")
    full = Trainer(config(), tmp_path / "full")
    full.train()
    half = Trainer(config(), tmp_path / "half")
    real, calls = half.learner.meta_iteration, [0]

    def interrupted(tasks, iteration=None):
        calls[0] += 1
        if calls[0] == 5:
            os.kill(os.getpid(), signal.SIGINT)
        return real(tasks, iteration)

    monkeypatch.setattr(half.learner, "meta_iteration", interrupted)
    assert half.train().status == "interrupted"
    resumed = Trainer(config(), tmp_path / "half", resume=True)
    assert resumed.iteration == 5
    resumed.train()
    a, b = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "half")
    assert [r["loss/post_adaptation"] for r in a] == [r["loss/post_adaptation"] for r in b]
    states = [load_checkpoint(tmp_path / run / "checkpoint.pt")["learner"]
              for run in ("full", "half")]
    for key in ("model", "algorithm"):
        for k, v in states[0][key].items():
            torch.testing.assert_close(states[1][key][k], v, rtol=0, atol=0)
    if name == "metasgd":  # the rates are learned and travel with the checkpoint
        rates = states[0]["algorithm"]["rates"]
        assert any(not torch.all(r == 0.01) for r in rates.values())
        for k, r in rates.items():
            torch.testing.assert_close(full.learner.algorithm.rates[k].detach(), r)


def test_evaluation_adapts_with_the_algorithms_inner_step(tmp_path):
    trainer = Trainer(_config("algorithm=metasgd", "training.iterations=2"), tmp_path)
    trainer.train()
    with torch.no_grad():
        for rate in trainer.learner.algorithm.rates.values():
            rate.zero_()
    curve = trainer.learner.evaluate(10, 2, seed=3)
    assert curve.method == "metasgd"
    # Zero learned rates: no step moves the model, whatever inner.lr says.
    np.testing.assert_array_equal(curve.per_task[:, 0], curve.per_task[:, 2])


SHORT_RUN = {
    "maml": [], "fomaml": [], "metasgd": [], "anil": [],
    "reptile": ["inner.steps=5", "inner.lr=0.02"],
    "imaml": ["inner.steps=5", "inner.lr=0.05", "imaml.lam=10", "imaml.backtracks=6"],
    "platipus": [],
}


@pytest.mark.parametrize("name", list(SHORT_RUN))
def test_short_sinusoid_run_improves_post_adaptation_loss(tmp_path, name):
    # One torch thread: on a shared 2-core machine two threads made these runs 10x slower.
    config = _config(f"algorithm={name}", "training.iterations=300", "threads=1",
                     "sampling.meta_batch_size=10", "policy.hidden_sizes=[40, 40]",
                     *SHORT_RUN[name])
    Trainer(config, tmp_path).train()
    rows = read_metrics(tmp_path)
    first = np.mean([r["loss/post_adaptation"] for r in rows[:30]])
    last = np.mean([r["loss/post_adaptation"] for r in rows[-30:]])
    assert last < 0.85 * first, (first, last)
