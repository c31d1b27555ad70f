"""The task contract, and the task values shared by the RL families.

**The contract** (one home for it, used by the trainer, the evaluation and the checker): a task
is what a family's ``sample_tasks(n, rng)`` returns and its ``set_task(task)`` accepts. It is a
small value made of numbers and strings: a number, a string, or a dataclass, mapping (e.g. a
plain ``dict`` of floats), tuple or list of such values, nested as deep as needed.
:func:`check_task` says what is wrong with anything else. Inside the library a task is kept
immutable and hashable by :func:`freeze_task` (a frozen dataclass, a tuple or a number is
already); :func:`thaw_task` gives back a fresh copy of exactly what the family returned, which
is what ``set_task`` receives. :func:`task_to_json` is its form in logs and ``results.json``.

The families here use small frozen dataclasses. ``dataclasses.asdict(task)`` gives a dict of
floats for logs; ``coerce_task`` turns such a dict back into the task (so a task read from a log
or a YAML file can be passed as is).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")

_LEAVES = (bool, int, float, str, np.integer, np.floating, np.bool_)


def _canonical(value: Any, path: str) -> Any:
    """A hashable, JSON-like canonical form of a task value; TypeError names ``path``."""
    if value is None or isinstance(value, _LEAVES):
        return value.item() if isinstance(value, np.generic) else value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__qualname__, tuple(
            (f.name, _canonical(getattr(value, f.name), f"{path}.{f.name}"))
            for f in dataclasses.fields(value)))
    if isinstance(value, Mapping):
        items = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{path} has the key {key!r}; task mappings need string keys")
            items.append((key, _canonical(item, f"{path}[{key!r}]")))
        return ("mapping", tuple(sorted(items)))
    if isinstance(value, tuple | list | np.ndarray):
        return tuple(_canonical(v, f"{path}[{i}]") for i, v in enumerate(value))
    raise TypeError(
        f"{path} is a {type(value).__name__} ({value!r}); a task is made of numbers and strings: "
        "a number, a string, or a dataclass, dict, tuple or list of them"
    )


def check_task(task: Any) -> None:
    """Raise ``TypeError`` (one line) unless ``task`` follows the task contract (module doc)."""
    _canonical(task, "task")


class FrozenTask:
    """An immutable, hashable copy of a task that is not hashable itself (a ``dict``, a list,
    a non-frozen dataclass). Equal to another frozen task of equal value."""

    __slots__ = ("_key", "_value")

    def __init__(self, task: Any) -> None:
        self._key = _canonical(task, "task")
        self._value = copy.deepcopy(task)

    def thaw(self) -> Any:
        """A fresh copy of the task as the family gave it."""
        return copy.deepcopy(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FrozenTask) and other._key == self._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        return repr(self._value)


def freeze_task(task: Any) -> Any:
    """``task`` itself when it is immutable and hashable (a frozen dataclass, tuple, number or
    string), else a :class:`FrozenTask`; ``TypeError`` when it breaks the contract."""
    check_task(task)
    try:
        hash(task)
    except TypeError:
        return FrozenTask(task)
    return task


def thaw_task(task: Any) -> Any:
    """What the family's ``sample_tasks`` returned, for its ``set_task``: a :class:`FrozenTask`
    thawed to a fresh copy, anything else as is."""
    return task.thaw() if isinstance(task, FrozenTask) else task


def task_to_json(task: Any) -> Any:
    """A task as JSON data for logs: dataclasses and mappings as dicts, tuples as lists."""
    task = thaw_task(task)
    if dataclasses.is_dataclass(task) and not isinstance(task, type):
        return {f.name: task_to_json(getattr(task, f.name)) for f in dataclasses.fields(task)}
    if isinstance(task, Mapping):
        return {str(k): task_to_json(v) for k, v in task.items()}
    if isinstance(task, tuple | list | np.ndarray):
        return [task_to_json(v) for v in task]
    return task.item() if isinstance(task, np.generic) else task


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
    task = thaw_task(task)
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
