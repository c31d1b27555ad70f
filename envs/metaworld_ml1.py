"""Meta-World ML1 (Yu et al. 2019, "Meta-World: A Benchmark and Evaluation for Multi-Task and
Meta Reinforcement Learning"; Farama's ``metaworld`` 3.x) as task families.

ML1 varies one manipulation task's object and goal positions: a task is the benchmark's random
vector of those positions (``rand_vec``), hidden from the observation (39 numbers: hand,
gripper, object poses, the previous frame's, and a zero goal). The benchmark fixes 50 training
and 50 test tasks per environment from a seed (``ML1(env_name, seed)``: the test set from
``seed + 1``); ``split`` chooses which of the two a family samples from, so a config trains on
``train`` and evaluates on ``test`` (``evaluation.env_kwargs: {split: test}``). Episodes last at
most ``max_path_length`` (500) steps, the benchmark's limit; ``info["success"]`` says whether the
task is solved at a step, and the suite logs the share of episodes solved at any step
(``metadata["success_key"]``).

``metaworld`` 3.1.1 pins ``mujoco==3.3.0``, older than what the Ant families need (contact
sensors, 3.3.1), so it is an optional extra best installed in its own environment
(docs/guide/metaworld.md).
"""

from __future__ import annotations

import functools
import pickle
import types
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

EXTRA_HINT = (
    "pip install -e '.[metaworld]', best in its own virtual environment: metaworld pins "
    "mujoco==3.3.0, which the Ant families cannot use (docs/guide/metaworld.md)"
)
#: The Meta-World version whose benchmark the suite's ML1 families wrap.
ENV_VERSION = "v3"


class MissingExtraError(ValueError):
    """An optional dependency of a family is not installed (a ValueError, so that the command
    line reports it in one line like any other bad setting)."""


def _metaworld():
    try:
        import metaworld
    except ImportError:
        raise MissingExtraError(f"Meta-World families need the metaworld extra: {EXTRA_HINT}"
                                ) from None
    return metaworld


@dataclass(frozen=True)
class MetaWorldTask:
    """One ML1 task: the environment's name and the benchmark's position vector."""

    env_name: str
    rand_vec: tuple[float, ...]


@functools.cache
def benchmark_tasks(env_name: str, seed: int) -> dict[str, tuple[MetaWorldTask, ...]]:
    """The ``train`` and ``test`` tasks of ``ML1(env_name, seed)`` (cached: building the
    benchmark resets an env 100 times)."""
    metaworld = _metaworld()
    names = metaworld.ML1.ENV_NAMES
    if env_name not in names:
        raise ValueError(f"env_name: {env_name!r} is not a Meta-World {ENV_VERSION} environment; "
                         f"known: {', '.join(names)}")
    benchmark = metaworld.ML1(env_name, seed=seed)

    def tasks(split: list) -> tuple[MetaWorldTask, ...]:
        return tuple(MetaWorldTask(env_name, tuple(float(v) for v in
                                                   pickle.loads(t.data)["rand_vec"]))
                     for t in split)

    return {"train": tasks(benchmark.train_tasks), "test": tasks(benchmark.test_tasks)}


def contact_touching_object(env: Any, object_geom_id: int) -> bool:
    """Whether both finger pads of the Sawyer ``env`` press on the object (a positive summed
    contact force on each): Meta-World's ``SawyerXYZEnv.touching_object``, read from MuJoCo's
    contact arrays at once. Meta-World walks the contacts one Python object at a time, twice per
    step, and that walk alone was about a quarter of an ML1 push step here; the answer is the
    same boolean (a test compares the two along scripted grasps)."""
    data = env.data
    contact = data.contact
    geom1, geom2 = contact.geom1, contact.geom2
    on_object = (geom1 == object_geom_id) | (geom2 == object_geom_id)

    def pressed(pad: str) -> bool:
        pad_id = data.geom(pad).id
        touching = on_object & ((geom1 == pad_id) | (geom2 == pad_id))
        return bool(data.efc_force[contact.efc_address[touching]].sum() > 0)

    return pressed("leftpad_geom") and pressed("rightpad_geom")


