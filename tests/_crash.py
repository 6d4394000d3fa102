"""Kill a node as ``kill -9`` would, on the virtual clock of the node tests.

Cancelling a node's scope runs its ``__aexit__`` (a last save, closed
subscriptions): that is a clean stop, not a crash. To crash it, the test
first *severs* the adapters that incarnation holds: from then on its store
refuses every save (and a save in flight when it was severed never lands),
its transport reaches no relay and its runtime handle can start or stop
nothing. What it had made durable stays; containers keep running in the
shared :class:`~standby.adapters.memory.RuntimeRecord`, under their
supervisor's lease end. A restarted node gets fresh adapters over the same
store contents, network and host.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio

from standby import StandbySlot, StoreError, TransportError
from standby.adapters.memory import MemorySlotStore, MemoryTransport
from standby.core import NodeState
from standby.protocols import PublishResult, Query, QueryResult, RunningWorkload


class Severed(Exception):
    """Raised by an adapter of a killed incarnation."""


class _Severable:
    """A handle of one node incarnation; once severed, every call raises ``dead``."""

    dead: type[Exception] = Severed

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.alive = True

    def sever(self) -> None:
        self.alive = False

    def _check(self) -> None:
        if not self.alive:
            raise self.dead("the process is dead")


class SeverableStore(_Severable):
    """One incarnation's handle on a shared :class:`MemorySlotStore`."""

    dead = StoreError

    def __init__(self, disk: MemorySlotStore) -> None:
        super().__init__(disk)
        self.disk = disk

    async def load(self) -> Sequence[StandbySlot[Any]]:
        self._check()
        return await self.disk.load()

    async def save(self, slots: Sequence[StandbySlot[Any]]) -> Sequence[str]:
        return await self.save_state((await self.disk.load_state()).replace_slots(slots))

    async def load_state(self) -> NodeState[Any]:
        self._check()
        return await self.disk.load_state()

    async def save_state(self, state: NodeState[Any]) -> Sequence[str]:
        self._check()
        latency = self.disk.save_latency
        if latency:
            # The write is durable only once the latency has passed, and only
            # if the process still lives then.
            await anyio.sleep(latency)
            self._check()
            self.disk.save_latency = 0.0
            try:
                return await self.disk.save_state(state)
            finally:
                self.disk.save_latency = latency
        return await self.disk.save_state(state)


class ForwardingTransport:
    """A relay transport that hands every call to ``inner``, after :meth:`_check`."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def _check(self) -> None:
        """A hook run before each call (nothing here)."""

    @property
    def identity(self) -> str:
        return str(self.inner.identity)

    @property
    def relay_count(self) -> int:
        return int(self.inner.relay_count)

    def canonical(self, identity: str) -> str:
        return str(self.inner.canonical(identity))

    async def publish(self, message: Any, *, timeout: float) -> PublishResult:  # noqa: ASYNC109
        self._check()
        result: PublishResult = await self.inner.publish(message, timeout=timeout)
        return result

    async def query(self, query: Query, *, timeout: float) -> QueryResult:  # noqa: ASYNC109
        self._check()
        result: QueryResult = await self.inner.query(query, timeout=timeout)
        return result

    def subscribe(self, query: Query) -> Any:
        self._check()
        return self.inner.subscribe(query)


class SeverableTransport(_Severable, ForwardingTransport):
    """One incarnation's connection to the memory relays."""

    dead = TransportError
    inner: MemoryTransport


class SeverableRuntime(_Severable):
    """One incarnation's handle on a host's runtime (containers outlive it)."""

    @property
    def stop_grace(self) -> float:
        return float(self.inner.stop_grace)

    async def spawn(self, spec: Any, **options: Any) -> Any:
        self._check()
        return await self.inner.spawn(spec, **options)

    async def renew(self, handle: Any, lease_end: float) -> None:
        self._check()
        await self.inner.renew(handle, lease_end)

    async def status(self, handle: Any) -> Any:
        self._check()
        return await self.inner.status(handle)

    async def stop(self, handle: Any) -> None:
        self._check()
        await self.inner.stop(handle)

    async def list(self) -> Sequence[RunningWorkload]:
        self._check()
        result: Sequence[RunningWorkload] = await self.inner.list()
        return result
