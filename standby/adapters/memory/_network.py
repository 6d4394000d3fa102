"""The in-memory relay network and its subscriptions.

Re-exported by :mod:`standby.adapters.memory`, their public home.
"""

from __future__ import annotations

import heapq
import math
import random
import time
import weakref
from collections.abc import Callable, Iterable, Sequence

from ...aio import LoopClock, Wakeup, monotonic
from ...core._effects import DropReason
from ...core._errors import TransportError
from ...core._models import Envelope, Heartbeat, LeaseRevocation, Message, PromotionClaim
from ...protocols._contracts import Query, TransportDrop, message_kind, unexpected_author
from .._pacing import Pacing
from ._costs import RelayCosts, RelayServer
from ._limits import RelayLimiter, RelayLimits
from ._relay import NO_FAULTS, LinkFaults, MemoryRelay, canonical_identity
from ._transport import MemoryAtomicTransport, MemoryTransport

__all__ = ["MemoryRelayNetwork", "MemorySubscription"]


class MemorySubscription:
    """A subscription of one transport; deliveries wait out their link delay."""

    def __init__(
        self,
        network: MemoryRelayNetwork,
        identity: str,
        query: Query,
        report: Callable[[TransportDrop], None] | None = None,
    ) -> None:
        self._network = network
        self.identity = identity
        self._links = network._links_of(identity)
        self.query = query
        self._report = report
        self._pending: list[tuple[float, int, str, str, Message]] = []
        self._seq = 0
        #: The reader's wakeup while it waits (``None`` otherwise): the same one,
        #: cleared, for every wait; and its backend's clock, once it has read it.
        self._wakeup: Wakeup | None = None
        self._waiting = Wakeup()
        self._clock: Callable[[], float] | None = None
        self._closed = False
        #: Why the relays refused this subscription (their limits), if they did.
        self.refused: str | None = None

    def __aiter__(self) -> MemorySubscription:
        return self

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed

    def _drop(self, relay: str, signer: str, message: Message) -> None:
        """A relay delivered a message from an unexpected author: drop and report it."""
        if self._closed or self._report is None:
            return
        workload_id = None if isinstance(message, Heartbeat) else message.workload_id
        self._report(
            TransportDrop(
                DropReason.UNEXPECTED_AUTHOR,
                relay,
                signer,
                f"{message_kind(message)} signed by {signer!r}, who is not an expected author",
                workload_id,
            )
        )

    def _push(self, at: float, relay: str, signer: str, message: Message) -> None:
        self._seq += 1
        heapq.heappush(self._pending, (at, self._seq, relay, signer, message))
        if self._wakeup is not None:
            self._wakeup.set()

    async def __anext__(self) -> Envelope[Message]:
        if self._closed:
            raise StopAsyncIteration
        if self.refused is not None:  # set before any read, never changed
            raise TransportError(f"subscription refused by the relays: {self.refused}")
        clock = self._clock
        if clock is None:
            self._clock = clock = monotonic()
        pending = self._pending
        wakeup = self._waiting
        while True:
            now = clock()
            if pending and pending[0][0] <= now:
                _at, _seq, relay, signer, message = heapq.heappop(pending)
                return Envelope(message, signer, relay, self._network.wall_clock())
            wakeup.clear()
            self._wakeup = wakeup
            # Nothing on its way: no deadline (and no timer to pay for).
            await wakeup.wait(pending[0][0] - now if pending else math.inf)
            self._wakeup = None
            if self._closed:
                raise StopAsyncIteration

    async def aclose(self) -> None:
        """Stop receiving; pending deliveries are discarded. Idempotent."""
        self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pending.clear()
        self._report = None  # nothing to report any more (and no cycle with the transport)
        self._network._unsubscribe(self)
        limiter = self._network.limiter
        if limiter is not None and self.refused is None:
            limiter.close_subscription(self.identity)
        if self._wakeup is not None:
            self._wakeup.set()


class _Link:
    """A provider's link to one relay as it is now; the network updates it as faults change.

    ``open``: the relay is up and no partition cuts the link; ``faults``: the
    link's :class:`LinkFaults`.
    """

    __slots__ = ("faults", "open")

    def __init__(self, state: tuple[bool, LinkFaults]) -> None:
        self.open, self.faults = state


