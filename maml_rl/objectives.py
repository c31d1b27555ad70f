"""Supervised inner/outer losses. They read the targets that the one-step envs return in
``info["target"]`` and compute the exact loss, so results compare with the paper's."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from maml_rl.adaptation import Batch, Params, forward


def mse_loss(model: nn.Module, params: Params, batch: Batch) -> Tensor:
    """Mean squared error of the regression (MAML paper, Sec. 5.1)."""
    return F.mse_loss(forward(model, params, batch["inputs"]), batch["targets"])


def cross_entropy_loss(model: nn.Module, params: Params, batch: Batch) -> Tensor:
    """Cross-entropy of the logits against integer labels (few-shot classification)."""
    logits = forward(model, params, batch["inputs"])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["targets"].reshape(-1))


def accuracy(model: nn.Module, params: Params, batch: Batch) -> Tensor:
    """Fraction of correctly classified inputs."""
    logits = forward(model, params, batch["inputs"])
    return (logits.argmax(-1) == batch["targets"]).float().mean()


SUPERVISED_LOSSES = {"mse": mse_loss, "cross_entropy": cross_entropy_loss}
