"""MuJoCo task families: one MDP definition shared by a single env and a batched env.

A ``LocomotionMDP`` holds the compiled model and defines, as numpy functions over a batch, the
reset distribution, the observation, the reward terms and termination. ``MujocoTaskEnv`` (a
gymnasium ``MujocoEnv``, so it renders) steps one ``MjData``; ``MujocoTaskVectorEnv`` steps all
its sub-envs with one ``mujoco.rollout`` call per env step (a persistent C++ thread pool, the GIL
released) and evaluates the same functions on the returned states and sensor values. Nothing on
the batched hot path loops over sub-envs in Python.

Both paths run exactly the same physics: an env step is ``frame_skip`` calls of ``mj_step`` with
the action as control, starting from a zero solver warm start (``mujoco.rollout`` resets
``qacc_warmstart`` on every call, so the single env does the same). Quantities needed after the
step come either from the new ``qpos``/``qvel`` or from sensors injected into the model; note that
MuJoCo computes sensors inside ``mj_step`` *before* integrating, so a sensor value describes the
state at the start of the last physics substep (as gymnasium's ``cfrc_ext`` does).
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import gymnasium as gym
import mujoco
import mujoco.rollout
import numpy as np
from gymnasium import spaces, utils
from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

from envs.tasks import coerce_task
from envs.vector import TaskBatchVectorEnv

GYMNASIUM_ASSETS = pathlib.Path(gym.__file__).parent / "envs" / "mujoco" / "assets"


def load_gymnasium_spec(xml_file: str) -> tuple[mujoco.MjSpec, float | None]:
    """Parse one of gymnasium's MuJoCo model files into an editable ``MjSpec``.

    Returns the spec and the total mass the file asks for through the deprecated
    ``compiler/settotalmass`` attribute (``None`` if absent); ``compile_spec`` applies it with
    ``mj_setTotalmass``, which gives the same masses and inertias without MuJoCo's deprecation
    warning on every env creation.
    """
    path = GYMNASIUM_ASSETS / xml_file
    text = path.read_text()
    total_mass = None
    marker = 'settotalmass="'
    if marker in text:
        start = text.index(marker) + len(marker)
        end = text.index('"', start)
        total_mass = float(text[start:end])
        text = text[: start - len(marker)] + text[end + 1 :]
    spec = mujoco.MjSpec.from_string(text)
    spec.modelfiledir = str(path.parent)
    return spec, total_mass


def compile_spec(spec: mujoco.MjSpec, total_mass: float | None) -> mujoco.MjModel:
    """Compile, then scale masses to ``total_mass`` as the model file asked."""
    model = spec.compile()
    if total_mass is not None:
        mujoco.mj_setTotalmass(model, total_mass)
        mujoco.mj_setConst(model, mujoco.MjData(model))
    return model


class LocomotionMDP:
    """One task family's MDP over a MuJoCo model, as batched numpy functions.

    Subclasses set ``model``, ``frame_skip``, ``task_type``, ``obs_dim`` and implement
    ``sample_tasks``, ``task_params``, ``reset_state``, ``observe`` and ``transition``. Every
    array argument has a leading batch dimension; the single env passes a batch of one, so the
    single and the batched env evaluate literally the same code.
    """

    model: mujoco.MjModel
    frame_skip: int
    task_type: type
    obs_dim: int
    default_camera_config: dict[str, float | int] = {"distance": 4.0}  # noqa: RUF012

    @property
    def dt(self) -> float:
        """Duration of one env step."""
        return float(self.model.opt.timestep) * self.frame_skip

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list:
        raise NotImplementedError

    def task_params(self, tasks: list) -> np.ndarray:
        """Tasks as a float array ``(len(tasks), k)`` for the vectorised reward."""
        raise NotImplementedError

    def reset_state(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Initial ``(qpos, qvel)`` of one episode, drawn from ``rng``."""
        raise NotImplementedError

    def observe(self, qpos: np.ndarray, qvel: np.ndarray, sensordata: np.ndarray) -> np.ndarray:
        """Observations ``(batch, obs_dim)`` float32."""
        raise NotImplementedError

    def transition(
        self,
        qpos_before: np.ndarray,
        qpos: np.ndarray,
        qvel: np.ndarray,
        sensordata: np.ndarray,
        action: np.ndarray,
        params: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """``(obs, reward, terminated, info)`` after one env step, all over the batch."""
        raise NotImplementedError


class MujocoTaskEnv(MujocoEnv, utils.EzPickle):
    """Single env of a ``LocomotionMDP``; subclasses build the MDP from typed keyword arguments."""

    metadata: dict[str, Any] = {  # noqa: RUF012
        "render_modes": ["human", "rgb_array", "depth_array", "rgbd_tuple"],
    }

    def __init__(
        self,
        mdp: LocomotionMDP,
        xml_file: str,
        render_mode: str | None = None,
        width: int = 480,
        height: int = 480,
        camera_name: str | None = None,
        constructor_kwargs: dict[str, Any] | None = None,
    ) -> None:
        # The public subclass's own keyword arguments, so pickling/copying rebuilds it.
        utils.EzPickle.__init__(self, **(constructor_kwargs or {}))
        self.mdp = mdp
        MujocoEnv.__init__(
            self,
            str(GYMNASIUM_ASSETS / xml_file),
            mdp.frame_skip,
            observation_space=spaces.Box(-np.inf, np.inf, (mdp.obs_dim,), np.float32),
            render_mode=render_mode,
            width=width,
            height=height,
            camera_name=camera_name,
            default_camera_config=mdp.default_camera_config,
        )
        self.metadata = {**self.metadata, "render_fps": int(np.round(1.0 / self.dt))}
        self._task = mdp.sample_tasks(1, np.random.default_rng(0))[0]
        self._params = mdp.task_params([self._task])
        self._no_sensors = np.zeros((1, self.model.nsensordata))

    def _initialize_simulation(self) -> tuple[mujoco.MjModel, mujoco.MjData]:
        # The MDP's model (with its injected sensors) instead of the plain XML file.
        model = self.mdp.model
        model.vis.global_.offwidth = self.width
        model.vis.global_.offheight = self.height
        return model, mujoco.MjData(model)

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list:
        """Draw ``n`` tasks from the family's distribution."""
        return self.mdp.sample_tasks(n, rng)

    def set_task(self, task: Any) -> None:
        """Change the task; takes effect from the next step."""
        self._task = coerce_task(task, self.mdp.task_type)
        self._params = self.mdp.task_params([self._task])

    def get_task(self) -> Any:
        return self._task

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (self.model.nu,):
            raise ValueError(f"action must have shape ({self.model.nu},), got {action.shape}")
        qpos_before = self.data.qpos.copy()
        # What mujoco.rollout does at the start of every call: the physics of both paths is
        # then bit-identical.
        self.data.qacc_warmstart[:] = 0.0
        self.data.ctrl[:] = action
        mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)
        obs, reward, terminated, info = self.mdp.transition(
            qpos_before[None],
            self.data.qpos[None],
            self.data.qvel[None],
            self.data.sensordata[None],
            action[None],
            self._params,
        )
        if self.render_mode == "human":
            self.render()
        info = {key: value[0].item() for key, value in info.items()}
        return obs[0], float(reward[0]), bool(terminated[0]), False, info

    def reset_model(self) -> np.ndarray:
        qpos, qvel = self.mdp.reset_state(self.np_random)
        self.set_state(qpos, qvel)
        # No physics step yet: sensor-derived observation terms (contact forces) are zero.
        return self.mdp.observe(qpos[None], qvel[None], self._no_sensors)[0]

    def _get_reset_info(self) -> dict[str, Any]:
        """Where the robot starts, as gymnasium v5's MuJoCo envs report it: ``x_position``, and
        ``y_position`` for a free-floating root (Ant)."""
        info = {"x_position": float(self.data.qpos[0])}
        if self.model.jnt_type[0] == mujoco.mjtJoint.mjJNT_FREE:
            info["y_position"] = float(self.data.qpos[1])
        return info


