"""An algorithm is one module, and so is a meta-update: both are defined here, in the test file,
registered by one call, and trained on a supervised and an RL family without touching the
library."""

import csv

import pytest
import torch

from maml_rl.adaptation import inner_gradient
from maml_rl.algorithms import ALGORITHMS, Algorithm, register_algorithm
from maml_rl.config import ALGORITHM_NAMES, META_UPDATE_NAMES, ConfigError, load_config
from maml_rl.meta_updates import META_UPDATES, MetaUpdate, register_meta_update
from maml_rl.meta_updates.base import apply_meta_gradient
from maml_rl.trainer import Trainer

QUIET = ["logging.progress=false", "logging.tensorboard=false", "device=cpu", "threads=1",
         "evaluation.at_end=false"]
NAV = ["sampling.meta_batch_size=4", "sampling.support_size=4", "sampling.query_size=4",
       "sampling.horizon=30", "policy.hidden_sizes=[16,16]", "training.iterations=3"]


class ClippedStepMAML(Algorithm):
    """A new inner-step rule: each gradient entry clipped to [-5, 5] before the step (a toy)."""

    calls = 0

    def inner_step(self, theta, phi, batch, step_size, functional, first_order=None):
        ClippedStepMAML.calls += 1
        first_order = self.first_order if first_order is None else first_order
        grads = inner_gradient(self.model, phi, self.loss_fn, batch, first_order,
                               functional=functional)
        return {k: phi[k] - step_size * g.clamp(-5.0, 5.0) for k, g in grads.items()}


class RenamedSGD(MetaUpdate):
    """Plain SGD on the meta-gradient, under another name."""

    def __init__(self, config, parameters):
        super().__init__(config, parameters)
        self.optimizer = torch.optim.SGD(parameters, lr=config.meta.lr)

    def step(self, batch):
        grads, metrics = batch.meta_gradient()
        apply_meta_gradient(self.optimizer, batch.meta_parameters, grads)
        return metrics


@pytest.fixture
def registered():
    register_algorithm("clipped_maml", ClippedStepMAML)
    register_meta_update("renamed_sgd", RenamedSGD)
    yield
    # Leave the registries as the library defines them (the config reference lists them).
    del ALGORITHMS["clipped_maml"], META_UPDATES["renamed_sgd"]
    ALGORITHM_NAMES.remove("clipped_maml")
    META_UPDATE_NAMES.remove("renamed_sgd")


def _losses(run_dir, key):
    with (run_dir / "metrics.csv").open() as f:
        return [float(row[key]) for row in csv.DictReader(f)]


def test_a_registered_algorithm_trains_on_a_supervised_family(registered, tmp_path):
    config = load_config("configs/sinusoid.yaml", [
        "algorithm=clipped_maml", "training.iterations=1000", "sampling.meta_batch_size=10",
        "policy.hidden_sizes=[40,40]", *QUIET])
    ClippedStepMAML.calls = 0
    Trainer(config, tmp_path).train()
    assert ClippedStepMAML.calls >= 1000  # the learner adapted with the new rule
    after = _losses(tmp_path, "loss/post_adaptation")
    before = _losses(tmp_path, "loss/pre_adaptation")
    # Measured over seeds 0-2: 3.6-3.8 -> 2.2 after adaptation, 3.0-3.1 before it.
    assert sum(after[-100:]) < 0.75 * sum(after[:100])  # meta-training improves
    assert sum(after[-100:]) < 0.9 * sum(before[-100:])  # and adaptation helps


