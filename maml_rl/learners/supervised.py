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
from torch import Tensor
from torch.func import vmap

from maml_rl.adaptation import Batch, model_params
from maml_rl.algorithms import Algorithm, build_algorithm
from maml_rl.config import Config
from maml_rl.evaluation import AdaptationCurve, evaluate_supervised
from maml_rl.family import TaskFamily, evaluation_family
from maml_rl.meta_updates import build_meta_update
from maml_rl.meta_updates.base import check_finite
from maml_rl.objectives import SUPERVISED_LOSSES, accuracy
from maml_rl.policies import build_model
from maml_rl.sampling import SupervisedSampler, split_shots
from maml_rl.validation import validate


class SupervisedMetaBatch:
    """One supervised meta-batch as the meta-update sees it (:class:`MetaBatch`): the
    algorithm's meta-gradient on the support and query sets."""

    def __init__(self, algorithm: Algorithm, support: Batch, query: Batch) -> None:
        self.algorithm, self.support, self.query = algorithm, support, query
        self.meta_parameters = algorithm.meta_parameters()

    def meta_gradient(self) -> tuple[list[Tensor], dict[str, float]]:
        grads, losses = self.algorithm.meta_gradient(self.support, self.query)
        loss = losses.mean().item()
        check_finite("meta-loss", loss)
        return grads, {"loss/post_adaptation": loss}

    def outer_lr(self) -> float | None:
        return self.algorithm.outer_lr()

    def after_step(self) -> dict[str, float]:
        return self.algorithm.after_meta_step()


class SupervisedMetaLearner:
    """Model, algorithm, meta-update and sampler of a supervised meta-learning run."""

    def __init__(self, config: Config, family: TaskFamily, device: str,
                 eval_family: TaskFamily | None = None) -> None:
        self.config, self.family, self.device = config, family, device
        # Built now so that a mistake in evaluation.env_kwargs stops the run before training.
        self.eval_family = eval_family or evaluation_family(
            family, config.evaluation.env_kwargs, config.env.module)
        validate(config, family, self.eval_family)
        self.loss_fn = SUPERVISED_LOSSES[family.supervised_loss]
        self.model = build_model(
            config.policy, family.observation_space, family.action_space, supervised=True
        ).to(device)
        self.batching = config.task_batching(supervised=True, device=device)
        self.eval_batching = config.task_batching(supervised=True, device=device, evaluation=True)
        self.algorithm = build_algorithm(config, self.model, self.loss_fn, self.batching)
        self.meta_update = build_meta_update(config, self.algorithm.meta_parameters())
        s = config.sampling
        self.sampler = SupervisedSampler(
            family.env_id, family.env_kwargs, s.meta_batch_size,
            s.support_size + s.query_size, seed=config.seed, device=device,
        )

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        """The meta-update's optimizer (``meta.lr`` schedules act on it)."""
        return self.meta_update.optimizer

    def meta_iteration(self, tasks: list[Any]) -> dict[str, float]:
        """One meta-update on ``tasks``; returns the iteration's metrics."""
        cfg = self.config
        support, query = split_shots(self.sampler.sample(tasks), cfg.sampling.support_size)
        with torch.no_grad():  # before the update, so it is the same theta as the adaptation's
            params = model_params(self.model)
            before = vmap(lambda q: self.loss_fn(self.model, params, q))(query).mean().item()
        metrics = self.meta_update.step(SupervisedMetaBatch(self.algorithm, support, query))
        return {"loss/pre_adaptation": before, **metrics}
    def evaluate(self, num_tasks: int, steps: int, seed: int) -> AdaptationCurve:
        """Adaptation curve (0..steps) on ``num_tasks`` tasks drawn with ``seed``."""
        ev = self.config.evaluation
        family = self.eval_family
        tasks = family.sample_tasks(num_tasks, np.random.default_rng(seed))
        classification = family.supervised_loss == "cross_entropy"
        return evaluate_supervised(
            self.model, model_params(self.model), self.loss_fn, family.env_id,
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
            "optimizer": self.meta_update.state_dict(),
            "sampler_rng": self.sampler.rng_state(),
            "algorithm": self.algorithm.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.meta_update.load_state_dict(state["optimizer"])
        self.sampler.set_rng_state(state["sampler_rng"])
        self.algorithm.load_state_dict(state.get("algorithm", {}))

    def close(self) -> None:
        self.sampler.close()
