"""The MAML family on supervised families (sinusoid regression, few-shot classification).

One meta-iteration (MAML paper, Algorithm 2): draw M tasks, K support and Q query shots each,
and let the configured algorithm (:mod:`maml_rl.algorithms`) adapt on the support sets and
update the meta-parameters from the query sets. Evaluation adapts with the same algorithm's
inner step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.func import vmap

from maml_rl.adaptation import Batch, StepFn, backtracking, gradient_step, model_params
from maml_rl.algorithms import Algorithm, build_algorithm
from maml_rl.config import Config
from maml_rl.distributed import SINGLE_PROCESS, ProcessGroup
from maml_rl.evaluation import AdaptationCurve, evaluate_supervised
from maml_rl.family import TaskFamily, evaluation_family
from maml_rl.meta_updates import build_meta_update
from maml_rl.meta_updates.base import check_finite
from maml_rl.objectives import SUPERVISED_LOSSES, accuracy
from maml_rl.policies import build_model
from maml_rl.sampling import SupervisedSampler, split_shots
from maml_rl.seeding import SUPPORT_STREAM, EpisodeKey, episode_keys, seeded_torch
from maml_rl.validation import validate


class SupervisedMetaBatch:
    """One supervised meta-batch as the meta-update sees it (:class:`MetaBatch`): the
    algorithm's meta-gradient on the support and query sets of this process's ``local`` tasks
    of ``num_tasks``, its mean over tasks reduced over the processes."""

    def __init__(self, algorithm: Algorithm, support: Batch, query: Batch,
                 group: ProcessGroup = SINGLE_PROCESS, num_tasks: int | None = None,
                 keys: Sequence[EpisodeKey] | None = None) -> None:
        self.algorithm, self.support, self.query, self.keys = algorithm, support, query, keys
        self.meta_parameters = algorithm.meta_parameters()
        self.group, self.local = group, int(query[0].shape[0])
        self.num_tasks = self.local if num_tasks is None else num_tasks

    def meta_gradient(self) -> tuple[list[Tensor], dict[str, float]]:
        grads, losses = self.algorithm.meta_gradient(self.support, self.query, self.keys)
        if self.group.distributed:  # the algorithm's gradients are means over local tasks
            sums = self.group.sum([g.double() * self.local for g in grads])
            grads = [(s / self.num_tasks).to(g.dtype) for s, g in zip(sums, grads, strict=True)]
        extra = self.algorithm.task_metrics()  # per-task values of its own (PLATIPUS' KL)
        loss, *values = self.group.task_mean([losses, *extra.values()], self.num_tasks)
        check_finite("meta-loss", loss)
        return grads, {"loss/post_adaptation": loss.item(),
                       **{k: v.item() for k, v in zip(extra, values, strict=True)}}

    def outer_lr(self) -> float | None:
        return self.algorithm.outer_lr()

    def after_step(self) -> dict[str, float]:
        return self.algorithm.after_meta_step()


class SupervisedMetaLearner:
    """Model, algorithm, meta-update and sampler of a supervised meta-learning run."""

    def __init__(self, config: Config, family: TaskFamily, device: str,
                 eval_family: TaskFamily | None = None,
                 group: ProcessGroup = SINGLE_PROCESS) -> None:
        self.config, self.family, self.device = config, family, device
        self.group = group
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
        group.check_meta_batch("sampling.meta_batch_size", s.meta_batch_size)
        #: The meta-batch's tasks this process works on.
        self.task_ids = group.shard(s.meta_batch_size)
        self.sampler = SupervisedSampler(
            family.env_id, family.env_kwargs, len(self.task_ids),
            s.support_size + s.query_size, seed=config.seed, device=device,
        )
        self._iterations = 0

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        """The meta-update's optimizer (``meta.lr`` schedules act on it)."""
        return self.meta_update.optimizer

    def meta_iteration(self, tasks: list[Any], iteration: int | None = None
                       ) -> dict[str, float]:
        """One meta-update on the meta-batch ``tasks`` (this process takes its shard of them);
        returns the iteration's metrics. ``iteration`` (default: how many this learner has run)
        seeds the shots with the task indices."""
        if iteration is None:
            iteration = self._iterations
        self._iterations = iteration + 1
        cfg, total = self.config, len(tasks)
        keys = episode_keys(cfg.seed, SUPPORT_STREAM, iteration, 0, self.task_ids)
        shots = self.sampler.sample([tasks[i] for i in self.task_ids], keys)
        support, query = split_shots(shots, cfg.sampling.support_size)
        with torch.no_grad():  # before the update, so it is the same theta as the adaptation's
            params = model_params(self.model)
            before = vmap(lambda q: self.loss_fn(self.model, params, q))(query)
        (before,) = self.group.task_mean([before], total)
        metrics = self.meta_update.step(
            SupervisedMetaBatch(self.algorithm, support, query, self.group, total, keys))
        return {"loss/pre_adaptation": before.item(), **metrics}

    def evaluation_step(self, model: torch.nn.Module | None = None) -> StepFn:
        """The inner step evaluation adapts with: the algorithm's, or a plain gradient step for
        a comparison ``model``; with ``evaluation.max_backtracks``, safeguarded by
        :func:`maml_rl.adaptation.backtracking` (for both, so they are compared alike)."""
        if model is None:
            net, step = self.model, self.algorithm.inner_step
        else:
            net, step = model, gradient_step(model, self.loss_fn)
        backtracks = self.config.evaluation.max_backtracks
        return backtracking(step, net, self.loss_fn, backtracks) if backtracks else step

    def evaluate(self, num_tasks: int, steps: int, seed: int, method: str | None = None,
                 model: torch.nn.Module | None = None) -> AdaptationCurve:
        """Adaptation curve (0..steps) on ``num_tasks`` tasks drawn with ``seed``; under
        torchrun every process evaluates its share of them. ``model`` (a comparison method,
        named ``method``: :mod:`maml_rl.supervised_baseline`) replaces the meta-learned one
        and adapts by plain gradient steps, on the same tasks and shots."""
        ev, family = self.config.evaluation, self.eval_family
        net = self.model if model is None else model
        step_fn = self.evaluation_step(model)
        tasks = family.sample_tasks(num_tasks, np.random.default_rng(seed))
        classification = family.supervised_loss == "cross_entropy"
        metric = "accuracy" if classification else "mse"

        def shard(local: list[Any], first: int) -> np.ndarray:
            return evaluate_supervised(
                net, model_params(net), self.loss_fn, family.env_id,
                family.env_kwargs, local,
                support_size=ev.support_size or self.config.sampling.support_size,
                query_size=ev.query_size or self.config.sampling.query_size,
                query_batch=ev.query_batch,
                step_sizes=self.config.inner_step_sizes(steps, ev.lr),
                seed=seed, metric_fn=accuracy if classification else None, metric=metric,
                batching=self.eval_batching, device=self.device,
                step_fn=step_fn, first_task=first,
            ).per_task

        with seeded_torch(seed, self.device):  # a sampling algorithm's draws (PLATIPUS')
            per_task = self.group.map_tasks(tasks, shard)
        return AdaptationCurve(method or self.config.algorithm, metric, list(range(steps + 1)),
                               per_task, list(tasks))

    def state_dict(self) -> dict[str, Any]:
        """The same on every process, with no sampler state (shots are seeded per iteration
        and task), so a run resumes with any number of processes."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.meta_update.state_dict(),
            "algorithm": self.algorithm.state_dict(),
            "iterations": self._iterations,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.meta_update.load_state_dict(state["optimizer"])
        self.algorithm.load_state_dict(state.get("algorithm", {}))
        self._iterations = int(state.get("iterations", 0))

    def close(self) -> None:
        self.sampler.close()
