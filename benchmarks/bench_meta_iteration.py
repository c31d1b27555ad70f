"""Meta-iterations per second on the sinusoid paper setting, measured side by side in one run.

Compares our training step (batched env + ``adapted_losses`` over the meta-batch, with vmap and
with a Python loop over tasks) against the loop a newcomer writes: for each task, draw the K + Q
examples from the single env one episode at a time, copy the model's weights, take the inner
step with ``torch.autograd.grad(create_graph=True)`` and accumulate the query loss.

    python benchmarks/bench_meta_iteration.py [--iterations 300] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch
from torch.func import functional_call

import envs  # noqa: F401
from maml_rl.config import load_config
from maml_rl.family import load_family
from maml_rl.learners.supervised import SupervisedMetaLearner


def newcomer_iteration(model, optimizer, env, tasks, k, q, alpha):
    """One meta-iteration written the plain way: everything per task, per example."""
    optimizer.zero_grad()
    meta_loss = 0.0
    for task in tasks:
        env.unwrapped.set_task(task)
        xs, ys = [], []
        for _ in range(k + q):
            x, _ = env.reset()
            _, _, _, _, info = env.step(np.zeros(1, dtype=np.float32))
            xs.append(x)
            ys.append(info["target"])
        x = torch.as_tensor(np.stack(xs))
        y = torch.as_tensor(np.stack(ys))
        weights = {n: p.clone() for n, p in model.named_parameters()}  # the task's copy
        support_loss = torch.nn.functional.mse_loss(functional_call(model, weights, x[:k]), y[:k])
        grads = torch.autograd.grad(support_loss, list(weights.values()), create_graph=True)
        fast = {n: w - alpha * g for (n, w), g in zip(weights.items(), grads, strict=True)}
        query_loss = torch.nn.functional.mse_loss(functional_call(model, fast, x[k:]), y[k:])
        meta_loss = meta_loss + query_loss / len(tasks)
    meta_loss.backward()
    optimizer.step()


def timed(fn, iterations: int) -> float:
    for _ in range(max(3, iterations // 20)):  # warm-up
        fn()
    start = time.perf_counter()
    for _ in range(iterations):
        fn()
    return iterations / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config("configs/sinusoid.yaml", ["device=cpu"])
    family = load_family(config.env.id, config.env.kwargs)
    rng = np.random.default_rng(0)
    m, k, q = (config.sampling.meta_batch_size, config.sampling.support_size,
               config.sampling.query_size)
    rates = {}
    for batching in ("vmap", "loop"):
        config.meta.task_batching = batching
        learner = SupervisedMetaLearner(config, family, "cpu")
        rates[f"ours ({batching})"] = timed(
            lambda learner=learner: learner.meta_iteration(family.sample_tasks(m, rng)),
            args.iterations,
        )
    learner = SupervisedMetaLearner(config, family, "cpu")
    env = gym.make(config.env.id)
    env.reset(seed=0)
    alpha = config.inner_step_sizes()[0]
    rates["newcomer loop"] = timed(
        lambda: newcomer_iteration(learner.model, learner.optimizer, env,
                                   family.sample_tasks(m, rng), k, q, alpha),
        args.iterations,
    )
    print(f"sinusoid meta-iteration: {m} tasks x ({k} support + {q} query) shots, "
          f"{args.threads} torch threads, {args.iterations} timed iterations")
    for name, rate in rates.items():
        print(f"  {name:<16} {rate:8.1f} it/s   {1000 / rate:6.2f} ms/it")
    base = rates["newcomer loop"]
    for name in ("ours (vmap)", "ours (loop)"):
        print(f"  speed-up {name} vs newcomer loop: {rates[name] / base:.2f}x")


if __name__ == "__main__":
    main()
