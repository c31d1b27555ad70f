"""The meta-training loop: build -> loop (sample tasks, meta-iteration, log, checkpoint) -> save.

What a run directory holds:
``config.yaml`` (the resolved config), ``metrics.csv`` (a row per iteration, flushed as written),
``tensorboard/`` (events), ``checkpoint.pt`` (model, optimizer, RNG states, iteration; written
atomically), and ``eval/`` (the adaptation curve on held-out tasks at the end).
"""

from __future__ import annotations

import copy
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import yaml

from maml_rl.checkpoint import CHECKPOINT_NAME, restore, save_checkpoint
from maml_rl.config import (
    Config,
    ConfigError,
    flat_settings,
    load_config,
    read_yaml_file,
    save_config,
)
from maml_rl.distributed import SINGLE_PROCESS, ProcessGroup, launched_by_torchrun
from maml_rl.evaluation import (
    AdaptationCurve,
    ResultsMismatchError,
    evaluation_settings,
    format_table,
    reference_curves,
    write_results,
)
from maml_rl.family import TaskFamily, load_family
from maml_rl.logger import MetricsLogger
from maml_rl.meta_updates.base import NonFiniteError, scheduled_lr, set_lr
from maml_rl.seeding import rng_state, seed_everything, set_rng_state


class MetaLearner(Protocol):
    """What the trainer needs of a learner (supervised or RL)."""

    model: torch.nn.Module

    def meta_iteration(self, tasks: list[Any], iteration: int | None = None
                       ) -> dict[str, float]: ...
    def evaluate(self, num_tasks: int, steps: int, seed: int) -> AdaptationCurve: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


def build_learner(config: Config, family: TaskFamily, device: str,
                  group: ProcessGroup = SINGLE_PROCESS) -> MetaLearner:
    """The learner for the family's kind (it validates the config against the family first:
    :func:`maml_rl.validation.validate`, one-line ConfigErrors), working on this process's
    share of every meta-batch under torchrun (``group``)."""
    if family.supervised:
        from maml_rl.learners.supervised import SupervisedMetaLearner

        return SupervisedMetaLearner(config, family, device, group=group)
    from maml_rl.learners.reinforcement import RLMetaLearner

    return RLMetaLearner(config, family, device, group=group)


@dataclass
class TrainResult:
    run_dir: Path
    iteration: int
    status: str  # "completed" | "interrupted" | "non-finite"
    message: str = ""
    evaluation_files: list[Path] = field(default_factory=list)


class _StopFlag:
    """First Ctrl-C asks the loop to stop after the current iteration; a second one aborts.
    Under torchrun, which forwards the signal it receives, SIGTERM (a scheduler's preemption)
    counts as a Ctrl-C too."""

    def __init__(self) -> None:
        self.requested = False
        self._signals = [signal.SIGINT] + ([signal.SIGTERM] if launched_by_torchrun() else [])
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        try:
            for sig in self._signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not in the main thread: no handler, Ctrl-C aborts as usual
            pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


#: Each resume that changed a setting (``maml-train --resume RUN key=value``), in order: the
#: iteration from which the new values apply, and the changed keys' new and old values. The
#: run's ``config.yaml`` holds the latest settings only; this keeps how it got there.
RESUMES_NAME = "resumes.yaml"

#: Files and folders a run writes; their presence makes a directory a run directory.
RUN_FILES = ("config.yaml", CHECKPOINT_NAME, "metrics.csv", "tensorboard", "eval", "baselines",
             RESUMES_NAME)


def read_resumes(run_dir: str | Path) -> list[dict[str, Any]]:
    """The run's :data:`RESUMES_NAME` records, oldest first (none for a run never resumed with
    other settings)."""
    path = Path(run_dir) / RESUMES_NAME
    if not path.is_file():
        return []
    records = read_yaml_file(path, f"'{path}'")
    if not isinstance(records, list) or not all(
            isinstance(r, dict) and {"iteration", "changed", "was"} <= r.keys() for r in records):
        raise ConfigError(f"'{path}': expected a list of {{iteration, changed, was}} records")
    return records


