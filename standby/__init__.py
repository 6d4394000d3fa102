"""standby: warm-standby failover without running a workload twice.

The pure core (models, timing rules, helpers, the two state machines and the
wire codec) does no I/O and reads no clock, and ``import standby`` loads only
the core: the names that need anyio (:class:`StandbyNode` and its
companions, :class:`JsonFileStore`) are imported on first use. See ``docs/``
for the guide.

This is what a host needs; the machine level (effects, phases, records,
the transition table) is :mod:`standby.core`, the optional protocol types
:mod:`standby.protocols`. A name that left the top level still resolves here
for one release, with a ``DeprecationWarning`` naming its new import.
"""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any

from . import effects, errors
from .core import StandbyElection, WorkloadLifecycle
from .core._helpers import (
    primary_is_silent,
    promotion_delay,
    role_of,
    select_expired,
    silence_baseline,
)
from .core._lifecycle import Never, OnFailure, RestartPolicy
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
from .core._roles import NotAddressed, Primary, Role, Standby
from .core._timing import Timing
from .errors import *  # noqa: F403 (listed once, in standby.core._errors)
from .protocols import AtomicClaims, ContainerRuntime, RelayTransport, SlotStore

if TYPE_CHECKING:
    from .adapters.files._store import JsonFileStore, Sealer
    from .node import NodeEvent, NodeStatus, PrimaryStatus, SpawnRequest, StandbyNode

# A library does not configure logging; this keeps Python from printing the
# node's warnings to stderr when the host configured none.
logging.getLogger("standby").addHandler(logging.NullHandler())

__version__ = "0.1.0"

__all__ = [
    "AtomicClaims",
    "ContainerRuntime",
    "Envelope",
    "Heartbeat",
    "JsonFileStore",
    "LeaseRevocation",
    "Message",
    "Never",
    "NodeEvent",
    "NodeStatus",
    "NotAddressed",
    "OnFailure",
    "Primary",
    "PrimaryStatus",
    "PromotionAnnouncement",
    "PromotionClaim",
    "RelayTransport",
    "RestartPolicy",
    "Role",
    "Sealer",
    "SlotStore",
    "SpawnRequest",
    "Standby",
    "StandbyElection",
    "StandbyNode",
    "StandbySlot",
    "Timing",
    "Topology",
    "WorkloadLifecycle",
    "__version__",
    "fencing_token",
    "primary_is_silent",
    "promotion_delay",
    "role_of",
    "select_expired",
    "silence_baseline",
]
__all__ += errors.__all__

#: Names whose modules import anyio, loaded on first access (PEP 562) so that
#: ``import standby`` stays free of I/O machinery. Value: the module to load
#: them from, relative to this package.
_LAZY: dict[str, str] = {
    "JsonFileStore": ".adapters.files._store",
    "NodeEvent": ".node",
    "NodeStatus": ".node",
    "PrimaryStatus": ".node",
    "Sealer": ".adapters.files._store",
    "SpawnRequest": ".node",
    "StandbyNode": ".node",
}

#: Names that left the top level for the face of their layer: they still
#: resolve here, with a ``DeprecationWarning``, until the next release.
_MOVED: dict[str, str] = {
    **dict.fromkeys(
        [
            "Phase",
            "SlotStatus",
            "NodeState",
            "PrimaryRecord",
            "PromotionIntent",
            *effects.__all__,
        ],
        "standby.core",
    ),
    **dict.fromkeys(
        [
            "ClaimOutcome",
            "PublishResult",
            "Query",
            "QueryResult",
            "RunningWorkload",
            "Subscription",
        ],
        "standby.protocols",
    ),
}

publish(__name__, globals(), [name for name in __all__ if name not in _LAZY])


def __getattr__(name: str) -> Any:
    """Load a name of :data:`_LAZY` on first use; warn on a name of :data:`_MOVED`."""
    import importlib

    moved = _MOVED.get(name)
    if moved is not None:
        warnings.warn(
            f"standby.{name} moved: write `from {moved} import {name}`; "
            "the top-level name goes away in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(moved), name)
    source = _LAZY.get(name)
    if source is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(source, __name__)
    value = getattr(module, name)
    publish(__name__, {name: value}, [name])
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
