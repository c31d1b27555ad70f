"""The bandit and tabular-MDP families: gymnasium's checker, batched == single, their reference
returns against Monte Carlo and hand computation, bad tasks refused, and a short MAML run that
adapts (post-adaptation return above pre-adaptation)."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from envs.bandit import BanditTask, ucb_pull_rewards
from envs.checker import BENIGN_WARNINGS
from envs.generic import make_task_vector_env
from envs.tabular_mdp import TabularMDPTask, finite_horizon_values, mdp_arrays
from maml_rl.config import load_config
from maml_rl.evaluation import read_results
from maml_rl.logger import read_metrics
from maml_rl.trainer import Trainer

FAMILIES = [("maml/Bandit-v0", {"arms": 5}), ("maml/Bandit-v0", {"arms": 10}),
            ("maml/TabularMDP-v0", {}), ("maml/TabularMDP-v0", {"states": 3, "actions": 2})]
IDS = ["bandit5", "bandit10", "mdp10x5", "mdp3x2"]


@pytest.mark.parametrize(("env_id", "kwargs"), FAMILIES, ids=IDS)
def test_check_env_passes_under_several_tasks(env_id, kwargs):
    env = gym.make(env_id, **kwargs).unwrapped
    for task in env.sample_tasks(3, np.random.default_rng(1)):
        env.set_task(task)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(env, skip_render_check=True)
        serious = [str(w.message) for w in caught
                   if not any(b in str(w.message) for b in BENIGN_WARNINGS)]
        assert not serious, serious
        assert env.get_task() == task


@pytest.mark.parametrize(("env_id", "kwargs"), FAMILIES, ids=IDS)
def test_batched_env_reproduces_the_single_env(env_id, kwargs):
    num_envs, steps, seed = 4, 12, 3
    single = gym.make(env_id, **kwargs)
    venv = make_task_vector_env(env_id, num_envs, max_episode_steps=10, **kwargs)
    tasks = single.unwrapped.sample_tasks(num_envs, np.random.default_rng(seed))
    actions = np.random.default_rng(seed).integers(0, single.action_space.n,
                                                   size=(steps, num_envs))
    venv.set_tasks(tasks)
    obs, _ = venv.reset(seed=seed)
    batched = [venv.step(a) for a in actions]
    for i, task in enumerate(tasks):
        single.unwrapped.set_task(task)
        obs_i, _ = single.reset(seed=seed + i)
        np.testing.assert_array_equal(obs[i], obs_i)
        for t in range(10):  # the registered horizon: then the sub-env is truncated
            obs_i, reward, terminated, truncated, info = single.step(actions[t, i])
            b_obs, b_rew, b_term, b_trunc, b_info = batched[t]
            np.testing.assert_array_equal(b_obs[i], obs_i)
            assert b_rew[i] == reward and b_term[i] == terminated
            assert b_trunc[i] == truncated == (t == 9)
            assert all(b_info[k][i] == v for k, v in info.items())
        for _, b_rew, _, b_trunc, _ in batched[10:]:  # frozen after its horizon
            assert b_rew[i] == 0.0 and b_trunc[i]
    venv.close()


def test_bandit_pays_each_arm_with_its_probability_and_references_bracket():
    env = gym.make("maml/Bandit-v0", arms=3).unwrapped
    task = BanditTask((0.1, 0.5, 0.9))
    env.set_task(task)
    env.reset(seed=0)
    for arm, p in enumerate(task.means):
        rewards = [env.step(arm)[1] for _ in range(4000)]
        assert set(rewards) <= {0.0, 1.0}
        assert np.mean(rewards) == pytest.approx(p, abs=0.03)
    refs = env.reference_returns([task], horizon=10)
    assert refs["uniform"][0] == pytest.approx(5.0) and refs["best arm"][0] == pytest.approx(9.0)
    assert refs["uniform"][0] < refs["UCB1"][0] < refs["best arm"][0]
    # UCB1 concentrates on the best arm as the pulls grow.
    long_run = ucb_pull_rewards(np.array(task.means), 3000, np.random.default_rng(0))
    assert long_run > 0.85


def test_tabular_values_match_hand_computation_and_monte_carlo():
    # Two states, two actions: action a moves to state a. Rewards r[s, a]: state 1 pays 2 for
    # leaving (action 0) and 1 for staying.
    p = np.zeros((1, 2, 2, 2))
    p[0, :, 0, 0] = 1.0
    p[0, :, 1, 1] = 1.0
    r = np.array([[[0.0, 0.5], [2.0, 1.0]]])
    optimal = finite_horizon_values(p, r, 3, greedy=True)[0]
    # By hand, values with 1, 2, 3 steps left: V1 = (0.5, 2); V2 = (max(0 + 0.5, 0.5 + 2),
    # max(2 + 0.5, 1 + 2)) = (2.5, 3); V3 = (max(0 + 2.5, 0.5 + 3), max(2 + 2.5, 1 + 3)) =
    # (3.5, 4.5).
    np.testing.assert_allclose(optimal, [3.5, 4.5])
    uniform = finite_horizon_values(p, r, 1, greedy=False)[0]
    np.testing.assert_allclose(uniform, [0.25, 1.5])
    # Monte Carlo: uniformly random actions in a sampled MDP reach the computed value.
    env = gym.make("maml/TabularMDP-v0", states=4, actions=3).unwrapped
    task = env.sample_tasks(1, np.random.default_rng(5))[0]
    env.set_task(task)
    rng = np.random.default_rng(0)
    env.reset(seed=1)
    returns = []
    for _ in range(4000):
        env.reset()
        returns.append(sum(env.step(int(rng.integers(3)))[1] for _ in range(10)))
    expected = env.reference_returns([task], 10)["uniform"][0]
    assert np.mean(returns) == pytest.approx(expected, abs=4 * np.std(returns) / np.sqrt(4000))
    # The transitions are distributions.
    transitions = mdp_arrays([task], 4, 3)[0]
    np.testing.assert_allclose(transitions.sum(-1), 1.0)


def test_a_bandit_task_of_the_wrong_size_is_refused_in_one_line():
    task = BanditTask((0.5, 0.5))
    env = gym.make("maml/Bandit-v0", arms=5).unwrapped
    with pytest.raises(ValueError, match="needs 5 probabilities, got 2"):
        env.set_task(task)
    venv = make_task_vector_env("maml/Bandit-v0", 2, arms=5)
    with pytest.raises(ValueError, match="needs 5 probabilities, got 2"):
        venv.set_tasks([task, task])


def test_an_mdp_task_is_its_seed():
    env = gym.make("maml/TabularMDP-v0", states=4, actions=3).unwrapped
    a, b = env.sample_tasks(2, np.random.default_rng(0))
    assert a == TabularMDPTask(a.seed) and a != b
    pa, ra = mdp_arrays([a, a, b], 4, 3)
    np.testing.assert_array_equal(pa[0], pa[1])
    assert not np.array_equal(pa[0], pa[2]) and ra.shape == (3, 4, 3)
    env.set_task({"seed": a.seed})  # a task read back from results.json
    assert env.get_task() == a


def test_a_short_bandit_run_adapts_and_plots_its_references(tmp_path):
    config = load_config("configs/bandit_k5.yaml", [
        "training.iterations=12", "sampling.meta_batch_size=10", "evaluation.num_tasks=40",
        "evaluation.steps=1", "logging.progress=false", "device=cpu", "threads=1"])
    trainer = Trainer(config, run_dir=tmp_path / "run")
    trainer.train()
    rows = read_metrics(tmp_path / "run")
    late = rows[-4:]
    assert np.mean([float(r["return/post_adaptation"]) for r in late]) > \
        np.mean([float(r["return/pre_adaptation"]) for r in late]) + 0.5
    curves = {c.method: c for c in read_results(tmp_path / "run" / "eval" / "results.json")}
    assert set(curves) == {"maml", "uniform (reference)", "UCB1 (reference)",
                           "best arm (reference)"}
    maml = curves["maml"].mean
    assert maml[1] > maml[0] + 0.5
    assert curves["best arm (reference)"].flat and maml[1] < curves["best arm (reference)"].mean[0]
