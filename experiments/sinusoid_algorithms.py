"""Sinusoid K-shot MSE of every algorithm of the MAML family, trained one after the other.

For each algorithm and K: meta-train ``configs/sinusoid.yaml`` (1-40-40-1 ReLU, 25 tasks per
meta-batch, Adam 1e-3) for a common number of iterations with K support shots, then adapt to
1000 held-out tasks (seed 1234, K shots, 100 query points) with the algorithm's own inner step
and report the MSE after 1 and 10 steps (mean +- 95% CI) and the median seconds per
meta-iteration. Runs go to ``--out/<algorithm>-<K>shot``; a finished run is reused, so the
table can be re-printed (``--table-only``) or completed run by run.

    python experiments/sinusoid_algorithms.py --iterations 15000 --threads 1
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

from maml_rl.config import load_config
from maml_rl.logger import read_metrics
from maml_rl.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]

ALGORITHMS = ("maml", "fomaml", "reptile", "metasgd", "anil", "imaml")

#: Settings that differ from configs/sinusoid.yaml (inner.lr 0.01, 1 inner step), and why.
SETTINGS: dict[str, list[str]] = {
    # Reptile needs several inner steps to be more than joint training (Nichol et al. 2018,
    # Sec. 5); at evaluation it adapts with the same plain steps of inner.lr.
    "reptile": ["inner.steps=5"],
    # The proximal problem solved by one line-searched Newton-CG step (gradient steps diverged
    # or stalled in every setting tried, docs/reference/algorithms.md); evaluation takes the
    # same Newton steps.
    "imaml": ["imaml.solver=newton_cg", "inner.lr=1.0", "inner.steps=1", "imaml.lam=2",
              "imaml.inner_cg_steps=5", "imaml.backtracks=4", "imaml.cg_steps=5"],
}


def run_config(algorithm: str, shots: int, iterations: int, threads: int, extra: list[str]):
    return load_config(ROOT / "configs" / "sinusoid.yaml", [
        f"algorithm={algorithm}", f"training.iterations={iterations}",
        f"training.checkpoint_every={iterations}", f"sampling.support_size={shots}",
        # The query size these results were measured with (docs/results/algorithms_sinusoid.md);
        # configs/sinusoid.yaml has since taken the paper code's K query points.
        "sampling.query_size=10",
        f"evaluation.support_size={shots}", "evaluation.num_tasks=1000", "evaluation.steps=10",
        "evaluation.query_size=100", "evaluation.seed=1234", "logging.progress=false",
        "logging.tensorboard=false", "device=cpu", f"threads={threads}",
        *SETTINGS.get(algorithm, []), *extra,
    ])


def finished(run_dir: Path, config) -> bool:
    saved = run_dir / "config.yaml"
    return (run_dir / "eval" / "results.json").is_file() and saved.is_file() and (
        load_config(saved) == config)


def summary(run_dir: Path, algorithm: str) -> dict[str, float]:
    curve = json.loads((run_dir / "eval" / "results.json").read_text())[algorithm]
    times = [r["time/iteration_s"] for r in read_metrics(run_dir)]
    return {
        "mse1": curve["mean"][1], "ci1": curve["ci95"][1],
        "mse10": curve["mean"][10], "ci10": curve["ci95"][10],
        "ms_per_it": 1000 * statistics.median(times), "iterations": len(times),
    }


def _cell(mean: float, ci: float) -> str:
    # Meta-SGD's rates and ANIL's head are tuned for the trained number of steps; repeated
    # beyond it, the steps can blow up.
    return f"{mean:.3f} ± {ci:.3f}" if math.isfinite(mean) and mean < 1e3 else "diverges"


def table(rows: dict[tuple[str, int], dict[str, float]], shots: list[int]) -> str:
    head = "| algorithm | " + " | ".join(
        f"{k}-shot, 1 step | {k}-shot, 10 steps | {k}-shot ms/it" for k in shots) + " |"
    lines = [head, "|---" * (1 + 3 * len(shots)) + "|"]
    for name in ALGORITHMS:
        cells = []
        for k in shots:
            r = rows.get((name, k))
            cells += ([_cell(r["mse1"], r["ci1"]), _cell(r["mse10"], r["ci10"]),
                       f"{r['ms_per_it']:.1f}"] if r else ["", "", ""])
        if any(cells):
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=15000)
    parser.add_argument("--shots", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS),
                        choices=ALGORITHMS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "sinusoid_algorithms")
    parser.add_argument("--table-only", action="store_true", help="train nothing; tabulate")
    parser.add_argument("overrides", nargs="*", help="section.key=value for every run")
    args = parser.parse_args()
    rows = {}
    for shots in args.shots:
        for name in args.algorithms:
            config = run_config(name, shots, args.iterations, args.threads, args.overrides)
            run_dir = args.out / f"{name}-{shots}shot"
            if not finished(run_dir, config):
                if args.table_only:
                    continue
                start = time.perf_counter()
                result = Trainer(config, run_dir).train()
                print(f"{run_dir.name}: {result.status} after {result.iteration} iterations, "
                      f"{time.perf_counter() - start:.0f} s wall", flush=True)
                if result.status != "completed":
                    continue
            rows[name, shots] = summary(run_dir, name)
    print(f"\nsinusoid MSE on 1000 held-out tasks (mean ± 95% CI), {args.iterations} "
          f"meta-iterations each, {args.threads} torch thread(s)")
    for name, extra in SETTINGS.items():
        print(f"  {name}: {' '.join(extra)}")
    text = table(rows, args.shots)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
