"""The MAML family on supervised families (sinusoid regression, few-shot classification).

One meta-iteration (MAML paper, Algorithm 2): draw M tasks, K support and Q query shots each,
and let the configured algorithm (:mod:`maml_rl.algorithms`) adapt on the support sets and
update the meta-parameters from the query sets. Evaluation adapts with the same algorithm's
inner step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.func import vmap

from maml_rl.adaptation import meta_parameters
from maml_rl.algorithms import build_algorithm
from maml_rl.config import Config, ConfigError
from maml_rl.evaluation import AdaptationCurve, evaluate_supervised
from maml_rl.family import TaskFamily, evaluation_family
from maml_rl.meta_optimizers import load_optimizer_state, make_plain_optimizer
from maml_rl.objectives import SUPERVISED_LOSSES, accuracy
from maml_rl.policies import build_model
from maml_rl.sampling import SupervisedSampler, split_shots


class SupervisedMetaLearner:
    """Model, algorithm, meta-optimizer and sampler of a supervised meta-learning run."""

    def __init__(self, config: Config, family: TaskFamily, device: str) -> None:
        self.config, self.family, self.device = config, family, device
        self.loss_fn = SUPERVISED_LOSSES[family.supervised_loss]
        self.model = build_model(
            config.policy, family.observation_space, family.action_space, supervised=True
        ).to(device)
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
        if ev.query_batch:
            query = ev.query_size or s.query_size
            if query % ev.query_batch:
                raise ConfigError(
                    f"evaluation.query_batch: {ev.query_batch} must divide the evaluation "
                    f"query size {query}; allowed: 0 or a divisor of {query}"
                )
            # Each batch must hold every class equally often, like a meta-training query set.
            if self.eval_family.shots_problem(0, ev.query_batch):
                raise ConfigError(
                    f"evaluation.query_batch: {ev.query_batch} does not hold every class "
                    f"equally often; allowed: 0 or a multiple of the classes per task that "
                    f"divides {query}"
                )
        self.algorithm = build_algorithm(config, self.model, self.loss_fn, self.batching)
        self.optimizer = make_plain_optimizer(config.meta, self.algorithm.parameters())
        self.sampler = SupervisedSampler(
            family.env_id, family.env_kwargs, s.meta_batch_size,
            s.support_size + s.query_size, seed=config.seed, device=device,
        )

    def meta_iteration(self, tasks: list[Any]) -> dict[str, float]:
        """One meta-update on ``tasks``; returns the iteration's metrics."""
        cfg = self.config
        support, query = split_shots(self.sampler.sample(tasks), cfg.sampling.support_size)
        with torch.no_grad():  # before the update, so it is the same theta as the adaptation's
            params = meta_parameters(self.model)
            before = vmap(lambda q: self.loss_fn(self.model, params, q))(query).mean().item()
        metrics = self.algorithm.meta_step(self.optimizer, support, query)
        return {"loss/pre_adaptation": before, **metrics}

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
            query_batch=ev.query_batch,
            step_sizes=self.config.inner_step_sizes(steps, ev.lr),
            seed=seed, metric_fn=accuracy if classification else None,
            metric="accuracy" if classification else "mse", method=self.config.algorithm,
            batching=self.eval_batching, device=self.device, step_fn=self.algorithm.inner_step,
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "sampler_rng": self.sampler.rng_state(),
            "algorithm": self.algorithm.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        load_optimizer_state(self.optimizer, state["optimizer"])
        self.sampler.set_rng_state(state["sampler_rng"])
        self.algorithm.load_state_dict(state.get("algorithm", {}))

    def close(self) -> None:
        self.sampler.close()
