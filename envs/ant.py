"""Ant velocity, direction and goal-position families (MAML paper Section 5.3; goal from
pytorch-maml-rl).

Built on gymnasium's Ant-v5 model file. Two MDPs, chosen by ``paper_mdp``:

* ``paper_mdp=True`` (the configs; the MAML paper's rllab ``ant.xml``): one env step is one
  RK4 physics step of 0.02 s, with rllab's contact impedance (``solimp 0.8 0.8 0.01``); episodes
  start from the file's ``init_qpos`` (torso at 0.55 m, ankles bent) with noise
  ``qpos += 0.01 N(0, 1)``, ``qvel += 0.1 N(0, 1)``; the velocity in the reward is the torso
  subtree's centre-of-mass velocity at the new state (rllab's ``get_body_comvel``, from
  :class:`envs.kinematics.TreeKinematics`); the observation is rllab's (125 numbers). One
  difference remains: the contact forces (observation and cost) come from sensors, which
  describe the state before the step's integration, so they lag one env step here, where
  rllab read them after a ``forward()`` at the new state.
* ``paper_mdp=False`` (default): gymnasium Ant-v5's physics settings (RK4, timestep 0.01, frame
  skip 5, so 0.05 s per env step), initial pose and reset noise (``qpos += U(-0.1, 0.1)``,
  ``qvel += 0.1 N(0, 1)``), velocity ``(x_after - x_before) / dt`` of the torso, observation.

The rewards are the MAML paper's in both (rllab's ``ant_env_rand*.py``):

* velocity: ``-|v_x - goal| + velocity_bonus`` (the paper's constant 1),
* direction: ``direction * v_x``,
* goal: ``-(|x - goal_x| + |y - goal_y|) + goal_bonus`` (pytorch-maml-rl's constant 4, which keeps
  the return of staying alive above that of falling over),

each minus ``ctrl_cost_weight * ||a||^2`` and ``contact_cost_weight * ||clip(cfrc_ext)||^2``,
plus ``survive_reward`` (0.05) on every step; positions are the torso's (free joint)
coordinates. The episode terminates when the torso height leaves ``healthy_z_range`` or the
state is not finite.

Contact forces: ``cfrc_ext`` (the external contact wrench on each body, in MuJoCo's com-based
frame) is rebuilt exactly from one ``contact`` sensor per body (``reduce="netforce"``: net force,
torque about the force-weighted contact centroid, and that centroid) and a ``subtreecom`` sensor
of the torso: ``cfrc_ext[b] = -[T + (P - com) x F, F]``. Like every sensor it describes the start
of the last physics substep, as gymnasium's ``cfrc_ext`` after ``mj_step`` does; at reset, before
any step, it is zero. This lets ``mujoco.rollout`` return it with the states, with no per-env
Python call.
"""

from __future__ import annotations

from typing import Any, Literal

import mujoco
import numpy as np

from envs.kinematics import TreeKinematics, quaternion_matrices
from envs.mujoco_task import (
    LocomotionMDP,
    MujocoTaskEnv,
    MujocoTaskVectorEnv,
    compile_spec,
    load_gymnasium_spec,
)
from envs.tasks import (
    DirectionTask,
    GoalPositionTask,
    GoalVelocityTask,
    sample_direction_tasks,
    sample_position_tasks,
    sample_velocity_tasks,
)

XML_FILE = "ant.xml"
Objective = Literal["velocity", "direction", "goal"]


#: rllab's ``ant.xml`` (the MAML paper's Ant) against gymnasium's: one RK4 step of 0.02 s per
#: env step, and its contacts' impedance.
PAPER_TIMESTEP = 0.02
PAPER_SOLIMP = (0.8, 0.8, 0.01)


