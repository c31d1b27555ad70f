"""ProMP's meta-update, ``meta.optimizer: ppo`` (Rothfuss et al. 2019, "ProMP: Proximal
Meta-Policy Search", Algorithm 1).

``meta.ppo_epochs`` Adam steps on the same episodes, each re-adapting from the current theta: the
clipped surrogate of the adapted policies on the query episodes (PPO's Eq. 7 with the
likelihood ratio against the sampling policies) plus ``meta.inner_kl_penalty`` times the KL of
the pre-update policy from the iteration's theta on the first support batch (the inner trust
region, a fixed coefficient here), usually with the low-variance inner objective
(``inner.objective: lvc``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from maml_rl.config import Config
from maml_rl.meta_updates.base import MetaUpdate, apply_meta_gradient, check_finite


class ProMPMetaUpdate(MetaUpdate):
    """``ppo_epochs`` Adam steps (``meta.lr``) on ProMP's clipped, KL-penalised objective."""

    needs_policy = True

    def __init__(self, config: Config, parameters: Sequence[Tensor]) -> None:
        super().__init__(config, parameters)
        self.optimizer = torch.optim.Adam(parameters, lr=config.meta.lr)

    def step(self, batch: Any) -> dict[str, float]:
        meta = self.config.meta
        old_theta = batch.theta()
        params = batch.meta_parameters
        first = 0.0
        for epoch in range(meta.ppo_epochs):
            grads, objective, clipped = batch.ppo_gradient(old_theta, meta.inner_kl_penalty)
            check_finite("meta-loss", objective)
            apply_meta_gradient(self.optimizer, params, grads)
            if epoch == 0:
                first = clipped.item()
        with torch.no_grad():
            surrogate, _ = batch.losses(values_only=True)
            (surrogate,) = batch.task_means(surrogate)
        inner_kl, kl = batch.ppo_kls(old_theta)
        return {"surrogate/before": first, "surrogate/after": surrogate.item(),
                "kl": kl.item(), "kl/pre_update": inner_kl.item()}
