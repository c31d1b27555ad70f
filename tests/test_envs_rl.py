"""The RL task families: gymnasium API, task sampling, rewards, and batched == single env."""

from __future__ import annotations

import dataclasses
import warnings

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

from envs.ant import AntEnv, build_ant_model, contact_wrenches
from envs.checker import BENIGN_WARNINGS
from envs.generic import make_task_vector_env
from envs.half_cheetah import HalfCheetahEnv, HalfCheetahMDP
from envs.kinematics import TreeKinematics, quaternion_matrices
from envs.mujoco_task import MujocoTaskVectorEnv
from envs.navigation import Navigation2DVectorEnv
from envs.tasks import DirectionTask, GoalPositionTask, GoalVelocityTask

RL_IDS = [
    "maml/Navigation2D-v0",
    "maml/HalfCheetahVel-v0",
    "maml/HalfCheetahDir-v0",
    "maml/AntVel-v0",
    "maml/AntDir-v0",
    "maml/AntGoal-v0",
]
# (id, kwargs): every family at its default, and HalfCheetah and Ant under their other MDP.
VARIANTS = [
    *[(env_id, {}) for env_id in RL_IDS],
    ("maml/HalfCheetahVel-v0", {"paper_mdp": False}),
    ("maml/HalfCheetahDir-v0", {"paper_mdp": False}),
    ("maml/AntVel-v0", {"paper_mdp": True}),
    ("maml/AntDir-v0", {"paper_mdp": True}),
]
VARIANT_IDS = [
    f"{i.split('/')[1]}{'' if not k else '-paper' if k['paper_mdp'] else '-v5mdp'}"
    for i, k in VARIANTS]


