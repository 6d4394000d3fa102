"""The seams between the node and the outside world.

A provider plugs four things into :class:`~standby.node.StandbyNode`:

- a :class:`RelayTransport` (how it talks to its peers through relays),
- a :class:`ContainerRuntime` (how it runs the workload),
- a :class:`SlotStore` (where reserved slots survive a restart),
- and, when its transport can do it, :class:`AtomicClaims` (a strict
  compare-and-set for promotion claims), :class:`ReportsDrops` (it tells
  the node about the messages it dropped: forgery attempts) and
  :class:`WaitsConnected` (it connects ahead of the first request).

An adapter builds :class:`Envelope` values (re-exported here from the
top-level package) for what it receives.

Each is a runtime-checkable :class:`typing_extensions.Protocol`: implement
the methods, no base class needed. The contracts below are what the node
relies on; the in-memory adapters in :mod:`standby.adapters.memory` follow
them and are the reference.

Errors. An adapter maps its client library's exceptions to the library's own
(:class:`~standby.TransportError`, :class:`~standby.SpawnError`,
:class:`~standby.RuntimeFailure`, :class:`~standby.StoreError`) with
``raise ... from exc``. The node treats any exception from an adapter as a
failed operation (logged, counted, never fatal), but only the mapped errors
are part of the contract.

Cancellation. Every ``async`` method must be cancellable (anyio cancel
scopes, on asyncio and trio) and must leave no task behind when cancelled.
"""

from __future__ import annotations

from ..core._models import Envelope
from ..core._public import publish
from . import _contracts
from ._contracts import *  # noqa: F403 (listed once, in standby.protocols._contracts)

__all__ = ["Envelope"]
__all__ += _contracts.__all__

# The protocols and the relay rules are homed here; Envelope is a model (the root).
publish(__name__, globals(), [name for name in __all__ if name != "Envelope"])
