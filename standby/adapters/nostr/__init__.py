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
    from .._transport_base import missing_extra

    raise missing_extra("nostr", "nostr", _exc) from _exc

import contextlib
import itertools
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import anyio
import anyio.abc

from ...core._models import Envelope, Message
from ...core._public import publish
from ...protocols._contracts import (
    PublishResult,
    Query,
    QueryResult,
    TransportDrop,
    newest_per_key,
)
from ...wire import Codec
from .._pacing import Lane, Pacing, PublishWindow, lane_of, send_paced, window_for
from .._transport_base import (
    TransportBase,
    canonical_query,
    check_backoff,
    check_urls,
    close_shielded,
    url_list,
)
from ._events import (
    Versions,
    offer,
    rejected_drop,
    sign_message,
    unexpected_author_drop,
)
from ._keys import (
    EventRejected,
    NostrEvent,
    NostrKeys,
    canonical_identity,
    npub_of,
    sign_event,
    verify_event,
)
from ._link import Connection, RelayLink, RelayUnavailable, is_refusal
from ._paging import DEFAULT_PAGE_SIZE, PagingStuck, first_pages, next_page
from ._profile import DEFAULT_PREFIX, REFERENCE_PREFIX, NostrProfile, filters_for
from ._subscription import Collector, NostrSubscription

__all__ = [
    "DEFAULT_PREFIX",
    "REFERENCE_PREFIX",
    "NostrEvent",
    "NostrKeys",
    "NostrProfile",
    "NostrSubscription",
    "NostrTransport",
    "Pacing",
    "canonical_identity",
    "npub_of",
    "sign_event",
    "verify_event",
]


