"""Discounted returns, GAE and advantage normalisation against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from maml_rl.returns import discounted_returns, gae, normalize_advantages

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    ),
]
DTYPES = [torch.float32, torch.float64]

# Two episodes of a padded batch [N=2, T=4]: the first runs 4 steps, the second 2 steps.
# The padded entries hold junk on purpose: it must not reach any output.
REWARDS = [[1.0, 2.0, 3.0, 4.0], [1.0, -1.0, 7.0, 9.0]]
VALUES = [[1.0, 1.0, 2.0, 2.0], [2.0, 4.0, 5.0, 6.0]]
MASK = [[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]]
GAMMA, LAM = 0.5, 0.5
# By hand, gamma = 0.5: R_3 = 4, R_2 = 3 + 0.5 * 4 = 5, R_1 = 2 + 2.5, R_0 = 1 + 2.25;
# second episode: R_1 = -1, R_0 = 1 - 0.5.
EXPECTED_RETURNS = [[3.25, 4.5, 5.0, 4.0], [0.5, -1.0, 0.0, 0.0]]
# TD errors delta_t = r_t + gamma V_{t+1} - V_t with V = 0 after the last valid step:
# [1 + 0.5 - 1, 2 + 1 - 1, 3 + 1 - 2, 4 - 2] and [1 + 2 - 2, -1 + 0 - 4].
EXPECTED_DELTAS = [[0.5, 2.0, 2.0, 2.0], [1.0, -5.0, 0.0, 0.0]]
# A_t = delta_t + gamma * lam * A_{t+1}, gamma * lam = 0.25:
# A_3 = 2, A_2 = 2 + 0.5, A_1 = 2 + 0.625, A_0 = 0.5 + 0.65625; A_1 = -5, A_0 = 1 - 1.25.
EXPECTED_GAE = [[1.15625, 2.625, 2.5, 2.0], [-0.25, -5.0, 0.0, 0.0]]


def _t(data: list, dtype: torch.dtype, device: str) -> torch.Tensor:
    return torch.tensor(data, dtype=dtype, device=device)


def _reference_gae(rewards, values, lengths, gamma, lam):
    """Per-episode Python loops in float64, the obvious way, to check the vectorised code."""
    out = torch.zeros_like(rewards, dtype=torch.float64)
    for idx in torch.cartesian_prod(*[torch.arange(s) for s in rewards.shape[:-1]]):
        idx = tuple(idx.reshape(-1).tolist())
        length = int(lengths[idx])
        adv = 0.0
        for t in reversed(range(length)):
            next_v = float(values[(*idx, t + 1)]) if t + 1 < length else 0.0
            delta = float(rewards[(*idx, t)]) + gamma * next_v - float(values[(*idx, t)])
            adv = delta + gamma * lam * adv
            out[(*idx, t)] = adv
    return out


def _random_batch(shape, seed):
    gen = torch.Generator().manual_seed(seed)
    rewards = torch.randn(*shape, generator=gen, dtype=torch.float64)
    values = torch.randn(*shape, generator=gen, dtype=torch.float64)
    lengths = torch.randint(1, shape[-1] + 1, shape[:-1], generator=gen)
    mask = (torch.arange(shape[-1]) < lengths.unsqueeze(-1)).to(torch.float64)
    return rewards, values, mask, lengths


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_discounted_returns_by_hand(dtype, device):
    returns = discounted_returns(_t(REWARDS, dtype, device), _t(MASK, dtype, device), GAMMA)
    assert returns.dtype == dtype and returns.device.type == device
    torch.testing.assert_close(returns, _t(EXPECTED_RETURNS, dtype, device))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_gae_by_hand(dtype, device):
    rewards, values, mask = (_t(x, dtype, device) for x in (REWARDS, VALUES, MASK))
    adv = gae(rewards, values, mask, GAMMA, LAM)
    assert adv.dtype == dtype and adv.device.type == device
    torch.testing.assert_close(adv, _t(EXPECTED_GAE, dtype, device))
    torch.testing.assert_close(
        gae(rewards, values, mask, GAMMA, 0.0), _t(EXPECTED_DELTAS, dtype, device)
    )


def test_gae_lambda_one_is_returns_minus_values():
    rewards, values, mask, _ = _random_batch((3, 5, 9), seed=0)
    adv = gae(rewards, values, mask, gamma=0.9, lam=1.0)
    expected = (discounted_returns(rewards, mask, 0.9) - values) * mask
    torch.testing.assert_close(adv, expected)


def test_gae_lambda_zero_is_td_error():
    rewards, values, mask, lengths = _random_batch((3, 5, 9), seed=1)
    adv = gae(rewards, values, mask, gamma=0.9, lam=0.0)
    # With lam = 0 the reference recursion reduces to the one-step TD error.
    torch.testing.assert_close(adv, _reference_gae(rewards, values, lengths, 0.9, 0.0))
    last = lengths - 1
    at_end = adv.gather(-1, last.unsqueeze(-1)).squeeze(-1)
    r_end = rewards.gather(-1, last.unsqueeze(-1)).squeeze(-1)
    v_end = values.gather(-1, last.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(at_end, r_end - v_end)  # terminal: no bootstrap


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.95, 1.0])
def test_gae_matches_per_episode_loop(lam):
    rewards, values, mask, lengths = _random_batch((2, 4, 11), seed=2)
    expected = _reference_gae(rewards, values, lengths, 0.99, lam)
    torch.testing.assert_close(gae(rewards, values, mask, 0.99, lam), expected)
    adv32 = gae(rewards.float(), values.float(), mask.float(), 0.99, lam)
    torch.testing.assert_close(adv32, expected.float(), rtol=1e-5, atol=1e-5)


def test_padded_steps_are_zero_and_padding_does_not_leak():
    rewards, values, mask, _ = _random_batch((2, 3, 6), seed=3)
    junk = 1e6 * (1 - mask)
    ret = discounted_returns(rewards + junk, mask, 0.99)
    adv = gae(rewards + junk, values - junk, mask, 0.99, 0.95)
    assert torch.all(ret[mask == 0] == 0) and torch.all(adv[mask == 0] == 0)
    torch.testing.assert_close(ret, discounted_returns(rewards, mask, 0.99))
    torch.testing.assert_close(adv, gae(rewards, values, mask, 0.99, 0.95))


def test_bool_mask_and_gradient_flow():
    rewards = torch.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False]])
    ret = discounted_returns(rewards, mask, 0.5)
    torch.testing.assert_close(ret, torch.tensor([[2.0, 2.0, 0.0]]))
    ret.sum().backward()
    # dR/dr: r_0 feeds R_0 with weight 1; r_1 feeds R_1 (1) and R_0 (0.5); r_2 is padding.
    torch.testing.assert_close(rewards.grad, torch.tensor([[1.0, 1.5, 0.0]]))


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        discounted_returns(torch.zeros(2, 3), torch.ones(2, 4), 0.9)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_normalize_advantages_by_hand(dtype, device):
    # Task 0: valid values 1, 2, 3 -> mean 2, population std sqrt(2/3).
    # Task 1: a thousand times larger; normalising per task must give the same numbers.
    adv = _t(
        [[[1.0, 2.0, 99.0], [3.0, 50.0, 50.0]], [[1e3, 2e3, 0.0], [3e3, 0.0, 0.0]]], dtype, device
    )
    mask = _t(
        [[[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]], [[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]], dtype, device
    )
    out = normalize_advantages(adv, mask)
    s = 1.0 / math.sqrt(2.0 / 3.0)
    expected = _t([[[-s, 0.0, 0.0], [s, 0.0, 0.0]]] * 2, dtype, device)
    torch.testing.assert_close(out, expected)


def test_normalize_advantages_statistics_per_task():
    gen = torch.Generator().manual_seed(4)
    adv = (
        torch.randn(4, 6, 10, generator=gen, dtype=torch.float64)
        * torch.tensor([1.0, 10.0, 0.1, 5.0], dtype=torch.float64).view(4, 1, 1)
        + 3.0
    )
    lengths = torch.randint(1, 11, (4, 6), generator=gen)
    mask = (torch.arange(10) < lengths.unsqueeze(-1)).to(torch.float64)
    out = normalize_advantages(adv, mask)
    for m in range(4):
        valid = out[m][mask[m] == 1]
        assert abs(valid.mean().item()) < 1e-12
        assert valid.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-6)
    assert torch.all(out[mask == 0] == 0)


def test_normalize_advantages_degenerate_tasks():
    adv = torch.tensor([[[5.0, 5.0]], [[1.0, 2.0]]])
    mask = torch.tensor([[[1.0, 1.0]], [[0.0, 0.0]]])
    out = normalize_advantages(adv, mask)
    # A constant task maps to 0 (eps avoids 0/0); a task with no valid step stays all zero.
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.zeros_like(out))
    with pytest.raises(ValueError, match="unsqueeze"):
        normalize_advantages(torch.zeros(5), torch.ones(5))
