"""The slot table of the election machine and the orderings it is read in.

:class:`SlotIndex` files every slot twice: by workload id, and by what the
machine waits for next. A watching slot waits on its primary's silence:
the slots of one primary share one deadline, the earliest origin among
them (a heap of origins per primary, so a heartbeat costs O(1) whatever
the slot count). Every other slot has a deadline of its own, in one heap
with the primaries'. Expiry has a heap of its own. Entries of every heap
are dropped lazily, when they reach the top and turn out stale.

No clock, no I/O: every method that looks at time is handed ``now``.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

from ._helpers import primary_is_silent, silence_baseline
from ._models import StandbySlot
from ._phase import Phase
from ._slot_entry import Entry
from ._timing import Timing

__all__ = ["SlotIndex"]

SpecT = TypeVar("SpecT")

_PRIMARY = 0
_SLOT = 1
_INF = float("inf")


class SlotIndex(Generic[SpecT]):
    """Every slot of the machine, by workload id, by primary and by deadline."""

    def __init__(self, timing: Timing) -> None:
        self.timing = timing
        self.entries: dict[str, Entry[SpecT]] = {}
        self.slots: dict[str, StandbySlot[SpecT]] = {}
        #: Newest accepted heartbeat timestamp, per primary.
        self.last_hb: dict[str, float] = {}
        #: Per primary, the workload ids of its watching slots ...
        self.watchers: dict[str, set[str]] = {}
        #: ... and of its slots in any other phase.
        self.busy: dict[str, set[str]] = {}
        #: Per primary, a heap of (origin, workload id) of its watching slots;
        #: entries of slots that stopped watching are dropped lazily.
        self.origins: dict[str, list[tuple[float, str]]] = {}
        #: The deadline each primary has in :attr:`heap` now.
        self.pushed: dict[str, float] = {}
        #: (deadline, sequence, primary or slot, key) of every deadline.
        self.heap: list[tuple[float, int, int, str]] = []
        self.expiry: list[tuple[float, str]] = []
        #: Workloads this machine promoted, until their slot would have expired.
        self.promoted: dict[str, float] = {}
        self._seq = 0

    # ------------------------------------------------------------------ the table

    def add(self, entry: Entry[SpecT]) -> None:
        """File a new slot by workload id and by expiry (not yet by phase)."""
        slot = entry.slot
        self.entries[slot.workload_id] = entry
        self.slots[slot.workload_id] = slot
        heapq.heappush(self.expiry, (slot.expires_at, slot.workload_id))

    def remove(self, workload_id: str) -> None:
        """Forget a slot that has left every phase set already."""
        del self.entries[workload_id]
        del self.slots[workload_id]

    def replace_slot(self, entry: Entry[SpecT], slot: StandbySlot[SpecT]) -> None:
        """Give ``entry`` a new slot of the same workload."""
        entry.slot = slot
        self.slots[slot.workload_id] = slot

    def current(self, workload_id: str, phase: Phase, request: int) -> Entry[SpecT] | None:
        """The slot of ``workload_id`` if it is in ``phase`` waiting for ``request``."""
        entry = self.entries.get(workload_id)
        return entry if entry is not None and entry.waiting_on(phase, request) else None

    def waiting(
        self, workload_ids: Iterable[str], phase: Phase, request: int
    ) -> list[Entry[SpecT]]:
        """The slots among ``workload_ids`` still in ``phase`` waiting for ``request``."""
        return [e for wid in workload_ids if (e := self.current(wid, phase, request)) is not None]

    def mark_promoted(self, slot: StandbySlot[SpecT]) -> None:
        """Remember a workload promoted here until its slot would have expired."""
        self.promoted[slot.workload_id] = slot.expires_at
        heapq.heappush(self.expiry, (slot.expires_at, slot.workload_id))

    # ------------------------------------------------------------------ by phase

    def leave_phase(self, entry: Entry[SpecT]) -> None:
        """Take the slot out of its primary's watching or busy set."""
        primary = entry.slot.primary
        workload_id = entry.slot.workload_id
        if entry.phase is Phase.WATCHING:
            watchers = self.watchers.get(primary)
            if watchers is not None:
                watchers.discard(workload_id)
                if not watchers:
                    del self.watchers[primary]
                    self.origins.pop(primary, None)
            # Its origin stays in the heap until it reaches the top (lazy removal).
        else:
            busy = self.busy.get(primary)
            if busy is not None:
                busy.discard(workload_id)
                if not busy:
                    del self.busy[primary]

    def file_watching(self, entry: Entry[SpecT]) -> None:
        """File a slot that (re)started watching among its primary's watchers."""
        primary = entry.slot.primary
        watchers = self.watchers.setdefault(primary, set())
        watchers.add(entry.slot.workload_id)
        heap = self.origins.setdefault(primary, [])
        heapq.heappush(heap, (entry.origin, entry.slot.workload_id))
        if len(heap) > 2 * len(watchers) + 16:
            # Too many stale entries: rebuild (amortised O(1) per push).
            entries = self.entries
            heap[:] = [(entries[w].origin, w) for w in watchers]
            heapq.heapify(heap)
        self._push_primary(primary, self._primary_deadline(primary))

    def file_busy(self, entry: Entry[SpecT]) -> None:
        """Move a watching slot to its primary's busy set."""
        self.leave_phase(entry)
        self.busy.setdefault(entry.slot.primary, set()).add(entry.slot.workload_id)

    def push_deadline(self, entry: Entry[SpecT], deadline: float) -> None:
        """Give a slot that is not watching a deadline of its own."""
        entry.deadline = deadline
        self._seq += 1
        heapq.heappush(self.heap, (deadline, self._seq, _SLOT, entry.slot.workload_id))

    # ------------------------------------------------------------------ silence

    def _silent_from(self, baseline: float) -> float:
        """The first instant at which ``primary_is_silent`` holds for ``baseline``.

        ``baseline + silence`` rounded to a float can sit one step before the
        instant ``now - baseline >= silence`` becomes true; step forward until
        the deadline and the check agree, so a due slot is always confirmable.
        """
        silence = self.timing.silence
        deadline = baseline + silence
        while deadline - baseline < silence:
            deadline = math.nextafter(deadline, _INF)
        return deadline

    def watch_deadline(self, entry: Entry[SpecT]) -> float:
        """When a watching slot's primary becomes silent, as things stand."""
        last = self.last_hb.get(entry.slot.primary)
        return self._silent_from(silence_baseline(entry.origin, last))

    def _primary_deadline(self, primary: str) -> float:
        origin = self._min_watch_origin(primary)
        if origin is None:
            return _INF
        return self._silent_from(silence_baseline(origin, self.last_hb.get(primary)))

    def _origin_live(self, primary: str, origin: float, workload_id: str) -> bool:
        entry = self.entries.get(workload_id)
        return (
            entry is not None
            and entry.phase is Phase.WATCHING
            and entry.origin == origin
            and entry.slot.primary == primary
        )

    def _min_watch_origin(self, primary: str) -> float | None:
        """The earliest origin among ``primary``'s watching slots (amortised O(log n))."""
        heap = self.origins.get(primary)
        while heap:
            origin, workload_id = heap[0]
            if self._origin_live(primary, origin, workload_id):
                return origin
            heapq.heappop(heap)
        return None

    def _push_primary(self, primary: str, at: float) -> None:
        current = self.pushed.get(primary)
        if current is not None and current <= at:
            return
        self.pushed[primary] = at
        self._seq += 1
        heapq.heappush(self.heap, (at, self._seq, _PRIMARY, primary))

    def take_silent(self, now: float, primary: str) -> list[Entry[SpecT]]:
        """Take the watching slots of ``primary`` that are silent at ``now``.

        Oldest origin first: the due slots are a prefix of the origin heap.
        They leave the heap; the caller moves them on.
        """
        if not self.watchers.get(primary):
            return []
        last = self.last_hb.get(primary)
        silence = self.timing.silence
        heap = self.origins.get(primary, [])
        due: list[Entry[SpecT]] = []
        taken: set[str] = set()
        while heap:
            origin, wid = heap[0]
            if not self._origin_live(primary, origin, wid) or wid in taken:
                heapq.heappop(heap)
                continue
            if not primary_is_silent(now, silence_baseline(origin, last), silence):
                break
            heapq.heappop(heap)
            taken.add(wid)
            due.append(self.entries[wid])
        return due

    def rearm_primary(self, primary: str) -> None:
        """Push the next silence deadline of ``primary``, if it still has watchers."""
        if self.watchers.get(primary):
            self._push_primary(primary, self._primary_deadline(primary))

    # ------------------------------------------------------------------ deadlines

    def next_deadline(self) -> float | None:
        """The earliest live deadline or expiry (stale heap tops are dropped)."""
        heap = self.heap
        while heap:
            at, _, kind, key = heap[0]
            if kind == _PRIMARY:
                if self.pushed.get(key) != at or not self.watchers.get(key):
                    heapq.heappop(heap)
                    if self.pushed.get(key) == at:
                        del self.pushed[key]
                    continue
                actual = self._primary_deadline(key)
                if actual > at:
                    heapq.heappop(heap)
                    del self.pushed[key]
                    self._push_primary(key, actual)
                    continue
            else:
                entry = self.entries.get(key)
                if entry is None or entry.deadline != at:
                    heapq.heappop(heap)
                    continue
            break
        expiry = self.expiry
        while expiry and not self._expiry_live(*expiry[0]):
            heapq.heappop(expiry)
        best = heap[0][0] if heap else _INF
        if expiry and expiry[0][0] < best:
            best = expiry[0][0]
        return None if best == _INF else best

    def due(self, now: float) -> Iterator[str | Entry[SpecT]]:
        """Each primary (by name) and slot whose deadline is due at ``now``.

        Lazy: what the caller does with one item (new deadlines included)
        is seen before the next is taken. A due slot's deadline is cleared.
        """
        heap = self.heap
        while heap and heap[0][0] <= now:
            at, _, kind, key = heapq.heappop(heap)
            if kind == _PRIMARY:
                if self.pushed.get(key) != at:
                    continue
                del self.pushed[key]
                yield key
            else:
                entry = self.entries.get(key)
                if entry is None or entry.deadline != at:
                    continue
                entry.deadline = None
                yield entry

    def _expiry_live(self, at: float, workload_id: str) -> bool:
        entry = self.entries.get(workload_id)
        if entry is not None:
            return entry.slot.expires_at == at and entry.phase is not Phase.SPAWNING
        return self.promoted.get(workload_id) == at

    def expired(self, now: float) -> Iterator[Entry[SpecT]]:
        """Each slot whose expiry is due at ``now`` (lazily, like :meth:`due`).

        A spawning slot is skipped: it is settled when the spawn reports back
        (a container that started after its slot expired is stopped, never
        promoted). Promoted workloads past their expiry are forgotten.
        """
        expiry = self.expiry
        while expiry and expiry[0][0] <= now:
            at, workload_id = heapq.heappop(expiry)
            if self.promoted.get(workload_id) == at:
                del self.promoted[workload_id]
            entry = self.entries.get(workload_id)
            if entry is None or entry.slot.expires_at != at:
                continue
            if entry.phase is Phase.SPAWNING:
                continue
            yield entry
