"""The meta-updates, one module each, selected by ``meta.optimizer``.

==========  ==============================================  ==========================
name        update                                          module
==========  ==============================================  ==========================
``adam``    Adam on the meta-gradient (MAML Eq. 3)          :mod:`.plain`
``sgd``     SGD on the meta-gradient                        :mod:`.plain`
``trpo``    TRPO step (Finn et al. 2017, Sec. 5.3)          :mod:`.trpo`
``ppo``     ProMP's clipped update (Rothfuss et al. 2019)   :mod:`.promp`
==========  ==============================================  ==========================

:func:`register_meta_update` adds one: a :class:`~maml_rl.meta_updates.base.MetaUpdate`
subclass becomes a value of ``meta.optimizer``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from maml_rl.config import META_UPDATE_NAMES, Config
from maml_rl.meta_updates.base import MetaBatch, MetaUpdate, NonFiniteError
from maml_rl.meta_updates.plain import PlainMetaUpdate
from maml_rl.meta_updates.promp import ProMPMetaUpdate
from maml_rl.meta_updates.trpo import TRPOMetaUpdate

__all__ = [
    "META_UPDATES",
    "MetaBatch",
    "MetaUpdate",
    "NonFiniteError",
    "build_meta_update",
    "register_meta_update",
]

META_UPDATES: dict[str, type[MetaUpdate]] = {
    "adam": PlainMetaUpdate,
    "sgd": PlainMetaUpdate,
    "trpo": TRPOMetaUpdate,
    "ppo": ProMPMetaUpdate,
}


def register_meta_update(name: str, cls: type[MetaUpdate]) -> None:
    """Make ``cls`` the meta-update of ``meta.optimizer: NAME`` (configs accept the name from
    now on, in this process)."""
    if not (isinstance(cls, type) and issubclass(cls, MetaUpdate)):
        raise TypeError(f"{cls!r} is not a MetaUpdate subclass")
    META_UPDATES[name] = cls
    if name not in META_UPDATE_NAMES:
        META_UPDATE_NAMES.append(name)


def build_meta_update(config: Config, parameters: Sequence[Tensor]) -> MetaUpdate:
    """The configured meta-update over ``parameters``."""
    return META_UPDATES[config.meta.optimizer](config, parameters)
