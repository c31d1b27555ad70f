"""HalfCheetah velocity and direction families (MAML paper, Section 5.3).

Built on gymnasium's HalfCheetah-v5 model file. Two MDPs, chosen by ``paper_mdp``:

* ``paper_mdp=True`` (default; the configs reproduce the paper): the rllab MDP of the MAML
  experiments. One env step is one physics step of 0.01 s (frame skip 1); the observation is
  ``qpos[1:]``, ``qvel`` and the torso's centre of mass (rllab's ``com_subtree``, 20 numbers);
  the velocity in the reward is the torso subtree's centre-of-mass velocity (rllab's
  ``get_body_comvel``), both evaluated at the new state (rllab called ``forward()`` after
  stepping); reset noise ``qpos += 0.01 N(0, 1)``, ``qvel += 0.1 N(0, 1)``.
* ``paper_mdp=False``: gymnasium HalfCheetah-v5 settings. Frame skip 5 (0.05 s per step);
  observation ``qpos[1:]``, ``qvel`` (17 numbers); velocity ``(x_after - x_before) / dt`` of the
  root; reset noise ``qpos += U(-0.1, 0.1)``, ``qvel += 0.1 N(0, 1)``. The horizon stays 200 env
  steps for both (so a v5 episode covers 10 s of simulated time instead of 2 s).

The centre of mass and its velocity are computed in numpy from ``qpos``/``qvel`` by
:mod:`envs.kinematics` (checked against MuJoCo's ``subtree_com``/``subtree_linvel`` in the
tests): a sensor would describe the state before the last integration, and an extra
``mj_forward`` per step would cost as much as the physics itself at frame skip 1.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from envs.kinematics import PlanarKinematics
from envs.mujoco_task import (
    LocomotionMDP,
    MujocoTaskEnv,
    MujocoTaskVectorEnv,
    compile_spec,
    load_gymnasium_spec,
)
from envs.tasks import (
    DirectionTask,
    GoalVelocityTask,
    sample_direction_tasks,
    sample_velocity_tasks,
)

XML_FILE = "half_cheetah.xml"


class HalfCheetahMDP(LocomotionMDP):
    """HalfCheetah with a goal velocity or a goal direction; see the module docstring."""

    def __init__(
        self,
        objective: Literal["velocity", "direction"],
        paper_mdp: bool = True,
        ctrl_cost_weight: float = 0.05,
        velocity_range: tuple[float, float] = (0.0, 2.0),
        forward_probability: float = 0.5,
    ) -> None:
        if objective not in ("velocity", "direction"):
            raise ValueError(f"objective must be 'velocity' or 'direction', got {objective!r}")
        self.objective = objective
        self.paper_mdp = bool(paper_mdp)
        self.ctrl_cost_weight = float(ctrl_cost_weight)
        self.velocity_range = (float(velocity_range[0]), float(velocity_range[1]))
        self.forward_probability = float(forward_probability)
        self.task_type = GoalVelocityTask if objective == "velocity" else DirectionTask
        self.model = compile_spec(*load_gymnasium_spec(XML_FILE))
        self.frame_skip = 1 if self.paper_mdp else 5
        self.kinematics = PlanarKinematics(self.model) if self.paper_mdp else None
        self.obs_dim = self.model.nq - 1 + self.model.nv + (3 if self.paper_mdp else 0)
        self._init_qpos = self.model.qpos0.copy()

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list:
        if self.objective == "velocity":
            return sample_velocity_tasks(n, rng, self.velocity_range)
        return sample_direction_tasks(n, rng, self.forward_probability)

    def task_params(self, tasks: list) -> np.ndarray:
        if self.objective == "velocity":
            return np.array([[t.velocity] for t in tasks], dtype=np.float64)
        return np.array([[t.direction] for t in tasks], dtype=np.float64)

    def reset_state(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        nq, nv = self.model.nq, self.model.nv
        if self.paper_mdp:
            qpos = self._init_qpos + 0.01 * rng.standard_normal(nq)
        else:
            qpos = self._init_qpos + rng.uniform(-0.1, 0.1, size=nq)
        qvel = 0.1 * rng.standard_normal(nv)
        return qpos, qvel

    def _observe(self, qpos: np.ndarray, qvel: np.ndarray, com: np.ndarray | None) -> np.ndarray:
        parts = [qpos[:, 1:], qvel] if com is None else [qpos[:, 1:], qvel, com]
        return np.concatenate(parts, axis=1).astype(np.float32)

    def observe(self, qpos: np.ndarray, qvel: np.ndarray, sensordata: np.ndarray) -> np.ndarray:
        com = self.kinematics(qpos, qvel)[0] if self.kinematics is not None else None
        return self._observe(qpos, qvel, com)

    def transition(self, qpos_before, qpos, qvel, sensordata, action, params):
        if self.kinematics is not None:
            com, com_velocity = self.kinematics(qpos, qvel)
            x_velocity = com_velocity[:, 0]
        else:
            com = None
            x_velocity = (qpos[:, 0] - qpos_before[:, 0]) / self.dt
        if self.objective == "velocity":
            reward_forward = -np.abs(x_velocity - params[:, 0])
        else:
            reward_forward = params[:, 0] * x_velocity
        reward_ctrl = -self.ctrl_cost_weight * np.sum(action**2, axis=1)
        reward = reward_forward + reward_ctrl
        info = {
            "x_position": qpos[:, 0].copy(),
            "x_velocity": x_velocity,
            "reward_forward": reward_forward,
            "reward_ctrl": reward_ctrl,
        }
        terminated = np.zeros(len(qpos), dtype=bool)
        return self._observe(qpos, qvel, com), reward, terminated, info


_DOC_COMMON = """
    ## Observation
    ``Box(-inf, inf, (20,), float32)`` with ``paper_mdp=True``: ``qpos[1:]`` (8), ``qvel`` (9),
    torso centre of mass (3). ``(17,)`` with ``paper_mdp=False``: ``qpos[1:]``, ``qvel``.

    ## Action
    ``Box(-1, 1, (6,), float32)``: torques of the six leg joints (gymnasium's HalfCheetah).

    ## Arguments
    * ``paper_mdp``: the MAML paper's (rllab) MDP if True (default), gymnasium HalfCheetah-v5's
      frame skip, observation, velocity estimate and reset noise if False (see the module
      ``envs.half_cheetah``). Both register a horizon of 200 steps.
    * ``ctrl_cost_weight``: weight of ``||a||^2``, default 0.05 (the paper's 0.5 * 0.1).
    * ``render_mode``, ``width``, ``height``, ``camera_name``: as gymnasium's MuJoCo envs.
"""


#: Per objective, the task's own keyword arguments and their defaults (HalfCheetahMDP's names).
_OBJECTIVES: dict[str, dict[str, Any]] = {
    "velocity": {"velocity_range": (0.0, 2.0)},
    "direction": {"forward_probability": 0.5},
}


class HalfCheetahEnv(MujocoTaskEnv):
    __doc__ = (
        """HalfCheetah that must run at a goal velocity (``objective="velocity"``,
    ``maml/HalfCheetahVel-v0``) or forward or backward (``"direction"``,
    ``maml/HalfCheetahDir-v0``).

    ## Description
    velocity: a task is a goal velocity ~ U[velocity_range] (``U[0, 2]`` in the MAML paper).
    direction: a task is a direction in {-1, +1}, +1 with probability ``forward_probability``.

    ## Rewards
    velocity: ``reward_forward = -|v_x - goal|``; direction: ``reward_forward = direction *
    v_x``; plus ``reward_ctrl = -ctrl_cost_weight * ||a||^2``. Both are in ``info`` with
    ``x_velocity`` and ``x_position``. Never terminates.
    """
        + _DOC_COMMON
        + """    * ``objective``: ``velocity`` or ``direction`` (fixed by the registered id).
    * ``velocity_range`` (velocity only): bounds of the goal velocity, default ``(0.0, 2.0)``.
    * ``forward_probability`` (direction only): probability of the task +1, default 0.5.

    ## Version History
    * v0: the MAML paper's MDP (rllab) by default, gymnasium HalfCheetah-v5's with
      ``paper_mdp=False``.
    """
    )

    metadata = {**MujocoTaskEnv.metadata, "baseline_timesteps": 1_000_000}  # noqa: RUF012

    def __init__(
        self,
        objective: Literal["velocity", "direction"] = "velocity",
        paper_mdp: bool = True,
        ctrl_cost_weight: float = 0.05,
        render_mode: str | None = None,
        width: int = 480,
        height: int = 480,
        camera_name: str | None = None,
        **task_kwargs: Any,
    ) -> None:
        if objective not in _OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(_OBJECTIVES)}, "
                             f"got {objective!r}")
        own = _OBJECTIVES[objective]
        unknown = sorted(set(task_kwargs) - set(own))
        if unknown:
            raise TypeError(f"HalfCheetahEnv(objective={objective!r}) got unexpected keyword "
                            f"arguments {unknown}; its task's own: {', '.join(own)}")
        constructor_kwargs = {
            "objective": objective, "paper_mdp": paper_mdp, "ctrl_cost_weight": ctrl_cost_weight,
            "render_mode": render_mode, "width": width, "height": height,
            "camera_name": camera_name, **task_kwargs,
        }
        mdp = HalfCheetahMDP(objective, paper_mdp=paper_mdp, ctrl_cost_weight=ctrl_cost_weight,
                             **{**own, **task_kwargs})
        super().__init__(mdp, XML_FILE, render_mode=render_mode, width=width, height=height,
                         camera_name=camera_name, constructor_kwargs=constructor_kwargs)


def make_half_cheetah_vector_env(
    num_envs: int = 1, max_episode_steps: int | None = None, nthread: int | None = None,
    **kwargs: Any,
) -> MujocoTaskVectorEnv:
    """``num_envs`` :class:`HalfCheetahEnv` (``kwargs``) stepped together by
    ``mujoco.rollout`` with ``nthread`` physics threads (default: this process's share of the
    cores); batch semantics are those of ``envs.vector`` (the registered vector entry point)."""
    return MujocoTaskVectorEnv(HalfCheetahEnv(**kwargs), num_envs, max_episode_steps, nthread)
