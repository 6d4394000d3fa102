"""What a restarted node does with what its previous incarnation left (guarantee 5)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Generic, TypeVar

import anyio
import attrs

from ..core._effects import Announce, SlotRemoved
from ..core._lifecycle import Never
from ..core._models import LeaseRevocation, PromotionAnnouncement, PromotionClaim
from ..core._records import NodeState, PrimaryRecord, PromotionIntent
from ..core._relay_messages import takeover_epoch
from ..protocols._contracts import Query, RunningWorkload
from ._events import Reconciled, StandbyGivenUp

if TYPE_CHECKING:
    from ._node import StandbyNode

__all__ = ["EpochsRead", "Restart"]

SpecT = TypeVar("SpecT")


@attrs.define
class EpochsRead:
    """What a read of the relays found about some workloads, per workload id.

    ``claimed``: the highest epoch others claimed (not withdrawn) or
    announced; ``announced``: the highest this node announced; ``revoked``:
    the highest epoch anyone revoked; ``signers``: who other than this node
    published any of these; ``reached``: whether a read quorum answered;
    ``answered``: how many relays did, and ``errors`` why each other did not.
    """

    reached: bool
    answered: int = 0
    errors: dict[str, str] = attrs.Factory(dict)
    claimed: dict[str, int] = attrs.Factory(dict)
    announced: dict[str, int] = attrs.Factory(dict)
    revoked: dict[str, int] = attrs.Factory(dict)
    signers: dict[str, set[str]] = attrs.Factory(dict)


def _raise(into: dict[str, int], workload_id: str, epoch: int) -> None:
    into[workload_id] = max(into.get(workload_id, -1), epoch)


class Restart(Generic[SpecT]):
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

    def __init__(self, node: StandbyNode[SpecT]) -> None:
        self.node = node
        self.observer = node.observer
        self.timing = node.timing

    async def restore(self) -> None:
        """Load the saved state and reconcile it with the runtime and the relays."""
        node = self.node
        state: NodeState[SpecT] = NodeState()
        if node.store is not None:
            state = await node.store.load_state()
        now = node.now()
        effects = node.election.restore(now, state.slots)
        # Slots dropped on restore must not come back: rewrite the store.
        if any(isinstance(e, SlotRemoved) for e in effects):
            node.persistence.replace()
        self.observer.restored(len(node.election.slots), effects)
        await self._reconcile(state)

    async def _reconcile(self, state: NodeState[SpecT]) -> None:
        node = self.node
        timeout = self.timing.query_timeout
        with anyio.fail_after(2 * timeout + self.timing.spawn_timeout):
            running: Sequence[RunningWorkload] = await node.runtime.list()
        primaries = {p.workload_id: p for p in state.primaries if p.ended is None}
        intents = {i.workload_id: i for i in state.intents}
        workloads = set(primaries) | set(intents) | {r.workload_id for r in running}
        read = await self.read_epochs(workloads)
        now = node.now()
        for saved in state.primaries:
            if saved.ended is not None and saved.expires_at > now:
                node.primary.ended[saved.workload_id] = saved
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
            await node.primary.stop_container(
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
        standby = node.standby
        for workload_id, intent in intents.items():
            if intent.spent or workload_id in adopted:
                # A spent token (or one that now runs here again) is never used
                # twice: the marker stays until the reservation ends.
                if intent.expires_at > now:
                    standby.spend(intent)
                continue
            self._abandon(now, intent)
        if state.primaries or intents or running:
            node.persistence.replace()  # the reconciled state replaces what was saved

    async def read_epochs(self, workloads: set[str]) -> EpochsRead:
        """What the relays hold about ``workloads``' epochs: claims, announcements, revocations.

        Withdrawn claims do not count (nor this node's own claims: those it
        withdraws itself). Without a read quorum (``reached`` false) nothing
        may be adopted or started.
        """
        if not workloads:
            return EpochsRead(reached=True)
        node = self.node
        query = Query(
            kinds=("claim", "announcement", "revocation"),
            workload_ids=workloads,
            until=node.now() + self.timing.max_clock_skew,
        )
        result = await node.io.query(query, operation="reconcile", workload_id=None)
        found = EpochsRead(
            reached=len(result.answered) >= self.timing.read_quorum,
            answered=len(result.answered),
            errors=dict(result.errors),
        )
        for envelope in result.envelopes:
            message = envelope.message
            mine = envelope.signer == node.me
            if isinstance(message, LeaseRevocation):
                _raise(found.revoked, message.workload_id, message.epoch)
            elif isinstance(message, (PromotionClaim, PromotionAnnouncement)):
                epoch = takeover_epoch(message)
                if epoch is None or (mine and isinstance(message, PromotionClaim)):
                    continue  # withdrawn, or a claim of ours (we withdraw those ourselves)
                _raise(found.announced if mine else found.claimed, message.workload_id, epoch)
            else:
                continue
            if not mine:
                found.signers.setdefault(message.workload_id, set()).add(envelope.signer)
        return found

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
        if isinstance(known, PromotionIntent) and found.workload_id not in self.node.election.slots:
            return "its slot is gone"
        return None

    def _adopt(
        self, now: float, found: RunningWorkload, known: PrimaryRecord | PromotionIntent
    ) -> None:
        node = self.node
        workload_id = found.workload_id
        spec: SpecT | None = None
        if isinstance(known, PromotionIntent):
            slot = node.election.slots[workload_id]
            standbys, created_at, expires_at = slot.peers, slot.created_at, slot.expires_at
            spec = slot.spec
            node.election.remove(now, workload_id)
            announcement = PromotionAnnouncement(
                workload_id=workload_id,
                new_primary=node.me,
                promoted_at=now,
                epoch=known.epoch,
                fencing_token=known.fencing_token,
            )
            node.io.spawn(node.standby.announce, Announce(announcement))
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
        record = node.primary.take_over(
            now, saved, lease_from=lease_from, spec=spec, handle=found.handle
        )
        record.renewed = found.lease_end
        node.primary.add(record)
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
        node = self.node
        workload_id = record.workload_id
        # A lease over now: the first tick fences and publishes the revocation.
        lease_from = now - self.timing.lease
        node.primary.add(
            node.primary.take_over(now, record, lease_from=lease_from, spec=None, restart=Never())
        )
        node.primary.ended[workload_id] = attrs.evolve(record, ended=reason)
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
        node = self.node
        reason = "a promotion was interrupted by a restart; its token is never used again"
        if intent.workload_id in node.election.slots:
            node.election.remove(now, intent.workload_id)
        node.standby.spend(intent)
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
