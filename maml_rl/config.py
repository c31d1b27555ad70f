"""Typed experiment configuration: one dataclass per YAML section, one field per key.

A config is read from YAML with ``yaml.safe_load``, overridden from the command line with
``section.key=value`` (values parsed as YAML), validated field by field, and then completed by
:meth:`Config.resolve`, the one place where derived values are computed. Every mistake raises a
:class:`ConfigError` whose message is one line naming the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A configuration mistake; the message is one line fit for a user."""


def _range(**bounds: float) -> dict[str, Any]:
    """Field metadata: ``gt``, ``ge``, ``le`` bounds checked at validation."""
    return {"bounds": bounds}


@dataclass
class EnvConfig:
    """The task family."""

    id: str = "maml/Sinusoid-v0"
    """Registered Gymnasium id of the task family (``maml/...`` or a user's own)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments passed to the environment constructor."""
    module: str = ""
    """Python module imported before the env is made (registers a user's own family)."""


@dataclass
class PolicyConfig:
    """The policy (RL) or model (supervised): a plain ``torch.nn.Module``."""

    hidden_sizes: list[int] = field(default_factory=lambda: [100, 100])
    """Widths of the hidden layers of the MLP."""
    nonlinearity: Literal["relu", "tanh"] = "relu"
    """Activation between hidden layers."""
    init_std: float = field(default=1.0, metadata=_range(gt=0))
    """Initial standard deviation of a Gaussian policy (its log is learned, state-independent)."""
    weight_init: Literal["torch", "xavier"] = "torch"
    """Initialisation of an RL policy's linear layers: ``torch`` (PyTorch's default, weights and
    biases uniform in +-1/sqrt(fan_in)) or ``xavier`` (Glorot-uniform weights, zero biases: the
    paper code's ``create_MLP`` in cbfinn/maml_rl). Supervised models keep their paper init."""
    model: Literal["mlp", "conv"] = "mlp"
    """Network of a supervised family: ``mlp`` (``hidden_sizes``) or ``conv``, the MAML paper's
    4-block convolutional classifier for images (Sec. 5.2). RL policies are MLPs."""
    batch_norm: bool = False
    """Batch normalisation after every hidden layer of the supervised MLP (the paper's Omniglot
    MLP). Batch statistics always, no running averages, affine parameters adapted in the inner
    loop, as in the paper; the conv net always has it."""
    conv_filters: int = field(default=64, metadata=_range(ge=1))
    """Channels of every convolution of ``model: conv`` (64 for Omniglot in the paper)."""
    conv_downsample: Literal["max_pool", "stride"] = "max_pool"
    """How each conv block halves the image: ``max_pool`` (2x2 max-pooling, the paper's text) or
    ``stride`` (stride-2 convolutions, what the paper's code ran for Omniglot; cheaper:
    docs/results/speed.md)."""


@dataclass
class InnerConfig:
    """The inner loop: adaptation by gradient steps, MAML paper Eq. (1)."""

    lr: float | list[float] = 0.1
    """Inner step size alpha; a list gives one per step, its last entry repeating (0.1, 0.05)."""
    steps: int = field(default=1, metadata=_range(ge=1))
    """Number of inner gradient steps during meta-training."""
    first_order: bool = False
    """Drop the second-order term of the meta-gradient (first-order MAML)."""
    gamma: float = field(default=0.99, metadata=_range(gt=0, le=1))
    """Discount factor (RL families)."""
    gae_lambda: float = field(default=1.0, metadata=_range(ge=0, le=1))
    """GAE lambda (RL families); 1.0 gives Monte-Carlo returns minus the baseline."""
    objective: Literal["reinforce", "lvc"] = "reinforce"
    """Inner policy-gradient objective (RL families). ``reinforce``: ``-E[log pi * A]`` (the MAML
    paper). ``lvc``: ProMP's low-variance curvature estimator ``-E[pi / pi_old * A]`` (Rothfuss et
    al. 2019, Eq. 12): the same gradient, a Hessian with the score-function term of the sampling
    distribution, and an importance weight once theta has moved from the sampling policy."""


