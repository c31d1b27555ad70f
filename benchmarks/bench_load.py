"""Seconds per meta-iteration of a training alone, beside one busy process, and beside a second
identical training: a thread setting must not collapse under load (issue: "no collapse under
load"). Each training is a fresh ``maml-train`` process, as a user starts it.

For each ``--variant`` (overrides such as ``threads=2``, or an environment setting such as
``OMP_WAIT_POLICY=PASSIVE``, which the process gets in its environment), it runs:

1. the training alone;
2. the same with ``python -c "while True: pass"`` spinning beside it;
3. two copies of the training at once;

and prints each setting's median seconds per iteration (iterations 2..N) and its ratio to the
solo time. It exits 1 when a ratio exceeds ``--limit`` (default 2.5).

    python benchmarks/bench_load.py configs/navigation_2d.yaml --iterations 6 \\
        --variant "threads=2" --variant "threads=1" --variant ""
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["logging.progress=false", "logging.tensorboard=false", "evaluation.at_end=false"]
BUSY = [sys.executable, "-c", "while True: pass"]


def _train_command(config: str, overrides: list[str], run_dir: Path) -> list[str]:
    return [sys.executable, str(ROOT / "scripts" / "train.py"), config, *overrides, *QUIET,
            "--run-dir", str(run_dir)]


def _median_seconds(run_dir: Path) -> float:
    from maml_rl.logger import read_metrics

    rows = read_metrics(run_dir)[1:]  # the first iteration is warm-up
    return statistics.median(r["time/iteration_s"] for r in rows)


def _run(config: str, overrides: list[str], env: dict[str, str], copies: int, busy: bool,
         tmp: Path) -> float:
    """Median s/it of the first of ``copies`` simultaneous trainings."""
    spinner = subprocess.Popen(BUSY) if busy else None
    try:
        dirs = [Path(tempfile.mkdtemp(dir=tmp)) / "run" for _ in range(copies)]
        procs = [subprocess.Popen(_train_command(config, overrides, d), env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for d in dirs]
        for p in procs:
            _, err = p.communicate()
            if p.returncode:
                raise SystemExit(f"training failed ({p.returncode}): {err.strip()[-300:]}")
        return max(_median_seconds(d) for d in dirs)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*", help="key=value for every variant")
    parser.add_argument("--variant", action="append", default=None,
                        help="quoted overrides / VAR=value environment settings (repeatable)")
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--limit", type=float, default=2.5)
    args = parser.parse_intermixed_args()
    variants = args.variant or [""]
    print(f"{args.config} {' '.join(args.overrides)}: median s/it of iterations "
          f"2..{args.iterations}, {os.cpu_count()} CPUs")
    print(f"  {'variant':<34}{'alone':>8}{'+ busy':>9}{'ratio':>7}{'x2 runs':>9}{'ratio':>7}")
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for variant in variants:
            words = variant.split()
            env = dict(os.environ)
            env.update(w.split("=", 1) for w in words if w.split("=", 1)[0].isupper())
            overrides = [*args.overrides, *(w for w in words if not w.split("=", 1)[0].isupper()),
                         f"training.iterations={args.iterations}"]
            alone = _run(args.config, overrides, env, 1, False, Path(tmp))
            busy = _run(args.config, overrides, env, 1, True, Path(tmp))
            pair = _run(args.config, overrides, env, 2, False, Path(tmp))
            ratios = busy / alone, pair / alone
            failed |= max(ratios) > args.limit
            print(f"  {variant or '(config)':<34}{alone:8.2f}{busy:9.2f}{ratios[0]:7.1f}"
                  f"{pair:9.2f}{ratios[1]:7.1f}", flush=True)
    print(f"limit {args.limit}x: {'FAIL' if failed else 'pass'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
