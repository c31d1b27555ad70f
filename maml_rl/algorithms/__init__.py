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
``platipus``  Finn, Xu & Levine 2018 (Probabilistic MAML)      :mod:`.platipus`
============  ===============================================  ================================

All of them run on the supervised families; on RL families those whose meta-gradient is the
gradient through the adaptation (:func:`rl_algorithms`). :func:`register_algorithm` adds one:
a :class:`~maml_rl.algorithms.base.Algorithm` subclass becomes a value of ``algorithm``.
"""

from __future__ import annotations

from torch import nn

from maml_rl.adaptation import LossFn
from maml_rl.algorithms.anil import ANIL
from maml_rl.algorithms.base import Algorithm
from maml_rl.algorithms.imaml import IMAML
from maml_rl.algorithms.maml import FOMAML, MAML
from maml_rl.algorithms.metasgd import MetaSGD
from maml_rl.algorithms.platipus import PLATIPUS
from maml_rl.algorithms.reptile import Reptile
from maml_rl.config import ALGORITHM_NAMES, Config

__all__ = [
    "ALGORITHMS",
    "ANIL",
    "FOMAML",
    "IMAML",
    "MAML",
    "PLATIPUS",
    "Algorithm",
    "MetaSGD",
    "Reptile",
    "build_algorithm",
    "register_algorithm",
    "rl_algorithms",
]

ALGORITHMS: dict[str, type[Algorithm]] = {
    "maml": MAML,
    "fomaml": FOMAML,
    "reptile": Reptile,
    "metasgd": MetaSGD,
    "anil": ANIL,
    "imaml": IMAML,
    "platipus": PLATIPUS,
}


def register_algorithm(name: str, cls: type[Algorithm]) -> None:
    """Make ``cls`` the algorithm of ``algorithm: NAME`` (configs accept the name from now on,
    in this process)."""
    if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
        raise TypeError(f"{cls!r} is not an Algorithm subclass")
    ALGORITHMS[name] = cls
    if name not in ALGORITHM_NAMES:
        ALGORITHM_NAMES.append(name)


def rl_algorithms() -> list[str]:
    """The algorithms the RL learner can run (:attr:`Algorithm.supports_rl`)."""
    return [name for name, cls in ALGORITHMS.items() if cls.supports_rl]


def build_algorithm(config: Config, model: nn.Module, loss_fn: LossFn, batching: str) -> Algorithm:
    """The configured algorithm for a learner's ``model`` and inner ``loss_fn``."""
    return ALGORITHMS[config.algorithm](config, model, loss_fn, batching)
