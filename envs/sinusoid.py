"""Sinusoid regression as a one-step environment (MAML paper, Section 5.1).

A task is a sine wave ``y = amplitude * sin(x - phase)`` with amplitude ~ U[0.1, 5] and
phase ~ U[0, pi]; inputs x ~ U[-5, 5]. As an environment: ``reset`` returns x, ``step(prediction)``
returns reward = -(prediction - y)^2, ``terminated=True`` and ``info["target"] = y``.
A K-shot support set is K one-step episodes of one task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv

from envs.vector import generators_from


@dataclass(frozen=True)
class SinusoidTask:
    """Parameters of one sine wave."""

    amplitude: float
    phase: float


class SinusoidEnv(gym.Env):
    """One-step sinusoid regression.

    ## Observation space
    ``Box(x_low, x_high, (1,))``: the input x.

    ## Action space
    ``Box(-prediction_bound, prediction_bound, (1,))``: the predicted y.

    ## Rewards
    ``-(prediction - y)^2``; ``info["target"]`` holds y and ``info["squared_error"]`` the loss.

    ## Arguments
    amplitude_range, phase_range, x_range: the paper's U[0.1, 5], U[0, pi], U[-5, 5] by default.
    """

    metadata: dict[str, Any] = {"render_modes": [], "supervised_loss": "mse"}  # noqa: RUF012

    def __init__(
        self,
        amplitude_range: tuple[float, float] = (0.1, 5.0),
        phase_range: tuple[float, float] = (0.0, float(np.pi)),
        x_range: tuple[float, float] = (-5.0, 5.0),
        prediction_bound: float = 100.0,
    ) -> None:
        self.amplitude_range = tuple(map(float, amplitude_range))
        self.phase_range = tuple(map(float, phase_range))
        self.x_range = tuple(map(float, x_range))
        self.observation_space = spaces.Box(*self.x_range, shape=(1,), dtype=np.float32)
        self.action_space = spaces.Box(
            -prediction_bound, prediction_bound, shape=(1,), dtype=np.float32
        )
        self._task = SinusoidTask(1.0, 0.0)
        self._x = np.zeros(1, dtype=np.float32)

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[SinusoidTask]:
        """Draw ``n`` tasks from the family's distribution."""
        return sample_sinusoid_tasks(n, rng, self.amplitude_range, self.phase_range)

    def set_task(self, task: SinusoidTask) -> None:
        self._task = task

    def get_task(self) -> SinusoidTask:
        return self._task

    def target(self, x: np.ndarray) -> np.ndarray:
        """The current task's function at inputs ``x`` (the evaluation's fits figure draws it)."""
        return sinusoid(np.asarray(x), self._task.amplitude, self._task.phase)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._x = self.np_random.uniform(*self.x_range, size=1).astype(np.float32)
        return self._x.copy(), {}

    def step(self, action):
        target = sinusoid(self._x, self._task.amplitude, self._task.phase)
        error = float(np.sum((np.asarray(action, dtype=np.float32) - target) ** 2))
        info = {"target": target, "squared_error": error}
        return self._x.copy(), -error, True, False, info


def sinusoid(x: np.ndarray, amplitude, phase) -> np.ndarray:
    """``amplitude * sin(x - phase)`` in float32."""
    return (amplitude * np.sin(x - phase)).astype(np.float32)


def sample_sinusoid_tasks(
    n: int,
    rng: np.random.Generator,
    amplitude_range: Sequence[float] = (0.1, 5.0),
    phase_range: Sequence[float] = (0.0, float(np.pi)),
) -> list[SinusoidTask]:
    amplitudes = rng.uniform(*amplitude_range, size=n)
    phases = rng.uniform(*phase_range, size=n)
    return [SinusoidTask(float(a), float(p)) for a, p in zip(amplitudes, phases, strict=True)]


class SinusoidVectorEnv(VectorEnv):
    """``num_envs`` one-step sinusoid envs computed together; each sub-env holds its own task.

    Sub-env i draws its inputs from its own generator, seeded like ``SinusoidEnv`` with the i-th
    seed, so it reproduces the single env transition for transition. Autoreset is disabled: every
    episode is one step, so callers ``reset()`` before each batch.
    """

    metadata: dict[str, Any] = {  # noqa: RUF012
        "autoreset_mode": AutoresetMode.DISABLED,
        "supervised_loss": "mse",
    }
    #: The single env this batches (a subclass for another one-step regression family).
    single_env_class: type[gym.Env] = SinusoidEnv

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = 1, **kwargs) -> None:
        # max_episode_steps is passed by gymnasium.make_vec; every episode here is one step.
        self.single_env = self.single_env_class(**kwargs)
        self.num_envs = num_envs
        self.single_observation_space = self.single_env.observation_space
        self.single_action_space = self.single_env.action_space
        self.observation_space = gym.vector.utils.batch_space(
            self.single_observation_space, num_envs
        )
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self._rngs = [np.random.default_rng() for _ in range(num_envs)]
        self._amplitude = np.ones((num_envs, 1), dtype=np.float32)
        self._phase = np.zeros((num_envs, 1), dtype=np.float32)
        self._x = np.zeros((num_envs, 1), dtype=np.float32)

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[SinusoidTask]:
        return self.single_env.sample_tasks(n, rng)

    def set_tasks(self, tasks: Sequence[SinusoidTask]) -> None:
        """Give sub-env i the task ``tasks[i]``."""
        if len(tasks) != self.num_envs:
            raise ValueError(f"set_tasks needs {self.num_envs} tasks, got {len(tasks)}")
        self._amplitude[:, 0] = [t.amplitude for t in tasks]
        self._phase[:, 0] = [t.phase for t in tasks]

    def reset(self, *, seed: int | Sequence[int] | None = None, options: dict | None = None):
        if seed is not None:
            seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else seed
            # The same seeding as gymnasium.Env.reset, so sub-env i matches SinusoidEnv.
            self._rngs = [gym.utils.seeding.np_random(s)[0] for s in seeds]
        generators = generators_from(options, self.num_envs)
        if generators is not None:
            self._rngs = generators
        low, high = self.input_range()
        self._x[:, 0] = [rng.uniform(low, high) for rng in self._rngs]
        return self._x.copy(), {}

    def input_range(self) -> tuple[float, float]:
        """Where ``reset`` draws the inputs."""
        return self.single_env.x_range

    def step(self, actions):
        target = sinusoid(self._x, self._amplitude, self._phase)
        errors = np.sum((np.asarray(actions, dtype=np.float32) - target) ** 2, axis=-1)
        done = np.ones(self.num_envs, dtype=bool)
        info = {"target": target, "squared_error": errors}
        return self._x.copy(), -errors, done, np.zeros_like(done), info

    def rng_state(self) -> list[dict]:
        """States of the per-sub-env generators (for exact resume)."""
        return [rng.bit_generator.state for rng in self._rngs]

    def set_rng_state(self, states: list[dict]) -> None:
        for rng, state in zip(self._rngs, states, strict=True):
            rng.bit_generator.state = state
