"""The one interface of every meta-learning algorithm, used by the RL and the supervised learner.

An algorithm of the MAML family is (Finn et al. 2017, Algorithms 2 and 3, and its variants):

- its meta-learned tensors, :meth:`Algorithm.meta_parameters`: the model's parameters theta and any
  of its own (Meta-SGD's rates), checkpointed by :meth:`Algorithm.state_dict`;
- its task adaptation rule, :meth:`Algorithm.inner_step`, by default Eq. (1)
  ``phi - alpha grad L(phi)`` on :attr:`Algorithm.trainable` with :meth:`Algorithm.rate`.
  :meth:`Algorithm.adapt` chains K of them. Training and evaluation, RL and supervised, all
  adapt through it, so a Meta-SGD policy is evaluated with its learned rates and ANIL adapts
  only its head everywhere;
- its meta-gradient, :meth:`Algorithm.meta_gradient`, by default the gradient of the mean
  post-adaptation query loss through the adaptation, Eq. (3). The RL learner differentiates its
  surrogate through :meth:`Algorithm.adapt` instead, so RL needs an algorithm whose
  meta-gradient is that gradient (:attr:`Algorithm.supports_rl`).

The meta-update that consumes the meta-gradient is a separate strategy
(:mod:`maml_rl.meta_updates`). :func:`maml_rl.algorithms.register_algorithm` adds an algorithm.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from maml_rl.adaptation import (
    Batch,
    LossFn,
    Params,
    StepSize,
    inner_step,
    is_per_step,
    map_tasks,
    model_params,
)
from maml_rl.config import Config, ConfigError
from maml_rl.seeding import EpisodeKey


class Algorithm:
    """Base of the algorithms: MAML itself. Subclasses override what they change."""

    #: Whether the RL learner can run it: its meta-gradient must be the gradient of the
    #: post-adaptation objective through :meth:`adapt` (not Reptile's or iMAML's).
    supports_rl: ClassVar[bool] = True
    #: Whether TRPO's closed-form Fisher products (:mod:`maml_rl.meta_updates.curvature`) hold:
    #: they assume the default gradient step with one number per step as its rate. False by
    #: default for a subclass that overrides :meth:`inner_step` or :meth:`rate`.
    fisher_curvature: ClassVar[bool] = True
    #: Why the Fisher products do not apply, for the error message.
    fisher_reason: ClassVar[str] = "its inner step is not the plain gradient step they assume"
    #: Whether the inner loop is first order by construction (``inner.first_order`` then has no
    #: meaning: Reptile, iMAML).
    first_order_by_construction: ClassVar[bool] = False
    #: Whether adapting twice to the same data can give two different models (PLATIPUS draws).
    stochastic: ClassVar[bool] = False
    #: Names of the parameters that adapt in the inner loop (None: all of them; ANIL: the head).
    trainable: Sequence[str] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "fisher_curvature" not in cls.__dict__ and (
            "inner_step" in cls.__dict__ or "rate" in cls.__dict__
        ):
            cls.fisher_curvature = False

    def __init__(self, config: Config, model: nn.Module, loss_fn: LossFn, batching: str) -> None:
        self.config, self.model, self.loss_fn, self.batching = config, model, loss_fn, batching
        self.functional = batching == "vmap"
        self.first_order = config.inner.first_order

    @classmethod
    def check_config(cls, name: str, config: Config) -> None:
        """Raise a one-line :class:`ConfigError` when other keys contradict this algorithm
        (subclasses add their own rules)."""

    @classmethod
    def check(cls, name: str, config: Config, supervised: bool, env_id: str,
              rl_names: Sequence[str]) -> None:
        """Raise a one-line :class:`ConfigError` when ``config`` asks of this algorithm what it
        cannot do on this family (``rl_names``: the algorithms that run on RL families)."""
        cls.check_config(name, config)
        if supervised:
            return
        if not cls.supports_rl:
            raise ConfigError(
                f"algorithm: '{name}' is not implemented for RL families (env '{env_id}'); "
                f"allowed for RL: {', '.join(rl_names)}"
            )
        meta = config.meta
        if meta.optimizer == "trpo" and meta.curvature == "fisher" and not cls.fisher_curvature:
            raise ConfigError(
                f"meta.curvature: 'fisher' is not implemented for algorithm '{name}' "
                f"({cls.fisher_reason}); allowed with {name}: hessian"
            )

    # --- meta-learned tensors ------------------------------------------------------------------

    def extra_parameters(self) -> dict[str, Tensor]:
        """Meta-learned tensors besides the model's parameters, by name (Meta-SGD's rates)."""
        return {}

    def meta_parameters(self) -> list[Tensor]:
        """Every meta-learned tensor: the model's, then :meth:`extra_parameters`, in the order
        of :meth:`meta_gradient`'s result."""
        return [*model_params(self.model).values(), *self.extra_parameters().values()]

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint holds besides the model and the meta-update: the extra
        parameters, and subclasses' own counters."""
        extra = self.extra_parameters()
        return {"rates": {k: v.detach().clone() for k, v in extra.items()}} if extra else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        extra = self.extra_parameters()
        with torch.no_grad():
            for name, value in state.get("rates", {}).items():
                extra[name].copy_(value)

    # --- task adaptation -----------------------------------------------------------------------

    def rate(self, step_size: float) -> StepSize:
        """What an inner step multiplies the gradient with: the configured step size, or one
        tensor per parameter (Meta-SGD's learned rates)."""
        return step_size

    def inner_step(
        self, theta: Params, phi: Params, batch: Batch, step_size: float, functional: bool,
        first_order: bool | None = None,
    ) -> Params:
        """One step of the task adaptation from ``phi`` (meta-parameters ``theta``): Eq. (1),
        ``phi - rate(alpha) * grad L(phi)`` on :attr:`trainable`, differentiable in ``theta``
        unless ``first_order`` (default: ``inner.first_order``)."""
        first_order = self.first_order if first_order is None else first_order
        return inner_step(self.model, phi, self.loss_fn, batch, self.rate(step_size),
                          first_order, self.trainable, functional)

    def adapt(
        self, theta: Params, batches: Batch | Sequence[Batch], functional: bool | None = None,
        step_sizes: Sequence[float] | None = None, first_order: bool | None = None,
    ) -> Params:
        """``len(step_sizes)`` inner steps (default: training's ``inner.lr`` x ``inner.steps``)
        from ``theta`` on one task: one batch reused at every step (supervised shots) or one
        batch per step (fresh episodes, RL)."""
        sizes = self.config.inner_step_sizes() if step_sizes is None else list(step_sizes)
        functional = self.functional if functional is None else functional
        per_step = batches if is_per_step(batches) else [batches] * len(sizes)
        if len(per_step) != len(sizes):
            raise ValueError(f"adapt got {len(per_step)} batches for {len(sizes)} steps")
        phi = theta
        for batch, alpha in zip(per_step, sizes, strict=True):
            phi = self.inner_step(theta, phi, batch, alpha, functional, first_order)
        return phi

    # --- meta-gradient -------------------------------------------------------------------------

    def meta_gradient(self, support: Batch, query: Batch,
                      keys: Sequence[EpisodeKey] | None = None) -> tuple[list[Tensor], Tensor]:
        """The meta-gradient of one supervised meta-batch (tensors with a leading task
        dimension), one tensor per :meth:`parameters` entry, and the per-task post-adaptation
        query losses: by default the gradient of their mean, Eq. (3), through :meth:`adapt`.
        ``keys``: the tasks' episode keys, which seed an algorithm's own random draws."""
        theta = model_params(self.model)

        def task_loss(task_support: Batch, task_query: Batch) -> Tensor:
            return self.loss_fn(self.model, self.adapt(theta, task_support), task_query)

        losses = map_tasks(task_loss, support, query, batching=self.batching)
        return self.gradient(losses.mean()), losses.detach()

    def gradient(self, objective: Tensor) -> list[Tensor]:
        """``objective``'s gradient in every :meth:`meta_parameters` tensor (zeros for one it
        does not depend on)."""
        params = self.meta_parameters()
        grads = torch.autograd.grad(objective, params, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads,
                                                                       strict=True)]

    def task_metrics(self) -> dict[str, Tensor]:
        """Per-task values of the last :meth:`meta_gradient` to log as their mean over the
        meta-batch (``[local tasks]`` each; reduced over the processes by the learner)."""
        return {}

    def outer_lr(self) -> float | None:
        """The meta learning rate this algorithm asks for the next update (None: the
        meta-update's own, ``meta.lr`` under its schedule)."""
        return None

    def after_meta_step(self) -> dict[str, float]:
        """Called after each meta-update; the algorithm's own metrics."""
        return {}


def detached(params: Params) -> Params:
    """``params`` cut from the autograd graph (first-order algorithms need only the values)."""
    return {k: v.detach() for k, v in params.items()}
