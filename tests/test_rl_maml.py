"""RL MAML: meta-gradient of the surrogate through a REINFORCE step against finite differences,
loop vs vmap, the sampler's episodes, and a short 2D-navigation run that improves."""

import numpy as np
import pytest
import torch

from maml_rl.adaptation import adapt, map_tasks, model_params, task_slice
from maml_rl.config import load_config
from maml_rl.episodes import PolicyBatch
from maml_rl.family import load_family
from maml_rl.learners.reinforcement import RLMetaLearner
from maml_rl.logger import read_metrics
from maml_rl.objectives import kl_divergence, reinforce_loss, surrogate_loss
from maml_rl.policies import GaussianMLPPolicy
from maml_rl.sampling import EpisodeSampler
from maml_rl.trainer import Trainer


def _batch(g, m=2, n=3, t=4, obs=3, act=2):
    mask = torch.ones(m, n, t, dtype=torch.float64)
    mask[:, 0, -1] = 0.0  # one episode ended early
    return PolicyBatch(
        observations=torch.randn(m, n, t, obs, generator=g, dtype=torch.float64),
        actions=torch.randn(m, n, t, act, generator=g, dtype=torch.float64),
        advantages=torch.randn(m, n, t, generator=g, dtype=torch.float64),
        log_probs=torch.randn(m, n, t, generator=g, dtype=torch.float64) - 3.0,
        mask=mask,
    )


def _rl_problem():
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(3, 2, (5,), "tanh", init_std=0.7).double()
    params = {k: v.detach().clone().requires_grad_() for k, v in model_params(policy).items()}
    g = torch.Generator().manual_seed(1)
    return policy, params, _batch(g), _batch(g)


def _meta_surrogate(policy, params, support, query, batching="loop"):
    functional = batching == "vmap"

    def task(s, q):
        adapted = adapt(policy, params, reinforce_loss, s, [0.1], functional=functional)
        return surrogate_loss(policy, adapted, q)

    return map_tasks(task, support, query, batching=batching).mean()


def test_rl_meta_gradient_matches_finite_differences():
    policy, params, support, query = _rl_problem()
    grads = torch.autograd.grad(_meta_surrogate(policy, params, support, query),
                                list(params.values()))
    eps = 1e-6
    for (name, p), g in zip(params.items(), grads, strict=True):
        idx = (0,) * p.dim()

        def shifted(delta, name=name, idx=idx):
            q = {k: v.detach().clone() for k, v in params.items()}
            q[name][idx] += delta
            return _meta_surrogate(policy, q, support, query).item()

        fd = (shifted(eps) - shifted(-eps)) / (2 * eps)
        assert g[idx].item() == pytest.approx(fd, rel=1e-5, abs=1e-9), name


def test_rl_meta_gradient_vmap_equals_loop():
    policy, params, support, query = _rl_problem()
    out = {}
    for batching in ("loop", "vmap"):
        loss = _meta_surrogate(policy, params, support, query, batching)
        out[batching] = (loss, torch.autograd.grad(loss, list(params.values())))
    torch.testing.assert_close(out["loop"][0], out["vmap"][0])
    for a, b in zip(out["loop"][1], out["vmap"][1], strict=True):
        torch.testing.assert_close(a, b)


def test_kl_is_zero_at_the_old_policy_and_positive_elsewhere():
    policy, params, _, query = _rl_problem()
    q = task_slice(query, 0)
    assert kl_divergence(policy, params, params, q).item() == pytest.approx(0.0, abs=1e-12)
    moved = {k: v + 0.1 for k, v in params.items()}
    assert kl_divergence(policy, params, moved, q).item() > 1e-4


def test_reinforce_loss_ignores_padded_steps():
    policy, params, support, _ = _rl_problem()
    s = task_slice(support, 0)
    junk = s._replace(advantages=s.advantages.clone())
    junk.advantages[0, -1] = 1e6  # a padded step (mask 0)
    torch.testing.assert_close(reinforce_loss(policy, params, s),
                               reinforce_loss(policy, params, junk))


