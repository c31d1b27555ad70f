"""Ambiguous regression, sines or lines, as a one-step environment (Probabilistic MAML, Finn,
Xu & Levine 2018, Sec. 5.1).

A task is, with probability ``sine_probability``, a sine wave ``y = amplitude * sin(x - phase)``
(amplitude ~ U[0.1, 5], phase ~ U[0, pi], as the MAML paper's sinusoid), else a line
``y = slope * x + intercept`` (slope and intercept ~ U[-3, 3]). The observed targets carry
Gaussian noise of std ``noise_std`` (0.3). Five noisy points of a task often fit a sine and a
line alike; narrowing where the shots are drawn (``shot_x_range``, inside the domain
``x_range``) makes that ambiguity the rule. As an environment it is the sinusoid's
(:mod:`envs.sinusoid`): ``reset`` returns x, ``step(prediction)`` returns reward
``-(prediction - y)^2`` and ``info["target"] = y``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.sinusoid import SinusoidVectorEnv

SINE, LINE = "sine", "line"


@dataclass(frozen=True)
class SineLineTask:
    """One task: a sine (``amplitude``, ``phase``) or a line (``slope``, ``intercept``)."""

    kind: str
    amplitude: float = 0.0
    phase: float = 0.0
    slope: float = 0.0
    intercept: float = 0.0

    def describe(self) -> str:
        """The task in a figure title."""
        if self.kind == SINE:
            return f"sine, amplitude {self.amplitude:.2f}, phase {self.phase:.2f}"
        return f"line, slope {self.slope:.2f}, intercept {self.intercept:.2f}"


def sine_line(x: np.ndarray, is_sine, amplitude, phase, slope, intercept) -> np.ndarray:
    """The noiseless task function at ``x`` in float32 (arguments broadcast with ``x``)."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(is_sine, amplitude * np.sin(x - phase), slope * x + intercept).astype(
        np.float32)


class _Ranges:
    """The family's distribution, shared by the single and the batched env."""

    def __init__(self, sine_probability: float = 0.5,
                 amplitude_range: Sequence[float] = (0.1, 5.0),
                 phase_range: Sequence[float] = (0.0, float(np.pi)),
                 slope_range: Sequence[float] = (-3.0, 3.0),
                 intercept_range: Sequence[float] = (-3.0, 3.0),
                 x_range: Sequence[float] = (-5.0, 5.0),
                 shot_x_range: Sequence[float] | None = None,
                 noise_std: float = 0.3, prediction_bound: float = 100.0) -> None:
        if not 0.0 <= sine_probability <= 1.0:
            raise ValueError(f"sine_probability must be in [0, 1], got {sine_probability}")
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        self.sine_probability = float(sine_probability)
        self.amplitude_range = tuple(map(float, amplitude_range))
        self.phase_range = tuple(map(float, phase_range))
        self.slope_range = tuple(map(float, slope_range))
        self.intercept_range = tuple(map(float, intercept_range))
        self.x_range = tuple(map(float, x_range))
        self.shot_x_range = self.x_range if shot_x_range is None else tuple(
            map(float, shot_x_range))
        low, high = self.x_range
        if not low <= self.shot_x_range[0] < self.shot_x_range[1] <= high:
            raise ValueError(
                f"shot_x_range {list(self.shot_x_range)} must lie inside x_range "
                f"{list(self.x_range)}")
        self.noise_std = float(noise_std)
        self.observation_space = spaces.Box(low, high, shape=(1,), dtype=np.float32)
        self.action_space = spaces.Box(-prediction_bound, prediction_bound, shape=(1,),
                                       dtype=np.float32)

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[SineLineTask]:
        """Draw ``n`` tasks from the family's distribution."""
        sines = rng.random(n) < self.sine_probability
        amplitude = rng.uniform(*self.amplitude_range, size=n)
        phase = rng.uniform(*self.phase_range, size=n)
        slope = rng.uniform(*self.slope_range, size=n)
        intercept = rng.uniform(*self.intercept_range, size=n)
        return [SineLineTask(SINE, float(a), float(p)) if s
                else SineLineTask(LINE, slope=float(m), intercept=float(c))
                for s, a, p, m, c in zip(sines, amplitude, phase, slope, intercept, strict=True)]


