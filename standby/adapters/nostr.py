"""A :class:`~standby.protocols.RelayTransport` over Nostr relays (NIP-01).

Needs the ``nostr`` extra (``pip install 'standby[nostr]'``: ``coincurve``
for BIP-340 signatures, ``bech32`` for ``npub``/``nsec``, ``httpx`` and
``httpx-ws`` for websockets on anyio). Runs on asyncio and trio::

    keys = NostrKeys.from_secret(os.environ["PROVIDER_NSEC"])
    relays = ["wss://relay-a.example", "wss://relay-b.example", "wss://relay-c.example"]
    async with NostrTransport(relays, keys) as transport:
        async with StandbyNode(transport=transport, runtime=..., timing=Timing()) as node:
            ...

What it guarantees:

* Everything it publishes is a signed event; everything it hands out was
  checked first (the event id recomputed, the Schnorr signature verified)
  and carries the event's ``pubkey`` as the signer, never an identity read
  from the body. Events that fail a check are dropped and counted in
  :attr:`NostrTransport.counters`.
* Identities are compared as lowercase hex public keys: ``npub1...`` and hex
  spellings of one key are the same identity (:func:`canonical_identity`).
* ``publish`` reports the relays that answered ``OK true`` (or ``OK false``
  with a ``duplicate:`` reason: the relay already has that very event);
  the reason of any other ``OK false`` is kept in ``PublishResult.errors``.
* ``query`` reports the relays that sent ``EOSE`` in time as ``answered``
  and returns only the newest version of each addressable message (relays
  are not trusted to replace them correctly).
* One websocket per relay, reopened with exponential backoff; subscriptions
  are sent again on every new connection, resuming from the newest
  ``created_at`` seen on that relay. A connection whose event was rejected
  (or that did not acknowledge within the timeout) is replaced at once
  instead of queueing behind a relay that throttles it.

Kinds, tags and bodies are described in ``docs/nostr.md`` and set by a
:class:`NostrProfile`.
"""

from __future__ import annotations

try:
    import bech32 as _bech32  # noqa: F401
    import coincurve as _coincurve  # noqa: F401
    import httpx
    import httpx_ws
except ImportError as _exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "standby.adapters.nostr needs the optional dependencies of the 'nostr' extra "
        f"(missing: {_exc.name}); install them with: pip install 'standby[nostr]'"
    ) from _exc

import contextlib
import itertools
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType, TracebackType
from typing import Any, Final

import anyio
import anyio.abc
import attrs

from .._effects import DropReason
from .._errors import IdentityError, TransportError, WireError
from .._models import Envelope, Heartbeat, Message
from .._protocols import (
    PublishResult,
    Query,
    QueryResult,
    TransportDrop,
    is_newer,
    message_kind,
    newest_per_key,
)
from ..wire import Codec
from ._nostr_keys import (
    EventRejected,
    NostrEvent,
    NostrKeys,
    canonical_identity,
    npub_of,
    sign_event,
    verify_event,
)
from ._nostr_link import Connection, Handler, RelayLink, RelayUnavailable, is_refusal
from ._nostr_profile import DEFAULT_PREFIX, REFERENCE_PREFIX, NostrProfile, filters_for

__all__ = [
    "DEFAULT_PREFIX",
    "REFERENCE_PREFIX",
    "NostrEvent",
    "NostrKeys",
    "NostrProfile",
    "NostrSubscription",
    "NostrTransport",
    "canonical_identity",
    "npub_of",
    "sign_event",
    "verify_event",
]

#: EventRejected reason -> what a dropped-event report says.
_DROP_REASONS: Final[Mapping[str, DropReason]] = {
    "bad_signature": DropReason.BAD_SIGNATURE,
    "bad_id": DropReason.BAD_SIGNATURE,
}

#: Remembered (kind, d) -> last version published, to order ``created_at``.
_VERSIONS_KEPT: Final = 4096
#: Event ids remembered per relay by a subscription, to drop repeats.
_SEEN_KEPT: Final = 4096


