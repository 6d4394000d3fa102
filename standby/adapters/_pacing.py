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
    ``initial_window``, grows by one per acknowledgement that came back
    within ``target_delay`` of the fastest one seen, shrinks by one per
    slower acknowledgement and halves when a publish times out or is
    refused, between 1 and ``max_window``. A publish still waiting for room
    when its caller's timeout ends is never sent, so a retry does not add
    to what the relay already has to do.
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
    :attr:`size` events are in flight), sends, and then reports exactly one
    of :meth:`acked` (with the round trip), :meth:`lost` (timed out or
    refused: the window halves) or :meth:`release` (no verdict, e.g. the
    connection dropped), with the rank it acquired with.

    Announcements and withdrawals (the later rank) use at most half the
    window: the relay stores one event at a time, so every one of them in
    flight is one a claim sent after it waits for, and claims have a
    deadline.
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
        self._waiting: list[tuple[int, int, int, _Waiter]] = []
        self._seq = 0

    def __repr__(self) -> str:
        return f"PublishWindow(size={self.size:.1f}, in_flight={self.in_flight})"

    def _room(self, rank: int) -> bool:
        size = max(1, int(self.size))
        if rank != _CLAIM_FIRST and self.later_in_flight >= max(1, size // 2):
            return False
        return self.in_flight < size

    def _take(self, rank: int) -> None:
        self.in_flight += 1
        if rank != _CLAIM_FIRST:
            self.later_in_flight += 1

    async def acquire(self, rank: int = _CLAIM_FIRST, order: int | None = None) -> None:
        """Wait for room for one event; cancellable while waiting.

        Waiters go by ``rank`` (lower first), then by ``order``, then as they
        came. A transport passes the same ``order`` for one message on every
        relay, so all relays get the waiting messages in the same order: the
        first ones reach their quorum first instead of each relay storing a
        different few.
        """
        if self._room(rank) and not self._waiting:
            self._take(rank)
            return
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

    def acked(self, round_trip: float, rank: int = _CLAIM_FIRST) -> None:
        """The relay acknowledged an event ``round_trip`` seconds after it was sent."""
        pacing = self._pacing
        self.fastest = min(self.fastest, round_trip)
        if round_trip - self.fastest <= pacing.target_delay:
            self.size = min(float(pacing.max_window), self.size + 1.0)
            self.peak = max(self.peak, self.size)
        else:
            self.size = max(1.0, self.size - 1.0)
        self.release(rank)

    def lost(self, rank: int = _CLAIM_FIRST) -> None:
        """An event sent was not acknowledged in time, or was refused: send less."""
        self.size = max(1.0, self.size / 2)
        self.release(rank)


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
    ``congested`` recognises (the window halves), or anything else.
    """
    if window is None:
        await send()
        return
    try:
        await window.acquire(rank, order)
    except anyio.get_cancelled_exc_class():
        answers[relay] = NOT_SENT_FOR_ROOM
        raise
    sent = anyio.current_time()
    try:
        await send()
    finally:
        answer = answers.get(relay, "timed out")
        if answer is None:
            window.acked(anyio.current_time() - sent, rank)
        elif answer == "timed out" or congested(answer):
            window.lost(rank)
        else:
            window.release(rank)
