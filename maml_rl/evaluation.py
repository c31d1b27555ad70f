"""Adaptation curves on held-out tasks: performance after 0..K inner steps, with 95% CIs.

The curve is what the MAML paper reports (Fig. 2 and 5): adapt with the one
:func:`maml_rl.adaptation.adapt` implementation, one step at a time, and measure after each.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.func import vmap

from envs.tasks import task_to_json, thaw_task
from maml_rl.adaptation import (
    LossFn,
    Params,
    StepFn,
    forward,
    gradient_step,
    model_params,
    task_slice,
)
from maml_rl.plots import save_figure
from maml_rl.sampling import SupervisedSampler, split_shots
from maml_rl.seeding import EVALUATION_STREAM, episode_keys, seeded_torch

if TYPE_CHECKING:
    from maml_rl.learners.reinforcement import RLMetaLearner

#: Metrics that are scores (higher is better); every other metric is a loss.
HIGHER_IS_BETTER = frozenset({"return", "accuracy"})
#: A task diverges at step k when its loss there exceeds this many times its best loss at an
#: earlier step (or is non-finite): :attr:`AdaptationCurve.diverged`.
DIVERGENCE_FACTOR = 3.0


@dataclass
class AdaptationCurve:
    """One method's performance after 0..K steps over the same held-out tasks.

    ``flat`` marks a method that is not adapted (the paper's oracle): it has one column, step 0,
    and is drawn as a horizontal line across the other methods' steps. ``success`` ([num_tasks,
    K + 1]) is the share of each task's episodes that solved it, for a family that reports
    success (Meta-World); None otherwise.
    """

    method: str
    metric: str
    steps: list[int]
    per_task: np.ndarray  # [num_tasks, K + 1]
    tasks: list[Any] = field(default_factory=list)
    flat: bool = False
    success: np.ndarray | None = None
    #: The evaluation settings it was measured with (:func:`evaluation_settings`); None for a
    #: curve written before they were recorded.
    settings: dict[str, Any] | None = None

    @property
    def success_mean(self) -> list[float] | None:
        """Mean success rate over tasks per step (None without success)."""
        return None if self.success is None else self.success.mean(axis=0).tolist()

    @property
    def mean(self) -> list[float]:
        return self.per_task.mean(axis=0).tolist()

    @property
    def ci95(self) -> list[float]:
        """Half-width of the normal-approximation 95% confidence interval of the mean."""
        return _ci95(self.per_task)

    @property
    def lower_is_better(self) -> bool:
        """Whether the metric is a loss (``mse``, ``loss``...) rather than a score (``return``,
        ``accuracy``)."""
        return self.metric not in HIGHER_IS_BETTER

    @property
    def median(self) -> list[float]:
        """Median over tasks per step. A non-finite value (a task whose adaptation overflowed)
        counts as the worst possible one, so that a few diverging tasks cannot hide in a NaN
        median, nor move it more than a few ordinary tasks would."""
        worst = np.inf if self.lower_is_better else -np.inf
        values = np.where(np.isfinite(self.per_task), self.per_task, worst)
        return np.median(values, axis=0).tolist()

    @property
    def diverged(self) -> list[int]:
        """Number of tasks diverging at each step: the value is non-finite or, for a loss, more
        than :data:`DIVERGENCE_FACTOR` times the task's best value at an earlier step. The mean
        alone hides both cases: a handful of tasks with a huge loss (or inf) dominate it while
        the others improve, and the CI then only says that the mean is uncertain."""
        values = self.per_task
        count = (~np.isfinite(values)).sum(axis=0)
        if self.lower_is_better and values.shape[1] > 1:
            # NaN (from inf - inf, inf * 0 in an overflowing step) compares False: the
            # non-finite count above already has it.
            with np.errstate(invalid="ignore"):
                best = np.fmin.accumulate(values, axis=1)[:, :-1]
                worse = values[:, 1:] > DIVERGENCE_FACTOR * best
            count[1:] += (worse & np.isfinite(values[:, 1:])).sum(axis=0)
        return [int(c) for c in count]

    @property
    def change(self) -> list[float]:
        """Per step, the mean over tasks of each task's change from its own 0-step value
        (0.0 at step 0). The mean of the per-task differences equals the difference of the
        means, but its confidence interval (:attr:`change_ci95`) is the paired one: the spread
        between tasks, which both ends share, cancels, so it says whether adaptation helps
        when the unpaired intervals of the two means overlap."""
        return _paired_change(self.per_task)[0]

    @property
    def change_ci95(self) -> list[float]:
        """Half-width of the 95% confidence interval of :attr:`change` (normal approximation
        over the per-task differences; 0.0 at step 0, NaN for fewer than two tasks)."""
        return _paired_change(self.per_task)[1]

    @property
    def improved(self) -> list[int]:
        """Per step, the number of tasks better than at 0 steps (a lower loss, a higher score);
        a non-finite value is never better."""
        base = self.per_task[:, :1]
        with np.errstate(invalid="ignore"):
            better = (self.per_task < base) if self.lower_is_better else (self.per_task > base)
        return [int(n) for n in (better & np.isfinite(self.per_task)).sum(axis=0)]

    @property
    def success_change(self) -> tuple[list[float], list[float]] | None:
        """:attr:`change` and its CI for the success rate (None without success)."""
        return None if self.success is None else _paired_change(self.success)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "steps": self.steps,
            "mean": self.mean,
            "ci95": self.ci95,
            "tasks": [task_to_json(t) for t in self.tasks],
            "per_task": self.per_task.tolist(),
            "flat": self.flat,
            "median": self.median,
            "diverged": self.diverged,
            "change": self.change,
            "change_ci95": self.change_ci95,
            "improved": self.improved,
            **({} if self.success is None else {
                "success_mean": self.success_mean,
                "success_per_task": self.success.tolist(),
                "success_change": self.success_change[0],
                "success_change_ci95": self.success_change[1]}),
            **({} if self.settings is None else {"settings": self.settings}),
        }

    @classmethod
    def from_dict(cls, method: str, data: dict[str, Any]) -> AdaptationCurve:
        """Inverse of :meth:`to_dict` (tasks stay as read from JSON); files written before
        ``flat`` existed read as adapted methods."""
        success = data.get("success_per_task")
        return cls(method, data["metric"], list(data["steps"]),
                   np.asarray(data["per_task"], dtype=np.float64), list(data.get("tasks", [])),
                   bool(data.get("flat", False)),
                   None if success is None else np.asarray(success, dtype=np.float64),
                   data.get("settings"))


def _ci95(per_task: np.ndarray) -> list[float]:
    """Per column of ``[tasks, steps]`` values: the half-width of the normal-approximation 95%
    confidence interval of the mean over tasks (NaN for fewer than two tasks)."""
    n = per_task.shape[0]
    if n < 2:
        return [float("nan")] * per_task.shape[1]
    with np.errstate(invalid="ignore"):  # a column with inf has a NaN interval (inf - inf)
        return (1.96 * per_task.std(axis=0, ddof=1) / math.sqrt(n)).tolist()


def _paired_change(per_task: np.ndarray) -> tuple[list[float], list[float]]:
    """Per column of ``[tasks, steps]`` values: the mean over tasks of the difference from the
    task's first column, and the half-width of its 95% confidence interval."""
    with np.errstate(invalid="ignore"):  # inf - inf in a diverged task: NaN
        diff = per_task - per_task[:, :1]
    return diff.mean(axis=0).tolist(), _ci95(diff)


