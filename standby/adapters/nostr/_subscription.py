"""The live subscriptions and query answers of the Nostr transport.

Private to :mod:`standby.adapters.nostr`. A :class:`NostrSubscription` is
registered on every :class:`~standby.adapters.nostr._link.RelayLink`, which
sends it again on each new connection (resuming after the newest event the
relay sent) and feeds its deliveries through a :class:`_LiveHandler`; a
:class:`Collector` gathers one relay's answer to a query.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Final

import anyio

from ...protocols._contracts import Query
from .._stream import BufferedSubscription
from ._keys import NostrEvent
from ._link import Handler, is_refusal

if TYPE_CHECKING:
    from . import NostrTransport

__all__ = ["Collector", "NostrSubscription"]

#: Event ids remembered per relay by a subscription, to drop repeats.
_SEEN_KEPT: Final = 4096


class Collector:
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


class NostrSubscription(BufferedSubscription):
    """A live subscription on every relay of a :class:`NostrTransport`.

    Implements :class:`~standby.protocols.Subscription`. Deliveries from all
    relays are merged (one envelope per relay that delivers an event, as
    with any transport); a repeat of an event on the same relay is dropped.
    When the consumer falls more than ``buffer`` envelopes behind, newer
    deliveries are dropped and counted (``dropped_overflow``): delivery is
    best effort and the node re-reads before any decision.
    """

    backend = "Nostr"

    def __init__(
        self, transport: NostrTransport, query: Query, sub_id: str, since: int, buffer: int
    ) -> None:
        super().__init__(transport, query, buffer)
        self._transport: NostrTransport = transport
        self._sub_id = sub_id
        self._since = since
        self._newest: dict[str, int] = {}
        self._seen: dict[str, OrderedDict[str, None]] = {}

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"NostrSubscription({self._sub_id!r}, {state})"

    @property
    def sub_id(self) -> str:
        """The subscription id sent to the relays."""
        return self._sub_id

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
        if envelope is not None:
            self._push(envelope)

    def _relay_closed(self, relay: str, reason: str) -> None:
        # A CLOSED from the relay (a limit, an error) or the connection ending.
        # The link sends the subscription again: at once on a new connection,
        # after a backoff while the connection stays up (failure mode 20).
        self._transport._count("subscription_interruptions")
        link = self._transport._links.get(relay)
        if link is not None and not self._closed and reason.startswith("closed by"):
            link.live_refused(self._sub_id, reason)

    def _detach(self) -> None:
        # Close the subscription on every relay (``CLOSE``).
        self._transport._unsubscribe(self)

    def _end(self) -> None:
        self._send.close()
        self._receive.close()
