"""Kinematics of planar articulated bodies, in numpy, batched over many states.

:class:`PlanarKinematics` gives the centre of mass of a body's subtree and its velocity from
``qpos``/``qvel`` of a model whose joints are slides along x and z and hinges about y (e.g.
HalfCheetah): what rllab's ``com_subtree``/``get_body_comvel`` read from MuJoCo after a
``forward()``, without that extra MuJoCo call per step. Reusable by any planar robot; checked
against MuJoCo's ``subtree_com``/``subtree_linvel`` in the tests.
"""

from __future__ import annotations

import mujoco
import numpy as np

_SLIDE = int(mujoco.mjtJoint.mjJNT_SLIDE)
_HINGE = int(mujoco.mjtJoint.mjJNT_HINGE)


class PlanarKinematics:
    """Centre of mass and its velocity of a planar (x-z) kinematic tree, batched in numpy.

    Equivalent to MuJoCo's ``subtree_com`` and ``subtree_linvel`` of ``root_body`` after
    ``mj_forward``, for models like HalfCheetah: ``root_body`` hangs from the world by slide joints
    (then hinges), every other joint is a hinge about y at its body's origin, and bodies are
    neither rotated nor out of the x-z plane (the constructor checks this).

    In such a tree every body frame's angle is a linear function of ``qpos``, and the mass-weighted
    sum of centres of mass is ``M * root_origin + sum_a R(angle_a) u_a`` with constant vectors
    ``u_a`` (body a's own mass times its inertial offset, plus each child's subtree mass times the
    child's offset). So a call is a cos, a sin and a few small matrix products.
    """

    def __init__(self, model: mujoco.MjModel, root_body: str = "torso") -> None:
        root = model.body(root_body).id
        self._check_planar(model, root)
        bodies = [b for b in range(1, model.nbody) if self._in_subtree(model, b, root)]
        column = {b: k for k, b in enumerate(bodies)}
        nb = len(bodies)
        # angle = (qpos - qpos0) @ angle_of_qpos: a body's angle is its parent's plus its hinges'.
        self._angle_of_qpos = np.zeros((model.nq, nb))
        self._rate_of_qvel = np.zeros((model.nv, nb))
        # The root origin (x, z) moves along the root's slides.
        self._root_of_qpos = np.zeros((model.nq, 2))
        self._root_of_qvel = np.zeros((model.nv, 2))
        for b in bodies:
            parent = int(model.body_parentid[b])
            if parent in column:  # parents come before children in MuJoCo's body order
                self._angle_of_qpos[:, column[b]] = self._angle_of_qpos[:, column[parent]]
                self._rate_of_qvel[:, column[b]] = self._rate_of_qvel[:, column[parent]]
            for j in np.flatnonzero(model.jnt_bodyid == b):
                qadr, dadr, axis = model.jnt_qposadr[j], model.jnt_dofadr[j], model.jnt_axis[j]
                if model.jnt_type[j] == _HINGE:
                    self._angle_of_qpos[qadr, column[b]] += axis[1]
                    self._rate_of_qvel[dadr, column[b]] += axis[1]
                else:
                    self._root_of_qpos[qadr] = axis[0], axis[2]
                    self._root_of_qvel[dadr] = axis[0], axis[2]
        self._qpos0 = model.qpos0.copy()
        self._root_offset = np.array([model.body_pos[root, 0], model.body_pos[root, 2]])
        subtree_mass = {b: 0.0 for b in bodies}
        for b in reversed(bodies):
            subtree_mass[b] += float(model.body_mass[b])
            if b != root:
                subtree_mass[int(model.body_parentid[b])] += subtree_mass[b]
        u = np.zeros((nb, 2))
        for b in bodies:
            u[column[b]] += model.body_mass[b] * model.body_ipos[b, [0, 2]]
            if b != root:
                u[column[int(model.body_parentid[b])]] += (
                    subtree_mass[b] * model.body_pos[b, [0, 2]]
                )
        u /= subtree_mass[root]
        # R(a) (x, z) = (cos a x + sin a z, -sin a x + cos a z): the weights of cos and of sin.
        self._u_cos = np.stack([u[:, 0], u[:, 1]], axis=1)
        self._u_sin = np.stack([u[:, 1], -u[:, 0]], axis=1)

    @staticmethod
    def _in_subtree(model: mujoco.MjModel, body: int, root: int) -> bool:
        while body not in (0, root):
            body = int(model.body_parentid[body])
        return body == root

    @staticmethod
    def _check_planar(model: mujoco.MjModel, root: int) -> None:
        problems = []
        if model.body_parentid[root] != 0:
            problems.append("the root body is not a child of the world")
        if not np.allclose(model.body_quat[1:], [1.0, 0.0, 0.0, 0.0]):
            problems.append("bodies are rotated")
        if np.any(model.body_pos[:, 1] != 0) or np.any(np.abs(model.body_ipos[:, 1]) > 1e-12):
            problems.append("bodies leave the x-z plane")
        if np.any(model.jnt_pos != 0):
            problems.append("joints are off their body's origin")
        hinge_seen = set()
        for j in range(model.njnt):
            axis, body = model.jnt_axis[j], int(model.jnt_bodyid[j])
            if model.jnt_type[j] == _HINGE:
                hinge_seen.add(body)
                if axis[0] or axis[2]:
                    problems.append(f"hinge {j} is not about the y axis")
            elif model.jnt_type[j] == _SLIDE:
                if body != root or body in hinge_seen or axis[1]:
                    problems.append(f"slide {j} is not an in-plane root slide before the hinges")
            else:
                problems.append(f"joint {j} is neither slide nor hinge")
        if problems:
            raise ValueError("PlanarKinematics needs a planar model: " + "; ".join(problems))

    def __call__(self, qpos: np.ndarray, qvel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(com, com_velocity)``, each ``(batch, 3)`` (the y entries are zero)."""
        displacement = qpos - self._qpos0
        angle = displacement @ self._angle_of_qpos
        rate = qvel @ self._rate_of_qvel
        cos, sin = np.cos(angle), np.sin(angle)
        com = self._root_offset + displacement @ self._root_of_qpos
        com += cos @ self._u_cos + sin @ self._u_sin
        # d cos a = -sin a da, d sin a = cos a da.
        velocity = (
            qvel @ self._root_of_qvel + (cos * rate) @ self._u_sin - (sin * rate) @ self._u_cos
        )
        zero = np.zeros((len(qpos), 1))
        return np.hstack([com[:, :1], zero, com[:, 1:]]), np.hstack(
            [velocity[:, :1], zero, velocity[:, 1:]]
        )


_FREE = int(mujoco.mjtJoint.mjJNT_FREE)


def quaternion_matrices(quat: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(batch, 3, 3)`` of quaternions ``(batch, 4)`` (w, x, y, z), which
    are normalised first, as MuJoCo normalises a free joint's quaternion."""
    q = quat / np.linalg.norm(quat, axis=-1, keepdims=True)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def _axis_angle_matrices(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rotations ``(batch, 3, 3)`` by ``angle`` (batch) about the unit ``axis`` (Rodrigues)."""
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    s, c = np.sin(angle)[:, None, None], np.cos(angle)[:, None, None]
    return np.eye(3) + s * k + (1 - c) * (k @ k)


class TreeKinematics:
    """Centre of mass of a floating body's subtree and its velocity, batched in numpy: what
    rllab's ``get_body_com``/``get_body_comvel`` read from MuJoCo after a ``forward()`` (the
    Ant of the MAML paper), for trees like Ant: the root hangs from the world by a free joint,
    every other joint is a hinge at its body's origin (the constructor checks this).

    Forward kinematics down the tree (body frames ``R_b = R_parent Q_b Rot(axis, q)``, origins
    ``x_b = x_parent + R_parent p_b``) and the same for velocities (``w_b = w_parent + R_b axis
    dq``, ``v_b = v_parent + w_parent x (x_b - x_parent)``); the result is the mass-weighted
    mean of the bodies' centres of mass and of their velocities. Checked against MuJoCo's
    ``subtree_com``/``subtree_linvel`` in the tests.
    """

    def __init__(self, model: mujoco.MjModel, root_body: str = "torso") -> None:
        self.root = model.body(root_body).id
        problems = []
        if model.body_parentid[self.root] != 0:
            problems.append("the root body is not a child of the world")
        self.bodies = [b for b in range(1, model.nbody)
                       if PlanarKinematics._in_subtree(model, b, self.root)]
        self.hinges: dict[int, list[int]] = {b: [] for b in self.bodies}
        for j in range(model.njnt):
            body = int(model.jnt_bodyid[j])
            if body not in self.hinges:
                continue
            if model.jnt_type[j] == _FREE:
                if body != self.root:
                    problems.append(f"free joint {j} is not on the root body")
                self.free_qpos, self.free_dof = int(model.jnt_qposadr[j]), int(model.jnt_dofadr[j])
            elif model.jnt_type[j] == _HINGE:
                if np.any(model.jnt_pos[j] != 0):
                    problems.append(f"hinge {j} is off its body's origin")
                self.hinges[body].append(j)
            else:
                problems.append(f"joint {j} is neither free nor hinge")
        if not hasattr(self, "free_qpos"):
            problems.append("the root body has no free joint")
        if problems:
            raise ValueError("TreeKinematics needs a floating tree of hinges: "
                             + "; ".join(problems))
        self.model = model
        self.mass = np.array([model.body_mass[b] for b in self.bodies])
        self.body_rotation = {b: quaternion_matrices(model.body_quat[b][None])[0]
                              for b in self.bodies}

    def __call__(self, qpos: np.ndarray, qvel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(com, com_velocity)`` of the root's subtree, each ``(batch, 3)``."""
        m = self.model
        a, d = self.free_qpos, self.free_dof
        frame: dict[int, tuple[np.ndarray, ...]] = {}
        com = np.zeros((len(qpos), 3))
        velocity = np.zeros((len(qpos), 3))
        for k, b in enumerate(self.bodies):  # parents come before children in MuJoCo's order
            if b == self.root:
                rotation = quaternion_matrices(qpos[:, a + 3 : a + 7])
                origin, linear = qpos[:, a : a + 3], qvel[:, d : d + 3]
                angular = np.einsum("nij,nj->ni", rotation, qvel[:, d + 3 : d + 6])
            else:
                p_rot, p_origin, p_linear, p_angular = frame[int(m.body_parentid[b])]
                origin = p_origin + p_rot @ m.body_pos[b]
                linear = p_linear + np.cross(p_angular, origin - p_origin)
                rotation, angular = p_rot @ self.body_rotation[b], p_angular
                for j in self.hinges[b]:
                    axis = m.jnt_axis[j]
                    angular = angular + (rotation @ axis) * qvel[:, m.jnt_dofadr[j], None]
                    rotation = rotation @ _axis_angle_matrices(
                        axis, qpos[:, m.jnt_qposadr[j]] - m.qpos0[m.jnt_qposadr[j]])
            frame[b] = (rotation, origin, linear, angular)
            offset = rotation @ m.body_ipos[b]
            com += self.mass[k] * (origin + offset)
            velocity += self.mass[k] * (linear + np.cross(angular, offset))
        total = self.mass.sum()
        return com / total, velocity / total