def evaluation_settings(config: Any, num_tasks: int, steps: int, seed: int) -> dict[str, Any]:
    """What a curve records of how it was measured: the run's ``evaluation`` section as used,
    with the held-out tasks' number and seed and the steps of this evaluation (so that
    :mod:`maml_rl.results_tables` can print the command that reproduces it)."""
    return {**config.to_dict()["evaluation"], "num_tasks": num_tasks, "steps": steps,
            "seed": seed}


def batched_metric(metric_fn: LossFn, query_batch: int) -> LossFn:
    """``metric_fn`` averaged over consecutive batches of ``query_batch`` query examples, each
    predicted on its own (batch norm then normalises with that batch's statistics); 0 returns
    ``metric_fn`` unchanged. The batches have equal size, so the average of their means is the
    mean over all examples."""
    if not query_batch:
        return metric_fn

    def metric(model: nn.Module, params: Params, batch: Any) -> torch.Tensor:
        shots = batch[0].shape[0]
        batches = type(batch)(*(v.reshape(shots // query_batch, query_batch, *v.shape[1:])
                                for v in batch))
        return vmap(lambda b: metric_fn(model, params, b))(batches).mean()

    return metric


def evaluate_supervised(
    model: nn.Module,
    params: Params,
    loss_fn: LossFn,
    env_id: str,
    env_kwargs: dict[str, Any],
    tasks: Sequence[Any],
    support_size: int,
    query_size: int,
    step_sizes: Sequence[float],
    seed: int,
    metric_fn: LossFn | None = None,
    metric: str = "mse",
    method: str = "maml",
    batching: str = "vmap",
    chunk_size: int = 200,
    device: str | torch.device = "cpu",
    step_fn: StepFn | None = None,
    query_batch: int = 0,
    first_task: int = 0,
) -> AdaptationCurve:
    """Adapt to each task on ``support_size`` shots with ``len(step_sizes)`` steps (the same
    support set at each step, as in the paper) and measure ``metric_fn`` (default: the loss) on
    ``query_size`` fresh shots after 0..K steps. ``step_fn`` is the algorithm's inner step
    (:meth:`maml_rl.algorithms.Algorithm.inner_step`, the one training adapts with);
    None is MAML's plain gradient step. ``query_batch`` > 0 measures the metric on consecutive
    query batches of that size and averages them (``EvaluationConfig.query_batch``). The shots
    of ``tasks[i]`` are seeded by ``seed`` and its index ``first_task + i`` in the whole
    held-out set, whatever the chunks or processes the set is split into."""
    metric_fn = batched_metric(metric_fn or loss_fn, query_batch)
    params = {k: v.detach() for k, v in params.items()}
    step_fn = step_fn or gradient_step(model, loss_fn)

    def curve(support, query) -> torch.Tensor:
        values, adapted = [metric_fn(model, params, query)], params
        for alpha in step_sizes:
            adapted = step_fn(params, adapted, support, alpha, functional)
            values.append(metric_fn(model, adapted, query))
        return torch.stack(values)

    functional = batching == "vmap"
    rows = []
    for start in range(0, len(tasks), chunk_size):
        chunk = list(tasks[start : start + chunk_size])
        sampler = SupervisedSampler(
            env_id, env_kwargs, len(chunk), support_size + query_size, seed + start, device
        )
        ids = range(first_task + start, first_task + start + len(chunk))
        shots = sampler.sample(chunk, episode_keys(seed, EVALUATION_STREAM, 0, 0, ids))
        support, query = split_shots(shots, support_size)
        sampler.close()
        with torch.no_grad():  # torch.func.grad inside still differentiates the inner loss
            if batching == "vmap":
                rows.append(vmap(curve, randomness="different")(support, query))
            else:
                rows.append(
                    torch.stack(
                        [
                            curve(task_slice(support, i), task_slice(query, i))
                            for i in range(len(chunk))
                        ]
                    )
                )
    per_task = torch.cat(rows).cpu().numpy().astype(np.float64)
    return AdaptationCurve(method, metric, list(range(len(step_sizes) + 1)), per_task, list(tasks))


def rl_adaptation_rollouts(
    learner: RLMetaLearner, tasks: list[Any], steps: int, seed: int,
    on_episodes: Callable[[int, Any], None], episodes: int | None = None,
    policy: torch.nn.Module | None = None, env_wrapper: Callable[[Any], Any] | None = None,
    first_task: int = 0,
) -> Params | None:
    """The evaluation protocol of the MAML paper (Sec. 5.3): adapt to each task with
    ``steps`` inner steps at the evaluation step sizes (``evaluation.lr``, default
    ``inner.lr``), sampling fresh episodes before every step and once more after the last.
    ``on_episodes(k, episodes)`` sees the episodes of the policy after k steps, k = 0..steps.
    Returns the adapted parameters stacked per task (None for 0 steps). The episodes of
    ``tasks[i]`` are seeded by ``seed`` and its index ``first_task + i`` in the held-out set
    (environments and the policy's actions), without disturbing training's RNG state."""
    ev = learner.config.evaluation
    model = learner.model if policy is None else policy
    # The held-out split where evaluation.env_kwargs names one.
    sampler = learner.make_sampler(
        learner.eval_family, len(tasks),
        episodes or ev.support_size or learner.config.sampling.support_size, seed, env_wrapper)
    ids = range(first_task, first_task + len(tasks))

    def keys(k: int) -> list:
        return episode_keys(seed, EVALUATION_STREAM, 0, k, ids)

    _, adapted = learner.inner_loop(
        sampler, tasks, learner.config.inner_step_sizes(steps, ev.lr), on_episodes, model, keys
    )
    on_episodes(steps, sampler.sample(tasks, model, adapted if steps else model_params(model),
                                      per_task=steps > 0, keys=keys(steps)))
    sampler.close()
    return adapted


def evaluate_rl(
learner: RLMetaLearner, num_tasks: int, steps: int, seed: int, method: str | None = None,
episodes: int | None = None, policy: torch.nn.Module | None = None,
env_wrapper: Callable[[Any], Any] | None = None, tasks: Sequence[Any] | None = None,
) -> AdaptationCurve:
    """Mean return per task after 0..steps inner steps on ``num_tasks`` held-out tasks drawn
    with ``seed`` (:func:`rl_adaptation_rollouts`), or on the given ``tasks`` (anything the
    family's ``set_task`` takes; ``num_tasks`` is then ignored); ``policy`` replaces the
    meta-learned model (the comparison methods), ``env_wrapper`` wraps the batched env (the
    oracle's view)."""
    if tasks is None:
        tasks = learner.eval_family.sample_tasks(num_tasks, np.random.default_rng(seed))
    tasks = list(tasks)

    def chunk(local: list[Any], first: int) -> np.ndarray:
        per_step: list[torch.Tensor] = []

        def record(k: int, eps: Any) -> None:
            success = eps.task_success()  # a second block of columns, for families with it
            per_step.append(eps.task_returns().cpu() if success is None else
                            torch.stack([eps.task_returns().cpu(), success.cpu()], dim=1))

        rl_adaptation_rollouts(learner, local, steps, seed, record, episodes, policy,
                               env_wrapper, first)
        values = torch.stack(per_step, dim=1).double().numpy()
        return values if values.ndim == 2 else np.concatenate([values[..., 0], values[..., 1]],
                                                              axis=1)

    def shard(local: list[Any], first: int) -> np.ndarray:
        # evaluation.task_chunk tasks at a time: the same numbers (seeded per task index),
        # fewer envs alive at once.
        size = learner.config.evaluation.task_chunk or len(local)
        return np.concatenate([chunk(local[i:i + size], first + i)
                               for i in range(0, len(local), size)])

    # Under torchrun every process evaluates its share of the tasks.
    per_task = learner.group.map_tasks(tasks, shard)
    success = None
    if per_task.shape[1] == 2 * (steps + 1):
        per_task, success = per_task[:, : steps + 1], per_task[:, steps + 1:]
    # Named after the meta-learning algorithm by default, as the supervised curves are.
    return AdaptationCurve(method or learner.config.algorithm, "return",
                           list(range(steps + 1)), per_task, tasks, success=success)


def reference_curves(family: Any, tasks: Sequence[Any], horizon: int | None
                     ) -> list[AdaptationCurve]:
    """Flat curves, one per reference policy a family declares (its env's optional
    ``reference_returns(tasks, horizon) -> {name: per-task expected return}``, e.g. the
    uniformly random and the optimal policy of a bandit), on the held-out ``tasks``: what
    adaptation buys, drawn as horizontal lines beside the adapted curve. Named
    ``"NAME (reference)"``; none for a family without them."""
    references = getattr(family.unwrapped, "reference_returns", None)
    if references is None or horizon is None or not tasks:
        return []
    values = references([thaw_task(t) for t in tasks], int(horizon))
    return [AdaptationCurve(f"{name} (reference)", "return", [0],
                            np.asarray(v, dtype=np.float64).reshape(-1, 1), list(tasks),
                            flat=True)
            for name, v in values.items()]


def format_table(curves: Sequence[AdaptationCurve]) -> str:
    """A plain-text table: per method a row of mean +- CI per number of steps, then a row of
    medians and one of diverging tasks (:attr:`AdaptationCurve.diverged`), and for an adapted
    method the paired change from 0 steps with its CI (:attr:`AdaptationCurve.change`) and the
    number of tasks it improved; a flat method fills only the 0-step column."""
    steps = max((c.steps for c in curves), key=len)
    rows: list[tuple[str, list[str], str]] = []  # label, one cell per step, note
    for c in curves:
        rows.append((c.method, [f"{_num(m)} ± {_num(h)}" for m, h in zip(c.mean, c.ci95,
                                                                          strict=True)],
                     "   (not adapted)" if c.flat else ""))
        rows.append(("  median", [_num(m) for m in c.median], ""))
        rows.append(("  diverged", [str(d) for d in c.diverged], ""))
        if c.success_mean is not None:
            rows.append(("  success", [f"{s:.3f}" for s in c.success_mean], ""))
        if not c.flat and len(c.steps) > 1:
            # Paired with step 0, task by task: whether adaptation helps beyond the spread
            # between tasks that the means' CIs above include.
            n = c.per_task.shape[0]
            rows.append(("  vs 0 steps", ["", *(f"{_signed(m)} ± {_num(h)}" for m, h in zip(
                c.change[1:], c.change_ci95[1:], strict=True))], ""))
            rows.append(("  improved", ["", *(f"{k}/{n}" for k in c.improved[1:])], ""))
    # Columns as wide as the widest cell, so that large returns (Meta-World's "v1" reward
    # reaches 1e4-1e5 per episode) never run into each other.
    width = max([20, *(len(cell) + 2 for _, cells, _ in rows for cell in cells)])
    label = max([14, *(len(c.method) + 1 for c in curves)])
    lines = [f"{curves[0].metric} on {curves[0].per_task.shape[0]} held-out tasks",
             f"{'method':<{label}}" + "".join(f"{f'{k} steps':>{width}}" for k in steps)]
    lines += [f"{name:<{label}}" + "".join(f"{cell:>{width}}" for cell in cells) + note
              for name, cells, note in rows]
    return "\n".join(lines)


def _signed(value: float) -> str:
    return ("+" if value >= 0 else "") + _num(value)


def _num(value: float) -> str:
    """Three decimals, or three digits with an exponent for a value too large to fit the
    table's column (a diverging task's loss reaches 1e19 before it overflows)."""
    return f"{value:.3f}" if abs(value) < 1e5 or not math.isfinite(value) else f"{value:.2e}"


class ResultsMismatchError(ValueError):
    """The output folder holds curves on other held-out tasks than the new ones."""


def merge_curves(
    new: Sequence[AdaptationCurve], out_dir: str | Path
) -> list[AdaptationCurve]:
    """``new`` plus the curves already in ``out_dir/results.json`` of every other method: an
    evaluation never deletes earlier results, and a re-run method replaces its own curve only.
    Raises :class:`ResultsMismatchError` when a kept curve was measured on other tasks (one
    folder, one set of held-out tasks, so that every row of its table is comparable)."""
    if not new:
        return []
    kept = check_mergeable(new[0].tasks, {c.method for c in new}, out_dir)
    return [*new, *kept]


def check_mergeable(tasks: Sequence[Any], methods: set[str], out_dir: str | Path
                    ) -> list[AdaptationCurve]:
    """The curves of ``out_dir/results.json`` that an evaluation of ``methods`` on ``tasks``
    keeps; :class:`ResultsMismatchError` when one of them was measured on other tasks. Called
    before evaluating too, so that a mismatch costs no rollouts."""
    path = Path(out_dir) / "results.json"
    if not path.is_file():
        return []
    try:
        existing = read_results(path)
    except (ValueError, KeyError, TypeError) as err:
        raise ResultsMismatchError(f"'{path}' is not a results file written by maml-rl ({err}); "
                                   "move it away or write to another folder (--out)") from None
    wanted = [task_to_json(t) for t in tasks]
    kept = [c for c in existing if c.method not in methods]
    for c in kept:
        if c.to_dict()["tasks"] != wanted:
            raise ResultsMismatchError(
                f"'{path}' holds the curve of '{c.method}' on other held-out tasks than this "
                "evaluation's; write to another folder (--out DIR) to keep both"
            )
    return kept


def write_results(
    curves: Sequence[AdaptationCurve], out_dir: str | Path, title: str = "", merge: bool = True,
    settings: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``results.json`` (``{method: {metric, steps, mean, ci95, tasks, per_task, flat,
    median, diverged, change, change_ci95, improved}}``, plus ``success_mean``,
    ``success_per_task`` and ``success_change[_ci95]`` for a family that reports success),
    ``results.csv`` (a row per method and step; ``flat`` is 1 for a method evaluated without
    adaptation, the oracle; ``median``, ``diverged``, ``change``, ``change_ci95`` and
    ``improved`` as in :class:`AdaptationCurve`; a ``success`` column when a curve has
    success) and the
    ``adaptation.png`` plot (titled ``title``) to ``out_dir``.

    ``settings`` (:func:`evaluation_settings`) is recorded with each of ``curves`` that has
    none. With ``merge`` the curves already there are kept (:func:`merge_curves`), with their
    own settings. Each file is written to a temporary name and renamed, so an interruption
    leaves the old file whole."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    curves = [c if c.settings is not None or settings is None
              else dataclasses.replace(c, settings=settings) for c in curves]
    if merge:
        curves = merge_curves(curves, out)
    paths = {
        "json": out / "results.json",
        "csv": out / "results.csv",
        "png": out / "adaptation.png",
    }
    # A success column only for a family that reports success (Meta-World).
    with_success = any(c.success is not None for c in curves)
    rows = [["method", "metric", "steps", "mean", "ci95", "num_tasks", "flat", "median",
             "diverged", "change", "change_ci95", "improved",
             *(["success"] if with_success else [])]]
    for c in curves:
        success = c.success_mean or [""] * len(c.steps)
        for k, m, h, med, d, ch, chh, up, s in zip(
                c.steps, c.mean, c.ci95, c.median, c.diverged, c.change, c.change_ci95,
                c.improved, success, strict=True):
            rows.append([c.method, c.metric, k, m, h, c.per_task.shape[0], int(c.flat), med, d,
                         ch, chh, up, *([s] if with_success else [])])
    with _atomic(paths["json"]) as tmp:
        tmp.write_text(json.dumps({c.method: c.to_dict() for c in curves}, indent=1))
    with _atomic(paths["csv"]) as tmp, tmp.open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    with _atomic(paths["png"]) as tmp:
        plot_curves(curves, tmp, title)
    return paths


@contextlib.contextmanager
def _atomic(path: Path):
    """Yield a temporary path next to ``path``; on success it replaces ``path``."""
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_results(path: str | Path) -> list[AdaptationCurve]:
    """The curves of a ``results.json`` written by :func:`write_results` (any version)."""
    data = json.loads(Path(path).read_text())
    return [AdaptationCurve.from_dict(method, entry) for method, entry in data.items()]


def plot_curves(curves: Sequence[AdaptationCurve], path: str | Path, title: str = "") -> None:
    """Performance against gradient steps, one line per method with its 95% band; a flat
    method (the oracle) is a dashed horizontal line with its band. ``title`` (e.g. the env,
    run and iteration) heads the plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = max((c.steps for c in curves), key=len)
    with_success = [c for c in curves if c.success is not None]
    if with_success:  # the success rate beside the return (Meta-World)
        fig, (ax, ax_s) = plt.subplots(1, 2, figsize=(11.0, 3.8))
        for i, c in enumerate(curves):
            if c.success is None:
                continue
            mean, half = np.asarray(c.success_mean), np.asarray(_ci95(c.success))
            ax_s.plot(c.steps, mean, marker="o", color=f"C{i % 10}", label=c.method)
            ax_s.fill_between(c.steps, mean - half, mean + half, color=f"C{i % 10}", alpha=0.2)
        ax_s.set_ylim(-0.05, 1.05)
        ax_s.set_xlabel("inner gradient steps")
        ax_s.set_ylabel("success rate")
        ax_s.set_xticks(steps)
        ax_s.grid(alpha=0.3)
    else:
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for i, c in enumerate(curves):
        mean, half = np.asarray(c.mean), np.asarray(c.ci95)
        if c.flat:  # axhline does not advance the colour cycle: one colour per method
            line = ax.axhline(mean[0], linestyle="--", label=c.method, color=f"C{i % 10}")
            ax.axhspan(mean[0] - half[0], mean[0] + half[0], color=line.get_color(), alpha=0.15)
            continue
        (line,) = ax.plot(c.steps, mean, marker="o", label=c.method, color=f"C{i % 10}")
        ax.fill_between(c.steps, mean - half, mean + half, color=line.get_color(), alpha=0.2)
    # axhline/axhspan do not take part in autoscaling: fit every band, then leave a margin so
    # that no line sits on the frame.
    low = min(float(np.nanmin(np.asarray(c.mean) - np.asarray(c.ci95))) for c in curves)
    high = max(float(np.nanmax(np.asarray(c.mean) + np.asarray(c.ci95))) for c in curves)
    if np.isfinite(low) and np.isfinite(high):
        pad = 0.08 * (high - low) or 0.05 * max(abs(high), 1e-3)
        ax.set_ylim(low - pad, high + pad)
    ax.set_xlabel("inner gradient steps")
    ax.set_ylabel(curves[0].metric)
    ax.set_xticks(steps)
    held_out = f"adaptation on {curves[0].per_task.shape[0]} held-out tasks (95% CI)"
    ax.set_title(f"{title}\n{held_out}" if title else held_out, fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plots_fits(family: Any) -> bool:
    """Whether :func:`plot_fits` applies: a regression family (MSE) with scalar inputs."""
    space = family.observation_space
    return family.supervised_loss == "mse" and tuple(getattr(space, "shape", ())) == (1,)


def plot_fits(learner: Any, tasks: Sequence[Any], steps: int, seed: int, path: str | Path,
              title: str = "", baseline: nn.Module | None = None,
              others: Sequence[tuple[str, Any]] = (), samples: int = 10) -> Path:
    """The MAML paper's Fig. 2 for a run: per task, its ``evaluation.support_size`` support
    points, the task's true function (when the env has ``target(x)``, as the sinusoid does) and
    the model's predictions before adaptation, after 1 step and after ``steps`` steps of the
    run's inner step (``learner``: a supervised learner). With ``baseline`` (the pretrained
    model, :mod:`maml_rl.supervised_baseline`) a second row shows it fine-tuned by plain
    gradient steps of the same sizes on the same points; ``others`` (label, learner) add a row
    per other run, adapted by its own algorithm on the same points. An algorithm whose
    adaptation samples (:attr:`PLATIPUS.stochastic <maml_rl.algorithms.platipus.PLATIPUS>`)
    draws ``samples`` adapted models, each after the run's ``inner.steps`` steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config, family = learner.config, learner.eval_family
    ev = config.evaluation
    support_size = ev.support_size or config.sampling.support_size
    sampler = SupervisedSampler(family.env_id, family.env_kwargs, len(tasks), support_size, seed,
                                learner.device)
    support = sampler.sample(list(tasks))
    sampler.close()
    space = family.observation_space
    grid = torch.linspace(float(space.low[0]), float(space.high[0]), 200,
                          dtype=support.inputs.dtype, device=support.inputs.device)[:, None]
    env = family.unwrapped
    cols = min(len(tasks), 4)
    # (label, model, inner step, step sizes, sampled models, trained steps): one row each.
    rows = []
    for label, run in [(config.algorithm, learner), *others]:
        sizes = run.config.inner_step_sizes(steps, run.config.evaluation.lr)
        stochastic = run.algorithm.stochastic
        rows.append((label, run.model, run.evaluation_step(), sizes,
                     samples if stochastic else 0, run.config.inner.steps))
    if baseline is not None:
        rows.insert(1, ("pretrained", baseline, learner.evaluation_step(baseline),
                        config.inner_step_sizes(steps, ev.lr), 0, 0))
    fig, axes = plt.subplots(len(rows), cols, figsize=(3.6 * cols, 3.0 * len(rows)),
                             squeeze=False, sharey="col")
    functional = learner.eval_batching == "vmap"

    def draw_row(axs: Any, method: str, net: nn.Module, step: StepFn, sizes: list[float],
                 draws: int, trained_steps: int) -> None:
        theta = {k: v.detach() for k, v in model_params(net).items()}
        for ax, i, task in zip(axs, range(cols), tasks, strict=False):
            shots = task_slice(support, i)
            if callable(getattr(env, "target", None)):
                env.set_task(task)
                truth = env.target(grid.cpu().numpy())
                ax.plot(grid[:, 0].cpu(), truth, color="k", lw=1.2, ls="--", label="true")
            with torch.no_grad():  # torch.func.grad inside still differentiates the inner loss
                ax.plot(grid[:, 0].cpu(), forward(net, theta, grid)[:, 0].cpu(), label="before")
                if draws:
                    for d in range(draws):
                        phi = theta
                        for alpha in sizes[:trained_steps]:
                            phi = step(theta, phi, shots, alpha, functional)
                        ax.plot(grid[:, 0].cpu(), forward(net, phi, grid)[:, 0].cpu(),
                                color="tab:purple", lw=0.8, alpha=0.6,
                                label=f"{draws} sampled, after {trained_steps} step"
                                      f"{'s' if trained_steps != 1 else ''}" if d == 0 else None)
                else:
                    shown, phi = sorted({min(1, steps), steps} - {0}), theta
                    for k in range(steps):
                        phi = step(theta, phi, shots, sizes[k], functional)
                        if k + 1 in shown:
                            ax.plot(grid[:, 0].cpu(), forward(net, phi, grid)[:, 0].cpu(),
                                    label=f"after {k + 1} step{'s' if k else ''}")
            ax.plot(shots.inputs[:, 0].cpu(), shots.targets[:, 0].cpu(), "^", color="tab:red",
                    ms=6, label=f"{support_size} support points")
            if callable(getattr(env, "target", None)):  # a wild fit must not hide the task
                low, high = float(np.min(truth)), float(np.max(truth))
                pad = 0.6 * max(high - low, 1.0)
                ax.set_ylim(min(low, float(shots.targets.min())) - pad,
                            max(high, float(shots.targets.max())) + pad)
            ax.set_title(f"{method}: {_task_text(task)}", fontsize="small")
            ax.grid(alpha=0.3)
        axs[0].legend(fontsize="x-small", loc="best")

    with seeded_torch(seed, learner.device):  # a sampling algorithm's draws (PLATIPUS')
        for r, row in enumerate(rows):
            draw_row(axes[r], *row)
    return save_figure(fig, path, title)


