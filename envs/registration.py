"""One place where every task family is registered with Gymnasium."""

from __future__ import annotations

import importlib
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

import gymnasium as gym

NAMESPACE = "maml"


def _register(name: str, entry_point: str, vector_entry_point: str | None = None, **kwargs) -> None:
    env_id = f"{NAMESPACE}/{name}"
    if env_id in gym.registry:
        return
    gym.register(
        id=env_id, entry_point=entry_point, vector_entry_point=vector_entry_point, **kwargs
    )


def register_all() -> None:
    """Register every family of this package (idempotent)."""
    # Supervised families: one-step environments.
    _register(
        "Sinusoid-v0",
        entry_point="envs.sinusoid:SinusoidEnv",
        vector_entry_point="envs.sinusoid:SinusoidVectorEnv",
        max_episode_steps=1,
    )
    _register(
        "SineLine-v0",
        entry_point="envs.sine_line:SineLineEnv",
        vector_entry_point="envs.sine_line:SineLineVectorEnv",
        max_episode_steps=1,
    )
    _register(
        "Omniglot-v0",
        entry_point="envs.omniglot:OmniglotEnv",
        vector_entry_point="envs.omniglot:OmniglotVectorEnv",
        max_episode_steps=1,
    )
    # RL families are registered below this line.
    # Horizons are the MAML paper's: 100 steps for 2D navigation, 200 for locomotion (also with
    # paper_mdp=False, where gymnasium's own HalfCheetah/Ant use 1000).
    _register(
        "Navigation2D-v0",
        entry_point="envs.navigation:Navigation2DEnv",
        vector_entry_point="envs.navigation:Navigation2DVectorEnv",
        max_episode_steps=100,
    )
    # Discrete families (RL^2, Duan et al. 2016): 10 steps per episode.
    _register(
        "Bandit-v0",
        entry_point="envs.bandit:BanditEnv",
        vector_entry_point="envs.bandit:BanditVectorEnv",
        max_episode_steps=10,
    )
    _register(
        "TabularMDP-v0",
        entry_point="envs.tabular_mdp:TabularMDPEnv",
        vector_entry_point="envs.tabular_mdp:TabularMDPVectorEnv",
        max_episode_steps=10,
    )
    # Meta-World ML1 (the optional metaworld extra, imported when an env is made): three named
    # families, and maml/ML1-v0 for any of its environments (env_name="...-v3").
    for name, env_name in (("ML1-reach", "reach-v3"), ("ML1-push", "push-v3"),
                           ("ML1-pick-place", "pick-place-v3"), ("ML1", "reach-v3")):
        _register(
            f"{name}-v0",
            entry_point="envs.metaworld_ml1:MetaWorldML1Env",
            max_episode_steps=500,
            kwargs={"env_name": env_name},
        )
    # One class per robot; the registered id fixes its objective.
    for name, objective in (("HalfCheetahVel", "velocity"), ("HalfCheetahDir", "direction")):
        _register(
            f"{name}-v0",
            entry_point="envs.half_cheetah:HalfCheetahEnv",
            vector_entry_point="envs.half_cheetah:make_half_cheetah_vector_env",
            max_episode_steps=200,
            kwargs={"objective": objective},
        )
    for name, objective in (("AntVel", "velocity"), ("AntDir", "direction"), ("AntGoal", "goal")):
        _register(
            f"{name}-v0",
            entry_point="envs.ant:AntEnv",
            vector_entry_point="envs.ant:make_ant_vector_env",
            max_episode_steps=200,
            kwargs={"objective": objective},
        )


def import_family_module(module: str, search_dirs: Sequence[str | Path] = ()) -> None:
    """Import ``module``, a user's module that registers task families (``env.module``).

    It is looked up as an importable (e.g. installed) module first, then in the current
    directory, then in each of ``search_dirs`` (the CLIs pass the config file's folder), which
    is then added to ``sys.path`` so that the module's own imports and its registered entry
    points keep working. Raises ``ValueError`` with one line naming the module and where it
    looked, or the file and line where importing it failed.
    """
    dirs = [Path.cwd(), *(Path(d) for d in search_dirs)]
    tried: list[str] = []
    for where in [None, *dict.fromkeys(d.resolve() for d in dirs)]:
        if where is not None:
            if not (where / (module.split(".")[0] + ".py")).is_file() and not (
                where / module.split(".")[0]
            ).is_dir():
                tried.append(str(where))
                continue
            if str(where) not in sys.path:
                sys.path.append(str(where))
        try:
            importlib.import_module(module)
            return
        except ModuleNotFoundError as err:
            # Only a miss of the module itself means "look elsewhere"; a missing dependency
            # inside the user's module is their error, reported below.
            if err.name is None or not module.startswith(err.name):
                raise ValueError(_import_failure(module, err)) from None
            if where is None:
                tried.append("importable modules (sys.path)")
            else:
                tried.append(str(where))
        except Exception as err:  # the user's module raised while importing: name where
            raise ValueError(_import_failure(module, err)) from None
    where = "in the current directory or next to the config file" if search_dirs else (
        "in the current directory")
    raise ValueError(
        f"env.module: cannot import '{module}': looked in {', '.join(tried)}; put "
        f"{module.replace('.', '/')}.py {where}, or install it"
    )


def _import_failure(module: str, err: BaseException) -> str:
    frames = traceback.extract_tb(err.__traceback__)
    user = [f for f in frames if "importlib" not in f.filename] or frames
    where = f" ({user[-1].filename}:{user[-1].lineno})" if user else ""
    return f"env.module: importing '{module}' failed{where}: {type(err).__name__}: {err}"
