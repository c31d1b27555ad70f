"""MAML for reinforcement learning (Finn et al. 2017, Algorithm 3).

One meta-iteration: draw M tasks; for each inner step roll out N episodes per task with the
current (per-task) parameters, fit the linear baseline per task and take a REINFORCE step (Eq. 1);
roll out fresh query episodes with the adapted parameters; then update theta on the query
surrogate, differentiated through the adaptation: plain (Adam/SGD), TRPO (Schulman et al. 2015)
with Hessian-vector products of the KL through the inner step, or ProMP's PPO-style update
(Rothfuss et al. 2019: clipped surrogate, several Adam steps on the same episodes, a KL penalty on
the pre-update policy), usually with the low-variance curvature inner objective
(``inner.objective: lvc``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch.utils._pytree import tree_map

from maml_rl.adaptation import adapt, adapt_tasks, map_tasks, meta_parameters, task_slice
from maml_rl.algorithms.anil import head_parameter_names
from maml_rl.algorithms.metasgd import initial_rates
from maml_rl.baselines import LinearFeatureBaseline
from maml_rl.config import Config
from maml_rl.curvature import flat_product, mean_fisher_product, task_fisher_product
from maml_rl.episodes import Episodes, process_episodes
from maml_rl.evaluation import AdaptationCurve
from maml_rl.family import TaskFamily, evaluation_family
from maml_rl.meta_optimizers import (
    check_finite,
    load_optimizer_state,
    make_plain_optimizer,
    plain_meta_step,
)
from maml_rl.objectives import (
    INNER_RL_OBJECTIVES,
    clipped_surrogate_loss,
    kl_divergence,
    surrogate_loss,
)
from maml_rl.policies import build_model
from maml_rl.sampling import EpisodeSampler
from maml_rl.trpo import trpo_step

#: ``on_episodes(k, episodes)``: sees the episodes sampled after k inner steps.
EpisodeHook = Callable[[int, Episodes], None]
EnvWrapper = Callable[[gym.vector.VectorEnv], gym.vector.VectorEnv]


class RLMetaLearner:
    """Policy, baseline, samplers and meta-optimizer of an RL MAML run."""

    def __init__(self, config: Config, family: TaskFamily, device: str) -> None:
        self.config, self.family, self.device = config, family, device
        self.model = build_model(
            config.policy, family.observation_space, family.action_space, supervised=False
        ).to(device)
        self.horizon = config.sampling.horizon or family.max_episode_steps
        if not self.horizon:
            raise ValueError(f"sampling.horizon: 0 needs env '{family.env_id}' to be registered "
                             "with max_episode_steps; set sampling.horizon to a positive integer")
        self.baseline = LinearFeatureBaseline()
        self.inner_loss = INNER_RL_OBJECTIVES[config.inner.objective]
        # ANIL (Raghu et al. 2020): only the policy's last layer adapts in the inner loop; the
        # body and the log-std are meta-learned through the head's adaptation.
        self.trainable = (head_parameter_names(self.model) if config.algorithm == "anil"
                          else None)
        # Meta-SGD (Li et al. 2017): one learned inner rate per parameter, initialised at
        # inner.lr, meta-learned with theta and used for every inner step and at evaluation.
        self.rates: dict[str, torch.nn.Parameter] | None = None
        if config.algorithm == "metasgd":
            self.rates = initial_rates(self.model, config.inner_step_sizes()[0])
        self.batching = config.task_batching(supervised=False, device=device)
        # ProMP's update is Adam steps on its clipped objective (meta.lr, ProMP: 1e-3).
        self.optimizer = (
            None if config.meta.optimizer == "trpo"
            else make_plain_optimizer(config.meta, self.meta_parameters())
        )
        s = config.sampling
        self.eval_family = evaluation_family(family, config.evaluation.env_kwargs,
                                             config.env.module)
        self.support_sampler = self._sampler(s.meta_batch_size, s.support_size, config.seed)
        self.query_sampler = self._sampler(s.meta_batch_size, s.query_size, config.seed + 1)
        self._adapt_seconds = 0.0

    def meta_parameters(self) -> list[torch.Tensor]:
        """Every meta-learned tensor: the policy's parameters, then Meta-SGD's rates."""
        return [*self.model.parameters(), *(self.rates or {}).values()]

    def _step_sizes(self, step_sizes: list[float], detach: bool = False) -> list[Any]:
        """The inner step sizes to adapt with: Meta-SGD's learned rates replace each one."""
        if self.rates is None:
            return step_sizes
        rates = {k: v.detach() for k, v in self.rates.items()} if detach else self.rates
        return [rates] * len(step_sizes)

    def _sampler(self, num_tasks: int, episodes: int, seed: int) -> EpisodeSampler:
        return EpisodeSampler(
            self.family.env_id, self.family.env_kwargs, num_tasks, episodes, self.horizon, seed,
            self.device,
        )

    def _process(self, episodes: Episodes) -> dict[str, torch.Tensor]:
        return process_episodes(
            episodes, self.baseline, self.config.inner.gamma, self.config.inner.gae_lambda
        )

    def inner_loop(
        self, sampler: EpisodeSampler, tasks: list[Any], step_sizes: list[float], on_episodes=None,
        policy: torch.nn.Module | None = None,
    ) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor] | None]:
        """``len(step_sizes)`` inner steps with fresh episodes at each: returns the processed
        support batch of every step and the detached adapted parameters stacked per task (None
        for 0 steps). ``on_episodes(k, episodes)`` sees the episodes sampled before step k.
        ``policy`` (default: the meta-learned model) is the module adapted from its own
        parameters: the evaluation adapts the baselines with this same loop."""
        model = self.model if policy is None else policy
        params = {k: v.detach() for k, v in meta_parameters(model).items()}
        supports: list[dict[str, torch.Tensor]] = []
        adapted = None
        for k in range(len(step_sizes)):
            episodes = sampler.sample(tasks, model, adapted if k else params, per_task=k > 0)
            if on_episodes is not None:
                on_episodes(k, episodes)
            supports.append(self._process(episodes))
            start = time.perf_counter()
            # Only the values are needed to sample with: no second-order graph here.
            # The meta-learned policy adapts by its algorithm's rule (ANIL's head, Meta-SGD's
            # rates); the baselines adapt whole, with the configured step sizes.
            own = model is self.model
            sizes = step_sizes[: k + 1]
            if own:
                sizes = self._step_sizes(sizes, detach=True)
            adapted = adapt_tasks(model, params, self.inner_loss, supports, sizes,
                                  first_order=True, batching=self.batching,
                                  trainable=self.trainable if own else None)
            adapted = {name: v.detach() for name, v in adapted.items()}
            self._adapt_seconds += time.perf_counter() - start
        return supports, adapted

    def _outer(
        self, supports, query, old_params, values_only: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-task surrogate and KL of the adapted policies, differentiable in theta unless
        ``values_only`` (line-search evaluations need no graph, which makes them ~3x cheaper)."""
        cfg = self.config
        params = meta_parameters(self.model)
        step_sizes = self._step_sizes(cfg.inner_step_sizes())
        functional = self.batching == "vmap"
        first_order = cfg.inner.first_order or values_only

        def task(task_supports, task_query, task_old):
            adapted = adapt(self.model, params, self.inner_loss, list(task_supports), step_sizes,
                            first_order, self.trainable, functional=functional)
            return (surrogate_loss(self.model, adapted, task_query),
                    kl_divergence(self.model, task_old, adapted, task_query))

        if values_only:
            with torch.no_grad():  # the inner gradient still runs (it enables grad itself)
                return map_tasks(task, supports, query, old_params, batching=self.batching)
        return map_tasks(task, supports, query, old_params, batching=self.batching)

    def meta_iteration(self, tasks: list[Any]) -> dict[str, float]:
        returns: dict[int, float] = {}
        self._adapt_seconds = 0.0
        start = time.perf_counter()
        steps_before = self.support_sampler.steps_sampled + self.query_sampler.steps_sampled
        supports, adapted = self.inner_loop(
            self.support_sampler, tasks, self.config.inner_step_sizes(),
            lambda k, episodes: returns.setdefault(k, episodes.task_returns().mean().item()),
        )
        query_episodes = self.query_sampler.sample(tasks, self.model, adapted, per_task=True)
        query = self._process(query_episodes)
        sampled = time.perf_counter()
        metrics = self._meta_step(supports, query, adapted)
        end = time.perf_counter()
        sampling = sampled - start - self._adapt_seconds
        env_steps = (self.support_sampler.steps_sampled + self.query_sampler.steps_sampled
                     - steps_before)
        metrics.update({
            "return/pre_adaptation": returns[0],
            "return/post_adaptation": query_episodes.task_returns().mean().item(),
            "time/sampling_s": sampling,
            "time/adaptation_s": self._adapt_seconds,
            "time/meta_step_s": end - sampled,
            "perf/env_steps_per_s": env_steps / max(sampling, 1e-9),
        })
        return metrics

    def _ppo_objective(self, supports, query, old_adapted, old_theta):
        """Per-task ProMP terms: the clipped surrogate of the adapted policy on the query
        episodes, the KL of the pre-update policy from ``old_theta`` on the first support batch
        (the inner trust region) and the KL of the adapted policy from the sampling one."""
        cfg = self.config
        params = meta_parameters(self.model)
        step_sizes = self._step_sizes(cfg.inner_step_sizes())
        functional = self.batching == "vmap"

        def task(task_supports, task_query, task_old):
            adapted = adapt(self.model, params, self.inner_loss, list(task_supports), step_sizes,
                            cfg.inner.first_order, self.trainable, functional=functional)
            return (clipped_surrogate_loss(self.model, adapted, task_query, cfg.meta.clip_eps),
                    kl_divergence(self.model, old_theta, params, task_supports[0]),
                    kl_divergence(self.model, task_old, adapted, task_query))

        return map_tasks(task, supports, query, old_adapted, batching=self.batching)

    def _ppo_step(self, supports, query, old_adapted) -> dict[str, float]:
        """ProMP's meta-update: ``ppo_epochs`` Adam steps, each re-adapting from the current
        theta on the same support episodes (Rothfuss et al. 2019, Algorithm 1)."""
        meta = self.config.meta
        old_theta = {k: v.detach().clone() for k, v in meta_parameters(self.model).items()}
        first = 0.0
        for epoch in range(meta.ppo_epochs):
            clipped, inner_kl, _ = self._ppo_objective(supports, query, old_adapted, old_theta)
            loss = clipped.mean() + meta.inner_kl_penalty * inner_kl.mean()
            plain_meta_step(self.optimizer, loss, self.meta_parameters())
            if epoch == 0:
                first = clipped.mean().item()
        with torch.no_grad():
            surrogate, _ = self._outer(supports, query, old_adapted, values_only=True)
            _, inner_kl, kl = self._ppo_objective(supports, query, old_adapted, old_theta)
        return {"surrogate/before": first, "surrogate/after": surrogate.mean().item(),
                "kl": kl.mean().item(), "kl/pre_update": inner_kl.mean().item()}

    def _fisher_product(self, supports, query):
        """Flat ``v -> H v`` of the mean KL over the given tasks (maml_rl/curvature.py)."""
        theta = meta_parameters(self.model)
        cfg = self.config
        products = [
            task_fisher_product(self.model, theta, self.inner_loss,
                                [task_slice(b, i) for b in supports], task_slice(query, i),
                                self._step_sizes(cfg.inner_step_sizes()), cfg.inner.first_order,
                                self.trainable)
            for i in range(query["mask"].shape[0])
        ]
        return flat_product(mean_fisher_product(products), theta)

    def _meta_step(self, supports, query, old_params) -> dict[str, float]:
        meta = self.config.meta
        if meta.optimizer == "ppo":
            return self._ppo_step(supports, query, old_params)
        if meta.optimizer != "trpo":
            surrogate, kl = self._outer(supports, query, old_params)
            loss = surrogate.mean()
            plain_meta_step(self.optimizer, loss, self.meta_parameters())
            return {"surrogate/before": loss.item(), "kl": kl.mean().item()}
        stored: dict[str, torch.Tensor] = {}

        calls = [0]

        def loss_fn() -> torch.Tensor:
            # The first call gives the gradient and the KL graph; line-search calls need values.
            surrogate, kl = self._outer(supports, query, old_params, values_only=calls[0] > 0)
            calls[0] += 1
            stored["kl"] = kl.mean()
            return surrogate.mean()

        curvature_fn = curvature_product = None
        num_tasks = query["mask"].shape[0]
        subset = max(1, math.ceil(meta.hvp_task_fraction * num_tasks))
        # Tasks are i.i.d., so the first ones are a random subset of the meta-batch.
        head = lambda tree: tree_map(lambda v: v[:subset], tree)  # noqa: E731
        if meta.curvature == "fisher":
            curvature_product = self._fisher_product(head(supports), head(query))
        elif subset < num_tasks:

            def curvature_fn() -> torch.Tensor:
                return self._outer(head(supports), head(query), head(old_params))[1].mean()

        info = trpo_step(
            self.meta_parameters(), loss_fn, lambda: stored["kl"], max_kl=meta.max_kl,
            cg_iters=meta.cg_iters, cg_damping=meta.cg_damping,
            backtrack_ratio=meta.ls_backtrack_ratio, ls_max_steps=meta.ls_max_steps,
            curvature_fn=curvature_fn, curvature_product=curvature_product,
        )
        check_finite("surrogate loss", info.loss_before)
        return {
            "surrogate/before": info.loss_before,
            "surrogate/after": info.loss_after,
            "kl": info.kl,
            "trpo/ls_steps": info.ls_steps,
            "trpo/accepted": float(info.accepted),
        }

    def adaptation_rollouts(
        self, tasks: list[Any], steps: int, seed: int, on_episodes: EpisodeHook,
        episodes: int | None = None, policy: torch.nn.Module | None = None,
        env_wrapper: EnvWrapper | None = None,
    ) -> dict[str, torch.Tensor] | None:
        """The evaluation protocol of the MAML paper (Sec. 5.3): adapt to each task with
        ``steps`` inner steps at the evaluation step sizes (``evaluation.lr``, default
        ``inner.lr``), sampling fresh episodes before every step and once more after the last.
        ``on_episodes(k, episodes)`` sees the episodes of the policy after k steps, k = 0..steps.
        Returns the adapted parameters stacked per task (None for 0 steps). Seeded by ``seed``
        (environments and the policy's actions) without disturbing training's RNG state."""
        ev = self.config.evaluation
        model = self.model if policy is None else policy
        family = self.eval_family  # held-out split where evaluation.env_kwargs names one
        sampler = EpisodeSampler(
            family.env_id, family.env_kwargs, len(tasks),
            episodes or ev.support_size or self.config.sampling.support_size, self.horizon,
            seed, self.device, env_wrapper,
        )
        cuda = [torch.device(self.device).index or 0] if self.device.startswith("cuda") else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            _, adapted = self.inner_loop(
                sampler, tasks, self.config.inner_step_sizes(steps, ev.lr), on_episodes, model
            )
            on_episodes(steps, sampler.sample(tasks, model, adapted if steps else
                                              meta_parameters(model), per_task=steps > 0))
        sampler.close()
        return adapted

    def evaluate(self, num_tasks: int, steps: int, seed: int, method: str | None = None,
                 episodes: int | None = None, policy: torch.nn.Module | None = None,
                 env_wrapper: EnvWrapper | None = None,
                 tasks: Sequence[Any] | None = None) -> AdaptationCurve:
        """Mean return per task after 0..steps inner steps on ``num_tasks`` held-out tasks drawn
        with ``seed`` (:meth:`adaptation_rollouts`), or on the given ``tasks`` (anything the
        family's ``set_task`` takes; ``num_tasks`` is then ignored); ``policy`` replaces the
        meta-learned model (the comparison methods), ``env_wrapper`` wraps the batched env (the
        oracle's view)."""
        if tasks is None:
            tasks = self.eval_family.sample_tasks(num_tasks, np.random.default_rng(seed))
        tasks = list(tasks)
        per_step: list[torch.Tensor] = []
        self.adaptation_rollouts(
            tasks, steps, seed, lambda k, eps: per_step.append(eps.task_returns().cpu()),
            episodes, policy, env_wrapper,
        )
        per_task = torch.stack(per_step, dim=1).double().numpy()
        # Named after the meta-learning algorithm by default, as the supervised curves are.
        return AdaptationCurve(method or self.config.algorithm, "return",
                               list(range(steps + 1)), per_task, tasks)

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer else {},
            "support_rng": self.support_sampler.rng_state(),
            "query_rng": self.query_sampler.rng_state(),
            **({"rates": {k: v.detach().clone() for k, v in self.rates.items()}}
               if self.rates is not None else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if self.rates is not None:
            with torch.no_grad():
                for name, value in state["rates"].items():
                    self.rates[name].copy_(value)
        if self.optimizer is not None:
            load_optimizer_state(self.optimizer, state["optimizer"])
        self.support_sampler.set_rng_state(state["support_rng"])
        self.query_sampler.set_rng_state(state["query_rng"])

    def close(self) -> None:
        self.support_sampler.close()
        self.query_sampler.close()