class MemoryRelayNetwork:
    """``N`` in-memory relays shared by every provider of a test.

    ``relays`` is a count (names ``relay-0``...) or a sequence of names.
    ``wall_clock`` stamps ``received_at`` of the envelopes (default
    :func:`time.time`; tests pass ``lambda: EPOCH + anyio.current_time()``).
    With ``atomic_claims=True`` the transports also implement
    :class:`~standby.protocols.AtomicClaims`, through a compare-and-set store
    that lives with the first relay (unreachable when that relay is).
    ``limits`` (a :class:`RelayLimits`) bounds what each relay allows one
    provider's connection (subscriptions, concurrent queries, a rate), as
    public relays do; refusals are counted in ``network.limiter.refusals``.
    ``costs`` (a :class:`RelayCosts`) makes the relays spend time on each
    event and query and serve each connection in order, as a real relay
    does; ``pacing`` (a :class:`~standby.adapters.memory.Pacing`) is how the
    transports use the connections (it matters only with costs: free relays
    answer at once).
    """

    def __init__(
        self,
        relays: int | Sequence[str] = 3,
        *,
        seed: int = 0,
        wall_clock: Callable[[], float] = time.time,
        atomic_claims: bool = False,
        limits: RelayLimits | None = None,
        costs: RelayCosts | None = None,
        pacing: Pacing | None = None,
    ) -> None:
        if isinstance(relays, (str, bytes)):
            raise TypeError(
                f"relays must be a count or a list of relay names, got the single string "
                f"{relays!r}: pass [{relays!r}]"
            )
        names = [f"relay-{i}" for i in range(relays)] if isinstance(relays, int) else list(relays)
        if not names:
            raise ValueError("a relay network needs at least one relay")
        if len(set(names)) != len(names):
            raise ValueError(f"relay names must be unique, got {names!r}")
        self.relays: tuple[str, ...] = tuple(names)
        self.wall_clock = wall_clock
        self.atomic_claims = atomic_claims
        self.rng = random.Random(seed)
        self._relays = {name: MemoryRelay(name) for name in names}
        self._cut: dict[str, set[str]] = {}
        self._relay_faults: dict[str, LinkFaults] = {}
        self._provider_faults: dict[str, LinkFaults] = {}
        self._default_faults = NO_FAULTS
        #: identity -> relay -> the link as it is now, updated on every change
        #: of a fault, a partition or a relay's state (see :meth:`_links_of`).
        self._links: dict[str, dict[str, _Link]] = {}
        for relay in self._relays.values():
            relay._on_up = weakref.WeakMethod(self._update_links)
        self._subscriptions: list[MemorySubscription] = []
        self._cas: dict[str, PromotionClaim] = {}
        self.limiter: RelayLimiter | None = None if limits is None else RelayLimiter(limits)
        """Enforces ``limits`` (``None`` without limits)."""
        self.server: RelayServer | None = (
            None if costs is None or costs.free else RelayServer(costs)
        )
        """Charges ``costs`` and keeps each connection in order (``None`` without costs)."""
        self.pacing = Pacing() if pacing is None else pacing
        """How the transports of this network use each relay's connections."""
        self._later: list[tuple[float, int, str, str, Message]] = []
        self._later_seq = 0
        self.published: list[tuple[float, str, Message, frozenset[str]]] = []
        """Every publish: ``(anyio time, signer, message, relays that acked)``."""
        self.on_store: Callable[[str, str, Message], object] | None = None
        """Called as ``on_store(relay, signer, message)`` whenever a relay stores a message."""
        self.clock: Callable[[], float] = LoopClock()
        """``anyio.current_time()``, the clock of stores and deliveries (the transports' too).

        Whoever runs the network on a loop of its own may set that loop's ``time``.
        """

    def __repr__(self) -> str:
        return f"MemoryRelayNetwork(relays={list(self.relays)!r})"

    # -------------------------------------------------------------- providers

    @staticmethod
    def canonical(identity: str) -> str:
        """See :func:`canonical_identity`."""
        return canonical_identity(identity)

    def transport(self, identity: str, *, pacing: Pacing | None = None) -> MemoryTransport:
        """A transport that signs as ``identity`` (canonicalised).

        ``pacing`` overrides the network's :attr:`pacing` for this transport.
        """
        me = canonical_identity(identity)
        chosen = self.pacing if pacing is None else pacing
        if self.atomic_claims:
            return MemoryAtomicTransport(self, me, pacing=chosen)
        return MemoryTransport(self, me, pacing=chosen)

    def relay(self, name: str) -> MemoryRelay:
        """The relay called ``name`` (``KeyError`` when there is none)."""
        if self._later:
            self._settle()
        return self._relays[name]

    # -------------------------------------------------------------- faults

    def _names(self, relays: Iterable[str] | None) -> list[str]:
        names = list(self.relays) if relays is None else list(relays)
        for name in names:
            if name not in self._relays:
                raise KeyError(f"unknown relay {name!r}; relays are {list(self.relays)!r}")
        return names

    def relay_down(self, *relays: str) -> None:
        """Take relays down: they neither store, answer nor deliver until up again."""
        for name in self._names(relays):
            self._relays[name].up = False

    def relay_up(self, *relays: str) -> None:
        """Bring relays back (they kept what they had stored)."""
        for name in self._names(relays):
            self._relays[name].up = True

    def partition(self, identity: str, relays: Iterable[str] | None = None) -> None:
        """Cut ``identity`` off from ``relays`` (default: all of them), both ways."""
        me = canonical_identity(identity)
        self._cut.setdefault(me, set()).update(self._names(relays))
        self._update_links()

    def heal(self, identity: str, relays: Iterable[str] | None = None) -> None:
        """Undo :meth:`partition` for ``relays`` (default: all of them)."""
        me = canonical_identity(identity)
        cut = self._cut.get(me)
        if cut is None:
            return
        cut.difference_update(self._names(relays))
        if not cut:
            del self._cut[me]
        self._update_links()

    def set_faults(
        self,
        *,
        relay: str | None = None,
        provider: str | None = None,
        latency: float = 0.0,
        jitter: float = 0.0,
        drop: float = 0.0,
        duplicate: float = 0.0,
    ) -> LinkFaults:
        """Set link faults for one relay, one provider, or (neither given) every link.

        A link between a provider and a relay suffers the relay's faults and
        the provider's faults combined (or the default when neither is set).
        Setting all-zero faults clears them. Returns the faults set.
        """
        if relay is not None and provider is not None:
            raise ValueError("give either relay= or provider=, not both")
        faults = LinkFaults(latency=latency, jitter=jitter, drop=drop, duplicate=duplicate)
        if relay is not None:
            self._names([relay])
            self._relay_faults[relay] = faults
        elif provider is not None:
            self._provider_faults[canonical_identity(provider)] = faults
        else:
            self._default_faults = faults
        self._update_links()
        return faults

    def clear_faults(self) -> None:
        """Remove every link fault (partitions and relay states are kept)."""
        self._relay_faults.clear()
        self._provider_faults.clear()
        self._default_faults = NO_FAULTS
        self._update_links()

    def faults(self, relay: str, provider: str) -> LinkFaults:
        """The faults of the link between ``provider`` and ``relay``."""
        by_relay = self._relay_faults.get(relay)
        by_provider = self._provider_faults.get(provider)
        if by_relay is None and by_provider is None:
            return self._default_faults
        return (by_relay or NO_FAULTS).combine(by_provider or NO_FAULTS)

    def reachable(self, identity: str, relay: str) -> bool:
        """Whether ``identity`` can talk to ``relay`` now (it is up, no partition)."""
        return self._relays[relay].up and relay not in self._cut.get(identity, ())

    def _links_of(self, identity: str) -> dict[str, _Link]:
        """The links of ``identity``, by relay: read their state there, not a copy.

        The same dictionary and links for the life of the network, kept up
        to date: a leg that holds a link sees a partition or a relay going
        down at once.
        """
        links = self._links.get(identity)
        if links is None:
            links = {relay: _Link(self._link_state(identity, relay)) for relay in self.relays}
            self._links[identity] = links
        return links

    def _link_state(self, identity: str, relay: str) -> tuple[bool, LinkFaults]:
        """Whether the link is open (:meth:`reachable`), and its :meth:`faults`."""
        return self.reachable(identity, relay), self.faults(relay, identity)

    def _update_links(self) -> None:
        """The fault state changed: every link takes its new state."""
        for identity, links in self._links.items():
            for relay, link in links.items():
                link.open, link.faults = self._link_state(identity, relay)

    def _delay(self, faults: LinkFaults) -> float:
        if faults.jitter:
            # rng.uniform(0.0, jitter), spelled out: the same draw, the same number.
            return faults.latency + faults.jitter * self.rng.random()
        return faults.latency

    def _lost(self, faults: LinkFaults) -> bool:
        return faults.drop > 0 and self.rng.random() < faults.drop

    # -------------------------------------------------------------- storage

    def _store(self, relay: str, signer: str, message: Message) -> None:
        now = self.clock()
        target = self._relays[relay]
        if target.amnesiac:
            return
        target.store(signer, message, now)
        if self.on_store is not None:
            self.on_store(relay, signer, message)
        for subscription in list(self._subscriptions):
            self._offer(subscription, relay, signer, message, now)

    def _store_at(self, at: float, relay: str, signer: str, message: Message) -> None:
        """``relay`` stores ``message`` at ``at`` (later than now: it is busy until then).

        The message is offered to the subscriptions now, for delivery from
        ``at`` on, and becomes visible to queries and :meth:`stored` at ``at``,
        whatever happens to the publisher meanwhile (the relay has it).
        """
        if self._relays[relay].amnesiac:
            return
        self._later_seq += 1
        heapq.heappush(self._later, (at, self._later_seq, relay, signer, message))
        for subscription in list(self._subscriptions):
            self._offer(subscription, relay, signer, message, at)

    def _settle(self) -> None:
        """Store what the relays have finished storing by now (see :meth:`_store_at`)."""
        now = self.clock()
        later = self._later
        while later and later[0][0] <= now:
            at, _seq, relay, signer, message = heapq.heappop(later)
            self._relays[relay].store(signer, message, at)
            if self.on_store is not None:
                self.on_store(relay, signer, message)

    def _offer(
        self,
        subscription: MemorySubscription,
        relay: str,
        signer: str,
        message: Message,
        now: float,
        *,
        strangers: bool = True,
    ) -> None:
        """What ``relay`` does with a stored message for ``subscription``.

        A matching message crosses the link (when it is not lost on the way,
        perhaps twice); with ``strangers``, one from an unexpected author
        reaches the subscription only to be dropped and reported, as a
        transport that filters authors itself would drop it.
        """
        query = subscription.query
        if query.matches(signer, message):
            link = subscription._links[relay]
            if not link.open:
                return
            faults = link.faults
            if self._lost(faults):
                return
            subscription._push(now + self._delay(faults), relay, signer, message)
            if faults.duplicate > 0 and self.rng.random() < faults.duplicate:
                subscription._push(now + self._delay(faults), relay, signer, message)
        elif (
            strangers
            and unexpected_author(query, signer, message)
            and _addressed_to(subscription.identity, message)
            and subscription._links[relay].open
        ):
            subscription._drop(relay, signer, message)

    def _subscribe(
        self,
        identity: str,
        query: Query,
        report: Callable[[TransportDrop], None] | None = None,
    ) -> MemorySubscription:
        subscription = MemorySubscription(self, identity, query, report)
        if self.limiter is not None:
            subscription.refused = self.limiter.open_subscription(identity)
            if subscription.refused is not None:
                return subscription
        self._subscriptions.append(subscription)
        if query.since is not None:
            now = self.clock()
            if self._later:
                self._settle()
            for relay in self.relays:
                for signer, message in self._relays[relay].stored():
                    self._offer(subscription, relay, signer, message, now)
            for at, _seq, relay, signer, message in sorted(self._later):
                self._offer(subscription, relay, signer, message, at)
        return subscription

    def _unsubscribe(self, subscription: MemorySubscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)

    def replay(
        self,
        message: Message,
        *,
        signer: str,
        relays: Iterable[str] | None = None,
        to: str | None = None,
    ) -> None:
        """Have ``relays`` (default: all up ones) receive ``message`` signed by ``signer`` now.

        For replays and for "an addressable message arrives older than one
        already stored": pass an old version of a message that was really
        signed by ``signer``. Subscribers receive it like any other message.
        With ``to``, the relays store nothing and re-send the message to the
        matching subscriptions of that identity only. Must be called from
        inside the event loop.
        """
        me = canonical_identity(signer)
        message_kind(message)
        target = None if to is None else canonical_identity(to)
        for relay in self._names(relays):
            if not self._relays[relay].up:
                continue
            if target is None:
                self._store(relay, me, message)
                continue
            now = self.clock()
            for subscription in list(self._subscriptions):
                if subscription.identity == target:
                    self._offer(subscription, relay, me, message, now, strangers=False)

    def stored(self, relay: str) -> list[tuple[str, Message]]:
        """What ``relay`` holds, as ``(signer, message)`` in arrival order."""
        return self.relay(relay).stored()

    # -------------------------------------------------------------- atomic claims

    def _cas_relay(self, identity: str) -> str:
        relay = self.relays[0]
        if not self.reachable(identity, relay):
            raise TransportError(f"the claim store on {relay} is unreachable from {identity!r}")
        return relay

    def holder(self, workload_id: str) -> PromotionClaim | None:
        """The claim holding the newest epoch of ``workload_id`` in the CAS store."""
        return self._cas.get(workload_id)


def _addressed_to(identity: str, message: Message) -> bool:
    """A revocation reaches the standbys it names (Nostr's ``p`` tags); other kinds anyone."""
    return not isinstance(message, LeaseRevocation) or identity in message.standbys