#: The values of ``algorithm`` (:mod:`maml_rl.algorithms` has one module per algorithm;
#: ``maml_rl.algorithms.register_algorithm`` adds to this list).
ALGORITHM_NAMES: list[str] = [
    "maml", "fomaml", "reptile", "metasgd", "anil", "imaml", "platipus",
]
#: The values of ``meta.optimizer`` (:mod:`maml_rl.meta_updates`;
#: ``maml_rl.meta_updates.register_meta_update`` adds to this list).
META_UPDATE_NAMES: list[str] = ["adam", "sgd", "trpo", "ppo"]


@dataclass
class MetaConfig:
    """The meta-update (outer loop)."""

    optimizer: str = field(default="adam", metadata={"choices": META_UPDATE_NAMES})
    """``adam`` / ``sgd``: plain gradient on the post-adaptation loss; ``trpo``: TRPO step;
    ``ppo``: ProMP's clipped surrogate, ``ppo_epochs`` Adam steps per iteration (RL only)."""
    lr: float = field(default=1e-3, metadata=_range(gt=0))
    """Meta learning rate beta (adam / sgd)."""
    lr_milestones: list[int] | None = None
    """A step schedule of ``lr`` as torch's ``MultiStepLR`` (null: constant): after each of these
    iterations it is multiplied by ``lr_gamma``, so iteration i uses ``lr * lr_gamma ** #{m < i}``.
    Increasing positive iterations; for adam / sgd / ppo (TRPO has no learning rate). Resumed
    runs follow it from their iteration."""
    lr_gamma: float = field(default=0.1, metadata=_range(gt=0, le=1))
    """Factor applied to ``lr`` at each of ``lr_milestones``."""
    max_kl: float = field(default=0.01, metadata=_range(gt=0))
    """TRPO trust region: largest mean KL between old and new adapted policies."""
    cg_iters: int = field(default=10, metadata=_range(ge=1))
    """Conjugate-gradient iterations of the TRPO step."""
    cg_damping: float = field(default=1e-5, metadata=_range(ge=0))
    """Damping added to the Hessian-vector products of the KL."""
    ls_backtrack_ratio: float = field(default=0.8, metadata=_range(gt=0, le=1))
    """Step shrink factor of the TRPO backtracking line search."""
    ls_max_steps: int = field(default=15, metadata=_range(ge=1))
    """Most line-search steps before the update is rejected and the parameters restored."""
    ppo_epochs: int = field(default=5, metadata=_range(ge=1))
    """``ppo``: Adam steps on the same episodes per meta-iteration (ProMP: 5)."""
    clip_eps: float = field(default=0.3, metadata=_range(gt=0, lt=1))
    """``ppo``: clipping range of the post-adaptation likelihood ratio (ProMP: 0.3)."""
    inner_kl_penalty: float = field(default=5e-4, metadata=_range(ge=0))
    """``ppo``: weight of the KL between the pre-update policies before and after the update,
    on the support episodes (ProMP's inner trust region, fixed coefficient)."""
    curvature: Literal["fisher", "hessian"] = "fisher"
    """How TRPO's KL-Hessian products are computed: ``fisher`` as ``J^T F J`` through the
    adaptation (maml_rl/meta_updates/curvature.py; equal to the Hessian at the current parameters,
    and cheaper: no third derivatives of the inner loss) or ``hessian`` by differentiating the KL's
    gradient again (the reference; benchmarks/bench_trpo.py compares them)."""
    hvp_task_fraction: float = field(default=1.0, metadata=_range(gt=0, le=1))
    """Fraction of the meta-batch's tasks whose KL gives the TRPO Hessian-vector products
    (1.0: exact). Each product costs proportionally less; the line search still checks the KL
    of every task. Measured in benchmarks/bench_trpo.py."""
    task_batching: Literal["auto", "vmap", "loop", "stacked"] = "auto"
    """How tasks of a meta-batch are processed together: ``torch.func.vmap``, a Python loop,
    or ``stacked`` (RL policies: parameters stacked per task, one batched matmul per layer for
    every task). ``auto`` picks what measured fastest for the family and device
    (docs/results/speed.md): vmap for supervised families, stacked for RL on GPU, a loop for RL
    on CPU."""


