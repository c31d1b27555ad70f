"""Seconds of the MAML-TRPO meta-step, and how far cheaper curvature estimates move the step.

Variants: the KL-Hessian products by double differentiation (``hessian``) or as Fisher-vector
products through the adaptation (``fisher``, maml_rl/meta_updates/curvature.py, equal at
the current point);
the fraction of tasks in the products; task batching for the meta-gradient.

On one sampled meta-batch of a config, times the meta-update (``RLMetaLearner.meta_update``:
meta-gradient, conjugate gradient with Hessian-vector products through the adaptation, line
search) for each task batching (loop / vmap) and fraction of tasks in the curvature, from the
same parameters,
and reports the cosine between each variant's parameter update and the exact one.

It also counts each variant's matrix-multiply work (``torch.utils.flop_counter``) and divides it
by the rate of one matmul of the policy's hidden layer over a task's query states at the same
threads: the meta-step's **matmul floor**, the seconds it would take if every matrix product ran
at that rate and nothing else cost anything.

    python benchmarks/bench_trpo.py configs/navigation_2d.yaml [key=value ...] [--repeats 2]
        [--curvatures hessian fisher] [--fractions 1.0 0.25] [--batchings loop vmap stacked]
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

import envs  # noqa: F401
from maml_rl.config import load_config
from maml_rl.family import load_family
from maml_rl.learners.reinforcement import RLMetaLearner
from maml_rl.learners.rl_objective import RLMetaBatch


def flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def matmul_rate(rows: int, width: int, seconds: float = 0.5) -> float:
    """FLOP/s of ``[rows, width] @ [width, width]``, the policy's hidden layer on one task."""
    x, w = torch.randn(rows, width), torch.randn(width, width)
    for _ in range(5):
        x @ w
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        x @ w
        count += 1
    return 2 * rows * width * width * count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.25])
    parser.add_argument("--batchings", nargs="+", default=["loop", "vmap"])
    parser.add_argument("--curvatures", nargs="+", default=["hessian", "fisher"],
                        help="meta.curvature variants (the first run is the reference)")
    args = parser.parse_intermixed_args()
    config = load_config(args.config, [*args.overrides, "device=cpu"])
    if config.threads:
        torch.set_num_threads(config.threads)
    family = load_family(config.env.id, config.env.kwargs)
    learner = RLMetaLearner(config, family, "cpu")
    tasks = family.sample_tasks(config.sampling.meta_batch_size, np.random.default_rng(0))
    start = time.perf_counter()
    supports, adapted = learner.inner_loop(learner.support_sampler, tasks,
                                           config.inner_step_sizes())
    query = learner._process(learner.query_sampler.sample(tasks, learner.model, adapted, True))
    sampling = time.perf_counter() - start
    initial = copy.deepcopy(learner.model.state_dict())
    theta = flat(learner.model)
    steps = int(query.mask.sum())
    print(f"{config.env.id}: {config.sampling.meta_batch_size} tasks, {steps} query steps, "
          f"policy {config.policy.hidden_sizes} {config.policy.nonlinearity}, "
          f"{torch.get_num_threads()} threads; sampling+inner loop {sampling:.2f} s")
    width = max(config.policy.hidden_sizes)
    rate = matmul_rate(steps // config.sampling.meta_batch_size, width)
    print(f"  matmul rate [{steps // config.sampling.meta_batch_size}, {width}] @ [{width}, "
          f"{width}]: {rate / 1e9:.1f} GFLOP/s")
    reference = None
    variants = [(c, f, b) for c in args.curvatures for f in args.fractions
                for b in args.batchings]
    for curvature, fraction, batching in variants:
        learner.batching = batching
        learner.config.meta.hvp_task_fraction = fraction
        learner.config.meta.curvature = curvature
        times = []
        for _ in range(args.repeats):
            learner.model.load_state_dict(initial)
            t = time.perf_counter()
            info = learner.meta_update.step(
                RLMetaBatch(learner.algorithm, supports, query, adapted, batching))
            times.append(time.perf_counter() - t)
        update = flat(learner.model) - theta
        learner.model.load_state_dict(initial)
        with FlopCounterMode(display=False) as counter:
            learner.meta_update.step(
                RLMetaBatch(learner.algorithm, supports, query, adapted, batching))
        flops = counter.get_total_flops()
        if reference is None:
            reference = update
        cos = torch.nn.functional.cosine_similarity(update, reference, dim=0).item()
        print(f"  {curvature:<7} curvature on {fraction:4.0%} of tasks, {batching:<4}: "
              f"meta-step {min(times):6.2f} s (best of {args.repeats}), "
              f"surrogate {info['surrogate/before']:+.4f} -> {info['surrogate/after']:+.4f}, "
              f"KL {info['kl']:.4f}, line-search steps {info['trpo/ls_steps']}, "
              f"cosine to exact update {cos:.3f}; matmuls {flops / 1e9:.1f} GFLOP, floor "
              f"{flops / rate:.2f} s")


if __name__ == "__main__":
    main()
