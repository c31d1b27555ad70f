"""Command-line front end of ``scripts/train.py``: parse, validate, run; never a traceback for
a user's mistake (exit status 2 and one line naming the key, the value and what is allowed)."""

from __future__ import annotations

import argparse
import errno
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from envs.registration import import_family_module
from maml_rl.checkpoint import CHECKPOINT_NAME
from maml_rl.config import Config, ConfigError, load_config, read_yaml_file
from maml_rl.distributed import (
    DistributedError,
    ProcessGroup,
    init_process_group,
    restart_count,
)
from maml_rl.evaluation import ResultsMismatchError

if TYPE_CHECKING:
    from maml_rl.trainer import Trainer

USAGE = ("train.py CONFIG [section.key=value ...] [--run-dir DIR [--overwrite]] "
         "| train.py --resume RUN_DIR [section.key=value ...]")


@dataclass
class TrainArgs:
    """What ``train.py``'s command line asks for."""

    config: Config
    run_dir: Path
    resume: bool
    overwrite: bool
    config_dir: Path  # the folder of the config file read (for env.module)


def parse_train_args(argv: list[str] | None = None) -> TrainArgs:
    """Parse and validate ``train.py``'s command line (ConfigError on a mistake)."""
    parser = argparse.ArgumentParser(
        prog="train.py", usage=USAGE,
        description="Meta-train with MAML. Any config key can be overridden as section.key=value.",
    )
    parser.add_argument("args", nargs="*", help="CONFIG.yaml, then section.key=value overrides")
    parser.add_argument("--run-dir", type=Path, help="where to write the run (default: "
                        "logging.run_root/<env>-<time>)")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR",
                        help="continue the run in RUN_DIR from its checkpoint")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run already in --run-dir (deleted completely once the "
                             "new config has been checked); without it such a run is refused")
    ns = parser.parse_intermixed_args(argv)
    positional = list(ns.args)
    config_path = positional.pop(0) if positional and "=" not in positional[0] else None
    if ns.resume is not None:
        if config_path is not None:
            raise ConfigError(f"give CONFIG or --resume, not both (got '{config_path}' and "
                              f"--resume {ns.resume}); overrides are allowed with --resume")
        if ns.overwrite:
            raise ConfigError("--overwrite and --resume exclude each other: resume continues the "
                              "run, overwrite replaces it")
        if not (ns.resume / "config.yaml").is_file():
            raise ConfigError(f"--resume: '{ns.resume}' is not a run directory "
                              "(no config.yaml in it)")
        if not (ns.resume / "checkpoint.pt").is_file():
            raise ConfigError(f"--resume: '{ns.resume}' has no checkpoint.pt to resume from")
        config = load_config(ns.resume / "config.yaml", positional)
        return TrainArgs(config, ns.resume, True, False, ns.resume)
    if config_path is None:
        raise ConfigError(f"missing CONFIG file; usage: {USAGE}")
    config = load_config(config_path, positional)
    run_dir = ns.run_dir or default_run_dir(config, Path(config_path).stem)
    return TrainArgs(config, run_dir, False, ns.overwrite, Path(config_path).parent)


def default_run_dir(config: Config, name: str) -> Path:
    return Path(config.logging.run_root) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _interrupted(what: str) -> int:
    print(f"interrupted {what}", file=sys.stderr)
    return 130


def _fault_message(err: BaseException, trainer: Trainer) -> str:
    """One line for a fault in the middle of training (a full disk, an env returning NaN or a
    wrong shape) that says what is kept on disk and how to go on."""
    from maml_rl.checkpoint import CheckpointWriteError

    resume = f"maml-train --resume {trainer.run_dir}"
    have_checkpoint = trainer.checkpoint_path.is_file()
    if isinstance(err, CheckpointWriteError):
        fix = "free some space" if err.errno in (errno.ENOSPC, errno.EDQUOT) else "fix that"
        then = f"resume with: {resume}" if have_checkpoint else "start the run again"
        return f"{err}; {fix}, then {then}"
    kept = trainer.checkpoint_path if have_checkpoint else "none written yet"
    return f"{err}; the last good checkpoint is kept: {kept}"


