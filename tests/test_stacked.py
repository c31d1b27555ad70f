"""``meta.task_batching: stacked`` (parameters stacked per task, one batched matmul per layer)
against the per-task loop, the reference: the same adapted parameters, meta-gradients, Fisher
products, line-search values and TRPO / ProMP updates, for Gaussian and categorical policies,
1 and 2 inner steps, first and second order, and the algorithms that change the inner step."""

import copy

import numpy as np
import pytest
import torch

from maml_rl.adaptation import adapt_tasks, model_params
from maml_rl.algorithms import build_algorithm
from maml_rl.config import load_config
from maml_rl.episodes import PolicyBatch
from maml_rl.family import load_family
from maml_rl.learners.reinforcement import RLMetaLearner
from maml_rl.learners.rl_objective import RLMetaBatch
from maml_rl.meta_updates import build_meta_update
from maml_rl.objectives import reinforce_loss
from maml_rl.policies import CategoricalMLPPolicy, GaussianMLPPolicy

TASKS = 3


def _batch(g, discrete):
    mask = torch.ones(TASKS, 4, 5, dtype=torch.float64)
    mask[0, 1, 3:] = 0.0  # episodes that ended early
    mask[2, 0, 1:] = 0.0
    actions = (torch.randint(0, 4, (TASKS, 4, 5), generator=g) if discrete
               else torch.randn(TASKS, 4, 5, 2, generator=g, dtype=torch.float64))
    return PolicyBatch(
        observations=torch.randn(TASKS, 4, 5, 3, generator=g, dtype=torch.float64),
        actions=actions, mask=mask,
        log_probs=torch.randn(TASKS, 4, 5, generator=g, dtype=torch.float64) - 1.5,
        advantages=torch.randn(TASKS, 4, 5, generator=g, dtype=torch.float64))


def _problem(batching, discrete, steps, first_order, overrides=()):
    """A model, its algorithm and a meta-batch of TASKS tasks, the same for every batching."""
    config = load_config("configs/navigation_2d.yaml", [
        f"inner.steps={steps}", f"inner.first_order={str(first_order).lower()}",
        "inner.lr=[0.3,0.2]", f"meta.task_batching={batching}", *overrides])
    torch.manual_seed(0)
    model = (CategoricalMLPPolicy(3, 4, (6, 5), "tanh") if discrete
             else GaussianMLPPolicy(3, 2, (6, 5), "tanh", init_std=0.7)).double()
    algorithm = build_algorithm(config, model, reinforce_loss, batching)
    g = torch.Generator().manual_seed(1)
    supports = [_batch(g, discrete) for _ in range(steps)]
    query = _batch(g, discrete)
    with torch.no_grad():  # the sampling policies, as the learner forms them
        old = adapt_tasks(model, model_params(model), reinforce_loss, supports,
                          config.inner_step_sizes(), first_order=True, batching="loop",
                          trainable=algorithm.trainable)
    return config, model, algorithm, RLMetaBatch(algorithm, supports, query, old, batching)


CASES = [(False, 1, False), (False, 2, False), (False, 1, True), (True, 1, False),
         (True, 2, False), (True, 2, True)]


