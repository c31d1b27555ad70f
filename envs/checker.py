"""Check that a registered env is a well-formed task family; for users' tests and the CLI.

``check_task_family("maml/MyFamily-v0")`` raises ``AssertionError`` with a message saying what
is wrong, or returns ``None``. From a shell (also installed as ``maml-check-env``)::

    python -m envs.checker ENV_ID [--module MODULE] [--tasks N]

``--module`` imports the user's module that registers ``ENV_ID`` (from the current directory or
as an installed module, as ``env.module`` in a config); the exit status is 0 when the family
passes, 1 when a check fails (printed), 2 for a bad command line.

What it checks, on ``n_tasks`` tasks drawn with ``seed``:

1. the single env has ``sample_tasks(n, rng)`` and ``set_task(task)``; every task follows the
   task contract of :mod:`envs.tasks` (numbers and strings in a dataclass, dict, tuple or
   list); if the env also has the optional ``get_task()``, it returns the task as set;
2. ``gymnasium.utils.env_checker.check_env(env.unwrapped)`` passes under every task;
3. the reward equals the sum of the ``info`` terms whose names start with ``reward_`` (if any);
4. ``set_task`` takes effect: two different tasks give different rewards or observations for
   the same seed and actions over ``steps`` steps of consecutive episodes (a classification task
   changes the images, not the reward rule, and a one-step episode shows one class);
5. the vector env that ``make_task_vector_env`` builds (the batched one where registered)
   reproduces the single env: same observations, rewards and done flags for the same tasks,
   seeds (``seed + i`` for sub-env i) and actions, up to each sub-env's episode end.
"""

from __future__ import annotations

import argparse
import copy
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils.env_checker import check_env

from envs.generic import make_task_vector_env, unknown_env_message
from envs.registration import import_family_module, register_all
from envs.tasks import check_task, freeze_task

REWARD_PREFIX = "reward_"
# check_env's style advice, which gymnasium's own MuJoCo envs also receive; any other warning
# (an observation outside its space, a wrong dtype, non-determinism, ...) fails the check.
BENIGN_WARNINGS = (
    "is probably too low",
    "is probably too high",
    "we recommend using a symmetric and normalized space",
)


def _sample_actions(space: gym.Space, shape: tuple[int, ...], rng: np.random.Generator):
    """Actions of ``space`` for ``shape`` (steps, envs), reproducible from ``rng``."""
    if isinstance(space, gym.spaces.Box):
        low = np.where(np.isfinite(space.low), space.low, -1.0)
        high = np.where(np.isfinite(space.high), space.high, 1.0)
        return rng.uniform(low, high, size=(*shape, *space.shape)).astype(space.dtype)
    if isinstance(space, gym.spaces.Discrete):
        return (space.start + rng.integers(space.n, size=shape)).astype(space.dtype)
    raise AssertionError(f"check_task_family supports Box and Discrete actions, got {space}")


def _rollout_single(env: gym.Env, task: Any, seed: int, actions: np.ndarray):
    """Per-step (obs, reward, terminated, truncated, info) of one episode, at most len(actions)."""
    env.unwrapped.set_task(task)
    obs, _ = env.reset(seed=seed)
    steps = []
    for action in actions:
        obs_next, reward, terminated, truncated, info = env.step(action)
        steps.append((obs_next, reward, terminated, truncated, info))
        if terminated or truncated:
            break
    return obs, steps


def _check_task_methods(env: gym.Env) -> None:
    base = env.unwrapped
    for name in ("sample_tasks", "set_task"):
        assert callable(getattr(base, name, None)), (
            f"{type(base).__name__} has no {name}(): a task family needs sample_tasks(n, rng) "
            "and set_task(task)"
        )