#: Seconds a torchrun worker of rank > 0 waits before exiting on a mistake in the config.
RANK_ZERO_GRACE_S = 2.0


def _rank_zero() -> bool:
    """True unless this is a torchrun worker of rank > 0 (which prints nothing but its own
    faults: every rank would print the same lines)."""
    return os.environ.get("RANK", "0") == "0"


def _under_torchrun(args: TrainArgs, group: ProcessGroup) -> TrainArgs:
    """Every process writes (rank 0) or reads the run directory rank 0 named; after a restart
    by ``torchrun --max-restarts`` the run continues from its last checkpoint."""
    run_dir = Path(group.gather(str(args.run_dir))[0])
    resume, overwrite = args.resume, args.overwrite
    if restart_count() > 0 and not resume:
        if (run_dir / CHECKPOINT_NAME).is_file():
            resume, overwrite = True, False
        elif run_dir.is_dir():  # the failed attempt wrote no checkpoint: start it again
            overwrite = True
    return TrainArgs(args.config, run_dir, resume, overwrite, args.config_dir)


def train_main(argv: list[str] | None = None) -> int:
    """Entry point of ``scripts/train.py`` and ``maml-train``; returns the exit status: 0 done,
    2 a mistake or fault (one line on stderr), 130 interrupted (the checkpoint is kept).
    Under ``torchrun`` each process trains its share of the meta-batch; rank 0 prints."""
    say = print if _rank_zero() else (lambda *args, **kwargs: None)
    group = None
    try:
        from envs.vector import EnvOutputError
        from maml_rl.checkpoint import CheckpointWriteError
        from maml_rl.family import module_dirs, record_module_dir
        from maml_rl.meta_updates.base import NonFiniteError
        from maml_rl.trainer import Trainer

        args = parse_train_args(argv)
        device = args.config.resolve_device()
        group = init_process_group(device, args.config.distributed.timeout_s)
        if group.distributed:
            args = _under_torchrun(args, group)
        module = args.config.env.module
        if module:
            import_family_module(module, module_dirs(args.run_dir) if args.resume
                                 else [args.config_dir])
        trainer = Trainer(args.config, args.run_dir, resume=args.resume,
                          overwrite=args.overwrite, group=group)
        if module and group.is_main:
            record_module_dir(args.run_dir, module)
    except (ConfigError, ValueError, DistributedError) as err:
        say(f"error: {err}", file=sys.stderr)
        if not _rank_zero():
            # Every process finds the same mistake, and the first to exit makes torchrun stop
            # the others: give rank 0 the time to say it (without this, one launch in four
            # here printed nothing).
            time.sleep(RANK_ZERO_GRACE_S)
        return _finish(group, 2)
    except KeyboardInterrupt:
        return _finish(group, _interrupted("before training started"))
    # stdout: stderr is kept for problems, so that a fault reads as one line there.
    say(f"run directory: {args.run_dir}")
    total = args.config.training.iterations
    if args.resume and trainer.iteration >= total:
        say(f"the run has {trainer.iteration} of training.iterations={total}: nothing to train "
            f"(continue with training.iterations=N, N > {trainer.iteration})")
    try:
        result = trainer.train()
    except (CheckpointWriteError, EnvOutputError, NonFiniteError) as err:
        # A fault of this process's own share: it says so whatever its rank.
        print(f"error: {_fault_message(err, trainer)}", file=sys.stderr)
        return _finish(group, 2)
    except DistributedError as err:  # every survivor sees it: rank 0 says it
        say(f"error: {_fault_message(err, trainer)}", file=sys.stderr)
        return _finish(group, 2)
    except KeyboardInterrupt:  # while a checkpoint or log was being written: those are atomic
        say(f"interrupted; the last checkpoint in {args.run_dir} is intact. Resume with: "
            f"maml-train --resume {args.run_dir}", file=sys.stderr)
        return _finish(group, 130)
    if result.message:
        prefix = "error: " if result.status == "non-finite" else ""
        say(prefix + result.message, file=sys.stderr)
    if result.status == "completed":
        # On stdout, after the evaluation table: where the run and its results are.
        say(f"run directory: {args.run_dir}")
        for path in result.evaluation_files:
            say(f"  {path}")
    return _finish(group, {"completed": 0, "interrupted": 130}.get(result.status, 2))


