"""Scale-out on torch.distributed: N processes give what one process gives.

Every test launches the documented command, ``torchrun --nproc_per_node=N scripts/train.py
CONFIG ...`` (as ``python -m torch.distributed.run``), on CPU with gloo, in a temporary folder,
and compares the run with a one-process run of the same config: metrics to 1e-5 relative (in
practice they are bit-identical, since every mean over tasks is formed from per-task values in
float64) and checkpoint parameters to 1e-6.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from maml_rl.checkpoint import load_checkpoint
from maml_rl.logger import read_metrics

REPO = Path(__file__).resolve().parents[1]
TRAIN = str(REPO / "scripts" / "train.py")
_QUIET = ["logging.progress=false", "logging.tensorboard=false", "device=cpu", "threads=1"]
NAV = ["configs/navigation_2d.yaml", "sampling.meta_batch_size=5", "sampling.support_size=4",
       "sampling.query_size=4", "sampling.horizon=30", "policy.hidden_sizes=[16,16]",
       "evaluation.num_tasks=5", "evaluation.steps=1", *_QUIET]
SINE = ["configs/sinusoid.yaml", "sampling.meta_batch_size=5", "policy.hidden_sizes=[20,20]",
        "evaluation.num_tasks=6", "evaluation.steps=2", *_QUIET]
#: what the machine measures, not the learning
MACHINE = ("time/", "perf/", "dist/")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def _command(nproc: int, args: list[str], *launcher: str) -> list[str]:
    config, *overrides = args
    head = [sys.executable]
    if nproc:  # --standalone: a c10d rendezvous on a free port, which restarts can rejoin
        head += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
                 *launcher]
    return [*head, TRAIN, *([str(REPO / config)] if config else []), *overrides]


def _train(tmp: Path, nproc: int, args: list[str], *launcher: str, timeout: float = 240
           ) -> subprocess.CompletedProcess:
    """``nproc`` = 0: the plain one-process command; else torchrun with ``nproc`` workers."""
    proc = subprocess.run(_command(nproc, args, *launcher), cwd=tmp, env=_env(),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _same_run(one: Path, other: Path, rtol: float = 1e-5) -> None:
    """Metrics to ``rtol`` and checkpoint parameters to ``rtol / 10``."""
    rows_a, rows_b = read_metrics(one), read_metrics(other)
    assert len(rows_a) == len(rows_b) > 0
    for a, b in zip(rows_a, rows_b, strict=True):
        for key, value in a.items():
            if key.startswith(MACHINE):
                continue
            assert math.isclose(value, b[key], rel_tol=rtol, abs_tol=1e-7), (key, value, b[key])
    params_a = load_checkpoint(one / "checkpoint.pt")["learner"]["model"]
    params_b = load_checkpoint(other / "checkpoint.pt")["learner"]["model"]
    for name, value in params_a.items():
        torch.testing.assert_close(params_b[name], value, rtol=rtol / 10, atol=rtol / 10)


CASES = {
    "nav_trpo": NAV,
    "sinusoid": SINE,
    "nav_promp": ["configs/navigation_2d_promp.yaml", *NAV[1:], "evaluation.at_end=false"],
    "nav_metasgd": [*NAV, "algorithm=metasgd", "inner.lr=0.5", "meta.curvature=hessian",
                    "evaluation.at_end=false"],
    **{f"sinusoid_{name}": [*SINE, f"algorithm={name}", "evaluation.at_end=false"]
       for name in ("reptile", "imaml", "metasgd", "platipus")},
}


#: Meta-SGD's TRPO needs ``meta.curvature: hessian``, whose products sum over tasks inside
#: autograd (in float32, in an order set by the layout) and whose learned rates are shared by
#: the tasks: one process and two agree to float32 rounding amplified by the conjugate
#: gradient (about 1e-4 after one iteration), and a later line search may then take another
#: number of steps (docs/guide/scaling_out.md). So that case is compared after one iteration.
#: Every other case is formed from per-task values and compared after three.
RTOL = {"nav_metasgd": 1e-3}
ITERATIONS = {"nav_metasgd": 1}


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_give_the_numbers_of_one(tmp_path, case):
    iterations = ITERATIONS.get(case, 3)
    args = [*CASES[case], f"training.iterations={iterations}",
            f"training.checkpoint_every={iterations}", "distributed.check_every=1"]
    at_end = "evaluation.at_end=false" not in args
    _train(tmp_path, 0, [*args, "--run-dir", "one"])
    two = _train(tmp_path, 2, [*args, "--run-dir", "two"])
    _same_run(tmp_path / "one", tmp_path / "two", RTOL.get(case, 1e-5))
    rows = read_metrics(tmp_path / "two")
    assert all(row["dist/world_size"] == 2 and row["time/allreduce_s"] > 0 for row in rows)
    if at_end:  # the held-out evaluation was split over both processes: the same curve
        assert (tmp_path / "two" / "eval" / "results.csv").read_text() == (
            tmp_path / "one" / "eval" / "results.csv").read_text()
    # Rank 0 alone prints: one "run directory" line at the start and one at the end.
    assert two.stdout.count("run directory: two") == 2


def test_three_processes_with_a_meta_batch_that_does_not_divide(tmp_path):
    args = [*NAV, "training.iterations=2", "training.checkpoint_every=2",
            "meta.hvp_task_fraction=0.5", "evaluation.at_end=false"]
    _train(tmp_path, 0, [*args, "--run-dir", "one"])
    _train(tmp_path, 3, [*args, "--run-dir", "three"])  # 5 tasks: 2 + 2 + 1
    _same_run(tmp_path / "one", tmp_path / "three")


def test_resume_with_another_number_of_processes(tmp_path):
    args = [*NAV, "evaluation.at_end=false", "training.checkpoint_every=1"]
    _train(tmp_path, 0, [*args, "training.iterations=3", "--run-dir", "whole"])
    _train(tmp_path, 2, [*args, "training.iterations=2", "--run-dir", "split"])
    _train(tmp_path, 0, ["", "--resume", "split", "training.iterations=3"])
    _same_run(tmp_path / "whole", tmp_path / "split")


def test_more_processes_than_tasks_is_refused_in_one_line(tmp_path):
    proc = subprocess.run(_command(2, [*SINE, "sampling.meta_batch_size=1", "--run-dir", "r"]),
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors == ["error: sampling.meta_batch_size=1 is smaller than the 2 processes: "
                      "every process needs at least one task; launch fewer processes or raise "
                      "it"]


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True).stdout
    return [int(p) for p in out.split()]


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.1)


def _workers(proc: subprocess.Popen, count: int) -> list[int]:
    end = time.monotonic() + 60
    while len(workers := _children(proc.pid)) < count:
        assert time.monotonic() < end
        time.sleep(0.1)
    return workers


def test_a_killed_process_is_restarted_and_the_run_resumes(tmp_path):
    args = [*NAV, "evaluation.at_end=false", "training.checkpoint_every=1",
            "training.iterations=12", "sampling.horizon=100"]
    _train(tmp_path, 0, [*args, "--run-dir", "whole"])
    cmd = _command(2, [*args, "--run-dir", "restarted"], "--max-restarts", "1")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for(tmp_path / "restarted" / "checkpoint.pt", proc)
    os.kill(_workers(proc, 2)[1], signal.SIGKILL)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    _same_run(tmp_path / "whole", tmp_path / "restarted")


def test_a_dead_process_ends_the_job_with_one_line_not_a_hang(tmp_path):
    args = [*NAV, "evaluation.at_end=false", "training.iterations=200",
            "distributed.timeout_s=60"]
    proc = subprocess.Popen(_command(2, [*args, "--run-dir", "r"]), cwd=tmp_path, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(tmp_path / "r" / "metrics.csv", proc)
    time.sleep(1.0)
    start = time.monotonic()
    os.kill(_workers(proc, 2)[1], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and time.monotonic() - start < 60
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) <= 1 and all("another process died" in line for line in errors), err


def test_ctrl_c_stops_every_process_after_the_same_iteration_with_one_checkpoint(tmp_path):
    args = [*NAV, "evaluation.at_end=false", "training.iterations=500",
            "training.checkpoint_every=1000", "sampling.horizon=100"]
    proc = subprocess.Popen(_command(2, [*args, "--run-dir", "r"]), cwd=tmp_path, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(tmp_path / "r" / "metrics.csv", proc)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)  # what a terminal's Ctrl-C sends to torchrun
    _, err = proc.communicate(timeout=120)
    assert "interrupted at iteration" in err, err[-3000:]
    state = load_checkpoint(tmp_path / "r" / "checkpoint.pt")
    assert state["iteration"] == len(read_metrics(tmp_path / "r")) > 0


def test_shards_cover_the_meta_batch_in_order():
    from maml_rl.distributed import ProcessGroup

    for tasks, world in ((40, 2), (5, 3), (40, 16), (7, 7)):
        shards = [ProcessGroup(r, world).shard(tasks) for r in range(world)]
        assert [i for s in shards for i in s] == list(range(tasks))
        assert max(map(len, shards)) - min(map(len, shards)) <= 1


def _check_identical_worker(rank: int, store_path: str, queue) -> None:
    from maml_rl.distributed import DistributedError, ProcessGroup

    store = torch.distributed.FileStore(store_path, 2)
    torch.distributed.init_process_group("gloo", store=store, rank=rank, world_size=2)
    group = ProcessGroup(rank, 2)
    same = [torch.ones(3)]
    group.check_identical(same)  # passes
    try:
        group.check_identical([torch.ones(3) + rank * 1e-7])
        queue.put((rank, "no error"))
    except DistributedError as err:
        queue.put((rank, str(err)))
    torch.distributed.destroy_process_group()


def test_parameters_that_drift_apart_are_caught(tmp_path):
    context = torch.multiprocessing.get_context("spawn")
    queue = context.SimpleQueue()
    workers = [context.Process(target=_check_identical_worker,
                               args=(r, str(tmp_path / "store"), queue)) for r in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    results = dict(queue.get() for _ in range(2))
    assert all("differ between rank 0 and rank(s) [1]" in results[r] for r in (0, 1)), results