def _check_task_api(env: gym.Env, tasks: list) -> None:
    base = env.unwrapped
    get_task = getattr(base, "get_task", None)
    for task in tasks:
        try:
            check_task(task)
        except TypeError as error:
            raise AssertionError(f"sample_tasks returned a task that breaks the task contract: "
                                 f"{error}") from None
        base.set_task(copy.deepcopy(task))
        if callable(get_task):
            assert freeze_task(get_task()) == freeze_task(task), (
                f"get_task() returned {get_task()!r} after set_task({task!r})"
            )


def _check_env_strict(env_id: str, env: gym.Env, task: Any) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            check_env(env.unwrapped, skip_render_check=True, skip_close_check=True)
        except Exception as error:
            raise AssertionError(f"{env_id}, task {task!r}: check_env failed: {error}") from error
    serious = [
        str(w.message) for w in caught if not any(b in str(w.message) for b in BENIGN_WARNINGS)
    ]
    assert not serious, f"{env_id}, task {task!r}: check_env warned: {serious}"


def _check_reward_terms(env_id: str, task: Any, steps: list) -> None:
    for t, (_, reward, _, _, info) in enumerate(steps):
        terms = {k: v for k, v in info.items() if k.startswith(REWARD_PREFIX)}
        if terms:
            total = float(sum(terms.values()))
            assert np.isclose(total, reward, rtol=1e-6, atol=1e-8), (
                f"{env_id}, task {task!r}, step {t}: reward {reward} != sum of info terms "
                f"{total} ({terms})"
            )


def _distinct_tasks(env: gym.Env, tasks: list, seed: int) -> list:
    """``tasks`` if it holds two different tasks, else more draws until it does."""
    rng = np.random.default_rng(seed + 1)
    extra = 0
    distinct = {freeze_task(t): t for t in tasks}
    while len(distinct) < 2 and extra < 100:
        task = env.unwrapped.sample_tasks(1, rng)[0]
        distinct.setdefault(freeze_task(task), task)
        extra += 1
    assert len(distinct) >= 2, "sample_tasks keeps returning the same task"
    return list(distinct.values())


def _rollout_steps(env: gym.Env, task: Any, seed: int, actions: np.ndarray):
    """Rewards and flattened observations of ``len(actions)`` steps of consecutive episodes
    (reset after each end), the first reset seeded."""
    env.unwrapped.set_task(task)
    obs, _ = env.reset(seed=seed)
    observations, rewards = [obs], []
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(action)
        observations.append(obs)
        rewards.append(reward)
        if terminated or truncated:
            obs, _ = env.reset()
            observations.append(obs)
    flat = [np.asarray(o, dtype=np.float64).ravel() for o in observations]
    return np.array(rewards, dtype=np.float64), np.concatenate(flat)


def _check_task_effect(env_id, env, tasks, seed, actions) -> None:
    items = [(task, _rollout_steps(env, task, seed, actions))
             for task in _distinct_tasks(env, tasks, seed)]
    for i, (task_a, (rew_a, obs_a)) in enumerate(items):
        for task_b, (rew_b, obs_b) in items[i + 1 :]:
            same = all(
                len(a) == len(b) and np.allclose(a, b) for a, b in ((rew_a, rew_b), (obs_a, obs_b))
            )
            assert not same, (
                f"{env_id}: tasks {task_a!r} and {task_b!r} give the same rewards and "
                "observations for the same seed and actions; does set_task take effect?"
            )


def _close(a, b) -> bool:
    return bool(
        np.allclose(
            np.asarray(a, dtype=np.float64),
            np.asarray(b, dtype=np.float64),
            rtol=1e-5,
            atol=1e-6,
            equal_nan=True,
        )
    )


