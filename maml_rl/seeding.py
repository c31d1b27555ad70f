"""Seeding and RNG state of a run, in one place, so a run can be resumed bit for bit.

Episodes are seeded per (iteration, task) (:func:`episode_keys`), not by a generator carried
from one iteration to the next: the numbers of a run then do not depend on how its meta-batch
is split over processes, and a checkpoint needs no sampler state."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> np.random.Generator:
    """Seed python, numpy and torch; return the run's task generator."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def rng_state(task_rng: np.random.Generator) -> dict[str, Any]:
    """Every global RNG state plus the run's task generator (checkpointable with weights_only)."""
    state = {
        "python": random.getstate(),
        "numpy_global": _numpy_global_state(),
        "task_rng": task_rng.bit_generator.state,
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], task_rng: np.random.Generator) -> None:
    random.setstate(_as_tuple(state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy_global"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    task_rng.bit_generator.state = state["task_rng"]
    torch.set_rng_state(state["torch"])
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["torch_cuda"])


def _numpy_global_state() -> tuple:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return (name, keys.tolist(), int(pos), int(has_gauss), float(cached))


def _as_tuple(value: Any) -> Any:
    """Checkpoints store tuples as lists in places; ``random.setstate`` needs tuples."""
    if isinstance(value, list | tuple):
        return tuple(_as_tuple(v) for v in value)
    return value


#: Streams of episode seeds (:func:`episode_keys`): a run's training support and query
#: episodes, and the evaluation's.
SUPPORT_STREAM, QUERY_STREAM, EVALUATION_STREAM = 0, 1, 2

#: One task's episodes key: (seed, stream, iteration, inner step, task index in the meta-batch).
EpisodeKey = tuple[int, ...]


def episode_keys(seed: int, stream: int, iteration: int, step: int,
                 task_indices: Sequence[int]) -> list[EpisodeKey]:
    """The key of every task's episodes: a function of (iteration, task), never of the process
    that samples them, so a meta-batch split over ranks draws what one process draws."""
    base = (seed % 2**63, stream, iteration, step)
    return [(*base, int(i)) for i in task_indices]


#: :func:`key_generators` purposes: the envs' reset noise, the actions, an algorithm's own
#: draws (Probabilistic MAML's parameter samples).
RESET_NOISE, ACTION_NOISE, ALGORITHM_NOISE = 0, 1, 2


def key_generators(keys: Sequence[EpisodeKey], purpose: int) -> list[np.random.Generator]:
    """One generator per key for ``purpose`` (:data:`RESET_NOISE`, :data:`ACTION_NOISE`,
    :data:`ALGORITHM_NOISE`)."""
    return [np.random.default_rng(np.random.SeedSequence((*key, purpose))) for key in keys]


@contextlib.contextmanager
def seeded_torch(seed: int, device: str | torch.device = "cpu") -> Iterator[None]:
    """torch's generator (and ``device``'s, on CUDA) seeded with ``seed`` inside the block and
    restored after it: reproducible draws (Probabilistic MAML's adapted models in an evaluation
    or a figure) that leave a training's random state as it was."""
    where = torch.device(device)
    with torch.random.fork_rng(devices=[where.index or 0] if where.type == "cuda" else []):
        torch.manual_seed(seed)
        yield
