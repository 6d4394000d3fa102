"""standby: warm-standby failover without running a workload twice.

The pure core (models, timing rules, helpers, the two state machines and the
wire codec) does no I/O and reads no clock. See ``docs/`` for the guide.
"""

from __future__ import annotations

import logging

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
from ._node import NodeStatus, PrimaryStatus, SpawnRequest, StandbyNode
from ._node_errors import (
    AdapterError,
    IdentityError,
    NodeError,
    NotAddressedError,
    RuntimeFailure,
    SpawnError,
    TransportError,
)
from ._protocols import (
    AtomicClaims,
    ClaimOutcome,
    ContainerRuntime,
    PublishResult,
    Query,
    QueryResult,
    RelayTransport,
    RunningWorkload,
    SlotStore,
    Subscription,
)
from ._roles import NotAddressed, Primary, Role, Standby
from ._state import NodeState, PrimaryRecord, PromotionIntent
from ._store import JsonFileStore, Sealer
from ._timing import Timing

# A library does not configure logging; this keeps Python from printing the
# node's warnings to stderr when the host configured none.
logging.getLogger("standby").addHandler(logging.NullHandler())

__version__ = "0.1.0"

__all__ = [
    "AdapterError",
    "Announce",
    "AtomicClaims",
    "CheckContainer",
    "ClaimOutcome",
    "CompareAndSetClaim",
    "ContainerRuntime",
    "DropReason",
    "Dropped",
    "ElectionEffect",
    "Envelope",
    "Heartbeat",
    "IdentityError",
    "InvalidSlot",
    "JsonFileStore",
    "LeaseRevocation",
    "LifecycleEffect",
    "LifecycleState",
    "Message",
    "Never",
    "NodeError",
    "NodeState",
    "NodeStatus",
    "NotAddressed",
    "NotAddressedError",
    "OnFailure",
    "Phase",
    "Primary",
    "PrimaryChanged",
    "PrimaryRecord",
    "PrimaryStatus",
    "Promoted",
    "PromotionAnnouncement",
    "PromotionClaim",
    "PromotionIntent",
    "PublishClaim",
    "PublishResult",
    "PublishRevocation",
    "Query",
    "QueryClaims",
    "QueryHeartbeats",
    "QueryResult",
    "QuorumShortfall",
    "ReclaimContainer",
    "RelayTransport",
    "RestartPolicy",
    "Role",
    "RunningWorkload",
    "RuntimeFailure",
    "Sealer",
    "SlotRemoved",
    "SlotSaved",
    "SlotStatus",
    "SlotStore",
    "Spawn",
    "SpawnError",
    "SpawnRequest",
    "Standby",
    "StandbyElection",
    "StandbyError",
    "StandbyNode",
    "StandbySlot",
    "StartContainer",
    "StateChanged",
    "StopContainer",
    "StopOrphan",
    "StoreError",
    "Subscription",
    "Timing",
    "Topology",
    "TopologyError",
    "TransportError",
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
