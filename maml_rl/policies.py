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


class Linear(nn.Linear):
    """``nn.Linear`` that also takes parameters stacked per task.

    Called functionally with a weight ``[M, out, in]`` and a bias ``[M, out]`` (one set per
    task of a meta-batch) on inputs ``[M, ..., in]``, it applies task i's parameters to task
    i's inputs in one batched matmul (``torch.baddbmm``). Every task of a meta-batch then runs
    through each layer, and through each backward and double-backward pass, as one kernel
    instead of one per task: this is ``meta.task_batching: stacked``
    (:func:`maml_rl.adaptation.map_tasks`). With its own 2-D parameters it is ``nn.Linear``,
    state dict included."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.dim() == 2:
            return super().forward(x)
        tasks = self.weight.shape[0]
        rows = x.reshape(tasks, -1, x.shape[-1])
        out = torch.baddbmm(self.bias.unsqueeze(1), rows, self.weight.transpose(1, 2))
        return out.reshape(*x.shape[:-1], out.shape[-1])


def mlp(
    in_dim: int,
    out_dim: int,
    hidden_sizes: Sequence[int],
    nonlinearity: str = "relu",
    batch_norm: bool = False,
) -> nn.Sequential:
    """A fully connected network ``in -> hidden... -> out`` with no output activation;
    ``batch_norm`` adds :class:`BatchNorm` after every hidden linear layer."""
    layers: list[nn.Module] = []
    sizes = [in_dim, *hidden_sizes]
    for a, b in itertools.pairwise(sizes):
        layers.append(Linear(a, b))
        if batch_norm:
            layers.append(BatchNorm(b))
        layers.append(NONLINEARITIES[nonlinearity]())
    layers.append(Linear(sizes[-1], out_dim))
    return nn.Sequential(*layers)


def init_linear_layers(net: nn.Module, weight_init: str) -> nn.Module:
    """Re-initialise ``net``'s linear layers in place and return it. ``torch`` keeps PyTorch's
    default; ``xavier`` is the MAML paper code's policy init (Glorot-uniform weights, zero
    biases). The biases matter most for 2D navigation, whose episodes start at the origin: there
    the first layer's bias alone decides which ReLUs are on."""
    if weight_init == "torch":
        return net
    if weight_init != "xavier":
        raise ValueError(f"weight_init={weight_init!r}; allowed: 'torch', 'xavier'")
    for layer in net.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    return net


class BatchNorm(nn.Module):
    """Batch normalisation as in the MAML paper's classifiers (Sec. 5.2): always the statistics
    of the current batch, over the batch and any spatial dimensions of ``[B, C, ...]`` inputs
    (no running averages: the module has no buffers, so it is a pure function of its parameters
    under ``torch.func.functional_call`` / ``vmap``, and a task's query set is normalised by its
    own statistics, as in the paper's code); the affine scale and shift are parameters,
    meta-learned and adapted like the weights.

    Written with elementary tensor ops, not ``nn.BatchNorm2d(track_running_stats=False)``, which
    computes the same function: through the fused kernel, the second-order meta-gradient under
    ``torch.func.vmap`` over tasks (torch 2.13) came out different from the per-task loop and
    from finite differences for every layer below a batch norm, while the first-order one and
    the loop were right. The elementary ops are differentiated correctly under every transform
    (a test checks vmap against the loop).
    """

    def __init__(self, num_features: int, eps: float = 1e-3) -> None:
        super().__init__()
        # eps 1e-3 is TensorFlow's default, used by the MAML and learn2learn Omniglot models:
        # with 1-shot batches of five images the variance of the last conv blocks can be tiny.
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = (0, *range(2, x.dim()))
        mean = x.mean(dims, keepdim=True)
        var = x.var(dims, unbiased=False, keepdim=True)  # the biased estimate, as BatchNorm
        shape = (1, -1) + (1,) * (x.dim() - 2)
        scale = torch.rsqrt(var + self.eps) * self.weight.view(shape)
        return (x - mean) * scale + self.bias.view(shape)


class RegressionMLP(nn.Module):
    """Deterministic regressor ``x -> y`` (the paper's sinusoid network is 1-40-40-1 ReLU), also
    the logits of an MLP classifier.

    ``in_shape`` is the input size or, for images, their shape (flattened first). With
    ``batch_norm`` every hidden layer is followed by batch normalisation: the paper's
    non-convolutional Omniglot network, 256-128-64-64 (MAML Sec. 5.2, after Santoro et al. 2016),
    initialised as in the paper's code (cbfinn/maml ``construct_fc_weights``: truncated normal
    with std 0.01, zero biases).
    """

    def __init__(
        self,
        in_shape: int | Sequence[int],
        out_dim: int,
        hidden_sizes=(40, 40),
        nonlinearity="relu",
        batch_norm: bool = False,
    ):
        super().__init__()
        shape = (in_shape,) if isinstance(in_shape, int) else tuple(in_shape)
        self.in_ndim = len(shape)
        self.net = mlp(int(np.prod(shape)), out_dim, hidden_sizes, nonlinearity, batch_norm)
        if batch_norm:
            for layer in self.net:
                if isinstance(layer, nn.Linear):
                    nn.init.trunc_normal_(layer.weight, std=0.01, a=-0.02, b=0.02)
                    nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_ndim > 1:
            x = x.flatten(-self.in_ndim)
        return self.net(x)


