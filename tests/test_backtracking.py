"""The evaluation's backtracking safeguard (``evaluation.max_backtracks``): on a support loss
too curved for alpha, plain steps diverge and safeguarded ones never raise it; a step that
already lowers it is left bit for bit; vmap equals a loop; configs that cannot use it are
refused in one line."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import vmap

from maml_rl.adaptation import backtracking, gradient_step, model_params, task_slice
from maml_rl.checkpoint import restore
from maml_rl.config import ConfigError, load_config
from maml_rl.episodes import ShotBatch
from maml_rl.family import load_family
from maml_rl.objectives import mse_loss
from maml_rl.sampling import SupervisedSampler
from maml_rl.trainer import build_learner

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["logging.progress=false", "logging.tensorboard=false", "device=cpu"]


def _line(scale: float, tasks: int = 3):
    """y = w x on inputs of size ``scale``: the support loss's curvature is 2 mean(x^2)."""
    torch.manual_seed(0)
    model = nn.Linear(1, 1, bias=False).double()
    g = torch.Generator().manual_seed(1)
    x = scale * (1 + torch.rand(tasks, 5, 1, generator=g, dtype=torch.float64))
    batch = ShotBatch(inputs=x, targets=3.0 * x)
    theta = {k: v.detach() for k, v in model_params(model).items()}
    return model, theta, batch


def _losses(model, step, theta, batch, alpha, steps, functional=False):
    phi, losses = theta, [mse_loss(model, theta, batch)]
    for _ in range(steps):
        phi = step(theta, phi, batch, alpha, functional)
        losses.append(mse_loss(model, phi, batch))
    return torch.stack(losses)


def test_backtracking_keeps_a_too_curved_support_loss_from_rising():
    model, theta, batch = _line(scale=3.0, tasks=1)
    one = task_slice(batch, 0)
    curvature = 2 * one.inputs.pow(2).mean().item()
    alpha = 3.0 / curvature  # alpha * curvature = 3 > 2: gradient descent diverges
    plain = gradient_step(model, mse_loss)
    diverging = _losses(model, plain, theta, one, alpha, 6)
    assert (diverging[1:] > diverging[:-1]).all()
    safe = _losses(model, backtracking(plain, model, mse_loss, 6), theta, one, alpha, 6)
    assert (safe[1:] <= safe[:-1]).all()
    assert safe[-1] < 1e-3 * safe[0]


def test_backtracking_leaves_a_descending_step_exactly_as_it_was():
    model, theta, batch = _line(scale=0.5, tasks=1)
    one = task_slice(batch, 0)
    plain = gradient_step(model, mse_loss)
    safe = backtracking(plain, model, mse_loss, 4)
    for alpha in (0.01, 0.1):
        expected = plain(theta, theta, one, alpha, False)
        got = safe(theta, theta, one, alpha, False)
        assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_backtracking_under_vmap_equals_a_loop_over_tasks():
    model, theta, batch = _line(scale=2.0, tasks=4)
    safe = backtracking(gradient_step(model, mse_loss), model, mse_loss, 5)
    alpha = 0.1

    def adapt(task):
        phi = theta
        for _ in range(3):
            phi = safe(theta, phi, task, alpha, True)
        return phi

    with torch.no_grad():
        batched = vmap(adapt, randomness="different")(batch)
    for i in range(4):
        phi = theta
        for _ in range(3):
            phi = safe(theta, phi, task_slice(batch, i), alpha, False)
        for k in phi:
            torch.testing.assert_close(batched[k][i], phi[k], rtol=1e-12, atol=1e-12)


def test_shipped_sinusoid_support_losses_never_rise_with_backtracking():
    config = load_config(ROOT / "pretrained" / "sinusoid" / "config.yaml",
                         [*QUIET, "evaluation.max_backtracks=6"])
    learner = build_learner(config, load_family(config.env.id, config.env.kwargs), "cpu")
    restore(learner, ROOT / "pretrained" / "sinusoid" / "checkpoint.pt", config)
    family = learner.eval_family
    tasks = family.sample_tasks(300, np.random.default_rng(7))
    sampler = SupervisedSampler(family.env_id, family.env_kwargs, len(tasks), 5, 7, "cpu")
    support = sampler.sample(list(tasks))
    sampler.close()
    theta = {k: v.detach() for k, v in model_params(learner.model).items()}
    plain, safe = learner.algorithm.inner_step, learner.evaluation_step()

    def curve(step):
        def one(task):
            return _losses(learner.model, step, theta, task, 0.01, 10, functional=True)
        with torch.no_grad():
            return vmap(one, randomness="different")(support)

    rises = lambda c: (c[:, 1:] > c[:, :-1]).any(dim=1)  # noqa: E731
    assert rises(curve(plain)).sum() > 0  # repeated plain steps of 0.01 raise some tasks' loss
    assert not rises(curve(safe)).any()


@pytest.mark.parametrize("config_path, message", [
    ("configs/navigation_2d.yaml", "evaluation.max_backtracks: 3 applies to supervised "
                                   "families and 'maml/Navigation2D-v0' is an RL family"),
    ("configs/sine_line_platipus.yaml", "evaluation.max_backtracks: 3 is not implemented for "
                                        "algorithm 'platipus'"),
])
def test_backtracking_is_refused_where_it_has_no_meaning(config_path, message):
    config = load_config(ROOT / config_path, [*QUIET, "evaluation.max_backtracks=3"])
    with pytest.raises(ConfigError, match=message):
        build_learner(config, load_family(config.env.id, config.env.kwargs), "cpu")
