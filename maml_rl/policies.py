"""Policies and models: plain ``torch.nn.Module``s, called functionally with adapted parameters.

Nothing here knows about adaptation: MAML passes each task's parameters through
``torch.func.functional_call`` (see :mod:`maml_rl.adaptation`), never by mutating a module.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, Independent, Normal

NONLINEARITIES = {"relu": nn.ReLU, "tanh": nn.Tanh}


def mlp(in_dim: int, out_dim: int, hidden_sizes: Sequence[int], nonlinearity: str = "relu"):
    """A fully connected network ``in -> hidden... -> out`` with no output activation."""
    layers: list[nn.Module] = []
    sizes = [in_dim, *hidden_sizes]
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), NONLINEARITIES[nonlinearity]()]
    layers.append(nn.Linear(sizes[-1], out_dim))
    return nn.Sequential(*layers)


class RegressionMLP(nn.Module):
    """Deterministic regressor ``x -> y`` (the paper's sinusoid network is 1-40-40-1 ReLU)."""

    def __init__(self, in_dim: int, out_dim: int, hidden_sizes=(40, 40), nonlinearity="relu"):
        super().__init__()
        self.net = mlp(in_dim, out_dim, hidden_sizes, nonlinearity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class GaussianMLPPolicy(nn.Module):
    """Gaussian policy: MLP mean, learned state-independent log-std (MAML paper, Sec. 5.2)."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_sizes=(100, 100),
        nonlinearity="relu",
        init_std: float = 1.0,
    ):
        super().__init__()
        self.mean = mlp(obs_dim, act_dim, hidden_sizes, nonlinearity)
        self.log_std = nn.Parameter(torch.full((act_dim,), math.log(init_std)))

    def forward(self, obs: torch.Tensor) -> torch.distributions.Distribution:
        return Independent(Normal(self.mean(obs), self.log_std.exp()), 1)


class CategoricalMLPPolicy(nn.Module):
    """Categorical policy over discrete actions with MLP logits."""

    def __init__(
        self, obs_dim: int, num_actions: int, hidden_sizes=(100, 100), nonlinearity="relu"
    ):
        super().__init__()
        self.logits = mlp(obs_dim, num_actions, hidden_sizes, nonlinearity)

    def forward(self, obs: torch.Tensor) -> torch.distributions.Distribution:
        return Categorical(logits=self.logits(obs))


def build_model(
    policy_config, observation_space: gym.Space, action_space: gym.Space, supervised: bool
) -> nn.Module:
    """The module for a family: a regressor for supervised families, else a stochastic policy."""
    if not isinstance(observation_space, gym.spaces.Box):
        raise ValueError(
            f"observation space {observation_space} is not a Box; "
            "only flat Box observations are supported by the MLP policies"
        )
    obs_dim = int(np.prod(observation_space.shape))
    hidden, act = policy_config.hidden_sizes, policy_config.nonlinearity
    if isinstance(action_space, gym.spaces.Discrete):
        if supervised:
            # Classification: logits over the classes, read by the cross-entropy objective.
            return RegressionMLP(obs_dim, int(action_space.n), hidden, act)
        return CategoricalMLPPolicy(obs_dim, int(action_space.n), hidden, act)
    if isinstance(action_space, gym.spaces.Box):
        act_dim = int(np.prod(action_space.shape))
        if supervised:
            return RegressionMLP(obs_dim, act_dim, hidden, act)
        return GaussianMLPPolicy(obs_dim, act_dim, hidden, act, policy_config.init_std)
    raise ValueError(f"action space {action_space} is neither Box nor Discrete")


def distribution_tensors(
    dist: torch.distributions.Distribution,
) -> tuple[str, tuple[torch.Tensor, ...]]:
    """The tensors that define one of our policy distributions (to cross ``torch.func.vmap``)."""
    if isinstance(dist, Independent) and isinstance(dist.base_dist, Normal):
        base = dist.base_dist
        return "gaussian", (base.loc, base.scale.expand_as(base.loc))
    if isinstance(dist, Categorical):
        return "categorical", (dist.logits,)
    raise TypeError(f"unsupported policy distribution {type(dist).__name__}")


def distribution_from_tensors(kind: str, tensors) -> torch.distributions.Distribution:
    """Inverse of :func:`distribution_tensors`."""
    if kind == "gaussian":
        loc, scale = tensors
        return Independent(Normal(loc, scale), 1)
    return Categorical(logits=tensors[0])