class SineLineEnv(_Ranges, gym.Env):
    """One-step regression of a sine or a line, from noisy targets.

    ## Observation space
    ``Box(x_range)``: the input x (drawn from ``shot_x_range``).

    ## Action space
    ``Box(-prediction_bound, prediction_bound, (1,))``: the predicted y.

    ## Rewards
    ``-(prediction - y)^2`` with y the noisy target; ``info["target"]`` holds y.

    ## Arguments
    sine_probability (0.5), amplitude_range, phase_range, slope_range, intercept_range,
    x_range (the domain, [-5, 5]), shot_x_range (where inputs are drawn; default x_range),
    noise_std (0.3).
    """

    metadata: dict[str, Any] = {"render_modes": [], "supervised_loss": "mse"}  # noqa: RUF012

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._task = SineLineTask(SINE, 1.0, 0.0)
        self._x = np.zeros(1, dtype=np.float32)

    def set_task(self, task: SineLineTask) -> None:
        if task.kind not in (SINE, LINE):
            raise ValueError(f"task kind must be '{SINE}' or '{LINE}', got {task.kind!r}")
        self._task = task

    def get_task(self) -> SineLineTask:
        return self._task

    def target(self, x: np.ndarray) -> np.ndarray:
        """The current task's noiseless function at ``x`` (the fits figures draw it)."""
        t = self._task
        return sine_line(x, t.kind == SINE, t.amplitude, t.phase, t.slope, t.intercept)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._x = self.np_random.uniform(*self.shot_x_range, size=1).astype(np.float32)
        return self._x.copy(), {}

    def step(self, action):
        noise = self.np_random.normal(0.0, self.noise_std, size=1) if self.noise_std else 0.0
        target = (self.target(self._x) + noise).astype(np.float32)
        error = float(np.sum((np.asarray(action, dtype=np.float32) - target) ** 2))
        return self._x.copy(), -error, True, False, {"target": target}


class SineLineVectorEnv(SinusoidVectorEnv):
    """``num_envs`` sine-or-line envs computed together; sub-env i draws its input and noise
    from its own generator, seeded like :class:`SineLineEnv` with the i-th seed, so it
    reproduces the single env. Every episode is one step: callers ``reset()`` before each
    batch."""

    single_env_class = SineLineEnv

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = 1, **kwargs) -> None:
        super().__init__(num_envs, max_episode_steps, **kwargs)
        # Per sub-env: is_sine, amplitude, phase, slope, intercept (sines of amplitude 1 until
        # set_tasks, as the sinusoid's).
        self._params = np.zeros((5, num_envs, 1))
        self._params[:2] = 1.0

    def set_tasks(self, tasks: Sequence[SineLineTask]) -> None:
        """Give sub-env i the task ``tasks[i]``."""
        if len(tasks) != self.num_envs:
            raise ValueError(f"set_tasks needs {self.num_envs} tasks, got {len(tasks)}")
        for t in tasks:
            if t.kind not in (SINE, LINE):
                raise ValueError(f"task kind must be '{SINE}' or '{LINE}', got {t.kind!r}")
        self._params[:, :, 0] = np.array(
            [[t.kind == SINE, t.amplitude, t.phase, t.slope, t.intercept] for t in tasks],
            dtype=np.float64).T

    def input_range(self) -> tuple[float, float]:
        return self.single_env.shot_x_range

    def step(self, actions):
        std = self.single_env.noise_std
        noise = np.array([rng.normal(0.0, std, size=1) for rng in self._rngs]) if std else 0.0
        is_sine, amplitude, phase, slope, intercept = self._params
        target = (sine_line(self._x, is_sine > 0.5, amplitude, phase, slope, intercept)
                  + noise).astype(np.float32)
        errors = np.sum((np.asarray(actions, dtype=np.float32) - target) ** 2, axis=-1)
        done = np.ones(self.num_envs, dtype=bool)
        return self._x.copy(), -errors, done, np.zeros_like(done), {"target": target}