def _finish(group: ProcessGroup | None, status: int) -> int:
    """Leave the process group. Under torchrun, once every process has finished (a barrier on
    success), end the process at once: the C++ destructors of the group's threads and store
    connection at interpreter shutdown abort a process now and then ("terminate called without
    an active exception", seen once in tens of runs), which torchrun reports as a crash. Every
    file is closed by then."""
    if group is None or not group.distributed:
        return status
    if status == 0:
        group.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


EVALUATE_USAGE = ("evaluate.py RUN_DIR [evaluation.key=value ...] [--checkpoint FILE] [--steps K] "
                  "[--tasks N] [--seed S] [--task-file FILE] [--video] "
                  "[--baselines [--baseline-steps T]] [--out DIR]")


def _evaluate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evaluate.py", usage=EVALUATE_USAGE,
        description="Adapt a trained run to held-out tasks (0..K inner steps, fresh episodes per "
                    "step) and compare with the paper's baselines.",
    )
    parser.add_argument("run_dir", type=Path, help="a run directory written by train.py")
    parser.add_argument("overrides", nargs="*", metavar="evaluation.key=value",
                        help="change the run's evaluation settings for this evaluation, e.g. "
                             "evaluation.query_batch=5 (other sections are fixed by the "
                             "checkpoint)")
    parser.add_argument("--checkpoint", type=Path, help="default: RUN_DIR/checkpoint.pt")
    parser.add_argument("--steps", type=int, help="largest number of inner steps (default: "
                        "evaluation.steps of the run's config)")
    parser.add_argument("--tasks", type=int, help="held-out tasks (default: evaluation.num_tasks)")
    parser.add_argument("--seed", type=int, help="seed of the held-out tasks and their episodes "
                        "(with --task-file, of the episodes only; default: evaluation.seed)")
    parser.add_argument("--task-file", type=Path,
                        help="evaluate on these tasks instead of drawing them (RL families): a "
                             "YAML/JSON list of tasks as set_task takes them, e.g. "
                             "[{x: 0.1, y: -0.3}, ...], or an earlier results.json; "
                             "--tasks N keeps the first N")
    parser.add_argument("--out", type=Path,
                        help="output folder (default: RUN_DIR/eval for the run's own held-out "
                             "tasks, RUN_DIR/eval/<tasks> for others, e.g. eval/400tasks-seed7); "
                             "curves already there of other methods are kept")
    parser.add_argument("--video", action="store_true",
                        help="write rollouts before/after adaptation to OUT/videos (MP4, or GIF "
                             "without an MP4 encoder; a trajectory plot for 2D navigation)")
    parser.add_argument("--video-tasks", type=int, default=3,
                        help="held-out tasks shown by --video (default: 3)")
    parser.add_argument("--baselines", action="store_true",
                        help="also evaluate the paper's comparison methods, cached in "
                             "RUN_DIR/baselines: RL pretrained, random-init and oracle "
                             "(stable-baselines3 PPO); regression the pretrained model "
                             "(trained on all tasks jointly, then fine-tuned)")
    parser.add_argument("--baseline-steps", type=int,
                        help="PPO timesteps per trained RL baseline (default: per family, see "
                             "docs/guide/evaluation.md); meta-batches of joint training of the "
                             "regression baseline (default 10000)")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads (default: the run's threads setting)")
    return parser


def _check_evaluate_args(ns: argparse.Namespace) -> None:
    """One-line errors for the command line, before anything heavy is built."""
    if not (ns.run_dir / "config.yaml").is_file():
        raise ConfigError(f"run_dir: '{ns.run_dir}' is not a run directory (no config.yaml)")
    from maml_rl.checkpoint import CHECKPOINT_NAME

    ns.checkpoint = ns.checkpoint or ns.run_dir / CHECKPOINT_NAME
    if ns.checkpoint.is_dir():
        raise ConfigError(f"--checkpoint: '{ns.checkpoint}' is a directory; give a checkpoint "
                          f"file (e.g. {ns.checkpoint / CHECKPOINT_NAME})")
    if not ns.checkpoint.is_file():
        raise ConfigError(f"--checkpoint: '{ns.checkpoint}' not found")
    minimum = {"steps": 0, "tasks": 1, "video_tasks": 1, "baseline_steps": 1, "threads": 1}
    for name, low in minimum.items():
        value = getattr(ns, name)
        if value is not None and value < low:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag}: must be >= {low}, got {value}")
    if ns.baseline_steps is not None and not ns.baselines:
        raise ConfigError("--baseline-steps: only meaningful with --baselines")
    for text in ns.overrides:
        if not text.startswith("evaluation."):
            raise ConfigError(
                f"override '{text}': evaluate.py changes evaluation.* keys only (the model, "
                "env and training settings are those the checkpoint was trained with)"
            )


