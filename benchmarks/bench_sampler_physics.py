"""Sampler physics throughput on the HalfCheetah-velocity paper batch, three ways, in one run.

(a) our batched env (``maml/HalfCheetahVel-v0``'s ``vector_entry_point``: one ``mujoco.rollout``
    call per env step over all sub-envs), closed loop with a tiny fixed linear policy in numpy;
(b) gymnasium ``SyncVectorEnv`` over the same single envs, same policy; for reference also
    (b') ``SyncVectorEnv`` over gymnasium's own ``HalfCheetah-v5`` with the same frame skip (a
    leaner single env than ours, whose step evaluates the batched numpy code on a batch of one);
(c) the physics floor: ``mujoco.rollout`` over the same model with all cores, open loop: one
    call replays the whole horizon of (a)'s actions from (a)'s initial states, so it simulates
    the same trajectories (same number of transitions, same contacts) without the closed loop.

Default batch: 40 tasks x 20 episodes = 800 sub-envs, 200 steps (``--steps`` for quick runs).
Prints transitions per second of each and the ratios (a)/(c) and (a)/(b).

    python benchmarks/bench_sampler_physics.py [--steps 200] [--no-paper-mdp] [--skip-sync]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

import gymnasium as gym
import mujoco
import mujoco.rollout
import numpy as np

import envs  # noqa: F401  (registers the maml/ families)
from envs.generic import make_task_vector_env

ENV_ID = "maml/HalfCheetahVel-v0"


@contextlib.contextmanager
def native_stderr_silenced():
    """Silence C-level stderr: MuJoCo warns once per gymnasium HalfCheetah-v5 it compiles."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class LinearPolicy:
    """``tanh(obs @ W + b)`` with fixed random weights: the cheapest closed-loop controller."""

    def __init__(self, obs_dim: int, act_dim: int, rng: np.random.Generator) -> None:
        self.weight = rng.normal(scale=0.3, size=(obs_dim, act_dim)).astype(np.float32)
        self.bias = rng.normal(scale=0.1, size=act_dim).astype(np.float32)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return np.tanh(obs @ self.weight + self.bias)


def paper_batch_tasks(venv, num_tasks: int, episodes: int, seed: int) -> list:
    """``num_tasks`` tasks, each repeated for ``episodes`` consecutive sub-envs."""
    tasks = venv.sample_tasks(num_tasks, np.random.default_rng(seed))
    return [task for task in tasks for _ in range(episodes)]


def time_batched(args, tasks: list, policy: LinearPolicy) -> tuple[float, np.ndarray]:
    """Seconds for ``args.steps`` steps of every sub-env of our batched env (after reset), and
    the actions taken, ``(num_envs, steps, act_dim)``."""
    venv = make_task_vector_env(ENV_ID, len(tasks), paper_mdp=args.paper_mdp, nthread=args.nthread)
    venv.set_tasks(tasks)
    obs, _ = venv.reset(seed=args.seed)
    actions = np.empty((args.steps, *venv.action_space.shape), dtype=np.float32)
    start = time.perf_counter()
    for t in range(args.steps):
        actions[t] = policy(obs)
        obs, *_ = venv.step(actions[t])
    elapsed = time.perf_counter() - start
    venv.close()
    return elapsed, actions.transpose(1, 0, 2)


def time_sync(args, tasks: list, policy: LinearPolicy) -> float:
    """Seconds for the same rollout through ``gymnasium.vector.SyncVectorEnv``."""
    venv = gym.make_vec(
        ENV_ID, num_envs=len(tasks), vectorization_mode="sync", paper_mdp=args.paper_mdp
    )
    for env, task in zip(venv.envs, tasks, strict=True):
        env.unwrapped.set_task(task)
    obs, _ = venv.reset(seed=args.seed)
    start = time.perf_counter()
    for _ in range(args.steps):
        obs, *_ = venv.step(policy(obs))
    elapsed = time.perf_counter() - start
    venv.close()
    return elapsed


def time_sync_gymnasium(args, num_envs: int, frame_skip: int) -> float:
    """Seconds for the same number of steps of gymnasium's HalfCheetah-v5 in ``SyncVectorEnv``."""
    with native_stderr_silenced():
        venv = gym.make_vec(
            "HalfCheetah-v5", num_envs=num_envs, vectorization_mode="sync", frame_skip=frame_skip
        )
    policy = LinearPolicy(
        venv.single_observation_space.shape[0],
        venv.single_action_space.shape[0],
        np.random.default_rng(args.seed),
    )
    obs, _ = venv.reset(seed=args.seed)
    start = time.perf_counter()
    for _ in range(args.steps):
        obs, *_ = venv.step(policy(obs.astype(np.float32)))
    elapsed = time.perf_counter() - start
    venv.close()
    return elapsed


