"""The meta-loss landscape of a regression run: why MAML's initialisation is not the pretrained
model's (the picture of the interactive MAML introduction this suite builds on).

On the plane through MAML's parameters ``theta`` and the pretrained model's ``phi``
(:mod:`maml_rl.supervised_baseline`), spanned by ``d1 = phi - theta`` and a random direction
``d2`` orthogonal to it and as long, the figure draws for each number of inner steps ``m`` the
meta-loss ``L_m(p) = mean over tasks of the query loss after m gradient steps from p on the
task's support shots`` (MAML's objective, Eq. 2, with ``m`` steps; ``m = 0`` is the pretrained
model's objective). ``theta`` sits at (0, 0), ``phi`` at (1, 0): with ``m = 0`` the minimum is
near ``phi``, with ``m >= 1`` near ``theta``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from maml_rl.adaptation import adapted_losses, model_params
from maml_rl.plots import save_figure
from maml_rl.sampling import SupervisedSampler, split_shots
from maml_rl.seeding import EVALUATION_STREAM, episode_keys


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model_params(model).values()])


def _unflat(vector: torch.Tensor, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out, offset = {}, 0
    for name, p in like.items():
        out[name] = vector[offset:offset + p.numel()].view_as(p)
        offset += p.numel()
    return out


def meta_loss_landscape(learner: Any, pretrained: nn.Module, inner_steps: Sequence[int],
                        num_tasks: int = 25, points: int = 25, seed: int = 0
                        ) -> dict[str, Any]:
    """``{"alphas", "betas", "losses": {m: [points, points]}}``: the mean query loss after
    ``m`` steps of the run's step sizes (``evaluation.lr``, else ``inner.lr``) over
    ``num_tasks`` held-out tasks drawn with ``seed``, at ``theta + alpha d1 + beta d2`` (see
    the module docstring)."""
    config, family, model = learner.config, learner.eval_family, learner.model
    ev, s = config.evaluation, config.sampling
    support_size = ev.support_size or s.support_size
    query_size = ev.query_size or s.query_size
    tasks = family.sample_tasks(num_tasks, np.random.default_rng(seed))
    sampler = SupervisedSampler(family.env_id, family.env_kwargs, num_tasks,
                                support_size + query_size, seed, learner.device)
    # The held-out evaluation's shots (maml_rl.evaluation.evaluate_supervised): the landscape
    # at MAML's and the pretrained model's points is their evaluated loss.
    keys = episode_keys(seed, EVALUATION_STREAM, 0, 0, range(num_tasks))
    support, query = split_shots(sampler.sample(tasks, keys), support_size)
    sampler.close()
    like = model_params(model)
    theta, phi = _flat(model), _flat(pretrained)
    d1 = phi - theta
    generator = torch.Generator().manual_seed(seed)
    d2 = torch.randn(d1.shape, generator=generator).to(d1)
    d2 -= (d2 @ d1) / (d1 @ d1) * d1
    d2 *= d1.norm() / d2.norm()
    # Odd point counts put grid points on theta (0, 0) and phi (1, 0).
    alphas = np.linspace(-0.5, 1.5, points)
    betas = np.linspace(-1.0, 1.0, points)
    losses = {}
    for m in inner_steps:
        sizes = config.inner_step_sizes(m, ev.lr) if m else []
        grid = np.zeros((points, points))
        for i, b in enumerate(betas):
            for j, a in enumerate(alphas):
                params = _unflat(theta + float(a) * d1 + float(b) * d2, like)
                with torch.no_grad():  # torch.func.grad inside still differentiates
                    grid[i, j] = adapted_losses(model, params, learner.loss_fn, support, query,
                                                sizes, first_order=True,
                                                batching="vmap").mean().item()
        losses[int(m)] = grid
    return {"alphas": alphas, "betas": betas, "losses": losses}


def plot_landscape(landscape: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """One panel per number of inner steps: log10 of the meta-loss over the plane, MAML's
    parameters (circle), the pretrained model's (square) and the panel's lowest point (star)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    alphas, betas, losses = landscape["alphas"], landscape["betas"], landscape["losses"]
    fig, axes = plt.subplots(1, len(losses), figsize=(4.0 * len(losses), 3.6), squeeze=False)
    for ax, (m, grid) in zip(axes[0], losses.items(), strict=True):
        # Two decades above the panel's lowest loss; higher and diverged (non-finite) points
        # take the top colour, so that a few exploding adaptations do not flatten the rest.
        values = np.log10(np.clip(np.where(np.isfinite(grid), grid, np.inf), 1e-6, None))
        low = float(np.min(values))
        levels = np.linspace(low, low + 2.0, 21)
        contour = ax.contourf(alphas, betas, np.minimum(values, levels[-1] + 1.0),
                              levels=levels, cmap="viridis", extend="max")
        fig.colorbar(contour, ax=ax, label="log10 meta-loss")
        i, j = np.unravel_index(np.argmin(values), grid.shape)
        ax.plot(0, 0, "o", color="w", mec="k", ms=8, label="MAML")
        ax.plot(1, 0, "s", color="w", mec="k", ms=8, label="pretrained")
        ax.plot(alphas[j], betas[i], "*", color="tab:red", mec="k", ms=13, label="lowest")
        objective = "no adaptation (pretraining's objective)" if m == 0 else \
            f"after {m} inner step{'s' if m != 1 else ''}"
        row = grid[np.argmin(np.abs(betas))]  # beta = 0: the line through both models
        maml, pretrained = row[np.argmin(np.abs(alphas))], row[np.argmin(np.abs(alphas - 1))]
        ax.set_title(f"{objective}\nMAML {maml:.3g}, pretrained {pretrained:.3g}",
                     fontsize="small")
        ax.set_xlabel("towards pretrained (d1)")
        ax.set_ylabel("random direction (d2)")
    axes[0, 0].legend(fontsize="x-small", loc="lower left")
    return save_figure(fig, path, title)
