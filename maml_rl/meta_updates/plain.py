"""Plain meta-updates, ``meta.optimizer: adam`` or ``sgd``: one optimizer step along the
meta-gradient, MAML's Eq. (3) ``theta <- theta - beta grad_theta sum_i L_i(theta_i')`` (with
Adam's moments for ``adam``). The meta-gradient is whatever the algorithm defines: the gradient
through the adaptation for MAML, Reptile's ``theta - mean_i theta_i``, iMAML's implicit one."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from maml_rl.config import Config
from maml_rl.meta_updates.base import MetaBatch, MetaUpdate, apply_meta_gradient, set_lr


class PlainMetaUpdate(MetaUpdate):
    """Adam (``meta.optimizer: adam``) or SGD (``sgd``) with ``meta.lr``."""

    def __init__(self, config: Config, parameters: Sequence[Tensor]) -> None:
        super().__init__(config, parameters)
        self.optimizer = make_plain_optimizer(config.meta, parameters)

    def step(self, batch: MetaBatch) -> dict[str, float]:
        lr = batch.outer_lr()
        if lr is not None:
            set_lr(self.optimizer, lr)
        grads, metrics = batch.meta_gradient()
        apply_meta_gradient(self.optimizer, batch.meta_parameters, grads)
        return {**metrics, **batch.after_step()}


def make_plain_optimizer(meta_config, parameters: Sequence[Tensor]) -> torch.optim.Optimizer:
    """Adam or SGD over the meta-parameters with ``meta.lr``."""
    if meta_config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=meta_config.lr)
    return torch.optim.Adam(parameters, lr=meta_config.lr)
