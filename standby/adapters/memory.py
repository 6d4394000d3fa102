"""In-memory adapters: fault-injecting relays, a recording runtime, a slot store.

Everything here runs inside one process on anyio, so on trio's
``MockClock(autojump_threshold=0)`` hours of protocol time pass in
milliseconds. All randomness comes from a seeded :class:`random.Random`.

Relays::

    network = MemoryRelayNetwork(relays=3, seed=7)
    alice = network.transport("alice")       # signs as "alice"
    network.relay_down("relay-1")             # faults at any time
    network.partition("alice", ["relay-0", "relay-2"])
    network.set_faults(relay="relay-2", latency=0.2, jitter=0.5, drop=0.1, duplicate=0.2)

The signer of an envelope is always the identity of the transport that
published it (authenticated by construction); a stranger's transport can still
publish a body that names someone else, which is how tests forge messages.
Like the Nostr transport, a subscription asks the relays for the messages of
its workloads from anyone and drops those from outside its authors itself
(heartbeats are filtered by author at the relay); the transport reports each
such drop to the hook given to :meth:`MemoryTransport.set_drop_hook`
(``ReportsDrops``), which the node installs. Messages here carry no
signatures, so there are no bad-signature drops.

Runtime::

    record = RuntimeRecord()
    runtime = MemoryRuntime("alice", record=record, spawn_latency=2.0)
    ...
    assert record.max_concurrent("w1") == 1
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import heapq
import math
import random
import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, Literal

import anyio
import anyio.lowlevel
import attrs

from .._effects import DropReason
from .._errors import IdentityError, RuntimeFailure, SpawnError, StoreError, TransportError
from .._models import Envelope, Heartbeat, LeaseRevocation, Message, PromotionClaim, StandbySlot
from .._protocols import (
    ClaimOutcome,
    ContainerStatus,
    PublishResult,
    Query,
    QueryResult,
    RunningWorkload,
    TransportDrop,
    addressable_key,
    claim_wins,
    message_kind,
    newest_per_key,
    unexpected_author,
)
from .._state import NodeState
from ._relay_limits import RelayLimiter, RelayLimits

__all__ = [
    "LinkFaults",
    "MemoryAtomicTransport",
    "MemoryHandle",
    "MemoryRelay",
    "MemoryRelayNetwork",
    "MemoryRuntime",
    "MemorySlotStore",
    "MemorySubscription",
    "MemoryTransport",
    "RelayLimits",
    "RunInterval",
    "RuntimeEvent",
    "RuntimeRecord",
    "canonical_identity",
]

_IDENTITY: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def canonical_identity(identity: str) -> str:
    """Canonical form of an in-memory identity.

    Case and surrounding blanks do not matter and an optional ``mem:`` prefix
    is dropped, so ``" MEM:Alice "`` and ``"alice"`` are one identity. What is
    left must be 1-64 characters of ``a-z 0-9 . _ -`` starting with a letter
    or digit; anything else raises :class:`~standby.IdentityError`.
    """
    if not isinstance(identity, str):
        raise IdentityError(f"an identity must be a string, got {type(identity).__name__}")
    text = identity.strip().lower()
    text = text.removeprefix("mem:")
    if not _IDENTITY.fullmatch(text):
        raise IdentityError(
            f"malformed identity {identity!r}: expected 1-64 characters of a-z, 0-9, '.', "
            "'_', '-' (optionally prefixed with 'mem:')"
        )
    return text


# --------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------


def _probability(_inst: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be a probability in [0, 1], got {value}")


def _duration(_inst: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a finite number >= 0, got {value}")


@attrs.frozen
class LinkFaults:
    """Faults on the link between a provider and a relay (each direction).

    ``latency`` is a fixed one-way delay; ``jitter`` adds a uniform random
    extra in ``[0, jitter]`` (which reorders messages); ``drop`` is the chance
    a message (a publish, a query answer, a delivery) is lost; ``duplicate``
    the chance a subscription delivery happens twice.
    """

    latency: float = attrs.field(default=0.0, validator=_duration)
    jitter: float = attrs.field(default=0.0, validator=_duration)
    drop: float = attrs.field(default=0.0, validator=_probability)
    duplicate: float = attrs.field(default=0.0, validator=_probability)

    def combine(self, other: LinkFaults) -> LinkFaults:
        """Both faults at once: delays add up, losses and duplicates compound."""
        return LinkFaults(
            latency=self.latency + other.latency,
            jitter=self.jitter + other.jitter,
            drop=1 - (1 - self.drop) * (1 - other.drop),
            duplicate=1 - (1 - self.duplicate) * (1 - other.duplicate),
        )


_NO_FAULTS: Final = LinkFaults()


# --------------------------------------------------------------------------
# Relays and subscriptions
# --------------------------------------------------------------------------


@attrs.frozen
class _Stored:
    signer: str
    message: Message
    stored_at: float


class MemoryRelay:
    """One relay: it stores every message it receives and answers queries.

    By default a relay keeps every version of an addressable message (readers
    pick the newest). With ``replace_on_arrival=True`` it keeps only the last
    version that *arrived* per key, so a stale message arriving late hides a
    newer one: the misbehaviour that breaks claims over plain relays. With
    ``amnesiac=True`` it acknowledges what it receives but neither keeps it
    nor passes it on (a relay that loses acknowledged events).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.up = True
        self.replace_on_arrival = False
        self.amnesiac = False
        self._stored: list[_Stored] = []

    def __repr__(self) -> str:
        state = "up" if self.up else "down"
        return f"MemoryRelay({self.name!r}, {state}, {len(self._stored)} stored)"

    def store(self, signer: str, message: Message, at: float) -> None:
        """Store ``message`` signed by ``signer``."""
        if self.replace_on_arrival:
            key = addressable_key(signer, message)
            self._stored = [s for s in self._stored if addressable_key(s.signer, s.message) != key]
        self._stored.append(_Stored(signer, message, at))

    def matching(self, query: Query) -> list[tuple[str, Message]]:
        """Stored ``(signer, message)`` pairs matching ``query``, in arrival order."""
        return [(s.signer, s.message) for s in self._stored if query.matches(s.signer, s.message)]

    def stored(self) -> list[tuple[str, Message]]:
        """Everything stored, in arrival order."""
        return [(s.signer, s.message) for s in self._stored]

    def forget(self, predicate: Callable[[str, Message], bool] | None = None) -> int:
        """Lose stored messages (all, or those matching ``predicate``); returns how many."""
        before = len(self._stored)
        if predicate is None:
            self._stored = []
        else:
            self._stored = [s for s in self._stored if not predicate(s.signer, s.message)]
        return before - len(self._stored)


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
        self.query = query
        self._report = report
        self._pending: list[tuple[float, int, str, str, Message]] = []
        self._seq = 0
        self._wakeup: anyio.Event | None = None
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
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self.refused is not None:
                raise TransportError(f"subscription refused by the relays: {self.refused}")
            now = anyio.current_time()
            if self._pending and self._pending[0][0] <= now:
                _at, _seq, relay, signer, message = heapq.heappop(self._pending)
                return Envelope(message, signer, relay, self._network.wall_clock())
            wait = self._pending[0][0] - now if self._pending else math.inf
            self._wakeup = anyio.Event()
            with anyio.move_on_after(wait):
                await self._wakeup.wait()
            self._wakeup = None

    async def aclose(self) -> None:
        """Stop receiving; pending deliveries are discarded. Idempotent."""
        self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pending.clear()
        self._network._unsubscribe(self)
        limiter = self._network.limiter
        if limiter is not None and self.refused is None:
            limiter.close_subscription(self.identity)
        if self._wakeup is not None:
            self._wakeup.set()


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
    """

    def __init__(
        self,
        relays: int | Sequence[str] = 3,
        *,
        seed: int = 0,
        wall_clock: Callable[[], float] = time.time,
        atomic_claims: bool = False,
        limits: RelayLimits | None = None,
    ) -> None:
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
        self._default_faults = _NO_FAULTS
        self._subscriptions: list[MemorySubscription] = []
        self._cas: dict[str, PromotionClaim] = {}
        self.limiter: RelayLimiter | None = None if limits is None else RelayLimiter(limits)
        """Enforces ``limits`` (``None`` without limits)."""
        self.published: list[tuple[float, str, Message, frozenset[str]]] = []
        """Every publish: ``(anyio time, signer, message, relays that acked)``."""
        self.on_store: Callable[[str, str, Message], object] | None = None
        """Called as ``on_store(relay, signer, message)`` whenever a relay stores a message."""

    def __repr__(self) -> str:
        return f"MemoryRelayNetwork(relays={list(self.relays)!r})"

    # -------------------------------------------------------------- providers

    @staticmethod
    def canonical(identity: str) -> str:
        """See :func:`canonical_identity`."""
        return canonical_identity(identity)

    def transport(self, identity: str) -> MemoryTransport:
        """A transport that signs as ``identity`` (canonicalised)."""
        me = canonical_identity(identity)
        if self.atomic_claims:
            return MemoryAtomicTransport(self, me)
        return MemoryTransport(self, me)

    def relay(self, name: str) -> MemoryRelay:
        """The relay called ``name`` (``KeyError`` when there is none)."""
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

    def heal(self, identity: str, relays: Iterable[str] | None = None) -> None:
        """Undo :meth:`partition` for ``relays`` (default: all of them)."""
        me = canonical_identity(identity)
        cut = self._cut.get(me)
        if cut is None:
            return
        cut.difference_update(self._names(relays))
        if not cut:
            del self._cut[me]

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
        return faults

    def clear_faults(self) -> None:
        """Remove every link fault (partitions and relay states are kept)."""
        self._relay_faults.clear()
        self._provider_faults.clear()
        self._default_faults = _NO_FAULTS

    def faults(self, relay: str, provider: str) -> LinkFaults:
        """The faults of the link between ``provider`` and ``relay``."""
        by_relay = self._relay_faults.get(relay)
        by_provider = self._provider_faults.get(provider)
        if by_relay is None and by_provider is None:
            return self._default_faults
        return (by_relay or _NO_FAULTS).combine(by_provider or _NO_FAULTS)

    def reachable(self, identity: str, relay: str) -> bool:
        """Whether ``identity`` can talk to ``relay`` now (it is up, no partition)."""
        return self._relays[relay].up and relay not in self._cut.get(identity, ())

    def _delay(self, faults: LinkFaults) -> float:
        if faults.jitter:
            return faults.latency + self.rng.uniform(0.0, faults.jitter)
        return faults.latency

    def _lost(self, faults: LinkFaults) -> bool:
        return faults.drop > 0 and self.rng.random() < faults.drop

    # -------------------------------------------------------------- storage

    def _store(self, relay: str, signer: str, message: Message) -> None:
        now = anyio.current_time()
        target = self._relays[relay]
        if target.amnesiac:
            return
        target.store(signer, message, now)
        if self.on_store is not None:
            self.on_store(relay, signer, message)
        for subscription in list(self._subscriptions):
            self._offer(subscription, relay, signer, message, now)

    def _offer(
        self,
        subscription: MemorySubscription,
        relay: str,
        signer: str,
        message: Message,
        now: float,
    ) -> None:
        """What ``relay`` does with a stored message for ``subscription``."""
        query = subscription.query
        if query.matches(signer, message):
            self._deliver(subscription, relay, signer, message, now)
        elif (
            unexpected_author(query, signer, message)
            and _addressed_to(subscription.identity, message)
            and self.reachable(subscription.identity, relay)
        ):
            subscription._drop(relay, signer, message)

    def _deliver(
        self,
        subscription: MemorySubscription,
        relay: str,
        signer: str,
        message: Message,
        now: float,
    ) -> None:
        if not self.reachable(subscription.identity, relay):
            return
        faults = self.faults(relay, subscription.identity)
        if self._lost(faults):
            return
        subscription._push(now + self._delay(faults), relay, signer, message)
        if faults.duplicate > 0 and self.rng.random() < faults.duplicate:
            subscription._push(now + self._delay(faults), relay, signer, message)

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
            now = anyio.current_time()
            for relay in self.relays:
                for signer, message in self._relays[relay].stored():
                    self._offer(subscription, relay, signer, message, now)
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
            now = anyio.current_time()
            for subscription in list(self._subscriptions):
                if subscription.identity == target and subscription.query.matches(me, message):
                    self._deliver(subscription, relay, me, message, now)

    def stored(self, relay: str) -> list[tuple[str, Message]]:
        """What ``relay`` holds, as ``(signer, message)`` in arrival order."""
        return self._relays[relay].stored()

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


class MemoryTransport:
    """A provider's view of a :class:`MemoryRelayNetwork`; implements ``RelayTransport``."""

    def __init__(self, network: MemoryRelayNetwork, identity: str) -> None:
        self._network = network
        self._identity = identity
        self._severed = False
        self._opened: list[MemorySubscription] = []
        self._drop_hook: Callable[[TransportDrop], None] | None = None
        self.drops: collections.deque[TransportDrop] = collections.deque(maxlen=1000)
        """The latest 1000 messages this transport's subscriptions dropped, oldest first."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._identity!r})"

    def sever(self) -> None:
        """The process behind this transport is gone (``kill -9``).

        Nothing it sends from now on reaches a relay, not even a publish or a
        compare-and-set already in flight; its subscriptions close at once
        (the relays see the connections drop); new calls raise
        :class:`~standby.TransportError`. Other transports of the same
        identity (a restarted process) are not affected.
        """
        self._severed = True
        for subscription in self._opened:
            subscription._close()
        self._opened.clear()

    @property
    def severed(self) -> bool:
        """Whether :meth:`sever` was called."""
        return self._severed

    def _alive(self) -> None:
        if self._severed:
            raise TransportError(f"the transport of {self._identity!r} was severed")

    def set_drop_hook(self, hook: Callable[[TransportDrop], None] | None) -> None:
        """Report every dropped message to ``hook`` (``ReportsDrops``); ``None`` stops."""
        self._drop_hook = hook

    def _report(self, drop: TransportDrop) -> None:
        self.drops.append(drop)
        hook = self._drop_hook
        if hook is not None:
            with contextlib.suppress(Exception):
                hook(drop)

    @property
    def identity(self) -> str:
        """The canonical identity this transport signs with."""
        return self._identity

    @property
    def relay_count(self) -> int:
        """How many relays the network has."""
        return len(self._network.relays)

    @property
    def network(self) -> MemoryRelayNetwork:
        """The network this transport belongs to."""
        return self._network

    def canonical(self, identity: str) -> str:
        """See :func:`canonical_identity`."""
        return canonical_identity(identity)

    async def publish(
        self,
        message: Message,
        *,
        timeout: float,  # noqa: ASYNC109 - part of the protocol
    ) -> PublishResult:
        """Send ``message`` to every relay; see ``RelayTransport.publish``."""
        self._alive()
        try:
            message_kind(message)
        except TypeError as exc:
            raise TransportError(f"cannot publish {message!r:.80}") from exc
        network = self._network
        me = self._identity
        answers: dict[str, str | None] = {}

        async def one(relay: str) -> None:
            if not network.reachable(me, relay):
                answers[relay] = "down" if not network.relay(relay).up else "unreachable"
                return
            faults = network.faults(relay, me)
            limiter = network.limiter
            if limiter is not None:
                await limiter.pace(me, relay)
            await anyio.sleep(network._delay(faults))
            if not network.reachable(me, relay):
                answers[relay] = "connection lost"
                return
            if network._lost(faults) or self._severed:
                answers[relay] = "lost in transit"
                return
            if limiter is not None and (refusal := limiter.admit_publish(me, relay)) is not None:
                answers[relay] = refusal
                return
            network._store(relay, me, message)
            await anyio.sleep(network._delay(faults))
            if network._lost(faults) or not network.reachable(me, relay):
                answers[relay] = "acknowledgement lost"
                return
            answers[relay] = None

        with anyio.move_on_after(timeout):
            async with anyio.create_task_group() as group:
                for relay in network.relays:
                    group.start_soon(one, relay)
        acked = frozenset(r for r in network.relays if r in answers and answers[r] is None)
        errors = {r: answers.get(r) or "timed out" for r in network.relays if r not in acked}
        network.published.append((anyio.current_time(), me, message, acked))
        return PublishResult(acked, errors)

    async def query(
        self,
        query: Query,
        *,
        timeout: float,  # noqa: ASYNC109 - part of the protocol
    ) -> QueryResult:
        """Read from every relay; see ``RelayTransport.query``."""
        self._alive()
        network = self._network
        me = self._identity
        found: list[Envelope[Message]] = []
        answered: set[str] = set()
        errors: dict[str, str] = {}

        async def one(relay: str) -> None:
            limiter = network.limiter
            if limiter is None:
                await ask(relay)
                return
            async with limiter.query(me, relay) as refusal:
                if refusal is not None:
                    errors[relay] = refusal
                    return
                await ask(relay)

        async def ask(relay: str) -> None:
            if not network.reachable(me, relay):
                errors[relay] = "down" if not network.relay(relay).up else "unreachable"
                return
            faults = network.faults(relay, me)
            await anyio.sleep(network._delay(faults))
            if not network.reachable(me, relay) or network._lost(faults):
                errors[relay] = "no answer"
                return
            matches = network.relay(relay).matching(query)
            await anyio.sleep(network._delay(faults))
            if not network.reachable(me, relay) or network._lost(faults):
                errors[relay] = "answer lost"
                return
            received = network.wall_clock()
            found.extend(Envelope(message, signer, relay, received) for signer, message in matches)
            answered.add(relay)

        with anyio.move_on_after(timeout):
            async with anyio.create_task_group() as group:
                for relay in network.relays:
                    group.start_soon(one, relay)
        for relay in network.relays:
            if relay not in answered and relay not in errors:
                errors[relay] = "timed out"
        return QueryResult(
            newest_per_key(found, not_after=query.until), frozenset(answered), errors
        )

    def subscribe(self, query: Query) -> MemorySubscription:
        """Receive matching messages as relays store them; see ``RelayTransport.subscribe``."""
        self._alive()
        subscription = self._network._subscribe(self._identity, query, self._report)
        self._opened = [s for s in self._opened if not s.closed]
        self._opened.append(subscription)
        return subscription


class MemoryAtomicTransport(MemoryTransport):
    """A :class:`MemoryTransport` that also implements ``AtomicClaims``."""

    async def compare_and_set_claim(
        self,
        claim: PromotionClaim,
        *,
        timeout: float,  # noqa: ASYNC109 - part of the protocol
    ) -> ClaimOutcome:
        """Hold ``claim.epoch`` unless another claimant holds it or a later one."""
        network = self._network
        claim = attrs.evolve(claim, claimant=self._identity)
        with anyio.fail_after(timeout):
            relay = network._cas_relay(self._identity)
            await anyio.sleep(network._delay(network.faults(relay, self._identity)))
            network._cas_relay(self._identity)
        self._alive()
        held = network._cas.get(claim.workload_id)
        if claim_wins(claim, held):
            network._cas[claim.workload_id] = claim
            return ClaimOutcome(won=True)
        return ClaimOutcome(won=False, holder=held)

    async def release_claim(
        self,
        claim: PromotionClaim,
        *,
        timeout: float,  # noqa: ASYNC109 - part of the protocol
    ) -> None:
        """Release ``claim`` if it still holds its epoch."""
        network = self._network
        with anyio.fail_after(timeout):
            relay = network._cas_relay(self._identity)
            await anyio.sleep(network._delay(network.faults(relay, self._identity)))
        self._alive()
        held = network._cas.get(claim.workload_id)
        if held is not None and held.claimant == self._identity and held.epoch == claim.epoch:
            del network._cas[claim.workload_id]


# --------------------------------------------------------------------------
# Runtime
# --------------------------------------------------------------------------

RuntimeEventKind = Literal[
    "spawn", "started", "spawn-failed", "spawn-cancelled", "stopped", "exited", "expired", "renewed"
]


@attrs.frozen
class RuntimeEvent:
    """One thing that happened in a :class:`MemoryRuntime`.

    ``at`` is :func:`anyio.current_time` (virtual in tests). ``spawn`` is the
    request, ``started`` the moment the container runs, ``stopped`` a stop
    the node asked for, ``exited`` an unexpected end (injected exit or host
    crash), ``expired`` the supervisor stopping it at its lease end (whether
    or not the node still lives), ``renewed`` a lease extension.
    """

    at: float
    host: str
    kind: RuntimeEventKind
    workload_id: str
    fencing_token: int
    handle: int | None = None
    detail: str = ""


@attrs.frozen
class RunInterval:
    """A container's run, from ``start`` to ``end`` (``None``: still running)."""

    host: str
    workload_id: str
    fencing_token: int
    handle: int
    start: float
    end: float | None

    def overlaps(self, other: RunInterval) -> bool:
        """Whether the two runs were ever running at the same instant."""
        mine = math.inf if self.end is None else self.end
        theirs = math.inf if other.end is None else other.end
        return self.start < theirs and other.start < mine


