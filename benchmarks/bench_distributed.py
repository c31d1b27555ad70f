"""Seconds per meta-iteration of one process against N processes under torchrun, interleaved,
split into sampling / adaptation / meta-step / collectives; then the cost of one all-reduce of
the policy's gradient-sized vector, and a scaling table on paper for N = 1..64.

Each layout trains ``--iterations`` meta-iterations from scratch in a temporary folder (no
evaluation, no TensorBoard), through the documented commands; the first iteration is dropped as
warm-up and the medians of the others are printed. Layouts are ``PROCESSESxTHREADS``:

    python benchmarks/bench_distributed.py configs/halfcheetah_vel.yaml \\
        --layout 1x2 --layout 2x1 --iterations 6 --rounds 2

On a machine with more cores (``--layout 1x1 --layout 2x1 --layout 4x1 --layout 8x1``), and
``device=cuda`` as an override for the GPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from maml_rl.logger import read_metrics

REPO = Path(__file__).resolve().parents[1]
QUIET = ["logging.progress=false", "logging.tensorboard=false", "evaluation.at_end=false",
         "evaluation.every=0", "training.checkpoint_every=100000"]
COLUMNS = [("time/sampling_s", "sampling"), ("time/adaptation_s", "adaptation"),
           ("time/meta_step_s", "meta-step"), ("time/allreduce_s", "collectives"),
           ("time/iteration_s", "iteration")]


def run_layout(config: str, overrides: list[str], layout: str, iterations: int,
               folder: Path) -> dict[str, float]:
    """Train with ``layout`` (``PxT``) and return the median seconds per column."""
    processes, threads = (int(x) for x in layout.split("x"))
    run = folder / f"{layout}-{len(list(folder.iterdir()))}"
    train = [str(REPO / "scripts" / "train.py"), str(REPO / config), *QUIET, *overrides,
             f"threads={threads}", f"training.iterations={iterations}", "--run-dir", str(run)]
    if processes == 1:
        command = [sys.executable, *train]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   "--nproc_per_node", str(processes), *train]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    rows = read_metrics(run)[1:]
    return {label: statistics.median(row.get(key, 0.0) for row in rows)
            for key, label in COLUMNS}


def allreduce_seconds(numel: int, processes: int, repeats: int = 200) -> float:
    """Median seconds of one all-reduce of ``numel`` float64 over ``processes`` local gloo
    processes (launched by torchrun running this file with ``--allreduce-worker``)."""
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
         str(processes), __file__, "--allreduce-worker", str(numel), str(repeats)],
        check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return float(out.stdout.strip().splitlines()[-1])


def _allreduce_worker(numel: int, repeats: int) -> None:
    import time

    torch.distributed.init_process_group("gloo")
    buffer = torch.ones(numel, dtype=torch.float64)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.distributed.all_reduce(buffer)
        times.append(time.perf_counter() - start)
    if torch.distributed.get_rank() == 0:
        print(statistics.median(times[repeats // 10:]))
    torch.distributed.destroy_process_group()


def policy_size(config: str, overrides: list[str]) -> tuple[int, int, int]:
    """Meta-parameters, meta-batch size and conjugate-gradient iterations of the config."""
    from maml_rl.config import load_config
    from maml_rl.family import load_family
    from maml_rl.policies import build_model

    cfg = load_config(REPO / config, [o for o in overrides if not o.startswith("device")])
    family = load_family(cfg.env.id, cfg.env.kwargs, cfg.env.module)
    model = build_model(cfg.policy, family.observation_space, family.action_space,
                        supervised=family.supervised)
    return (sum(p.numel() for p in model.parameters()), cfg.sampling.meta_batch_size,
            cfg.meta.cg_iters)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", nargs="?")
    parser.add_argument("overrides", nargs="*", help="key=value for every layout")
    parser.add_argument("--layout", action="append", default=None,
                        help="PROCESSESxTHREADS, e.g. 1x2 or 2x1 (repeatable)")
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--allreduce-worker", nargs=2, type=int, help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.allreduce_worker:
        _allreduce_worker(*ns.allreduce_worker)
        return
    layouts = ns.layout or ["1x2", "2x1"]
    results: dict[str, list[dict[str, float]]] = {layout: [] for layout in layouts}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(ns.rounds):  # interleaved: every layout once per round
            for layout in layouts:
                results[layout].append(run_layout(ns.config, ns.overrides, layout,
                                                  ns.iterations, Path(tmp)))
    print(f"{ns.config} {' '.join(ns.overrides)}: median s/it over {ns.iterations - 1} "
          f"iterations, {ns.rounds} round(s), layouts interleaved")
    print(f"{'processes x threads':<22}" + "".join(f"{label:>13}" for _, label in COLUMNS)
          + f"{'speed-up':>10}")
    base = statistics.median(r["iteration"] for r in results[layouts[0]])
    medians = {}
    for layout in layouts:
        row = {label: statistics.median(r[label] for r in results[layout])
               for _, label in COLUMNS}
        medians[layout] = row
        print(f"{layout:<22}" + "".join(f"{row[label]:>13.3f}" for _, label in COLUMNS)
              + f"{base / row['iteration']:>9.2f}x")

    numel, tasks, cg_iters = policy_size(ns.config, ns.overrides)
    cost, tiny = allreduce_seconds(numel, 2), allreduce_seconds(1, 2)
    print(f"\nall-reduce over 2 local gloo processes: {numel} float64 ({numel * 8 / 1e3:.0f} kB,"
          f" the gradient and each Fisher-vector product) {cost * 1e3:.3f} ms; one float64 "
          f"{tiny * 1e3:.3f} ms")
    # Ring all-reduce: 2 (N - 1) latency-bound steps and 2 (N - 1) / N of the bytes each way;
    # with 2 processes that is 2 latencies + the bytes, which the two sizes separate.
    latency = tiny / 2
    per_byte_time = max(cost - tiny, 0.0)

    def ring(n: int) -> float:
        return 2 * (n - 1) * latency + 2 * (n - 1) / n * per_byte_time
    # Per iteration: the gradient, cg_iters + 1 Fisher-vector products, the line search's
    # loss and KL (about 2 tries of 2 numbers), the metrics: cg_iters + 2 vector-sized ones.
    vector_reductions = cg_iters + 2
    one = medians[layouts[0]]
    work = one["adaptation"] + one["meta-step"]
    sampling = one["sampling"]
    print(f"\nscaling on paper from the {layouts[0]} row, N processes on one machine: the "
          f"per-task work of adaptation and meta-step ({work:.2f} s) / N, {tasks} tasks split "
          f"as evenly as possible (the largest share sets the pace); sampling kept at "
          f"{sampling:.2f} s (its physics already runs in a thread per core; more machines "
          f"would divide it too); {vector_reductions} vector all-reduces per iteration, each "
          f"a ring all-reduce with the latency and bandwidth measured above")
    print(f"{'N':>4}{'tasks/process':>15}{'per-task s':>12}{'all-reduce s':>14}{'s/it':>9}"
          f"{'speed-up':>10}")
    for n in (1, 2, 4, 8, 16, 32, 64):
        if n > tasks:
            break
        share = -(-tasks // n)
        comm = vector_reductions * ring(n)
        total = sampling + work * share / tasks + comm
        print(f"{n:>4}{share:>15}{work * share / tasks:>12.3f}{comm:>14.4f}{total:>9.3f}"
              f"{(sampling + work) / total:>9.2f}x")


if __name__ == "__main__":
    main()
