"""One websocket connection per relay, kept open and reopened with backoff.

Private to :mod:`standby.adapters.nostr`. A :class:`RelayLink` owns the
connection to one relay URL: a task that connects (with exponential backoff
after failures), starts a writer and reads NIP-01 messages, dispatching them
to the handlers registered on the current :class:`Connection`. Operations
(publish, query, subscriptions) never touch the socket directly: they put
text on the connection's outbox and wait on plain events, so cancelling one
leaves nothing behind (its handler is removed and a ``CLOSE`` queued,
synchronously).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, MutableMapping
from contextlib import AbstractAsyncContextManager, suppress
from typing import Any, Final, Protocol

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from httpx_ws import (
    AsyncWebSocketSession,
    WebSocketDisconnect,
    WebSocketInvalidTypeReceived,
)

from ._keys import EventRejected, NostrEvent, verify_event

__all__ = ["Connection", "Handler", "OkWaiter", "RelayLink", "RelayUnavailable"]

LOGGER: Final = logging.getLogger("standby.adapters.nostr")

#: Messages waiting to be written to one relay before sends start failing.
_OUTBOX: Final = 1024


class RelayUnavailable(Exception):
    """No connection to the relay could be had (the reason is the message)."""


#: Words of a relay refusing a request because of its limits (NIP-01 prefixes
#: and the wording of common relays); such a request is retried, never lost.
_REFUSAL_WORDS = ("rate-limited", "too many", "rejected: too", "slow down", "restricted: too")


def is_refusal(text: str) -> bool:
    """Whether a relay's ``NOTICE``/``CLOSED``/``OK`` text says "over a limit, try later"."""
    lowered = text.lower()
    return any(word in lowered for word in _REFUSAL_WORDS)


class Handler(Protocol):
    """Receives what a relay sends for one subscription id."""

    def on_event(self, event: NostrEvent) -> None:
        """A verified event."""

    def on_eose(self) -> None:
        """The relay sent every stored event (``EOSE``)."""

    def on_closed(self, reason: str) -> None:
        """The subscription ended: ``CLOSED`` from the relay, or the connection was lost."""


class OkWaiter:
    """Waits for the relay's ``OK`` to one published event."""

    __slots__ = ("accepted", "answered", "done", "reason")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.accepted = False
        self.answered = False
        self.reason = ""

    def resolve(self, accepted: bool, reason: str, *, answered: bool = False) -> None:
        """Record the outcome; ``answered`` when it is the relay's own ``OK``."""
        if not self.done.is_set():
            self.accepted = accepted
            self.answered = answered
            self.reason = reason
            self.done.set()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, WebSocketDisconnect):
        return f"closed by the relay (code {exc.code})"
    text = str(exc)
    inner = getattr(exc, "exceptions", None)
    if inner and not text.strip("() "):
        return _describe(inner[0])
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Connection:
    """One open websocket to a relay; lives as long as that socket."""

    def __init__(self, link: RelayLink, outbox: MemoryObjectSendStream[str]) -> None:
        self.link = link
        self._outbox = outbox
        self.handlers: dict[str, Handler] = {}
        #: Waiters for ``OK`` messages, oldest first (a relay that rejects
        #: an event may answer with an empty id: it goes to the oldest).
        self.pending: dict[str, OkWaiter] = {}
        #: Live subscriptions sent on this connection that the relay has not
        #: answered with ``EOSE`` yet, oldest first.
        self.unanswered: dict[str, None] = {}
        #: Queries sent on this connection that the relay has not answered yet.
        self.queries: dict[str, None] = {}
        self.closed = False
        self.recycled: str | None = None
        self.scope = anyio.CancelScope()
        #: When the relay last said anything on this connection (the event
        #: loop's clock; opening counts): a relay that answers is alive,
        #: however long its queue.
        self.last_heard = anyio.current_time()

    def send(self, message: list[Any]) -> None:
        """Queue a NIP-01 message; raises :class:`RelayUnavailable` when it cannot be."""
        if self.closed:
            raise RelayUnavailable(self.link.last_error or "connection closed")
        try:
            self._outbox.send_nowait(json.dumps(message, separators=(",", ":"), ensure_ascii=False))
        except anyio.WouldBlock:
            raise RelayUnavailable("too many messages waiting to be sent") from None
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise RelayUnavailable("connection closed") from None

    def expect_ok(self, event_id: str) -> OkWaiter:
        waiter = self.pending.get(event_id)
        if waiter is None:
            waiter = self.pending[event_id] = OkWaiter()
        return waiter

    def forget_ok(self, event_id: str) -> None:
        self.pending.pop(event_id, None)

    def subscribe(self, sub_id: str, filters: list[dict[str, Any]], handler: Handler) -> None:
        """Register ``handler`` and send ``REQ``; raises :class:`RelayUnavailable`."""
        self.handlers[sub_id] = handler
        try:
            self.send(["REQ", sub_id, *filters])
        except RelayUnavailable:
            self.handlers.pop(sub_id, None)
            raise

    def unsubscribe(self, sub_id: str) -> None:
        """Forget ``sub_id`` and, when the relay still has it open, queue ``CLOSE``."""
        if self.handlers.pop(sub_id, None) is not None and not self.closed:
            with suppress(RelayUnavailable):
                self.send(["CLOSE", sub_id])

    def recycle(self, why: str) -> None:
        """Drop this connection (the link reconnects at once)."""
        if not self.closed and self.recycled is None:
            self.recycled = why
            self.closed = True
            self.link.count("recycled_connections")
            LOGGER.info("recycling the connection to %s: %s", self.link.url, why)
            self.link.retire(self)
            self.scope.cancel()

    def fail_all(self, reason: str) -> None:
        self.closed = True
        self._outbox.close()
        pending, self.pending = self.pending, {}
        for waiter in pending.values():
            waiter.resolve(False, reason)
        handlers, self.handlers = self.handlers, {}
        for handler in handlers.values():
            handler.on_closed(reason)


