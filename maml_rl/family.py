"""What the rest of the library needs to know about a task family, read from its env once."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import envs  # noqa: F401  (registers the maml/ families)
from envs.generic import unknown_env_message
from envs.registration import import_family_module
from envs.tasks import check_task, freeze_task, thaw_task


@dataclass
class TaskFamily:
    """A registered task family: its id, spaces, and whether it is supervised (one-step)."""

    env_id: str
    env_kwargs: dict[str, Any]
    observation_space: gym.Space
    action_space: gym.Space
    supervised_loss: str | None  # "mse" / "cross_entropy" for one-step supervised families
    max_episode_steps: int | None
    _env: gym.Env

    @property
    def supervised(self) -> bool:
        return self.supervised_loss is not None

    @property
    def unwrapped(self) -> gym.Env:
        """The family's single env, unwrapped (its metadata, render modes, type)."""
        return self._env.unwrapped

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Any]:
        """``n`` tasks from the family's distribution, frozen (``envs.tasks.freeze_task``): the
        library keeps them immutable; ``set_task`` gets them back as the family gave them."""
        tasks = self._env.unwrapped.sample_tasks(n, rng)
        try:
            return [freeze_task(task) for task in tasks]
        except TypeError as err:
            raise ValueError(f"'{self.env_id}'.sample_tasks(): {err}") from None

    def check_tasks(self, tasks: list[Any]) -> None:
        """Raise ValueError (one line) naming the first of ``tasks`` that the family's
        ``set_task`` rejects, e.g. a task of another family read from a file."""
        env = self._env.unwrapped
        for i, task in enumerate(tasks):
            try:
                check_task(task)
                env.set_task(thaw_task(task))
            except (TypeError, ValueError, KeyError) as err:
                raise ValueError(f"task {i} ({task!r}) is not a task of '{self.env_id}': "
                                 f"{err}") from None

    def shots_problem(self, support: int, query: int) -> str | None:
        """What is wrong with ``support`` + ``query`` shots per task for this family (e.g. an
        N-way classification support set must hold the same number of examples of every class),
        or None. Asks the env's optional ``shots_problem(support, query)``."""
        check = getattr(self._env.unwrapped, "shots_problem", None)
        return check(support, query) if callable(check) else None


def evaluation_family(
    family: TaskFamily, overrides: dict[str, Any], module: str = ""
) -> TaskFamily:
    """The family of the held-out tasks: ``family`` itself, or the same env made with
    ``overrides`` (``evaluation.env_kwargs``) merged over its kwargs, e.g. Omniglot's
    ``split: test``. Raises ValueError when the overrides change the spaces (the trained model
    would not fit)."""
    if not overrides:
        return family
    held_out = load_family(family.env_id, {**family.env_kwargs, **overrides}, module)
    for name in ("observation_space", "action_space"):
        if getattr(held_out, name) != getattr(family, name):
            raise ValueError(
                f"evaluation.env_kwargs: {overrides} changes the {name.replace('_', ' ')} "
                f"({getattr(family, name)} -> {getattr(held_out, name)}); the trained model "
                "would not fit the held-out tasks"
            )
    return held_out


def load_family(env_id: str, env_kwargs: dict[str, Any], module: str = "") -> TaskFamily:
    """Import ``module`` (a user's own registrations), make the env once and read its facts."""
    if module:
        import_family_module(module)
    if env_id not in gym.registry:
        raise ValueError(f"env.id: {unknown_env_message(env_id)}")
    env = gym.make(env_id, **env_kwargs)
    unwrapped = env.unwrapped
    for method in ("sample_tasks", "set_task"):
        if not callable(getattr(unwrapped, method, None)):
            raise ValueError(
                f"env.id: '{env_id}' is not a task family: its env has no {method}(); "
                "see docs/guide/task_families.md"
            )
    spec = env.spec
    return TaskFamily(
        env_id=env_id,
        env_kwargs=dict(env_kwargs),
        observation_space=env.observation_space,
        action_space=env.action_space,
        supervised_loss=unwrapped.metadata.get("supervised_loss"),
        max_episode_steps=spec.max_episode_steps if spec is not None else None,
        _env=env,
    )


#: The file of a run directory naming the folder its ``env.module`` was imported from, so that
#: evaluating or resuming the run from another folder finds the module again.
MODULE_DIR_FILE = "env_module_dir"


def record_module_dir(run_dir: str | Path, module: str) -> None:
    """Write the folder from which ``module`` (imported already) is importable into
    ``run_dir`` (nothing for a module without a file)."""
    file = getattr(sys.modules.get(module), "__file__", None)
    if not file:
        return
    root = Path(file).resolve().parent
    for _ in range(module.count(".") + (Path(file).name == "__init__.py")):
        root = root.parent
    (Path(run_dir) / MODULE_DIR_FILE).write_text(f"{root}\n")


def module_dirs(run_dir: str | Path) -> list[Path]:
    """Where a run's ``env.module`` is looked for besides the importable modules and the current
    folder: the run directory, and the folder recorded at training."""
    recorded = Path(run_dir) / MODULE_DIR_FILE
    extra = [Path(recorded.read_text().strip())] if recorded.is_file() else []
    return [Path(run_dir), *extra]