def plots_grid(family: Any) -> bool:
    """Whether :func:`plot_classification_grid` applies: a classification family of images."""
    return (family.supervised_loss == "cross_entropy"
            and len(getattr(family.observation_space, "shape", ())) == 3)


def plot_classification_grid(learner: Any, task: Any, steps: int, seed: int, path: str | Path,
                             title: str = "", per_class: int = 2) -> Path:
    """One held-out task of an image classification run (the first of the evaluation, on its
    shots): the support images with their labels, then ``per_class`` query images of each
    class with the label predicted after ``steps`` inner steps, green when right and red when
    wrong (query images predicted in batches of ``evaluation.query_batch``, as evaluated)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config, family, model = learner.config, learner.eval_family, learner.model
    ev = config.evaluation
    support_size = ev.support_size or config.sampling.support_size
    query_size = ev.query_size or config.sampling.query_size
    sampler = SupervisedSampler(family.env_id, family.env_kwargs, 1, support_size + query_size,
                                seed, learner.device)
    shots = sampler.sample([task], episode_keys(seed, EVALUATION_STREAM, 0, 0, [0]))
    sampler.close()
    support, query = (task_slice(b, 0) for b in split_shots(shots, support_size))
    theta = {k: v.detach() for k, v in model_params(model).items()}
    phi = theta
    with torch.no_grad():  # torch.func.grad inside still differentiates the inner loss
        step = learner.evaluation_step()
        for alpha in config.inner_step_sizes(steps, ev.lr):
            phi = step(theta, phi, support, alpha, False)
        batch = ev.query_batch or query_size
        predicted = torch.cat([forward(model, phi, query.inputs[i:i + batch]).argmax(-1)
                               for i in range(0, query_size, batch)])
    labels = query.targets.reshape(-1)
    shown = [i for c in sorted(set(labels.tolist()))
             for i in torch.nonzero(labels == c).reshape(-1)[:per_class].tolist()]
    order = torch.argsort(support.targets.reshape(-1), stable=True).tolist()
    cols = max(len(order), len(shown) // 2 or 1)
    rows = 1 + -(-len(shown) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols, 1.45 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes[0], order, strict=False):
        ax.imshow(support.inputs[i, 0].cpu().numpy(), cmap="gray")
        ax.set_title(f"support {int(support.targets.reshape(-1)[i])}", fontsize="x-small")
    for ax, i in zip(axes[1:].flat, shown, strict=False):
        right = bool(predicted[i] == labels[i])
        ax.imshow(query.inputs[i, 0].cpu().numpy(), cmap="gray")
        ax.set_title(f"{int(labels[i])} -> {int(predicted[i])}", fontsize="x-small",
                     color="tab:green" if right else "tab:red")
    accuracy = float((predicted == labels).float().mean())
    heading = (f"one held-out task after {steps} step{'s' if steps != 1 else ''}: query "
               f"label -> predicted (accuracy {accuracy:.2f} on its {query_size} query images)")
    return save_figure(fig, path, f"{title}\n{heading}" if title else heading)


def _task_text(task: Any) -> str:
    """A task for a figure title: its own ``describe()`` when it has one, else its fields."""
    if callable(getattr(task, "describe", None)):
        return str(task.describe())
    values = task_to_json(task)
    if isinstance(values, dict):
        return ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in values.items())
    return str(values)
