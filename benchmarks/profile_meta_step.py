"""Where one TRPO meta-step's time goes, on CPU or GPU: the meta-gradient, building the Fisher
products, one product, one line-search evaluation and the whole step (medians of repeats on one
sampled meta-batch), then a ``torch.profiler`` table of one whole step and, on CUDA, the number
of kernel launches beside the GPU's own time (a step that launches many small kernels is bound
by Python, not by the device).

    python benchmarks/profile_meta_step.py configs/navigation_2d.yaml device=cuda \\
        "policy.hidden_sizes=[64,64]" policy.nonlinearity=tanh [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

import envs  # noqa: F401
from maml_rl.config import load_config
from maml_rl.family import load_family
from maml_rl.learners.reinforcement import RLMetaLearner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_intermixed_args()
    config = load_config(args.config, args.overrides)
    device = config.resolve_device()
    if config.threads:
        torch.set_num_threads(config.threads)
    family = load_family(config.env.id, config.env.kwargs)
    learner = RLMetaLearner(config, family, device)
    tasks = family.sample_tasks(config.sampling.meta_batch_size, np.random.default_rng(0))
    captured = {}
    step = learner.meta_update.step
    learner.meta_update.step = lambda batch: captured.setdefault("batch", batch) and {}
    learner.meta_iteration(tasks, 0)  # samples and adapts; the update is skipped
    batch = captured["batch"]

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def timed(name: str, fn) -> None:
        fn()
        sync()
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - start)
        print(f"  {name:<22} {statistics.median(times) * 1e3:8.1f} ms")

    size = max(1, int(np.ceil(config.meta.hvp_task_fraction * batch.num_tasks)))
    product = batch.fisher_product(size)
    vector = torch.randn(sum(p.numel() for p in batch.meta_parameters), device=device)
    initial = {k: v.detach().clone() for k, v in learner.model.state_dict().items()}

    def whole_step():
        learner.model.load_state_dict(initial)
        return step(batch)

    print(f"{config.env.id} on {device}, {batch.num_tasks} tasks, batching {batch.batching}, "
          f"curvature on {size} tasks, {torch.get_num_threads()} threads; medians of "
          f"{args.repeats}:")
    timed("meta-gradient", batch.surrogate_gradient)
    timed("Fisher products built", lambda: batch.fisher_product(size))
    timed("one Fisher product", lambda: product(vector))
    timed("line-search values", lambda: batch.losses(values_only=True))
    timed("whole meta-step", whole_step)
    activities = [ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        whole_step()
        sync()
    events = prof.key_averages()
    if device.startswith("cuda"):
        launches = sum(e.count for e in events if e.key.startswith("cudaLaunchKernel"))
        # The kernels themselves (an operator's own CUDA time would count them twice).
        gpu = sum(e.device_time_total for e in prof.events()
                  if e.device_type == DeviceType.CUDA) / 1e3
        print(f"  one step: {launches} kernel launches, {gpu:.1f} ms of GPU time")
    print(events.table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