class ConvClassifier(nn.Module):
    """The MAML paper's convolutional classifier (Sec. 5.2, after Vinyals et al. 2016): four
    blocks of 3x3 convolution with ``filters`` channels, batch normalisation
    (:class:`BatchNorm`), ReLU and 2x2 down-sampling, then the spatial mean of the last
    feature map and a linear layer to the logits.

    ``downsample="max_pool"`` is the paper's text (2x2 max-pooling; 28x28 -> 1x1, "the
    dimensionality of the last hidden layer is 64"); ``"stride"`` is what its code ran for
    Omniglot (cbfinn/maml: ``max_pool`` defaults to False, so each convolution has stride 2 and
    the 2x2 map that is left is averaged), and costs about a third of the compute. Initialised as
    that code: Xavier-uniform convolutions, zero biases, standard-normal output weights.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        num_outputs: int,
        filters: int = 64,
        downsample: str = "max_pool",
        blocks: int = 4,
    ):
        super().__init__()
        if downsample not in ("max_pool", "stride"):
            raise ValueError(f"downsample must be 'max_pool' or 'stride', got {downsample!r}")
        channels = in_shape[0]
        layers: list[nn.Module] = []
        for _ in range(blocks):
            stride = 2 if downsample == "stride" else 1
            conv = nn.Conv2d(channels, filters, 3, stride=stride, padding=1)
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
            layers += [conv, BatchNorm(filters), nn.ReLU()]
            if downsample == "max_pool":
                layers.append(nn.MaxPool2d(2))
            channels = filters
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(filters, num_outputs)
        nn.init.normal_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [batch, C, H, W]; the batch dimension is required (batch statistics).
        return self.head(self.features(x).mean(dim=(-2, -1)))


class GaussianMLPPolicy(nn.Module):
    """Gaussian policy: MLP mean, learned state-independent log-std (MAML paper, Sec. 5.2)."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_sizes=(100, 100),
        nonlinearity="relu",
        init_std: float = 1.0,
        weight_init: str = "torch",
    ):
        super().__init__()
        self.mean = init_linear_layers(
            mlp(obs_dim, act_dim, hidden_sizes, nonlinearity), weight_init
        )
        self.log_std = nn.Parameter(torch.full((act_dim,), math.log(init_std)))

    def forward(self, obs: torch.Tensor) -> torch.distributions.Distribution:
        loc, std = self.mean(obs), self.log_std.exp()
        if std.dim() > 1:  # stacked per task ([M, act]): broadcast over each task's states
            std = std.reshape(std.shape[0], *([1] * (loc.dim() - 2)), std.shape[-1])
        return Independent(Normal(loc, std), 1)


class CategoricalMLPPolicy(nn.Module):
    """Categorical policy over discrete actions with MLP logits."""

    def __init__(
        self,
        obs_dim: int,
        num_actions: int,
        hidden_sizes=(100, 100),
        nonlinearity="relu",
        weight_init: str = "torch",
    ):
        super().__init__()
        self.logits = init_linear_layers(
            mlp(obs_dim, num_actions, hidden_sizes, nonlinearity), weight_init
        )

    def forward(self, obs: torch.Tensor) -> torch.distributions.Distribution:
        return Categorical(logits=self.logits(obs))


def build_model(
    policy_config, observation_space: gym.Space, action_space: gym.Space, supervised: bool
) -> nn.Module:
    """The module for a family: for supervised families a regressor / classifier (``policy.model``
    ``mlp`` or ``conv``), else a stochastic MLP policy. Raises ValueError (one line) for a
    model that does not fit the family's spaces."""
    if not isinstance(observation_space, gym.spaces.Box):
        raise ValueError(
            f"observation space {observation_space} is not a Box; "
            "only Box observations are supported by the policies and models"
        )
    if isinstance(action_space, gym.spaces.Discrete):
        out_dim = int(action_space.n)
    elif isinstance(action_space, gym.spaces.Box):
        out_dim = int(np.prod(action_space.shape))
    else:
        raise ValueError(f"action space {action_space} is neither Box nor Discrete")
    hidden, act = policy_config.hidden_sizes, policy_config.nonlinearity
    shape = observation_space.shape
    if not supervised and (policy_config.model != "mlp" or policy_config.batch_norm):
        raise ValueError(
            "policy.model: conv and policy.batch_norm are for supervised families; "
            "RL policies are MLPs (policy.model: mlp, policy.batch_norm: false)"
        )
    if supervised and policy_config.weight_init != "torch":
        raise ValueError(
            f"policy.weight_init: {policy_config.weight_init} is for RL policies; supervised "
            "models keep the paper's initialisation (leave policy.weight_init: torch)"
        )
    if policy_config.model == "conv":
        if len(shape) != 3:
            raise ValueError(
                f"policy.model: conv needs image observations (channels, height, width); "
                f"this family's have shape {shape}"
            )
        return ConvClassifier(
            shape, out_dim, policy_config.conv_filters, policy_config.conv_downsample
        )
    if supervised:
        # Discrete actions: classification, the outputs are logits read by the cross-entropy.
        in_shape = shape if len(shape) > 1 else int(np.prod(shape))
        return RegressionMLP(in_shape, out_dim, hidden, act, policy_config.batch_norm)
    obs_dim = int(np.prod(shape))
    if isinstance(action_space, gym.spaces.Discrete):
        return CategoricalMLPPolicy(obs_dim, out_dim, hidden, act, policy_config.weight_init)
    return GaussianMLPPolicy(
        obs_dim, out_dim, hidden, act, policy_config.init_std, policy_config.weight_init
    )


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