_ENDS: Final = frozenset({"stopped", "exited", "expired"})


class _Host:
    """What one host runs, kept in the shared record so it outlives a runtime object."""

    __slots__ = ("deadlines", "known", "leases", "running")

    def __init__(self) -> None:
        self.running: dict[int, MemoryHandle] = {}
        self.known: dict[int, MemoryHandle] = {}
        #: handle id -> lease end (the host's wall clock, Unix seconds)
        self.leases: dict[int, float] = {}
        #: handle id -> the instant of the record's clock at which the lease runs out
        self.deadlines: dict[int, float] = {}


class RuntimeRecord:
    """The log shared by the runtimes of several hosts, to check runs across them.

    It also holds what each host runs, so that a fresh :class:`MemoryRuntime`
    for the same host (a restarted node process) finds the containers its
    previous incarnation left running, exactly as a real supervisor or
    container engine would keep them.
    """

    def __init__(self) -> None:
        self.events: list[RuntimeEvent] = []
        self._next_handle = 0
        self._hosts: dict[str, _Host] = {}

    def __repr__(self) -> str:
        return f"RuntimeRecord({len(self.events)} events)"

    def _handle_id(self) -> int:
        self._next_handle += 1
        return self._next_handle

    def _host(self, host: str) -> _Host:
        state = self._hosts.get(host)
        if state is None:
            state = self._hosts[host] = _Host()
        return state

    def _append(self, event: RuntimeEvent) -> None:
        if self.events and self.events[-1].at > event.at:
            bisect.insort_right(self.events, event, key=_event_time)
        else:
            self.events.append(event)

    def reap(self, now: float | None = None) -> int:
        """Stop every container whose lease ran out by ``now`` (default: the current time).

        This is the supervisor's work, done lazily: each query of a runtime or
        of this record reaps first, and the ``expired`` event carries the
        instant the lease ran out, not the instant of the query. Returns how
        many containers it stopped.
        """
        if now is None:
            now = _current_time()
        stopped = 0
        for name, state in self._hosts.items():
            due = [i for i, at in state.deadlines.items() if at <= now and i in state.running]
            for handle_id in sorted(due, key=lambda i: (state.deadlines[i], i)):
                handle = state.running.pop(handle_id)
                at = state.deadlines.pop(handle_id)
                self._append(
                    RuntimeEvent(
                        at,
                        name,
                        "expired",
                        handle.workload_id,
                        handle.fencing_token,
                        handle_id,
                        f"lease end {state.leases[handle_id]:.3f}",
                    )
                )
                stopped += 1
        return stopped

    def intervals(self, workload_id: str | None = None) -> list[RunInterval]:
        """Every run (of ``workload_id``, or of all workloads), in start order."""
        self.reap()
        open_runs: dict[int, RuntimeEvent] = {}
        runs: list[RunInterval] = []
        for event in self.events:
            if workload_id is not None and event.workload_id != workload_id:
                continue
            if event.handle is None:
                continue
            if event.kind == "started":
                open_runs[event.handle] = event
            elif event.kind in _ENDS and event.handle in open_runs:
                start = open_runs.pop(event.handle)
                runs.append(_interval(start, event.at))
        runs.extend(_interval(start, None) for start in open_runs.values())
        runs.sort(key=lambda run: (run.start, run.handle))
        return runs

    def max_concurrent(self, workload_id: str) -> int:
        """Most runs of ``workload_id`` at one instant (a run ending as another starts: 1)."""
        points: list[tuple[float, int]] = []
        for run in self.intervals(workload_id):
            points.append((run.start, 1))
            if run.end is not None:
                points.append((run.end, -1))
        points.sort()  # at one instant, ends (-1) come before starts (+1)
        best = current = 0
        for _at, step in points:
            current += step
            best = max(best, current)
        return best

    def overlaps(self, workload_id: str) -> list[tuple[RunInterval, RunInterval]]:
        """Every pair of runs of ``workload_id`` that ran at the same time."""
        runs = self.intervals(workload_id)
        return [
            (first, second)
            for i, first in enumerate(runs)
            for second in runs[i + 1 :]
            if first.overlaps(second)
        ]

    def of_kind(self, kind: RuntimeEventKind, workload_id: str | None = None) -> list[RuntimeEvent]:
        """The events of one kind (for one workload), in order."""
        self.reap()
        return [
            e
            for e in self.events
            if e.kind == kind and (workload_id is None or e.workload_id == workload_id)
        ]