def read_task_file(path: Path) -> list[Any]:
    """Tasks listed in a YAML/JSON file: a list of tasks, or an evaluation's ``results.json``
    (its first method's tasks, to evaluate another run on exactly the same ones)."""
    data = read_yaml_file(path, f"--task-file: '{path}'")  # JSON is YAML too
    if isinstance(data, dict):
        curves = [v for v in data.values() if isinstance(v, dict) and v.get("tasks")]
        data = curves[0]["tasks"] if curves else data
    if not isinstance(data, list) or not data:
        raise ConfigError(
            f"--task-file: '{path}' holds no tasks; expected a non-empty list of tasks "
            "(e.g. [{x: 0.1, y: -0.3}]) or a results.json written by evaluate.py"
        )
    return data


def evaluate_main(argv: list[str] | None = None) -> int:
    """Entry point of ``scripts/evaluate.py``: adaptation curves of a trained run (and, with
    ``--baselines``, of the paper's comparison methods) on held-out tasks, written to
    ``RUN_DIR/eval/`` and printed as a table; ``--video`` adds rollouts before/after."""
    import torch

    from envs.vector import EnvOutputError
    from maml_rl.checkpoint import restore
    from maml_rl.family import load_family, module_dirs
    from maml_rl.meta_updates.base import NonFiniteError
    from maml_rl.seeding import seed_everything
    from maml_rl.trainer import build_learner

    ns = _evaluate_parser().parse_intermixed_args(argv)
    try:
        _check_evaluate_args(ns)
        config = load_config(ns.run_dir / "config.yaml", ns.overrides)
        device = config.resolve_device()
        threads = ns.threads or config.threads
        if threads:
            torch.set_num_threads(threads)
        seed_everything(config.seed)
        if config.env.module:
            import_family_module(config.env.module, module_dirs(ns.run_dir))
        family = load_family(config.env.id, config.env.kwargs, config.env.module)
        if family.supervised and ns.video:
            raise ConfigError(f"--video: only for RL families; '{config.env.id}' is supervised")
        if family.supervised and ns.baselines and family.supervised_loss != "mse":
            # Labels are assigned per task: one classifier of every task has nothing to learn.
            raise ConfigError(f"--baselines: for RL and regression families; "
                              f"'{config.env.id}' is a classification family")
        if family.supervised and ns.task_file is not None:
            raise ConfigError(f"--task-file: only for RL families; '{config.env.id}' is "
                              "supervised")
        tasks = None if ns.task_file is None else read_task_file(ns.task_file)[: ns.tasks]
        if tasks is not None:
            try:
                family.check_tasks(tasks)
            except ValueError as err:
                raise ConfigError(f"--task-file: {err}") from None
        learner = build_learner(config, family, device)
        state = restore(learner, ns.checkpoint, config, device)
        iteration = state.get("iteration")
        if ns.video:
            from maml_rl.videos import check_video_support

            check_video_support(family)
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return _interrupted("before the evaluation started; nothing was written")
    try:
        return _run_evaluation(ns, config, learner, tasks, iteration)
    except (ResultsMismatchError, NonFiniteError, EnvOutputError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; every results file is either as before or complete",
              file=sys.stderr)
        return 130
    finally:
        learner.close()