def test_a_registered_algorithm_trains_on_an_rl_family(registered, tmp_path):
    # Its inner step is not the plain gradient step, so TRPO's closed-form Fisher products do
    # not apply: the config must ask for the Hessian, and says so otherwise.
    with pytest.raises(ConfigError, match=r"meta\.curvature: 'fisher' is not implemented for "
                                          r"algorithm 'clipped_maml'"):
        Trainer(load_config("configs/navigation_2d.yaml",
                            ["algorithm=clipped_maml", *NAV, *QUIET]), tmp_path / "refused")
    config = load_config("configs/navigation_2d.yaml", [
        "algorithm=clipped_maml", "meta.curvature=hessian", *NAV, *QUIET])
    ClippedStepMAML.calls = 0
    result = Trainer(config, tmp_path / "run").train()
    assert result.status == "completed" and ClippedStepMAML.calls > 0
    assert len(_losses(tmp_path / "run", "kl")) == 3


def test_a_registered_meta_update_runs_on_an_rl_family(registered, tmp_path):
    """``renamed_sgd`` is SGD: the two runs are the same run."""
    runs = {}
    for name in ("renamed_sgd", "sgd"):
        config = load_config("configs/navigation_2d.yaml", [
            f"meta.optimizer={name}", "meta.lr=0.01", *NAV, *QUIET])
        Trainer(config, tmp_path / name).train()
        runs[name] = _losses(tmp_path / name, "return/post_adaptation")
    assert runs["renamed_sgd"] == runs["sgd"]


def test_unregistered_names_are_refused_with_the_registered_ones():
    with pytest.raises(ConfigError, match=r"algorithm: expected one of maml, fomaml, reptile, "
                                          r"metasgd, anil, imaml, platipus, got 'clipped_maml'$"):
        load_config(None, ["algorithm=clipped_maml"])
    with pytest.raises(ConfigError, match=r"meta\.optimizer: expected one of adam, sgd, trpo, ppo"):
        load_config(None, ["meta.optimizer=renamed_sgd"])


def test_a_config_trains_with_an_algorithm_its_env_module_registers(tmp_path, monkeypatch):
    """The documented path: the module named by ``env.module`` registers the algorithm, and
    ``maml-train CONFIG`` (from another folder) finds both."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "my_algorithm.py").write_text(
        "from maml_rl.algorithms import register_algorithm\n"
        "from tests.test_extending import ClippedStepMAML\n\n"
        "register_algorithm('clipped_from_module', ClippedStepMAML)\n")
    (folder / "my.yaml").write_text(
        "algorithm: clipped_from_module\n"
        "env: {id: maml/Sinusoid-v0, module: my_algorithm}\n"
        "training: {iterations: 5}\n"
        "evaluation: {num_tasks: 10, steps: 1}\n"
        "logging: {progress: false, tensorboard: false}\n"
        "device: cpu\nthreads: 1\n")
    monkeypatch.chdir(tmp_path)
    try:
        from maml_rl.cli import train_main

        assert train_main([str(folder / "my.yaml"), "--run-dir", "run"]) == 0
        assert len(_losses(tmp_path / "run", "loss/post_adaptation")) == 5
        assert (tmp_path / "run" / "eval" / "results.json").is_file()
    finally:
        ALGORITHMS.pop("clipped_from_module", None)
        if "clipped_from_module" in ALGORITHM_NAMES:
            ALGORITHM_NAMES.remove("clipped_from_module")


def test_a_family_declares_its_video_kind_and_baseline_budget():
    """What the library reads of a family comes from the env's metadata, not from its id."""
    from maml_rl.comparison import FALLBACK_TIMESTEPS, default_timesteps
    from maml_rl.family import load_family
    from maml_rl.videos import check_video_support, plots_trajectories

    assert default_timesteps("maml/Navigation2D-v0") == 300_000
    assert default_timesteps("maml/AntGoal-v0") == 2_000_000
    assert default_timesteps("maml/Sinusoid-v0") == FALLBACK_TIMESTEPS
    assert plots_trajectories(load_family("maml/Navigation2D-v0", {}))
    cheetah = load_family("maml/HalfCheetahVel-v0", {})
    assert not plots_trajectories(cheetah)
    check_video_support(cheetah)  # renders rgb_array instead
    with pytest.raises(ValueError, match="declare metadata\\['trajectory_plot'\\]"):
        check_video_support(load_family("maml/Sinusoid-v0", {}))
