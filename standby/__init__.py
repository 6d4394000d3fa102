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
from .core import StandbyElection, _helpers, _lifecycle, _models, _roles
from .core._helpers import *  # noqa: F403 (the pure helpers)
from .core._lifecycle import *  # noqa: F403 (the lifecycle and its restart policies)
from .core._models import *  # noqa: F403 (the models and messages)
from .core._public import publish
from .core._roles import *  # noqa: F403 (the roles role_of returns)
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

# The names that need anyio (see _LAZY), the election (the API contract keeps
# it here; its home is standby.core), timing, and the protocols a host's
# adapters implement; then each private module's own list.
__all__ = [
    "AtomicClaims",
    "ContainerRuntime",
    "JsonFileStore",
    "NodeEvent",
    "NodeStatus",
    "PrimaryStatus",
    "RelayTransport",
    "Sealer",
    "SlotStore",
    "SpawnRequest",
    "StandbyElection",
    "StandbyNode",
    "Timing",
    "__version__",
]
__all__ += _helpers.__all__
__all__ += _lifecycle.__all__
__all__ += _models.__all__
__all__ += _roles.__all__
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
