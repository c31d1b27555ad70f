"""LinearFeatureBaseline: features, exact recovery, per-task independence, reg escalation."""

from __future__ import annotations

import warnings

import pytest
import torch

from maml_rl.baselines import LinearFeatureBaseline, ridge_solve

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    ),
]


def _batch(num_tasks=3, num_episodes=6, horizon=40, obs_dim=3, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    obs = 3.0 * torch.rand(num_tasks, num_episodes, horizon, obs_dim, generator=gen) - 1.5
    lengths = torch.randint(horizon // 2, horizon + 1, (num_tasks, num_episodes), generator=gen)
    mask = (torch.arange(horizon) < lengths.unsqueeze(-1)).to(dtype)
    returns = torch.randn(num_tasks, num_episodes, horizon, generator=gen).to(dtype) * mask
    return obs.to(dtype), returns, mask


def test_features_by_hand():
    baseline = LinearFeatureBaseline()
    # One task, one episode of 3 steps, the last one padded; 12 and -20 get clipped to +-10.
    obs = torch.tensor([[[[0.5, 12.0], [-2.0, -20.0], [7.0, 7.0]]]], dtype=torch.float64)
    mask = torch.tensor([[[1.0, 1.0, 0.0]]], dtype=torch.float64)
    feats = baseline.features(obs, mask)
    assert feats.shape == (1, 1, 3, LinearFeatureBaseline.num_features(2)) == (1, 1, 3, 8)
    s = 0.01  # step 1 / 100
    expected = torch.tensor(
        [
            [0.5, 10.0, 0.25, 100.0, 0.0, 0.0, 0.0, 1.0],
            [-2.0, -10.0, 4.0, 100.0, s, s**2, s**3, 1.0],
            [0.0] * 8,
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(feats[0, 0], expected)


@pytest.mark.parametrize("device", DEVICES)
def test_recovers_exactly_linear_returns(device):
    obs, _, mask = _batch(seed=1)
    obs, mask = obs.to(device), mask.to(device)
    baseline = LinearFeatureBaseline(reg_coeff=1e-12)
    gen = torch.Generator().manual_seed(11)
    true_w = torch.randn(3, baseline.num_features(3), generator=gen, dtype=torch.float64)
    true_w = true_w.to(device)
    returns = torch.einsum("mntf,mf->mnt", baseline.features(obs, mask), true_w)
    weights = baseline.fit(obs, returns, mask)
    assert weights.shape == (3, 10) and weights.dtype == torch.float64
    torch.testing.assert_close(weights, true_w, rtol=1e-6, atol=1e-6)
    values = baseline.predict(obs, mask, weights)
    torch.testing.assert_close(values, returns, rtol=1e-9, atol=1e-9)
    # The rllab default ridge biases the fit a little: with 40 steps s^3 <= 0.06 is a weak
    # column, so its weight is shrunk and the last steps are off by about 2e-4.
    values = LinearFeatureBaseline().fit_predict(obs, returns, mask)
    torch.testing.assert_close(values, returns, rtol=0, atol=1e-3)
    assert torch.all(values[mask == 0] == 0)


def test_float32_inputs_are_fitted_in_float64():
    obs, _, mask = _batch(seed=2, dtype=torch.float32)
    baseline = LinearFeatureBaseline()
    true_w = torch.linspace(-1.0, 1.0, baseline.num_features(3), dtype=torch.float64)
    returns = (baseline.features(obs.double(), mask.double()) @ true_w).float()
    assert baseline.fit(obs, returns, mask).dtype == torch.float64
    values = baseline.fit_predict(obs, returns, mask)
    assert values.dtype == torch.float32
    torch.testing.assert_close(values, returns, rtol=0, atol=1e-3)  # ridge bias, as above


def test_batched_fit_equals_looped_fit():
    obs, returns, mask = _batch(num_tasks=4, seed=3)
    baseline = LinearFeatureBaseline()
    batched = baseline.fit(obs, returns, mask)
    looped = torch.cat(
        [baseline.fit(obs[m : m + 1], returns[m : m + 1], mask[m : m + 1]) for m in range(4)]
    )
    torch.testing.assert_close(batched, looped, rtol=1e-10, atol=1e-10)
    values = baseline.predict(obs, mask, batched)
    for m in range(4):
        one = baseline.predict(obs[m : m + 1], mask[m : m + 1], looped[m : m + 1])
        torch.testing.assert_close(values[m : m + 1], one)
    # Fitting the same data per task is not the same as pooling it: the tasks differ.
    pooled = baseline.fit(
        obs.reshape(1, -1, *obs.shape[2:]), returns.reshape(1, -1, 40), mask.reshape(1, -1, 40)
    )
    assert not torch.allclose(pooled.expand_as(batched), batched)


def test_one_broken_task_does_not_affect_the_others():
    obs, returns, mask = _batch(num_tasks=3, seed=4)
    baseline = LinearFeatureBaseline()
    clean = baseline.fit(obs, returns, mask)
    broken = returns.clone()
    broken[1, 0, 0] = float("nan")
    with pytest.warns(RuntimeWarning, match=r"task\(s\) \[1\]"):
        weights = baseline.fit(obs, broken, mask)
    torch.testing.assert_close(weights[[0, 2]], clean[[0, 2]], rtol=0, atol=0)
    # The task with no finite fit falls back to a zero baseline instead of NaN.
    torch.testing.assert_close(weights[1], torch.zeros_like(weights[1]))
    assert torch.isfinite(baseline.predict(obs, mask, weights)).all()


def test_singular_system_gets_the_minimum_norm_solution_per_task():
    # Task 0 is well conditioned. Task 1 is [[a, a], [a, a]] with a = 1e12: adding 1e-5 to the
    # diagonal is below float64 resolution at 1e12, so its system is singular. Whatever the
    # LAPACK build, the answer must be the least-squares solution of smallest norm, and task 0
    # must not notice task 1.
    a = 1e12
    eye = torch.eye(2, dtype=torch.float64)
    xtx = torch.tensor([[[2.0, 1.0], [1.0, 3.0]], [[a, a], [a, a]]], dtype=torch.float64)
    xty = torch.tensor([[1.0, 2.0], [a, a]], dtype=torch.float64)
    sol = ridge_solve(xtx, xty, reg_coeff=1e-5)
    assert sol.converged.tolist() == [True, True]
    assert torch.isfinite(sol.weights).all()
    for task in range(2):  # normal-equation residual, relative to the right-hand side
        lhs = xtx[task] + 1e-5 * eye
        residual = lhs @ sol.weights[task] - xty[task]
        assert residual.norm() <= 1e-9 * xty[task].norm()
    # Minimum norm: no component along task 1's null direction (1, -1).
    null = torch.tensor([1.0, -1.0], dtype=torch.float64) / 2**0.5
    assert abs(float(sol.weights[1] @ null)) <= 1e-9 * float(sol.weights[1].norm())
    # Task independence: task 0 alone, or beside a different task 1, gets the same weights.
    alone = ridge_solve(xtx[:1], xty[:1], reg_coeff=1e-5).weights[0]
    other = ridge_solve(torch.stack([xtx[0], 5 * eye]), torch.stack([xty[0], xty[0]]), 1e-5)
    torch.testing.assert_close(sol.weights[0], alone, rtol=1e-12, atol=0)
    torch.testing.assert_close(sol.weights[0], other.weights[0], rtol=1e-12, atol=0)


def test_non_finite_task_gets_zero_weights_and_leaves_the_others_alone():
    xtx = torch.stack([torch.eye(2), torch.full((2, 2), float("nan"))]).double()
    xty = torch.tensor([[1.0, 2.0], [1.0, 1.0]], dtype=torch.float64)
    sol = ridge_solve(xtx, xty, reg_coeff=1e-5)
    assert sol.converged.tolist() == [True, False]
    torch.testing.assert_close(sol.weights[1], torch.zeros(2, dtype=torch.float64))
    lhs = xtx[0] + 1e-5 * torch.eye(2, dtype=torch.float64)
    assert (lhs @ sol.weights[0] - xty[0]).norm() <= 1e-12 * xty[0].norm()


def test_singular_features_give_finite_fit():
    # Constant observations make the obs, obs^2 and bias columns collinear: X^T X is singular
    # and only the ridge term makes the system solvable. The fit must still be finite and the
    # predictions must match a target that the features can represent.
    obs = torch.full((2, 4, 10, 2), 0.5, dtype=torch.float64)
    mask = torch.ones(2, 4, 10, dtype=torch.float64)
    returns = torch.stack([torch.full((4, 10), 3.0), torch.full((4, 10), -1.0)]).double()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = LinearFeatureBaseline().fit_predict(obs, returns, mask)
    assert torch.isfinite(values).all()
    torch.testing.assert_close(values, returns, rtol=1e-4, atol=1e-4)


def test_inputs_are_detached_and_validated():
    obs, returns, mask = _batch(num_tasks=2, seed=5)
    obs.requires_grad_(True)
    returns.requires_grad_(True)
    values = LinearFeatureBaseline().fit_predict(obs, returns, mask)
    assert not values.requires_grad
    with pytest.raises(ValueError, match=r"\[M, N, T, D\]"):
        LinearFeatureBaseline().fit(obs[0], returns[0], mask[0])
    with pytest.raises(ValueError, match="reg_coeff"):
        LinearFeatureBaseline(reg_coeff=0.0)
