"""ANIL, "almost no inner loop" (Raghu, Raghu, Bengio & Vinyals 2020, "Rapid Learning or
Feature Reuse? Towards Understanding the Effectiveness of MAML", Sec. 4).

Only the head, the model's last layer, adapts in the inner loop; the body is shared by every
task's adapted model and is still meta-learned in the outer loop, its meta-gradient flowing
through the head's adaptation (second order unless ``inner.first_order``).
"""

from __future__ import annotations

from torch import nn

from maml_rl.adaptation import LossFn
from maml_rl.algorithms.maml import MAML
from maml_rl.config import Config


def head_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters of the model's last layer: the last submodule, in registration
    order, that owns parameters itself (``net.4.weight``, ``net.4.bias`` for the MLP)."""
    owners = [(name, m) for name, m in model.named_modules()
              if next(m.parameters(recurse=False), None) is not None]
    if not owners:
        raise ValueError(f"{type(model).__name__} has no parameters to adapt")
    prefix, last = owners[-1]
    return [f"{prefix}.{n}" if prefix else n for n, _ in last.named_parameters(recurse=False)]


class ANIL(MAML):
    """MAML whose inner loop adapts only :func:`head_parameter_names`."""

    def __init__(self, config: Config, model: nn.Module, loss_fn: LossFn, batching: str) -> None:
        super().__init__(config, model, loss_fn, batching)
        self.trainable = head_parameter_names(model)