def default_evaluation_dir(ns: argparse.Namespace) -> Path:
    """``RUN_DIR/eval`` for the run's own held-out tasks; a subfolder named after the task set
    otherwise, so that evaluations on different tasks never share (or clobber) a table."""
    parts = []
    if ns.task_file is not None:
        parts.append(ns.task_file.stem)
    if ns.tasks is not None:
        parts.append(f"{ns.tasks}tasks")
    if ns.seed is not None:
        parts.append(f"seed{ns.seed}")
    return ns.run_dir / "eval" / "-".join(parts) if parts else ns.run_dir / "eval"


def _run_evaluation(ns: argparse.Namespace, config: Config, learner: Any,
                    tasks: list[Any] | None, iteration: int | None) -> int:
    import numpy as np

    from maml_rl.evaluation import (
        check_mergeable,
        evaluation_settings,
        format_table,
        reference_curves,
        write_results,
    )

    ev = config.evaluation
    num_tasks = len(tasks) if tasks is not None else ns.tasks or ev.num_tasks
    steps = ev.steps if ns.steps is None else ns.steps
    seed = ev.seed if ns.seed is None else ns.seed
    out = ns.out or default_evaluation_dir(ns)
    fixed = {} if tasks is None else {"tasks": tasks}  # RL learners only (checked above)
    # Refuse a folder holding other methods' curves on other tasks before any rollout.
    planned = tasks if tasks is not None else learner.eval_family.sample_tasks(
        num_tasks, np.random.default_rng(seed))
    methods = {config.algorithm}
    supervised = getattr(learner, "eval_batching", None) is not None
    if ns.baselines:
        if supervised:
            methods.add("pretrained")
        else:
            from maml_rl.comparison import METHODS

            methods |= set(METHODS)
    references = reference_curves(learner.eval_family, planned, getattr(learner, "horizon", None))
    check_mergeable(planned, methods | {c.method for c in references}, out)
    curves = [learner.evaluate(num_tasks, steps, seed, **fixed), *references]
    log = lambda text: print(text, file=sys.stderr)  # noqa: E731
    pretrained = None
    if ns.baselines and supervised:
        from maml_rl.supervised_baseline import load_or_train_pretrained

        pretrained = load_or_train_pretrained(
            config, learner.family, ns.run_dir / "baselines", ns.baseline_steps,
            learner.device, progress=config.logging.progress, log=log)
        curves.append(learner.evaluate(num_tasks, steps, seed, "pretrained", model=pretrained))
    elif ns.baselines:
        from maml_rl.comparison import evaluate_baselines

        curves += evaluate_baselines(learner, num_tasks, steps, seed, ns.run_dir / "baselines",
                                     ns.baseline_steps, progress=config.logging.progress,
                                     log=log, tasks=tasks)
    at = "" if iteration is None else f", iteration {iteration}"
    title = f"{config.env.id}, run {ns.run_dir.resolve().name}{at}"
    settings = evaluation_settings(config, num_tasks, steps, seed)
    written = list(write_results(curves, out, title, settings=settings).values())
    if supervised:
        from maml_rl.evaluation import (
            plot_classification_grid,
            plot_fits,
            plots_fits,
            plots_grid,
        )

        if plots_grid(learner.eval_family):
            first = learner.eval_family.sample_tasks(num_tasks, np.random.default_rng(seed))[0]
            written.append(plot_classification_grid(learner, first, steps, seed,
                                                    out / "grid.png", title))
        if plots_fits(learner.eval_family):
            shown = learner.eval_family.sample_tasks(num_tasks, np.random.default_rng(seed))[:4]
            written.append(plot_fits(learner, shown, steps, seed, out / "fits.png", title,
                                     baseline=pretrained))
    if ns.video:
        from maml_rl.videos import record_adaptation

        written += record_adaptation(learner, min(ns.video_tasks, num_tasks), steps, seed,
                                     out / "videos", tasks=tasks)
    print(format_table(curves))
    print(f"wrote {', '.join(str(p) for p in written)}")
    return 0