class _Collector:
    """Collects one relay's answer to a query."""

    __slots__ = ("done", "error", "events", "refused")

    def __init__(self) -> None:
        self.events: list[NostrEvent] = []
        self.done = anyio.Event()
        self.error: str | None = None
        #: Why the relay refused the query (a limit): ask again later.
        self.refused: str | None = None

    def on_refused(self, reason: str) -> None:
        if not self.done.is_set():
            self.refused = reason
            self.done.set()

    def on_event(self, event: NostrEvent) -> None:
        if not self.done.is_set():
            self.events.append(event)

    def on_eose(self) -> None:
        self.done.set()

    def on_closed(self, reason: str) -> None:
        if not self.done.is_set():
            if is_refusal(reason):
                self.refused = reason
            else:
                self.error = reason
            self.done.set()


class _LiveHandler:
    """Feeds one relay's deliveries into a :class:`NostrSubscription`."""

    __slots__ = ("_relay", "_subscription")

    def __init__(self, subscription: NostrSubscription, relay: str) -> None:
        self._subscription = subscription
        self._relay = relay

    def on_event(self, event: NostrEvent) -> None:
        self._subscription._deliver(self._relay, event)

    def on_eose(self) -> None:
        pass

    def on_closed(self, reason: str) -> None:
        self._subscription._relay_closed(self._relay, reason)


