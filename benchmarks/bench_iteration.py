"""Seconds per meta-iteration of an RL config, split into sampling / adaptation / meta-step,
for several variants of it run one after another in the same process (so ratios are measured
under the same load).

Each variant is a quoted list of ``key=value`` overrides applied on top of the config and the
common overrides; ``""`` is the config itself. Every variant trains ``--iterations`` meta-
iterations from scratch in a temporary run directory (no evaluation, no TensorBoard); the first
iteration is dropped as warm-up and the medians of the others are printed.

    python benchmarks/bench_iteration.py configs/navigation_2d.yaml threads=1 --iterations 8 \\
        --variant "" --variant "policy.hidden_sizes=[64,64] policy.nonlinearity=tanh"

The peer-shaped workload (our code at tristandeleu/pytorch-maml-rl's 2D-navigation sizes: 20
tasks x 20 + 20 episodes x 100 steps, 64-64 tanh, second order), exact and cheaper curvature,
interleaved over rounds:

    python benchmarks/bench_iteration.py configs/navigation_2d.yaml threads=2 \\
        "policy.hidden_sizes=[64,64]" policy.nonlinearity=tanh --iterations 8 --rounds 3 \\
        --variant "" --variant "meta.hvp_task_fraction=0.25"

The closest peer's own seconds per iteration (tristandeleu/pytorch-maml-rl, measured separately,
since it cannot run from this repository) are on the speed page, docs/results/speed.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from maml_rl.config import load_config
from maml_rl.logger import read_metrics
from maml_rl.trainer import Trainer

QUIET = ["logging.progress=false", "logging.tensorboard=false", "evaluation.at_end=false",
         "evaluation.every=0"]
COLUMNS = [("time/sampling_s", "sampling"), ("time/adaptation_s", "adaptation"),
           ("time/meta_step_s", "meta-step"), ("time/iteration_s", "iteration")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*", help="key=value for every variant")
    parser.add_argument("--variant", action="append", default=None,
                        help="quoted key=value overrides of one variant (repeatable)")
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the variants round-robin this many times (ratios within a "
                             "round are measured under the same load)")
    args = parser.parse_intermixed_args()
    if args.iterations < 2:
        parser.error("--iterations: must be >= 2 (the first is dropped as warm-up)")
    variants = args.variant or [""]
    print(f"{args.config} {' '.join(args.overrides)}: median of iterations 2..{args.iterations}")
    width = max(len("(config)"), *(len(v) for v in variants)) + 2
    print(f"  {'variant':<{width}}" + "".join(f"{name:>11}" for _, name in COLUMNS)
          + f"{'steps/s':>10}{'post-adapt':>11}")
    for round_ in range(1, args.rounds + 1):
        if args.rounds > 1:
            print(f"  round {round_}")
        for variant in variants:
            _run(args, variant, width)


def _run(args: argparse.Namespace, variant: str, width: int) -> None:
    """Train one variant from scratch and print its line."""
    overrides = [*args.overrides, *variant.split(), *QUIET,
                 f"training.iterations={args.iterations}"]
    config = load_config(args.config, overrides)
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        Trainer(config, run_dir).train()
        wall = time.perf_counter() - start
        rows = read_metrics(Path(run_dir))[1:]
    medians = [statistics.median(r[key] for r in rows) for key, _ in COLUMNS]
    steps = statistics.median(r["perf/env_steps_per_s"] for r in rows)
    post = rows[-1]["return/post_adaptation"]
    print(f"  {variant or '(config)':<{width}}" + "".join(f"{m:>10.2f}s" for m in medians)
          + f"{steps:>10.0f}{post:>11.1f}   ({wall:.0f} s wall)")


if __name__ == "__main__":
    main()
