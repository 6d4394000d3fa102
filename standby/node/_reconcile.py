"""What a restarted node does with what its previous incarnation left (guarantee 5)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Generic, TypeVar

import attrs

from ..aio import fail_after
from ..core._effects import Announce, SlotRemoved
from ..core._election import StandbyElection
from ..core._lifecycle import Never
from ..core._models import PromotionAnnouncement
from ..core._records import NodeState, PrimaryRecord, PromotionIntent
from ..core._timing import Timing
from ..protocols._contracts import ContainerRuntime, RunningWorkload
from ._epochs import EpochsRead
from ._events import Reconciled, StandbyGivenUp
from ._io import NodeIO
from ._observe import Observer
from ._persistence import Persistence
from ._primary import PrimarySide

__all__ = ["Reconciler"]

SpecT = TypeVar("SpecT")


class Reconciler(Generic[SpecT]):
    """Restores the slots and reconciles the runtime, the store and the relays on entry.

    The runtime says what still runs, the store what this node intended
    and ran, the relays which epoch each workload is at. A container runs
    on only when its lease is valid, the store knows its token and no
    later epoch was claimed or announced; everything else is stopped. A
    promotion that the restart interrupted is given up (its slot is
    dropped and its claim withdrawn) so its epoch and token are never
    used twice; a replicated workload whose container is gone is fenced
    (its revocation lets the standbys take over at once).
    """

    def __init__(
        self,
        me: str,
        timing: Timing,
        observer: Observer,
        io: NodeIO,
        runtime: ContainerRuntime,
        election: StandbyElection[SpecT],
        persistence: Persistence,
        primary: PrimarySide[SpecT],
        *,
        now: Callable[[], float],
        read_epochs: Callable[[set[str]], Awaitable[EpochsRead]],
        spend: Callable[[PromotionIntent], None],
        announce: Callable[[Announce], Coroutine[Any, Any, None]],
    ) -> None:
        self.me = me
        self.timing = timing
        self.observer = observer
        self.io = io
        self.runtime = runtime
        self.election = election
        self.persistence = persistence
        self.primary = primary
        self.now = now
        #: Of the epoch reader: what the relays say of some workloads' epochs.
        self.read_epochs = read_epochs
        #: Of the standby side: keep a promotion intent, spent.
        self.spend = spend
        #: Of the standby side: publish that this node is a workload's new primary.
        self.announce = announce

    async def restore(self) -> None:
        """Load the saved state and reconcile it with the runtime and the relays."""
        state: NodeState[SpecT] = await self.persistence.load()
        now = self.now()
        effects = self.election.restore(now, state.slots)
        # Slots dropped on restore must not come back: rewrite the store.
        if any(isinstance(e, SlotRemoved) for e in effects):
            self.persistence.replace()
        self.observer.restored(len(self.election.slots), effects)
        await self._reconcile(state)

    async def _reconcile(self, state: NodeState[SpecT]) -> None:
        timeout = self.timing.query_timeout
        with fail_after(2 * timeout + self.timing.spawn_timeout):
            running: Sequence[RunningWorkload] = await self.runtime.list()
        primaries = {p.workload_id: p for p in state.primaries if p.ended is None}
        intents = {i.workload_id: i for i in state.intents}
        workloads = set(primaries) | set(intents) | {r.workload_id for r in running}
        read = await self.read_epochs(workloads)
        now = self.now()
        for saved in state.primaries:
            if saved.ended is not None and saved.expires_at > now:
                self.primary.ended[saved.workload_id] = saved
        adopted: set[str] = set()
        for found in sorted(running, key=lambda r: (r.workload_id, r.fencing_token)):
            workload_id, token = found.workload_id, found.fencing_token
            record = primaries.get(workload_id)
            intent = intents.get(workload_id)
            known: PrimaryRecord | PromotionIntent | None = None
            if record is not None and record.fencing_token == token:
                known = record
            elif intent is not None and intent.fencing_token == token:
                known = intent
            reason = self._refused(found, known, read, now, adopted)
            if reason is None and known is not None:
                self._adopt(now, found, known)
                adopted.add(workload_id)
                continue
            epoch = known.epoch if known is not None else -1
            await self.primary.stop_container(
                found.handle, workload_id, token, reason or "", "node"
            )
            self.observer.report(
                Reconciled(now, workload_id, "stopped", epoch, token, reason or "")
            )
        for workload_id, record in primaries.items():
            if workload_id not in adopted and record.replicated:
                # Started or about to start: either way nothing of it runs here
                # now, and the standbys may already count on its silence.
                self._fence_lost(now, record, "its container was gone after a restart")
        for workload_id, intent in intents.items():
            if intent.spent or workload_id in adopted:
                # A spent token (or one that now runs here again) is never used
                # twice: the marker stays until the reservation ends.
                if intent.expires_at > now:
                    self.spend(intent)
                continue
            self._abandon(now, intent)
        if state.primaries or intents or running:
            self.persistence.replace()  # the reconciled state replaces what was saved

    def _refused(
        self,
        found: RunningWorkload,
        known: PrimaryRecord | PromotionIntent | None,
        read: EpochsRead,
        now: float,
        adopted: set[str],
    ) -> str | None:
        """Why the container ``found`` must not run on (``None``: adopt it)."""
        if known is None:
            return "the store knows no such workload and token (a stray container)"
        if found.workload_id in adopted:
            return "a second container of a workload already adopted"
        if found.lease_end <= now:
            return f"its lease ended at {found.lease_end:.3f}"
        replicated = not isinstance(known, PrimaryRecord) or known.replicated
        if replicated and not read.reached:
            return "no read quorum answered: the workload's current epoch is unknown"
        later = read.claimed.get(found.workload_id, -1)
        if replicated and later > known.epoch:
            return f"a peer claimed or announced epoch {later} (this container runs {known.epoch})"
        revoked = read.revoked.get(found.workload_id, -1)
        if replicated and revoked >= known.epoch:
            return f"epoch {revoked} was revoked (this container runs {known.epoch})"
        if isinstance(known, PromotionIntent) and found.workload_id not in self.election.slots:
            return "its slot is gone"
        return None

    def _adopt(
        self, now: float, found: RunningWorkload, known: PrimaryRecord | PromotionIntent
    ) -> None:
        workload_id = found.workload_id
        spec: SpecT | None = None
        if isinstance(known, PromotionIntent):
            slot = self.election.slots[workload_id]
            standbys, created_at, expires_at = slot.peers, slot.created_at, slot.expires_at
            spec = slot.spec
            self.election.remove(now, workload_id)
            announcement = PromotionAnnouncement(
                workload_id=workload_id,
                new_primary=self.me,
                promoted_at=now,
                epoch=known.epoch,
                fencing_token=known.fencing_token,
            )
            self.io.spawn(self.announce, Announce(announcement))
        else:
            standbys, created_at, expires_at = known.standbys, known.created_at, known.expires_at
        saved = PrimaryRecord(
            workload_id=workload_id,
            epoch=known.epoch,
            fencing_token=known.fencing_token,
            standbys=standbys,
            created_at=created_at,
            expires_at=expires_at,
        )
        lease_from = found.lease_end - self.timing.lease
        self.primary.take_over(
            now,
            saved,
            lease_from=lease_from,
            spec=spec,
            handle=found.handle,
            renewed=found.lease_end,
        )
        self.observer.report(
            Reconciled(
                now, workload_id, "adopted", known.epoch, known.fencing_token, "lease still valid"
            )
        )

    def _fence_lost(
        self, now: float, record: PrimaryRecord, reason: str, *, action: str = "fenced"
    ) -> None:
        """A replicated workload that ran here (or was claimed here) is gone: fence and revoke.

        A lifecycle whose lease is already over does the work: its first tick
        fences, and it publishes the signed revocation (retried until a write
        quorum holds it), so the standbys that follow this node take over at
        once instead of watching a provider that still heartbeats.
        """
        workload_id = record.workload_id
        # A lease over now: the first tick fences and publishes the revocation.
        lease_from = now - self.timing.lease
        self.primary.take_over(now, record, lease_from=lease_from, spec=None, restart=Never())
        self.primary.ended[workload_id] = attrs.evolve(record, ended=reason)
        self.observer.report(
            Reconciled(now, workload_id, action, record.epoch, record.fencing_token, reason)
        )

    def _abandon(self, now: float, intent: PromotionIntent) -> None:
        """Give up a promotion the restart interrupted: its epoch and token are spent.

        The slot is dropped and the epoch revoked, but the claim stays: its
        token may have reached a workload, so no peer may take that epoch
        again (a lower-indexed peer would carry a lower token). Peers follow
        this node as that epoch's primary (through its claim or its
        announcement) and take the revocation as the signal to promote into
        the next epoch. The spent intent stays in the store until the
        reservation's end, so the node never stands by for the workload again:
        in its peers' view it was that epoch's primary and left their lineup,
        so as a standby it would claim beside peers that ignore its claims, or
        behind a new primary that does not count it and never fences (failure
        mode 33). The host is told (:class:`~standby.node.StandbyGivenUp`).
        """
        reason = "a promotion was interrupted by a restart; its token is never used again"
        if intent.workload_id in self.election.slots:
            self.election.remove(now, intent.workload_id)
        self.spend(intent)
        self.observer.report(
            StandbyGivenUp(
                now,
                intent.workload_id,
                intent.epoch,
                intent.fencing_token,
                intent.expires_at,
                f"gave up its promotion into epoch {intent.epoch} (token {intent.fencing_token}): "
                "a restart interrupted it",
            )
        )
        self._fence_lost(
            now,
            PrimaryRecord(
                workload_id=intent.workload_id,
                epoch=intent.epoch,
                fencing_token=intent.fencing_token,
                standbys=intent.standbys,
                created_at=intent.recorded_at,
                expires_at=intent.expires_at,
                started=True,
            ),
            reason,
            action="abandoned",
        )
