"""ProMP (Rothfuss et al. 2019): the low-variance curvature inner objective against its defining
Hessian, the clipped surrogate against a hand computation, and a short ProMP run that learns."""

import numpy as np
import pytest
import torch
from torch.func import functional_call

from maml_rl.adaptation import model_params
from maml_rl.config import ConfigError, load_config
from maml_rl.episodes import PolicyBatch
from maml_rl.family import load_family
from maml_rl.logger import read_metrics
from maml_rl.objectives import clipped_surrogate_loss, reinforce_loss, surrogate_loss
from maml_rl.policies import GaussianMLPPolicy
from maml_rl.trainer import Trainer, build_learner


def _problem():
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(3, 2, (4,), "tanh", init_std=0.8).double()
    params = {k: v.detach().clone() for k, v in model_params(policy).items()}
    g = torch.Generator().manual_seed(3)
    n, t = 3, 5
    mask = torch.ones(n, t, dtype=torch.float64)
    mask[0, -2:] = 0.0
    obs = torch.randn(n, t, 3, generator=g, dtype=torch.float64)
    with torch.no_grad():
        dist = functional_call(policy, params, (obs,))
        actions = dist.sample()
        log_probs = dist.log_prob(actions)  # the sampling policy is the current one
    batch = PolicyBatch(observations=obs, actions=actions, log_probs=log_probs, mask=mask,
                        advantages=torch.randn(n, t, generator=g, dtype=torch.float64))
    return policy, params, batch


def _flat_fn(policy, params, loss_fn, batch):
    shapes = [(k, v.shape, v.numel()) for k, v in params.items()]

    def fn(flat):
        out, i = {}, 0
        for k, shape, numel in shapes:
            out[k] = flat[i:i + numel].view(shape)
            i += numel
        return loss_fn(policy, out, batch)

    return fn, torch.cat([v.reshape(-1) for v in params.values()])


def _log_prob(policy, params, batch):
    return functional_call(policy, params, (batch.observations,)).log_prob(batch.actions)


def test_lvc_gradient_equals_reinforce_at_the_sampling_policy():
    policy, params, batch = _problem()
    lvc, theta = _flat_fn(policy, params, surrogate_loss, batch)
    reinforce, _ = _flat_fn(policy, params, reinforce_loss, batch)
    torch.testing.assert_close(torch.func.grad(lvc)(theta), torch.func.grad(reinforce)(theta))


def test_lvc_hessian_adds_the_score_function_term():
    # ProMP Eq. 12-13: the LVC Hessian is E[A (grad^2 log pi + grad log pi grad log pi^T)],
    # REINFORCE's lacks the outer product of scores.
    policy, params, batch = _problem()
    lvc, theta = _flat_fn(policy, params, surrogate_loss, batch)
    reinforce, _ = _flat_fn(policy, params, reinforce_loss, batch)
    difference = torch.func.hessian(lvc)(theta) - torch.func.hessian(reinforce)(theta)

    def log_prob(flat, n, t):
        one = PolicyBatch(*(v[n, t] for v in batch))
        fn, _ = _flat_fn(policy, params, _log_prob, one)
        return fn(flat)

    expected = torch.zeros_like(difference)
    mask = batch.mask
    for n in range(mask.shape[0]):
        for t in range(mask.shape[1]):
            if mask[n, t]:
                score = torch.func.grad(log_prob)(theta, n, t)
                expected -= batch.advantages[n, t] * torch.outer(score, score)
    expected /= mask.sum()
    torch.testing.assert_close(difference, expected)


def test_clipped_surrogate_by_hand():
    policy, params, batch = _problem()
    with torch.no_grad():
        new_log_probs = _log_prob(policy, params, batch)
    shift = torch.tensor([0.5, -0.5, 0.1]).view(3, 1).double()  # ratios e^0.5, e^-0.5, e^0.1
    batch = batch._replace(log_probs=new_log_probs - shift)
    ratio = torch.exp(shift).expand(3, 5)
    adv, mask = batch.advantages, batch.mask
    terms = torch.minimum(ratio * adv, ratio.clamp(0.7, 1.3) * adv)
    expected = -(terms * mask).sum() / mask.sum()
    got = clipped_surrogate_loss(policy, params, batch, clip_eps=0.3)
    torch.testing.assert_close(got, expected)
    # Inside the clip range it is the plain surrogate.
    assert clipped_surrogate_loss(policy, params, batch, clip_eps=0.9).item() == pytest.approx(
        surrogate_loss(policy, params, batch).item())


def test_promp_iterations_raise_post_adaptation_return(tmp_path):
    config = load_config("configs/navigation_2d.yaml", [
        "meta.optimizer=ppo", "inner.objective=lvc", "training.iterations=8",
        "sampling.meta_batch_size=8", "sampling.support_size=10", "sampling.query_size=10",
        "policy.hidden_sizes=[32, 32]", "logging.progress=false", "logging.tensorboard=false",
        "evaluation.at_end=false", "device=cpu", "meta.lr=0.003",
    ])
    result = Trainer(config, tmp_path).train()
    assert result.status == "completed"
    rows = read_metrics(tmp_path)
    first = np.mean([r["return/post_adaptation"] for r in rows[:2]])
    last = np.mean([r["return/post_adaptation"] for r in rows[-2:]])
    assert last > first + 5.0
    assert all(r["kl/pre_update"] > 0 for r in rows)


def test_trust_region_optimizers_are_rejected_for_supervised_families():
    config = load_config("configs/sinusoid.yaml", ["meta.optimizer=trpo", "device=cpu"])
    family = load_family(config.env.id, config.env.kwargs)
    with pytest.raises(ConfigError, match=r"meta\.optimizer: 'trpo' is for RL families"):
        build_learner(config, family, "cpu")
    with pytest.raises(ConfigError, match=r"meta\.clip_eps: must be < 1"):
        load_config("configs/navigation_2d.yaml", ["meta.clip_eps=1.5"])
    with pytest.raises(ConfigError, match=r"inner\.objective: expected one of reinforce, lvc"):
        load_config("configs/navigation_2d.yaml", ["inner.objective=dice"])
