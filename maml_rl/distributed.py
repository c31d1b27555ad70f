"""Data-parallel meta-training over tasks, on torch.distributed (launched by ``torchrun``).

MAML's meta-batch is data-parallel by construction: every quantity of a meta-iteration is a
mean over its M tasks (Finn et al. 2017, Eq. 3 and Algorithm 3): the meta-gradient, each
Fisher-vector product of TRPO's conjugate gradient, the line search's surrogate and KL. Every
rank draws the same M tasks from the shared task generator and works on a contiguous shard of
them; a mean over tasks is then each rank's float64 sum of per-task values, summed over the
ranks by one all-reduce and divided by M. Episodes are seeded per (iteration, task)
(:func:`maml_rl.seeding.episode_keys`), so the numbers do not depend on the number of
processes, and the parameters stay identical on every rank
(:meth:`ProcessGroup.check_identical`).

Without ``torchrun`` (no ``WORLD_SIZE`` in the environment) the run is one process and every
collective here is the identity, with no arithmetic added.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from maml_rl.config import ConfigError

T = TypeVar("T")


class DistributedError(RuntimeError):
    """A collective failed or timed out (another rank died or hung), or the ranks disagree."""


class ProcessGroup:
    """This process's place in the run: ``rank`` of ``world_size``, on ``device``.

    ``world_size == 1`` is the plain single-process run. Every collective adds its wall time to
    :attr:`collective_seconds` (logged as ``time/allreduce_s``)."""

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0,
                 device: str = "cpu") -> None:
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.device = device
        self.collective_seconds = 0.0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0, the one process that writes the run directory."""
        return self.rank == 0

    # -- sharding ------------------------------------------------------------------------------
    def shard(self, num_tasks: int, rank: int | None = None) -> range:
        """The task indices of ``rank`` (default: this one): a contiguous block, the first
        ``num_tasks % world_size`` ranks holding one task more."""
        rank = self.rank if rank is None else rank
        size, extra = divmod(num_tasks, self.world_size)
        start = rank * size + min(rank, extra)
        return range(start, start + size + (rank < extra))

    def check_meta_batch(self, name: str, num_tasks: int) -> None:
        """Refuse a meta-batch with fewer tasks than ranks (a rank would hold none)."""
        if num_tasks < self.world_size:
            raise ConfigError(f"{name}={num_tasks} is smaller than the {self.world_size} "
                              "processes: every process needs at least one task; launch fewer "
                              "processes or raise it")

    # -- collectives ---------------------------------------------------------------------------
    def _timed(self, fn: Callable[[], T]) -> T:
        start = time.perf_counter()
        try:
            return fn()
        except (RuntimeError, ValueError) as err:
            raise DistributedError(_collective_failure(self.rank, err)) from None
        finally:
            self.collective_seconds += time.perf_counter() - start

    def sum(self, values: Sequence[Tensor]) -> list[Tensor]:
        """Each tensor summed over the processes (one all-reduce of them all, in their dtype;
        the callers pass float64 sums over their tasks). Single process: ``values``."""
        values = list(values)
        if not self.distributed:
            return values
        flat = torch.cat([v.detach().reshape(-1).to(torch.float64) for v in values])
        flat = flat.to(self.device)

        def reduce() -> Tensor:
            torch.distributed.all_reduce(flat)
            return flat

        flat = self._timed(reduce)
        out, offset = [], 0
        for v in values:
            out.append(flat[offset:offset + v.numel()].reshape(v.shape).to(v.device, v.dtype))
            offset += v.numel()
        return out

    def task_mean(self, per_task: Sequence[Tensor], total: int) -> list[Tensor]:
        """Means over all ``total`` tasks of per-task values (leading dimension: this
        process's tasks), summed in float64 on each process and over the processes."""
        sums = self.sum([v.detach().double().sum(0) for v in per_task])
        return [(s / total).to(v.dtype) for s, v in zip(sums, per_task, strict=True)]

    def rank_mean(self, values: dict[str, float]) -> dict[str, float]:
        """The mean over the processes of each number (a per-process timing)."""
        if not self.distributed or not values:
            return values
        (total,) = self.sum([torch.tensor(list(values.values()), dtype=torch.float64)])
        return {k: v / self.world_size for k, v in zip(values, total.tolist(), strict=True)}

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is True on any (a Ctrl-C seen by one rank)."""
        if not self.distributed:
            return flag
        value = torch.tensor([float(flag)], device=self.device)

        def reduce() -> Tensor:
            torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
            return value

        return bool(self._timed(reduce).item() > 0)

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        self._timed(lambda: torch.distributed.all_gather_object(out, obj))
        return out

    def map_tasks(self, tasks: Sequence[Any], fn: Callable[[list[Any], int], np.ndarray]
                  ) -> np.ndarray:
        """``fn(local_tasks, first_index)`` on this process's contiguous share of ``tasks``
        (rows per task), the rows of every process concatenated in task order."""
        if not self.distributed:
            return fn(list(tasks), 0)
        self.check_meta_batch("the number of evaluation tasks", len(tasks))
        local = self.shard(len(tasks))
        rows = fn([tasks[i] for i in local], local.start)
        return np.concatenate(self.gather(rows))

    def check_identical(self, parameters: Sequence[Tensor]) -> None:
        """Raise :class:`DistributedError` unless ``parameters`` are bit-identical on every
        rank (a digest of their bytes is compared)."""
        if not self.distributed:
            return
        digest = hashlib.sha256()
        for p in parameters:
            digest.update(p.detach().cpu().contiguous().numpy().tobytes())
        digests = self.gather(digest.hexdigest())
        if len(set(digests)) > 1:
            differing = [r for r, d in enumerate(digests) if d != digests[0]]
            raise DistributedError(f"the meta-parameters differ between rank 0 and rank(s) "
                                   f"{differing}; the reductions are not deterministic on this "
                                   "backend")

    def barrier(self) -> None:
        """Wait until every process reaches this point."""
        if self.distributed:
            self._timed(torch.distributed.barrier)


#: The single-process group: every collective is the identity.
SINGLE_PROCESS = ProcessGroup()


def launched_by_torchrun() -> bool:
    """True in a process started by ``torchrun`` (or any launcher setting ``WORLD_SIZE``)."""
    return "WORLD_SIZE" in os.environ


def restart_count() -> int:
    """How often torchrun has restarted the workers (``--max-restarts``); 0 otherwise."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def init_process_group(device: str, timeout_s: float) -> ProcessGroup:
    """Join the process group torchrun set up (``gloo`` on CPU, ``nccl`` on CUDA, rank r on
    ``cuda:LOCAL_RANK``); every collective fails after ``timeout_s`` seconds instead of
    waiting for a dead rank forever. Single process without torchrun."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return ProcessGroup(device=device)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
        device, backend = f"cuda:{local_rank}", "nccl"
    else:
        backend = "gloo"
    timeout = datetime.timedelta(seconds=timeout_s)
    try:
        torch.distributed.init_process_group(
            backend, store=_attempt_store(rank, world, timeout), rank=rank, world_size=world,
            timeout=timeout)
    except (RuntimeError, ValueError) as err:
        raise DistributedError(f"rank {rank}: could not join the process group ({backend}): "
                               f"{_first_line(err)}") from None
    return ProcessGroup(rank, world, local_rank, device)


def _attempt_store(rank: int, world: int, timeout: datetime.timedelta
                   ) -> torch.distributed.Store:
    """The rendezvous store torchrun set up, its keys prefixed by the restart count: after
    ``--max-restarts`` restarts the workers, keys a dead worker left there (its address) would
    otherwise be read by the new ones, which then fail to connect (pytorch/pytorch#135712)."""
    # Under torchrun the agent hosts the store; another launcher leaves that to rank 0.
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = torch.distributed.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
        is_master=rank == 0 and not agent, timeout=timeout)
    return torch.distributed.PrefixStore(f"maml-rl/attempt-{restart_count()}", store)


def _collective_failure(rank: int, err: Exception) -> str:
    text = str(err)
    if "timed out" in text.lower() or "timeout" in text.lower():
        cause = "a collective timed out: another process died or hung"
    else:
        cause = "a collective failed: another process died"
    return f"rank {rank}: {cause} ({_first_line(err)})"


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return (lines[0] if lines else type(err).__name__)[:200]
