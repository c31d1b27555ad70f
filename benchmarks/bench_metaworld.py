"""Meta-World ML1 sampling throughput, ours against gymnasium's vector envs, in one run.

(a) ours: the training sampler (``maml_rl.sampling.EpisodeSampler``: ``TaskSyncVectorEnv`` of
    the family's single envs, the policy's batched forward, action noise, masks, success);
(a') the same with Meta-World's own per-contact loop for ``touching_object`` instead of
    ``envs.metaworld_ml1.contact_touching_object`` (what that change saves);
(b) ``gymnasium.vector.SyncVectorEnv`` over the same tasks, stepped with the same policy;
(c) ``gymnasium.vector.AsyncVectorEnv`` (one worker process per core) over the same tasks.

Each measures M tasks x N episodes x T steps from reset, rounds interleaved (the machine is
noisy); prints env steps per second per round, the medians and the ratios. Needs the metaworld
extra (docs/guide/metaworld.md).

    python benchmarks/bench_metaworld.py [--env maml/ML1-reach-v0] [--tasks 10]
        [--episodes 5] [--steps 150] [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import gymnasium as gym
import numpy as np
import torch

import envs  # noqa: F401  (registers the maml/ families)
import envs.metaworld_ml1 as ml1
from maml_rl.adaptation import model_params
from maml_rl.config import load_config
from maml_rl.policies import build_model
from maml_rl.sampling import EpisodeSampler

#: Our sampler on envs that keep Meta-World's own contact check.
LOOP = "ours, Meta-World's contact loop"


def _metaworld_touching_object(sawyer, object_geom_id: int) -> bool:
    return type(sawyer).touching_object(sawyer, object_geom_id)


def _gym_vector(env_id: str, tasks: list, episodes: int, steps: int, asynchronous: bool):
    def make(task):
        def thunk():
            env = gym.make(env_id, max_episode_steps=steps)
            env.unwrapped.set_task(task)
            return env
        return thunk

    fns = [make(task) for task in tasks for _ in range(episodes)]
    if asynchronous:
        return gym.vector.AsyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.DISABLED)
    return gym.vector.SyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.DISABLED)


def _run_gym(vec, policy: torch.nn.Module, steps: int) -> int:
    obs, _ = vec.reset(seed=0)
    done = np.zeros(vec.num_envs, dtype=bool)
    count = 0
    with torch.no_grad():
        for _ in range(steps):
            actions = policy(torch.as_tensor(obs, dtype=torch.float32)).sample().numpy()
            obs, _, terminated, truncated, _ = vec.step(np.clip(actions, -1.0, 1.0))
            count += int((~done).sum())
            done |= terminated | truncated
            if done.all():
                break
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="maml/ML1-reach-v0")
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*maximum and minimum values are equal.*")
    config = load_config("configs/ml1_reach.yaml", [f"env.id={args.env}"])
    family = gym.make(args.env)
    tasks = family.unwrapped.sample_tasks(args.tasks, np.random.default_rng(0))
    torch.manual_seed(0)
    policy = build_model(config.policy, family.observation_space, family.action_space,
                         supervised=False)
    params = {k: v.detach() for k, v in model_params(policy).items()}
    ours = EpisodeSampler(args.env, {}, args.tasks, args.episodes, args.steps, seed=0)
    # Envs built while the module's contact check is Meta-World's own keep it.
    ours_contacts = ml1.contact_touching_object
    ml1.contact_touching_object = _metaworld_touching_object
    loop = EpisodeSampler(args.env, {}, args.tasks, args.episodes, args.steps, seed=0)
    ml1.contact_touching_object = ours_contacts
    sync = _gym_vector(args.env, tasks, args.episodes, args.steps, asynchronous=False)
    workers = _gym_vector(args.env, tasks, args.episodes, args.steps, asynchronous=True)
    print(f"{args.env}: {args.tasks} tasks x {args.episodes} episodes x {args.steps} steps, "
          f"{os.cpu_count()} cores, torch threads {args.threads}")
    rates: dict[str, list[float]] = {"ours": [], LOOP: [], "SyncVectorEnv": [],
                                     "AsyncVectorEnv": []}
    for r in range(args.rounds):
        for name in rates:
            start = time.perf_counter()
            if name.startswith("ours"):
                sampler = ours if name == "ours" else loop
                count = sampler.sample(tasks, policy, params, per_task=False).num_steps()
            else:
                count = _run_gym(sync if name == "SyncVectorEnv" else workers, policy,
                                 args.steps)
            rates[name].append(count / (time.perf_counter() - start))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in rates.items())
              + " steps/s")
    median = {k: statistics.median(v) for k, v in rates.items()}
    print("median: " + ", ".join(f"{k} {v:,.0f} steps/s" for k, v in median.items()))
    print(f"ours / SyncVectorEnv {median['ours'] / median['SyncVectorEnv']:.2f}, "
          f"ours / AsyncVectorEnv {median['ours'] / median['AsyncVectorEnv']:.2f}, "
          f"ours / {LOOP} {median['ours'] / median[LOOP]:.2f}")
    for env in (ours, loop, sync, workers):
        env.close()


if __name__ == "__main__":
    main()
