"""The node's live subscription: who it listens to, and getting it back when lost."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import anyio

from ..core._election import StandbyElection
from ..core._models import Envelope, Message
from ..core._timing import Timing
from ..protocols._contracts import MESSAGE_KINDS, Query, RelayTransport
from ._events import SubscriptionLost
from ._observe import Observer

__all__ = ["Subscriptions"]

#: A lost subscription is retried after retry_interval, doubling up to this many times.
_MAX_SUBSCRIBE_DOUBLINGS = 5
#: Seconds a change of the live subscription waits, so that changes coalesce.
_SUBSCRIBE_COALESCE = 0.05


class Subscriptions:
    """One live subscription, sized by authors, replaced when they change (FM19, FM20).

    A refused or broken subscription is reported and opened again with a
    doubling wait; the new one is opened before the old one closes, so a
    change of authors leaves no gap.
    """

    def __init__(
        self,
        transport: RelayTransport,
        timing: Timing,
        observer: Observer,
        election: StandbyElection[Any],
        deliver: Callable[[Envelope[Message]], None],
        primaries: Callable[[], Iterable[str]] = frozenset,
    ) -> None:
        self.transport = transport
        self.timing = timing
        self.observer = observer
        self.election = election
        self.deliver = deliver
        #: The standbys of the workloads this node runs as primary (failure mode 25).
        self.primaries = primaries
        self.failures = 0
        self._changed: anyio.Event | None = None

    def open(self) -> None:
        self._changed = anyio.Event()

    def interest(self) -> Query | None:
        """The live subscription: sized by primaries and peers, not by slots.

        It names the authors only (the primaries and peers of the slots, and
        the standbys of the workloads run here as primary, whose claims and
        announcements make a primary step down), so a thousand slots of one
        primary need the same small request as one; messages about workloads
        neither held nor run here are dropped by the standby side. It
        changes only when the set of authors does.
        """
        authors: set[str] = set(self.primaries())
        for slot in self.election.slots.values():
            authors.add(slot.primary)
            authors.update(slot.peers)
        if not authors:
            return None
        return Query(kinds=MESSAGE_KINDS, authors=authors)

    def refresh(self) -> None:
        """The slots changed: look again at who to listen to."""
        if self._changed is not None:
            self._changed.set()

    async def loop(self) -> None:
        """The subscription task."""
        current: Query | None = None
        scope: anyio.CancelScope | None = None
        alive: list[bool] = [False]
        async with anyio.create_task_group() as group:
            while True:
                self._changed = changed = anyio.Event()
                if current is not None and alive[0]:
                    # Many accepts in a row change the slots many times: look
                    # once they are done (a fresh slot has a whole silence of
                    # grace, so a short wait costs nothing).
                    await anyio.sleep(_SUBSCRIBE_COALESCE)
                wanted = self.interest()
                if wanted != current or (wanted is not None and not alive[0]):
                    # Open the new subscription before closing the old one: no gap.
                    new_scope = anyio.CancelScope()
                    new_alive = [True]
                    if wanted is not None:
                        try:
                            subscription = self.transport.subscribe(wanted)
                        except Exception as exc:
                            self._lost("subscribe", exc)
                            new_alive[0] = False
                        else:
                            group.start_soon(self._read, subscription, new_scope, new_alive)
                    if scope is not None:
                        scope.cancel()
                    current, scope, alive = wanted, new_scope, new_alive
                    if wanted is not None and not new_alive[0]:
                        await anyio.sleep(self._wait())
                        continue
                await changed.wait()

    async def _read(self, subscription: Any, scope: anyio.CancelScope, alive: list[bool]) -> None:
        with scope:
            try:
                async for envelope in subscription:
                    self.failures = 0
                    self.deliver(envelope)
            except Exception as exc:
                self._lost("subscription", exc)
                await anyio.sleep(self._wait())
            finally:
                alive[0] = False
                with anyio.CancelScope(shield=True), anyio.move_on_after(self.timing.query_timeout):
                    try:
                        await subscription.aclose()
                    except Exception as exc:
                        self.observer.failed("unsubscribe", exc)
                self.refresh()

    def _wait(self) -> float:
        doublings = min(max(self.failures - 1, 0), _MAX_SUBSCRIBE_DOUBLINGS)
        return float(self.timing.retry_interval * 2**doublings)

    def _lost(self, operation: str, exc: BaseException) -> None:
        """A failed or refused subscription: warn, count, report, retry with backoff (FM20)."""
        self.failures += 1
        retry_in = self._wait()
        self.observer.failed(operation, exc)
        text = f"{type(exc).__name__}: {exc}"
        self.observer.report(SubscriptionLost(self.observer.clock(), text, self.failures, retry_in))
