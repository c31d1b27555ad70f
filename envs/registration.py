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
    # RL families are registered below this line.
