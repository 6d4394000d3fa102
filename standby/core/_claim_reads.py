"""Batching of the election's claims reads.

A slot that needs to read the claims (its pre-read or its settle re-read)
does not ask on its own: it queues, and at the end of the machine's call
every queue of one primary and one step becomes one
:class:`~standby.core.QueryClaims` of at most :data:`MAX_BATCH` workloads. The
read in flight is remembered by request id until its answer comes back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from ._effects import QueryClaims
from ._phase import Phase
from ._slot_entry import QUEUED, Entry
from ._slot_index import SlotIndex

__all__ = ["MAX_BATCH", "ClaimReads"]

#: At most this many workloads share one claims read (keeps requests and
#: answers well inside relay limits: filter sizes, result caps).
MAX_BATCH = 100

SpecT = TypeVar("SpecT")


class ClaimReads(Generic[SpecT]):
    """The claims reads queued during one call, and those in flight."""

    def __init__(self) -> None:
        #: Claims reads queued during the current call, per (primary, phase).
        self.queued: dict[tuple[str, Phase], list[Entry[SpecT]]] = {}
        #: Claims reads in flight: request -> (phase, workload ids).
        self.reading: dict[int, tuple[Phase, tuple[str, ...]]] = {}

    def queue(self, entry: Entry[SpecT], phase: Phase) -> None:
        """Queue the read of a slot that has just entered ``phase``."""
        entry.request = QUEUED
        self.queued.setdefault((entry.slot.primary, phase), []).append(entry)

    def flush(self, index: SlotIndex[SpecT], new_id: Callable[[], int]) -> list[QueryClaims]:
        """One claims read per primary and step (at most MAX_BATCH workloads each).

        A queued slot that has moved on since it queued is left out.
        """
        if not self.queued:
            return []
        queued, self.queued = self.queued, {}
        reads: list[QueryClaims] = []
        for (_, phase), group in queued.items():
            live = [e for e in group if index.current(e.slot.workload_id, phase, QUEUED) is e]
            for first in range(0, len(live), MAX_BATCH):
                chunk = live[first : first + MAX_BATCH]
                request = new_id()
                workload_ids = tuple(e.slot.workload_id for e in chunk)
                for entry in chunk:
                    entry.request = request
                self.reading[request] = (phase, workload_ids)
                # Only the peers' messages can move a slot (the election drops
                # the rest); with no peer at all, read everything as before.
                peers = sorted({peer for e in chunk for peer in e.slot.peers})
                authors = tuple(peers) if peers else None
                reads.append(QueryClaims(request, workload_ids[0], workload_ids, authors))
        return reads

    def answered(
        self, index: SlotIndex[SpecT], request: int
    ) -> tuple[Phase, list[Entry[SpecT]]] | None:
        """The step and the slots still waiting for read ``request`` (``None``: unknown)."""
        pending = self.reading.pop(request, None)
        if pending is None:
            return None
        phase, workload_ids = pending
        return phase, index.waiting(workload_ids, phase, request)

    def release(self, index: SlotIndex[SpecT], entry: Entry[SpecT], request: int) -> None:
        """Forget read ``request`` once no slot but ``entry`` waits for it.

        The slot itself stays in the batch: the answer skips a slot whose
        request moved on.
        """
        reading = self.reading.get(request)
        if reading is not None and all(
            (e := index.entries.get(w)) is None or e is entry or e.request != request
            for w in reading[1]
        ):
            del self.reading[request]
