"""Probabilistic MAML (Finn, Xu & Levine 2018, "Probabilistic Model-Agnostic Meta-Learning",
PLATIPUS).

MAML learns one initialisation; PLATIPUS learns a distribution over it, so that adapting to an
ambiguous task (five points that fit a sine and a line alike) gives several plausible models.
The model's parameters are the prior mean ``mu``; the algorithm adds, per parameter entry, the
prior std ``sigma`` and the variational posterior's std ``v_q``, and per parameter tensor the
learned step sizes ``gamma_p`` and ``gamma_q`` of the two posterior means.

- **Adaptation** (the paper's Algorithm 2): draw ``theta ~ N(mu - gamma_p grad L(mu, D_s),
  sigma^2)``, then take the inner steps ``phi = theta - alpha grad L(theta, D_s)`` (Eq. 1).
  Each draw is one adapted model.
- **Meta-training** (Algorithm 1): per task, draw ``theta ~ q = N(mu - gamma_q grad L(mu, D_q),
  v_q^2)`` by reparametrisation, adapt it on the support set as above, and minimise the
  negative variational lower bound of Eq. (4),
  ``L(phi, D_q) + kl_weight * KL(q || N(mu - gamma_p grad L(mu, D_s), sigma^2))``,
  averaged over the meta-batch, in ``mu``, ``sigma``, ``v_q``, ``gamma_p`` and ``gamma_q``.

The training draws come from the episode keys of (iteration, task) (:mod:`maml_rl.seeding`), so
a meta-batch split over processes draws what one process draws; adaptation outside training
draws from torch's generator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from maml_rl.adaptation import (
    Batch,
    LossFn,
    Params,
    inner_gradient,
    inner_step,
    map_tasks,
    model_params,
    num_tasks,
)
from maml_rl.algorithms.maml import MAML
from maml_rl.config import Config, ConfigError
from maml_rl.seeding import ALGORITHM_NOISE, EpisodeKey, key_generators


def gaussian_kl(mean_q: Tensor, std_q: Tensor, mean_p: Tensor, std_p: Tensor) -> Tensor:
    """``KL(N(mean_q, std_q^2) || N(mean_p, std_p^2))`` of diagonal Gaussians, summed over
    entries: ``sum log(std_p / std_q) + (std_q^2 + (mean_q - mean_p)^2) / (2 std_p^2) - 1/2``."""
    var_p = std_p.square()
    return (torch.log(std_p / std_q) + (std_q.square() + (mean_q - mean_p).square())
            / (2 * var_p) - 0.5).sum()


class PLATIPUS(MAML):
    """Probabilistic MAML: a learned Gaussian over the initialisation, sampled at adaptation."""

    supports_rl: ClassVar[bool] = False
    #: Adapting twice to the same data gives two different models (plots draw several).
    stochastic: ClassVar[bool] = True

    @classmethod
    def check_config(cls, name: str, config: Config) -> None:
        if config.inner.first_order:
            raise ConfigError(
                f"inner.first_order: algorithm '{name}' differentiates its posterior means "
                "mu - gamma grad L(mu) in mu; allowed: false"
            )

    def __init__(self, config: Config, model: nn.Module, loss_fn: LossFn, batching: str) -> None:
        super().__init__(config, model, loss_fn, batching)
        settings = config.platipus
        self.kl_weight = settings.kl_weight
        theta = model_params(model)
        log_std, gamma = math.log(settings.init_std), config.inner_step_sizes()[0]

        def tensors(value: float, shaped: bool) -> dict[str, nn.Parameter]:
            return {k: nn.Parameter(torch.full_like(p.detach(), value) if shaped
                                    else torch.tensor(value, dtype=p.dtype, device=p.device))
                    for k, p in theta.items()}

        #: log sigma (prior std) and log v_q (posterior std), one per parameter entry.
        self.log_sigma = tensors(log_std, shaped=True)
        self.log_v_q = tensors(log_std, shaped=True)
        #: gamma_p and gamma_q, one step size per parameter tensor.
        self.gamma_p = tensors(gamma, shaped=False)
        self.gamma_q = tensors(gamma, shaped=False)

    def extra_parameters(self) -> dict[str, Tensor]:
        return {f"{group}.{k}": v
                for group, values in (("log_sigma", self.log_sigma), ("log_v_q", self.log_v_q),
                                      ("gamma_p", self.gamma_p), ("gamma_q", self.gamma_q))
                for k, v in values.items()}

    def _shifted_mean(self, theta: Params, gamma: Params, batch: Batch, functional: bool
                      ) -> Params:
        """``mu - gamma grad L(mu, batch)``: the mean of the prior given the support set
        (``gamma_p``) or of the variational posterior given the query set (``gamma_q``)."""
        grads = inner_gradient(self.model, theta, self.loss_fn, batch, first_order=False,
                               functional=functional)
        return {k: theta[k] - gamma[k] * grads[k] for k in theta}

    def inner_step(
        self, theta: Params, phi: Params, batch: Batch, step_size: float, functional: bool,
        first_order: bool | None = None,
    ) -> Params:
        """One step of Algorithm 2. The first step of a chain (``phi is theta``) first draws
        ``theta ~ N(mu - gamma_p grad L(mu, D_s), sigma^2)``; every step is then Eq. (1)."""
        if phi is theta:
            mean = self._shifted_mean(theta, self.gamma_p, batch, functional)
            phi = {k: m + self.log_sigma[k].exp() * torch.randn_like(m)
                   for k, m in mean.items()}
        first_order = self.first_order if first_order is None else first_order
        return inner_step(self.model, phi, self.loss_fn, batch, step_size, first_order,
                          functional=functional)

    def _noise(self, theta: Params, tasks: int, keys: Sequence[EpisodeKey] | None) -> Params:
        """Standard normal draws ``[tasks, *shape]`` per parameter: from the episode keys of
        the meta-batch's tasks when given, else from torch's generator."""
        if keys is None:
            return {k: torch.randn(tasks, *p.shape, dtype=p.dtype, device=p.device)
                    for k, p in theta.items()}
        if len(keys) != tasks:
            raise ValueError(f"{len(keys)} episode keys for {tasks} tasks")
        generators = key_generators(keys, ALGORITHM_NOISE)
        sizes = [p.numel() for p in theta.values()]
        flat = np.stack([g.standard_normal(sum(sizes)) for g in generators])
        out, offset = {}, 0
        for (k, p), size in zip(theta.items(), sizes, strict=True):
            values = flat[:, offset:offset + size].reshape(tasks, *p.shape)
            out[k] = torch.as_tensor(values, dtype=p.dtype, device=p.device)
            offset += size
        return out

    def variational_terms(self, support: Batch, query: Batch,
                          keys: Sequence[EpisodeKey] | None = None) -> tuple[Tensor, Tensor]:
        """Per task of the meta-batch: the query loss after adapting a draw of ``q``, and
        ``KL(q || p(theta | D_s))`` (the two terms of Eq. 4), differentiable in every
        meta-parameter."""
        theta = model_params(self.model)
        sizes = self.config.inner_step_sizes()
        noise = self._noise(theta, num_tasks(query), keys)

        def task_terms(task_support: Batch, task_query: Batch, eps: Params
                       ) -> tuple[Tensor, Tensor]:
            functional = self.functional
            mean_q = self._shifted_mean(theta, self.gamma_q, task_query, functional)
            std_q = {k: v.exp() for k, v in self.log_v_q.items()}
            phi = {k: mean_q[k] + std_q[k] * eps[k] for k in theta}
            for alpha in sizes:
                phi = inner_step(self.model, phi, self.loss_fn, task_support, alpha,
                                 functional=functional)
            mean_p = self._shifted_mean(theta, self.gamma_p, task_support, functional)
            kl = sum(gaussian_kl(mean_q[k], std_q[k], mean_p[k], self.log_sigma[k].exp())
                     for k in theta)
            return self.loss_fn(self.model, phi, task_query), kl

        return map_tasks(task_terms, support, query, noise, batching=self.batching)

    def meta_gradient(self, support: Batch, query: Batch,
                      keys: Sequence[EpisodeKey] | None = None) -> tuple[list[Tensor], Tensor]:
        """The gradient of the mean of Eq. (4)'s negative lower bound over the meta-batch."""
        losses, kls = self.variational_terms(support, query, keys)
        self._kls = kls.detach()
        return self.gradient((losses + self.kl_weight * kls).mean()), losses.detach()

    def task_metrics(self) -> dict[str, Tensor]:
        """The KL term of each task of the last meta-batch (logged as ``platipus/kl``)."""
        kls = getattr(self, "_kls", None)
        return {} if kls is None else {"platipus/kl": kls}

    def after_meta_step(self) -> dict[str, float]:
        """The mean prior std, to watch the prior widen or collapse."""
        sigma = torch.cat([v.detach().exp().reshape(-1) for v in self.log_sigma.values()])
        return {"platipus/prior_std": float(sigma.mean())}