def random_actions(space: gym.spaces.Box, shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(space.low, space.high, size=(*shape, *space.shape)).astype(np.float32)


def reward_terms(info: dict, index: int | None = None) -> float:
    """Sum of the ``reward_*`` entries of a single (index None) or vector info."""
    keys = [k for k in info if k.startswith("reward_")]
    assert keys, f"no reward terms in info: {sorted(info)}"
    return sum(float(info[k] if index is None else info[k][index]) for k in keys)


# -- gymnasium API ----------------------------------------------------------------------------
@pytest.mark.parametrize(("env_id", "kwargs"), VARIANTS, ids=VARIANT_IDS)
def test_check_env_passes_under_several_tasks(env_id, kwargs):
    env = gym.make(env_id, **kwargs)
    for task in env.unwrapped.sample_tasks(3, np.random.default_rng(1)):
        env.unwrapped.set_task(task)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(env.unwrapped, skip_render_check=True)
        serious = [str(w.message) for w in caught]
        serious = [m for m in serious if not any(b in m for b in BENIGN_WARNINGS)]
        assert not serious, serious
        assert env.unwrapped.get_task() == task
    env.close()


@pytest.mark.parametrize("env_id", RL_IDS)
def test_registered_with_batched_vector_entry_point(env_id):
    spec = gym.spec(env_id)
    assert spec.vector_entry_point is not None
    assert spec.max_episode_steps == (100 if "Navigation" in env_id else 200)
    venv = make_task_vector_env(env_id, 2)
    assert venv.metadata["autoreset_mode"] == AutoresetMode.DISABLED
    assert isinstance(venv, (MujocoTaskVectorEnv, Navigation2DVectorEnv))
    assert venv.single_observation_space == gym.make(env_id).observation_space
    venv.close()


# -- tasks ------------------------------------------------------------------------------------
def test_sample_tasks_ranges_and_reproducibility():
    def sample(env_id, n=400, seed=0):
        return gym.make(env_id).unwrapped.sample_tasks(n, np.random.default_rng(seed))

    nav = np.array([[t.x, t.y] for t in sample("maml/Navigation2D-v0")])
    assert nav.min() >= -0.5 and nav.max() <= 0.5 and nav.std() > 0.2
    cheetah_vel = np.array([t.velocity for t in sample("maml/HalfCheetahVel-v0")])
    assert cheetah_vel.min() >= 0.0 and cheetah_vel.max() <= 2.0 and cheetah_vel.std() > 0.4
    ant_vel = np.array([t.velocity for t in sample("maml/AntVel-v0")])
    assert ant_vel.min() >= 0.0 and ant_vel.max() <= 3.0 and ant_vel.max() > 2.5
    ant_goal = np.array([[t.x, t.y] for t in sample("maml/AntGoal-v0")])
    assert ant_goal.min() >= -3.0 and ant_goal.max() <= 3.0 and ant_goal.std() > 1.2
    for env_id in ("maml/HalfCheetahDir-v0", "maml/AntDir-v0"):
        directions = np.array([t.direction for t in sample(env_id)])
        assert set(directions.tolist()) == {-1, 1}
        assert 0.4 < np.mean(directions == 1) < 0.6
    assert sample("maml/AntGoal-v0", 5, seed=3) == sample("maml/AntGoal-v0", 5, seed=3)
    assert sample("maml/AntGoal-v0", 5, seed=3) != sample("maml/AntGoal-v0", 5, seed=4)


def test_tasks_are_immutable_values_and_mappings_are_accepted():
    env = gym.make("maml/HalfCheetahVel-v0").unwrapped
    task = env.sample_tasks(1, np.random.default_rng(0))[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        task.velocity = 1.0
    env.set_task(dataclasses.asdict(task))  # a task read back from a log
    assert env.get_task() == task
    with pytest.raises(TypeError, match="GoalVelocityTask"):
        env.set_task(DirectionTask(1))
    venv = make_task_vector_env("maml/HalfCheetahVel-v0", 2)
    with pytest.raises(ValueError, match="2 tasks"):
        venv.set_tasks([task])
    venv.set_tasks([task, {"velocity": 0.5}])
    assert venv.get_tasks() == [task, GoalVelocityTask(0.5)]
    venv.close()


@pytest.mark.parametrize(("env_id", "kwargs"), VARIANTS, ids=VARIANT_IDS)
def test_reward_is_the_sum_of_its_info_terms(env_id, kwargs):
    env = gym.make(env_id, **kwargs)
    env.unwrapped.set_task(env.unwrapped.sample_tasks(1, np.random.default_rng(2))[0])
    env.reset(seed=2)
    for action in random_actions(env.action_space, (20,), seed=2):
        _, reward, terminated, _, info = env.step(action)
        assert reward == pytest.approx(reward_terms(info), rel=1e-12, abs=1e-12)
        if terminated:
            break


def test_set_task_changes_the_reward_for_the_same_actions():
    for env_id, tasks in [
        ("maml/Navigation2D-v0", [GoalPositionTask(0.3, 0.1), GoalPositionTask(-0.2, 0.4)]),
        ("maml/HalfCheetahVel-v0", [GoalVelocityTask(0.2), GoalVelocityTask(1.8)]),
        ("maml/HalfCheetahDir-v0", [DirectionTask(1), DirectionTask(-1)]),
        ("maml/AntVel-v0", [GoalVelocityTask(0.5), GoalVelocityTask(2.5)]),
        ("maml/AntDir-v0", [DirectionTask(1), DirectionTask(-1)]),
        ("maml/AntGoal-v0", [GoalPositionTask(2.0, 2.0), GoalPositionTask(-2.0, 1.0)]),
    ]:
        env = gym.make(env_id)
        actions = random_actions(env.action_space, (5,), seed=0)
        returns = []
        for task in tasks:
            env.unwrapped.set_task(task)
            env.reset(seed=0)
            returns.append([env.step(a)[1] for a in actions])
        assert not np.allclose(returns[0], returns[1]), env_id


# -- batched == single ------------------------------------------------------------------------
def compare_batched_with_single(env_id, kwargs, num_envs, steps, seed, action_scale=1.0):
    """Step the batched env and num_envs single envs alike; return the done step of each."""
    single = gym.make(env_id, **kwargs)
    venv = make_task_vector_env(env_id, num_envs, **kwargs)
    tasks = venv.sample_tasks(num_envs, np.random.default_rng(seed))
    actions = action_scale * random_actions(single.action_space, (steps, num_envs), seed)
    venv.set_tasks(tasks)
    obs, _ = venv.reset(seed=seed)
    batched = [venv.step(a) for a in actions]
    done_steps = []
    for i, task in enumerate(tasks):
        single.unwrapped.set_task(task)
        obs_i, _ = single.reset(seed=seed + i)
        np.testing.assert_allclose(obs[i], obs_i, rtol=1e-6, atol=1e-7)
        done_at = None
        for t in range(steps):
            obs_i, reward, terminated, truncated, info = single.step(actions[t, i])
            b_obs, b_rew, b_term, b_trunc, b_info = batched[t]
            np.testing.assert_allclose(b_obs[i], obs_i, rtol=1e-6, atol=1e-7)
            assert b_rew[i] == pytest.approx(reward, rel=1e-9, abs=1e-9)
            assert b_term[i] == terminated and b_trunc[i] == truncated
            for key, value in info.items():
                assert b_info[f"_{key}"][i]
                assert b_info[key][i] == pytest.approx(value, rel=1e-9, abs=1e-9), key
            if terminated or truncated:
                done_at = t
                break
        done_steps.append(done_at)
        if done_at is not None:  # the batched sub-env is frozen from then on
            for b_obs, b_rew, b_term, b_trunc, b_info in batched[done_at + 1 :]:
                np.testing.assert_array_equal(b_obs[i], obs_i)
                assert b_rew[i] == 0.0 and (b_term[i] or b_trunc[i])
                assert not any(b_info[k][i] for k in b_info if k.startswith("_"))
    venv.close()
    single.close()
    return done_steps


@pytest.mark.parametrize(("env_id", "kwargs"), VARIANTS, ids=VARIANT_IDS)
def test_batched_env_reproduces_the_single_env(env_id, kwargs):
    compare_batched_with_single(env_id, kwargs, num_envs=3, steps=40, seed=7)


@pytest.mark.parametrize("env_id", ["maml/AntVel-v0", "maml/AntGoal-v0"])
def test_batched_ant_matches_through_early_terminations(env_id):
    # Strong random kicks make the ant jump out of its healthy height range at different steps.
    done = compare_batched_with_single(env_id, {}, num_envs=4, steps=60, seed=5, action_scale=3.0)
    terminated_early = [t for t in done if t is not None and t < 59]
    assert len(set(terminated_early)) >= 2, done


def test_batched_navigation_truncates_like_time_limit():
    done = compare_batched_with_single(
        "maml/Navigation2D-v0", {"goal_tolerance": None}, num_envs=2, steps=103, seed=1
    )
    assert done == [99, 99]  # the 100th step is truncated, then the sub-envs are frozen


def test_reset_mask_and_per_sub_env_seeds():
    venv = make_task_vector_env("maml/HalfCheetahVel-v0", 3)
    first, _ = venv.reset(seed=10)
    venv.step(np.zeros((3, 6), dtype=np.float32))
    stepped = venv.step(np.ones((3, 6), dtype=np.float32))[0]
    mask = np.array([False, True, False])
    obs, _ = venv.reset(seed=[None, 11, None], options={"reset_mask": mask})
    np.testing.assert_array_equal(obs[mask], first[mask])  # sub-env 1 seeded 11 again
    np.testing.assert_array_equal(obs[~mask], stepped[~mask])  # the others untouched
    state = venv.rng_state()
    a, _ = venv.reset()
    venv.set_rng_state(state)
    b, _ = venv.reset()
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="reset_mask"):
        venv.reset(options={"reset_mask": np.ones(2, dtype=bool)})
    venv.close()


# -- semantics of the families ----------------------------------------------------------------
def test_navigation_clips_actions_rewards_distance_and_stops_at_the_goal():
    env = gym.make("maml/Navigation2D-v0").unwrapped
    env.set_task(GoalPositionTask(0.25, 0.0))
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, [0.0, 0.0])
    # Normalised actions (the paper's MDP): [-1, 1] is scaled to a displacement of 0.1.
    obs, reward, terminated, _, _ = env.step(np.array([5.0, 0.0]))  # clipped to 1 -> 0.1
    np.testing.assert_allclose(obs, [0.1, 0.0])
    assert reward == pytest.approx(-0.15) and not terminated
    env.step(np.array([1.0, 0.0]))
    obs, reward, terminated, _, _ = env.step(np.array([0.5, 0.05]))
    assert terminated and reward == pytest.approx(-0.005)


