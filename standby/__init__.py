"""standby: warm-standby failover without running a workload twice.

The pure core (models, timing rules, helpers, the two state machines and the
wire codec) does no I/O and reads no clock, and ``import standby`` loads only
the core: the names that need anyio (:class:`StandbyNode` and its
companions, :class:`JsonFileStore`) are imported on first use. See ``docs/``
for the guide.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .core._election import Phase, SlotStatus, StandbyElection
from .core._helpers import (
    primary_is_silent,
    promotion_delay,
    role_of,
    select_expired,
    silence_baseline,
)
from .core._lifecycle import Never, OnFailure, RestartPolicy, WorkloadLifecycle
from .core._models import (
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
from .core._public import publish
from .core._records import NodeState, PrimaryRecord, PromotionIntent
from .core._roles import NotAddressed, Primary, Role, Standby
from .core._timing import Timing
from .effects import (
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
from .errors import (
    AdapterError,
    IdentityError,
    InvalidRequest,
    InvalidSlot,
    NodeError,
    NodeMisuse,
    NotAddressedError,
    QuorumUnavailable,
    RequestRefused,
    RetryLater,
    RuntimeFailure,
    SpawnError,
    StandbyError,
    StoreError,
    StoreQuarantined,
    TopologyError,
    TransportError,
    UnsafeTiming,
    WireError,
    WorkloadConflict,
)
from .protocols._contracts import (
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

if TYPE_CHECKING:
    from .adapters.files._store import JsonFileStore, Sealer
    from .node import NodeStatus, PrimaryStatus, SpawnRequest, StandbyNode

# A library does not configure logging; this keeps Python from printing the
# node's warnings to stderr when the host configured none.
logging.getLogger("standby").addHandler(logging.NullHandler())

__version__ = "0.1.0"

__all__ = [
    "AdapterError",
    "Announce",
    "AtomicClaims",
    "CannotStart",
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
    "InvalidRequest",
    "InvalidSlot",
    "JsonFileStore",
    "LeaseRevocation",
    "LifecycleEffect",
    "LifecycleState",
    "Message",
    "Never",
    "NodeError",
    "NodeMisuse",
    "NodeState",
    "NodeStatus",
    "NotAddressed",
    "NotAddressedError",
    "OnFailure",
    "Phase",
    "PhaseChanged",
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
    "QuorumUnavailable",
    "ReclaimContainer",
    "RelayTransport",
    "RequestRefused",
    "RestartPolicy",
    "RetryLater",
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
    "StoreQuarantined",
    "Subscription",
    "Timing",
    "Topology",
    "TopologyError",
    "TransportError",
    "UnsafeTiming",
    "WireError",
    "WithdrawClaim",
    "WorkloadConflict",
    "WorkloadLifecycle",
    "__version__",
    "fencing_token",
    "primary_is_silent",
    "promotion_delay",
    "role_of",
    "select_expired",
    "silence_baseline",
]

#: Names whose modules import anyio, loaded on first access (PEP 562) so that
#: ``import standby`` stays free of I/O machinery. Value: the module to load
#: them from, relative to this package.
_LAZY: dict[str, str] = {
    "JsonFileStore": ".adapters.files._store",
    "NodeStatus": ".node",
    "PrimaryStatus": ".node",
    "Sealer": ".adapters.files._store",
    "SpawnRequest": ".node",
    "StandbyNode": ".node",
}

publish(__name__, globals(), [name for name in __all__ if name not in _LAZY])


def __getattr__(name: str) -> Any:
    """Load a name of :data:`_LAZY` on first use and keep it in the module."""
    source = _LAZY.get(name)
    if source is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    module = importlib.import_module(source, __name__)
    value = getattr(module, name)
    publish(__name__, {name: value}, [name])
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