class NostrTransport(TransportBase):
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
    timeout, never dropped), ``page_size`` (events asked for per filter in
    one request: a query reads each filter page by page, ``limit`` then
    ``until``, until a page comes back short, so a relay that caps its
    answers, as rust-nostr's relay does at 500, is still read to the end;
    keep it within every relay's cap), ``pacing`` (a :class:`Pacing`: by
    default queries and urgent publishes, heartbeats and revocations, each
    have a connection of their own beside the one for claims and
    announcements, which are paced by an adaptive window;
    ``Pacing.unpaced()`` keeps one connection per relay and sends everything
    at once) and ``client`` (an ``httpx.AsyncClient`` to connect with; the
    transport makes its own by default).

    :attr:`counters` counts ``events_received``, ``dropped_bad_signature``,
    ``dropped_bad_id``, ``dropped_malformed``, ``dropped_bad_body``,
    ``dropped_d_mismatch``, ``dropped_unexpected_kind``, ``dropped_oversized``,
    ``dropped_overflow``, ``rejected_events``, ``recycled_connections``,
    ``connects``, ``notices``, ...
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
        page_size: int = DEFAULT_PAGE_SIZE,
        pacing: Pacing | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        urls = url_list(relays, "relay URLs")
        check_urls(
            urls,
            ("ws://", "wss://"),
            what="relay URLs",
            empty="a Nostr transport needs at least one relay URL",
            unique=True,
        )
        backoff = check_backoff("reconnect_backoff", reconnect_backoff)
        if max_queries < 1:
            raise ValueError(f"max_queries must be >= 1, got {max_queries!r}")
        check_backoff("refusal_backoff", refusal_backoff)
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size!r}")
        super().__init__()
        self.max_queries = max_queries
        self.page_size = page_size
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
        self._drop_hook: Callable[[TransportDrop], None] | None = None

        def links() -> dict[str, RelayLink]:
            return {
                url: RelayLink(
                    url,
                    connect=self._connect,
                    counters=self._counters,
                    max_message_bytes=max_message_bytes,
                    backoff=backoff,
                    on_rejected=self._rejected,
                )
                for url in urls
            }

        self.pacing = Pacing() if pacing is None else pacing
        #: The connection per relay for bulk publishes and live subscriptions
        #: (and everything, without lanes).
        self._links: dict[str, RelayLink] = links()
        #: The connections of the other lanes (none without lanes).
        self._lane_links: dict[Lane, dict[str, RelayLink]] = (
            {Lane.READ: links(), Lane.URGENT: links()} if self.pacing.lanes else {}
        )
        #: The bulk window of each relay.
        self.windows: dict[str, PublishWindow] = {}
        self._versions: Versions = OrderedDict()
        self._ids = itertools.count(1)
        self._ws_client: httpx_ws.AsyncWebSocketClient[httpx_ws.AsyncWebSocketSession] | None = None

    def __repr__(self) -> str:
        state = "running" if self._group is not None else "stopped"
        return f"NostrTransport({self.identity!r}, {len(self.relays)} relays, {state})"

    # ----------------------------------------------------------------- lifecycle

    async def _open_resources(self, stack: contextlib.AsyncExitStack) -> None:
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

    def _all_links(self) -> list[RelayLink]:
        lanes = [links.values() for links in self._lane_links.values()]
        return [*self._links.values(), *(link for links in lanes for link in links)]

    def _link(self, lane: Lane, link: RelayLink) -> RelayLink:
        """The connection to ``link``'s relay that ``lane`` travels on."""
        links = self._lane_links.get(lane)
        return link if links is None else links[link.url]

    def _started(self, group: anyio.abc.TaskGroup) -> None:
        for link in self._all_links():
            link.stopped = False
            group.start_soon(link.run, name=f"nostr-relay-{link.url}")

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        await close_shielded(client)

    def _connect(
        self, url: str
    ) -> contextlib.AbstractAsyncContextManager[httpx_ws.AsyncWebSocketSession]:
        # httpx's timeout bounds the TCP connect and the websocket handshake.
        assert self._ws_client is not None
        return self._ws_client.connect(url)

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
        for link in self._all_links():
            conn = link.conn
            if conn is None:
                continue
            total += len(conn.pending)
            total += sum(1 for sub_id in conn.handlers if sub_id not in link.live)
        return total

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
        self._report(rejected_drop(relay, exc, raw))

    def _pool(self, url: str) -> anyio.CapacityLimiter:
        pool = self._pools.get(url)
        if pool is None:
            pool = self._pools[url] = anyio.CapacityLimiter(self.max_queries)
        return pool

    # ----------------------------------------------------------------- events

    def _canonical_query(self, query: Query) -> Query:
        return canonical_query(query, canonical_identity)

    def _filters(self, query: Query, *, live: bool, since: int | None) -> list[dict[str, Any]]:
        if query.authors is not None and not query.authors:
            return []
        return filters_for(
            self.profile, query, me=self.identity, now=self.wall_clock(), live=live, since=since
        )

    def _sign(self, message: Message) -> list[NostrEvent]:
        return sign_message(
            message, keys=self.keys, profile=self.profile, codec=self.codec, versions=self._versions
        )

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
                self._report(unexpected_author_drop(relay, event, message))
                return None
            self._count("filtered_out")
            return None
        self._count("events_accepted")
        return Envelope(message, event.pubkey, relay, self.wall_clock())

    async def _on_every_relay(
        self,
        attempt: Callable[[RelayLink], Awaitable[str | None]],
        timeout: float,  # noqa: ASYNC109 - the caller's
    ) -> None:
        """Run ``attempt`` on every relay at once, for at most ``timeout`` seconds.

        An attempt that returns a relay's refusal (a limit) is made again on
        that relay after a growing pause; ``None`` ends it.
        """

        async def patiently(link: RelayLink) -> None:
            wait, longest = self.refusal_backoff
            while await attempt(link) is not None:
                self._count("relay_refusals")
                await anyio.sleep(wait)
                wait = min(wait * 2, longest)

        with anyio.move_on_after(timeout):
            async with anyio.create_task_group() as group:
                for link in self._links.values():
                    group.start_soon(patiently, link)

    # ----------------------------------------------------------------- RelayTransport

    async def publish(
        self,
        message: Message,
        *,
        timeout: float,  # noqa: ASYNC109 - part of the protocol
    ) -> PublishResult:
        """Sign ``message`` and send it to every relay; see ``RelayTransport.publish``."""
        self._check_running()
        events = self._sign(message)
        results: dict[str, str | None] = {}
        used: dict[str, Connection] = {}
        lane, rank = lane_of(self.pacing, message)
        order = next(self._ids)

        async def one(link: RelayLink) -> str | None:
            window = window_for(self.windows, self.pacing, link.url, lane)
            target = self._link(lane, link)
            await send_paced(
                window,
                rank,
                link.url,
                results,
                lambda: offer(target, events, results, used),
                is_refusal,
                order,
            )
            reason = results.get(link.url)
            # Over a relay limit: publish again after a backoff (the same
            # signed events: harmless to repeat).
            return reason if reason is not None and is_refusal(reason) else None

        await self._on_every_relay(one, timeout)
        for url in self.relays:
            if url not in results:
                results[url] = "timed out"
                conn = used.get(url)
                if conn is not None and anyio.current_time() - conn.last_heard >= timeout:
                    # Not a word from the relay for the whole timeout: it may
                    # be throttling this connection, so start afresh. A relay
                    # that keeps answering other events is alive and only has
                    # a queue: dropping the connection would throw away every
                    # event in flight on it (failure mode 26).
                    conn.recycle("no word from the relay within the publish timeout")
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
        self._check_running()
        query = self._canonical_query(query)
        since = None if query.since is None else math.floor(query.since)
        filters = self._filters(query, live=False, since=since)
        if not filters:
            return QueryResult((), frozenset(self.relays))
        answers: dict[str, list[NostrEvent]] = {}
        errors: dict[str, str] = {}

        refusals: dict[str, str] = {}

        async def one(link: RelayLink) -> str | None:
            try:
                conn = await self._link(Lane.READ, link).connection()
            except RelayUnavailable as exc:
                errors[link.url] = f"unreachable: {exc}"
                return None
            events: dict[str, NostrEvent] = {}
            async with self._pool(link.url):  # at most max_queries in flight on this connection
                for first in [page for flt in filters for page in first_pages(flt, self.page_size)]:
                    asked: dict[str, Any] | None = first
                    while asked is not None:
                        try:
                            collector = await self._read_page(conn, asked)
                        except RelayUnavailable as exc:
                            errors[link.url] = f"unreachable: {exc}"
                            return None
                        if collector.refused is not None:
                            # Over a relay limit: ask again after a backoff (within the timeout).
                            refusals[link.url] = collector.refused
                            return collector.refused
                        if collector.error is not None:
                            errors[link.url] = collector.error
                            return None
                        try:
                            asked = next_page(asked, collector.events, events, self.page_size)
                        except PagingStuck as exc:
                            # A partial answer must not count towards a read quorum.
                            errors[link.url] = str(exc)
                            return None
                        events.update((event.id, event) for event in collector.events)
            answers[link.url] = list(events.values())
            return None

        await self._on_every_relay(one, timeout)
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

    async def _read_page(self, conn: Connection, flt: Mapping[str, Any]) -> Collector:
        """One request for ``flt`` on ``conn``, answered to its end (or refused, or closed).

        Raises :class:`RelayUnavailable` when the request cannot be sent.
        """
        collector = Collector()
        sub_id = f"q{next(self._ids)}"
        conn.subscribe(sub_id, [dict(flt)], collector)
        conn.queries[sub_id] = None
        try:
            await collector.done.wait()
        finally:
            conn.queries.pop(sub_id, None)
            conn.unsubscribe(sub_id)
        return collector

    def subscribe(self, query: Query) -> NostrSubscription:
        """Receive matching messages as relays store them; see ``RelayTransport.subscribe``.

        Revocations are received when they are addressed to this identity
        (their ``p`` tags). Without ``query.since`` the subscription starts
        ``profile.live_backlog`` seconds back. Raises
        :class:`~standby.TransportError` when the transport is not running
        or the query names a malformed author.
        """
        self._check_running()
        query = self._canonical_query(query)
        if query.since is not None:
            since = math.floor(query.since)
        else:
            since = math.floor(self.wall_clock() - self.profile.live_backlog)
        subscription = NostrSubscription(
            self, query, f"s{next(self._ids)}", since, self.subscription_buffer
        )
        self._subscriptions.add(subscription)
        if self._filters(query, live=True, since=since):
            for link in self._links.values():
                link.add_live(subscription)
        return subscription

    def _unsubscribe(self, subscription: NostrSubscription) -> None:
        self._subscriptions.discard(subscription)
        for link in self._links.values():
            link.remove_live(subscription.sub_id)

    # ----------------------------------------------------------------- extras

    async def wait_connected(
        self,
        relays: Iterable[str] | None = None,
        *,
        timeout: float,  # noqa: ASYNC109 - like publish and query
    ) -> frozenset[str]:
        """Connect to ``relays`` (default: all) and return those connected within ``timeout``.

        A relay counts once every connection the transport keeps to it is up
        (with lanes: the bulk, read and urgent ones), so the first query or
        heartbeat after this does not pay for a handshake inside its own
        timeout.
        """
        self._check_running()
        wanted = list(self.relays if relays is None else relays)
        done: set[str] = set()

        async def one(url: str) -> None:
            with contextlib.suppress(RelayUnavailable):
                await self._links[url].connection()
                for links in self._lane_links.values():
                    await links[url].connection()
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
        self._check_running()
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


publish(__name__, globals(), ["NostrSubscription"])