def time_floor(args, actions: np.ndarray) -> float:
    """Seconds for ``mujoco.rollout`` to replay ``actions`` open loop on all cores, from the
    batched env's initial states (sub-env i reset with seed + i)."""
    num_envs = len(actions)
    single = gym.make(ENV_ID, paper_mdp=args.paper_mdp).unwrapped
    model, frame_skip = single.model, single.frame_skip
    nthread = args.nthread or os.cpu_count() or 1
    datas = [mujoco.MjData(model) for _ in range(nthread)]
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    initial = np.zeros((num_envs, mujoco.mj_stateSize(model, spec)))
    for i in range(num_envs):
        single.reset(seed=args.seed + i)
        mujoco.mj_getState(model, single.data, initial[i], spec)
    nstep = args.steps * frame_skip
    control = np.repeat(actions.astype(np.float64), frame_skip, axis=1)
    # Outputs allocated and touched outside the timed region, as the closed loop reuses memory.
    state = np.ones((num_envs, nstep, initial.shape[1]))
    sensordata = np.ones((num_envs, nstep, model.nsensordata))
    with mujoco.rollout.Rollout(nthread=nthread) as pool:
        pool.rollout(model, datas, initial[:2], control[:2, :1], nstep=1)  # start the threads
        start = time.perf_counter()
        pool.rollout(
            model, datas, initial, control, nstep=nstep, state=state, sensordata=sensordata
        )
        elapsed = time.perf_counter() - start
    single.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--episodes", type=int, default=20, help="sub-envs per task")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nthread", type=int, default=None, help="default: os.cpu_count()")
    parser.add_argument(
        "--no-paper-mdp",
        dest="paper_mdp",
        action="store_false",
        help="gymnasium-v5 settings (frame skip 5) instead of the paper's (frame skip 1)",
    )
    parser.add_argument("--skip-sync", action="store_true", help="skip SyncVectorEnv (slow)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="(a) and (c) are timed this many times, alternately, and the best is kept "
        "(the machine may be shared)",
    )
    args = parser.parse_args()

    num_envs = args.tasks * args.episodes
    transitions = num_envs * args.steps
    probe = make_task_vector_env(ENV_ID, 1, paper_mdp=args.paper_mdp)
    tasks = paper_batch_tasks(probe, args.tasks, args.episodes, args.seed)
    policy = LinearPolicy(
        probe.single_observation_space.shape[0],
        probe.single_action_space.shape[0],
        np.random.default_rng(args.seed),
    )
    frame_skip = probe.frame_skip
    probe.close()
    print(
        f"{ENV_ID} paper_mdp={args.paper_mdp} (frame skip {frame_skip}): {args.tasks} tasks x "
        f"{args.episodes} episodes = {num_envs} sub-envs x {args.steps} steps = "
        f"{transitions} transitions, {args.nthread or os.cpu_count()} threads"
    )
    batched_times, floor_times = [], []
    for _ in range(args.repeats):
        elapsed, actions = time_batched(args, tasks, policy)
        batched_times.append(elapsed)
        floor_times.append(time_floor(args, actions))
    batched = transitions / min(batched_times)
    floor = transitions / min(floor_times)
    runs = ", ".join(f"{transitions / t:,.0f}" for t in batched_times)
    print(f"(a) batched env (mujoco.rollout, closed loop) {batched:12,.0f} transitions/s  [{runs}]")
    sync = None
    if not args.skip_sync:
        sync = transitions / time_sync(args, tasks, policy)
        print(f"(b) gymnasium SyncVectorEnv                   {sync:12,.0f} transitions/s")
        v5 = transitions / time_sync_gymnasium(args, num_envs, frame_skip)
        print(f"(b') SyncVectorEnv of gymnasium HalfCheetah-v5 {v5:11,.0f} transitions/s")
    runs = ", ".join(f"{transitions / t:,.0f}" for t in floor_times)
    print(f"(c) physics floor (mujoco.rollout, open loop) {floor:12,.0f} transitions/s  [{runs}]")
    print(f"(a)/(c) = {batched / floor:.2f} of the physics floor")
    if sync is not None:
        print(f"(a)/(b) = {batched / sync:.2f}x SyncVectorEnv")
        print(f"(a)/(b') = {batched / v5:.2f}x SyncVectorEnv of gymnasium's HalfCheetah-v5")


if __name__ == "__main__":
    main()
