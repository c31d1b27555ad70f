"""One place where every task family is registered with Gymnasium."""

from __future__ import annotations

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
    for name in ("HalfCheetahVel", "HalfCheetahDir"):
        _register(
            f"{name}-v0",
            entry_point=f"envs.half_cheetah:{name}Env",
            vector_entry_point=f"envs.half_cheetah:{name}VectorEnv",
            max_episode_steps=200,
        )
    for name in ("AntVel", "AntDir", "AntGoal"):
        _register(
            f"{name}-v0",
            entry_point=f"envs.ant:{name}Env",
            vector_entry_point=f"envs.ant:{name}VectorEnv",
            max_episode_steps=200,
        )
