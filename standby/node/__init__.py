"""The anyio driver: one :class:`StandbyNode` per provider process.

The node owns no policy. It feeds what it hears (subscription messages,
adapter results, the passing of time) into the two sans-I/O machines,
:class:`~standby.StandbyElection` for the slots it reserved and one
:class:`~standby.WorkloadLifecycle` per workload it runs as primary, and
carries out the effects they return through the protocols of
:mod:`standby.protocols`.

It runs on asyncio and trio alike (only anyio primitives) and reads time
from :func:`anyio.current_time` and an injectable wall clock, so a test can
run it on trio's ``MockClock``::

    node = StandbyNode(
        transport=network.transport("alice"),
        runtime=MemoryRuntime("alice", wall_clock=lambda: EPOCH + anyio.current_time()),
        store=JsonFileStore(path),
        timing=Timing(),
        wall_clock=lambda: EPOCH + anyio.current_time(),
    )
    async with node:
        await node.accept(request)
        ...

Concurrency: one timer task sleeps until the machines' next deadline (and
wakes early on new input); every adapter call runs in its own task with a
timeout, so a slow spawn never delays a heartbeat. The machines are only ever
called from the event loop thread, one call at a time.
"""

from __future__ import annotations

from ..core._public import publish
from . import _events
from ._drain import DrainReport, StopReport, TakenOver
from ._events import *  # noqa: F403 (the events, listed once in standby.node._events)
from ._node import StandbyNode
from ._types import NodeStatus, PrimaryStatus, SpawnRequest

__all__ = [
    "DrainReport",
    "NodeStatus",
    "PrimaryStatus",
    "SpawnRequest",
    "StandbyNode",
    "StopReport",
    "TakenOver",
]
__all__ += _events.__all__

publish(__name__, globals(), __all__)