def test_sampler_gives_padded_episodes_per_task():
    family = load_family("maml/Navigation2D-v0", {})
    tasks = family.sample_tasks(3, np.random.default_rng(0))
    sampler = EpisodeSampler(family.env_id, {}, 3, 4, horizon=10, seed=0)
    policy = GaussianMLPPolicy(2, 2, (8,))
    params = model_params(policy)
    eps = sampler.sample(tasks, policy, params, per_task=False)
    assert eps.observations.shape == (3, 4, 10, 2) and eps.actions.shape == (3, 4, 10, 2)
    assert eps.mask.sum() == 3 * 4 * 10
    # Navigation starts at the origin and the reward is minus the distance to the task's goal.
    np.testing.assert_allclose(eps.observations[:, :, 0].numpy(), 0.0)
    for i, task in enumerate(tasks):
        goal = np.array([task.x, task.y])
        nxt = eps.observations[i, :, 1].numpy()
        np.testing.assert_allclose(-np.linalg.norm(nxt - goal, axis=-1),
                                   eps.rewards[i, :, 0].numpy(), rtol=1e-4, atol=1e-5)
    # Per-task parameters: a stacked copy gives the same action distribution as shared ones.
    stacked = {k: v.detach().expand(3, *v.shape).clone() for k, v in params.items()}
    torch.manual_seed(5)
    a = sampler.sample(tasks, policy, params, per_task=False)
    torch.manual_seed(5)
    sampler.env.reset(seed=0)
    b = sampler.sample(tasks, policy, stacked, per_task=True)
    assert a.actions.shape == b.actions.shape


@pytest.mark.parametrize("algorithm", ["maml", "anil"])
def test_few_iterations_of_navigation_raise_post_adaptation_return(tmp_path, algorithm):
    config = load_config("configs/navigation_2d.yaml", [
        f"algorithm={algorithm}", "training.iterations=8", "sampling.meta_batch_size=8",
        "sampling.support_size=10", "sampling.query_size=10", "policy.hidden_sizes=[32, 32]",
        "logging.progress=false", "logging.tensorboard=false", "evaluation.at_end=false",
        "device=cpu", "training.checkpoint_every=4",
    ])
    result = Trainer(config, tmp_path).train()
    assert result.status == "completed"
    rows = read_metrics(tmp_path)
    first = np.mean([r["return/post_adaptation"] for r in rows[:2]])
    last = np.mean([r["return/post_adaptation"] for r in rows[-2:]])
    assert last > first + 5.0
    assert all(r["kl"] <= config.meta.max_kl * 1.0001 for r in rows)
    assert {"surrogate/before", "surrogate/after", "trpo/ls_steps", "time/sampling_s",
            "time/adaptation_s", "time/meta_step_s", "perf/env_steps_per_s"} <= set(rows[0])


def test_rl_evaluation_curve(tmp_path):
    config = load_config("configs/navigation_2d.yaml", [
        "sampling.meta_batch_size=2", "sampling.support_size=3", "sampling.query_size=3",
        "policy.hidden_sizes=[8]", "device=cpu",
    ])
    learner = RLMetaLearner(config, load_family(config.env.id, {}), "cpu")
    a = learner.evaluate(num_tasks=4, steps=2, seed=3, episodes=3)
    b = learner.evaluate(num_tasks=4, steps=2, seed=3, episodes=3)
    assert a.per_task.shape == (4, 3) and a.steps == [0, 1, 2]
    np.testing.assert_array_equal(a.per_task, b.per_task)
    assert (a.per_task < 0).all()


@pytest.mark.parametrize("batching", ["loop", "vmap"])
def test_anil_adapts_only_the_policy_head_and_meta_learns_the_body(batching):
    # ANIL on an RL family (Raghu et al. 2020): the inner loop moves only the last layer; the
    # TRPO meta-update moves the body too, through the head's adaptation.
    config = load_config("configs/navigation_2d.yaml", [
        "algorithm=anil", "sampling.meta_batch_size=3", "sampling.support_size=4",
        "sampling.query_size=4", "policy.hidden_sizes=[8, 8]", "device=cpu",
        f"meta.task_batching={batching}", "logging.progress=false",
    ])
    learner = RLMetaLearner(config, load_family(config.env.id, {}), "cpu")
    assert learner.algorithm.trainable == ["mean.4.weight", "mean.4.bias"]
    theta = {k: v.detach().clone() for k, v in model_params(learner.model).items()}
    tasks = learner.family.sample_tasks(3, np.random.default_rng(0))
    _, adapted = learner.inner_loop(learner.support_sampler, tasks, [0.5])
    # The evaluation protocol adapts the same way (it passes the model in explicitly).
    evaluated = learner.adaptation_rollouts(tasks, 1, 7, lambda k, episodes: None)
    for name, value in theta.items():
        for params in (adapted, evaluated):
            moved = not torch.equal(params[name], value.expand_as(params[name]))
            assert moved == (name in learner.algorithm.trainable), name
    metrics = learner.meta_iteration(tasks)
    after = model_params(learner.model)
    assert metrics["trpo/accepted"] == 1.0
    assert not torch.equal(after["mean.0.weight"], theta["mean.0.weight"])
    assert not torch.equal(after["log_std"], theta["log_std"])
    learner.close()


