"""MAML and first-order MAML (Finn, Abbeel & Levine 2017).

The meta-gradient is the gradient of the mean post-adaptation query loss, Eq. (3), through the
inner steps of Eq. (1): ``d/dtheta L_q(theta - alpha grad L_s(theta))``; both are the defaults of
:class:`~maml_rl.algorithms.base.Algorithm`. First-order MAML (their Sec. 5.2) drops the Hessian
term ``-alpha H_s`` of that chain rule, i.e. treats the inner gradient as a constant; it is
``algorithm: fomaml`` or, equivalently, ``inner.first_order``. ANIL and Meta-SGD subclass
:class:`MAML`: they change which parameters adapt and with which step sizes, not how the
meta-gradient is taken.
"""

from __future__ import annotations

from torch import nn

from maml_rl.adaptation import LossFn
from maml_rl.algorithms.base import Algorithm
from maml_rl.config import Config


class MAML(Algorithm):
    """Second-order MAML (first order when ``inner.first_order`` is set)."""


class FOMAML(MAML):
    """First-order MAML (Finn et al. 2017, Sec. 5.2): the meta-gradient is the query-loss
    gradient at the adapted parameters, ``grad L_q(theta')``, averaged over tasks."""

    def __init__(self, config: Config, model: nn.Module, loss_fn: LossFn, batching: str) -> None:
        super().__init__(config, model, loss_fn, batching)
        self.first_order = True