class LiveSubscription(Protocol):
    """What a link needs from a long-lived subscription to (re)open it."""

    @property
    def sub_id(self) -> str: ...

    def filters(self, relay: str) -> list[dict[str, Any]]: ...

    def handler(self, relay: str) -> Handler: ...


Connector = Callable[[str], AbstractAsyncContextManager[AsyncWebSocketSession]]


class RelayLink:
    """The connection to one relay, with reconnection and dispatch."""

    def __init__(
        self,
        url: str,
        *,
        connect: Connector,
        counters: MutableMapping[str, int],
        max_message_bytes: int,
        backoff: tuple[float, float],
        on_rejected: Callable[[str, EventRejected, object], None] | None = None,
    ) -> None:
        self.url = url
        self._connect = connect
        self._counters = counters
        self._on_rejected = on_rejected
        self._max_message_bytes = max_message_bytes
        self._backoff = backoff
        self.conn: Connection | None = None
        self.live: dict[str, LiveSubscription] = {}
        #: Live subscriptions the relay refused (or that could not be sent), to send again.
        self.refused: dict[str, int] = {}
        #: Refused by a NOTICE that named no subscription: resent only if still unanswered.
        self.suspects: set[str] = set()
        self._retry = anyio.Event()
        self.last_error = "not connected yet"
        self._attempt = anyio.Event()
        self._kick = anyio.Event()
        self.stopped = False

    def __repr__(self) -> str:
        state = "connected" if self.conn is not None else f"down ({self.last_error})"
        return f"RelayLink({self.url!r}, {state})"

    def count(self, name: str, amount: int = 1) -> None:
        self._counters[name] = self._counters.get(name, 0) + amount

    # ----------------------------------------------------------------- operations

    async def connection(self) -> Connection:
        """The open connection, connecting now if there is none.

        Raises :class:`RelayUnavailable` when the next attempt fails.
        """
        conn = self.conn
        if conn is not None and not conn.closed:
            return conn
        if self.stopped:
            raise RelayUnavailable("transport closed")
        attempt = self._attempt
        self._kick.set()
        await attempt.wait()
        conn = self.conn
        if conn is None or conn.closed:
            raise RelayUnavailable(self.last_error)
        return conn

    def retire(self, conn: Connection) -> None:
        """Stop handing out ``conn``: operations wait for the next connection."""
        if self.conn is conn:
            self.conn = None
            if self._attempt.is_set():
                self._attempt = anyio.Event()

    def add_live(self, subscription: LiveSubscription) -> None:
        self.live[subscription.sub_id] = subscription
        conn = self.conn
        if conn is not None and not conn.closed:
            self._open_live(conn, subscription)

    def remove_live(self, sub_id: str) -> None:
        self.refused.pop(sub_id, None)
        self.suspects.discard(sub_id)
        if self.live.pop(sub_id, None) is not None and self.conn is not None:
            self.conn.unsubscribe(sub_id)

    def live_refused(self, sub_id: str, reason: str) -> None:
        """The relay closed (or never took) live subscription ``sub_id``: send it again later.

        A subscription lost without a word leaves the provider deaf to that
        relay (failure mode 20): it is warned about, counted, and retried
        with a doubling wait until the relay takes it.
        """
        if sub_id not in self.live:
            return
        attempts = self.refused.get(sub_id, 0) + 1
        self.refused[sub_id] = attempts
        self.count("live_subscriptions_refused")
        LOGGER.warning(
            "relay %s refused live subscription %s (%s); retry %d follows",
            self.url,
            sub_id,
            reason,
            attempts,
        )
        self._retry.set()

    def _open_live(self, conn: Connection, subscription: LiveSubscription) -> None:
        try:
            conn.subscribe(
                subscription.sub_id, subscription.filters(self.url), subscription.handler(self.url)
            )
        except RelayUnavailable as exc:
            self.live_refused(subscription.sub_id, str(exc))
        else:
            conn.unanswered[subscription.sub_id] = None

    async def _retry_refused(self, conn: Connection) -> None:
        """Send refused live subscriptions again, waiting longer after each refusal."""
        first, longest = self._backoff
        while not conn.closed:
            if not self.refused:
                self._retry = anyio.Event()
                await self._retry.wait()
                continue
            attempts = max(self.refused.values())
            await anyio.sleep(min(first * 2 ** min(attempts - 1, 10), longest))
            for sub_id in list(self.refused):
                subscription = self.live.get(sub_id)
                answered = sub_id in self.suspects and sub_id not in conn.unanswered
                self.suspects.discard(sub_id)
                if subscription is None or conn.closed or answered:
                    self.refused.pop(sub_id, None)
                    continue
                del self.refused[sub_id]
                self.count("live_resubscribes")
                self._open_live(conn, subscription)

    # ----------------------------------------------------------------- the link task

    async def run(self) -> None:
        """Connect, serve, reconnect; until cancelled."""
        first, longest = self._backoff
        delay = first
        try:
            while True:
                attempt = self._attempt
                conn: Connection | None = None
                try:
                    async with self._connect(self.url) as ws:
                        send, receive = anyio.create_memory_object_stream[str](_OUTBOX)
                        conn = Connection(self, send)
                        self.conn = conn
                        self.count("connects")
                        delay = first
                        attempt.set()
                        await self._serve(ws, conn, receive)
                except Exception as exc:
                    self.last_error = _describe(exc)
                    LOGGER.debug("relay %s: %s", self.url, self.last_error)
                finally:
                    if conn is not None:
                        if self.conn is conn:
                            self.conn = None
                        conn.fail_all(self.last_error)
                    if self._attempt is attempt:
                        self._attempt = anyio.Event()
                    attempt.set()
                if conn is not None and conn.recycled is not None:
                    continue
                self._kick = anyio.Event()
                with anyio.move_on_after(delay):
                    await self._kick.wait()
                delay = min(delay * 2, longest)
        finally:
            self.stopped = True
            self._attempt.set()

    async def _serve(
        self,
        ws: AsyncWebSocketSession,
        conn: Connection,
        outbox: MemoryObjectReceiveStream[str],
    ) -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(self._write, ws, conn, outbox)
            self.refused.clear()
            self.suspects.clear()
            for subscription in list(self.live.values()):
                self._open_live(conn, subscription)
            group.start_soon(self._retry_refused, conn)
            with conn.scope:
                await self._read(ws, conn)
            if conn.recycled is not None:
                self.last_error = f"connection recycled ({conn.recycled})"
            group.cancel_scope.cancel()

    async def _write(
        self,
        ws: AsyncWebSocketSession,
        conn: Connection,
        outbox: MemoryObjectReceiveStream[str],
    ) -> None:
        async with outbox:
            try:
                async for text in outbox:
                    await ws.send_text(text)
            except Exception as exc:
                self.last_error = f"send failed: {_describe(exc)}"
                conn.scope.cancel()

    async def _read(self, ws: AsyncWebSocketSession, conn: Connection) -> None:
        while True:
            try:
                text = await ws.receive_text()
            except WebSocketInvalidTypeReceived:
                self.count("bad_relay_messages")
                continue
            except Exception as exc:
                self.last_error = _describe(exc)
                return
            if len(text) > self._max_message_bytes:
                self.count("dropped_oversized")
                continue
            self.dispatch(conn, text)

    def dispatch(self, conn: Connection, text: str) -> None:
        """Handle one message from the relay."""
        conn.last_heard = anyio.current_time()
        try:
            message = json.loads(text)
        except ValueError:
            self.count("bad_relay_messages")
            return
        if not (isinstance(message, list) and message and isinstance(message[0], str)):
            self.count("bad_relay_messages")
            return
        verb = message[0]
        sub_id = message[1] if len(message) > 1 and isinstance(message[1], str) else None
        if verb == "EVENT" and sub_id is not None and len(message) >= 3:
            handler = conn.handlers.get(sub_id)
            if handler is None:
                self.count("events_unsolicited")
                return
            self.count("events_received")
            try:
                event = verify_event(message[2])
            except EventRejected as exc:
                self.count(f"dropped_{exc.reason}")
                LOGGER.info("dropped an event from %s: %s", self.url, exc)
                if self._on_rejected is not None:
                    self._on_rejected(self.url, exc, message[2])
                return
            handler.on_event(event)
        elif verb == "EOSE" and sub_id is not None:
            conn.unanswered.pop(sub_id, None)
            conn.queries.pop(sub_id, None)
            handler = conn.handlers.get(sub_id)
            if handler is not None:
                handler.on_eose()
        elif verb == "CLOSED" and sub_id is not None:
            self.count("closed_by_relay")
            handler = conn.handlers.pop(sub_id, None)
            if handler is not None:
                reason = message[2] if len(message) > 2 and isinstance(message[2], str) else ""
                handler.on_closed(f"closed by the relay: {reason}" if reason else "closed by relay")
        elif verb == "OK" and sub_id is not None and len(message) >= 3:
            self._on_ok(conn, sub_id, message[2] is True, message[3:4])
        elif verb == "NOTICE":
            self.count("notices")
            text = message[1] if len(message) > 1 and isinstance(message[1], str) else ""
            LOGGER.info("notice from %s: %.200s", self.url, text)
            if is_refusal(text) and conn.queries:
                # The NOTICE names no request: every query still unanswered
                # may be the refused one, and is asked again (reads are free
                # to repeat).
                for suspect in list(conn.queries):
                    handler = conn.handlers.get(suspect)
                    refused = getattr(handler, "on_refused", None)
                    if refused is not None:
                        refused(text)
            if "subscription" in text.lower() and conn.unanswered:
                # A relay that refuses a REQ with a NOTICE names no id: every
                # live subscription it has not answered yet is suspect, and is
                # sent again unless its EOSE arrives before the retry.
                for suspect in conn.unanswered:
                    self.suspects.add(suspect)
                    self.live_refused(suspect, text)
        elif verb == "AUTH":
            self.count("auth_challenges")
        else:
            self.count("bad_relay_messages")

    def _on_ok(self, conn: Connection, event_id: str, ok: bool, rest: list[Any]) -> None:
        reason = rest[0] if rest and isinstance(rest[0], str) else ""
        waiter = conn.pending.pop(event_id, None)
        if waiter is None and not event_id and conn.pending:
            # Some relays answer a rejection with an empty id; they answer in
            # order, so it belongs to the oldest event still waiting.
            oldest = next(iter(conn.pending))
            waiter = conn.pending.pop(oldest)
        # "duplicate:" means the relay already stores this very event.
        accepted = ok or reason.startswith("duplicate:")
        if waiter is not None:
            waiter.resolve(accepted, reason, answered=True)
        if not accepted:
            self.count("rejected_events")
            # A relay may throttle a connection after a rejection: start afresh.
            # Not after a refusal over a limit ("rate-limited: ..."): a fresh
            # connection would get round a per-connection limit, so the
            # publish backs off and asks again on this one.
            if not is_refusal(reason):
                conn.recycle(f"event rejected: {reason[:100]}")
