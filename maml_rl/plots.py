"""Training curves of runs from their ``metrics.csv``.

:func:`plot_runs` draws one line per run and metric (raw values faint, a running mean solid);
runs whose configs differ only in ``seed`` form a group drawn as the mean over seeds with a band
of one standard deviation, so several seeds of one config read as one curve with its spread.
``scripts/plot.py`` is its command line; the results pages' ``training.png`` use it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from maml_rl.config import load_config
from maml_rl.logger import read_metrics


def save_figure(fig: Any, path: str | Path, title: str = "", dpi: int = 110) -> Path:
    """Head ``fig`` with ``title`` (when given), lay it out, write it to ``path`` (PNG) and
    close it; returns the path."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title, fontsize="small")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def default_metrics(run_dir: str | Path) -> list[str]:
    """Pre- and post-adaptation return (RL) or loss (supervised)."""
    kind = "return" if "return/post_adaptation" in read_metrics(run_dir)[0] else "loss"
    return [f"{kind}/pre_adaptation", f"{kind}/post_adaptation"]


def group_by_config(run_dirs: Sequence[str | Path]) -> dict[str, list[Path]]:
    """Runs keyed by a label of their config without its seed (the group of seeds)."""
    groups: dict[str, list[Path]] = {}
    keys: dict[str, str] = {}
    for run in map(Path, run_dirs):
        config = load_config(run / "config.yaml").to_dict()
        config.pop("seed", None)
        key = repr(sorted(config.items()))
        label = keys.setdefault(key, run.name)
        groups.setdefault(label, []).append(run)
    return groups


def plot_runs(run_dirs: Sequence[str | Path], path: str | Path,
              metrics: Sequence[str] | None = None, smooth: int = 10, title: str = "") -> Path:
    """Write ``path`` (PNG): ``metrics`` (default :func:`default_metrics` of the first run) per
    meta-iteration for every group of :func:`group_by_config`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(metrics or default_metrics(run_dirs[0]))
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    for label, runs in group_by_config(run_dirs).items():
        tables = [read_metrics(run) for run in runs]
        length = min(len(t) for t in tables)
        iterations = np.array([r["iteration"] for r in tables[0][:length]])
        for metric in metrics:
            values = np.array([[r.get(metric, np.nan) for r in t[:length]] for t in tables])
            width = max(1, min(smooth, length))
            kernel = np.ones(width) / width
            smoothed = np.array([np.convolve(v, kernel, mode="valid") for v in values])
            name = metric if len(run_dirs) == 1 else f"{label}: {metric}"
            if len(runs) == 1:
                (line,) = ax.plot(iterations, values[0], alpha=0.25)
                ax.plot(iterations[width - 1:], smoothed[0], color=line.get_color(),
                        label=f"{name} (running mean of {width})")
                continue
            mean, std = smoothed.mean(0), smoothed.std(0)
            (line,) = ax.plot(iterations[width - 1:], mean,
                              label=f"{name}, mean of {len(runs)} seeds ± 1 sd")
            ax.fill_between(iterations[width - 1:], mean - std, mean + std,
                            color=line.get_color(), alpha=0.2)
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel(metrics[0].split("/")[0] if len({m.split("/")[0] for m in metrics}) == 1
                  else "value")
    if not title:
        first = Path(run_dirs[0])
        config = load_config(first / "config.yaml")
        iterations_done = len(read_metrics(first))
        title = f"{config.env.id}, {', '.join(Path(r).name for r in run_dirs)}, " \
                f"{iterations_done} iterations"
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