def _check_vector_env(env_id, env, tasks, seed, actions) -> None:
    venv = make_task_vector_env(env_id, len(tasks))
    try:
        kind = type(venv).__name__
        venv.set_tasks(tasks)
        obs, _ = venv.reset(seed=seed)
        results = [venv.step(a) for a in actions]
    finally:
        venv.close()
    for i, task in enumerate(tasks):
        obs_single, steps = _rollout_single(env, task, seed + i, actions[:, i])
        where = f"{env_id} ({kind}), sub-env {i}, task {task!r}"
        assert _close(obs[i], obs_single), f"{where}: reset observations differ"
        for t, (o, r, term, trunc, info) in enumerate(steps):
            v_obs, v_rew, v_term, v_trunc, v_info = results[t]
            assert _close(v_obs[i], o), f"{where}, step {t}: observations differ"
            assert _close(v_rew[i], r), f"{where}, step {t}: rewards {v_rew[i]} != {r}"
            assert bool(v_term[i]) == term, f"{where}, step {t}: terminated differs"
            # Truncation only matters on a step that did not terminate (TimeLimit also flags
            # terminal steps at the limit; some vector envs do not).
            if not term:
                assert bool(v_trunc[i]) == trunc, f"{where}, step {t}: truncated differs"
            for key, value in info.items():
                if key.startswith(REWARD_PREFIX) and key in v_info:
                    assert _close(v_info[key][i], value), f"{where}, step {t}: info[{key!r}]"


def check_task_family(env_id: str, n_tasks: int = 3, seed: int = 0, steps: int = 50) -> None:
    """Check the task family ``env_id``; raise ``AssertionError`` saying what is wrong.

    See the module docstring for the list of checks. ``steps`` bounds each episode compared.
    """
    register_all()
    if env_id not in gym.registry:
        raise AssertionError(unknown_env_message(env_id))
    assert n_tasks >= 1, "n_tasks must be >= 1"
    try:
        env = gym.make(env_id)
    except ValueError as error:  # e.g. a data folder that is missing: a finding, not a crash
        raise AssertionError(f"{env_id}: cannot make the env: {error}") from error
    try:
        _check_task_methods(env)
        rng = np.random.default_rng(seed)
        tasks = env.unwrapped.sample_tasks(n_tasks, rng)
        assert len(tasks) == n_tasks, f"sample_tasks({n_tasks}) returned {len(tasks)} tasks"
        _check_task_api(env, tasks)
        for task in tasks:
            env.unwrapped.set_task(task)
            _check_env_strict(env_id, env, task)
        actions = _sample_actions(env.action_space, (steps, n_tasks), rng)
        for i, task in enumerate(tasks):
            _check_reward_terms(env_id, task, _rollout_single(env, task, seed, actions[:, i])[1])
        _check_task_effect(env_id, env, tasks, seed, actions[:, 0])
        _check_vector_env(env_id, env, tasks, seed, actions)
    finally:
        env.close()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m envs.checker ENV_ID [--module MODULE] [--tasks N]`` (``maml-check-env``)."""
    parser = argparse.ArgumentParser(
        prog="python -m envs.checker",
        description="Check that a registered env is a well-formed task family: check_env under "
                    "several tasks, set_task takes effect, reward terms sum to the reward, the "
                    "vector env matches the single env. Exit status 0 when it passes.",
    )
    parser.add_argument("env_id", metavar="ENV_ID", help="e.g. maml/HalfCheetahVel-v0")
    parser.add_argument("--module", default="",
                        help="module that registers ENV_ID (importable from the current "
                             "directory or installed), as env.module in a config")
    parser.add_argument("--tasks", type=int, default=3, metavar="N",
                        help="tasks drawn and checked (default: 3)")
    args = parser.parse_args(argv)
    if args.tasks < 1:
        parser.error(f"--tasks: must be >= 1, got {args.tasks}")
    if args.module:
        try:
            import_family_module(args.module)
        except ValueError as error:
            print(f"error: {error}".replace("env.module:", "--module:"), file=sys.stderr)
            return 2
    try:
        check_task_family(args.env_id, n_tasks=args.tasks)
    except AssertionError as error:
        print(f"FAIL {args.env_id}: {error}")
        return 1
    print(f"ok   {args.env_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