@pytest.mark.parametrize(("discrete", "steps", "first_order"), CASES)
def test_stacked_equals_the_loop(discrete, steps, first_order):
    results = {}
    for batching in ("loop", "stacked"):
        config, model, algorithm, batch = _problem(batching, discrete, steps, first_order)
        theta = model_params(model)
        adapted = adapt_tasks(model, theta, reinforce_loss, batch.supports,
                              config.inner_step_sizes(), first_order, batching)
        grad, loss, kl = batch.surrogate_gradient()
        n = grad.numel()
        v = torch.randn(n, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
        products = [batch.fisher_product(k)(v) for k in (TASKS, 2)]
        values = batch.losses(values_only=True)
        hessian = batch.kl_hessian_product(TASKS)(v)
        update = build_meta_update(config, algorithm.meta_parameters())
        metrics = update.step(batch)
        results[batching] = dict(
            adapted=adapted, grad=grad, loss=loss, kl=kl, products=products, values=values,
            hessian=hessian, metrics=metrics,
            after={k: p.detach().clone() for k, p in model_params(model).items()})
    loop, stacked = results["loop"], results["stacked"]
    for key in ("adapted", "grad", "loss", "kl", "products", "values", "hessian", "after"):
        torch.testing.assert_close(stacked[key], loop[key], rtol=1e-9, atol=1e-12, msg=key)
    assert loop["metrics"]["trpo/accepted"] == 1.0
    assert stacked["metrics"] == pytest.approx(loop["metrics"], rel=1e-9, abs=1e-12)
    # The update moved the policy: the comparison is not between two untouched models.
    before = model_params(_problem("loop", discrete, steps, first_order)[1])
    assert not torch.equal(loop["after"]["log_std" if not discrete else "logits.0.weight"],
                           before["log_std" if not discrete else "logits.0.weight"])


@pytest.mark.parametrize("overrides", [
    ("algorithm=anil",),
    ("algorithm=metasgd", "inner.lr=0.3", "meta.curvature=hessian"),
    ("meta.optimizer=ppo", "inner.objective=lvc"),
])
def test_stacked_equals_the_loop_for_anil_metasgd_and_promp(overrides):
    after = {}
    for batching in ("loop", "stacked"):
        config, _, algorithm, batch = _problem(batching, False, 1, False, overrides)
        update = build_meta_update(config, algorithm.meta_parameters())
        metrics = update.step(batch)
        after[batching] = ([p.detach().clone() for p in algorithm.meta_parameters()], metrics)
    torch.testing.assert_close(after["stacked"][0], after["loop"][0], rtol=1e-9, atol=1e-12)
    assert after["stacked"][1] == pytest.approx(after["loop"][1], rel=1e-9, abs=1e-12)


def test_stacked_training_iterations_match_the_loop():
    # The learner end to end in float32 (sampling with the adapted policies included).
    metrics, params = {}, {}
    for batching in ("loop", "stacked"):
        config = load_config("configs/navigation_2d.yaml", [
            f"meta.task_batching={batching}", "sampling.meta_batch_size=4",
            "sampling.support_size=3", "sampling.query_size=3", "policy.hidden_sizes=[16,16]",
            "device=cpu"])
        family = load_family(config.env.id, {})
        torch.manual_seed(0)
        learner = RLMetaLearner(config, family, "cpu")
        rng = np.random.default_rng(0)
        metrics[batching] = [
            {k: v for k, v in learner.meta_iteration(family.sample_tasks(4, rng), i).items()
             if not k.startswith(("time/", "perf/"))}
            for i in range(2)]
        params[batching] = copy.deepcopy(learner.model.state_dict())
        learner.close()
    for a, b in zip(metrics["loop"], metrics["stacked"], strict=True):
        assert b == pytest.approx(a, rel=1e-5, abs=1e-7)
    torch.testing.assert_close(params["stacked"], params["loop"], rtol=1e-5, atol=1e-6)


def test_stacked_is_refused_for_supervised_families():
    from maml_rl.config import ConfigError
    from maml_rl.learners.supervised import SupervisedMetaLearner

    config = load_config("configs/sinusoid.yaml", ["meta.task_batching=stacked", "device=cpu"])
    family = load_family(config.env.id, config.env.kwargs)
    with pytest.raises(ConfigError, match="task_batching: 'stacked' is for RL"):
        SupervisedMetaLearner(config, family, "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("discrete", [False, True])
def test_cuda_graph_replayed_fisher_products_equal_the_eager_ones(discrete):
    _, model, algorithm, batch = _problem("stacked", discrete, 2, False)
    model.cuda()
    batch = RLMetaBatch(algorithm, [b._replace(**{k: v.cuda() for k, v in b._asdict().items()})
                                    for b in batch.supports],
                        batch.query._replace(**{k: v.cuda() for k, v in
                                                batch.query._asdict().items()}),
                        {k: v.cuda() for k, v in batch.old_params.items()}, "stacked")
    replayed, eager = batch.fisher_product(TASKS), batch._fisher_product(TASKS)
    # Other captures and allocations in between reuse whatever memory the first let go of:
    # a replay reading freed tensors then fails or returns garbage.
    for _ in range(3):
        batch.fisher_product(TASKS)
    filler = [torch.randn(1 << 20, device="cuda") for _ in range(8)]
    generator = torch.Generator(device="cuda").manual_seed(3)
    for _ in range(3):  # every call replays the one captured graph on its own input
        v = torch.randn(sum(p.numel() for p in batch.meta_parameters), dtype=torch.float64,
                        device="cuda", generator=generator)
        torch.testing.assert_close(replayed(v), eager(v), rtol=1e-12, atol=1e-14)
    del filler
