"""The docs' results tables, generated from the shipped runs in ``pretrained/``.

No number of ours in a results page is copied by hand: each table sits between markers

    <!-- results: NAME [EVAL_FOLDER] -->
    ...generated...
    <!-- /results -->

and is rebuilt from ``pretrained/NAME/`` (``config.yaml``, ``metrics.csv``, and
``EVAL_FOLDER/results.json``, default ``eval``): the exact training command (the config's
overrides recovered by comparing the run's resolved config with ``configs/NAME.yaml``), the
meta-iterations and their summed wall time, then ours after 0..K steps with 95% CIs, the
paired change from 0 steps with its CI and the tasks it improved (for a loss also the median
and the number of diverging tasks per step) beside the MAML paper's
numbers (Finn, Abbeel & Levine 2017: Fig. 5 for RL, Sec. 5.1 for the sinusoid). It also
draws ``pretrained/NAME/training.png``, the training curve.

A number in a sentence or a table cell (the README's results table) sits between
``<!-- ours: NAME FOLDER STEP [success] -->`` and ``<!-- /ours -->`` on one line. A sweep
block, ``<!-- sweep: NAME GLOB -->`` ... ``<!-- /sweep -->``, tabulates several
evaluations of one run (the folders ``pretrained/NAME/GLOB``, e.g. the step sizes tried on
validation tasks) the same way.

    python -m maml_rl.results_tables           # rewrite every block, redraw the curves
    python -m maml_rl.results_tables --check   # exit 1 when a block is stale (tests run this)
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from maml_rl.config import Config, flat_settings, load_config
from maml_rl.evaluation import AdaptationCurve, read_results
from maml_rl.logger import read_metrics
from maml_rl.trainer import read_resumes

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "results"
BLOCK = re.compile(r"<!-- results: (\S+)(?: (\S+))? -->\n.*?<!-- /results -->", re.S)
SWEEP = re.compile(r"<!-- sweep: (\S+) (\S+) -->\n.*?<!-- /sweep -->", re.S)
#: One number inside a sentence or a table cell (the README's headline table):
#: ``<!-- ours: NAME FOLDER STEP [success] -->...<!-- /ours -->`` on one line.
CELL = re.compile(r"<!-- ours: (\S+) (\S+) (\d+)( success)? -->.*?<!-- /ours -->")
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]

#: The MAML paper's numbers per config and method, by number of inner steps (Fig. 5 for RL,
#: average return over 40 test tasks; Sec. 5.1 for the sinusoid, MSE with K = 5).
PAPER: dict[str, dict[str, dict[int, float]]] = {
    "navigation_2d": {
        "MAML": {0: -40.41, 1: -11.68, 2: -3.33, 3: -3.23},
        "pretrained": {0: -40.81, 1: -19.73, 2: -11.72, 3: -8.47},
        "random init": {0: -82.66, 1: -57.96, 2: -53.84, 3: -46.81},
        "oracle": {0: -2.29},
    },
    # ProMP's config on the same family: the MAML paper's MAML row is the reference.
    "navigation_2d_promp": {"MAML": {0: -40.41, 1: -11.68, 2: -3.33, 3: -3.23}},
    "halfcheetah_vel": {
        "MAML": {0: -129.53, 1: -78.57, 2: -66.62, 3: -60.78},
        "pretrained": {0: -158.0, 1: -135.39, 2: -128.47, 3: -133.61},
        "random init": {0: -254.83, 1: -254.33, 2: -246.79, 3: -230.83},
        "oracle": {0: -54.47},
    },
    "halfcheetah_dir": {
        "MAML": {0: -50.69, 1: 293.19, 2: 313.48, 3: 315.65},
        "pretrained": {0: -43.03, 1: -24.75, 2: -12.85, 3: 19.57},
        "random init": {0: -35.73, 1: 21.83, 2: 62.32, 3: 86.18},
        "oracle": {0: 442.69},
    },
    "ant_vel": {
        "MAML": {0: 30.58, 1: 96.74, 2: 100.06, 3: 101.41},
        "pretrained": {0: -1.83, 1: 6.11, 2: 8.47, 3: 9.47},
        "random init": {0: -78.64, 1: -62.81, 2: -48.55, 3: -35.56},
        "oracle": {0: 107.89},
    },
    "ant_dir": {
        "MAML": {0: 8.66, 1: 499.15, 2: 500.68, 3: 499.11},
        "pretrained": {0: 3.16, 1: 1.27, 2: 6.51, 3: 6.86},
        "random init": {0: 3.11, 1: 9.25, 2: 15.96, 3: 26.11},
        "oracle": {0: 524.8},
    },
    "sinusoid": {
        "MAML": {1: 0.67, 5: 0.38, 10: 0.35},
        "pretrained": {1: 2.41, 5: 2.23, 10: 2.19},
    },
}

#: Keys that never change a result, left out of the reproducing command.
_NEUTRAL = ("logging.progress", "logging.tensorboard", "logging.run_root",
            "evaluation.task_chunk")


_METRIC_NAMES = {"mse": "MSE", "return": "Return", "accuracy": "Accuracy"}


def training_command(name: str, config: Config) -> str:
    """The commands that trained ``pretrained/NAME`` from ``configs/NAME.yaml``, in backticks:
    the first run, then each resume that changed a setting (``resumes.yaml``) with the
    iteration it took over at."""
    shipped = flat_settings(load_config(ROOT / "configs" / f"{name}.yaml").to_dict())
    resumes = read_resumes(ROOT / "pretrained" / name)
    first = flat_settings(config.to_dict())
    for record in reversed(resumes):  # back to the settings the run started with
        first.update(record["was"])
    overrides = [f"{k}={_yaml(v)}" for k, v in first.items()
                 if shipped.get(k) != v and k not in _NEUTRAL]
    text = "`" + " ".join(["maml-train", f"configs/{name}.yaml", *overrides,
                           "--run-dir", f"pretrained/{name}"]) + "`"
    for record in resumes:
        changed = [f"{k}={_yaml(v)}" for k, v in record["changed"].items() if k not in _NEUTRAL]
        if changed:
            text += (f", then from iteration {record['iteration']} `maml-train --resume "
                     f"pretrained/{name} {' '.join(changed)}`")
    return text


#: Evaluation keys that never change a curve, or that the command gives as flags.
_EVAL_NEUTRAL = ("task_chunk", "at_end", "every", "every_tasks", "num_tasks", "steps", "seed")


def evaluation_command(name: str, config: Config, curves: Sequence[AdaptationCurve],
                       folder: str | None) -> str | None:
    """The ``maml-evaluate`` command that wrote ``pretrained/NAME/FOLDER``, from the settings
    recorded with its curve of the run's algorithm (:func:`maml_rl.evaluation.evaluation_settings`);
    None when they are unknown (older files) or are the run's own end-of-training evaluation."""
    main = next((c for c in curves if c.method == config.algorithm), None)
    if main is None or main.settings is None:
        return None
    run_eval = config.to_dict()["evaluation"]
    used = main.settings
    overrides = [f"evaluation.{k}={_yaml(v)}" for k, v in sorted(used.items())
                 if k not in _EVAL_NEUTRAL and run_eval.get(k) != v]
    flags = [f"--{flag} {used[key]}" for key, flag in
             (("steps", "steps"), ("num_tasks", "tasks"), ("seed", "seed"))
             if key in used and used[key] != run_eval.get(key)]
    others = {c.method for c in curves if c.method != config.algorithm
              and not c.method.endswith(" (reference)")}
    if others:
        flags.append("--baselines")
    if folder and folder != "eval":
        flags.append(f"--out pretrained/{name}/{folder}")
    elif not overrides and not flags:
        return None
    return " ".join(["maml-evaluate", f"pretrained/{name}", *overrides, *flags])