def _event_time(event: RuntimeEvent) -> float:
    return event.at


def _current_time() -> float:
    try:
        return anyio.current_time()
    except Exception:  # no event loop: nothing can have expired since the last call
        return -math.inf


def _interval(start: RuntimeEvent, end: float | None) -> RunInterval:
    assert start.handle is not None
    return RunInterval(
        host=start.host,
        workload_id=start.workload_id,
        fencing_token=start.fencing_token,
        handle=start.handle,
        start=start.at,
        end=end,
    )


@attrs.frozen
class MemoryHandle:
    """The handle :meth:`MemoryRuntime.spawn` returns."""

    id: int
    host: str
    workload_id: str
    fencing_token: int
    spec: Any = attrs.field(eq=False, repr=False)
    restore_from: str | None = None


class MemoryRuntime:
    """A fake container runtime for one host; implements ``ContainerRuntime``.

    It models a lease supervisor that does not share the node's fate: what a
    host runs lives in the shared :class:`RuntimeRecord`, so containers
    outlive the runtime object (and the node) that started them, a fresh
    ``MemoryRuntime`` for the same host and record lists them (adoption),
    and each stops on its own at its lease end (checked with ``wall_clock``,
    the host's clock in Unix seconds; tests pass ``lambda: EPOCH +
    anyio.current_time()``). ``enforce_leases=False`` turns the supervisor
    off, to show what goes wrong without it (failure mode 14).

    Several hosts share one record (``record=``), so a test can check that
    two of them never ran a workload at once. Spawns take ``spawn_latency``
    seconds (settable at any time); :meth:`fail_spawns` makes the next spawns
    fail. Event times come from :func:`anyio.current_time`.
    """

    def __init__(
        self,
        host: str = "host",
        *,
        record: RuntimeRecord | None = None,
        spawn_latency: float = 0.0,
        stop_latency: float = 0.0,
        wall_clock: Callable[[], float] = time.time,
        stop_grace: float = 0.0,
        enforce_leases: bool = True,
    ) -> None:
        if not stop_grace >= 0.0 or not math.isfinite(stop_grace):
            raise ValueError(f"stop_grace must be finite and >= 0, got {stop_grace!r}")
        self.host = host
        self.record = record if record is not None else RuntimeRecord()
        self.spawn_latency = spawn_latency
        self.stop_latency = stop_latency
        self.wall_clock = wall_clock
        self._stop_grace = stop_grace
        self.enforce_leases = enforce_leases
        self._failures: list[tuple[str | None, str]] = []
        self._state = self.record._host(host)

    def __repr__(self) -> str:
        return f"MemoryRuntime({self.host!r}, {len(self._state.running)} running)"

    @property
    def stop_grace(self) -> float:
        """The supervisor stops a container at its lease end; this bounds how late."""
        return self._stop_grace

    @property
    def events(self) -> list[RuntimeEvent]:
        """This host's events, in order."""
        self.record.reap()
        return [e for e in self.record.events if e.host == self.host]

    def _log(
        self,
        kind: RuntimeEventKind,
        workload_id: str,
        token: int,
        handle: int | None = None,
        detail: str = "",
    ) -> None:
        self.record._append(
            RuntimeEvent(anyio.current_time(), self.host, kind, workload_id, token, handle, detail)
        )

    def _bound(self, handle_id: int, lease_end: float) -> None:
        state = self._state
        state.leases[handle_id] = lease_end
        if self.enforce_leases:
            remaining = lease_end + self._stop_grace - self.wall_clock()
            state.deadlines[handle_id] = anyio.current_time() + remaining

    def fail_spawns(
        self, count: int = 1, *, workload_id: str | None = None, error: str = "injected failure"
    ) -> None:
        """Make the next ``count`` spawns (of ``workload_id``, or any) fail with ``error``."""
        self._failures.extend([(workload_id, error)] * count)

    def running(self, workload_id: str | None = None) -> list[MemoryHandle]:
        """Handles of the containers running now."""
        self.record.reap()
        return [
            h
            for h in self._state.running.values()
            if workload_id is None or h.workload_id == workload_id
        ]

    def lease_end(self, handle: MemoryHandle) -> float | None:
        """The lease end the supervisor enforces for ``handle`` (``None``: unknown)."""
        return self._state.leases.get(handle.id)

    async def spawn(
        self,
        spec: Any,
        *,
        workload_id: str,
        fencing_token: int,
        lease_end: float,
        restore_from: str | None = None,
    ) -> MemoryHandle:
        """Start a container after ``spawn_latency``; see ``ContainerRuntime.spawn``."""
        if math.isnan(lease_end):
            raise SpawnError(f"{self.host}: lease end is NaN", workload_id=workload_id)
        self._log("spawn", workload_id, fencing_token, detail=f"restore_from={restore_from}")
        try:
            await anyio.sleep(self.spawn_latency)
        except BaseException:
            self._log("spawn-cancelled", workload_id, fencing_token)
            raise
        for position, (target, error) in enumerate(self._failures):
            if target is None or target == workload_id:
                del self._failures[position]
                self._log("spawn-failed", workload_id, fencing_token, detail=error)
                raise SpawnError(
                    f"{self.host}: cannot start {workload_id!r}: {error}", workload_id=workload_id
                )
        if self.enforce_leases and lease_end <= self.wall_clock():
            self._log("spawn-failed", workload_id, fencing_token, detail="lease already over")
            raise SpawnError(
                f"{self.host}: cannot start {workload_id!r}: its lease ended at {lease_end:.3f}",
                workload_id=workload_id,
            )
        handle = MemoryHandle(
            id=self.record._handle_id(),
            host=self.host,
            workload_id=workload_id,
            fencing_token=fencing_token,
            spec=spec,
            restore_from=restore_from,
        )
        self._state.running[handle.id] = handle
        self._state.known[handle.id] = handle
        self._bound(handle.id, lease_end)
        self._log("started", workload_id, fencing_token, handle.id, f"lease end {lease_end:.3f}")
        return handle

    def _check(self, handle: Any) -> MemoryHandle:
        if not isinstance(handle, MemoryHandle) or handle.host != self.host:
            raise RuntimeFailure(f"{self.host}: not a handle of this runtime: {handle!r}")
        return handle

    async def renew(self, handle: Any, lease_end: float) -> None:
        """Extend the lease of a running container; an earlier end is ignored."""
        checked = self._check(handle)
        await anyio.lowlevel.checkpoint()
        self.record.reap()
        state = self._state
        if checked.id not in state.running or math.isnan(lease_end):
            return
        if lease_end > state.leases.get(checked.id, -math.inf):
            self._bound(checked.id, lease_end)
            self._log(
                "renewed",
                checked.workload_id,
                checked.fencing_token,
                checked.id,
                f"lease end {lease_end:.3f}",
            )

    async def status(self, handle: Any) -> ContainerStatus:
        """``running``, ``stopped`` or ``absent``."""
        checked = self._check(handle)
        await anyio.lowlevel.checkpoint()
        self.record.reap()
        if checked.id in self._state.running:
            return "running"
        if checked.id in self._state.known:
            return "stopped"
        return "absent"

    async def stop(self, handle: Any) -> None:
        """Stop the container (idempotent)."""
        checked = self._check(handle)
        if self.stop_latency:
            await anyio.sleep(self.stop_latency)
        else:
            await anyio.lowlevel.checkpoint()
        self.record.reap()
        if self._state.running.pop(checked.id, None) is not None:
            self._state.deadlines.pop(checked.id, None)
            self._log("stopped", checked.workload_id, checked.fencing_token, checked.id)

    async def list(self) -> list[RunningWorkload]:
        """What this host runs now (also as seen from a fresh runtime object)."""
        await anyio.lowlevel.checkpoint()
        self.record.reap()
        state = self._state
        return [
            RunningWorkload(h.workload_id, h.fencing_token, h, state.leases[h.id])
            for h in sorted(state.running.values(), key=lambda h: h.id)
        ]

    def remove(self, handle: MemoryHandle) -> None:
        """Forget a stopped container: its status becomes ``absent``."""
        if handle.id not in self._state.running:
            self._state.known.pop(handle.id, None)

    def _end(self, gone: Sequence[MemoryHandle], reason: str) -> int:
        for handle in gone:
            del self._state.running[handle.id]
            self._state.deadlines.pop(handle.id, None)
            self._log("exited", handle.workload_id, handle.fencing_token, handle.id, reason)
        return len(gone)

    def exit(self, workload_id: str, reason: str = "crashed") -> int:
        """Make the running containers of ``workload_id`` exit unexpectedly; returns how many."""
        self.record.reap()
        return self._end(
            [h for h in self._state.running.values() if h.workload_id == workload_id], reason
        )

    def crash(self, reason: str = "host crashed") -> int:
        """The host dies: every running container ends at once; returns how many."""
        self.record.reap()
        return self._end(list(self._state.running.values()), reason)