@dataclass
class ReptileConfig:
    """Reptile (Nichol, Achiam & Schulman 2018), read when ``algorithm: reptile``.

    Its inner loop is ``inner.steps`` plain SGD steps of ``inner.lr`` on the task's support set;
    its outer step size epsilon is ``meta.lr``: the pseudo-gradient ``theta - mean_i theta_i``
    goes to the meta-optimizer, so ``meta.optimizer: sgd`` gives the paper's update
    ``theta + epsilon * mean_i(theta_i - theta)`` exactly and ``adam`` its Adam variant."""

    anneal: bool = False
    """Decay the outer step size (``meta.lr``) linearly to 0 over ``training.iterations``, as
    the Reptile paper's sine-wave experiment does."""


@dataclass
class IMAMLConfig:
    """Implicit MAML (Rajeswaran, Finn, Kakade & Levine 2019), read when ``algorithm: imaml``.

    The inner problem ``min_phi L(phi) + lam/2 ||phi - theta||^2`` is solved approximately by
    ``inner.steps`` gradient steps of ``inner.lr`` (line-searched with ``backtracks``); the
    meta-gradient ``(I + H/lam)^-1 grad L_query(phi)`` by conjugate gradient."""

    lam: float = field(default=1.0, metadata=_range(gt=0))
    """Strength lambda of the proximal term that keeps the adapted parameters near theta."""
    cg_steps: int = field(default=5, metadata=_range(ge=1))
    """Conjugate-gradient iterations (Hessian-vector products) for the implicit meta-gradient."""
    solver: Literal["gd", "newton_cg"] = "gd"
    """Inner solver of the proximal problem: ``gd``, gradient steps of ``inner.lr``; or
    ``newton_cg``, Newton steps ``(H + lam I)^-1 grad`` of size ``inner.lr`` (1.0 is the full
    Newton step) with the direction from ``inner_cg_steps`` conjugate-gradient iterations of
    Hessian-vector products (Hessian-free, as the iMAML paper's solver). Newton steps follow
    the curvature, which iMAML's outer loop raises until fixed gradient steps overshoot
    (docs/reference/algorithms.md)."""
    inner_cg_steps: int = field(default=5, metadata=_range(ge=1))
    """Conjugate-gradient iterations per ``newton_cg`` inner step."""
    backtracks: int = field(default=0, metadata=_range(ge=0))
    """Line search of each inner step: try ``inner.lr / 2^j`` for j = 0..backtracks (and no
    step) and keep what lowers the proximal objective most; 0: fixed steps of ``inner.lr``.
    Fixed gradient steps diverged on the sinusoid: iMAML's outer loop raises the curvature (the
    exact proximal solution improves with it) until ``inner.lr`` is too large
    (docs/reference/algorithms.md)."""


@dataclass
class PlatipusConfig:
    """Probabilistic MAML (Finn, Xu & Levine 2018, PLATIPUS), read when ``algorithm: platipus``.

    theta has a learned diagonal Gaussian prior ``N(mu, sigma^2)`` (``mu``: the model's
    parameters). Meta-training maximises the variational lower bound of the paper's Eq. (4):
    theta drawn from ``q = N(mu - gamma_q grad L(mu, D_query), v_q^2)``, the query loss after
    the inner steps from it, plus ``kl_weight`` times ``KL(q || N(mu - gamma_p grad L(mu,
    D_support), sigma^2))``. Adaptation (Algorithm 2) draws theta from that last Gaussian, then
    takes the inner steps; each draw is one plausible adapted model."""

    kl_weight: float = field(default=1.0e-3, metadata=_range(ge=0))
    """Weight of the KL term against the mean query loss (the KL is a sum over every
    parameter)."""
    init_std: float = field(default=0.01, metadata=_range(gt=0))
    """Initial prior std sigma and posterior std v_q, every entry (both are learned)."""


