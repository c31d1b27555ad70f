"""MAML for reinforcement learning (Finn et al. 2017, Algorithm 3).

One meta-iteration: sample -> process -> adapt -> meta-update. Draw M tasks; for each inner step
roll out N episodes per task with the current (per-task) parameters, fit the linear baseline per
task and adapt by the algorithm's inner step (a REINFORCE step, Eq. 1, for MAML); roll out fresh
query episodes with the adapted parameters; then hand the meta-batch
(:class:`~maml_rl.learners.rl_objective.RLMetaBatch`) to the configured meta-update (TRPO, ProMP,
Adam/SGD; :mod:`maml_rl.meta_updates`), which differentiates the query surrogate through the
adaptation. Evaluation adapts with the same algorithm (the paper's protocol, Sec. 5.3).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import torch

from maml_rl.adaptation import Params, adapt_tasks, map_tasks, model_params, shared_for
from maml_rl.algorithms import build_algorithm
from maml_rl.baselines import LinearFeatureBaseline
from maml_rl.config import Config
from maml_rl.distributed import SINGLE_PROCESS, ProcessGroup
from maml_rl.episodes import Episodes, PolicyBatch, process_episodes
from maml_rl.evaluation import AdaptationCurve, evaluate_rl, rl_adaptation_rollouts
from maml_rl.family import TaskFamily, evaluation_family
from maml_rl.learners.rl_objective import RLMetaBatch
from maml_rl.meta_updates import build_meta_update
from maml_rl.objectives import INNER_RL_OBJECTIVES
from maml_rl.policies import build_model
from maml_rl.sampling import Sampler, SamplerFactory, make_episode_sampler
from maml_rl.seeding import QUERY_STREAM, SUPPORT_STREAM, EpisodeKey, episode_keys
from maml_rl.validation import validate

#: ``on_episodes(k, episodes)``: sees the episodes sampled after k inner steps.
EpisodeHook = Callable[[int, Episodes], None]
#: ``keys(k)``: the episode keys of every task for the episodes sampled after k inner steps.
KeysOfStep = Callable[[int], list[EpisodeKey]]
EnvWrapper = Callable[[gym.vector.VectorEnv], gym.vector.VectorEnv]


class RLMetaLearner:
    """Policy, algorithm, baseline, samplers and meta-update of an RL MAML run.

    ``sampler_factory`` builds every sampler of the run (training and evaluation); the default
    samples in this process. Under ``torchrun`` (``group``, :mod:`maml_rl.distributed`) this
    process samples, adapts and differentiates only its shard of each meta-batch, and every
    mean over tasks is reduced over the processes."""

    def __init__(self, config: Config, family: TaskFamily, device: str,
                 eval_family: TaskFamily | None = None,
                 sampler_factory: SamplerFactory = make_episode_sampler,
                 group: ProcessGroup = SINGLE_PROCESS) -> None:
        self.config, self.family, self.device = config, family, device
        self.group = group
        self.eval_family = eval_family or evaluation_family(
            family, config.evaluation.env_kwargs, config.env.module)
        validate(config, family, self.eval_family)
        self.model = build_model(
            config.policy, family.observation_space, family.action_space, supervised=False
        ).to(device)
        self.horizon = config.sampling.horizon or family.max_episode_steps
        self.baseline = LinearFeatureBaseline()
        self.batching = config.task_batching(supervised=False, device=device)
        self.algorithm = build_algorithm(config, self.model,
                                         INNER_RL_OBJECTIVES[config.inner.objective],
                                         self.batching)
        self.meta_update = build_meta_update(config, self.algorithm.meta_parameters())
        self.sampler_factory = sampler_factory
        s = config.sampling
        group.check_meta_batch("sampling.meta_batch_size", s.meta_batch_size)
        #: The meta-batch's tasks this process works on.
        self.task_ids = group.shard(s.meta_batch_size)
        #: The meta-batch's samplers, built on first use (:attr:`support_sampler`).
        self._samplers: dict[str, Sampler] = {}
        self._adapt_seconds = 0.0
        self._iterations = 0

    @property
    def support_sampler(self) -> Sampler:
        """The sampler of the meta-batch's support episodes, built on first use: a loaded run
        that only adapts, evaluates or acts never creates the meta-batch's envs (for ML1, 200
        Meta-World environments, about 4 GB)."""
        return self._sampler("support", self.config.sampling.support_size, self.config.seed)

    @property
    def query_sampler(self) -> Sampler:
        """The sampler of the meta-batch's query episodes, built on first use."""
        return self._sampler("query", self.config.sampling.query_size, self.config.seed + 1)

    def _sampler(self, role: str, episodes: int, seed: int) -> Sampler:
        if role not in self._samplers:
            self._samplers[role] = self.make_sampler(self.family, len(self.task_ids), episodes,
                                                     seed)
        return self._samplers[role]

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        """The meta-update's optimizer, if it has one (``meta.lr`` schedules act on it)."""
        return self.meta_update.optimizer

    def make_sampler(self, family: TaskFamily, num_tasks: int, episodes: int, seed: int,
                     env_wrapper: EnvWrapper | None = None) -> Sampler:
        """A sampler of ``episodes`` per task for ``num_tasks`` tasks of ``family`` (the run's
        ``sampler_factory``; evaluation builds its own with its seed)."""
        return self.sampler_factory(family.env_id, family.env_kwargs, num_tasks, episodes,
                                    self.horizon, seed, self.device, env_wrapper)

    def _process(self, episodes: Episodes) -> PolicyBatch:
        return process_episodes(
            episodes, self.baseline, self.config.inner.gamma, self.config.inner.gae_lambda
        )

    def inner_loop(
        self, sampler: Sampler, tasks: list[Any], step_sizes: list[float], on_episodes=None,
        policy: torch.nn.Module | None = None, keys: KeysOfStep | None = None,
    ) -> tuple[list[PolicyBatch], dict[str, torch.Tensor] | None]:
        """``len(step_sizes)`` inner steps with fresh episodes at each: returns the processed
        support batch of every step and the detached adapted parameters stacked per task (None
        for 0 steps). ``on_episodes(k, episodes)`` sees the episodes sampled before step k,
        seeded by ``keys(k)``. ``policy`` (default: the meta-learned model) is the module
        adapted from its own parameters: the evaluation adapts the baselines with this loop."""
        model = self.model if policy is None else policy
        params = {k: v.detach() for k, v in model_params(model).items()}
        supports: list[PolicyBatch] = []
        adapted = None
        for k in range(len(step_sizes)):
            episodes = sampler.sample(tasks, model, adapted if k else params, per_task=k > 0,
                                      keys=None if keys is None else keys(k))
            if on_episodes is not None:
                on_episodes(k, episodes)
            supports.append(self._process(episodes))
            start = time.perf_counter()
            adapted = self._adapt_values(model, params, supports, step_sizes[: k + 1])
            self._adapt_seconds += time.perf_counter() - start
        return supports, adapted

    def _adapt_values(self, model, params, supports, step_sizes) -> dict[str, torch.Tensor]:
        """The adapted parameters' values (no second-order graph: they are only sampled with).
        The meta-learned policy adapts by its algorithm's rule (ANIL's head, Meta-SGD's rates);
        another policy (the comparison methods) adapts whole, with these step sizes."""
        if model is not self.model:
            adapted = adapt_tasks(model, params, self.algorithm.loss_fn, supports, step_sizes,
                                  first_order=True, batching=self.batching)
        else:
            functional = self.batching == "vmap"
            theta = shared_for(params, self.batching, len(supports[0].mask))
            with torch.no_grad():  # the inner gradient still runs (it enables grad itself)
                adapted = map_tasks(
                    lambda s: self.algorithm.adapt(theta, list(s), functional, step_sizes,
                                                   first_order=True),
                    list(supports), batching=self.batching)
        return {name: v.detach() for name, v in adapted.items()}

    def meta_iteration(self, tasks: list[Any], iteration: int | None = None
                       ) -> dict[str, float]:
        """Sample -> process -> adapt -> meta-update on the meta-batch ``tasks`` (this process
        takes its shard of them); the iteration's metrics. ``iteration`` (default: how many
        this learner has run) seeds the episodes with the task indices."""
        if iteration is None:
            iteration = self._iterations
        self._iterations = iteration + 1
        total = len(tasks)
        tasks = [tasks[i] for i in self.task_ids]
        seed = self.config.seed
        returns: dict[int, torch.Tensor] = {}
        successes: dict[int, torch.Tensor | None] = {}
        self._adapt_seconds = 0.0
        start = time.perf_counter()
        steps_before = self.support_sampler.steps_sampled + self.query_sampler.steps_sampled
        supports, adapted = self.inner_loop(
            self.support_sampler, tasks, self.config.inner_step_sizes(),
            lambda k, episodes: (returns.setdefault(k, episodes.task_returns()),
                                 successes.setdefault(k, episodes.task_success())),
            keys=lambda k: episode_keys(seed, SUPPORT_STREAM, iteration, k, self.task_ids),
        )
        query_episodes = self.query_sampler.sample(
            tasks, self.model, adapted, per_task=True,
            keys=episode_keys(seed, QUERY_STREAM, iteration, 0, self.task_ids))
        query = self._process(query_episodes)
        sampled = time.perf_counter()
        metrics = self.meta_update.step(
            RLMetaBatch(self.algorithm, supports, query, adapted, self.batching,
                        self.group, self.task_ids, total))
        end = time.perf_counter()
        sampling = sampled - start - self._adapt_seconds
        env_steps = (self.support_sampler.steps_sampled + self.query_sampler.steps_sampled
                     - steps_before)
        before, after = self.group.task_mean([returns[0], query_episodes.task_returns()], total)
        metrics.update({"return/pre_adaptation": before.item(),
                        "return/post_adaptation": after.item()})
        if successes.get(0) is not None:  # the family reports success (Meta-World)
            before, after = self.group.task_mean(
                [successes[0], query_episodes.task_success()], total)
            metrics.update({"success/pre_adaptation": before.item(),
                            "success/post_adaptation": after.item()})
        metrics.update({
            "time/sampling_s": sampling,
            "time/adaptation_s": self._adapt_seconds,
            "time/meta_step_s": end - sampled,
            "perf/env_steps_per_s": env_steps / max(sampling, 1e-9),
        })
        return metrics

    def adaptation_rollouts(self, tasks: list[Any], steps: int, seed: int,
                            on_episodes: EpisodeHook, *args: Any, **kwargs: Any
                            ) -> Params | None:
        """The MAML paper's evaluation protocol on ``tasks``:
        :func:`maml_rl.evaluation.rl_adaptation_rollouts` (same arguments)."""
        return rl_adaptation_rollouts(self, tasks, steps, seed, on_episodes, *args, **kwargs)

    def evaluate(self, num_tasks: int, steps: int, seed: int, *args: Any,
                 **kwargs: Any) -> AdaptationCurve:
        """Mean return per held-out task after 0..steps inner steps:
        :func:`maml_rl.evaluation.evaluate_rl` (same arguments)."""
        return evaluate_rl(self, num_tasks, steps, seed, *args, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        """Model, meta-update and algorithm state: the same on every process, and no sampler
        state (episodes are seeded per iteration and task), so a run resumes with any number
        of processes."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.meta_update.state_dict(),
            "algorithm": self.algorithm.state_dict(),
            "iterations": self._iterations,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        # Checkpoints before the algorithm interface kept Meta-SGD's rates at the top level.
        self.algorithm.load_state_dict(state.get("algorithm", {"rates": state.get("rates", {})}))
        self.meta_update.load_state_dict(state["optimizer"])
        self._iterations = int(state.get("iterations", 0))

    def close(self) -> None:
        for sampler in self._samplers.values():
            sampler.close()
        self._samplers.clear()
