"""How a relay transport spreads its traffic over a relay's connections (failure mode 26).

Private to the adapters; :class:`Pacing` is public through the transports
that take it (``standby.adapters.memory``, ``standby.adapters.nostr``).

A relay handles the messages of one connection strictly in order. A
provider that sends everything on one connection makes its reads wait
behind its own writes, and its heartbeats behind a thousand claims and
announcements: a freshly promoted primary then loses the leases it just
took. So a transport keeps up to three connections per relay, one per
:class:`Lane`:

- **urgent**: heartbeats and revocations (few, small, and each one late
  costs a lease), never behind bulk publishing;
- **bulk**: claims, withdrawals and announcements, paced by a
  :class:`PublishWindow` that adapts to the relay's acknowledgements, claims
  before announcements;
- **read**: queries, never behind the provider's own writes.

:meth:`Pacing.unpaced` is the behaviour before this module: one connection
per relay, every request sent at once.
"""

from __future__ import annotations

import enum
import heapq
import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

import anyio
import attrs

from ..core._models import (
    Heartbeat,
    LeaseRevocation,
    Message,
    PromotionAnnouncement,
    PromotionClaim,
)
from ..core._relay_messages import NOT_SENT

__all__ = [
    "NOT_SENT_FOR_ROOM",
    "Lane",
    "Pacing",
    "PublishWindow",
    "lane_of",
    "send_paced",
    "window_for",
]

#: The publish error for a relay whose window had no room before the timeout.
NOT_SENT_FOR_ROOM: Final = f"{NOT_SENT}: no room in the relay's window before the timeout"


class Lane(enum.Enum):
    """Which connection of a relay a request travels on."""

    URGENT = "urgent"
    BULK = "bulk"
    READ = "read"
    #: Everything, with :meth:`Pacing.unpaced`.
    SINGLE = "single"


#: Among bulk publishes waiting for room, lower goes first: a claim has a
#: deadline (``claim_timeout``); an announcement or a withdrawal is retried
#: until it holds.
_CLAIM_FIRST: Final = 0
_LATER: Final = 1


