"""The MAML family, one module per algorithm, selected by the config key ``algorithm``.

============  ===============================================  ================================
name          paper                                            module
============  ===============================================  ================================
``maml``      Finn, Abbeel & Levine 2017                       :mod:`.maml` (:class:`MAML`)
``fomaml``    Finn et al. 2017, Sec. 5.2 (first order)         :mod:`.maml` (:class:`FOMAML`)
``reptile``   Nichol, Achiam & Schulman 2018                   :mod:`.reptile`
``metasgd``   Li, Zhou, Chen & Li 2017                         :mod:`.metasgd`
``anil``      Raghu, Raghu, Bengio & Vinyals 2020              :mod:`.anil`
``imaml``     Rajeswaran, Finn, Kakade & Levine 2019           :mod:`.imaml`
============  ===============================================  ================================

All of them run on the supervised families; the RL learner implements :data:`RL_ALGORITHMS`.
"""

from __future__ import annotations

from torch import nn

from maml_rl.adaptation import LossFn
from maml_rl.algorithms.anil import ANIL
from maml_rl.algorithms.base import SupervisedAlgorithm
from maml_rl.algorithms.imaml import IMAML
from maml_rl.algorithms.maml import FOMAML, MAML
from maml_rl.algorithms.metasgd import MetaSGD
from maml_rl.algorithms.reptile import Reptile
from maml_rl.config import Config, ConfigError

__all__ = [
    "ALGORITHMS",
    "ANIL",
    "FOMAML",
    "IMAML",
    "MAML",
    "RL_ALGORITHMS",
    "MetaSGD",
    "Reptile",
    "SupervisedAlgorithm",
    "build_algorithm",
    "check_supported",
]

ALGORITHMS: dict[str, type[SupervisedAlgorithm]] = {
    "maml": MAML,
    "fomaml": FOMAML,
    "reptile": Reptile,
    "metasgd": MetaSGD,
    "anil": ANIL,
    "imaml": IMAML,
}

#: What :class:`maml_rl.reinforcement.RLMetaLearner` implements.
RL_ALGORITHMS = ("maml", "fomaml", "metasgd", "anil")


def check_supported(config: Config, supervised: bool, env_id: str) -> None:
    """Raise a one-line :class:`ConfigError` if the family's learner lacks ``algorithm``."""
    if not supervised and config.algorithm not in RL_ALGORITHMS:
        raise ConfigError(
            f"algorithm: '{config.algorithm}' is not implemented for RL families (env "
            f"'{env_id}'); allowed for RL: {', '.join(RL_ALGORITHMS)}"
        )
    if (not supervised and config.algorithm == "metasgd" and config.meta.optimizer == "trpo"
            and config.meta.curvature == "fisher"):
        # The Fisher products of maml_rl/curvature.py differentiate the adaptation in theta
        # only; the learned rates need the generic double differentiation.
        raise ConfigError(
            "meta.curvature: 'fisher' is not implemented for algorithm 'metasgd' (its learned "
            "rates are TRPO parameters too); allowed with metasgd: hessian"
        )


def build_algorithm(
    config: Config, model: nn.Module, loss_fn: LossFn, batching: str
) -> SupervisedAlgorithm:
    """The configured algorithm for a supervised learner's ``model`` and ``loss_fn``."""
    return ALGORITHMS[config.algorithm](config, model, loss_fn, batching)
