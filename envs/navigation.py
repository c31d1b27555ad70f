"""2D navigation (MAML paper, Section 5.3): a point moves to a goal in the plane.

The single env and the batched env share the same numpy step function, so sub-env i of
``Navigation2DVectorEnv`` is the single env computed in a batch.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.tasks import GoalPositionTask, coerce_task, sample_position_tasks
from envs.vector import TaskBatchVectorEnv


def navigation_step(
    position: np.ndarray,
    actions: np.ndarray,
    goals: np.ndarray,
    max_action: float,
    goal_tolerance: float | None,
    normalized_actions: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """One step for a batch: ``(new_position, reward, terminated, info)``; arrays over the batch.

    The displacement is the action clipped to ``[-max_action, max_action]^2`` or, with
    ``normalized_actions``, the action clipped to ``[-1, 1]^2`` and scaled by ``max_action``
    (rllab's ``normalize`` wrapper, which the original MAML code put around this env). The reward
    is minus the Euclidean distance to the goal after the move.
    """
    if normalized_actions:
        displacement = np.clip(actions, -1.0, 1.0) * max_action
    else:
        displacement = np.clip(actions, -max_action, max_action)
    position = position + displacement
    offset = position - goals
    distance = np.sqrt(np.sum(offset**2, axis=-1))
    if goal_tolerance is None:
        terminated = np.zeros(len(position), dtype=bool)
    else:
        terminated = np.all(np.abs(offset) < goal_tolerance, axis=-1)
    reward = -distance
    return position, reward, terminated, {"reward_distance": reward.copy(), "distance": distance}


class Navigation2DEnv(gym.Env):
    """A point in the plane moves towards a goal; each task is a goal position.

    ## Description
    The point starts at the origin; a task is a goal ``(x, y) ~ U[goal_range]^2``
    (``U[-0.5, 0.5]^2`` in the MAML paper). Horizon 100 when made with ``gymnasium.make``.

    ## Observation
    ``Box(-inf, inf, (2,), float32)``: the position of the point.

    ## Action
    With ``normalized_actions=True`` (the default): ``Box(-1, 1, (2,), float32)``, a displacement
    in units of ``max_action``. This is the MDP the paper's numbers come from: the original code
    wrapped the env in rllab's ``normalize``, so a unit-std Gaussian policy explores at the scale
    of the velocity bound. ``False`` gives ``Box(-max_action, max_action)`` and raw displacements
    (pytorch-maml-rl's variant), where a unit-std policy almost always saturates the clip.
    Actions outside the box are clipped before they are applied.

    ## Rewards
    ``reward = -||position - goal||_2`` after the move; ``info["reward_distance"]`` is that term
    and ``info["distance"]`` the distance. The episode terminates when both coordinates are within
    ``goal_tolerance`` of the goal (as in the original MAML code); ``None`` never terminates.

    ## Arguments
    * ``goal_range``: bounds of each goal coordinate, default ``(-0.5, 0.5)``.
    * ``max_action``: the velocity bound, default ``0.1``.
    * ``goal_tolerance``: termination radius per coordinate, default ``0.01``.
    * ``normalized_actions``: actions in ``[-1, 1]`` scaled by ``max_action``, default ``True``.
    """

    # What the library reads of a family (docs/guide/task_families.md#what-a-family-declares):
    # evaluate --video draws trajectories (the observation is the position, the task its goal);
    # evaluate --baselines trains PPO this long.
    metadata: dict[str, Any] = {  # noqa: RUF012
        "render_modes": [], "trajectory_plot": True, "baseline_timesteps": 300_000,
    }

    def __init__(
        self,
        goal_range: tuple[float, float] = (-0.5, 0.5),
        max_action: float = 0.1,
        goal_tolerance: float | None = 0.01,
        normalized_actions: bool = True,
    ) -> None:
        self.goal_range = (float(goal_range[0]), float(goal_range[1]))
        self.max_action = float(max_action)
        self.goal_tolerance = None if goal_tolerance is None else float(goal_tolerance)
        self.normalized_actions = bool(normalized_actions)
        bound = 1.0 if self.normalized_actions else self.max_action
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Box(-bound, bound, shape=(2,), dtype=np.float32)
        self._task = GoalPositionTask(0.0, 0.0)
        self._goal = np.zeros((1, 2))
        self._position = np.zeros((1, 2))

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[GoalPositionTask]:
        """Draw ``n`` goals ~ U[goal_range]^2."""
        return sample_position_tasks(n, rng, self.goal_range)

    def set_task(self, task: GoalPositionTask) -> None:
        """Move the goal; takes effect from the next step."""
        self._task = coerce_task(task, GoalPositionTask)
        self._goal = np.array([[self._task.x, self._task.y]])

    def get_task(self) -> GoalPositionTask:
        return self._task

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._position = np.zeros((1, 2))
        return self._position[0].astype(np.float32), {}

    def step(self, action):
        action = np.asarray(action, dtype=np.float64).reshape(1, 2)
        self._position, reward, terminated, info = navigation_step(
            self._position, action, self._goal, self.max_action, self.goal_tolerance,
            self.normalized_actions,
        )
        info = {key: float(value[0]) for key, value in info.items()}
        obs = self._position[0].astype(np.float32)
        return obs, float(reward[0]), bool(terminated[0]), False, info


class Navigation2DVectorEnv(TaskBatchVectorEnv[GoalPositionTask]):
    """``num_envs`` 2D-navigation envs in numpy, each with its own goal (``set_tasks``).

    Takes the keyword arguments of ``Navigation2DEnv``; batch semantics (seeding, freezing done
    sub-envs, time limit, ``reset_mask``) are those of ``envs.vector``.
    """

    task_type = GoalPositionTask

    def __init__(
        self, num_envs: int = 1, max_episode_steps: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(num_envs, Navigation2DEnv(**kwargs), max_episode_steps)
        self._position = np.zeros((num_envs, 2))
        self._goals = np.zeros((num_envs, 2))
        self._tasks_changed()

    def _tasks_changed(self) -> None:
        self._goals = np.array([[t.x, t.y] for t in self._tasks], dtype=np.float64)

    def _reset_subenvs(self, idx: np.ndarray) -> np.ndarray:
        self._position[idx] = 0.0
        return self._position[idx].astype(np.float32)

    def _step_subenvs(self, idx: np.ndarray, actions: np.ndarray):
        env = self.single_env
        position, reward, terminated, info = navigation_step(
            self._position[idx], actions, self._goals[idx], env.max_action, env.goal_tolerance,
            env.normalized_actions,
        )
        self._position[idx] = position
        return position.astype(np.float32), reward, terminated, info