@dataclass
class SamplingConfig:
    """What is drawn each meta-iteration."""

    meta_batch_size: int = field(default=25, metadata=_range(ge=1))
    """Tasks per meta-iteration."""
    support_size: int = field(default=5, metadata=_range(ge=1))
    """Episodes per task for each inner step (K shots for supervised families)."""
    query_size: int = field(default=10, metadata=_range(ge=1))
    """Episodes per task for the outer (validation) loss."""
    horizon: int = field(default=0, metadata=_range(ge=0))
    """Episode length; 0 takes the env's registered ``max_episode_steps``."""


@dataclass
class TrainingConfig:
    """The meta-training loop."""

    iterations: int = field(default=500, metadata=_range(ge=1))
    """Meta-iterations to run."""
    checkpoint_every: int = field(default=100, metadata=_range(ge=1))
    """Write a checkpoint every this many iterations (and always at the end)."""


@dataclass
class EvaluationConfig:
    """Adaptation to held-out tasks (also used at the end of training)."""

    num_tasks: int = field(default=40, metadata=_range(ge=1))
    """Held-out tasks, drawn with ``seed``."""
    steps: int = field(default=3, metadata=_range(ge=0))
    """Largest number of inner gradient steps reported (0..steps)."""
    lr: float | list[float] | None = None
    """Inner step sizes at evaluation; None uses ``inner.lr``."""
    support_size: int = field(default=0, metadata=_range(ge=0))
    """Episodes (shots) per task per step; 0 uses ``sampling.support_size``."""
    query_size: int = field(default=0, metadata=_range(ge=0))
    """Query episodes (examples) per task; 0 uses ``sampling.query_size``."""
    max_backtracks: int = field(default=0, metadata=_range(ge=0, le=30))
    """Supervised families: halve an evaluation step up to this many times when the full step
    would raise the task's support loss (0: plain steps, the papers' protocol). Keeps repeated
    steps of a fixed alpha from diverging on tasks whose support loss is too curved for it
    (:func:`maml_rl.adaptation.backtracking`)."""
    query_batch: int = field(default=0, metadata=_range(ge=0))
    """Supervised families: query examples predicted together, in consecutive class-balanced
    batches of this size whose accuracies are averaged; 0 predicts the whole query set at once.
    It matters for batch norm with batch statistics (MAML's Omniglot network), where a
    prediction depends on the batch it is in: ``sampling.query_size`` evaluates as meta-training
    predicted (the paper code's test protocol, K query examples per class) while
    ``query_size`` can stay large for tight per-task estimates."""
    task_chunk: int = field(default=0, metadata=_range(ge=0))
    """RL families: held-out tasks adapted together (their episodes' envs exist at once); 0:
    all of a process's tasks. The numbers do not depend on it (episodes are seeded per task).
    Lower it when the envs are large: 50 Meta-World tasks x 10 episodes hold 500 envs, about
    11 GB."""
    seed: int = 1234
    """Seed of the held-out tasks, fixed so that runs are compared on the same tasks."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments merged over ``env.kwargs`` for the held-out tasks, e.g. ``{split: test}``
    so that Omniglot's test tasks come from alphabets never seen in meta-training."""
    at_end: bool = True
    """Evaluate once when training finishes and write ``eval/`` in the run directory."""
    every: int = field(default=0, metadata=_range(ge=0))
    """During training, evaluate every this many meta-iterations (0: never) on
    ``every_tasks`` tasks and log ``eval/<metric>_step_<k>`` (metrics.csv, TensorBoard)."""
    every_tasks: int = field(default=10, metadata=_range(ge=1))
    """Held-out tasks of the periodic evaluation, drawn with ``seed`` (the same every time)."""


@dataclass
class LoggingConfig:
    """What a run writes and shows."""

    run_root: str = "runs"
    """Folder in which a run directory is created when ``--run-dir`` is not given."""
    tensorboard: bool = True
    """Write TensorBoard events next to ``metrics.csv``."""
    progress: bool = True
    """Show a progress bar."""


@dataclass
class DistributedConfig:
    """Runs launched by ``torchrun`` (docs/guide/scaling_out.md); ignored in one process."""

    timeout_s: float = field(default=300.0, metadata=_range(gt=0))
    """Seconds a collective waits for the other processes before the run stops with one line
    naming the cause (a process that died or hung), instead of waiting forever."""
    check_every: int = field(default=10, metadata=_range(ge=0))
    """Every this many iterations, check that the meta-parameters are bit-identical on every
    process (0: never)."""



