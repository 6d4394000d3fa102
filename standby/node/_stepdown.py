"""The primary's watch for a later epoch of its workloads (failure mode 25).

A primary whose lease still holds must not run beside a standby that took
its workload over. Under a safe timing that never happens (the lease ends
before any standby may claim); outside it (a lease longer than the silence,
a partition that heals, a bug) only the fencing tokens of the workload's
storage would stand between the two. So the primary listens for its
standbys' claims and announcements and steps down at once when one names a
later epoch: the decision is :meth:`~standby.WorkloadLifecycle.takeover_seen`;
this module brings it the messages, two ways:

* the live subscription, whose authors include the standbys of every
  workload run here (:meth:`StepDown.authors`);
* a read of the standbys' claims and announcements of every workload run
  here, once per heartbeat interval (:meth:`StepDown.read`, started by the heartbeat
  task; one query per :data:`~standby.core._election.MAX_BATCH` workloads, one
  after another), so a message the subscription missed cannot keep a split
  alive: once the primary hears the relays again, the overlap lasts at most
  one heartbeat interval and the watch's queries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from ..core._effects import LifecycleEffect
from ..core._election import MAX_BATCH
from ..core._lifecycle import WorkloadLifecycle
from ..core._models import Envelope, Message, PromotionAnnouncement, PromotionClaim
from ..core._relay_messages import step_down_read, takeover_epoch
from ..core._timing import Timing
from ._events import SteppedDown
from ._io import NodeIO
from ._observe import Observer
from ._primary import PrimarySide

__all__ = ["StepDown"]

SpecT = TypeVar("SpecT")


class StepDown(Generic[SpecT]):
    """Feeds the standbys' claims and announcements to the lifecycles they concern."""

    def __init__(
        self,
        me: str,
        timing: Timing,
        observer: Observer,
        io: NodeIO,
        primary: PrimarySide[SpecT],
        *,
        now: Callable[[], float],
    ) -> None:
        self.me = me
        self.timing = timing
        self.observer = observer
        self.io = io
        self.primary = primary
        self.now = now
        self._reading = False

    def watched(self) -> list[str]:
        """The workloads whose lifecycle may still step down (replicated, not ended)."""
        return [
            workload_id
            for workload_id, workload in self.primary.workloads.items()
            if not workload.ended and workload.lifecycle.replicated
        ]

    def authors(self) -> set[str]:
        """The standbys of every workload run here: the subscription listens to them too."""
        authors: set[str] = set()
        for workload in self.primary.workloads.values():
            if not workload.ended:
                authors.update(workload.lifecycle.standbys)
        return authors

    def on_envelope(self, envelope: Envelope[Message]) -> bool:
        """Whether ``envelope`` is a claim or announcement of a workload run here.

        When it is, it has been handed to that workload's lifecycle (unless
        the workload has ended or the message is this node's own).
        """
        message = envelope.message
        if not isinstance(message, (PromotionClaim, PromotionAnnouncement)):
            return False
        workload_id = message.workload_id
        workload = self.primary.workloads.get(workload_id)
        if workload is None:
            return False
        epoch = takeover_epoch(message)
        signer = envelope.signer
        if epoch is None or workload.ended or signer == self.me:
            return True
        kind = "claim" if isinstance(message, PromotionClaim) else "announcement"
        now = self.now()

        def seen(lifecycle: WorkloadLifecycle) -> list[LifecycleEffect]:
            before = lifecycle.superseded
            effects = lifecycle.takeover_seen(now, epoch, signer)
            if lifecycle.superseded is not None and before is None:
                self.observer.report(
                    SteppedDown(now, workload_id, lifecycle.epoch, epoch, signer, kind)
                )
            elif lifecycle.superseded is None and not workload.ended:
                self.observer.takeover_ignored(workload_id, epoch, signer, kind)
            return effects

        self.primary.call(workload_id, seen, now)
        return True

    async def read(self) -> None:
        """Read the standbys' claims and announcements of the workloads run here, once per interval.

        One query per :data:`MAX_BATCH` workloads, one after another: a relay
        answers a connection's requests in order, so sent all at once they
        would hold up every claims read of this node (its standby side's
        pre-reads and re-reads share the read connection) until the last
        one was answered, and each would wait for the others within its own
        timeout. A read still running when the next is due is not doubled.
        """
        watched = self.watched()
        if not watched or self._reading:
            return
        self._reading = True
        try:
            for first in range(0, len(watched), MAX_BATCH):
                await self._read(tuple(watched[first : first + MAX_BATCH]))
        finally:
            self._reading = False

    async def _read(self, workload_ids: tuple[str, ...]) -> None:
        standbys: set[str] = set()
        for workload_id in workload_ids:
            workload = self.primary.workloads.get(workload_id)
            if workload is not None:
                standbys.update(workload.lifecycle.standbys)
        query = step_down_read(
            workload_ids, standbys, self.me, self.now(), self.timing.max_clock_skew
        )
        if not query.authors:
            return
        result = await self.io.query(query, operation="epoch_watch", workload_id=None)
        for envelope in result.envelopes:
            self.on_envelope(envelope)