def test_navigation_raw_actions_are_clipped_to_the_velocity_bound():
    env = gym.make("maml/Navigation2D-v0", normalized_actions=False).unwrapped
    assert env.action_space.high.tolist() == pytest.approx([0.1, 0.1])
    env.set_task(GoalPositionTask(0.25, 0.0))
    env.reset(seed=0)
    obs, _, _, _, _ = env.step(np.array([5.0, 0.0]))  # clipped to 0.1
    np.testing.assert_allclose(obs, [0.1, 0.0])
    obs, _, _, _, _ = env.step(np.array([0.05, 0.0]))  # inside the bound: unscaled
    np.testing.assert_allclose(obs, [0.15, 0.0])


def test_planar_kinematics_match_mujoco_subtree_com_and_velocity():
    mdp = HalfCheetahMDP("velocity", paper_mdp=True)
    model, data = mdp.model, mujoco.MjData(mdp.model)
    rng = np.random.default_rng(0)
    qpos, qvel = rng.normal(size=(6, model.nq)), rng.normal(size=(6, model.nv))
    com, velocity = mdp.kinematics(qpos, qvel)
    for i in range(6):
        data.qpos[:], data.qvel[:] = qpos[i], qvel[i]
        mujoco.mj_forward(model, data)
        mujoco.mj_subtreeVel(model, data)
        np.testing.assert_allclose(com[i], data.subtree_com[1], atol=1e-12)
        np.testing.assert_allclose(velocity[i], data.subtree_linvel[1], atol=1e-12)


