"""The standby side: a sans-I/O election machine for many reserved slots.

``StandbyElection`` keeps this provider's table of reserved slots and decides,
for each one, when the primary counts as silent and when this standby may
promote. It never reads a clock or does I/O: every call takes ``now`` (Unix
seconds, this host's wall clock) and returns a list of effects; the driver
calls :meth:`StandbyElection.tick` no later than :meth:`next_deadline`.

Life of a slot (``Phase``): :data:`TRANSITIONS` lists every legal move, and
every move goes through one checked step that reports it as a
:class:`~standby.PhaseChanged` effect. In short: ``WATCHING`` until the
primary's silence deadline, ``CONFIRMING`` the silence with a quorum read,
``BACKOFF`` by standby index (a revocation skips straight here), then the
claim protocol ``PREREAD`` -> ``CLAIMING`` -> ``SETTLING`` -> ``REREAD`` ->
``SPAWNING``, after which the promoted slot leaves the table. A peer's claim
sends the slot to ``DEFERRED``; a live primary sends it back to ``WATCHING``.
A slot in ``RETRY_WATCH`` waits before watching again (its confirmation
missed the read quorum); one in ``RETRY_CLAIM`` waits before pre-reading
again (a claims read or a claim missed its quorum or deadline, or a spawn
failed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, TypeVar

from ._claim_reads import MAX_BATCH, batched
from ._effects import Announce, ElectionEffect, Promoted, SlotRemoved, SlotSaved, StopOrphan
from ._election_inputs import CLAIMS_READ, HEARTBEAT_READ, MESSAGES, ElectionInputs
from ._errors import InvalidSlot
from ._helpers import primary_is_silent, silence_baseline
from ._models import Envelope, PromotionAnnouncement, PromotionClaim, StandbySlot
from ._phase import Phase
from ._slot_entry import Entry, Request, SlotStatus
from ._timing import Timing
from ._transitions import TRANSITIONS, IllegalTransition

__all__ = [
    "MAX_BATCH",
    "TRANSITIONS",
    "IllegalTransition",
    "Phase",
    "SlotStatus",
    "StandbyElection",
]

SpecT = TypeVar("SpecT")

#: The phases in which :meth:`StandbyElection.reserve` may replace a slot
#: (nothing is in flight and no claim is held).
_REPLACEABLE = frozenset({Phase.WATCHING, Phase.RETRY_WATCH, Phase.RETRY_CLAIM})


class StandbyElection(ElectionInputs[SpecT]):
    """Election machine for every slot this provider reserved.

    ``me`` is this provider's canonical identity. With ``atomic_claims=True``
    the machine asks for a :class:`~standby.CompareAndSetClaim` instead of
    publish-and-settle (use it when the transport implements
    :class:`~standby.protocols.AtomicClaims`).

    Costs: a heartbeat is O(1) whatever the number of slots of its primary;
    deadlines live in a heap (O(log n) per change); expiry is checked on every
    call through its own heap.
    """

    def __init__(self, *, me: str, timing: Timing, atomic_claims: bool = False) -> None:
        if not isinstance(me, str) or not me.strip():
            raise ValueError(f"`me` must be a non-empty identity, got {me!r}")
        super().__init__(me=me, timing=timing, atomic_claims=atomic_claims)

    # ------------------------------------------------------------------
    # Table management
    # ------------------------------------------------------------------

    @property
    def slots(self) -> Mapping[str, StandbySlot[SpecT]]:
        """The current slot table (read-only view), keyed by workload id."""
        return MappingProxyType(self._index.slots)

    def status(self, workload_id: str) -> SlotStatus:
        """Snapshot of one slot; ``KeyError`` when it is not in the table."""
        entry = self._index.entries[workload_id]
        deadline = entry.deadline
        if entry.phase is Phase.WATCHING:
            deadline = self._index.watch_deadline(entry)
        return SlotStatus(
            workload_id=workload_id,
            primary=entry.slot.primary,
            epoch=entry.slot.epoch,
            phase=entry.phase,
            deadline=deadline,
            revoked=entry.revoked,
            spawn_attempts=entry.attempts,
            deferred_to=None if entry.deferred is None else entry.deferred.claimant,
        )

    def phase(self, workload_id: str) -> Phase | None:
        """The phase of one slot (``None``: not in the table), in O(1)."""
        entry = self._index.entries.get(workload_id)
        return None if entry is None else entry.phase

    def last_heartbeat(self, primary: str) -> float | None:
        """Newest accepted heartbeat timestamp of ``primary``, if any."""
        return self._index.last_hb.get(primary)

    @batched
    def reserve(self, now: float, slot: StandbySlot[SpecT]) -> list[ElectionEffect]:
        """Add a slot (or renew one that is still only watching).

        Raises :class:`InvalidSlot` for a slot that already expired, one this
        process already promoted, or one whose promotion is under way.
        """
        effects = self._swept(now)
        if slot.expires_at <= now:
            raise InvalidSlot(
                f"slot {slot.workload_id!r} expired at {slot.expires_at}, "
                f"which is not after now={now}"
            )
        if slot.workload_id in self._index.promoted:
            raise InvalidSlot(f"workload {slot.workload_id!r} was already promoted by this process")
        existing = self._index.entries.get(slot.workload_id)
        if existing is not None:
            if existing.phase not in _REPLACEABLE or existing.revoked:
                raise InvalidSlot(
                    f"slot {slot.workload_id!r} is {existing.phase.value}: cannot replace it now"
                )
            self._discard(existing)
        self._add(slot)
        effects.append(SlotSaved(slot))
        return effects

    @batched
    def restore(self, now: float, slots: Iterable[StandbySlot[SpecT]]) -> list[ElectionEffect]:
        """Load slots persisted before a restart; expired ones are dropped and reported.

        A restored slot times its primary's silence from the slot's
        :attr:`~standby.StandbySlot.origin`: the current primary's takeover
        when the slot followed one, else the reservation.
        """
        effects = self._swept(now)
        for slot in slots:
            if slot.expires_at <= now:
                self._count("expired_on_restore")
                effects.append(SlotRemoved(slot.workload_id, "expired"))
                continue
            existing = self._index.entries.get(slot.workload_id)
            if existing is not None:
                self._discard(existing)
            self._add(slot)
        return effects

    @batched
    def remove(self, now: float, workload_id: str) -> list[ElectionEffect]:
        """Drop a slot on the host's request (e.g. the consumer cancelled)."""
        effects = self._swept(now)
        entry = self._index.entries.get(workload_id)
        if entry is not None:
            self._withdraw(now, entry, effects)
            self._discard(entry)
            effects.append(SlotRemoved(workload_id, "removed"))
        return effects

    # ------------------------------------------------------------------
    # Time
    # ------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The earliest instant at which :meth:`tick` has work to do."""
        return self._index.next_deadline()

    @batched
    def tick(self, now: float) -> list[ElectionEffect]:
        """Handle every deadline that is due at ``now``."""
        effects = self._swept(now)
        for due in self._index.due(now):
            if isinstance(due, str):
                self._primary_due(now, due, effects)
            else:
                self._slot_due(now, due, effects)
        return effects

    # ------------------------------------------------------------------
    # Inputs from the network
    # ------------------------------------------------------------------

    @batched
    def on_message(self, now: float, envelope: Envelope[Any]) -> list[ElectionEffect]:
        """Feed one authenticated message from a subscription."""
        effects = self._swept(now)
        if not self._receive(now, envelope, MESSAGES, effects):
            raise TypeError(f"not a standby message: {envelope.message!r}")
        return effects

    @batched
    def heartbeats_queried(
        self,
        now: float,
        request_id: int,
        results: Sequence[Envelope[Any]],
        answered: Iterable[str],
    ) -> list[ElectionEffect]:
        """Report the result of a :class:`~standby.QueryHeartbeats`."""
        effects = self._swept(now)
        pending = self._confirming.pop(request_id, None)
        if pending is None:
            self._late(request_id, effects)
            return effects
        primary, workload_ids = pending
        for envelope in results:
            self._receive(now, envelope, HEARTBEAT_READ, effects)
        entries = self._index.waiting(workload_ids, Phase.CONFIRMING, request_id)
        count = len(set(answered))
        if count < self.timing.read_quorum:
            self._confirm_failed(now, entries, count, effects)
            return effects
        last = self._index.last_hb.get(primary)
        for entry in entries:
            baseline = silence_baseline(entry.origin, last)
            if primary_is_silent(now, baseline, self.timing.silence):
                entry.confirmed_baseline = baseline
                self._count("silence_confirmed")
                self._backoff(now, entry)
            else:
                self._watch(entry)
        return effects

    @batched
    def claims_queried(
        self,
        now: float,
        request_id: int,
        results: Sequence[Envelope[Any]],
        answered: Iterable[str],
    ) -> list[ElectionEffect]:
        """Report the result of a :class:`~standby.QueryClaims`.

        ``results`` must hold every matching message that each relay in
        ``answered`` stored, for every workload of the query.
        """
        effects = self._swept(now)
        pending = self._reads.answered(self._index, request_id)
        if pending is None or not pending[1]:
            self._late(request_id, effects)
            return effects
        phase, entries = pending
        for entry in entries:
            entry.request = None
        for envelope in results:
            self._receive(now, envelope, CLAIMS_READ, effects)
        count = len(set(answered))
        for entry in entries:
            self._claims_read(now, entry, phase, count, effects)
        return effects

    @batched
    def claim_published(
        self, now: float, request_id: int, acknowledged: Iterable[str]
    ) -> list[ElectionEffect]:
        """Report which relays acknowledged a :class:`~standby.PublishClaim`."""
        effects = self._swept(now)
        entry = self._take_request(request_id, Request.PUBLISH, effects)
        if entry is None:
            return effects
        acks = len(set(acknowledged))
        in_time = now <= entry.preread_at + self.timing.claim_timeout
        if acks >= self.timing.write_quorum and in_time:
            self._set(entry, Phase.SETTLING, now + self.timing.claim_settle)
            return effects
        self._claim_failed(now, entry, acks, effects)
        return effects

    @batched
    def claim_compared(
        self, now: float, request_id: int, won: bool, holder: PromotionClaim | None = None
    ) -> list[ElectionEffect]:
        """Report the outcome of a :class:`~standby.CompareAndSetClaim`.

        ``holder`` is the claim that holds the epoch when this one lost.
        """
        effects = self._swept(now)
        entry = self._take_request(request_id, Request.COMPARE_AND_SET, effects)
        if entry is None:
            return effects
        if won:
            self._spawn(now, entry, effects)
            return effects
        entry.claim = None  # it never held the epoch: nothing to withdraw
        if holder is not None and entry.slot.peer_index(holder.claimant) is not None:
            self._yield_to(now, entry, holder, effects)
        else:
            self._retry_claim(now, entry, self.timing.retry_interval)
        return effects

    @batched
    def spawn_finished(
        self, now: float, request_id: int, ok: bool, error: str | None = None
    ) -> list[ElectionEffect]:
        """Report the outcome of a :class:`~standby.Spawn`."""
        effects: list[ElectionEffect] = []
        abandoned = self._abandoned.pop(request_id, None)
        if abandoned is not None:
            workload_id, token = abandoned
            if ok:
                effects.append(
                    StopOrphan(workload_id, token, "spawn finished after it was given up")
                )
            return effects
        entry = self._take_request(request_id, Request.SPAWN, effects)
        if entry is None:
            return effects
        claim = entry.claim
        assert claim is not None
        slot = entry.slot
        if ok and slot.expires_at <= now:
            effects.append(StopOrphan(slot.workload_id, claim.fencing_token, "slot expired"))
            self._expire(now, entry, effects)
        elif ok and now >= claim.claimed_at + self.timing.lease:
            # Too late: the lease that began with the claim is over, and the
            # followers may already treat this claimant as silent.
            self._count("spawn_outlived_lease")
            entry.last_error = "the spawn outlived the claim's lease"
            effects.append(
                StopOrphan(
                    slot.workload_id, claim.fencing_token, "spawn outlived the claim's lease"
                )
            )
            self._spawn_failed(now, entry, effects)
        elif ok:
            self._promote(now, entry, claim, effects)
        else:
            self._count("spawn_failed")
            entry.last_error = error
            self._spawn_failed(now, entry, effects)
        self._sweep(now, effects)
        return effects

    def _promote(
        self, now: float, entry: Entry[SpecT], claim: PromotionClaim, effects: list[ElectionEffect]
    ) -> None:
        """The spawn succeeded in time: the slot leaves the table, promoted."""
        slot = entry.slot
        self._count("promoted")
        self._discard(entry)
        self._index.mark_promoted(slot)
        effects.append(
            Announce(
                PromotionAnnouncement(
                    workload_id=slot.workload_id,
                    new_primary=self.me,
                    promoted_at=now,
                    epoch=claim.epoch,
                    fencing_token=claim.fencing_token,
                )
            )
        )
        effects.append(
            Promoted(
                slot=slot,
                epoch=claim.epoch,
                fencing_token=claim.fencing_token,
                standbys=slot.peers,
                lease_from=claim.claimed_at,
            )
        )
        effects.append(SlotRemoved(slot.workload_id, "promoted"))