# --------------------------------------------------------------------------
# Slot store
# --------------------------------------------------------------------------


class MemorySlotStore:
    """A ``SlotStore`` in memory (survives a node restart within the process).

    Each save replaces the state. ``fail_next_save`` / ``fail_next_load``
    inject a :class:`~standby.StoreError`. ``saves`` counts successful saves.
    ``save_latency`` models a disk: a save becomes durable only when it
    returns, so a node killed (or a save cancelled) during that time leaves
    the old state, exactly what a restarted node must cope with.
    """

    def __init__(
        self, slots: Iterable[StandbySlot[Any]] = (), *, save_latency: float = 0.0
    ) -> None:
        self._state: NodeState[Any] = NodeState(tuple(slots))
        self.save_latency = save_latency
        self.saves = 0
        self.fail_next_save = False
        self.fail_next_load = False

    def __repr__(self) -> str:
        return f"MemorySlotStore({len(self._state.slots)} slots)"

    @property
    def slots(self) -> tuple[StandbySlot[Any], ...]:
        """The slots saved last."""
        return self._state.slots

    @property
    def state(self) -> NodeState[Any]:
        """The whole state saved last (what a restarted node would load)."""
        return self._state

    async def load(self) -> list[StandbySlot[Any]]:
        """The saved slots."""
        return list((await self.load_state()).slots)

    async def load_state(self) -> NodeState[Any]:
        """The saved state."""
        await anyio.lowlevel.checkpoint()
        if self.fail_next_load:
            self.fail_next_load = False
            raise StoreError("injected load failure")
        return self._state

    async def save(self, slots: Sequence[StandbySlot[Any]]) -> list[str]:
        """Replace the saved slots; nothing is withheld."""
        return await self.save_state(self._state.replace_slots(slots))

    async def save_state(self, state: NodeState[Any]) -> list[str]:
        """Replace the saved state once ``save_latency`` has passed; nothing is withheld."""
        if self.save_latency:
            await anyio.sleep(self.save_latency)
        else:
            await anyio.lowlevel.checkpoint()
        if self.fail_next_save:
            self.fail_next_save = False
            raise StoreError("injected save failure")
        self._state = state
        self.saves += 1
        return []
