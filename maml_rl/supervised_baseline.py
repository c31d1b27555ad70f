"""The MAML paper's pretrained baseline for regression families (Finn et al. 2017, Sec. 5.1 and
Fig. 2: "pretraining on all of the tasks, which entails training a network to regress to random
sinusoid functions and then, at test-time, fine-tuning with gradient descent on the K provided
points, using an automatically tuned step size").

The run's model, freshly initialised, is trained on the family's tasks jointly: Adam at
``meta.lr`` on the unadapted loss of meta-batches of ``sampling.meta_batch_size`` tasks with
their support and query shots. ``maml-evaluate RUN --baselines`` then fine-tunes it on each
held-out task with plain gradient steps of the run's evaluation step sizes, on the same shots
as MAML (:meth:`maml_rl.learners.supervised.SupervisedMetaLearner.evaluate`). The trained
model is cached in ``RUN_DIR/baselines/pretrained.pt`` with a ``.json`` of its settings; a
cache trained with other settings is retrained. (The RL comparison methods, trained with PPO,
are :mod:`maml_rl.comparison`.)
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import vmap

from maml_rl.adaptation import model_params
from maml_rl.config import Config
from maml_rl.family import TaskFamily
from maml_rl.objectives import SUPERVISED_LOSSES
from maml_rl.policies import build_model
from maml_rl.sampling import SupervisedSampler

#: Meta-batches of joint training when ``--baseline-steps`` is not given.
DEFAULT_ITERATIONS = 10_000


def pretrain_settings(config: Config, family: TaskFamily, iterations: int) -> dict[str, Any]:
    """What the pretrained model depends on (the cache's key)."""
    s = config.sampling
    return {"env_id": family.env_id, "env_kwargs": family.env_kwargs,
            "policy": config.to_dict()["policy"], "iterations": int(iterations),
            "meta_batch_size": s.meta_batch_size, "shots": s.support_size + s.query_size,
            "lr": config.meta.lr, "seed": config.seed}


def train_pretrained(config: Config, family: TaskFamily, iterations: int, device: str,
                     progress: bool = True) -> nn.Module:
    """The run's model trained on ``iterations`` meta-batches of the family's tasks jointly
    (see the module docstring)."""
    s = config.sampling
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        model = build_model(config.policy, family.observation_space, family.action_space,
                            supervised=True).to(device)
    loss_fn = SUPERVISED_LOSSES[family.supervised_loss]
    params = model_params(model)
    optimizer = torch.optim.Adam(params.values(), lr=config.meta.lr)
    sampler = SupervisedSampler(family.env_id, family.env_kwargs, s.meta_batch_size,
                                s.support_size + s.query_size, config.seed, device)
    rng = np.random.default_rng(config.seed)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=iterations, desc="pretrained (joint training)", unit="it")
    try:
        for _ in range(iterations):
            shots = sampler.sample(family.sample_tasks(s.meta_batch_size, rng))
            # One loss per task, as the meta-learner forms them (batch statistics per task).
            loss = vmap(lambda batch: loss_fn(model, params, batch))(shots).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if bar is not None:
                bar.update()
    finally:
        sampler.close()
        if bar is not None:
            bar.close()
    return model


def load_or_train_pretrained(
    config: Config, family: TaskFamily, cache_dir: str | Path, iterations: int | None,
    device: str, progress: bool = True, log: Callable[[str], None] = print,
) -> nn.Module:
    """The pretrained model: from ``cache_dir/pretrained.pt`` when it was trained with the same
    settings, else trained now and cached (written under a temporary name and renamed, so an
    interruption leaves no cache)."""
    iterations = DEFAULT_ITERATIONS if iterations is None else iterations
    settings = pretrain_settings(config, family, iterations)
    path = Path(cache_dir) / "pretrained.pt"
    meta = path.with_suffix(".json")
    model = build_model(config.policy, family.observation_space, family.action_space,
                        supervised=True).to(device)
    if path.is_file() and meta.is_file():
        cached = json.loads(meta.read_text())
        if cached.get("settings") == json.loads(json.dumps(settings)):
            log(f"pretrained: cached model {path} ({iterations} iterations)")
            model.load_state_dict(torch.load(path, map_location=device, weights_only=True))
            return model
        log(f"pretrained: cached {path} was trained with other settings; retraining")
    log(f"pretrained: training jointly on the family's tasks for {iterations} iterations "
        f"-> {path}")
    start = time.perf_counter()
    model = train_pretrained(config, family, iterations, device, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.pt")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)
    meta.write_text(json.dumps({"settings": settings,
                                "train_seconds": round(time.perf_counter() - start, 1)},
                               indent=1))
    return model
