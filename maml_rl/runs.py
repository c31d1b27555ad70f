"""A trained run from Python: load it, adapt its policy to a task from a few episodes, act.

    from maml_rl.runs import load_run

    run = load_run("pretrained/halfcheetah_vel")          # config + meta-learned policy
    policy = run.adapt({"velocity": 1.5}, steps=1)         # one inner step on 20 fresh episodes
    action = policy.act(observation)                       # the adapted policy's mean action

Adaptation is the same inner loop as training and evaluation use
(:meth:`maml_rl.learners.reinforcement.RLMetaLearner.adaptation_rollouts`): ``steps``
policy-gradient steps of the run's algorithm, each on freshly sampled episodes of the task (MAML
paper, Eq. 1 with the REINFORCE inner loss of Sec. 3.2), step sizes from ``evaluation.lr`` (default
``inner.lr``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.distributions import Distribution

from envs.registration import import_family_module
from maml_rl.adaptation import Params, forward, model_params
from maml_rl.checkpoint import CHECKPOINT_NAME, restore
from maml_rl.config import Config, ConfigError, load_config
from maml_rl.family import TaskFamily, load_family, module_dirs

__all__ = ["AdaptedPolicy", "Run", "load_run"]


@dataclass
class AdaptedPolicy:
    """The run's policy network with one task's adapted parameters."""

    model: nn.Module
    params: Params
    device: str = "cpu"

    def distribution(self, observation: np.ndarray | torch.Tensor) -> Distribution:
        """The action distribution at ``observation`` (one observation, or a batch)."""
        obs = torch.as_tensor(np.asarray(observation), dtype=torch.float32, device=self.device)
        with torch.no_grad():
            return forward(self.model, self.params, obs)

    def act(self, observation: np.ndarray | torch.Tensor, deterministic: bool = True) -> np.ndarray:
        """An action for ``observation``: the distribution's mode (Gaussian mean, most likely
        category) when ``deterministic``, else a sample."""
        dist = self.distribution(observation)
        if not deterministic:
            return dist.sample().cpu().numpy()
        base = getattr(dist, "base_dist", dist)
        mode = base.mean if isinstance(base, torch.distributions.Normal) else dist.probs.argmax(-1)
        return mode.cpu().numpy()


@dataclass
class Run:
    """A run directory loaded for use: its config, task family and meta-learned learner."""

    path: Path
    config: Config
    family: TaskFamily
    learner: Any
    iteration: int
    device: str

    def sample_tasks(self, n: int, seed: int = 0) -> list[Any]:
        """``n`` tasks of the run's family (for trying the policy out)."""
        return self.family.sample_tasks(n, np.random.default_rng(seed))

    def adapt(self, task: Any, steps: int = 1, episodes: int | None = None,
              seed: int = 0) -> AdaptedPolicy:
        """Adapt the meta-learned policy to ``task`` (anything the family's ``set_task``
        takes): ``steps`` inner steps, each on ``episodes`` fresh episodes (default:
        ``evaluation.support_size``, else ``sampling.support_size``) seeded by ``seed``.
        ``steps=0`` gives the meta-learned policy itself."""
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        if self.family.supervised:
            raise ValueError(f"'{self.family.env_id}' is a supervised family: its model adapts "
                             "on a support set (learner.evaluate, maml-evaluate), not episodes")
        self.family.check_tasks([task])
        adapted = self.learner.adaptation_rollouts([task], steps, seed, lambda k, eps: None,
                                                   episodes)
        model = self.learner.model
        if adapted is None:
            params = {k: v.detach() for k, v in model_params(model).items()}
        else:
            params = {k: v[0].detach() for k, v in adapted.items()}
        return AdaptedPolicy(model, params, self.device)

    def close(self) -> None:
        self.learner.close()


def load_run(run_dir: str | Path, checkpoint: str | Path | None = None,
             device: str = "cpu", overrides: Sequence[str] = ()) -> Run:
    """Load the run in ``run_dir`` (its ``config.yaml`` and ``checkpoint.pt``, or
    ``checkpoint``) on ``device``; raises ConfigError (one line) for a folder that is not a
    run or a checkpoint that does not fit its config. ``overrides`` (``evaluation.key=value``)
    change how it is evaluated, never the model. :meth:`Run.adapt` is for RL families; a
    supervised run's learner evaluates (``run.learner.evaluate(num_tasks, steps, seed)``)."""
    from maml_rl.trainer import build_learner

    path = Path(run_dir)
    if not (path / "config.yaml").is_file():
        raise ConfigError(f"'{path}' is not a run directory (no config.yaml)")
    for text in overrides:
        if not text.startswith("evaluation."):
            raise ConfigError(f"override '{text}': only evaluation.* keys can change for a "
                              "trained run (the model and env are those it was trained with)")
    config = load_config(path / "config.yaml", list(overrides))
    config.device = device
    if config.env.module:
        import_family_module(config.env.module, module_dirs(path))
    family = load_family(config.env.id, config.env.kwargs, config.env.module)
    learner = build_learner(config, family, device)
    state = restore(learner, Path(checkpoint) if checkpoint else path / CHECKPOINT_NAME, config,
                    map_location=device)
    return Run(path, config, family, learner, int(state.get("iteration", 0)), device)