def record_resume(run_dir: Path, previous: dict[str, Any], config: Config,
                  iteration: int) -> dict[str, Any] | None:
    """Append to :data:`RESUMES_NAME` the settings in which ``config`` differs from the run's
    ``previous`` config (a dict as saved), applying from ``iteration``; nothing when none
    differ. Written whole to a temporary file and renamed, so the old record survives a
    failure."""
    old, new = flat_settings(previous), flat_settings(config.to_dict())
    changed = {k: new.get(k) for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)}
    if not changed:
        return None
    entry = {"iteration": iteration, "changed": changed, "was": {k: old.get(k) for k in changed}}
    path = run_dir / RESUMES_NAME
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump([*read_resumes(run_dir), entry], sort_keys=False))
    os.replace(tmp, path)
    return entry


def check_run_dir(run_dir: Path, resume: bool = False, overwrite: bool = False) -> None:
    """Raise ConfigError (one line) unless a run may be written to ``run_dir``: a new or empty
    folder; with ``resume``, an existing run; with ``overwrite``, an existing run (cleared by
    the trainer once the config has been checked). Nothing is ever written here."""
    if resume and overwrite:
        raise ConfigError("--overwrite and --resume exclude each other: resume continues the "
                          "run, overwrite replaces it")
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--run-dir: '{run_dir}' is a file, not a directory; name a new "
                          "folder")
    existing = [name for name in RUN_FILES if (run_dir / name).exists()]
    if resume or not run_dir.is_dir() or not any(run_dir.iterdir()):
        return
    if not existing:
        raise ConfigError(f"--run-dir: '{run_dir}' is a folder that holds other files, not a "
                          "run; name a new or empty folder")
    if not overwrite:
        raise ConfigError(f"--run-dir: '{run_dir}' already holds a run; continue it with "
                          f"--resume {run_dir}, or pass --overwrite to replace it")