@dataclass
class Config:
    """A whole experiment."""

    algorithm: str = field(default="maml", metadata={"choices": ALGORITHM_NAMES})
    """``maml`` (second order), ``fomaml`` (first order, same as ``inner.first_order: true``),
    ``reptile``, ``metasgd`` (learned per-parameter inner rates), ``anil`` (only the last layer
    adapts), ``imaml`` (proximal inner problem, implicit meta-gradient), ``platipus``
    (Probabilistic MAML: a learned Gaussian over theta, one sampled model per adaptation,
    supervised only). RL families: maml,
    fomaml, metasgd and anil. See docs/reference/algorithms.md."""
    env: EnvConfig = field(default_factory=EnvConfig)
    """Task family."""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """Policy or model."""
    inner: InnerConfig = field(default_factory=InnerConfig)
    """Inner loop."""
    meta: MetaConfig = field(default_factory=MetaConfig)
    """Meta-update."""
    reptile: ReptileConfig = field(default_factory=ReptileConfig)
    """Reptile's own settings."""
    imaml: IMAMLConfig = field(default_factory=IMAMLConfig)
    """iMAML's own settings."""
    platipus: PlatipusConfig = field(default_factory=PlatipusConfig)
    """Probabilistic MAML's own settings."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """Sampling."""
    training: TrainingConfig = field(default_factory=TrainingConfig)
    """Training loop."""
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    """Evaluation."""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """Logging."""
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    """Several processes (torchrun)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the policy runs: ``cpu``, ``cuda``, or ``auto`` (cuda when available)."""
    seed: int = 0
    """Seed of everything random in a run: tasks, environments, initialisation."""
    threads: int = field(default=1, metadata=_range(ge=0))
    """CPU threads for torch's operations (0: torch's default, every core). One by default:
    a policy's small tensors gain little from more, and several threads waiting for each other
    collapse when another process takes a core (docs/guide/scaling.md). Physics has its own
    threads."""

    def inner_step_sizes(self, steps: int | None = None, lr: float | list[float] | None = None):
        """Step size of each of ``steps`` inner steps (the last listed one repeats)."""
        steps = self.inner.steps if steps is None else steps
        return step_sizes(self.inner.lr if lr is None else lr, steps)

    def task_batching(self, supervised: bool, device: str, evaluation: bool = False) -> str:
        """``meta.task_batching`` with ``auto`` resolved by what measured fastest
        (docs/results/speed.md; benchmarks/bench_meta_iteration.py, bench_trpo.py,
        bench_omniglot.py): vmap for the small supervised networks, parameters stacked per
        task for RL policies on GPU, and a Python loop over tasks for RL policies on CPU (whose
        meta-step is bound by arithmetic there, and one task's activations stay in cache).
        ``evaluation=True``: the batching of the held-out evaluation, where ``auto`` takes a loop
        for the conv net on CPU (vmap's activations of a whole chunk of tasks are hundreds of
        MB there)."""
        if self.meta.task_batching != "auto":
            return self.meta.task_batching
        if evaluation and self.policy.model == "conv" and not device.startswith("cuda"):
            return "loop"
        if supervised:
            return "vmap"
        return "stacked" if device.startswith("cuda") else "loop"

    def resolve_device(self) -> str:
        """The torch device string this run uses."""
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError(
                "device: 'cuda' asked for but torch sees no CUDA device; allowed here: auto, cpu"
            )
        return self.device

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def step_sizes(lr: float | list[float], steps: int) -> list[float]:
    """Expand a step-size setting to one value per step (the last listed value repeats)."""
    values = [float(lr)] if isinstance(lr, int | float) else [float(v) for v in lr]
    return [values[min(k, len(values) - 1)] for k in range(steps)]


# ---------------------------------------------------------------------------------------------
# Validation


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    if origin is list:
        item = typing.get_args(tp)[0]
        return "a non-empty list of " + {int: "integers", float: "numbers"}.get(item, str(item))
    if origin is dict:
        return "a mapping"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    return str(tp)


def _as_float(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
        return float(value)  # ValueError for anything else
    raise TypeError


def _as_scalar(value: Any, tp: type) -> Any:
    if tp is float:
        return _as_float(value)
    if tp is int and isinstance(value, bool):
        raise TypeError
    if tp is type(None):
        if value is None:
            return None
        raise TypeError
    if isinstance(value, tp):
        return value
    raise TypeError


def _coerce(value: Any, tp: Any) -> Any:
    """Return ``value`` as type ``tp`` or raise TypeError (no silent conversions)."""
    origin = typing.get_origin(tp)
    if origin is None:
        try:
            return _as_scalar(value, tp)
        except ValueError:
            raise TypeError from None
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
    elif origin is list:
        if isinstance(value, list) and value:
            (item,) = typing.get_args(tp)
            return [_coerce(v, item) for v in value]
    elif origin is dict:
        if isinstance(value, dict):
            return dict(value)
    elif origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option)
            except TypeError:
                continue
    raise TypeError


def _check_bounds(key: str, value: Any, bounds: dict[str, float]) -> None:
    values = value if isinstance(value, list) else [value]
    for v in values:
        if v is None:
            continue
        if "gt" in bounds and not v > bounds["gt"]:
            raise ConfigError(f"{key}: must be > {bounds['gt']}, got {value!r}")
        if "ge" in bounds and not v >= bounds["ge"]:
            raise ConfigError(f"{key}: must be >= {bounds['ge']}, got {value!r}")
        if "le" in bounds and not v <= bounds["le"]:
            raise ConfigError(f"{key}: must be <= {bounds['le']}, got {value!r}")
        if "lt" in bounds and not v < bounds["lt"]:
            raise ConfigError(f"{key}: must be < {bounds['lt']}, got {value!r}")


# Keys whose value (a number, or every entry of a list) must be positive.
_POSITIVE = {"inner.lr", "evaluation.lr", "policy.hidden_sizes"}


def _all_keys(cls: type = Config, prefix: str = "") -> list[str]:
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            keys.extend(_all_keys(tp, f"{prefix}{f.name}."))
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def _unknown_key(key: str) -> ConfigError:
    known = _all_keys()
    # Compare with keys of the same depth: a misspelt section is not a misspelt field.
    same_depth = [k for k in known if k.count(".") == key.count(".")]
    same_depth += [k.split(".")[0] for k in known if "." not in key]
    near = difflib.get_close_matches(key, list(dict.fromkeys(same_depth)), n=1, cutoff=0.6)
    hint = f" (did you mean '{near[0]}'?)" if near else ""
    section = key.split(".")[0]
    if not near:
        options = [k for k in known if k.startswith(section + ".")] or [
            k.split(".")[0] for k in known
        ]
        hint = "; known keys: " + ", ".join(dict.fromkeys(options))
    return ConfigError(f"unknown config key '{key}'{hint}")


def _build(cls: type, data: Any, prefix: str = "") -> Any:
    if not isinstance(data, dict):
        where = prefix.rstrip(".") or "the config file"
        raise ConfigError(f"{where}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name not in fields:
            raise _unknown_key(key)
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value if value is not None else {}, key + ".")
            continue
        try:
            coerced = _coerce(value, tp)
        except TypeError:
            raise ConfigError(f"{key}: expected {_describe(tp)}, got {value!r}") from None
        _check_bounds(key, coerced, fields[name].metadata.get("bounds", {}))
        choices = fields[name].metadata.get("choices")
        if choices is not None and coerced not in choices:
            raise ConfigError(f"{key}: expected one of {', '.join(choices)}, got {value!r}")
        if key in _POSITIVE:
            _check_bounds(key, coerced, {"gt": 0})
        kwargs[name] = coerced
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Validate a nested mapping (as read from YAML) into a :class:`Config`."""
    return _resolve_algorithm(_build(Config, data))


def _resolve_algorithm(config: Config) -> Config:
    """Check the keys that depend on ``algorithm`` and make ``fomaml`` and
    ``inner.first_order: true`` one setting, so the written config reads consistently."""
    name = config.algorithm
    milestones = config.meta.lr_milestones or []
    if milestones and config.meta.optimizer == "trpo":
        raise ConfigError(
            f"meta.lr_milestones: {milestones!r} schedules meta.lr, which meta.optimizer: trpo "
            "does not use; allowed with adam, sgd, ppo (or leave it null)"
        )
    if any(m < 1 for m in milestones) or any(a >= b for a, b in pairwise(milestones)):
        raise ConfigError(
            f"meta.lr_milestones: expected strictly increasing iterations >= 1, got {milestones!r}"
        )
    if name == "fomaml":
        config.inner.first_order = True
    # What an algorithm requires of the other keys is checked by the algorithm itself
    # (Algorithm.check, through maml_rl.validation.validate).
    return config


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``section.key=value`` into its key path and YAML-parsed value."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected section.key=value (e.g. inner.lr=0.05)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}': empty key; expected section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _set_path(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for i, part in enumerate(path[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise _unknown_key(".".join(path[: i + 2]))
        node = child
    node[path[-1]] = value


def read_yaml_file(path: str | Path, label: str) -> Any:
    """The YAML (or JSON) document in ``path``, read safely; ConfigError (one line starting with
    ``label``, which names the file and the flag or role it was given as) when it is missing, a
    directory, unreadable, not UTF-8 or not valid YAML. ``None`` for an empty file."""
    path = Path(path)
    if path.is_dir():
        example = sorted(path.glob("*.yaml"))[:1]
        such_as = f", such as '{example[0]}'" if example else ""
        raise ConfigError(f"{label} is a directory; give a YAML file{such_as}")
    if not path.is_file():
        raise ConfigError(f"{label} not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{label} is not UTF-8 text (byte {err.object[err.start]:#04x} at "
                          f"offset {err.start}); save it as UTF-8 YAML") from None
    except OSError as err:
        raise ConfigError(f"{label} cannot be read: {err.strerror or err}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{label} is not valid YAML{where}") from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file safely, with one-line errors: it must hold a mapping of
    sections (an empty file is refused rather than silently training the defaults)."""
    label = f"config file '{path}'"
    data = read_yaml_file(path, label)
    if data is None:
        raise ConfigError(f"{label} is empty; expected a mapping of sections such as 'env:' "
                          "and 'training:' (see configs/ for examples)")
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: expected a mapping of sections (e.g. 'env: {{id: ...}}'), "
                          f"got {type(data).__name__} {_short(data)}")
    return data


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read ``path`` (or the defaults when None), apply ``section.key=value`` overrides and
    validate."""
    data = read_yaml(path) if path is not None else {}
    for text in overrides:
        key_path, value = parse_override(text)
        _set_path(data, key_path, value)
    _import_registrations(data, Path(path).parent if path is not None else None)
    return config_from_dict(data)


def _import_registrations(data: Any, config_dir: Path | None) -> None:
    """Import ``env.module`` first when the config names an algorithm or a meta-update that is
    not registered yet: a user's module may register them (``register_algorithm``,
    ``register_meta_update``) beside its task family."""
    if not isinstance(data, dict) or not isinstance(data.get("env"), dict):
        return
    module = data["env"].get("module")
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    unknown = (data.get("algorithm", "maml") not in ALGORITHM_NAMES
               or meta.get("optimizer", "adam") not in META_UPDATE_NAMES)
    if isinstance(module, str) and module and unknown:
        # Lazy: envs sits above this module; only a user's own names need it.
        from envs.registration import import_family_module

        try:
            import_family_module(module, [config_dir] if config_dir is not None else [])
        except ValueError as err:
            raise ConfigError(str(err)) from None


def flat_settings(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A config's dict as ``{"section.key": value}`` (an env's ``kwargs`` stay one value), the
    form in which overrides are written."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and key != "kwargs":
            out.update(flat_settings(value, f"{name}."))
        else:
            out[name] = value
    return out


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML that :func:`load_config` reads back unchanged."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
