"""N-way few-shot classification of Omniglot characters as a one-step environment (MAML paper,
Sec. 5.2; Vinyals et al. 2016's N-way K-shot protocol).

A task is N classes in label order (``OmniglotTask.classes[k]`` has label k): drawing N classes
without replacement in random order is the random label permutation of the protocol. A class is
a character under one of the rotations 0/90/180/270 degrees, the augmentation of Santoro et al.
(2016) that the MAML paper uses ("rotations ... as new classes"). Classes of a split come from
its own alphabets (:func:`envs.omniglot_data.split_alphabets`), so that test tasks use alphabets
never seen in meta-training.

As an environment: ``reset`` returns one image, ``step(label or logits)`` returns reward 1 for
the right label (0 otherwise), ``terminated=True`` and ``info["target"]`` = the label. The shots
of a task are consecutive episodes of one env (``metadata["sequential_shots"]``, read by
:class:`maml_rl.sampling.SupervisedSampler`): after ``set_task`` (or a seeded reset) episode e
shows label ``e mod N``, so any N*K consecutive episodes hold K images of every class; drawings
of a class come without replacement (a fresh permutation of its drawings each time they run
out), so a support set of K and a query set of Q per class never share an image while
K + Q <= 20 (Omniglot's drawings per character).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode

from envs.omniglot_data import (
    SPLITS,
    OmniglotData,
    OmniglotDataError,
    load_omniglot,
    split_alphabets,
)
from envs.vector import TaskBatchVectorEnv, reset_mask_from, seeds_for

ROTATIONS = (0, 90, 180, 270)


@dataclass(frozen=True)
class OmniglotTask:
    """An N-way task: ``classes[k]`` is the class with label k, named
    ``"ALPHABET/characterNN/rotDEG"``."""

    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        # A task read back from a log or YAML holds a list; keep the value hashable.
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))


def class_name(alphabet: str, character: str, degrees: int) -> str:
    """The name of a character under a rotation, as it appears in tasks."""
    return f"{alphabet}/{character}/rot{degrees}"


def to_observation(ink: np.ndarray) -> np.ndarray:
    """``uint8`` ink in [0, 255] -> float32 in [0, 1], strokes 1 (one expression for the single
    and the batched env, so that they agree bit for bit)."""
    return ink.astype(np.float32) / np.float32(255.0)


class OmniglotEnv(gym.Env):
    """One-step N-way Omniglot classification.

    ## Observation space
    ``Box(0, 1, (1, 28, 28), float32)``: one image (channel first), strokes 1, background 0.

    ## Action space
    ``Discrete(ways)``: the predicted label. ``step`` also accepts a vector of ``ways`` logits
    (its argmax is the prediction).

    ## Rewards
    1 for the right label, 0 otherwise; ``info["target"]`` holds the label. Training reads the
    targets and uses the exact cross-entropy (``metadata["supervised_loss"]``).

    ## Arguments
    data_root: a folder in the Omniglot layout ``ALPHABET/characterNN/*.png``, a zip archive of
    it, a folder of such archives, or a list of these (merged). ways: N. split: ``train``,
    ``val``, ``test`` or ``all`` (every alphabet). rotations: rotated characters as extra
    classes (4x). val_alphabets / test_alphabets: explicit alphabet lists of the held-out splits
    (default: :func:`envs.omniglot_data.split_alphabets`). cache_dir: where the decoded images
    are cached (default ``~/.cache/maml_rl/omniglot``).
    """

    metadata: dict[str, Any] = {  # noqa: RUF012
        "render_modes": [],
        "supervised_loss": "cross_entropy",
        "sequential_shots": True,
    }

    def __init__(
        self,
        data_root: str | Sequence[str] = "data/omniglot",
        ways: int = 5,
        split: Literal["train", "val", "test", "all"] = "train",
        rotations: bool = True,
        val_alphabets: Sequence[str] | None = None,
        test_alphabets: Sequence[str] | None = None,
        cache_dir: str | None = None,
    ) -> None:
        if int(ways) != ways or ways < 2:
            raise OmniglotDataError(f"ways: must be an integer >= 2, got {ways!r}")
        if split not in (*SPLITS, "all"):
            raise OmniglotDataError(f"split: must be one of train, val, test, all; got {split!r}")
        self.ways, self.split, self.rotations = int(ways), split, bool(rotations)
        self.data: OmniglotData = load_omniglot(
            list(data_root) if isinstance(data_root, list | tuple) else data_root, cache_dir
        )
        self.splits = split_alphabets(self.data.alphabet_names, val_alphabets, test_alphabets)
        alphabets = self.data.alphabet_names if split == "all" else self.splits[split]
        degrees = ROTATIONS if self.rotations else (0,)
        self._split_characters = self.data.character_indices(alphabets)
        self.class_names: tuple[str, ...] = tuple(
            class_name(self.data.alphabets[c], self.data.characters[c], d)
            for c in self._split_characters
            for d in degrees
        )
        if len(self.class_names) < self.ways:
            raise OmniglotDataError(
                f"split '{split}' has {len(self.class_names)} classes (alphabets {alphabets}), "
                f"fewer than ways={self.ways}"
            )
        self._characters = {
            f"{a}/{c}": i
            for i, (a, c) in enumerate(zip(self.data.alphabets, self.data.characters, strict=True))
        }
        self.observation_space = spaces.Box(0.0, 1.0, shape=(1, *self.data.images.shape[2:]),
                                            dtype=np.float32)
        self.action_space = spaces.Discrete(self.ways)
        self._task = OmniglotTask(self.class_names[: self.ways])
        self._chars, self._turns = self.decode_task(self._task)
        # Episode counter and per-label permutations of the drawings (see the module docstring).
        self._episode = 0
        self._perms = np.zeros((self.ways, self.data.images.shape[1]), dtype=np.int64)
        self._label = 0
        self._image = np.zeros(self.observation_space.shape, dtype=np.float32)

    # -- tasks -------------------------------------------------------------------------------
    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[OmniglotTask]:
        """``n`` tasks: each ``ways`` distinct classes of the split, in random label order."""
        names = self.class_names
        return [
            OmniglotTask(tuple(names[i] for i in rng.choice(len(names), self.ways, replace=False)))
            for _ in range(n)
        ]

    def decode_task(self, task: OmniglotTask) -> tuple[np.ndarray, np.ndarray]:
        """Character indices and quarter turns of the task's classes, in label order."""
        if len(task.classes) != self.ways:
            raise ValueError(f"task has {len(task.classes)} classes, the env is {self.ways}-way")
        chars = np.empty(self.ways, dtype=np.int64)
        turns = np.empty(self.ways, dtype=np.int64)
        for k, name in enumerate(task.classes):
            base, _, rot = name.rpartition("/rot")
            index = self._characters.get(base)
            if index is None or not rot.isdigit() or int(rot) not in ROTATIONS:
                raise ValueError(
                    f"unknown class {name!r}: expected 'ALPHABET/characterNN/rotDEG' with a "
                    f"character of the data and DEG in {ROTATIONS}"
                )
            chars[k], turns[k] = index, ROTATIONS.index(int(rot))
        return chars, turns

    def shots_problem(self, support: int, query: int) -> str | None:
        """Why ``support`` + ``query`` shots per task do not make an N-way K-shot task, or
        None: both must be multiples of ``ways`` (K and Q examples of every class), and K + Q
        must not exceed a class's drawings (support and query would share images)."""
        for name, n in (("support_size", support), ("query_size", query)):
            if n % self.ways:
                return (f"{name} {n} is not a multiple of ways={self.ways}; an N-way K-shot set "
                        f"holds K examples of each of the N classes ({name} = N*K)")
        per_class = (support + query) // self.ways
        fewest = int(self.data.counts[self._split_characters].min())
        if per_class > fewest:
            return (f"support_size + query_size = {support + query} asks {per_class} examples "
                    f"per class, but a character has only {fewest} drawings: support and query "
                    "would share images")
        return None

    def set_task(self, task: OmniglotTask | dict) -> None:
        """Hold ``task`` from now on; the next episode starts a new draw of its examples."""
        task = task if isinstance(task, OmniglotTask) else OmniglotTask(**task)
        self._chars, self._turns = self.decode_task(task)
        self._task = task
        self._episode = 0

    def get_task(self) -> OmniglotTask:
        return self._task

    # -- episodes ----------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._episode = 0  # a seeded reset replays the same draw (gymnasium's contract)
        label, r = self._episode % self.ways, self._episode // self.ways
        count = int(self.data.counts[self._chars[label]])
        if r % count == 0:  # the class's drawings ran out (or were never drawn): new order
            self._perms[label, :count] = self.np_random.permutation(count)
        drawing = self._perms[label, r % count]
        ink = np.rot90(self.data.images[self._chars[label], drawing], self._turns[label])
        self._image = to_observation(ink)[None]
        self._label = label
        self._episode += 1
        return self._image.copy(), {}

    def step(self, action):
        prediction = int(np.argmax(action)) if np.ndim(action) else int(action)
        reward = 1.0 if prediction == self._label else 0.0
        return self._image.copy(), reward, True, False, {"target": self._label}


class OmniglotVectorEnv(TaskBatchVectorEnv[OmniglotTask]):
    """``num_envs`` Omniglot envs computed together; sub-env i holds its own task and draws
    from its own generator, seeded like :class:`OmniglotEnv` with the i-th seed, so that it
    reproduces the single env episode for episode. Images are gathered from the shared array in
    one indexing operation per reset."""

    metadata: dict[str, Any] = {  # noqa: RUF012
        "autoreset_mode": AutoresetMode.DISABLED,
        "supervised_loss": "cross_entropy",
        "sequential_shots": True,
    }
    task_type = OmniglotTask

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = 1, **kwargs) -> None:
        single = OmniglotEnv(**kwargs)
        super().__init__(num_envs, single, max_episode_steps)
        self.ways, self.data = single.ways, single.data
        self._chars = np.zeros((num_envs, self.ways), dtype=np.int64)
        self._turns = np.zeros((num_envs, self.ways), dtype=np.int64)
        self._episode = np.zeros(num_envs, dtype=np.int64)
        self._perms = np.zeros((num_envs, self.ways, self.data.images.shape[1]), dtype=np.int64)
        self._labels = np.zeros(num_envs, dtype=np.int64)
        self._tasks_changed()

    def _tasks_changed(self) -> None:
        decoded: dict[OmniglotTask, tuple[np.ndarray, np.ndarray]] = {}
        for i, task in enumerate(self._tasks):
            if task not in decoded:  # the sampler gives one task to many sub-envs
                decoded[task] = self.single_env.decode_task(task)
            self._chars[i], self._turns[i] = decoded[task]
        self._episode[:] = 0

    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict | None = None):
        mask = reset_mask_from(options, self.num_envs)
        for i, s in enumerate(seeds_for(seed, self.num_envs)):
            if s is not None and mask[i]:
                self._episode[i] = 0  # as OmniglotEnv.reset(seed=...)
        return super().reset(seed=seed, options=options)

    def _reset_subenvs(self, idx: np.ndarray) -> np.ndarray:
        episode = self._episode[idx]
        labels, r = episode % self.ways, episode // self.ways
        chars = self._chars[idx, labels]
        counts = self.data.counts[chars]
        for j in np.flatnonzero(r % counts == 0):  # new orders, in each sub-env's own generator
            i, count = idx[j], int(counts[j])
            self._perms[i, labels[j], :count] = self._rngs[i].permutation(count)
        drawings = self._perms[idx, labels, r % counts]
        ink = self.data.images[chars, drawings]
        turns = self._turns[idx, labels]
        for k in range(1, len(ROTATIONS)):
            turned = turns == k
            if turned.any():
                ink[turned] = np.rot90(ink[turned], k, axes=(1, 2))
        self._labels[idx] = labels
        self._episode[idx] += 1
        return to_observation(ink)[:, None]

    def _step_subenvs(self, idx: np.ndarray, actions: np.ndarray):
        labels = self._labels[idx]
        rewards = (actions.astype(np.int64) == labels).astype(np.float64)
        return self._obs[idx], rewards, np.ones(idx.size, dtype=bool), {"target": labels}

    def step(self, actions):
        actions = np.asarray(actions)
        if actions.ndim == 2:  # logits per sub-env: the prediction is their argmax
            actions = actions.argmax(axis=-1)
        return super().step(actions)
