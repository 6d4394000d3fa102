"""The effects the two core machines return, and the enums they carry.

An effect is a small frozen value that tells the driver what to do next:
:class:`QueryHeartbeats`, :class:`PublishClaim`, :class:`Spawn` and the rest
for the standby side (:data:`ElectionEffect`, returned by
:class:`~standby.StandbyElection`), :class:`StartContainer`,
:class:`PublishRevocation` and the rest for the primary side
(:data:`LifecycleEffect`, returned by :class:`~standby.WorkloadLifecycle`).
Every name here is also importable from :mod:`standby.core`.
"""

from __future__ import annotations

from .core import _effects
from .core._effects import *  # noqa: F403 (listed once, in standby.core._effects)
from .core._public import publish

__all__: list[str] = []
__all__ += _effects.__all__

publish(__name__, globals(), __all__)
