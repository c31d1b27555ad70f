"""The MAML core: meta-gradients against finite differences, first vs second order, vmap vs loop."""

import pytest
import torch

from maml_rl.adaptation import adapt, adapted_losses, forward, model_params
from maml_rl.episodes import ShotBatch
from maml_rl.objectives import cross_entropy_loss, mse_loss
from maml_rl.policies import RegressionMLP


def _problem(num_tasks=3, seed=0):
    torch.manual_seed(seed)
    model = RegressionMLP(1, 1, (6, 5), "tanh").double()
    params = {k: v.detach().clone().requires_grad_() for k, v in model_params(model).items()}
    g = torch.Generator().manual_seed(seed)
    data = lambda n: ShotBatch(  # noqa: E731
        inputs=torch.randn(num_tasks, n, 1, generator=g, dtype=torch.float64),
        targets=torch.randn(num_tasks, n, 1, generator=g, dtype=torch.float64),
    )
    return model, params, data(5), data(7)


def _meta_loss(model, params, support, query, step_sizes, first_order=False, batching="loop"):
    return adapted_losses(
        model, params, mse_loss, support, query, step_sizes, first_order, batching
    ).mean()


@pytest.mark.parametrize("step_sizes", [[0.3], [0.3, 0.2]])
def test_meta_gradient_matches_central_finite_differences(step_sizes):
    model, params, support, query = _problem()
    loss = _meta_loss(model, params, support, query, step_sizes)
    grads = torch.autograd.grad(loss, list(params.values()))
    eps = 1e-6
    checked = 0
    for (name, p), g in zip(params.items(), grads, strict=True):
        for idx in [(0,) * p.dim(), tuple(s - 1 for s in p.shape)]:
            def shifted(delta, name=name, idx=idx):
                q = {k: v.detach().clone() for k, v in params.items()}
                q[name][idx] += delta
                return _meta_loss(model, q, support, query, step_sizes).item()

            fd = (shifted(eps) - shifted(-eps)) / (2 * eps)
            assert g[idx].item() == pytest.approx(fd, rel=1e-5, abs=1e-8), (name, idx)
            checked += 1
    assert checked == 2 * len(params)


def test_first_order_equals_gradient_without_hessian_term():
    model, params, support, query = _problem()
    alpha = 0.3
    fo = torch.autograd.grad(
        _meta_loss(model, params, support, query, [alpha], first_order=True), list(params.values())
    )
    so = torch.autograd.grad(
        _meta_loss(model, params, support, query, [alpha]), list(params.values())
    )
    # By hand: the gradient of the query loss at the adapted parameters, with theta' treated as
    # a leaf (the d theta'/d theta = I - alpha H factor replaced by I), averaged over tasks.
    expected = [torch.zeros_like(p) for p in params.values()]
    for i in range(3):
        s = ShotBatch(*(v[i] for v in support))
        q = ShotBatch(*(v[i] for v in query))
        inner = torch.autograd.grad(mse_loss(model, params, s), list(params.values()))
        adapted = {
            k: (p - alpha * g).detach().requires_grad_()
            for (k, p), g in zip(params.items(), inner, strict=True)
        }
        outer = torch.autograd.grad(mse_loss(model, adapted, q), list(adapted.values()))
        expected = [e + o / 3 for e, o in zip(expected, outer, strict=True)]
    for f, e in zip(fo, expected, strict=True):
        torch.testing.assert_close(f, e)
    assert any(not torch.allclose(f, s) for f, s in zip(fo, so, strict=True))


@pytest.mark.parametrize("first_order", [False, True])
def test_vmap_over_tasks_equals_python_loop(first_order):
    model, params, support, query = _problem(num_tasks=4)
    results = {}
    for batching in ("vmap", "loop"):
        losses = adapted_losses(
            model, params, mse_loss, support, query, [0.1, 0.05], first_order, batching
        )
        grads = torch.autograd.grad(losses.mean(), list(params.values()))
        results[batching] = (losses.detach(), grads)
    torch.testing.assert_close(results["vmap"][0], results["loop"][0])
    for a, b in zip(results["vmap"][1], results["loop"][1], strict=True):
        torch.testing.assert_close(a, b)


def test_adapt_does_not_mutate_the_module_and_takes_a_batch_per_step():
    model, params, support, _ = _problem(num_tasks=1)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    s0 = ShotBatch(*(v[0] for v in support))
    s1 = ShotBatch(*(v[0].flip(0) * 2 for v in support))
    two_batches = adapt(model, params, mse_loss, [s0, s1], [0.1, 0.1])
    one_step = adapt(model, params, mse_loss, s0, [0.1])
    manual = adapt(model, one_step, mse_loss, s1, [0.1])
    for k in params:
        torch.testing.assert_close(two_batches[k], manual[k])
        torch.testing.assert_close(model.state_dict()[k], before[k])
    with pytest.raises(ValueError, match="2 batches for 3 steps"):
        adapt(model, params, mse_loss, [s0, s1], [0.1] * 3)


def test_inner_step_lowers_the_support_loss():
    model, params, support, _ = _problem(num_tasks=1)
    s = ShotBatch(*(v[0] for v in support))
    adapted = adapt(model, params, mse_loss, s, [0.1] * 5)
    assert mse_loss(model, adapted, s) < mse_loss(model, params, s)


def test_trainable_subset_leaves_other_parameters_untouched():
    model, params, support, _ = _problem(num_tasks=1)
    s = ShotBatch(*(v[0] for v in support))
    head = ["net.4.weight", "net.4.bias"]
    adapted = adapt(model, params, mse_loss, s, [0.1], trainable=head)
    for k in params:
        changed = not torch.equal(adapted[k], params[k])
        assert changed == (k in head), k


def test_cross_entropy_reads_integer_targets():
    model = RegressionMLP(2, 3, (4,))
    params = model_params(model)
    batch = ShotBatch(inputs=torch.randn(5, 2), targets=torch.tensor([0, 1, 2, 1, 0]))
    expected = torch.nn.functional.cross_entropy(forward(model, params, batch.inputs),
                                                 batch.targets)
    torch.testing.assert_close(cross_entropy_loss(model, params, batch), expected)


@pytest.mark.parametrize("first_order", [False, True])
def test_functional_and_autograd_backends_agree(first_order):
    model, params, support, query = _problem(num_tasks=1)
    s = ShotBatch(*(v[0] for v in support))
    q = ShotBatch(*(v[0] for v in query))
    outs = []
    for functional in (True, False):
        adapted = adapt(model, params, mse_loss, s, [0.2, 0.1], first_order, functional=functional)
        outer = mse_loss(model, adapted, q)
        outs.append((adapted, torch.autograd.grad(outer, list(params.values()))))
    for k in params:
        torch.testing.assert_close(outs[0][0][k], outs[1][0][k])
    for a, b in zip(outs[0][1], outs[1][1], strict=True):
        torch.testing.assert_close(a, b)


def test_adapt_works_on_parameters_that_do_not_require_grad():
    model, params, support, _ = _problem(num_tasks=1)
    s = ShotBatch(*(v[0] for v in support))
    frozen = {k: v.detach() for k, v in params.items()}
    with torch.no_grad():
        a = adapt(model, frozen, mse_loss, s, [0.1])
    b = adapt(model, params, mse_loss, s, [0.1])
    for k in params:
        torch.testing.assert_close(a[k], b[k].detach())
        assert not a[k].requires_grad