def _make_run_dir(run_dir: Path) -> None:
    """Create ``run_dir`` and check that it is writable (ConfigError naming it otherwise)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ConfigError(f"--run-dir: cannot write to '{run_dir}': {reason}; name a writable "
                          "folder") from None


class Trainer:
    """Meta-trains ``config`` into ``run_dir``; ``resume=True`` continues from its checkpoint.

    A ``run_dir`` that already holds a run is refused unless ``resume`` (continue it) or
    ``overwrite`` (delete it once the config and family have been checked, then start anew).
    Under torchrun (``group``) every process trains its share of each meta-batch and rank 0
    alone writes the run directory.
    """

    def __init__(self, config: Config, run_dir: str | Path, resume: bool = False,
                 overwrite: bool = False, group: ProcessGroup = SINGLE_PROCESS) -> None:
        self.config, self.run_dir, self.group = config, Path(run_dir), group
        check_run_dir(self.run_dir, resume, overwrite)
        group.barrier()  # every process has checked the folder before rank 0 writes to it
        self.device = group.device if group.distributed else config.resolve_device()
        if config.threads:
            torch.set_num_threads(config.threads)
        self.task_rng = seed_everything(config.seed)
        self.family = load_family(config.env.id, config.env.kwargs, config.env.module)
        self.learner = build_learner(config, self.family, self.device, group)
        self.iteration = 0
        self.evaluation_files: list[Path] = []
        if group.is_main:
            if overwrite and self.run_dir.is_dir():
                shutil.rmtree(self.run_dir)
            _make_run_dir(self.run_dir)
        if resume:
            self._restore()
        self.logger = None
        if group.is_main:
            if resume:
                previous = load_config(self.run_dir / "config.yaml").to_dict()
                record_resume(self.run_dir, previous, config, self.iteration)
            save_config(config, self.run_dir / "config.yaml")
            self.logger = MetricsLogger(self.run_dir, config.logging.tensorboard,
                                        resume_from=self.iteration if resume else None)

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_NAME

    def _restore(self) -> None:
        state = restore(self.learner, self.checkpoint_path, self.config, self.device)
        set_rng_state(state["rng"], self.task_rng)
        self.iteration = int(state["iteration"])

    def state(self) -> dict[str, Any]:
        """What a checkpoint holds: iteration, learner (model, optimizer, samplers' RNGs), the
        global and task RNG states, and the config."""
        return {
            "iteration": self.iteration,
            "learner": self.learner.state_dict(),
            "rng": rng_state(self.task_rng),
            "config": self.config.to_dict(),
        }

    def save(self, state: dict[str, Any] | None = None) -> Path:
        """Write ``state`` (default: the current one) to the checkpoint, atomically (rank 0
        only: the state is the same on every process)."""
        if not self.group.is_main:
            return self.checkpoint_path
        return save_checkpoint(self.state() if state is None else state, self.checkpoint_path)

    def train(self) -> TrainResult:
        cfg = self.config
        total = cfg.training.iterations
        bar = _progress(cfg.logging.progress and self.group.is_main, self.iteration, total)
        status, message = "completed", ""
        # The state at the start of the iteration in flight. A second Ctrl-C aborts that
        # iteration anywhere (mid-sampling, mid-update); saving this copy instead of the live
        # state keeps parameters and RNG states consistent, so resume repeats the iteration
        # exactly as an uninterrupted run would.
        start_state: dict[str, Any] | None = None
        abort_state: dict[str, Any] | None = None
        try:
            with _StopFlag() as stop:
                while self.iteration < total:
                    start_state = copy.deepcopy(self.state())
                    tasks = self.family.sample_tasks(cfg.sampling.meta_batch_size, self.task_rng)
                    lr = self._schedule_meta_lr()
                    start = time.perf_counter()
                    collective_start = self.group.collective_seconds
                    try:
                        metrics = self.learner.meta_iteration(tasks, self.iteration)
                    except NonFiniteError as err:
                        status = "non-finite"
                        message = (f"stopped at iteration {self.iteration + 1}: {err}. "
                                   f"The last good checkpoint is kept: {self._last_checkpoint()}")
                        break
                    metrics["time/iteration_s"] = time.perf_counter() - start
                    if lr is not None:
                        metrics["meta/lr"] = lr
                    self.iteration += 1
                    self._record(metrics, collective_start, bar)
                    # Every process stops after the same iteration, whichever saw the Ctrl-C.
                    if self.group.any(stop.requested):
                        status = "interrupted"
                        break
        except KeyboardInterrupt:  # second Ctrl-C: the iteration in flight is lost, not the run
            status = "interrupted"
            if start_state is not None and start_state["iteration"] == self.iteration:
                abort_state = start_state
        finally:
            if bar is not None:
                bar.close()
        if status != "non-finite":
            path = self.save(abort_state)
            if status == "interrupted":
                message = (f"interrupted at iteration {self.iteration}; checkpoint saved to {path}."
                           f" Resume with: maml-train --resume {self.run_dir}")
        written: list[Path] = []
        if status == "completed" and cfg.evaluation.at_end:
            try:
                self.evaluate()
                written = self.evaluation_files
            except KeyboardInterrupt:
                status = "interrupted"
                message = (f"interrupted during the final evaluation; the checkpoint of iteration "
                           f"{self.iteration} is kept in {self.checkpoint_path}. Evaluate it with: "
                           f"maml-evaluate {self.run_dir}")
        if self.logger is not None:
            self.logger.close()
        self.learner.close()
        return TrainResult(self.run_dir, self.iteration, status, message, written)

    def _record(self, metrics: dict[str, float], collective_start: float, bar) -> None:
        """After an iteration: periodic evaluation, the processes' metrics combined and their
        parameters checked, the metrics logged, a checkpoint every ``checkpoint_every``."""
        cfg = self.config
        every = cfg.evaluation.every
        if every and self.iteration % every == 0:
            metrics.update(self.periodic_evaluation())
        if self.group.distributed:
            metrics = self._reduce_metrics(metrics, collective_start)
            check = cfg.distributed.check_every
            if check and self.iteration % check == 0:
                self.group.check_identical(self.learner.model.parameters())
        if self.logger is not None:
            self.logger.log(self.iteration, metrics)
        _update_progress(bar, metrics)
        if self.iteration % cfg.training.checkpoint_every == 0:
            self.save()

    def _reduce_metrics(self, metrics: dict[str, float], collective_start: float
                        ) -> dict[str, float]:
        """Timings as means over the processes, throughput summed, plus the layout:
        ``dist/world_size`` and ``time/allreduce_s``, the seconds spent in collectives."""
        world = self.group.world_size
        metrics["time/allreduce_s"] = self.group.collective_seconds - collective_start
        per_rank = {k: v * (world if k.startswith("perf/") else 1)
                    for k, v in metrics.items() if k.startswith(("time/", "perf/"))}
        metrics.update(self.group.rank_mean(per_rank))
        metrics["dist/world_size"] = world
        return metrics

    def _schedule_meta_lr(self) -> float | None:
        """Set the meta-optimizer's rate for the next iteration from ``meta.lr_milestones``
        (None, and nothing changed, without a schedule or a learning-rate optimizer)."""
        optimizer = getattr(self.learner, "optimizer", None)
        if not self.config.meta.lr_milestones or optimizer is None:
            return None
        lr = scheduled_lr(self.config.meta, self.iteration + 1)
        set_lr(optimizer, lr)
        return lr

    def _last_checkpoint(self) -> str:
        return str(self.checkpoint_path) if self.checkpoint_path.exists() else "none written yet"

    def periodic_evaluation(self) -> dict[str, float]:
        """The adaptation curve on ``evaluation.every_tasks`` held-out tasks (always the same
        ones: ``evaluation.seed``) as metrics ``eval/<metric>_step_<k>``, k = 0..steps. The
        evaluation forks its own RNG streams, so training continues exactly as without it."""
        ev = self.config.evaluation
        start = time.perf_counter()
        curve = self.learner.evaluate(ev.every_tasks, ev.steps, ev.seed)
        metrics = {f"eval/{curve.metric}_step_{k}": m
                   for k, m in zip(curve.steps, curve.mean, strict=True)}
        metrics["time/eval_s"] = time.perf_counter() - start
        return metrics

    def plot_title(self) -> str:
        """What the adaptation plot names: env, run and meta-iteration."""
        return f"{self.config.env.id}, run {self.run_dir.name}, iteration {self.iteration}"

    def evaluate(self) -> AdaptationCurve:
        """The end-of-training adaptation curve, written to ``RUN_DIR/eval`` (its paths in
        ``evaluation_files``). Curves already there of other methods (``evaluate.py
        --baselines``) on the same held-out tasks are kept: they do not depend on the
        meta-trained policy. If that folder holds curves on other tasks, nothing there is
        touched and the curve goes to ``RUN_DIR/eval/iteration-N``."""
        ev = self.config.evaluation
        curve = self.learner.evaluate(ev.num_tasks, ev.steps, ev.seed)
        if not self.group.is_main:
            return curve
        curves = [curve, *reference_curves(self.learner.eval_family, curve.tasks,
                                           getattr(self.learner, "horizon", None))]
        out = self.run_dir / "eval"
        settings = evaluation_settings(self.config, ev.num_tasks, ev.steps, ev.seed)
        try:
            paths = write_results(curves, out, self.plot_title(), settings=settings)
        except ResultsMismatchError:
            paths = write_results(curves, out / f"iteration-{self.iteration}",
                                  self.plot_title(), settings=settings)
        self.evaluation_files = list(paths.values())
        print(format_table(curves))
        return curve


def _progress(enabled: bool, start: int, total: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc="meta-training", unit="it", dynamic_ncols=True)


#: What the progress bar shows, and how it names it: returns and losses before/after the inner
#: steps, never next to the TRPO surrogate values, which read alike and are not returns.
PROGRESS_FIELDS = {
    "return/pre_adaptation": "return before",
    "return/post_adaptation": "return after",
    "success/post_adaptation": "success after",
    "loss/pre_adaptation": "loss before",
    "loss/post_adaptation": "loss after",
    "kl": "KL",
    "time/iteration_s": "s/it",
}


def _update_progress(bar, metrics: dict[str, float]) -> None:
    if bar is None:
        return
    bar.update(1)
    if bar.n % 10 == 0 or bar.n == bar.total:  # postfix formatting is slow at 1000s of it/s
        shown = {label: f"{metrics[key]:.4g}" for key, label in PROGRESS_FIELDS.items()
                 if key in metrics and np.isscalar(metrics[key])}
        bar.set_postfix(shown, refresh=False)