def _positive(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{attribute.name} must be a number, got {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a finite number > 0, got {value!r}")


@attrs.frozen
class Pacing:
    """How a transport uses each relay's connections.

    ``lanes``: reads and urgent publishes (heartbeats, revocations) get a
    connection of their own beside the bulk one, so neither waits behind
    claims and announcements. ``paced``: bulk publishes wait for room in a
    window of unacknowledged events per connection that starts at
    ``initial_window`` and stays between 1 and ``max_window``. It grows by
    one per acknowledgement that came back within ``target_delay`` of the
    fastest one seen. It shrinks at most once per round trip: on a slower
    acknowledgement, in proportion, to the share of the window that keeps
    the relay's queue within ``target_delay`` (by at most half); on a
    publish that timed out or was refused, by half. A publish still waiting
    for room when its caller's timeout ends is never sent, so a retry does
    not add to what the relay already has to do.
    """

    lanes: bool = True
    paced: bool = True
    initial_window: int = attrs.field(default=16, validator=_positive)
    max_window: int = attrs.field(default=1024, validator=_positive)
    target_delay: float = attrs.field(default=0.1, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.initial_window > self.max_window:
            raise ValueError(
                f"initial_window ({self.initial_window}) must not exceed max_window "
                f"({self.max_window})"
            )

    @classmethod
    def unpaced(cls) -> Pacing:
        """One connection per relay and no window: every request is sent at once, in order."""
        return cls(lanes=False, paced=False)


def lane_of(pacing: Pacing, message: Message | None) -> tuple[Lane, int]:
    """The lane of a publish of ``message`` (``None``: a query) and its rank among bulk ones."""
    if not pacing.lanes:
        return Lane.SINGLE, _CLAIM_FIRST
    if message is None:
        return Lane.READ, _CLAIM_FIRST
    if isinstance(message, (Heartbeat, LeaseRevocation)):
        return Lane.URGENT, _CLAIM_FIRST
    if isinstance(message, PromotionAnnouncement) or (
        isinstance(message, PromotionClaim) and message.withdrawn
    ):
        return Lane.BULK, _LATER
    return Lane.BULK, _CLAIM_FIRST


class _Waiter:
    __slots__ = ("event", "gone", "granted")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.granted = False
        self.gone = False


class PublishWindow:
    """The unacknowledged events of one connection, and who waits for room.

    A sender calls :meth:`acquire` (waits, best rank first, until fewer than
    :attr:`size` events are in flight; returns the event's ticket), sends,
    and then reports exactly one of :meth:`acked` (with the round trip),
    :meth:`lost` (timed out or refused) or :meth:`release` (no verdict, e.g.
    the connection dropped), with the rank and the ticket it acquired with.

    The window reacts to congestion once per round trip: an event sent
    before the last cut was in the relay's queue when the window was cut
    for it, so its slow answer says nothing new. Cutting per answer instead
    took a window of 40 down to 1 within one round trip of slow answers,
    and a relay that stores 140 events a second was sent 50.

    Announcements and withdrawals (the later rank) are sent only while no
    claim is in flight, and then fill at most half the window: the relay
    stores one event at a time, so every one of them in its queue is one a
    claim sent after it waits for, and claims have a deadline. Sharing the
    relay with them halved the claims' rate in a 1,000-workload failover,
    and every claim late past ``claim_timeout`` is withdrawn and asked
    again; the announcements go as soon as the claims are through.
    """

    def __init__(self, pacing: Pacing) -> None:
        self._pacing = pacing
        self.size = float(pacing.initial_window)
        self.in_flight = 0
        #: Of those, the ones of the later rank (announcements, withdrawals).
        self.later_in_flight = 0
        #: The fastest acknowledgement seen: the relay's time with no queue.
        self.fastest = math.inf
        #: Largest window reached, for tests and reports.
        self.peak = self.size
        #: Tickets handed out so far; the last one handed out before the last cut.
        self.tickets = 0
        self.cut_after = 0
        self._waiting: list[tuple[int, int, int, _Waiter]] = []
        self._seq = 0

    def __repr__(self) -> str:
        return f"PublishWindow(size={self.size:.1f}, in_flight={self.in_flight})"

    def _room(self, rank: int) -> bool:
        size = max(1, int(self.size))
        if rank != _CLAIM_FIRST and (
            self.in_flight > self.later_in_flight or self.later_in_flight >= max(1, size // 2)
        ):
            return False
        return self.in_flight < size

    def _take(self, rank: int) -> None:
        self.in_flight += 1
        if rank != _CLAIM_FIRST:
            self.later_in_flight += 1

    async def acquire(self, rank: int = _CLAIM_FIRST, order: int | None = None) -> int:
        """Wait for room for one event; cancellable while waiting. Returns its ticket.

        Waiters go by ``rank`` (lower first), then by ``order``, then as they
        came. A transport passes the same ``order`` for one message on every
        relay, so all relays get the waiting messages in the same order: the
        first ones reach their quorum first instead of each relay storing a
        different few.
        """
        if self._room(rank) and not self._waiting:
            self._take(rank)
            return self._ticket()
        waiter = _Waiter()
        self._seq += 1
        key = self._seq if order is None else order
        heapq.heappush(self._waiting, (rank, key, self._seq, waiter))
        self._grant()  # a better rank may go ahead of a waiter held back by its own share
        try:
            await waiter.event.wait()
        except BaseException:
            waiter.gone = True
            if waiter.granted:
                self.release(rank)
            raise
        return self._ticket()

    def _ticket(self) -> int:
        self.tickets += 1
        return self.tickets

    def _grant(self) -> None:
        # Best rank first: when the best waiter has no room, nobody behind it does.
        while self._waiting and self._room(self._waiting[0][0]):
            rank, *_key, waiter = heapq.heappop(self._waiting)
            if waiter.gone:
                continue
            waiter.granted = True
            self._take(rank)
            waiter.event.set()

    def release(self, rank: int = _CLAIM_FIRST) -> None:
        """An event of ``rank`` left the window without a verdict."""
        self.in_flight = max(0, self.in_flight - 1)
        if rank != _CLAIM_FIRST:
            self.later_in_flight = max(0, self.later_in_flight - 1)
        self._grant()

    def acked(self, round_trip: float, rank: int = _CLAIM_FIRST, ticket: int | None = None) -> None:
        """The relay acknowledged an event ``round_trip`` seconds after it was sent.

        Within ``target_delay`` of the fastest acknowledgement the relay keeps
        up: one more. Beyond it the relay queues: once a round trip, keep the
        share of the window that its queue drains within ``target_delay``
        (Little's law: the same rate for a shorter wait), at least half.
        ``ticket`` (from :meth:`acquire`; ``None``: a round of its own) tells
        whether the event was sent after the last cut.
        """
        pacing = self._pacing
        self.fastest = min(self.fastest, round_trip)
        allowed = self.fastest + pacing.target_delay
        if round_trip <= allowed:
            self.size = min(float(pacing.max_window), self.size + 1.0)
            self.peak = max(self.peak, self.size)
        elif self._new_round(ticket):
            self.size = max(1.0, self.size * max(0.5, allowed / round_trip))
        self.release(rank)

    def lost(
        self, rank: int = _CLAIM_FIRST, ticket: int | None = None, waited: float | None = None
    ) -> None:
        """An event sent was not acknowledged in time, or was refused: halve, once a round trip.

        ``waited``: how long the event was out before its caller gave up. An
        event sent just before its caller's timeout (it waited for room for
        most of it) that the relay had no time to answer says nothing of the
        relay: it leaves the window without a verdict. Before any
        acknowledgement (no round trip known yet) every loss counts.
        """
        if waited is not None and waited <= self.fastest + self._pacing.target_delay < math.inf:
            self.release(rank)
            return
        if self._new_round(ticket):
            self.size = max(1.0, self.size / 2)
        self.release(rank)

    def _new_round(self, ticket: int | None) -> bool:
        """Whether an event's bad news may cut the window (then the round starts anew)."""
        if ticket is not None and ticket <= self.cut_after:
            return False
        self.cut_after = self.tickets
        return True


def window_for(
    windows: dict[str, PublishWindow], pacing: Pacing, relay: str, lane: Lane
) -> PublishWindow | None:
    """The window of ``relay``'s bulk connection (made on first use); ``None`` when unpaced."""
    if not pacing.paced or lane in (Lane.URGENT, Lane.READ):
        return None
    window = windows.get(relay)
    if window is None:
        window = windows[relay] = PublishWindow(pacing)
    return window


async def send_paced(
    window: PublishWindow | None,
    rank: int,
    relay: str,
    answers: MutableMapping[str, str | None],
    send: Callable[[], Awaitable[None]],
    congested: Callable[[str], bool],
    order: int | None = None,
) -> None:
    """Run ``send()`` (which puts the relay's answer in ``answers[relay]``) inside ``window``.

    Without a window it just sends. With one it first waits for room (a
    caller that gives up meanwhile leaves :data:`NOT_SENT_FOR_ROOM`: nothing
    was sent; ``order`` as in :meth:`PublishWindow.acquire`), then tells the
    window how the relay answered: stored (an
    acknowledgement and its round trip), no answer in time or a reason
    ``congested`` recognises (the window halves, once a round
    trip), or anything else.
    """
    if window is None:
        await send()
        return
    try:
        ticket = await window.acquire(rank, order)
    except anyio.get_cancelled_exc_class():
        answers[relay] = NOT_SENT_FOR_ROOM
        raise
    sent = anyio.current_time()
    try:
        await send()
    finally:
        answer = answers.get(relay, "timed out")
        waited = anyio.current_time() - sent
        if answer is None:
            window.acked(waited, rank, ticket)
        elif answer == "timed out":
            window.lost(rank, ticket, waited)
        elif congested(answer):
            window.lost(rank, ticket)
        else:
            window.release(rank)
