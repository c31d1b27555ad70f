"""The sinusoid family as a one-step env: contract, check_env, batched == single."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from envs.sinusoid import SinusoidEnv, SinusoidTask, SinusoidVectorEnv


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_check_env_over_several_tasks():
    env = gym.make("maml/Sinusoid-v0")
    for task in env.unwrapped.sample_tasks(3, np.random.default_rng(0)):
        env.unwrapped.set_task(task)
        check_env(env.unwrapped, skip_render_check=True)


def test_one_step_contract():
    env = SinusoidEnv()
    env.set_task(SinusoidTask(amplitude=2.0, phase=0.5))
    x, _ = env.reset(seed=3)
    _, reward, terminated, truncated, info = env.step(np.array([0.25], dtype=np.float32))
    y = 2.0 * np.sin(x - 0.5)
    np.testing.assert_allclose(info["target"], y, rtol=1e-6)
    assert reward == pytest.approx(-float((0.25 - y[0]) ** 2), rel=1e-5)
    assert terminated and not truncated


def test_sample_tasks_follow_the_paper_ranges():
    tasks = SinusoidEnv().sample_tasks(2000, np.random.default_rng(0))
    amplitudes = np.array([t.amplitude for t in tasks])
    phases = np.array([t.phase for t in tasks])
    assert 0.1 <= amplitudes.min() and amplitudes.max() <= 5.0
    assert 0.0 <= phases.min() and phases.max() <= np.pi
    assert amplitudes.std() > 1.0  # spread over the range, not a constant


def test_batched_env_matches_single_env():
    rng = np.random.default_rng(1)
    tasks = SinusoidEnv().sample_tasks(6, rng)
    vec = gym.make_vec("maml/Sinusoid-v0", num_envs=6, vectorization_mode="vector_entry_point")
    assert isinstance(vec, SinusoidVectorEnv)
    vec.set_tasks(tasks)
    obs, _ = vec.reset(seed=100)
    for episode in range(4):
        if episode:
            obs, _ = vec.reset()
        actions = rng.uniform(-3, 3, size=(6, 1)).astype(np.float32)
        _, rewards, terminated, _, info = vec.step(actions)
        assert terminated.all()
        for i, task in enumerate(tasks):
            single = SinusoidEnv()
            single.set_task(task)
            x, _ = single.reset(seed=100 + i)
            for _ in range(episode):
                x, _ = single.reset()
            _, r, _, _, single_info = single.step(actions[i])
            np.testing.assert_allclose(obs[i], x)
            np.testing.assert_allclose(rewards[i], r, rtol=1e-6)
            np.testing.assert_allclose(info["target"][i], single_info["target"], rtol=1e-6)


def test_set_tasks_checks_length():
    vec = SinusoidVectorEnv(num_envs=3)
    with pytest.raises(ValueError, match="needs 3 tasks, got 2"):
        vec.set_tasks([SinusoidTask(1.0, 0.0)] * 2)


def test_a_non_finite_target_is_named_with_env_and_task(monkeypatch):
    from maml_rl.meta_updates.base import NonFiniteError
    from maml_rl.sampling import SupervisedSampler

    sampler = SupervisedSampler("maml/Sinusoid-v0", {}, num_tasks=2, shots=3, seed=0)
    tasks = sampler.env.sample_tasks(2, np.random.default_rng(0))
    real = sampler._one_step

    def nan_in_task_1(options):
        inputs, targets = real(options)
        targets = targets.copy()
        targets[4] = np.nan  # row 4 = task 1, shot 1
        return inputs, targets

    monkeypatch.setattr(sampler, "_one_step", nan_in_task_1)
    with pytest.raises(NonFiniteError, match=r"env 'maml/Sinusoid-v0' returned a non-finite "
                                             r"target for task .*amplitude"):
        sampler.sample(tasks)
    sampler.close()
