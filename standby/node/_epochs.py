"""What the relays say about some workloads' epochs (a restart's and a start's read).

:class:`EpochReader` reads them; :class:`BatchedEpochReads` lets many
starts at once (a primary accepting hundreds of workloads) share reads of
up to :data:`~standby.core._claim_reads.MAX_BATCH` workloads instead of
sending one read per workload (failure mode 19).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import attrs

from ..core._claim_reads import MAX_BATCH
from ..core._models import LeaseRevocation, PromotionAnnouncement, PromotionClaim
from ..core._relay_messages import takeover_epoch
from ..core._timing import Timing
from ..protocols._contracts import Query
from ._io import NodeIO

__all__ = ["BatchedEpochReads", "EpochReader", "EpochsRead"]


@attrs.define
class EpochsRead:
    """What a read of the relays found about some workloads, per workload id.

    ``claimed``: the highest epoch others claimed (not withdrawn) or
    announced; ``announced``: the highest this node announced; ``revoked``:
    the highest epoch anyone revoked; ``taken_over``: the highest epoch
    another node announced (it runs the workload in that epoch), and who;
    ``signers``: who other than this node
    published any of these; ``reached``: whether a read quorum answered;
    ``answered``: how many relays did, and ``errors`` why each other did not.
    """

    reached: bool
    answered: int = 0
    errors: dict[str, str] = attrs.Factory(dict)
    claimed: dict[str, int] = attrs.Factory(dict)
    announced: dict[str, int] = attrs.Factory(dict)
    revoked: dict[str, int] = attrs.Factory(dict)
    taken_over: dict[str, tuple[int, str]] = attrs.Factory(dict)
    signers: dict[str, set[str]] = attrs.Factory(dict)


def _raise(into: dict[str, int], workload_id: str, epoch: int) -> None:
    into[workload_id] = max(into.get(workload_id, -1), epoch)


class EpochReader:
    """Reads the claims, announcements and revocations of some workloads.

    Used by the restart (what may run on) and by a primary before it starts
    a replicated workload (has it moved on, is it ours?).
    """

    def __init__(self, me: str, timing: Timing, io: NodeIO, now: Callable[[], float]) -> None:
        self.me = me
        self.timing = timing
        self.io = io
        self.now = now

    async def read(self, workloads: set[str]) -> EpochsRead:
        """What the relays hold about ``workloads``' epochs: claims, announcements, revocations.

        Withdrawn claims do not count (nor this node's own claims: those it
        withdraws itself). Without a read quorum (``reached`` false) nothing
        may be adopted or started.
        """
        if not workloads:
            return EpochsRead(reached=True)
        query = Query(
            kinds=("claim", "announcement", "revocation"),
            workload_ids=workloads,
            until=self.now() + self.timing.max_clock_skew,
        )
        result = await self.io.query(query, operation="reconcile", workload_id=None)
        found = EpochsRead(
            reached=len(result.answered) >= self.timing.read_quorum,
            answered=len(result.answered),
            errors=dict(result.errors),
        )
        for envelope in result.envelopes:
            message = envelope.message
            mine = envelope.signer == self.me
            if isinstance(message, LeaseRevocation):
                _raise(found.revoked, message.workload_id, message.epoch)
            elif isinstance(message, (PromotionClaim, PromotionAnnouncement)):
                epoch = takeover_epoch(message)
                if epoch is None or (mine and isinstance(message, PromotionClaim)):
                    continue  # withdrawn, or a claim of ours (we withdraw those ourselves)
                _raise(found.announced if mine else found.claimed, message.workload_id, epoch)
                if not mine and isinstance(message, PromotionAnnouncement):
                    best = found.taken_over.get(message.workload_id)
                    if best is None or epoch > best[0]:
                        found.taken_over[message.workload_id] = (epoch, envelope.signer)
            else:
                continue
            if not mine:
                found.signers.setdefault(message.workload_id, set()).add(envelope.signer)
        return found


#: Batched epoch reads in flight at once: the Nostr transport's default
#: window of queries per relay connection (more would wait there anyway).
READS_IN_FLIGHT = 8


@attrs.define(eq=False)
class _Batch:
    """Workloads whose epochs one read fetches, and its answer once it came."""

    workloads: set[str] = attrs.Factory(set)
    done: anyio.Event = attrs.Factory(anyio.Event)
    result: EpochsRead | None = None


class BatchedEpochReads:
    """Epoch reads of many callers at once, gathered into reads of a few batches.

    A caller joins the batch still open (not yet sent, fewer than
    ``batch_size`` workloads) or opens one; the caller that opened a batch
    sends it once fewer than ``in_flight`` reads are out, so the callers
    that arrive meanwhile ride along. Every caller gets the whole batch's
    answer (its own workloads are in it). A batch whose read failed or was
    cancelled answers ``reached=False``: its callers try again, never start
    on a read that did not happen.
    """

    def __init__(
        self,
        read: Callable[[set[str]], Awaitable[EpochsRead]],
        *,
        batch_size: int = MAX_BATCH,
        in_flight: int = READS_IN_FLIGHT,
    ) -> None:
        if batch_size < 1 or in_flight < 1:
            raise ValueError(
                f"batch_size and in_flight must be at least 1, got {batch_size} and {in_flight}"
            )
        self._read = read
        self.batch_size = batch_size
        self._limiter = anyio.CapacityLimiter(in_flight)
        self._open: _Batch | None = None
        #: Reads sent (one per batch).
        self.reads = 0
        #: Callers waiting for an answer, and an event set when none is.
        self.pending = 0
        self._idle = anyio.Event()
        self._idle.set()

    async def read(self, workloads: set[str]) -> EpochsRead:
        """What the relays hold about ``workloads``' epochs, read together with other callers'."""
        self.pending += 1
        if self._idle.is_set():
            self._idle = anyio.Event()
        try:
            return await self._join(workloads)
        finally:
            self.pending -= 1
            if not self.pending:
                self._idle.set()

    async def idle(self, within: float) -> None:
        """Return once no caller waits for an epoch read, or after ``within`` seconds."""
        with anyio.move_on_after(within):
            while self.pending:
                await self._idle.wait()

    async def _join(self, workloads: set[str]) -> EpochsRead:
        if len(workloads) >= self.batch_size:
            return await self._read(workloads)  # a batch of its own already
        batch = self._open
        if batch is None or len(batch.workloads) + len(workloads) > self.batch_size:
            batch = self._open = _Batch()
            batch.workloads |= workloads
            await self._send(batch)
        else:
            batch.workloads |= workloads
            await batch.done.wait()
        assert batch.result is not None
        return batch.result

    async def _send(self, batch: _Batch) -> None:
        try:
            async with self._limiter:
                if self._open is batch:
                    self._open = None  # later callers open the next batch
                self.reads += 1
                batch.result = await self._read(set(batch.workloads))
        finally:
            if self._open is batch:
                self._open = None
            if batch.result is None:  # failed or cancelled: nobody may start on it
                batch.result = EpochsRead(reached=False, errors={"": "the epoch read failed"})
            batch.done.set()