class NostrSubscription:
    """A live subscription on every relay of a :class:`NostrTransport`.

    Implements :class:`~standby.protocols.Subscription`. Deliveries from all
    relays are merged (one envelope per relay that delivers an event, as
    with any transport); a repeat of an event on the same relay is dropped.
    When the consumer falls more than ``buffer`` envelopes behind, newer
    deliveries are dropped and counted (``dropped_overflow``): delivery is
    best effort and the node re-reads before any decision.
    """

    def __init__(
        self, transport: NostrTransport, query: Query, sub_id: str, since: int, buffer: int
    ) -> None:
        self._transport = transport
        self.query = query
        self._sub_id = sub_id
        self._since = since
        self._send, self._receive = anyio.create_memory_object_stream[Envelope[Message]](buffer)
        self._newest: dict[str, int] = {}
        self._seen: dict[str, OrderedDict[str, None]] = {}
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"NostrSubscription({self._sub_id!r}, {state})"

    @property
    def sub_id(self) -> str:
        """The subscription id sent to the relays."""
        return self._sub_id

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed

    def filters(self, relay: str) -> list[dict[str, Any]]:
        """The filters for (re)subscribing on ``relay``, resuming after what it sent."""
        since = self._since
        newest = self._newest.get(relay)
        if newest is not None:
            since = max(since, newest - math.ceil(self._transport.profile.live_backlog))
        return self._transport._filters(self.query, live=True, since=since)

    def handler(self, relay: str) -> Handler:
        """The handler of ``relay``'s deliveries."""
        return _LiveHandler(self, relay)

    def _deliver(self, relay: str, event: NostrEvent) -> None:
        if self._closed:
            return
        seen = self._seen.setdefault(relay, OrderedDict())
        if event.id in seen:
            self._transport._count("repeats_dropped")
            return
        seen[event.id] = None
        if len(seen) > _SEEN_KEPT:
            seen.popitem(last=False)
        self._newest[relay] = max(self._newest.get(relay, event.created_at), event.created_at)
        envelope = self._transport._envelope(relay, event, self.query)
        if envelope is None:
            return
        try:
            self._send.send_nowait(envelope)
        except anyio.WouldBlock:
            self._transport._count("dropped_overflow")
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    def _relay_closed(self, relay: str, reason: str) -> None:
        # A CLOSED from the relay (a limit, an error) or the connection ending.
        # The link sends the subscription again: at once on a new connection,
        # after a backoff while the connection stays up (failure mode 20).
        self._transport._count("subscription_interruptions")
        link = self._transport._links.get(relay)
        if link is not None and not self._closed and reason.startswith("closed by"):
            link.live_refused(self._sub_id, reason)

    def _end(self) -> None:
        self._send.close()
        self._receive.close()

    def __aiter__(self) -> NostrSubscription:
        return self

    async def __anext__(self) -> Envelope[Message]:
        """The next envelope; see :meth:`standby.protocols.Subscription.__anext__`."""
        if self._closed:
            raise StopAsyncIteration
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            if self._closed:
                raise StopAsyncIteration from None
            raise TransportError("the Nostr transport was closed") from None

    async def aclose(self) -> None:
        """Close the subscription on every relay (``CLOSE``). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._transport._unsubscribe(self)
        self._send.close()
        self._receive.close()
        await anyio.lowlevel.checkpoint()


class NostrTransport:
    """A provider's connection to ``N`` Nostr relays; implements ``RelayTransport``.

    ``relays`` are websocket URLs (``ws://`` or ``wss://``); they also name
    the relays in results and envelopes. ``keys`` is a :class:`NostrKeys`
    or a secret key (``nsec1...`` or hex). Use it as an async context
    manager: entering starts one connection task per relay, leaving closes
    every socket and ends the subscriptions.

    Options: ``profile`` (kinds, tags, field names), ``codec`` (body limits
    and spec types), ``wall_clock`` (Unix seconds, stamps ``received_at``),
    ``connect_timeout``, ``max_message_bytes`` (larger relay messages are
    dropped and counted), ``reconnect_backoff`` (first and longest wait
    between connection attempts), ``subscription_buffer``, ``max_queries``
    (queries in flight per relay connection; more wait their turn: keep it
    within the relay's limits, ``nostr-relay`` runs 10 at once and refuses
    subscriptions beyond 64, a query counting as one), ``refusal_backoff``
    (first and longest wait before asking a relay again after it refused a
    request because of a limit; refusals are retried within the caller's
    timeout, never dropped) and ``client`` (an ``httpx.AsyncClient`` to
    connect with; the transport makes its own by default).
    """

    def __init__(
        self,
        relays: Sequence[str],
        keys: NostrKeys | str,
        *,
        profile: NostrProfile | None = None,
        codec: Codec | None = None,
        wall_clock: Callable[[], float] = time.time,
        connect_timeout: float = 10.0,
        max_message_bytes: int = 256 * 1024,
        reconnect_backoff: tuple[float, float] = (0.1, 30.0),
        subscription_buffer: int = 1024,
        max_queries: int = 8,
        refusal_backoff: tuple[float, float] = (0.05, 1.0),
        client: httpx.AsyncClient | None = None,
    ) -> None:
        urls = list(relays)
        if not urls:
            raise ValueError("a Nostr transport needs at least one relay URL")
        if len(set(urls)) != len(urls):
            raise ValueError(f"relay URLs must be unique, got {urls!r}")
        for url in urls:
            if not (isinstance(url, str) and url.startswith(("ws://", "wss://"))):
                raise ValueError(f"relay URLs must start with ws:// or wss://, got {url!r}")
        first, longest = reconnect_backoff
        if not 0 < first <= longest:
            raise ValueError(
                "reconnect_backoff must be (first, longest) with 0 < first <= longest, "
                f"got {reconnect_backoff!r}"
            )
        if max_queries < 1:
            raise ValueError(f"max_queries must be >= 1, got {max_queries!r}")
        if not 0 < refusal_backoff[0] <= refusal_backoff[1]:
            raise ValueError(
                "refusal_backoff must be (first, longest) with 0 < first <= longest, "
                f"got {refusal_backoff!r}"
            )
        self.max_queries = max_queries
        self.refusal_backoff = refusal_backoff
        self._pools: dict[str, anyio.CapacityLimiter] = {}
        self.keys = keys if isinstance(keys, NostrKeys) else NostrKeys.from_secret(keys)
        self.relays: tuple[str, ...] = tuple(urls)
        self.profile = profile if profile is not None else NostrProfile()
        self.codec = codec if codec is not None else Codec()
        self.wall_clock = wall_clock
        self.connect_timeout = connect_timeout
        self.max_message_bytes = max_message_bytes
        self.subscription_buffer = subscription_buffer
        self._client = client
        self._own_client = client is None
        self._counters: dict[str, int] = {}
        self._drop_hook: Callable[[TransportDrop], None] | None = None
        self._links: dict[str, RelayLink] = {
            url: RelayLink(
                url,
                connect=self._connect,
                counters=self._counters,
                max_message_bytes=max_message_bytes,
                backoff=(first, longest),
                on_rejected=self._rejected,
            )
            for url in urls
        }
        self._versions: OrderedDict[tuple[int, str], tuple[Message, int]] = OrderedDict()
        self._subscriptions: dict[str, NostrSubscription] = {}
        self._ids = itertools.count(1)
        self._stack: contextlib.AsyncExitStack | None = None
        self._ws_client: httpx_ws.AsyncWebSocketClient[httpx_ws.AsyncWebSocketSession] | None = None
        self._running = False

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return f"NostrTransport({self.identity!r}, {len(self.relays)} relays, {state})"

    # ----------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> NostrTransport:
        if self._stack is not None:
            raise TransportError("this NostrTransport is already running")
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            if self._client is None:
                self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.connect_timeout))
            if self._own_client:
                stack.push_async_callback(self._close_client)
            self._ws_client = httpx_ws.AsyncWebSocketClient(
                self._client,
                max_message_size_bytes=self.max_message_bytes,
                keepalive_ping_interval_seconds=20.0,
                keepalive_ping_timeout_seconds=20.0,
            )
            group = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(self._stopped)
            stack.callback(group.cancel_scope.cancel)
            for link in self._links.values():
                link.stopped = False
                group.start_soon(link.run, name=f"nostr-relay-{link.url}")
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        self._running = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        self._running = False
        if stack is not None:
            await stack.__aexit__(exc_type, exc, tb)

    def _stopped(self) -> None:
        self._running = False
        for subscription in list(self._subscriptions.values()):
            subscription._end()
        self._subscriptions.clear()

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with anyio.CancelScope(shield=True):
                await client.aclose()

    def _connect(
        self, url: str
    ) -> contextlib.AbstractAsyncContextManager[httpx_ws.AsyncWebSocketSession]:
        # httpx's timeout bounds the TCP connect and the websocket handshake.
        assert self._ws_client is not None
        return self._ws_client.connect(url)

    def _require_running(self) -> None:
        if not self._running:
            raise TransportError(
                "the Nostr transport is not running: use it as `async with NostrTransport(...)`"
            )

    # ----------------------------------------------------------------- identity

    @property
    def identity(self) -> str:
        """This provider's public key, lowercase hex."""
        return self.keys.public_key

    @property
    def relay_count(self) -> int:
        """How many relays this transport writes to and reads from."""
        return len(self.relays)

    @property
    def npub(self) -> str:
        """This provider's public key as ``npub1...``."""
        return self.keys.npub

    def canonical(self, identity: str) -> str:
        """See :func:`canonical_identity`."""
        return canonical_identity(identity)

    # ----------------------------------------------------------------- observability

    @property
    def counters(self) -> Mapping[str, int]:
        """Counts of what happened: ``events_received``, ``dropped_bad_signature``,
        ``dropped_bad_id``, ``dropped_malformed``, ``dropped_bad_body``,
        ``dropped_d_mismatch``, ``dropped_unexpected_kind``, ``dropped_oversized``,
        ``dropped_overflow``, ``rejected_events``, ``recycled_connections``,
        ``connects``, ``notices``, ... (read-only view)."""
        return MappingProxyType(self._counters)

    @property
    def dropped(self) -> int:
        """Incoming events dropped because they failed a check (all reasons)."""
        return sum(
            n
            for name, n in self._counters.items()
            if name.startswith("dropped_") and name not in ("dropped_overflow",)
        )

    def connected_relays(self) -> frozenset[str]:
        """The relays with an open connection now."""
        return frozenset(url for url, link in self._links.items() if link.conn is not None)

    def open_requests(self) -> int:
        """Queries and publishes in flight: REQs of queries and events awaiting ``OK``.

        Live subscriptions are not counted. Zero whenever no operation runs:
        a leak check for cancellation.
        """
        total = 0
        for link in self._links.values():
            conn = link.conn
            if conn is None:
                continue
            total += len(conn.pending)
            total += sum(1 for sub_id in conn.handlers if sub_id not in link.live)
        return total

    def _count(self, name: str, amount: int = 1) -> None:
        self._counters[name] = self._counters.get(name, 0) + amount

    def set_drop_hook(self, hook: Callable[[TransportDrop], None] | None) -> None:
        """Report every dropped incoming event to ``hook`` (``ReportsDrops``); ``None`` stops.

        Reported: events whose id or signature does not verify
        (``BAD_SIGNATURE``), that are malformed or carry a body the codec
        refuses (``MALFORMED``), and those from an author outside the query
        (``UNEXPECTED_AUTHOR``). Repeats and buffer overflows are only counted.
        """
        self._drop_hook = hook

    def _report(self, drop: TransportDrop) -> None:
        hook = self._drop_hook
        if hook is None:
            return
        try:
            hook(drop)
        except Exception:
            self._count("drop_hook_errors")

    def _rejected(self, relay: str, exc: EventRejected, raw: object) -> None:
        """A relay sent an event that failed verification (called by the link)."""
        pubkey = raw.get("pubkey") if isinstance(raw, Mapping) else None
        self._report(
            TransportDrop(
                _DROP_REASONS.get(exc.reason, DropReason.MALFORMED),
                relay,
                pubkey if isinstance(pubkey, str) else None,
                str(exc),
            )
        )

    def _pool(self, url: str) -> anyio.CapacityLimiter:
        pool = self._pools.get(url)
        if pool is None:
            pool = self._pools[url] = anyio.CapacityLimiter(self.max_queries)
        return pool

    # ----------------------------------------------------------------- events

    def _canonical_query(self, query: Query) -> Query:
        if query.authors is None:
            return query
        try:
            authors = frozenset(canonical_identity(a) for a in query.authors)
        except IdentityError as exc:
            raise TransportError(f"query names a malformed author: {exc}") from exc
        return attrs.evolve(query, authors=authors)

    def _filters(self, query: Query, *, live: bool, since: int | None) -> list[dict[str, Any]]:
        if query.authors is not None and not query.authors:
            return []
        return filters_for(
            self.profile, query, me=self.identity, now=self.wall_clock(), live=live, since=since
        )

    def _sign(self, message: Message) -> list[NostrEvent]:
        try:
            message_kind(message)
            drafts = self.profile.drafts(message, self.codec)
        except (TypeError, IdentityError, WireError) as exc:
            raise TransportError(f"cannot publish {message!r:.100}: {exc}") from exc
        natural = self.profile.natural_created_at(message)
        events: list[NostrEvent] = []
        for draft in drafts:
            size = len(draft.content.encode("utf-8"))
            if size > self.codec.max_size:
                raise TransportError(
                    f"cannot publish {message!r:.80}: body of {size} bytes exceeds "
                    f"{self.codec.max_size}"
                )
            created_at = natural
            if draft.key is not None:
                created_at = self._created_at(draft.key, message, natural)
            events.append(
                sign_event(
                    self.keys,
                    kind=draft.kind,
                    tags=draft.tags,
                    content=draft.content,
                    created_at=created_at,
                )
            )
        return events

    def _created_at(self, key: tuple[int, str], message: Message, natural: int) -> int:
        """``created_at`` for a version of an addressable event.

        Relays keep, per (kind, pubkey, d), the event with the greater
        ``created_at`` and break ties arbitrarily; this makes a newer version
        (by :func:`~standby.protocols.newest_per_key`'s rule) always carry a
        strictly greater ``created_at`` than the last one sent, an older one
        a strictly smaller one, and a repeat the very same (so it is the same
        event).
        """
        known = self._versions.get(key)
        if known is None:
            created_at = natural
        else:
            previous, previous_at = known
            if previous == message:
                return previous_at
            if not is_newer(message, previous):
                return min(natural, previous_at - 1)
            created_at = max(natural, previous_at + 1)
        self._versions[key] = (message, created_at)
        self._versions.move_to_end(key)
        while len(self._versions) > _VERSIONS_KEPT:
            self._versions.popitem(last=False)
        return created_at

    def _envelope(self, relay: str, event: NostrEvent, query: Query) -> Envelope[Message] | None:
        try:
            message = self.profile.decode(event, self.codec)
        except EventRejected as exc:
            self._count(f"dropped_{exc.reason}")
            self._rejected(relay, exc, {"pubkey": event.pubkey})
            return None
        if not query.matches(event.pubkey, message):
            if query.authors is not None and event.pubkey not in query.authors:
                # Asked for from anyone (a subscription's workload kinds) or a
                # relay that ignored the authors filter: either way, reported.
                self._count("dropped_unexpected_author")
                workload = None if isinstance(message, Heartbeat) else message.workload_id
                self._report(
                    TransportDrop(
                        DropReason.UNEXPECTED_AUTHOR,
                        relay,
                        event.pubkey,
                        f"{message_kind(message)} event {event.id[:16]}... signed by an "
                        "unexpected author",
                        workload,
                    )
                )
                return None
            self._count("filtered_out")
            return None
        self._count("events_accepted")
        return Envelope(message, event.pubkey, relay, self.wall_clock())

    # ----------------------------------------------------------------- RelayTransport

    async def publish(
        self,
        message: Message,
        *,
        timeout: float,  # noqa: ASYNC109 - part of the protocol
    ) -> PublishResult:
        """Sign ``message`` and send it to every relay; see ``RelayTransport.publish``."""
        self._require_running()
        events = self._sign(message)
        results: dict[str, str | None] = {}
        used: dict[str, Connection] = {}

        async def one(link: RelayLink) -> None:
            wait, longest = self.refusal_backoff
            while True:
                await send(link)
                reason = results.get(link.url)
                if reason is None or not is_refusal(reason):
                    return
                # Over a relay limit: publish again after a backoff (the
                # same signed events: harmless to repeat).
                self._count("relay_refusals")
                await anyio.sleep(wait)
                wait = min(wait * 2, longest)

        async def send(link: RelayLink) -> None:
            try:
                conn = await link.connection()
            except RelayUnavailable as exc:
                results[link.url] = f"unreachable: {exc}"
                return
            used[link.url] = conn
            waiters = [(event.id, conn.expect_ok(event.id)) for event in events]
            try:
                for event in events:
                    conn.send(["EVENT", event.to_json()])
                stored = waiters[-1][1]
                await stored.done.wait()
                if stored.accepted:
                    results[link.url] = None
                else:
                    # Prefer the relay's own words (it may have refused an
                    # earlier event of the message and dropped the connection).
                    said = [w.reason for _id, w in waiters if w.answered and not w.accepted]
                    results[link.url] = (said[-1] if said else stored.reason) or "rejected"
            except RelayUnavailable as exc:
                results[link.url] = f"unreachable: {exc}"
            finally:
                for event_id, waiter in waiters:
                    if not waiter.done.is_set():
                        conn.forget_ok(event_id)

        with anyio.move_on_after(timeout):
            async with anyio.create_task_group() as group:
                for link in self._links.values():
                    group.start_soon(one, link)
        for url in self.relays:
            if url not in results:
                results[url] = "timed out"
                conn = used.get(url)
                if conn is not None:
                    # The relay may be throttling this connection: start afresh.
                    conn.recycle("no OK within the publish timeout")
        acked = frozenset(url for url, error in results.items() if error is None)
        errors = {url: error for url, error in results.items() if error is not None}
        return PublishResult(acked, errors)

    async def query(
        self,
        query: Query,
        *,
        timeout: float,  # noqa: ASYNC109 - part of the protocol
    ) -> QueryResult:
        """Read from every relay; see ``RelayTransport.query``."""
        self._require_running()
        query = self._canonical_query(query)
        since = None if query.since is None else math.floor(query.since)
        filters = self._filters(query, live=False, since=since)
        if not filters:
            return QueryResult((), frozenset(self.relays))
        answers: dict[str, list[NostrEvent]] = {}
        errors: dict[str, str] = {}

        refusals: dict[str, str] = {}

        async def one(link: RelayLink) -> None:
            pool = self._pool(link.url)
            wait, longest = self.refusal_backoff
            while True:
                try:
                    conn = await link.connection()
                except RelayUnavailable as exc:
                    errors[link.url] = f"unreachable: {exc}"
                    return
                collector = _Collector()
                async with pool:  # at most max_queries in flight on this connection
                    sub_id = f"q{next(self._ids)}"
                    try:
                        conn.subscribe(sub_id, filters, collector)
                    except RelayUnavailable as exc:
                        errors[link.url] = f"unreachable: {exc}"
                        return
                    conn.queries[sub_id] = None
                    try:
                        await collector.done.wait()
                    finally:
                        conn.queries.pop(sub_id, None)
                        conn.unsubscribe(sub_id)
                if collector.refused is None:
                    break
                # Over a relay limit: ask again after a backoff (within the timeout).
                refusals[link.url] = collector.refused
                self._count("relay_refusals")
                await anyio.sleep(wait)
                wait = min(wait * 2, longest)
            if collector.error is not None:
                errors[link.url] = collector.error
            else:
                answers[link.url] = collector.events

        with anyio.move_on_after(timeout):
            async with anyio.create_task_group() as group:
                for link in self._links.values():
                    group.start_soon(one, link)
        for url in self.relays:
            if url not in answers and url not in errors:
                refused = refusals.get(url)
                errors[url] = "timed out" if refused is None else f"refused: {refused}"
        found: list[Envelope[Message]] = []
        for url, events in answers.items():
            for event in events:
                envelope = self._envelope(url, event, query)
                if envelope is not None:
                    found.append(envelope)
        return QueryResult(newest_per_key(found, not_after=query.until), frozenset(answers), errors)

    def subscribe(self, query: Query) -> NostrSubscription:
        """Receive matching messages as relays store them; see ``RelayTransport.subscribe``.

        Revocations are received when they are addressed to this identity
        (their ``p`` tags). Without ``query.since`` the subscription starts
        ``profile.live_backlog`` seconds back. Raises
        :class:`~standby.TransportError` when the transport is not running
        or the query names a malformed author.
        """
        self._require_running()
        query = self._canonical_query(query)
        if query.since is not None:
            since = math.floor(query.since)
        else:
            since = math.floor(self.wall_clock() - self.profile.live_backlog)
        subscription = NostrSubscription(
            self, query, f"s{next(self._ids)}", since, self.subscription_buffer
        )
        self._subscriptions[subscription.sub_id] = subscription
        if self._filters(query, live=True, since=since):
            for link in self._links.values():
                link.add_live(subscription)
        return subscription

    def _unsubscribe(self, subscription: NostrSubscription) -> None:
        self._subscriptions.pop(subscription.sub_id, None)
        for link in self._links.values():
            link.remove_live(subscription.sub_id)

    # ----------------------------------------------------------------- extras

    async def wait_connected(
        self,
        relays: Iterable[str] | None = None,
        *,
        timeout: float,  # noqa: ASYNC109 - like publish and query
    ) -> frozenset[str]:
        """Connect to ``relays`` (default: all) and return those connected within ``timeout``."""
        self._require_running()
        wanted = list(self.relays if relays is None else relays)
        done: set[str] = set()

        async def one(url: str) -> None:
            with contextlib.suppress(RelayUnavailable):
                await self._links[url].connection()
                done.add(url)

        with anyio.move_on_after(timeout):
            async with anyio.create_task_group() as group:
                for url in wanted:
                    group.start_soon(one, url)
        return frozenset(done)

    async def send_raw(
        self,
        relay: str,
        event: Mapping[str, Any],
        *,
        timeout: float,  # noqa: ASYNC109 - like publish and query
    ) -> tuple[bool, str]:
        """Send an arbitrary event object to one relay and return its ``OK`` answer.

        For tests and tools (for example, to offer a relay a forged event);
        a provider never needs it. Returns ``(False, "timed out")`` when no
        answer came in time.
        """
        self._require_running()
        link = self._links[relay]
        event_id = str(event.get("id", ""))
        with anyio.move_on_after(timeout):
            try:
                conn = await link.connection()
            except RelayUnavailable as exc:
                return False, f"unreachable: {exc}"
            waiter = conn.expect_ok(event_id)
            try:
                conn.send(["EVENT", dict(event)])
                await waiter.done.wait()
                return waiter.accepted, waiter.reason
            finally:
                conn.forget_ok(event_id)
        return False, "timed out"