def _draw_landscape(ns: argparse.Namespace) -> Path:
    """``maml-plot RUN --landscape``: :mod:`maml_rl.landscape` for one regression run."""
    out = ns.out if ns.out != Path("training.png") else Path("landscape.png")
    if len(ns.run_dirs) != 1:
        raise ConfigError("--landscape: give one run directory")
    if out.exists() and not ns.overwrite:
        raise ConfigError(f"--out: '{out}' exists; pass --overwrite to replace it")
    if any(m < 0 for m in ns.inner_steps):
        raise ConfigError(f"--inner-steps: must be >= 0, got {ns.inner_steps}")
    if ns.points < 3 or (ns.baseline_steps is not None and ns.baseline_steps < 1):
        raise ConfigError("--points: must be >= 3; --baseline-steps: >= 1")
    from maml_rl.landscape import meta_loss_landscape, plot_landscape
    from maml_rl.runs import load_run
    from maml_rl.supervised_baseline import load_or_train_pretrained

    run = load_run(ns.run_dirs[0])
    if run.family.supervised_loss != "mse":
        raise ConfigError(f"--landscape: for regression runs; '{run.config.env.id}' is "
                          f"{'a classification' if run.family.supervised else 'an RL'} family")
    log = lambda text: print(text, file=sys.stderr)  # noqa: E731
    pretrained = load_or_train_pretrained(
        run.config, run.family, run.path / "baselines", ns.baseline_steps, run.device,
        progress=run.config.logging.progress, log=log)
    landscape = meta_loss_landscape(run.learner, pretrained, ns.inner_steps, points=ns.points)
    title = (f"{run.config.env.id}, run {run.path.resolve().name}, iteration "
             f"{run.iteration}: meta-loss on 25 held-out tasks")
    return plot_landscape(landscape, out, title)


def _draw_fits(ns: argparse.Namespace) -> Path:
    """``maml-plot RUN [RUN ...] --fits``: the fits figure of regression runs, one row per run,
    on the first run's held-out tasks and support points (:func:`maml_rl.evaluation.plot_fits`)."""
    out = ns.out if ns.out != Path("training.png") else Path("fits.png")
    if out.exists() and not ns.overwrite:
        raise ConfigError(f"--out: '{out}' exists; pass --overwrite to replace it")
    if ns.tasks < 1:
        raise ConfigError(f"--tasks: must be >= 1, got {ns.tasks}")
    import numpy as np

    from maml_rl.evaluation import plot_fits, plots_fits
    from maml_rl.runs import load_run

    # RUN ... evaluation.key=value ...: the overrides apply to every run (e.g. fewer shots or
    # a narrower input range, evaluation.env_kwargs, to make the tasks ambiguous).
    overrides = [str(p) for p in ns.run_dirs if "=" in str(p) and not p.exists()]
    paths = [p for p in ns.run_dirs if str(p) not in overrides]
    if not paths:
        raise ConfigError("--fits: give at least one run directory")
    runs = [load_run(path, overrides=overrides) for path in paths]
    for run in runs:
        if not run.family.supervised or not plots_fits(run.learner.eval_family):
            raise ConfigError(f"--fits: for regression runs with one input; '{run.path}' is "
                              f"'{run.config.env.id}'")
    first = runs[0]
    if len({run.config.env.id for run in runs}) > 1:
        raise ConfigError("--fits: the runs must share one family, got "
                          f"{', '.join(sorted({run.config.env.id for run in runs}))}")
    ev = first.config.evaluation
    seed = ev.seed if ns.seed is None else ns.seed
    tasks = first.learner.eval_family.sample_tasks(ns.tasks, np.random.default_rng(seed))
    title = (f"{first.config.env.id}: {', '.join(run.path.resolve().name for run in runs)}, "
             f"{ev.support_size or first.config.sampling.support_size} shots"
             + (f" ({', '.join(overrides)})" if overrides else ""))
    return plot_fits(first.learner, tasks, ev.steps, seed, out, title,
                     others=[(run.config.algorithm, run.learner) for run in runs[1:]])


