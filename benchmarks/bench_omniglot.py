"""Seconds per meta-iteration of the Omniglot configs, and of their variants, side by side.

Each row builds the config's learner (real data, real sampler) and times ``meta_iteration`` on
fresh tasks; the median of ``--iterations`` after two warm-up iterations is printed. Variants:
down-sampling (stride-2 convolutions or max-pooling), task batching (vmap or a loop), and
first- vs second-order meta-gradients. Run it alone: other jobs on the cores change the figures.

    python benchmarks/bench_omniglot.py [--iterations 5] [--threads 1] [CONFIG ...]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from maml_rl.config import load_config
from maml_rl.family import load_family
from maml_rl.learners.supervised import SupervisedMetaLearner
from maml_rl.seeding import seed_everything

VARIANTS = {
    "config": [],
    "max_pool": ["policy.conv_downsample=max_pool"],
    "vmap": ["meta.task_batching=vmap"],
    "loop": ["meta.task_batching=loop"],
    "first_order": ["inner.first_order=true"],
}
CONFIGS = [
    "configs/omniglot_5way1shot.yaml",
    "configs/omniglot_5way5shot.yaml",
    "configs/omniglot_20way1shot.yaml",
]


def seconds_per_iteration(path: str, overrides: list[str], iterations: int) -> float:
    """Median seconds of ``iterations`` meta-iterations of the config with ``overrides``."""
    config = load_config(path, [*overrides, "device=cpu"])
    rng = seed_everything(config.seed)
    family = load_family(config.env.id, config.env.kwargs)
    learner = SupervisedMetaLearner(config, family, "cpu")
    times = []
    for i in range(iterations + 2):
        tasks = family.sample_tasks(config.sampling.meta_batch_size, rng)
        start = time.perf_counter()
        learner.meta_iteration(tasks)
        if i >= 2:
            times.append(time.perf_counter() - start)
    learner.close()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", default=CONFIGS)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"median seconds per meta-iteration, {args.threads} torch thread(s)")
    for path in args.configs:
        for name in args.variants:
            seconds = seconds_per_iteration(path, VARIANTS[name], args.iterations)
            print(f"{path:<36} {name:<12} {seconds:7.3f} s", flush=True)


if __name__ == "__main__":
    main()
