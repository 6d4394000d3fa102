"""How many slots the election lets run the claim protocol at once (failure mode 26).

A slot's claim must reach a write quorum within ``claim_timeout`` of its
pre-read, so that two rivals always see each other. When a primary with a
thousand workloads dies, every slot of it is ready to pre-read at the same
instant; if all of them pre-read and claim at once, a relay that stores a
few hundred events a second acknowledges only the first few hundred claims
in time. The rest miss their deadline, back off (doubling), and retry into
relays that are still busy with the first round: the failover takes minutes
and the next standby takes part of it.

:class:`ClaimAdmission` keeps the number of slots between their pre-read and
their claim's acknowledgement (phases ``PREREAD`` and ``CLAIMING``) under a
window that adapts to what the relays manage in time. Each slot that got
through (its claim acknowledged in time, or its pre-read answered with a
rival to yield to) says how long that took since its pre-read: within half
of ``claim_timeout`` (the target) the window grows by one, beyond it the
window shrinks by one, so the relays' queues stay short enough for every
claim to make its deadline with room to spare.

Those answers come a round trip after the window let their slots in, so
growing on them alone overshoots: on three ``nostr-relay`` processes the
first hundred claims came back within 0.7 s, the window grew past 300, and
the claims let in after that waited 2 to 2.5 s, some past their deadline.
So while slots wait for room, the window is also held to the number of
slots that got through in the last target's length of time, once slots
have been getting through that long: by Little's law, the slots the relays
carry through within the target at the rate they show. A failure for lack
of answers (a pre-read or a claim short of its quorum or late) halves the
window, but not below that number, at most once per round: a failure of a
slot that pre-read before the last cut does not cut again. A failed claim costs the
relays twice (the late claim and its withdrawal) and the slot a doubling
wait, so the window aims to avoid failures, not to find them.

A slot ready to pre-read while the window is full waits in phase
``PACED``, in the order it became ready, and is let in when the slots
ahead of it leave room: a chunk at a time, so the slots let in together
share one batched pre-read.

Safety does not depend on when a slot pre-reads, only on what it does from
its pre-read on (``docs/safety.md``): a later pre-read is always allowed.
The ordered backoff is kept: a slot only waits here once its own backoff is
over, and the first ready go first.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Generic, TypeVar

from ._claim_reads import MAX_BATCH
from ._phase import Phase
from ._slot_entry import Entry
from ._timing import Timing

__all__ = ["IN_FLIGHT", "ClaimAdmission", "initial_claim_window"]

SpecT = TypeVar("SpecT")

#: The phases that count against the window: a slot between its pre-read and
#: its claim's acknowledgement (or its compare-and-set's answer).
IN_FLIGHT = frozenset({Phase.PREREAD, Phase.CLAIMING})

#: The store rate (events a second) the first claim window assumes of a relay:
#: a third of the slowest ``nostr-relay`` figure measured here (240 a second),
#: so the first round is answered in time on slower relays too; the window
#: then follows what the relays really do.
ASSUMED_STORE_RATE = 80.0


def initial_claim_window(timing: Timing) -> int:
    """The claim window before the relays said anything: the claims a relay storing
    :data:`ASSUMED_STORE_RATE` events a second acknowledges within half of
    ``claim_timeout``, at least 1 and at most :data:`MAX_BATCH`.

    100 for the default timing and for ``claim_timeout`` 2.5 s; 28 for 0.7 s.
    A window that starts larger than the relays keep up with loses most of
    its first round: the claims miss ``claim_timeout``, are withdrawn, and
    wait a doubling retry.
    """
    fits = int(ASSUMED_STORE_RATE * timing.claim_timeout / 2)
    return max(1, min(MAX_BATCH, fits))


class ClaimAdmission(Generic[SpecT]):
    """The window of slots in the claim protocol, and the slots waiting for room.

    ``initial`` is the window before the relays said anything (at least 1);
    the window never drops below 1, so a slot always gets in once the slots
    ahead of it have left. ``target`` is the time from pre-read to answer
    the window aims to stay under (half of ``claim_timeout``).
    """

    def __init__(self, initial: int, target: float) -> None:
        if isinstance(initial, bool) or not isinstance(initial, int) or initial < 1:
            raise ValueError(f"the initial claim window must be an int >= 1, got {initial!r}")
        self.window = float(initial)
        #: Seconds from pre-read to answer beyond which the window stops growing.
        self.target = target
        self.in_flight = 0
        #: Slots ready to pre-read, in the order they became ready.
        self.waiting: dict[str, Entry[SpecT]] = {}
        #: When the window was last halved; ``None``: never.
        self.cut_at: float | None = None
        #: The first answer since the window was last empty; ``None``: none since.
        self.through_since: float | None = None
        #: When slots got through, oldest first, within the last ``target``.
        self.through: deque[float] = deque()

    def __repr__(self) -> str:
        return (
            f"ClaimAdmission(window={self.window:.1f}, in_flight={self.in_flight}, "
            f"waiting={len(self.waiting)})"
        )

    def moved(self, entry: Entry[SpecT], old: Phase | None, new: Phase | None) -> None:
        """Account for one slot's move (``None``: in or out of the table)."""
        if old is new:
            return
        if old in IN_FLIGHT:
            self.in_flight -= 1
            if not self.in_flight:
                # A rate is only read a target after this restarts: what got
                # through before is older than that by then.
                self.through_since = None
                self.through.clear()
        elif old is Phase.PACED:
            self.waiting.pop(entry.slot.workload_id, None)
        if new in IN_FLIGHT:
            self.in_flight += 1
        elif new is Phase.PACED:
            self.waiting[entry.slot.workload_id] = entry

    def full(self) -> bool:
        """Whether a slot ready to pre-read now must wait (it would not be first in line)."""
        return bool(self.waiting) or self.in_flight >= int(self.window)

    def let_in(self) -> list[Entry[SpecT]]:
        """The waiting slots to let in now, first ready first.

        Room is handed out in chunks of half the window, at most one batched
        read's worth (:data:`MAX_BATCH`), so the slots let in together share
        one pre-read instead of reading one by one as each slot ahead leaves.
        """
        if not self.waiting:
            return []
        room = int(self.window) - self.in_flight
        if room <= 0:
            return []
        if len(self.waiting) <= room:
            count = len(self.waiting)
        else:
            chunk = min(MAX_BATCH, max(1, int(self.window) // 2))
            count = room // chunk * chunk
        taken = list(itertools.islice(self.waiting, count))
        return [self.waiting.pop(workload_id) for workload_id in taken]

    def got_through(self, now: float, waited: float) -> None:
        """A slot in flight was answered in time at ``now``, ``waited`` seconds after its pre-read.

        Well within the target the relays keep up: widen the window by one;
        beyond it their queues grow: narrow it by one. While slots wait and
        the relays have shown a rate (:meth:`shown`), the window is held to
        it instead of narrowed: the late answer came from a slot let in when
        the window was wider, and narrowing for it as well would take the
        window below what the relays carry through.
        """
        self.through.append(now)  # the old ones go when the rate is read
        if self.through_since is None:
            self.through_since = now
        in_time = waited <= self.target
        shown = self.shown(now)
        if shown is not None and self.waiting:
            grown = self.window + 1.0 if in_time else self.window
            self.window = max(1.0, min(grown, float(shown)))
        elif in_time:
            self.window += 1.0
        else:
            self.window = max(1.0, self.window - 1.0)

    def shown(self, now: float) -> int | None:
        """The slots that got through in the last ``target`` seconds, once slots
        have been getting through that long since the window was last empty;
        ``None`` before (too short to tell a rate)."""
        if self.through_since is None or now - self.through_since < self.target:
            return None
        through = self.through
        horizon = now - self.target
        while through and through[0] < horizon:
            through.popleft()
        return len(through)

    def fell_short(self, now: float, preread_at: float) -> bool:
        """A slot in flight missed a quorum or a deadline: halve the window, once a round.

        Not below the slots the relays carried through in the last
        ``target`` (:meth:`shown`): a round lost to a window grown past
        their rate is cut back to that rate, not below it. A slot that
        pre-read before the last cut belongs to the round that was already
        cut for: its failure does not cut again. Whether this one cut.
        """
        if self.cut_at is not None and preread_at <= self.cut_at:
            return False
        shown = self.shown(now) or 0
        self.window = max(1.0, self.window / 2, min(self.window, float(shown)))
        self.cut_at = now
        return True