def test_metasgd_adapts_with_its_learned_rates_and_meta_learns_them():
    # Meta-SGD on an RL family (Li et al. 2017): theta' = theta - alpha o grad, alpha learned.
    from maml_rl.objectives import INNER_RL_OBJECTIVES

    config = load_config("configs/navigation_2d.yaml", [
        "algorithm=metasgd", "meta.curvature=hessian", "sampling.meta_batch_size=2",
        "sampling.support_size=4", "sampling.query_size=4", "policy.hidden_sizes=[8]",
        "device=cpu", "logging.progress=false", "inner.lr=0.3",
    ])
    learner = RLMetaLearner(config, load_family(config.env.id, {}), "cpu")
    assert all(torch.all(r == 0.3) for r in learner.algorithm.rates.values())
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # distinct rates per entry, so a scalar step could not pass
        for r in learner.algorithm.rates.values():
            r.copy_(torch.rand(r.shape, generator=g, dtype=r.dtype) * 0.5)
    theta = {k: v.detach().clone() for k, v in model_params(learner.model).items()}
    tasks = learner.family.sample_tasks(2, np.random.default_rng(0))
    supports, adapted = learner.inner_loop(learner.support_sampler, tasks, [0.3])
    loss = INNER_RL_OBJECTIVES[config.inner.objective]
    for i in range(2):
        leaves = {k: v.clone().requires_grad_() for k, v in theta.items()}
        grads = torch.autograd.grad(loss(learner.model, leaves,
                                         task_slice(supports[0], i)),
                                    list(leaves.values()))
        for (name, value), grad in zip(theta.items(), grads, strict=True):
            torch.testing.assert_close(adapted[name][i],
                                       value - learner.algorithm.rates[name].detach() * grad)
    # Evaluation adapts with the learned rates too: zero rates leave a parameter unmoved.
    with torch.no_grad():
        learner.algorithm.rates["mean.0.weight"].zero_()
    evaluated = learner.adaptation_rollouts(tasks, 1, 7, lambda k, episodes: None)
    assert torch.equal(evaluated["mean.0.weight"],
                       theta["mean.0.weight"].expand_as(evaluated["mean.0.weight"]))
    assert not torch.equal(evaluated["mean.0.bias"],
                           theta["mean.0.bias"].expand_as(evaluated["mean.0.bias"]))
    rates = {k: v.detach().clone() for k, v in learner.algorithm.rates.items()}
    metrics = learner.meta_iteration(tasks)
    assert metrics["trpo/accepted"] == 1.0
    assert any(not torch.equal(learner.algorithm.rates[k], rates[k]) for k in rates)
    state = learner.state_dict()
    fresh = RLMetaLearner(config, load_family(config.env.id, {}), "cpu")
    fresh.load_state_dict(state)
    for k in rates:
        torch.testing.assert_close(fresh.algorithm.rates[k], learner.algorithm.rates[k].detach())
    learner.close()
    fresh.close()


def test_metasgd_with_fisher_curvature_is_rejected_in_one_line():
    from maml_rl.config import ConfigError
    from maml_rl.trainer import build_learner

    with pytest.raises(ConfigError, match=r"meta\.curvature: 'fisher' is not implemented for "
                                          r"algorithm 'metasgd'.*allowed with metasgd: hessian"):
        build_learner(load_config("configs/navigation_2d.yaml", ["algorithm=metasgd",
                                                                "inner.lr=0.1"]),
                      load_family("maml/Navigation2D-v0", {}), "cpu")


def test_policy_weight_init_xavier_is_glorot_uniform_with_zero_biases():
    # The paper code's create_MLP: Glorot-uniform weights, zero biases; torch's default draws
    # non-zero biases (2D navigation starts at the origin, where only the biases act).
    import gymnasium as gym

    from maml_rl.policies import build_model

    obs, act = gym.spaces.Box(-1, 1, (2,)), gym.spaces.Box(-1, 1, (2,))
    torch.manual_seed(0)
    config = load_config(None, ["policy.weight_init=xavier"])
    xavier = build_model(config.policy, obs, act, supervised=False)
    linears = [m for m in xavier.mean if isinstance(m, torch.nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(100, 2), (100, 100), (2, 100)]
    for m in linears:
        fan_out, fan_in = m.weight.shape
        bound = (6.0 / (fan_in + fan_out)) ** 0.5
        assert torch.all(m.bias == 0)
        assert m.weight.abs().max() <= bound
        assert m.weight.abs().max() > 0.9 * bound  # uniform over the whole range
    default = build_model(load_config(None, []).policy, obs, act, supervised=False)
    assert default.mean[0].bias.abs().max() > 0  # torch's default is unchanged
    discrete = build_model(config.policy, obs, gym.spaces.Discrete(3), supervised=False)
    assert all(torch.all(m.bias == 0) for m in discrete.logits
               if isinstance(m, torch.nn.Linear))
    with pytest.raises(ValueError, match=r"policy\.weight_init: xavier is for RL policies"):
        build_model(config.policy, obs, act, supervised=True)
