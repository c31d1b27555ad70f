"""Task values shared by the RL families: small frozen dataclasses, serialisable into logs.

A task is what ``sample_tasks`` returns and ``set_task`` / ``set_tasks`` accept.
``dataclasses.asdict(task)`` gives a dict of floats for logs; ``coerce_task`` turns such a dict
back into the task (so a task read from a log or a YAML file can be passed as is).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


@dataclass(frozen=True)
class GoalVelocityTask:
    """Run forward at ``velocity`` (m/s) along the x axis."""

    velocity: float


@dataclass(frozen=True)
class DirectionTask:
    """Run along x in ``direction`` (+1 forward, -1 backward)."""

    direction: int


@dataclass(frozen=True)
class GoalPositionTask:
    """Reach the point ``(x, y)`` of the plane."""

    x: float
    y: float


def coerce_task(task: Any, task_type: type[T]) -> T:
    """Return ``task`` as a ``task_type``; a mapping of its fields is converted.

    Raises ``TypeError`` naming the expected fields for anything else, so a task of the wrong
    family is caught at ``set_task`` rather than producing silent nonsense rewards.
    """
    if isinstance(task, task_type):
        return task
    names = [f.name for f in fields(task_type)]  # type: ignore[arg-type]
    if isinstance(task, Mapping) and set(task) == set(names):
        return task_type(**{k: task[k] for k in names})
    raise TypeError(
        f"expected a {task_type.__name__} (or a mapping with keys {names}), got {task!r}"
    )


def coerce_tasks(tasks: Sequence[Any], task_type: type[T], num_envs: int) -> list[T]:
    """``coerce_task`` over a list of exactly ``num_envs`` tasks."""
    if len(tasks) != num_envs:
        raise ValueError(f"set_tasks needs {num_envs} tasks (one per sub-env), got {len(tasks)}")
    return [coerce_task(t, task_type) for t in tasks]


def sample_velocity_tasks(
    n: int, rng: np.random.Generator, velocity_range: Sequence[float]
) -> list[GoalVelocityTask]:
    """Goal velocities ~ U[velocity_range]."""
    low, high = velocity_range
    return [GoalVelocityTask(float(v)) for v in rng.uniform(low, high, size=n)]


def sample_direction_tasks(
    n: int, rng: np.random.Generator, forward_probability: float = 0.5
) -> list[DirectionTask]:
    """Directions in {-1, +1}, +1 with probability ``forward_probability``."""
    forward = rng.random(size=n) < forward_probability
    return [DirectionTask(1 if f else -1) for f in forward]


def sample_position_tasks(
    n: int, rng: np.random.Generator, goal_range: Sequence[float]
) -> list[GoalPositionTask]:
    """Goals ~ U[goal_range]^2."""
    low, high = goal_range
    goals = rng.uniform(low, high, size=(n, 2))
    return [GoalPositionTask(float(x), float(y)) for x, y in goals]
