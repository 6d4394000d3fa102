"""The effects the two core machines return, and the enums they carry.

An effect is a small frozen value that tells the driver what to do next:
:class:`QueryHeartbeats`, :class:`PublishClaim`, :class:`Spawn` and the rest
for the standby side (:data:`ElectionEffect`, returned by
:class:`~standby.StandbyElection`), :class:`StartContainer`,
:class:`PublishRevocation` and the rest for the primary side
(:data:`LifecycleEffect`, returned by :class:`~standby.WorkloadLifecycle`).
Every name here is also importable from :mod:`standby`.
"""

from __future__ import annotations

from .core._effects import (
    Announce,
    CannotStart,
    CheckContainer,
    CompareAndSetClaim,
    Dropped,
    DropReason,
    ElectionEffect,
    LifecycleEffect,
    LifecycleState,
    PhaseChanged,
    PrimaryChanged,
    Promoted,
    PublishClaim,
    PublishRevocation,
    QueryClaims,
    QueryHeartbeats,
    QuorumShortfall,
    ReclaimContainer,
    SlotRemoved,
    SlotSaved,
    Spawn,
    StartContainer,
    StateChanged,
    StopContainer,
    StopOrphan,
    WithdrawClaim,
)
from .core._public import publish

__all__ = [
    "Announce",
    "CannotStart",
    "CheckContainer",
    "CompareAndSetClaim",
    "DropReason",
    "Dropped",
    "ElectionEffect",
    "LifecycleEffect",
    "LifecycleState",
    "PhaseChanged",
    "PrimaryChanged",
    "Promoted",
    "PublishClaim",
    "PublishRevocation",
    "QueryClaims",
    "QueryHeartbeats",
    "QuorumShortfall",
    "ReclaimContainer",
    "SlotRemoved",
    "SlotSaved",
    "Spawn",
    "StartContainer",
    "StateChanged",
    "StopContainer",
    "StopOrphan",
    "WithdrawClaim",
]

publish(__name__, globals(), __all__)