class MetaWorldML1Env(gym.Env):
    """One Meta-World environment with ML1's task distribution.

    ## Observation space
    ``Box(39,)`` float32: the Sawyer environment's observation with the goal hidden.

    ## Action space
    ``Box(-1, 1, (4,))``: end-effector displacement and gripper.

    ## Rewards
    Meta-World's shaped reward: by default its version "v2" (in [0, 10] per step), or with
    ``reward_version="v1"`` that of Meta-World's first release, on which the paper's
    experiments ran (Yu et al. 2019). They differ in how much of the hidden goal an episode
    shows: push's "v1" pays, at every step the hand is at the object, 1000 per metre that the
    object is nearer the goal than it started; "v2" a bounded tolerance of that distance.
    ``info["success"]`` (the same under both) is 1.0 at a step where the task is solved.

    ## Arguments
    env_name ("reach-v3"), split ("train" or "test"), benchmark_seed (0: the seed of
    ``metaworld.ML1``), reward_version ("v2" or "v1"), render_mode.
    """

    metadata: dict[str, Any] = {  # noqa: RUF012
        "render_modes": ["rgb_array"], "success_key": "success", "baseline_timesteps": 1_000_000,
    }

    def __init__(self, env_name: str = f"reach-{ENV_VERSION}", split: str = "train",
                 benchmark_seed: int = 0, reward_version: str = "v2",
                 render_mode: str | None = None) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
        if reward_version not in ("v1", "v2"):
            raise ValueError(f"reward_version: expected 'v1' or 'v2', got {reward_version!r}")
        self.reward_version = reward_version
        self.env_name, self.split, self.benchmark_seed = env_name, split, int(benchmark_seed)
        self._tasks = benchmark_tasks(env_name, self.benchmark_seed)[split]
        metaworld = _metaworld()
        self._cls = metaworld.ALL_V3_ENVIRONMENTS[env_name]
        self._task_type = metaworld.Task
        self._env = self._cls(render_mode=render_mode, reward_function_version=reward_version)
        # The same answer as Meta-World's own method, without its per-contact Python loop.
        self._env.touching_object = types.MethodType(contact_touching_object, self._env)
        self.render_mode = render_mode
        inner = self._env.observation_space
        low, high = inner.low.astype(np.float32), inner.high.astype(np.float32)
        # The hidden goal's entries are always 0, bounded [0, 0] by Meta-World, which
        # gymnasium's checker flags as a degenerate box: unbounded here instead.
        degenerate = low == high
        low[degenerate], high[degenerate] = -np.inf, np.inf
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self.action_space = spaces.Box(self._env.action_space.low, self._env.action_space.high,
                                       dtype=np.float32)
        self.metadata = {**self.metadata, "render_fps": self._env.metadata.get("render_fps", 80)}
        self._task = self._tasks[0]
        self.set_task(self._task)

    @property
    def max_path_length(self) -> int:
        """Meta-World's episode limit (500 steps)."""
        return int(self._env.max_path_length)

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[MetaWorldTask]:
        """``n`` of the split's 50 tasks, without repetition while there are enough."""
        index = rng.choice(len(self._tasks), size=n, replace=n > len(self._tasks))
        return [self._tasks[int(i)] for i in index]

    def set_task(self, task: MetaWorldTask) -> None:
        if task.env_name != self.env_name:
            raise ValueError(f"task of {task.env_name!r} given to the {self.env_name!r} family")
        if len(task.rand_vec) != len(self._task.rand_vec):
            raise ValueError(f"rand_vec: expected {len(self._task.rand_vec)} numbers, got "
                             f"{len(task.rand_vec)}")
        data = {"rand_vec": np.asarray(task.rand_vec, dtype=np.float64), "env_cls": self._cls,
                "partially_observable": True}
        self._env.set_task(self._task_type(env_name=task.env_name, data=pickle.dumps(data)))
        self._task = task

    def get_task(self) -> MetaWorldTask:
        return self._task

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        obs, info = self._env.reset()  # deterministic given the task: Meta-World ignores seeds
        return obs.astype(np.float32), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self._env.step(np.asarray(action))
        return obs.astype(np.float32), float(reward), bool(terminated), bool(truncated), info

    def render(self):
        return self._env.render()

    def close(self) -> None:
        self._env.close()