def build_ant_model(paper_mdp: bool = False) -> tuple[mujoco.MjModel, int]:
    """Ant-v5's model with one net-contact sensor per body and the torso's subtree com; with
    ``paper_mdp`` rllab's time step and contact impedance (``PAPER_TIMESTEP``,
    ``PAPER_SOLIMP``; the bodies, joints and motors are the same in both files).

    Returns the model and the number of bodies with a contact sensor (all but the world).
    """
    if not hasattr(mujoco, "mjtConDataField"):
        raise ValueError(
            "the Ant families need mujoco >= 3.3.1 (contact sensors); this environment has "
            f"mujoco {mujoco.__version__} (the metaworld extra pins 3.3.0: keep Meta-World in "
            "its own environment, docs/guide/metaworld.md)"
        )
    spec, total_mass = load_gymnasium_spec(XML_FILE)
    if paper_mdp:
        spec.option.timestep = PAPER_TIMESTEP
        for geom in spec.geoms:
            geom.solimp[:3] = PAPER_SOLIMP
    bodies = [b for b in spec.bodies if b.name != "world"]
    fields = (
        mujoco.mjtConDataField.mjCONDATA_FORCE,
        mujoco.mjtConDataField.mjCONDATA_TORQUE,
        mujoco.mjtConDataField.mjCONDATA_POS,
    )
    dataspec = sum(1 << int(f) for f in fields)
    netforce = 3  # mjtConReduce: none, mindist, maxforce, netforce
    for i, body in enumerate(bodies):
        if not body.name:  # the ankle bodies are anonymous in the XML
            body.name = f"maml_body_{i}"
        spec.add_sensor(
            name=f"maml_contact_{body.name}",
            type=mujoco.mjtSensor.mjSENS_CONTACT,
            objtype=mujoco.mjtObj.mjOBJ_BODY,
            objname=body.name,
            intprm=[dataspec, netforce, 1],
        )
    spec.add_sensor(
        name="maml_torso_subtreecom",
        type=mujoco.mjtSensor.mjSENS_SUBTREECOM,
        objtype=mujoco.mjtObj.mjOBJ_BODY,
        objname="torso",
    )
    return compile_spec(spec, total_mass), len(bodies)


def contact_wrenches(sensordata: np.ndarray, nbody: int) -> np.ndarray:
    """``cfrc_ext[1:]`` as ``(batch, nbody, 6)`` from the sensors of ``build_ant_model``."""
    per_body = sensordata[:, : 9 * nbody].reshape(len(sensordata), nbody, 9)
    force, torque, centroid = per_body[..., 0:3], per_body[..., 3:6], per_body[..., 6:9]
    com = sensordata[:, None, 9 * nbody : 9 * nbody + 3]
    moment = torque + np.cross(centroid - com, force)
    return -np.concatenate([moment, force], axis=-1)