def test_half_cheetah_paper_and_v5_mdps():
    paper = gym.make("maml/HalfCheetahVel-v0").unwrapped
    v5 = gym.make("maml/HalfCheetahVel-v0", paper_mdp=False).unwrapped
    assert (paper.frame_skip, paper.dt, paper.observation_space.shape) == (1, 0.01, (20,))
    assert (v5.frame_skip, v5.dt, v5.observation_space.shape) == (5, 0.05, (17,))
    paper.reset(seed=0)
    obs, _, _, _, info = paper.step(np.full(6, 0.5, dtype=np.float32))
    # Paper observation/velocity: the torso subtree's com and com velocity at the new state.
    data = mujoco.MjData(paper.model)
    data.qpos[:], data.qvel[:] = paper.data.qpos, paper.data.qvel
    mujoco.mj_forward(paper.model, data)
    mujoco.mj_subtreeVel(paper.model, data)
    np.testing.assert_allclose(obs[-3:], data.subtree_com[1], rtol=1e-6, atol=1e-6)
    assert info["x_velocity"] == pytest.approx(data.subtree_linvel[1, 0], abs=1e-12)
    np.testing.assert_allclose(obs[:17], np.r_[data.qpos[1:], data.qvel], rtol=1e-6, atol=1e-6)


