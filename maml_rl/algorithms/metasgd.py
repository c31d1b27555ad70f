"""Meta-SGD (Li, Zhou, Chen & Li 2017, "Meta-SGD: Learning to Learn Quickly for Few-Shot
Learning").

The inner step is ``theta' = theta - alpha o grad L_s(theta)`` with ``alpha`` a tensor of the
same shape as ``theta`` (one rate per parameter, elementwise product ``o``); ``theta`` and
``alpha`` are meta-learned together by the outer optimizer on the query loss of ``theta'``.
Our ``alpha`` starts at ``inner.lr`` everywhere; it is stored in the checkpoint, and evaluation
adapts with it (so ``evaluation.lr`` does not apply).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from maml_rl.adaptation import LossFn, Params, model_params
from maml_rl.algorithms.maml import MAML
from maml_rl.config import Config, ConfigError


def initial_rates(model: nn.Module, alpha: float) -> dict[str, nn.Parameter]:
    """Meta-SGD's learned rates, one per entry of every parameter of ``model``, all ``alpha``
    (in the checkpoint as the algorithm's ``rates``)."""
    return {name: nn.Parameter(torch.full_like(p.detach(), alpha))
            for name, p in model_params(model).items()}


class MetaSGD(MAML):
    """MAML with a learned per-parameter inner learning rate ``alpha``."""

    fisher_reason = "its learned rates are TRPO parameters too"

    @classmethod
    def check_config(cls, name: str, config: Config) -> None:
        if config.evaluation.lr is not None:
            raise ConfigError(
                f"evaluation.lr: {config.evaluation.lr!r} is not used by algorithm '{name}' "
                "(it adapts with its learned rates); allowed: null"
            )
        if isinstance(config.inner.lr, list) and len(set(config.inner.lr)) > 1:
            raise ConfigError(
                f"inner.lr: algorithm '{name}' initialises its learned rates from one number, "
                f"got {config.inner.lr!r}"
            )

    def __init__(self, config: Config, model: nn.Module, loss_fn: LossFn, batching: str) -> None:
        super().__init__(config, model, loss_fn, batching)
        self.rates: dict[str, nn.Parameter] = initial_rates(model, config.inner_step_sizes()[0])

    def rate(self, step_size: float) -> Params:
        """The learned rates replace the configured step size, in training and evaluation."""
        return self.rates

    def extra_parameters(self) -> dict[str, Tensor]:
        return dict(self.rates)