class AntMDP(LocomotionMDP):
    """Ant with a goal velocity, direction or position; see the module docstring."""

    def __init__(
        self,
        objective: Objective,
        paper_mdp: bool = False,
        ctrl_cost_weight: float = 0.005,
        contact_cost_weight: float = 5e-4,
        survive_reward: float = 0.05,
        healthy_z_range: tuple[float, float] = (0.2, 1.0),
        terminate_when_unhealthy: bool = True,
        contact_force_range: tuple[float, float] = (-1.0, 1.0),
        reset_noise_scale: float = 0.1,
        include_cfrc_ext_in_observation: bool = True,
        exclude_current_positions_from_observation: bool = True,
        bonus: float = 0.0,
        task_range: tuple[float, float] = (0.0, 3.0),
        forward_probability: float = 0.5,
    ) -> None:
        if objective not in ("velocity", "direction", "goal"):
            raise ValueError(f"objective must be velocity, direction or goal, got {objective!r}")
        self.objective = objective
        self.ctrl_cost_weight = float(ctrl_cost_weight)
        self.contact_cost_weight = float(contact_cost_weight)
        self.survive_reward = float(survive_reward)
        self.healthy_z_range = (float(healthy_z_range[0]), float(healthy_z_range[1]))
        self.terminate_when_unhealthy = bool(terminate_when_unhealthy)
        self.contact_force_range = (float(contact_force_range[0]), float(contact_force_range[1]))
        self.reset_noise_scale = float(reset_noise_scale)
        self.include_cfrc_ext = bool(include_cfrc_ext_in_observation)
        self.skip_qpos = 2 if exclude_current_positions_from_observation else 0
        self.bonus = float(bonus)
        self.task_range = (float(task_range[0]), float(task_range[1]))
        self.forward_probability = float(forward_probability)
        self.task_type = {
            "velocity": GoalVelocityTask,
            "direction": DirectionTask,
            "goal": GoalPositionTask,
        }[objective]
        self.paper_mdp = bool(paper_mdp)
        self.model, self.contact_bodies = build_ant_model(self.paper_mdp)
        if self.paper_mdp:
            # rllab: one physics step per env step, the file's custom initial pose, and its
            # observation: qpos, qvel, clipped cfrc_ext of every body (the world's row
            # included), the torso's rotation matrix and centre of mass.
            self.frame_skip = 1
            self.kinematics = TreeKinematics(self.model)
            self._init_qpos = self.model.numeric("init_qpos").data.astype(np.float64)
            self.obs_dim = (self.model.nq + self.model.nv + 6 * (self.contact_bodies + 1)
                            + 9 + 3)
        else:
            self.frame_skip = 5
            self.kinematics = None
            self._init_qpos = self.model.qpos0.copy()
            self.obs_dim = (
                self.model.nq
                - self.skip_qpos
                + self.model.nv
                + (6 * self.contact_bodies if self.include_cfrc_ext else 0)
            )

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list:
        if self.objective == "velocity":
            return sample_velocity_tasks(n, rng, self.task_range)
        if self.objective == "direction":
            return sample_direction_tasks(n, rng, self.forward_probability)
        return sample_position_tasks(n, rng, self.task_range)

    def task_params(self, tasks: list) -> np.ndarray:
        if self.objective == "velocity":
            rows = [[t.velocity] for t in tasks]
        elif self.objective == "direction":
            rows = [[t.direction] for t in tasks]
        else:
            rows = [[t.x, t.y] for t in tasks]
        return np.array(rows, dtype=np.float64)

    def reset_state(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if self.paper_mdp:  # rllab's reset_mujoco
            qpos = self._init_qpos + 0.01 * rng.standard_normal(self.model.nq)
            return qpos, 0.1 * rng.standard_normal(self.model.nv)
        scale = self.reset_noise_scale
        qpos = self._init_qpos + rng.uniform(-scale, scale, size=self.model.nq)
        qvel = scale * rng.standard_normal(self.model.nv)
        return qpos, qvel

    def _contact_forces(self, sensordata: np.ndarray) -> np.ndarray:
        low, high = self.contact_force_range
        return np.clip(contact_wrenches(sensordata, self.contact_bodies), low, high)

    def _observe(self, qpos, qvel, contact_forces, com=None) -> np.ndarray:
        if self.paper_mdp:
            world = np.zeros((len(qpos), 6))
            parts = [qpos, qvel, world, contact_forces.reshape(len(qpos), -1),
                     quaternion_matrices(qpos[:, 3:7]).reshape(len(qpos), 9), com]
            return np.concatenate(parts, axis=1).astype(np.float32)
        parts = [qpos[:, self.skip_qpos :], qvel]
        if self.include_cfrc_ext:
            parts.append(contact_forces.reshape(len(qpos), -1))
        return np.concatenate(parts, axis=1).astype(np.float32)

    def observe(self, qpos: np.ndarray, qvel: np.ndarray, sensordata: np.ndarray) -> np.ndarray:
        com = self.kinematics(qpos, qvel)[0] if self.kinematics is not None else None
        return self._observe(qpos, qvel, self._contact_forces(sensordata), com)

    def _task_reward(self, qpos_before, qpos, params, com_velocity=None
                     ) -> tuple[str, np.ndarray, np.ndarray]:
        if com_velocity is not None:  # rllab: the torso subtree's centre-of-mass velocity
            velocity = com_velocity[:, :2]
        else:
            velocity = (qpos[:, :2] - qpos_before[:, :2]) / self.dt
        if self.objective == "velocity":
            return "reward_forward", -np.abs(velocity[:, 0] - params[:, 0]) + self.bonus, velocity
        if self.objective == "direction":
            return "reward_forward", params[:, 0] * velocity[:, 0] + self.bonus, velocity
        distance = np.sum(np.abs(qpos[:, :2] - params), axis=1)
        return "reward_goal", -distance + self.bonus, velocity

    def transition(self, qpos_before, qpos, qvel, sensordata, action, params):
        contact_forces = self._contact_forces(sensordata)
        com = com_velocity = None
        if self.kinematics is not None:
            com, com_velocity = self.kinematics(qpos, qvel)
        key, reward_task, velocity = self._task_reward(qpos_before, qpos, params, com_velocity)
        reward_ctrl = -self.ctrl_cost_weight * np.sum(action**2, axis=1)
        reward_contact = -self.contact_cost_weight * np.sum(contact_forces**2, axis=(1, 2))
        reward_survive = np.full(len(qpos), self.survive_reward)
        reward = reward_task + reward_ctrl + reward_contact + reward_survive
        finite = np.isfinite(qpos).all(axis=1) & np.isfinite(qvel).all(axis=1)
        low, high = self.healthy_z_range
        healthy = finite & (qpos[:, 2] >= low) & (qpos[:, 2] <= high)
        terminated = ~healthy if self.terminate_when_unhealthy else np.zeros_like(healthy)
        info = {
            "x_position": qpos[:, 0].copy(),
            "y_position": qpos[:, 1].copy(),
            "x_velocity": velocity[:, 0],
            "y_velocity": velocity[:, 1],
            key: reward_task,
            "reward_ctrl": reward_ctrl,
            "reward_contact": reward_contact,
            "reward_survive": reward_survive,
        }
        return self._observe(qpos, qvel, contact_forces, com), reward, terminated, info


_DOC_COMMON = """
    ## Observation
    ``Box(-inf, inf, (105,), float32)`` by default: ``qpos[2:]`` (13), ``qvel`` (14) and the
    clipped contact forces ``cfrc_ext[1:]`` (78) as Ant-v5; ``qpos`` keeps x, y when
    ``exclude_current_positions_from_observation=False`` (107 numbers); the contact forces go
    with ``include_cfrc_ext_in_observation=False`` (27 numbers).

    ## Action
    ``Box(-1, 1, (8,), float32)``: torques of the eight leg joints (gymnasium's Ant).

    ## Episode end
    Terminates when the torso height leaves ``healthy_z_range`` (default ``(0.2, 1.0)``) or the
    state is not finite (if ``terminate_when_unhealthy``). Registered horizon: 200 steps.

    With ``paper_mdp=True``: ``(125,)``, rllab's: ``qpos`` (15), ``qvel`` (14), the clipped
    contact forces of every body, the world's zero row included (84), the torso's rotation
    matrix (9) and its subtree's centre of mass (3); the options below that shape the
    observation apply to ``paper_mdp=False`` only.

    ## Arguments
    * ``paper_mdp``: the MAML paper's (rllab's ``ant.xml``) MDP if True; gymnasium Ant-v5's if
      False (default). See the module ``envs.ant``; the Ant configs set it to True.
    * ``ctrl_cost_weight``: weight of ``||a||^2``, default 0.005 (the paper's 0.5 * 1e-2).
    * ``contact_cost_weight``: weight of ``||clip(cfrc_ext)||^2``, default 5e-4.
    * ``survive_reward``: constant per step, default 0.05.
    * ``healthy_z_range``, ``terminate_when_unhealthy``, ``contact_force_range``,
      ``reset_noise_scale``, ``include_cfrc_ext_in_observation``,
      ``exclude_current_positions_from_observation``: as gymnasium's Ant-v5.
    * ``render_mode``, ``width``, ``height``, ``camera_name``: as gymnasium's MuJoCo envs.
"""


#: Per objective, the task's own keyword arguments: public name -> (AntMDP's name, default).
#: The goal task also keeps x, y in the observation by default (it must know where it is).
_OBJECTIVES: dict[str, dict[str, tuple[str, Any]]] = {
    "velocity": {"velocity_range": ("task_range", (0.0, 3.0)),
                 "velocity_bonus": ("bonus", 1.0)},
    "direction": {"forward_probability": ("forward_probability", 0.5)},
    "goal": {"goal_range": ("task_range", (-3.0, 3.0)), "goal_bonus": ("bonus", 4.0),
             "exclude_current_positions_from_observation":
                 ("exclude_current_positions_from_observation", False)},
}
#: AntMDP's arguments shared by every objective (passed through by name).
_COMMON = ("paper_mdp", "ctrl_cost_weight", "contact_cost_weight", "survive_reward",
           "healthy_z_range", "terminate_when_unhealthy", "contact_force_range",
           "reset_noise_scale", "include_cfrc_ext_in_observation",
           "exclude_current_positions_from_observation")


class AntEnv(MujocoTaskEnv):
    __doc__ = (
        """Ant that must run along x at a goal velocity (``objective="velocity"``,
    ``maml/AntVel-v0``), forward or backward (``"direction"``, ``maml/AntDir-v0``), or walk to a
    goal position in the plane (``"goal"``, ``maml/AntGoal-v0``).

    ## Description
    velocity: a task is a goal velocity ~ U[velocity_range] (``U[0, 3]`` in the MAML paper).
    direction: a task is a direction in {-1, +1}, +1 with probability ``forward_probability``.
    goal: a task is a goal ``(x, y) ~ U[goal_range]^2`` (``U[-3, 3]^2``, as pytorch-maml-rl);
    the observation keeps the torso's x, y by default, so it has 107 numbers.

    ## Rewards
    The task term (velocity: ``-|v_x - goal| + velocity_bonus``; direction: ``direction *
    v_x``; goal: ``-(|x - goal_x| + |y - goal_y|) + goal_bonus``), ``reward_ctrl``,
    ``reward_contact`` and ``reward_survive`` (all in ``info``) sum to the reward.
    """
        + _DOC_COMMON
        + """    * ``objective``: ``velocity``, ``direction`` or ``goal`` (fixed by the id).
    * ``exclude_current_positions_from_observation``: default True, False for ``goal``.
    * ``velocity_range``, ``velocity_bonus`` (velocity): default ``(0.0, 3.0)`` and 1.0.
    * ``forward_probability`` (direction): probability of the task +1, default 0.5.
    * ``goal_range``, ``goal_bonus`` (goal): default ``(-3.0, 3.0)`` and 4.0.

    ## Version History
    * v0: the MAML paper's rewards on gymnasium Ant-v5's model and observation; ``paper_mdp``
      (default False, so v0 stays that MDP) adds the paper's own (rllab's).
    """
    )

    metadata = {**MujocoTaskEnv.metadata, "baseline_timesteps": 2_000_000}  # noqa: RUF012

    def __init__(
        self,
        objective: Objective = "velocity",
        render_mode: str | None = None,
        width: int = 480,
        height: int = 480,
        camera_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        if objective not in _OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(_OBJECTIVES)}, "
                             f"got {objective!r}")
        own = _OBJECTIVES[objective]
        unknown = sorted(set(kwargs) - set(own) - set(_COMMON))
        if unknown:
            raise TypeError(f"AntEnv(objective={objective!r}) got unexpected keyword arguments "
                            f"{unknown}; its task's own: {', '.join(own)}; every objective's: "
                            f"{', '.join(_COMMON)}")
        mdp_kwargs = {k: v for k, v in kwargs.items() if k not in own}
        mdp_kwargs.update({name: kwargs.get(public, default)
                           for public, (name, default) in own.items()})
        constructor_kwargs = {"objective": objective, "render_mode": render_mode,
                              "width": width, "height": height, "camera_name": camera_name,
                              **kwargs}
        super().__init__(AntMDP(objective, **mdp_kwargs), XML_FILE, render_mode=render_mode,
                         width=width, height=height, camera_name=camera_name,
                         constructor_kwargs=constructor_kwargs)


def make_ant_vector_env(
    num_envs: int = 1, max_episode_steps: int | None = None, nthread: int | None = None,
    **kwargs: Any,
) -> MujocoTaskVectorEnv:
    """``num_envs`` :class:`AntEnv` (``kwargs``) stepped together by ``mujoco.rollout`` with
    ``nthread`` physics threads; batch semantics (terminated sub-envs are frozen, ...) are those
    of ``envs.vector`` (the registered vector entry point)."""
    return MujocoTaskVectorEnv(AntEnv(**kwargs), num_envs, max_episode_steps, nthread)