def test_tree_kinematics_match_mujoco_subtree_com_and_velocity():
    model = build_ant_model()[0]
    data = mujoco.MjData(model)
    kinematics, torso = TreeKinematics(model), model.body("torso").id
    rng = np.random.default_rng(0)
    qpos = model.qpos0 + rng.uniform(-0.7, 0.7, size=(6, model.nq))
    qvel = rng.normal(size=(6, model.nv))
    com, velocity = kinematics(qpos, qvel)
    for i in range(6):
        data.qpos[:], data.qvel[:] = qpos[i], qvel[i]
        mujoco.mj_forward(model, data)
        mujoco.mj_subtreeVel(model, data)
        np.testing.assert_allclose(com[i], data.subtree_com[torso], atol=1e-12)
        np.testing.assert_allclose(velocity[i], data.subtree_linvel[torso], atol=1e-12)
        np.testing.assert_allclose(quaternion_matrices(qpos[i : i + 1, 3:7])[0],
                                   data.xmat[torso].reshape(3, 3), atol=1e-12)


def test_ant_paper_mdp_is_rllabs():
    paper = gym.make("maml/AntVel-v0", paper_mdp=True).unwrapped
    v5 = gym.make("maml/AntVel-v0").unwrapped
    assert (paper.frame_skip, paper.dt, paper.observation_space.shape) == (1, 0.02, (125,))
    assert (v5.frame_skip, v5.dt, v5.observation_space.shape) == (5, 0.05, (105,))
    np.testing.assert_allclose(paper.model.geom_solimp[:, :3],
                               [[0.8, 0.8, 0.01]] * paper.model.ngeom)
    paper.set_task(GoalVelocityTask(1.5))
    obs, _ = paper.reset(seed=0)
    # rllab's init_qpos: torso at 0.55 m, ankles bent, plus 0.01 N(0, 1).
    assert abs(obs[2] - 0.55) < 0.05 and abs(obs[8] - 1.0) < 0.05 and abs(obs[10] + 1.0) < 0.05
    obs, _, _, _, info = paper.step(np.full(8, 0.3, dtype=np.float32))
    data = mujoco.MjData(paper.model)
    data.qpos[:], data.qvel[:] = paper.data.qpos, paper.data.qvel
    mujoco.mj_forward(paper.model, data)
    mujoco.mj_subtreeVel(paper.model, data)
    torso = paper.model.body("torso").id
    # Velocity and observation at the new state: the torso subtree's com velocity, qpos, qvel,
    # the world's zero contact row, the torso's rotation and its subtree's com.
    assert info["x_velocity"] == pytest.approx(data.subtree_linvel[torso, 0], abs=1e-12)
    assert info["reward_forward"] == pytest.approx(-abs(info["x_velocity"] - 1.5) + 1.0)
    np.testing.assert_allclose(obs[:29], np.r_[data.qpos, data.qvel], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(obs[29:35], 0.0)
    np.testing.assert_allclose(obs[-12:-3], data.xmat[torso], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(obs[-3:], data.subtree_com[torso], rtol=1e-6, atol=1e-6)


def test_half_cheetah_v5_mdp_follows_gymnasium_half_cheetah():
    ours = gym.make("maml/HalfCheetahDir-v0", paper_mdp=False).unwrapped
    theirs = gym.make("HalfCheetah-v5").unwrapped
    ours.set_task(DirectionTask(1))
    obs_a, _ = ours.reset(seed=3)
    obs_b, _ = theirs.reset(seed=3)
    np.testing.assert_allclose(obs_a, obs_b, rtol=1e-6, atol=1e-6)
    for action in random_actions(ours.action_space, (10,), seed=3):
        obs_a, _, _, _, info_a = ours.step(action)
        obs_b, _, _, _, info_b = theirs.step(action)
        # Same model and integration; only the solver warm start differs (zeroed per step here).
        np.testing.assert_allclose(obs_a, obs_b, rtol=1e-4, atol=1e-4)
        assert info_a["x_velocity"] == pytest.approx(info_b["x_velocity"], abs=1e-4)


def test_ant_follows_gymnasium_ant_and_rebuilds_cfrc_ext_from_sensors():
    ours = AntEnv("direction", include_cfrc_ext_in_observation=False)
    theirs = gym.make("Ant-v5", include_cfrc_ext_in_observation=False).unwrapped
    ours.set_task(DirectionTask(1))
    np.testing.assert_allclose(ours.reset(seed=4)[0], theirs.reset(seed=4)[0], atol=1e-6)
    actions = random_actions(ours.action_space, (15,), seed=4)
    for action in actions:
        obs_a, *_ = ours.step(action)
        obs_b, *_ = theirs.step(action)
        np.testing.assert_allclose(obs_a, obs_b, rtol=1e-4, atol=1e-4)
    # The contact sensors give MuJoCo's cfrc_ext of the state at the start of the last substep.
    model, data = ours.model, ours.data
    checked = 0
    for action in actions:
        data.ctrl[:] = action
        mujoco.mj_step(model, data, nstep=ours.frame_skip - 1)
        probe = mujoco.MjData(model)
        probe.qpos[:], probe.qvel[:], probe.ctrl[:] = data.qpos, data.qvel, action
        mujoco.mj_forward(model, probe)
        mujoco.mj_rnePostConstraint(model, probe)
        mujoco.mj_step(model, data)
        wrenches = contact_wrenches(data.sensordata[None], ours.mdp.contact_bodies)[0]
        np.testing.assert_allclose(wrenches, probe.cfrc_ext[1:], rtol=1e-9, atol=1e-9)
        checked += bool(np.any(probe.cfrc_ext[1:]))
    assert checked >= 3  # the feet touched the floor in several of these states


def test_ant_terminates_outside_the_healthy_height_and_freezes_in_the_batch():
    venv = make_task_vector_env("maml/AntDir-v0", 2)
    venv.set_tasks([DirectionTask(1), DirectionTask(-1)])
    venv.reset(seed=0)
    venv._state[0, venv._qpos.start + 2] = 1.5  # lift sub-env 0's torso far too high
    _, reward, terminated, _, info = venv.step(np.zeros((2, 8), dtype=np.float32))
    assert terminated.tolist() == [True, False]
    assert reward[0] == pytest.approx(reward_terms(info, 0))
    _, reward, terminated, _, info = venv.step(np.ones((2, 8), dtype=np.float32))
    assert reward[0] == 0.0 and terminated[0] and not info["_reward_forward"][0]
    assert info["_reward_forward"][1]
    venv.close()


def test_single_env_pickles_with_its_arguments():
    import pickle

    env = HalfCheetahEnv("velocity", paper_mdp=False, velocity_range=(0.5, 1.0))
    clone = pickle.loads(pickle.dumps(env))
    assert clone.frame_skip == 5 and clone.mdp.velocity_range == (0.5, 1.0)


def test_physics_threads_do_not_change_the_transitions():
    actions = random_actions(gym.spaces.Box(-1, 1, (8,)), (15, 5), seed=0)
    runs = []
    for nthread in (0, 1, 2):
        venv = make_task_vector_env("maml/AntGoal-v0", 5, nthread=nthread)
        venv.set_tasks(venv.sample_tasks(5, np.random.default_rng(0)))
        obs = [venv.reset(seed=0)[0]] + [venv.step(a)[0] for a in actions]
        runs.append(np.stack(obs))
        venv.close()
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(runs[0], runs[2])


@pytest.mark.parametrize("env_id", ["maml/HalfCheetahVel-v0", "maml/AntGoal-v0"])
def test_reset_info_carries_the_start_position(env_id):
    env = gym.make(env_id)
    _, info = env.reset(seed=3)
    data = env.unwrapped.data
    assert info["x_position"] == data.qpos[0]
    if env_id.startswith("maml/Ant"):
        assert info["y_position"] == data.qpos[1]
    else:
        assert "y_position" not in info


def test_every_ant_config_runs_the_papers_mdp():
    # On Ant-v5's MDP one inner step did not adapt (docs/results/ant.md); the configs take the
    # paper's, as envs/ant.py says. ant_goal.yaml once did not.
    from pathlib import Path

    from maml_rl.config import load_config

    configs = sorted(Path(__file__).resolve().parents[1].glob("configs/ant_*.yaml"))
    assert len(configs) == 3
    for path in configs:
        assert load_config(path).env.kwargs.get("paper_mdp") is True, path.name
