"""The MAML paper's comparison methods for RL (Finn et al. 2017, Sec. 5.3, Fig. 5), trained with
stable-baselines3 and evaluated with exactly the protocol of MAML itself.

* **pretrained**: one PPO policy trained on the whole task family (a multi-task env that draws a
  new task at every reset, ``envs.wrappers.TaskSamplingWrapper``), then fine-tuned on each
  held-out task with our inner step (``RLMetaLearner.inner_loop``: vanilla policy gradient,
  ``evaluation.lr``, fresh episodes per step).
* **random**: the same fine-tuning from a freshly initialised policy of the run's architecture.
* **oracle**: PPO with the task parameters appended to the observation, evaluated directly on
  each task (no adaptation: a flat line in the plot).

PPO's actor is built with the run's architecture (``net_arch=dict(pi=hidden_sizes, ...)``, the
run's nonlinearity, a state-independent log-std initialised at ``policy.init_std``), so its weights
*are* a :class:`~maml_rl.policies.GaussianMLPPolicy` (or a categorical one) and are copied over
layer by layer: no distillation. PPO sees raw observations (reward normalisation only: observation
normalisation would not be part of our policy class) and clips actions to the box, as our sampler
does. Trained policies are cached in ``RUN_DIR/baselines/{pretrained,oracle}.zip`` with a
``.json`` of their settings; a cache whose settings differ from the requested ones is retrained.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
from torch import nn
from tqdm.auto import tqdm

from envs.generic import family_metadata
from envs.wrappers import TaskObservationVectorEnv, TaskSamplingWrapper
from maml_rl.evaluation import AdaptationCurve
from maml_rl.policies import NONLINEARITIES, CategoricalMLPPolicy, GaussianMLPPolicy, build_model

if TYPE_CHECKING:
    from maml_rl.config import Config
    from maml_rl.learners.reinforcement import RLMetaLearner

#: Methods in the order of the paper's table (after MAML).
METHODS = ("pretrained", "random", "oracle")

#: PPO timesteps per trained baseline when ``--baseline-steps`` is not given and the family does
#: not declare ``metadata["baseline_timesteps"]`` (ours do: docs/guide/evaluation.md).
FALLBACK_TIMESTEPS = 500_000


def default_timesteps(env_id: str) -> int:
    """PPO timesteps for a family: its ``metadata["baseline_timesteps"]``, or
    :data:`FALLBACK_TIMESTEPS`."""
    return int(family_metadata(env_id).get("baseline_timesteps", FALLBACK_TIMESTEPS))


@dataclass(frozen=True)
class PPOSettings:
    """Everything a cached PPO policy depends on; the cache is reused only when equal."""

    method: str
    """``pretrained`` (multi-task env) or ``oracle`` (task appended to the observation)."""
    env_id: str
    env_kwargs: dict[str, Any]
    horizon: int
    hidden_sizes: list[int]
    nonlinearity: str
    init_std: float
    timesteps: int
    seed: int
    gamma: float
    n_envs: int = 8
    n_steps: int = 256
    batch_size: int = 256
    n_epochs: int = 10
    learning_rate: float = 3e-4
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.0
    normalize_reward: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    """Further keyword arguments of ``stable_baselines3.PPO``."""

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


def settings_for(
    config: Config, method: str, horizon: int, timesteps: int | None = None, **ppo: Any
) -> PPOSettings:
    """PPO settings of ``method`` for a run's config: its family, architecture, seed and
    discount, the run's episode ``horizon``; ``timesteps`` defaults to
    :func:`default_timesteps`."""
    return PPOSettings(
        method=method,
        env_id=config.env.id,
        env_kwargs=dict(config.env.kwargs),
        horizon=int(horizon),
        hidden_sizes=list(config.policy.hidden_sizes),
        nonlinearity=config.policy.nonlinearity,
        init_std=config.policy.init_std,
        timesteps=default_timesteps(config.env.id) if timesteps is None else int(timesteps),
        seed=config.seed,
        gamma=config.inner.gamma,
        **ppo,
    )


def make_training_env(settings: PPOSettings, rank: int) -> gym.Env:
    """One sub-env of PPO's training: the family with a new task at every reset (the task in
    the observation for the oracle), episode statistics recorded by ``Monitor``."""
    env = gym.make(settings.env_id, max_episode_steps=settings.horizon, **settings.env_kwargs)
    env = TaskSamplingWrapper(
        env, seed=settings.seed + rank, observe_task=settings.method == "oracle"
    )
    return Monitor(env)


class TrainingCallback(BaseCallback):
    """Records the learning curve (mean return of the last 100 training episodes after each
    rollout, to judge how far from converged a budget is) and, with ``progress``, shows a tqdm
    bar over the timesteps (SB3's own bar needs ``rich``, which is not a dependency here)."""

    def __init__(self, total: int, desc: str, progress: bool) -> None:
        super().__init__()
        self.total, self.desc, self.progress = total, desc, progress
        self.curve: list[tuple[int, float]] = []
        self.bar = None

    def _on_training_start(self) -> None:
        if self.progress:
            self.bar = tqdm(total=self.total, desc=self.desc, unit="step", dynamic_ncols=True)

    def _on_step(self) -> bool:
        if self.bar is not None:
            self.bar.update(self.training_env.num_envs)
        return True

    def _on_rollout_end(self) -> None:
        episodes = self.model.ep_info_buffer
        if episodes:
            mean = float(np.mean([e["r"] for e in episodes]))
            self.curve.append((int(self.model.num_timesteps), round(mean, 3)))
            if self.bar is not None:
                self.bar.set_postfix(train_return=f"{mean:.4g}", refresh=False)

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def sparse_curve(self, points: int = 25) -> list[tuple[int, float]]:
        """About ``points`` entries of the curve, the last one included."""
        stride = max(1, math.ceil(len(self.curve) / points))
        return self.curve[::-1][::stride][::-1]


def train_ppo(settings: PPOSettings, path: str | Path, progress: bool = True) -> dict[str, Any]:
    """Train one PPO policy and save it to ``path`` (an SB3 ``.zip``) with a ``.json`` of its
    settings and training summary next to it; returns that summary."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    venv = DummyVecEnv([partial(make_training_env, settings, i) for i in range(settings.n_envs)])
    if settings.normalize_reward:
        # Rewards only: normalised observations would not be our policy class any more.
        venv = VecNormalize(venv, norm_obs=False, norm_reward=True, gamma=settings.gamma)
    policy_kwargs = {
        "net_arch": {"pi": list(settings.hidden_sizes), "vf": list(settings.hidden_sizes)},
        "activation_fn": NONLINEARITIES[settings.nonlinearity],
        "log_std_init": math.log(settings.init_std),
    }
    model = PPO(
        "MlpPolicy", venv, learning_rate=settings.learning_rate, n_steps=settings.n_steps,
        batch_size=settings.batch_size, n_epochs=settings.n_epochs, gamma=settings.gamma,
        gae_lambda=settings.gae_lambda, clip_range=settings.clip_range,
        ent_coef=settings.ent_coef, policy_kwargs=policy_kwargs, seed=settings.seed,
        device="cpu", verbose=0, **settings.extra,
    )
    # Without a logger of its own, SB3 makes an empty SB3-<time> folder in the system temp
    # directory at every learn(); the summary below is our log.
    model.set_logger(Logger(folder=None, output_formats=[]))
    start = time.perf_counter()
    callback = TrainingCallback(settings.timesteps, f"PPO {settings.method}", progress)
    model.learn(settings.timesteps, callback=callback)
    seconds = time.perf_counter() - start
    episodes = list(model.ep_info_buffer or [])
    summary = {
        "settings": settings.to_json(),
        "timesteps_done": int(model.num_timesteps),
        "train_seconds": round(seconds, 1),
        "steps_per_second": round(model.num_timesteps / max(seconds, 1e-9), 1),
        "final_train_return": float(np.mean([e["r"] for e in episodes])) if episodes else None,
        "final_train_episodes": len(episodes),
        "learning_curve": callback.sparse_curve(),
    }
    # Written next to its final name, then renamed: an interrupted training leaves no cache.
    tmp = path.with_name(path.stem + ".tmp.zip")
    model.save(tmp)
    os.replace(tmp, path)
    path.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    venv.close()
    return summary


def load_policy_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The policy weights of an SB3 ``.zip``, read with ``torch.load(weights_only=True)`` and
    without unpickling the rest of the file (SB3 pickles schedules and spaces in it)."""
    _, params, _ = load_from_zip_file(path, load_data=False, device="cpu")
    return params["policy"]


def load_or_train(
    settings: PPOSettings, cache_dir: str | Path, progress: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The policy weights and training summary of ``settings.method``: from the cache in
    ``cache_dir`` when it was trained with the same settings, else trained now (and cached)."""
    path = Path(cache_dir) / f"{settings.method}.zip"
    meta = path.with_suffix(".json")
    if path.is_file() and meta.is_file():
        summary = json.loads(meta.read_text())
        if summary.get("settings") == settings.to_json():
            log(f"{settings.method}: cached PPO policy {path} ({summary['timesteps_done']} steps)")
            return load_policy_state(path), summary
        log(f"{settings.method}: cached {path} was trained with other settings; retraining")
    log(f"{settings.method}: training PPO for {settings.timesteps} steps -> {path}")
    summary = train_ppo(settings, path, progress)
    log(f"{settings.method}: {summary['timesteps_done']} steps in {summary['train_seconds']} s, "
        f"final training return {summary['final_train_return']}")
    return load_policy_state(path), summary


def _linear_layers(state: dict[str, torch.Tensor], prefix: str) -> list[str]:
    indices = sorted({int(k[len(prefix):].split(".")[0]) for k in state if k.startswith(prefix)})
    return [f"{prefix}{i}" for i in indices]


@torch.no_grad()
def copy_sb3_weights(state: dict[str, torch.Tensor], policy: nn.Module) -> nn.Module:
    """Copy an SB3 ``ActorCriticPolicy``'s actor (``mlp_extractor.policy_net`` layers, then
    ``action_net``, and ``log_std``) into our MLP policy of the same architecture, in place.
    Raises ``ValueError`` when the architectures differ."""
    if isinstance(policy, GaussianMLPPolicy):
        head = policy.mean
    elif isinstance(policy, CategoricalMLPPolicy):
        head = policy.logits
    else:
        raise TypeError(f"no SB3 weight mapping for {type(policy).__name__}")
    ours = [m for m in head if isinstance(m, nn.Linear)]
    theirs = [*_linear_layers(state, "mlp_extractor.policy_net."), "action_net"]
    if len(ours) != len(theirs):
        raise ValueError(f"PPO actor has {len(theirs)} linear layers, the policy {len(ours)}")
    for layer, name in zip(ours, theirs, strict=True):
        for attr in ("weight", "bias"):
            source = state[f"{name}.{attr}"]
            target = getattr(layer, attr)
            if source.shape != target.shape:
                raise ValueError(f"{name}.{attr}: PPO shape {tuple(source.shape)}, policy shape "
                                 f"{tuple(target.shape)}")
            target.copy_(source)
    if isinstance(policy, GaussianMLPPolicy):
        policy.log_std.copy_(state["log_std"])
    return policy


def oracle_observation_space(env_id: str, env_kwargs: dict[str, Any]) -> gym.Space:
    """The family's observation space with the task parameters appended."""
    env = TaskSamplingWrapper(gym.make(env_id, **env_kwargs), observe_task=True)
    space = env.observation_space
    env.close()
    return space


def evaluate_baselines(
    learner: RLMetaLearner, num_tasks: int, steps: int, seed: int, cache_dir: str | Path,
    timesteps: int | None = None, progress: bool = True, log: Callable[[str], None] = print,
    tasks: Sequence[Any] | None = None, **ppo: Any,
) -> list[AdaptationCurve]:
    """Curves of pretrained, random and oracle on the held-out tasks of
    ``learner.evaluate(num_tasks, steps, seed, tasks=tasks)``: the same tasks, episodes per
    step, inner step sizes and seeds as MAML. Trains (or loads from ``cache_dir``) the two PPO
    policies first; ``ppo`` overrides :class:`PPOSettings` fields (e.g. ``n_envs``,
    ``n_steps`` in tests)."""
    config, family = learner.config, learner.family
    states = {
        method: load_or_train(settings_for(config, method, learner.horizon, timesteps, **ppo),
                              cache_dir, progress, log)[0]
        for method in ("pretrained", "oracle")
    }
    device = learner.device

    def fresh(observation_space: gym.Space) -> nn.Module:
        return build_model(config.policy, observation_space, family.action_space,
                           supervised=False)

    pretrained = copy_sb3_weights(states["pretrained"], fresh(family.observation_space))
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        random_init = fresh(family.observation_space)
    oracle = copy_sb3_weights(
        states["oracle"], fresh(oracle_observation_space(family.env_id, family.env_kwargs))
    )
    curves = [
        learner.evaluate(num_tasks, steps, seed, "pretrained", policy=pretrained.to(device),
                         tasks=tasks),
        learner.evaluate(num_tasks, steps, seed, "random", policy=random_init.to(device),
                         tasks=tasks),
        learner.evaluate(num_tasks, 0, seed, "oracle", policy=oracle.to(device),
                         env_wrapper=TaskObservationVectorEnv, tasks=tasks),
    ]
    curves[-1].flat = True
    return curves