def _yaml(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(_yaml(v) for v in value) + "]"
    return str(value)


def _cell(mean: float, ci: float | None, digits: int) -> str:
    if not math.isfinite(mean):
        return "diverges"
    if ci is None or not math.isfinite(ci):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {ci:.{digits}f}"


def _signed_cell(mean: float, ci: float, digits: int) -> str:
    if not math.isfinite(mean):
        return "diverges"
    text = f"{mean:+.{digits}f}"
    return text if not math.isfinite(ci) else f"{text} ± {ci:.{digits}f}"


def _change_row(label: str, curve: AdaptationCurve, steps: list[int], digits: int) -> str:
    """A table row of the paired change from 0 steps (:attr:`AdaptationCurve.change`) with
    its 95% CI and the number of tasks improved, per step after the first."""
    n = curve.per_task.shape[0]
    by_step = dict(zip(curve.steps, zip(curve.change, curve.change_ci95, curve.improved,
                                        strict=True), strict=True))
    cells = [f"{_signed_cell(by_step[k][0], by_step[k][1], digits)} ({by_step[k][2]}/{n})"
             if k in by_step and k else "" for k in steps]
    return f"| {label} | " + " | ".join(cells) + " |"


def render_block(name: str, folder: str | None = None) -> str:
    """The markdown of one block (without its markers)."""
    run = ROOT / "pretrained" / name
    config = load_config(run / "config.yaml")
    rows = read_metrics(run)
    curves = read_results(run / (folder or "eval") / "results.json")
    steps = sorted({k for c in curves for k in c.steps} | set().union(
        *(set(v) for v in PAPER.get(name, {}).values())))
    digits = 3 if curves[0].metric == "mse" else 1
    seconds = sum(float(r.get("time/iteration_s") or 0.0) for r in rows)
    command = evaluation_command(name, config, curves, folder)
    evaluated = f"Evaluated with `{command}`. " if command else ""
    lines = [
        f"Trained with {training_command(name, config)}: {len(rows)} meta-iterations, "
        f"{seconds / 60:.0f} min of meta-training (the sum of `time/iteration_s` in "
        f"[`metrics.csv`](../../pretrained/{name}/metrics.csv)). "
        f"{evaluated}"
        f"{_METRIC_NAMES.get(curves[0].metric, curves[0].metric.capitalize())} on "
        f"{curves[0].per_task.shape[0]} held-out tasks, "
        f"from [`pretrained/{name}/{folder or 'eval'}/results.json`]"
        f"(../../pretrained/{name}/{folder or 'eval'}/results.json):",
        "",
        "| method | " + " | ".join(f"{k} step{'s' if k != 1 else ''}" for k in steps) + " |",
        "|---|" + "---|" * len(steps),
    ]
    for c in curves:
        by_step = dict(zip(c.steps, zip(c.mean, c.ci95, strict=True), strict=True))
        cells = [_cell(*by_step[k], digits) if k in by_step else "" for k in steps]
        # A family's reference policies (evaluation.reference_curves) are not ours.
        label = (f"reference: {c.method.removesuffix(' (reference)')}"
                 if c.method.endswith(" (reference)") else f"ours: {c.method}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
        if c.success_mean is not None:  # a family that reports success (Meta-World)
            success = dict(zip(c.steps, c.success_mean, strict=True))
            lines.append(f"| {label}, success rate | " + " | ".join(
                f"{success[k]:.3f}" if k in success else "" for k in steps) + " |")
        if not c.flat and len(c.steps) > 1:
            # Paired with step 0 task by task: the spread between tasks, which the means' CIs
            # include, cancels, so this row says whether adaptation helps.
            lines.append(_change_row(f"{label}, change from 0 steps (tasks improved)", c,
                                     steps, digits))
            if c.success_change is not None:
                change, ci = c.success_change
                by_step = dict(zip(c.steps, zip(change, ci, strict=True), strict=True))
                lines.append(f"| {label}, success rate change | " + " | ".join(
                    _signed_cell(*by_step[k], 3) if k in by_step and k else ""
                    for k in steps) + " |")
        if c.lower_is_better and not c.flat:
            # A mean over many tasks hides a few diverging ones until they overflow (issue 16):
            # the median and the count of diverging tasks say whether every task improves.
            median = dict(zip(c.steps, c.median, strict=True))
            diverged = dict(zip(c.steps, c.diverged, strict=True))
            lines.append(f"| ours: {c.method}, median | " + " | ".join(
                _cell(median[k], None, digits) if k in median else "" for k in steps) + " |")
            lines.append(f"| ours: {c.method}, diverging tasks | " + " | ".join(
                str(diverged[k]) if k in diverged else "" for k in steps) + " |")
    for method, values in PAPER.get(name, {}).items():
        cells = [f"{values[k]:g}" if k in values else "" for k in steps]
        lines.append(f"| paper: {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _algorithm_curve(path: Path, algorithm: str) -> AdaptationCurve:
    """The curve of the run's own algorithm in a ``results.json`` (which may also hold
    baselines); ValueError when it has none."""
    for curve in read_results(path):
        if curve.method == algorithm:
            return curve
    raise ValueError(f"{path} has no curve of {algorithm}")


def render_sweep(name: str, pattern: str) -> str:
    """The markdown of a sweep block: one row per folder of ``pretrained/NAME`` matching the
    glob ``pattern`` (e.g. ``eval/validation-lr*``, evaluations of one checkpoint with several
    settings), the run's algorithm's mean after each number of steps with, from step 1, the
    paired change from 0 steps and its 95% CI (and the success rate's, for a family that
    reports success)."""
    run = ROOT / "pretrained" / name
    config = load_config(run / "config.yaml")
    folders = sorted(p.parent for p in run.glob(f"{pattern}/results.json"))
    if not folders:
        raise FileNotFoundError(f"no results.json under pretrained/{name}/{pattern}")
    curves = {folder: _algorithm_curve(folder / "results.json", config.algorithm)
              for folder in folders}
    steps = sorted({k for c in curves.values() for k in c.steps})
    digits = 3 if next(iter(curves.values())).metric == "mse" else 1
    lines = ["| folder | " + " | ".join(f"{k} step{'s' if k != 1 else ''}" for k in steps)
             + " |", "|---|" + "---|" * len(steps)]
    for folder, c in curves.items():
        cells = []
        for k in steps:
            if k not in c.steps:
                cells.append("")
                continue
            i = c.steps.index(k)
            text = _cell(c.mean[i], None, digits)
            if k:
                text += f" ({_signed_cell(c.change[i], c.change_ci95[i], digits)})"
                if c.success_change is not None:
                    change, ci = c.success_change
                    text += f"; success {_signed_cell(change[i], ci[i], 3)}"
            cells.append(text)
        lines.append(f"| `{folder.relative_to(run)}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_cell(name: str, folder: str, step: int, success: bool = False) -> str:
    """One number of ``pretrained/NAME/FOLDER/results.json``: the run's algorithm's mean and 95%
    CI after ``step`` steps, or with ``success`` its success rate in percent."""
    run = ROOT / "pretrained" / name
    config = load_config(run / "config.yaml")
    curve = _algorithm_curve(run / folder / "results.json", config.algorithm)
    if step not in curve.steps:
        raise ValueError(f"pretrained/{name}/{folder}/results.json has no {step}-step value")
    i = curve.steps.index(step)
    if success:
        if curve.success_mean is None:
            raise ValueError(f"pretrained/{name}/{folder}/results.json has no success rate")
        return f"{100 * curve.success_mean[i]:.{1 if curve.success_mean[i] > 0.99 else 0}f} %"
    return _cell(curve.mean[i], curve.ci95[i], 3 if curve.metric == "mse" else 1)


def plot_training(name: str) -> Path:
    """``pretrained/NAME/training.png``: pre- and post-adaptation return (or loss) per
    meta-iteration, with a 10-iteration running mean (:func:`maml_rl.plots.plot_runs`)."""
    from maml_rl.plots import plot_runs

    run = ROOT / "pretrained" / name
    config = load_config(run / "config.yaml")
    return plot_runs([run], run / "training.png", title=f"{config.env.id}, pretrained/{name}")


def _render_page(text: str) -> str:
    text = BLOCK.sub(lambda m: (f"<!-- results: {m.group(1)}"
                                f"{' ' + m.group(2) if m.group(2) else ''} -->\n"
                                f"{render_block(m.group(1), m.group(2))}\n<!-- /results -->"),
                     text)
    text = SWEEP.sub(lambda m: (f"<!-- sweep: {m.group(1)} {m.group(2)} -->\n"
                                f"{render_sweep(m.group(1), m.group(2))}\n<!-- /sweep -->"),
                     text)
    def cell(m: re.Match) -> str:
        name, folder, step, success = m.group(1), m.group(2), int(m.group(3)), m.group(4)
        return (f"<!-- ours: {name} {folder} {step}{success or ''} -->"
                f"{render_cell(name, folder, step, bool(success))}<!-- /ours -->")

    return CELL.sub(cell, text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m maml_rl.results_tables",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when a generated block is stale; write nothing")
    args = parser.parse_args(argv)
    stale = []
    for page in PAGES:
        text = page.read_text()
        try:
            new = _render_page(text)
        except (FileNotFoundError, KeyError, ValueError) as err:
            # A block naming a run, folder or method that pretrained/ lacks: say which page.
            print(f"{page.relative_to(ROOT)}: cannot render a results block: "
                  f"{err or type(err).__name__}", file=sys.stderr)
            return 2
        if new != text:
            stale.append(page)
            if not args.check:
                page.write_text(new)
        if not args.check:
            for match in BLOCK.finditer(text):
                plot_training(match.group(1))
    if args.check and stale:
        names = ", ".join(str(p.relative_to(ROOT)) for p in stale)
        print(f"stale results tables in {names}; regenerate with: python -m "
              "maml_rl.results_tables", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
