"""The machine level: the two sans-I/O machines, their phases, effects and records.

What a host needs (the node, requests, timing, topology, stores, errors, the
models and the pure helpers) is at :mod:`standby`; this face is for code that
drives the machines itself or reads what they decide: the election
(:class:`StandbyElection`, standby side) with its :class:`Phase`,
:class:`SlotStatus` and the table of legal moves :data:`TRANSITIONS`, the
lifecycle (:class:`WorkloadLifecycle`, primary side), every effect they
return (also at :mod:`standby.effects`) and the records a node saves.

Everything in the core is sans-I/O: no clock, no sockets, no processes, no
randomness. Its other modules are private (see ``docs/architecture.md``).
"""

from __future__ import annotations

from . import _effects
from ._effects import *  # noqa: F403 (the effects, listed once in standby.core._effects)
from ._election import Phase, SlotStatus, StandbyElection
from ._lifecycle import WorkloadLifecycle
from ._public import publish
from ._records import NodeState, PrimaryRecord, PromotionIntent
from ._transitions import TRANSITIONS

__all__ = [
    "TRANSITIONS",
    "NodeState",
    "Phase",
    "PrimaryRecord",
    "PromotionIntent",
    "SlotStatus",
    "StandbyElection",
    "WorkloadLifecycle",
]
_OWN = list(__all__)
__all__ += _effects.__all__

# The effects keep their older home, standby.effects, which publishes them.
publish(__name__, globals(), _OWN)
