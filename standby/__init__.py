"""standby: warm-standby failover without running a workload twice.

The pure core (models, timing rules, helpers, the two state machines and the
wire codec) does no I/O and reads no clock. See ``docs/`` for the guide.
"""

from __future__ import annotations

from ._effects import (
    Announce,
    CheckContainer,
    CompareAndSetClaim,
    Dropped,
    DropReason,
    ElectionEffect,
    LifecycleEffect,
    LifecycleState,
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
from ._election import Phase, SlotStatus, StandbyElection
from ._errors import InvalidSlot, StandbyError, StoreError, TopologyError, UnsafeTiming, WireError
from ._helpers import primary_is_silent, promotion_delay, role_of, select_expired, silence_baseline
from ._lifecycle import Never, OnFailure, RestartPolicy, WorkloadLifecycle
from ._models import (
    Envelope,
    Heartbeat,
    LeaseRevocation,
    Message,
    PromotionAnnouncement,
    PromotionClaim,
    StandbySlot,
    Topology,
    fencing_token,
)
from ._roles import NotAddressed, Primary, Role, Standby
from ._timing import Timing

__version__ = "0.1.0"

__all__ = [
    "Announce",
    "CheckContainer",
    "CompareAndSetClaim",
    "DropReason",
    "Dropped",
    "ElectionEffect",
    "Envelope",
    "Heartbeat",
    "InvalidSlot",
    "LeaseRevocation",
    "LifecycleEffect",
    "LifecycleState",
    "Message",
    "Never",
    "NotAddressed",
    "OnFailure",
    "Phase",
    "Primary",
    "PrimaryChanged",
    "Promoted",
    "PromotionAnnouncement",
    "PromotionClaim",
    "PublishClaim",
    "PublishRevocation",
    "QueryClaims",
    "QueryHeartbeats",
    "QuorumShortfall",
    "ReclaimContainer",
    "RestartPolicy",
    "Role",
    "SlotRemoved",
    "SlotSaved",
    "SlotStatus",
    "Spawn",
    "Standby",
    "StandbyElection",
    "StandbyError",
    "StandbySlot",
    "StartContainer",
    "StateChanged",
    "StopContainer",
    "StopOrphan",
    "StoreError",
    "Timing",
    "Topology",
    "TopologyError",
    "UnsafeTiming",
    "WireError",
    "WithdrawClaim",
    "WorkloadLifecycle",
    "__version__",
    "fencing_token",
    "primary_is_silent",
    "promotion_delay",
    "role_of",
    "select_expired",
    "silence_baseline",
]
