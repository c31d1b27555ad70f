"""Probabilistic MAML (PLATIPUS) and its ambiguous sine-or-line family: the variational
objective's pieces against hand computation, the meta-gradient against finite differences,
layout-independent draws, adaptation by sampling, and the family's env contract."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from envs.sine_line import LINE, SINE, SineLineEnv, SineLineTask, SineLineVectorEnv
from maml_rl.adaptation import inner_gradient, model_params
from maml_rl.algorithms import build_algorithm
from maml_rl.algorithms.platipus import gaussian_kl
from maml_rl.config import ConfigError, load_config
from maml_rl.episodes import ShotBatch
from maml_rl.family import load_family
from maml_rl.objectives import mse_loss
from maml_rl.policies import RegressionMLP
from maml_rl.seeding import episode_keys
from maml_rl.trainer import build_learner

BATCHINGS = ["vmap", "loop"]


def _problem(num_tasks=3, seed=0):
    torch.manual_seed(seed)
    model = RegressionMLP(1, 1, (6, 5), "tanh").double()
    g = torch.Generator().manual_seed(seed)

    def data(n):
        return ShotBatch(torch.randn(num_tasks, n, 1, generator=g, dtype=torch.float64),
                         torch.randn(num_tasks, n, 1, generator=g, dtype=torch.float64))

    return model, data(5), data(7)


def _platipus(model, *overrides, batching="loop"):
    config = load_config(None, ["algorithm=platipus", "device=cpu", "inner.lr=0.3",
                                "platipus.init_std=0.2", "platipus.kl_weight=0.05", *overrides])
    algorithm = build_algorithm(config, model, mse_loss, batching)
    with torch.no_grad():  # distinct values per tensor, so that a mix-up would show
        for i, p in enumerate(algorithm.extra_parameters().values()):
            p.add_(0.01 * (i + 1))
    return algorithm


def _task(batch, i):
    return ShotBatch(*(v[i] for v in batch))


def test_gaussian_kl_is_torch_distributions_kl_summed():
    g = torch.Generator().manual_seed(1)
    mq, mp = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    sq, sp = torch.rand(4, 3, generator=g) + 0.1, torch.rand(4, 3, generator=g) + 0.1
    expected = torch.distributions.kl_divergence(torch.distributions.Normal(mq, sq),
                                                 torch.distributions.Normal(mp, sp)).sum()
    torch.testing.assert_close(gaussian_kl(mq, sq, mp, sp), expected)
    assert gaussian_kl(mq, sq, mq, sq).abs() < 1e-6  # zero between equal Gaussians


@pytest.mark.parametrize("batching", BATCHINGS)
def test_variational_terms_match_a_hand_computation(batching):
    model, support, query = _problem()
    algorithm = _platipus(model, batching=batching)
    keys = episode_keys(0, 0, 4, 0, range(3))
    losses, kls = algorithm.variational_terms(support, query, keys)
    theta = {k: v.detach() for k, v in model_params(model).items()}
    noise = algorithm._noise(theta, 3, keys)
    a = algorithm

    def grad(params, batch):
        return inner_gradient(model, params, mse_loss, batch)

    for i in range(3):
        s, q = _task(support, i), _task(query, i)
        g_q, g_s = grad(theta, q), grad(theta, s)
        mean_q = {k: theta[k] - a.gamma_q[k].detach() * g_q[k] for k in theta}
        mean_p = {k: theta[k] - a.gamma_p[k].detach() * g_s[k] for k in theta}
        v_q = {k: a.log_v_q[k].detach().exp() for k in theta}
        sigma = {k: a.log_sigma[k].detach().exp() for k in theta}
        sample = {k: mean_q[k] + v_q[k] * noise[k][i] for k in theta}
        g = grad(sample, s)
        phi = {k: sample[k] - 0.3 * g[k] for k in theta}
        torch.testing.assert_close(losses[i].detach(), mse_loss(model, phi, q))
        kl = sum(float(torch.log(sigma[k] / v_q[k]).sum()
                       + ((v_q[k] ** 2 + (mean_q[k] - mean_p[k]) ** 2) / (2 * sigma[k] ** 2)
                          ).sum() - 0.5 * theta[k].numel()) for k in theta)
        assert float(kls[i].detach()) == pytest.approx(kl, rel=1e-10)


def test_meta_gradient_matches_finite_differences_for_every_meta_parameter():
    model, support, query = _problem(num_tasks=2)
    algorithm = _platipus(model, batching="vmap")
    keys = episode_keys(0, 0, 1, 0, range(2))
    params = algorithm.meta_parameters()
    grads, _ = algorithm.meta_gradient(support, query, keys)

    def objective():
        losses, kls = algorithm.variational_terms(support, query, keys)
        return float((losses + algorithm.kl_weight * kls).mean().detach())

    rng = np.random.default_rng(0)
    checked = 0
    for p, g in zip(params, grads, strict=True):
        flat, gflat = p.data.view(-1), g.reshape(-1)
        for j in rng.choice(flat.numel(), size=min(2, flat.numel()), replace=False):
            eps, old = 1e-6, flat[j].item()
            flat[j] = old + eps
            up = objective()
            flat[j] = old - eps
            down = objective()
            flat[j] = old
            assert (up - down) / (2 * eps) == pytest.approx(gflat[j].item(), rel=1e-5,
                                                            abs=1e-8)
            checked += 1
    # mu (6 tensors), log sigma, log v_q (6 each), gamma_p, gamma_q (6 each)
    # two entries of each tensor (one of the 1-entry output bias) of mu, log sigma and log v_q,
    # and each of the 12 scalar step sizes gamma_p, gamma_q
    assert len(params) == 5 * 6 and checked == 3 * 11 + 2 * 6


def test_draws_depend_on_the_task_key_not_on_the_process_layout():
    model, support, query = _problem(num_tasks=3)
    algorithm = _platipus(model)
    keys = episode_keys(7, 0, 2, 0, range(3))
    whole_losses, whole_kls = algorithm.variational_terms(support, query, keys)
    parts = [algorithm.variational_terms(ShotBatch(*(v[sl] for v in support)),
                                         ShotBatch(*(v[sl] for v in query)), keys[sl])
             for sl in (slice(0, 1), slice(1, 3))]
    torch.testing.assert_close(torch.cat([p[0] for p in parts]), whole_losses, rtol=0, atol=0)
    torch.testing.assert_close(torch.cat([p[1] for p in parts]), whole_kls, rtol=0, atol=0)
    other, _ = algorithm.variational_terms(support, query, episode_keys(7, 0, 3, 0, range(3)))
    assert not torch.equal(other, whole_losses)  # another iteration, other draws


@pytest.mark.parametrize("batching", BATCHINGS)
def test_adaptation_samples_the_prior_posterior_then_takes_gradient_steps(batching):
    model, support, _ = _problem(num_tasks=1)
    algorithm = _platipus(model, batching=batching)
    theta = {k: v.detach() for k, v in model_params(model).items()}
    s = _task(support, 0)
    functional = batching == "vmap"
    with torch.no_grad():
        first = algorithm.adapt(theta, s, functional=functional)
        second = algorithm.adapt(theta, s, functional=functional)
    assert any(not torch.equal(first[k], second[k]) for k in theta)  # two plausible models
    # With gamma_p = 0 and a vanishing prior std, the draw is mu: MAML's adaptation exactly.
    with torch.no_grad():
        for k in theta:
            algorithm.gamma_p[k].zero_()
            algorithm.log_sigma[k].fill_(-80.0)
        sampled = algorithm.adapt(theta, s, functional=functional)
    g = inner_gradient(model, theta, mse_loss, s)
    for k in theta:
        torch.testing.assert_close(sampled[k], theta[k] - 0.3 * g[k])


def test_config_rules():
    family = load_family("maml/Navigation2D-v0", {})
    with pytest.raises(ConfigError, match="algorithm: 'platipus' is not implemented for RL"):
        build_learner(load_config(None, ["algorithm=platipus"]), family, "cpu")
    with pytest.raises(ConfigError, match=r"inner\.first_order: algorithm 'platipus'"):
        build_learner(load_config("configs/sine_line_platipus.yaml",
                                  ["inner.first_order=true"]),
                      load_family("maml/SineLine-v0", {}), "cpu")
    with pytest.raises(ConfigError, match=r"platipus\.kl_weight: must be >= 0"):
        load_config(None, ["platipus.kl_weight=-1"])


# --- the sine-or-line family -------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_sine_line_check_env_over_both_kinds():
    env = gym.make("maml/SineLine-v0")
    tasks = env.unwrapped.sample_tasks(6, np.random.default_rng(0))
    assert {t.kind for t in tasks} == {SINE, LINE}
    for task in tasks:
        env.unwrapped.set_task(task)
        check_env(env.unwrapped, skip_render_check=True)


def test_sine_line_targets_are_the_function_plus_noise_of_the_set_std():
    env = SineLineEnv(noise_std=0.3, shot_x_range=(-1.0, 1.0))
    env.set_task(SineLineTask(LINE, slope=2.0, intercept=-1.0))
    residuals, xs = [], []
    env.reset(seed=0)
    for _ in range(4000):
        x, _ = env.reset()
        _, reward, _, _, info = env.step(np.zeros(1, dtype=np.float32))
        assert reward == pytest.approx(-float(info["target"][0]) ** 2, rel=1e-5)
        residuals.append(info["target"][0] - (2.0 * x[0] - 1.0))
        xs.append(x[0])
    assert abs(np.std(residuals) - 0.3) < 0.02 and abs(np.mean(residuals)) < 0.02
    assert -1.0 <= min(xs) and max(xs) <= 1.0  # shots from shot_x_range
    np.testing.assert_allclose(env.target(np.array([3.0])), [5.0])  # domain beyond the shots
    tasks = env.sample_tasks(4000, np.random.default_rng(1))
    assert abs(np.mean([t.kind == SINE for t in tasks]) - 0.5) < 0.03


def test_sine_line_batched_env_matches_single_env():
    rng = np.random.default_rng(2)
    tasks = SineLineEnv().sample_tasks(6, rng)
    vec = gym.make_vec("maml/SineLine-v0", num_envs=6, vectorization_mode="vector_entry_point")
    assert isinstance(vec, SineLineVectorEnv)
    vec.set_tasks(tasks)
    obs, _ = vec.reset(seed=100)
    singles = []
    for i, task in enumerate(tasks):
        single = SineLineEnv()
        single.set_task(task)
        singles.append((single, single.reset(seed=100 + i)[0]))
    for episode in range(3):
        if episode:
            obs, _ = vec.reset()
            singles = [(env, env.reset()[0]) for env, _ in singles]
        _, _, _, _, info = vec.step(np.zeros((6, 1), dtype=np.float32))
        for i, (single, x) in enumerate(singles):
            _, _, _, _, single_info = single.step(np.zeros(1, dtype=np.float32))
            np.testing.assert_allclose(obs[i], x)
            np.testing.assert_allclose(info["target"][i], single_info["target"], rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"sine_probability": 1.5}, "sine_probability must be in"),
     ({"noise_std": -0.1}, "noise_std must be >= 0"),
     ({"shot_x_range": (-6.0, 1.0)}, "must lie inside x_range")],
)
def test_sine_line_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SineLineEnv(**kwargs)
    with pytest.raises(ValueError, match="task kind must be"):
        SineLineEnv().set_task(SineLineTask("circle"))


# --- training and the comparison figure --------------------------------------------------------

TINY = ["training.iterations=3", "evaluation.at_end=false", "logging.progress=false",
        "logging.tensorboard=false", "device=cpu", "sampling.meta_batch_size=4", "threads=1"]


def test_fits_figure_compares_platipus_samples_with_maml_and_rejects_other_runs(
        tmp_path, capsys):
    from maml_rl.cli import plot_main
    from maml_rl.trainer import Trainer

    for name in ("sine_line_platipus", "sine_line"):
        Trainer(load_config(f"configs/{name}.yaml", TINY), tmp_path / name).train()
    metrics = (tmp_path / "sine_line_platipus" / "metrics.csv").read_text()
    assert "platipus/kl" in metrics.splitlines()[0]
    out = tmp_path / "fits.png"
    argv = [str(tmp_path / "sine_line_platipus"), str(tmp_path / "sine_line"), "--fits",
            "--tasks", "2", "--out", str(out)]
    assert plot_main(argv) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = out.read_bytes()
    assert plot_main(argv) == 2 and out.read_bytes() == before  # never replaced unasked
    assert "exists; pass --overwrite" in capsys.readouterr().err
    # Ambiguous shots: fewer of them, from a narrow range, for every run.
    narrow = [*argv[:2], "evaluation.support_size=2",
              "evaluation.env_kwargs={shot_x_range: [-1, 1]}", *argv[2:-1],
              str(tmp_path / "narrow.png")]
    assert plot_main(narrow) == 0 and (tmp_path / "narrow.png").is_file()
    assert plot_main([*narrow[:2], "inner.lr=0.5", "--fits", "--out",
                      str(tmp_path / "x.png")]) == 2
    assert "only evaluation.* keys" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
    Trainer(load_config("configs/sinusoid.yaml", TINY), tmp_path / "sinusoid").train()
    assert plot_main([str(tmp_path / "sine_line"), str(tmp_path / "sinusoid"), "--fits",
                      "--out", str(tmp_path / "mixed.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "must share one family" in err
    assert not (tmp_path / "mixed.png").exists()


def test_evaluation_of_a_sampling_algorithm_is_reproducible(tmp_path):
    from maml_rl.trainer import Trainer

    trainer = Trainer(load_config("configs/sine_line_platipus.yaml", TINY), tmp_path)
    trainer.train()
    a = trainer.learner.evaluate(20, 2, seed=5)
    torch.randn(3)  # the generator moved: the curve must not
    b = trainer.learner.evaluate(20, 2, seed=5)
    np.testing.assert_array_equal(a.per_task, b.per_task)
    c = trainer.learner.evaluate(20, 2, seed=6)
    assert not np.array_equal(a.per_task, c.per_task)


@pytest.mark.slow
def test_a_short_platipus_training_adapts_stably_and_samples_distinct_models(tmp_path):
    """A 4000-iteration version of configs/sine_line_platipus.yaml (about a minute on 2
    cores): one step more than halves the held-out MSE, no task's loss overflows within 10
    steps (MAML's does on this family, docs/results/platipus.md), and two adaptations to the
    same points differ."""
    from maml_rl.trainer import Trainer

    config = load_config("configs/sine_line_platipus.yaml", [
        "training.iterations=4000", "evaluation.at_end=false", "logging.progress=false",
        "logging.tensorboard=false", "device=cpu", "threads=1"])
    trainer = Trainer(config, tmp_path)
    trainer.train()
    curve = trainer.learner.evaluate(200, 10, seed=7)
    mean = curve.mean
    assert mean[1] < 0.5 * mean[0], mean
    assert np.isfinite(curve.per_task).all() and mean[10] < mean[1], mean
    algorithm = trainer.learner.algorithm
    support = ShotBatch(torch.tensor([[-0.5], [0.0], [0.5]]), torch.tensor([[0.1], [0.0], [-0.1]]))
    theta = {k: v.detach() for k, v in model_params(trainer.learner.model).items()}
    with torch.no_grad():
        a, b = (algorithm.adapt(theta, support, functional=False) for _ in range(2))
    assert any(not torch.equal(a[k], b[k]) for k in theta)