def _state_slices(model: mujoco.MjModel) -> tuple[slice, slice]:
    """Where qpos and qvel sit in a ``mjSTATE_FULLPHYSICS`` state vector (time comes first)."""
    time_size = mujoco.mj_stateSize(model, mujoco.mjtState.mjSTATE_TIME)
    qpos = slice(time_size, time_size + model.nq)
    return qpos, slice(qpos.stop, qpos.stop + model.nv)


def default_physics_threads() -> int:
    """The cores this process may use, shared with the other processes torchrun started on
    this machine (``LOCAL_WORLD_SIZE``), so that N training processes do not each start a
    physics thread per core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


class MujocoTaskVectorEnv(TaskBatchVectorEnv):
    """Batched env of a ``LocomotionMDP``: all sub-envs advance in one ``mujoco.rollout`` call.

    ``nthread`` threads (default :func:`default_physics_threads`) step the sub-envs; the physics
    is the same as the single env's: for the same task, seed and actions the states agree to the
    last bit, and observations and rewards up to the rounding of batched numpy products (about
    1e-15).
    """

    def __init__(
        self,
        single_env: MujocoTaskEnv,
        num_envs: int,
        max_episode_steps: int | None,
        nthread: int | None = None,
    ) -> None:
        self.mdp = single_env.mdp
        self.task_type = self.mdp.task_type
        super().__init__(num_envs, single_env, max_episode_steps)
        self.model = self.mdp.model
        self.nthread = default_physics_threads() if nthread is None else int(nthread)
        self._rollout = mujoco.rollout.Rollout(nthread=self.nthread)
        self._datas = [mujoco.MjData(self.model) for _ in range(max(1, self.nthread))]
        self._qpos, self._qvel = _state_slices(self.model)
        template = mujoco.MjData(self.model)
        self._initial_state = np.zeros(
            mujoco.mj_stateSize(self.model, mujoco.mjtState.mjSTATE_FULLPHYSICS)
        )
        mujoco.mj_getState(
            self.model, template, self._initial_state, mujoco.mjtState.mjSTATE_FULLPHYSICS
        )
        self._state = np.tile(self._initial_state, (num_envs, 1))
        self._no_sensors = np.zeros((num_envs, self.model.nsensordata))
        self._tasks_changed()

    def _tasks_changed(self) -> None:
        self._params = self.mdp.task_params(self._tasks)

    def _reset_subenvs(self, idx: np.ndarray) -> np.ndarray:
        # One small draw per sub-env from its own generator, like the single env's reset.
        qpos = np.empty((len(idx), self.model.nq))
        qvel = np.empty((len(idx), self.model.nv))
        for row, i in enumerate(idx):
            qpos[row], qvel[row] = self.mdp.reset_state(self._rngs[i])
        state = np.tile(self._initial_state, (len(idx), 1))
        state[:, self._qpos] = qpos
        state[:, self._qvel] = qvel
        self._state[idx] = state
        return self.mdp.observe(qpos, qvel, self._no_sensors[: len(idx)])

    def _step_subenvs(self, idx: np.ndarray, actions: np.ndarray):
        everyone = len(idx) == self.num_envs
        state_before = self._state if everyone else self._state[idx]
        states, sensordata = self._rollout.rollout(
            self.model,
            self._datas,
            state_before,
            actions[:, None, :],
            nstep=self.frame_skip,
        )
        state = states[:, -1]
        result = self.mdp.transition(
            state_before[:, self._qpos],
            state[:, self._qpos],
            state[:, self._qvel],
            sensordata[:, -1],
            actions,
            self._params if everyone else self._params[idx],
        )
        self._state[idx] = state
        return result

    @property
    def frame_skip(self) -> int:
        return self.mdp.frame_skip

    @property
    def dt(self) -> float:
        return self.mdp.dt

    def close_extras(self, **kwargs: Any) -> None:
        self._rollout.close()
        super().close_extras(**kwargs)