def plot_main(argv: list[str] | None = None) -> int:
    """Entry point of ``scripts/plot.py`` and ``maml-plot``: training curves of runs (mean and
    band over seeds for runs of one config) as a PNG; 0 done, 2 a mistake (one line)."""
    parser = argparse.ArgumentParser(
        prog="plot.py", description="Training curves of runs from their metrics.csv; runs that "
        "differ only in seed are drawn as their mean with a band of one standard deviation.")
    parser.add_argument("run_dirs", nargs="+", type=Path,
                        help="run directories (with --fits, also evaluation.key=value "
                             "overrides applied to every run)")
    parser.add_argument("--metric", action="append", default=None,
                        help="a metrics.csv column (repeatable; default: pre- and "
                             "post-adaptation return or loss)")
    parser.add_argument("--smooth", type=int, default=10, help="running-mean width (default 10)")
    parser.add_argument("--out", type=Path, default=Path("training.png"),
                        help="PNG to write (default: training.png); never an existing file "
                             "unless --overwrite")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--landscape", action="store_true",
                        help="instead of training curves: the meta-loss landscape of one "
                             "regression run around its parameters and the pretrained "
                             "baseline's (default --out landscape.png)")
    parser.add_argument("--fits", action="store_true",
                        help="instead of training curves: fits of regression runs on the first "
                             "run's held-out tasks, a row per run; a sampling algorithm "
                             "(platipus) draws several adapted models (default --out fits.png)")
    parser.add_argument("--tasks", type=int, default=4, help="--fits: tasks drawn (default 4)")
    parser.add_argument("--seed", type=int, default=None,
                        help="--fits: seed of the tasks, shots and draws (default: the first "
                             "run's evaluation.seed)")
    parser.add_argument("--inner-steps", type=int, nargs="+", default=[0, 1, 5],
                        help="--landscape: the numbers of inner steps drawn (default 0 1 5)")
    parser.add_argument("--points", type=int, default=25,
                        help="--landscape: grid points per axis (default 25)")
    parser.add_argument("--baseline-steps", type=int, default=None,
                        help="--landscape: meta-batches of the pretrained baseline's joint "
                             "training when it is not cached in RUN/baselines (default 10000)")
    ns = parser.parse_intermixed_args(argv)  # RUN ... --fits ... evaluation.key=value
    try:
        if ns.landscape and ns.fits:
            raise ConfigError("--landscape and --fits: give one of them")
        if ns.landscape:
            path = _draw_landscape(ns)
        elif ns.fits:
            path = _draw_fits(ns)
        else:
            path = _draw_training_curves(ns)
    except (ConfigError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return _interrupted("while plotting")
    print(f"wrote {path}")
    return 0


def _draw_training_curves(ns: argparse.Namespace) -> Path:
    """``maml-plot RUN [RUN ...]``: training curves (:func:`maml_rl.plots.plot_runs`)."""
    from maml_rl.logger import read_metrics
    from maml_rl.plots import plot_runs

    for run in ns.run_dirs:
        if not (run / "metrics.csv").is_file() or not (run / "config.yaml").is_file():
            raise ConfigError(f"'{run}' is not a run directory (no metrics.csv and "
                              "config.yaml); give folders written by train.py")
        rows = read_metrics(run)
        if not rows:
            raise ConfigError(f"'{run}/metrics.csv' has no iterations yet")
        missing = [m for m in ns.metric or [] if m not in rows[0]]
        if missing:
            raise ConfigError(f"--metric: {', '.join(missing)} not in '{run}/metrics.csv'; "
                              f"its columns: {', '.join(rows[0])}")
    if ns.smooth < 1:
        raise ConfigError(f"--smooth: must be >= 1, got {ns.smooth}")
    if ns.out.exists() and not ns.overwrite:
        raise ConfigError(f"--out: '{ns.out}' exists; pass --overwrite to replace it")
    return plot_runs(ns.run_dirs, ns.out, ns.metric, ns.smooth)
