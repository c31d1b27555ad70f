"""Compare finished RL training runs: speed of learning and where each got.

For each run directory: iterations, meta-training wall time (the sum of the logged
``time/iteration_s``), the median seconds per iteration, the first iteration (and the wall time
to it) at which the moving average of the training post-adaptation return reaches
``--threshold``, and the adaptation curve of ``RUN/eval/results.json`` (or of ``--eval-dir``
inside the run) after 0..K steps.

    python experiments/compare_runs.py runs/nav-trpo runs/nav-ppo runs/nav-fomaml --threshold -14
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from maml_rl.logger import read_metrics


def time_to_threshold(rows: list[dict], threshold: float, window: int) -> tuple[int, float] | None:
    """(iteration, seconds of training until then) at which the mean post-adaptation return of
    the last ``window`` iterations first reaches ``threshold``; None if it never does."""
    elapsed, recent = 0.0, []
    for row in rows:
        elapsed += row["time/iteration_s"]
        recent = [*recent, row["return/post_adaptation"]][-window:]
        if len(recent) == window and statistics.fmean(recent) >= threshold:
            return int(row["iteration"]), elapsed
    return None


def summarise(run: Path, threshold: float, window: int, eval_dir: str) -> dict:
    rows = [r for r in read_metrics(run) if "return/post_adaptation" in r]
    if not rows:
        raise SystemExit(f"error: {run}/metrics.csv has no RL training rows")
    reached = time_to_threshold(rows, threshold, window)
    out = {
        "run": str(run), "iterations": len(rows),
        "wall_s": sum(r["time/iteration_s"] for r in rows),
        "s_per_it": statistics.median(r["time/iteration_s"] for r in rows),
        "reached_at": reached,
        "final_post": statistics.fmean(r["return/post_adaptation"] for r in rows[-window:]),
    }
    results = run / eval_dir / "results.json"
    if results.is_file():
        curve = next(iter(json.loads(results.read_text()).values()))
        out["eval"] = list(zip(curve["mean"], curve["ci95"], strict=True))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--threshold", type=float, default=-14.0,
                        help="post-adaptation training return to reach (default -14)")
    parser.add_argument("--window", type=int, default=10, help="moving-average window")
    parser.add_argument("--eval-dir", default="eval", help="evaluation folder inside each run")
    ns = parser.parse_args(argv)
    print(f"| run | iterations | wall | s/it | reaches {ns.threshold:g} (mean of {ns.window}) "
          f"| last {ns.window} its | eval 0 / 1 / 2 / 3 steps |")
    print("|---|---|---|---|---|---|---|")
    for run in ns.runs:
        s = summarise(run, ns.threshold, ns.window, ns.eval_dir)
        reached = ("never" if s["reached_at"] is None
                   else f"it {s['reached_at'][0]}, {s['reached_at'][1] / 60:.1f} min")
        curve = " / ".join(f"{m:.1f} ± {h:.1f}" for m, h in s.get("eval", []))
        print(f"| {run.name} | {s['iterations']} | {s['wall_s'] / 60:.1f} min | "
              f"{s['s_per_it']:.2f} | {reached} | {s['final_post']:.2f} | {curve} |")


if __name__ == "__main__":
    main()
