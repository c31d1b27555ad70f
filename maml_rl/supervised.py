"""MAML on supervised families (sinusoid regression, few-shot classification).

One meta-iteration (MAML paper, Algorithm 2): draw M tasks, K support and Q query shots each,
adapt on the support set (Eq. 1), and update theta with the plain meta-optimizer on the mean
post-adaptation query loss (Eq. 3).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.func import vmap

from maml_rl.adaptation import adapted_losses, meta_parameters
from maml_rl.config import Config, ConfigError
from maml_rl.evaluation import AdaptationCurve, evaluate_supervised
from maml_rl.family import TaskFamily, evaluation_family
from maml_rl.meta_optimizers import make_plain_optimizer, plain_meta_step
from maml_rl.objectives import SUPERVISED_LOSSES, accuracy
from maml_rl.policies import build_model
from maml_rl.sampling import SupervisedSampler, split_shots


class SupervisedMetaLearner:
    """Model, meta-optimizer and sampler of a supervised MAML run."""

    def __init__(self, config: Config, family: TaskFamily, device: str) -> None:
        self.config, self.family, self.device = config, family, device
        self.loss_fn = SUPERVISED_LOSSES[family.supervised_loss]
        self.model = build_model(
            config.policy, family.observation_space, family.action_space, supervised=True
        ).to(device)
        self.optimizer = make_plain_optimizer(config.meta, self.model.parameters())
        self.batching = config.task_batching(supervised=True, device=device)
        self.eval_batching = config.task_batching(supervised=True, device=device, evaluation=True)
        s, ev = config.sampling, config.evaluation
        # Built now so that a mistake in evaluation.env_kwargs stops the run before training.
        self.eval_family = evaluation_family(family, ev.env_kwargs, config.env.module)
        for section, fam, support, query in (
            ("sampling", family, s.support_size, s.query_size),
            ("evaluation", self.eval_family, ev.support_size or s.support_size,
             ev.query_size or s.query_size),
        ):
            problem = fam.shots_problem(support, query)
            if problem:
                raise ConfigError(f"{section}: {problem}")
        self.sampler = SupervisedSampler(
            family.env_id, family.env_kwargs, s.meta_batch_size,
            s.support_size + s.query_size, seed=config.seed, device=device,
        )

    def meta_iteration(self, tasks: list[Any]) -> dict[str, float]:
        """One meta-update on ``tasks``; returns the iteration's metrics."""
        cfg = self.config
        support, query = split_shots(self.sampler.sample(tasks), cfg.sampling.support_size)
        params = meta_parameters(self.model)
        losses = adapted_losses(
            self.model, params, self.loss_fn, support, query, cfg.inner_step_sizes(),
            cfg.inner.first_order, self.batching,
        )
        meta_loss = losses.mean()
        plain_meta_step(self.optimizer, meta_loss, self.model.parameters())
        with torch.no_grad():
            before = vmap(lambda q: self.loss_fn(self.model, params, q))(query).mean()
        return {"loss/pre_adaptation": before.item(), "loss/post_adaptation": meta_loss.item()}

    def evaluate(self, num_tasks: int, steps: int, seed: int) -> AdaptationCurve:
        """Adaptation curve (0..steps) on ``num_tasks`` tasks drawn with ``seed``."""
        ev = self.config.evaluation
        family = self.eval_family
        tasks = family.sample_tasks(num_tasks, np.random.default_rng(seed))
        classification = family.supervised_loss == "cross_entropy"
        return evaluate_supervised(
            self.model, meta_parameters(self.model), self.loss_fn, family.env_id,
            family.env_kwargs, tasks,
            support_size=ev.support_size or self.config.sampling.support_size,
            query_size=ev.query_size or self.config.sampling.query_size,
            step_sizes=self.config.inner_step_sizes(steps, ev.lr),
            seed=seed, metric_fn=accuracy if classification else None,
            metric="accuracy" if classification else "mse",
            batching=self.eval_batching, device=self.device,
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "sampler_rng": self.sampler.rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.set_rng_state(state["sampler_rng"])

    def close(self) -> None:
        self.sampler.close()
