"""The election machine's steps: what it does to a slot, whatever asked for it.

:class:`ElectionSteps` holds the machine's state (the :class:`SlotIndex`,
the requests in flight, the queued claims reads) and every move of a slot
between phases: watching, confirming, backing off, the claim protocol and
its failures, following a new primary. Each move goes through
:meth:`ElectionSteps._enter`, checked against ``TRANSITIONS``. The public
calls (:class:`~standby.StandbyElection`) and the rules for what the
network says (``_election_inputs``) are built on top.

No clock, no I/O: every step is handed ``now`` and appends its effects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

import attrs

from ._claim_reads import ClaimReads
from ._effects import (
    CannotStart,
    CompareAndSetClaim,
    Dropped,
    DropReason,
    ElectionEffect,
    PhaseChanged,
    PrimaryChanged,
    PublishClaim,
    QueryHeartbeats,
    QuorumShortfall,
    SlotRemoved,
    SlotSaved,
    Spawn,
    WithdrawClaim,
)
from ._helpers import primary_is_silent, promotion_delay, silence_baseline
from ._models import PromotionClaim, StandbySlot, fencing_token
from ._phase import Phase
from ._slot_entry import Entry, Request
from ._slot_index import SlotIndex
from ._timing import Timing
from ._transitions import checked_move

__all__ = ["ElectionSteps"]

SpecT = TypeVar("SpecT")


class ElectionSteps(Generic[SpecT]):
    """The state of the election machine and the steps that move its slots."""

    def __init__(self, *, me: str, timing: Timing, atomic_claims: bool) -> None:
        self.me = me
        self.timing = timing
        self.atomic_claims = atomic_claims
        self._index: SlotIndex[SpecT] = SlotIndex(timing)
        self._reads: ClaimReads[SpecT] = ClaimReads()
        #: Publish, compare-and-set and spawn requests: request -> (kind, workload id).
        self._requests: dict[int, tuple[Request, str]] = {}
        #: Heartbeat reads in flight: request -> (primary, workload ids).
        self._confirming: dict[int, tuple[str, tuple[str, ...]]] = {}
        #: Spawns given up while in flight: request -> (workload id, fencing token).
        self._abandoned: dict[int, tuple[str, int]] = {}
        self._claims_seen: dict[str, dict[str, PromotionClaim]] = {}
        self._next_request = 0
        #: Phase moves made during the current call, reported at its end.
        self._changes: list[PhaseChanged] = []
        self.counters: dict[str, int] = {}

    # ------------------------------------------------------------------
    # Bookkeeping
    # ------------------------------------------------------------------

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def _drop(
        self,
        counter: str | None,
        reason: DropReason,
        workload_id: str | None,
        signer: str | None,
        detail: str,
        effects: list[ElectionEffect],
    ) -> None:
        """Refuse one input: count it under ``counter`` (if any) and report it."""
        if counter is not None:
            self._count(counter)
        effects.append(Dropped(reason, workload_id, signer, detail))

    def _late(self, request_id: int, effects: list[ElectionEffect]) -> None:
        detail = f"request {request_id}"
        self._drop("late_result", DropReason.LATE_RESULT, None, None, detail, effects)

    def _new_request(self, kind: Request, workload_id: str) -> int:
        request = self._next_id()
        self._requests[request] = (kind, workload_id)
        return request

    def _take_request(
        self, request_id: int, kind: Request, effects: list[ElectionEffect]
    ) -> Entry[SpecT] | None:
        found = self._requests.get(request_id)
        if found is None or found[0] is not kind:
            self._late(request_id, effects)
            return None
        del self._requests[request_id]
        entry = self._index.entries.get(found[1])
        if entry is None or entry.request != request_id:
            self._late(request_id, effects)
            return None
        entry.request = None
        return entry

    def _next_id(self) -> int:
        """A new request id (every kind of request shares one counter)."""
        self._next_request += 1
        return self._next_request

    def _add(self, slot: StandbySlot[SpecT]) -> None:
        entry = Entry(slot, slot.origin)
        self._moved(slot.workload_id, None, Phase.WATCHING, revoked=False)
        self._index.add(entry)
        self._watch(entry)

    def _discard(self, entry: Entry[SpecT]) -> None:
        workload_id = entry.slot.workload_id
        self._index.leave_phase(entry)
        self._release_request(entry)
        entry.deadline = None
        self._moved(workload_id, entry.phase, None, revoked=entry.revoked)
        self._index.remove(workload_id)
        self._claims_seen.pop(workload_id, None)

    def _release_request(self, entry: Entry[SpecT]) -> None:
        request = entry.request
        if request is None:
            return
        entry.request = None
        if entry.phase is Phase.SPAWNING:
            assert entry.claim is not None
            self._requests.pop(request, None)
            self._abandoned[request] = (entry.slot.workload_id, entry.claim.fencing_token)
        elif entry.phase is Phase.CONFIRMING:
            pending = self._confirming.get(request)
            if pending is not None:
                rest = tuple(w for w in pending[1] if w != entry.slot.workload_id)
                if rest:
                    self._confirming[request] = (pending[0], rest)
                else:
                    del self._confirming[request]
        elif entry.phase in (Phase.PREREAD, Phase.REREAD):
            self._reads.release(self._index, entry, request)
        else:
            self._requests.pop(request, None)

    def _sweep(self, now: float, effects: list[ElectionEffect]) -> None:
        expiry = self._index.expiry
        if expiry and expiry[0][0] <= now:  # the common case costs no generator
            for entry in self._index.expired(now):
                self._expire(now, entry, effects)

    def _swept(self, now: float) -> list[ElectionEffect]:
        """A new list of effects for a call, holding what expired by ``now``."""
        effects: list[ElectionEffect] = []
        self._sweep(now, effects)
        return effects

    def _expire(self, now: float, entry: Entry[SpecT], effects: list[ElectionEffect]) -> None:
        self._count("expired")
        self._withdraw(now, entry, effects)
        self._discard(entry)
        effects.append(SlotRemoved(entry.slot.workload_id, "expired"))

    # ------------------------------------------------------------------
    # Phases and deadlines
    # ------------------------------------------------------------------

    def _watch(self, entry: Entry[SpecT]) -> None:
        self._index.leave_phase(entry)
        self._release_request(entry)
        self._enter(entry, Phase.WATCHING)
        entry.deadline = None
        entry.deferred = None
        self._index.file_watching(entry)

    def _enter(self, entry: Entry[SpecT], new: Phase) -> None:
        """The one place a slot in the table changes phase (checked, reported)."""
        old = entry.phase
        if old is not new:
            self._moved(entry.slot.workload_id, old, new, revoked=entry.revoked)
            entry.phase = new

    def _moved(
        self, workload_id: str, old: Phase | None, new: Phase | None, *, revoked: bool
    ) -> None:
        """Check one move against ``TRANSITIONS`` and queue its report."""
        self._changes.append(checked_move(workload_id, old, new, revoked=revoked))

    def _set(self, entry: Entry[SpecT], phase: Phase, deadline: float) -> None:
        """Move to a phase with a per-slot deadline (anything but WATCHING)."""
        if entry.phase is Phase.WATCHING:
            self._index.file_busy(entry)
        self._enter(entry, phase)
        self._index.push_deadline(entry, deadline)

    def _retry_at(self, entry: Entry[SpecT], ready: float) -> float:
        """When a slot whose wait ends at ``ready`` may pre-read again.

        Every retry of a promotion keeps the standby order (failure mode 21):
        standby i waits its index backoff on top of whatever it waited for
        (a retry interval, a failed spawn's backoff, a deferral), so standby
        0 still goes first.
        """
        return ready + promotion_delay(entry.slot.standby_index, self.timing.promotion_delay)

    def _retry_watch(self, now: float, entry: Entry[SpecT]) -> None:
        """Wait a retry interval, then watch again."""
        self._release_request(entry)
        self._set(entry, Phase.RETRY_WATCH, now + self.timing.retry_interval)

    def _retry_claim(self, now: float, entry: Entry[SpecT], wait: float) -> None:
        """Wait ``wait`` (and the index backoff: :meth:`_retry_at`), then pre-read again."""
        at = self._retry_at(entry, now + wait)
        self._release_request(entry)
        self._set(entry, Phase.RETRY_CLAIM, at)

    def _backoff(self, now: float, entry: Entry[SpecT]) -> None:
        self._release_request(entry)
        delay = promotion_delay(entry.slot.standby_index, self.timing.promotion_delay)
        self._set(entry, Phase.BACKOFF, now + delay)

    def _primary_due(self, now: float, primary: str, effects: list[ElectionEffect]) -> None:
        """The primary's silence deadline: confirm the silence of its due slots at once."""
        due = self._index.take_silent(now, primary)
        if due:
            request = self._next_id()
            wait = now + 2 * self.timing.query_timeout
            for entry in due:
                self._set(entry, Phase.CONFIRMING, wait)
                entry.request = request
            workload_ids = tuple(sorted(e.slot.workload_id for e in due))
            self._confirming[request] = (primary, workload_ids)
            last = self._index.last_hb.get(primary)
            since = silence_baseline(min(e.origin for e in due), last)
            effects.append(QueryHeartbeats(request, primary, workload_ids, since))
        self._index.rearm_primary(primary)

    def _slot_due(self, now: float, entry: Entry[SpecT], effects: list[ElectionEffect]) -> None:
        phase = entry.phase
        if phase is Phase.CONFIRMING:
            self._confirm_failed(now, [entry], 0, effects)
        elif phase is Phase.RETRY_WATCH:
            if entry.revoked:
                self._backoff(now, entry)
            else:
                self._watch(entry)
        elif phase in (Phase.BACKOFF, Phase.DEFERRED, Phase.RETRY_CLAIM):
            self._preread(now, entry, effects)
        elif phase in (Phase.PREREAD, Phase.REREAD):
            self._claims_read_failed(now, entry, phase.value, 0, effects)
        elif phase is Phase.CLAIMING:
            self._claim_failed(now, entry, 0, effects)
        elif phase is Phase.SETTLING:
            self._settled(now, entry, effects)
        elif phase is Phase.SPAWNING:
            self._count("spawn_timeout")
            entry.last_error = "the spawn timed out"
            self._spawn_failed(now, entry, effects)

    def _settled(self, now: float, entry: Entry[SpecT], effects: list[ElectionEffect]) -> None:
        """The settle wait is over: re-read, together with the slots pre-read alongside.

        Slots of one primary pre-read in one batch publish their claims at
        once, but the acknowledgements come back spread out. The first slot
        to finish settling waits for those of its batch already settling, up
        to the latest settle end its own claim could have had (``preread_at
        + claim_timeout + claim_settle``): waiting longer than its own settle
        is always safe, and within that cap the lease rule of ``Timing``
        still covers the spawn. All of them then share one re-read.
        """
        if not entry.joined:
            primary = entry.slot.primary
            cap = entry.preread_at + self.timing.claim_timeout + self.timing.claim_settle
            group = [entry]
            for workload_id in self._index.busy.get(primary, ()):
                other = self._index.entries[workload_id]
                if (
                    other is not entry
                    and other.phase is Phase.SETTLING
                    and other.preread_at == entry.preread_at
                    and other.deadline is not None
                    and other.deadline <= cap
                ):
                    group.append(other)
            latest = max(e.deadline or now for e in group)
            for member in group:
                member.joined = True
            if latest > now:
                for member in group:
                    if member.deadline != latest:
                        self._set(member, Phase.SETTLING, latest)
                return
        self._query_claims(now, entry, Phase.REREAD, effects)

    def _query_claims(
        self, now: float, entry: Entry[SpecT], phase: Phase, effects: list[ElectionEffect]
    ) -> None:
        self._release_request(entry)
        self._set(entry, phase, now + 2 * self.timing.query_timeout)
        self._reads.queue(entry, phase)

    def _flush_reads(self, effects: list[ElectionEffect]) -> None:
        """Send the claims reads queued during this call, batched."""
        for read in self._reads.flush(self._index, self._next_id):
            self._count("claims_reads")
            effects.append(read)

    def _preread(self, now: float, entry: Entry[SpecT], effects: list[ElectionEffect]) -> None:
        if not entry.revoked:
            baseline = silence_baseline(entry.origin, self._index.last_hb.get(entry.slot.primary))
            if not primary_is_silent(now, baseline, self.timing.silence):
                # The primary spoke while we were deferring or spawning: never
                # claim without a revocation or a full silence.
                self._rearm(entry)
                return
        entry.deferred = None
        entry.preread_at = now
        self._query_claims(now, entry, Phase.PREREAD, effects)

    def _rearm(self, entry: Entry[SpecT]) -> None:
        """The primary is alive after all: watch it again, the retry counts reset."""
        self._count("rearmed_by_heartbeat")
        entry.attempts = 0
        entry.rounds = 0
        entry.claim_failures = 0
        self._watch(entry)

    def _claim(self, now: float, entry: Entry[SpecT], effects: list[ElectionEffect]) -> None:
        slot = entry.slot
        epoch = slot.epoch + 1
        claim = PromotionClaim(
            workload_id=slot.workload_id,
            epoch=epoch,
            fencing_token=fencing_token(epoch, slot.standby_index),
            claimant=self.me,
            standby_index=slot.standby_index,
            claimed_at=now,
        )
        entry.claim = claim
        entry.joined = False
        if self.atomic_claims:
            request = self._new_request(Request.COMPARE_AND_SET, slot.workload_id)
            effects.append(CompareAndSetClaim(request, claim))
        else:
            request = self._new_request(Request.PUBLISH, slot.workload_id)
            effects.append(PublishClaim(request, claim))
        self._set(entry, Phase.CLAIMING, entry.preread_at + self.timing.claim_timeout)
        entry.request = request

    def _spawn(self, now: float, entry: Entry[SpecT], effects: list[ElectionEffect]) -> None:
        claim = entry.claim
        assert claim is not None
        slot = entry.slot
        request = self._new_request(Request.SPAWN, slot.workload_id)
        self._set(
            entry, Phase.SPAWNING, now + self.timing.spawn_timeout + self.timing.query_timeout
        )
        entry.request = request
        effects.append(
            Spawn(
                request_id=request,
                workload_id=slot.workload_id,
                spec=slot.spec,
                epoch=claim.epoch,
                fencing_token=claim.fencing_token,
                restore_from=entry.state_uri,
                lease_end=claim.claimed_at + self.timing.lease,
            )
        )

    def _spawn_failed(self, now: float, entry: Entry[SpecT], effects: list[ElectionEffect]) -> None:
        self._release_request(entry)  # a spawn still running is remembered as abandoned
        if entry.slot.expires_at <= now:
            self._expire(now, entry, effects)
            return
        self._withdraw(now, entry, effects)
        entry.attempts += 1
        if entry.attempts < self.timing.max_spawn_attempts:
            wait = self.timing.spawn_retry_backoff * 2 ** (entry.attempts - 1)
        else:
            # Out of quick retries: a round is over. After the last round the
            # workload cannot start here (failure mode 24); before it, fall
            # back to a silence window that doubles with every round.
            entry.attempts = 0
            entry.rounds += 1
            if entry.rounds >= self.timing.max_spawn_rounds:
                self._give_up(entry, effects)
                return
            wait = self.timing.silence * 2 ** (entry.rounds - 1)
        self._retry_claim(now, entry, wait)

    def _give_up(self, entry: Entry[SpecT], effects: list[ElectionEffect]) -> None:
        """Every round of spawns failed: drop the slot, a final state the host is told of."""
        workload_id = entry.slot.workload_id
        self._count("gave_up")
        attempts = self.timing.max_spawn_rounds * self.timing.max_spawn_attempts
        self._discard(entry)
        effects.append(CannotStart(workload_id, attempts, entry.last_error))
        effects.append(SlotRemoved(workload_id, "cannot start"))

    def _shortfall(
        self, stage: str, entries: Sequence[Entry[SpecT]], answered: int, needed: int
    ) -> QuorumShortfall:
        self._count("claim_failed" if stage == "claim" else "quorum_shortfall")
        return QuorumShortfall(stage, tuple(e.slot.workload_id for e in entries), answered, needed)

    def _confirm_failed(
        self,
        now: float,
        entries: Sequence[Entry[SpecT]],
        answered: int,
        effects: list[ElectionEffect],
    ) -> None:
        """Too few relays answered the confirmation: not silence; watch again later."""
        effects.append(self._shortfall("confirm", entries, answered, self.timing.read_quorum))
        for entry in entries:
            self._retry_watch(now, entry)

    def _claims_read_failed(
        self,
        now: float,
        entry: Entry[SpecT],
        stage: str,
        answered: int,
        effects: list[ElectionEffect],
    ) -> None:
        """A claims read missed its quorum: withdraw any claim and pre-read again later."""
        effects.append(self._shortfall(stage, [entry], answered, self.timing.read_quorum))
        self._withdraw(now, entry, effects)
        self._retry_claim(now, entry, self.timing.retry_interval)

    def _claim_failed(
        self, now: float, entry: Entry[SpecT], acks: int, effects: list[ElectionEffect]
    ) -> None:
        """A claim missed its quorum or its deadline: withdraw, back off, retry.

        The wait doubles with each failure in a row (capped at 32 retry
        intervals), so a standby whose claims cannot get through stops
        getting in the way of peers whose claims can.
        """
        effects.append(self._shortfall("claim", [entry], acks, self.timing.write_quorum))
        self._withdraw(now, entry, effects)
        entry.claim_failures += 1
        wait = self.timing.retry_interval * 2 ** min(entry.claim_failures - 1, 5)
        self._retry_claim(now, entry, wait)

    def _withdraw(self, now: float, entry: Entry[SpecT], effects: list[ElectionEffect]) -> None:
        claim = entry.claim
        if claim is None:
            return
        entry.claim = None
        claimed_at = max(now, claim.claimed_at)
        effects.append(WithdrawClaim(attrs.evolve(claim, withdrawn=True, claimed_at=claimed_at)))

    def _yield_to(
        self, now: float, entry: Entry[SpecT], rival: PromotionClaim, effects: list[ElectionEffect]
    ) -> None:
        """A peer's claim holds the epoch this slot wanted: withdraw ours and give way.

        A rival that claimed long ago (``peer_claim_grace``) and never
        announced is followed as the primary of that epoch, so that its own
        silence can be detected (failure mode 28: a holder that died right
        after its claim must not block the epoch for good); a recent one is
        deferred to. The one rule for a claims read that finds a rival and
        for a compare-and-set lost to a holder.
        """
        self._withdraw(now, entry, effects)
        if rival.claimed_at + self.timing.peer_claim_grace <= now:
            self._follow(now, entry, rival.claimant, rival.epoch, now, effects, announced=False)
        else:
            self._defer(now, entry, rival)

    def _defer(self, now: float, entry: Entry[SpecT], rival: PromotionClaim) -> None:
        """Stand down for a peer's recent claim, until its grace ends (then pre-read)."""
        self._release_request(entry)
        self._count("deferred")
        until = max(now, min(rival.claimed_at, now + self.timing.max_clock_skew))
        self._set(
            entry, Phase.DEFERRED, self._retry_at(entry, until + self.timing.peer_claim_grace)
        )
        entry.deferred = rival

    def _deferral_ended(
        self, now: float, entry: Entry[SpecT], effects: list[ElectionEffect]
    ) -> None:
        """The peer this slot deferred to let its claim go (its spawn failed).

        The next standby after the releaser goes at once (guarantee 2: a
        failed spawn lets the next standby go without waiting out its whole
        backoff); each one after it waits one ``promotion_delay`` more, so
        deferred standbys released together keep their order (failure mode
        21). A deferral's own end, if it comes first, still counts.
        """
        releaser = None if entry.deferred is None else entry.deferred.claimant
        ahead = None if releaser is None else entry.slot.peer_index(releaser)
        index = entry.slot.standby_index
        behind = index if ahead is None else max(index - ahead - 1, 0)
        at = now + promotion_delay(behind, self.timing.promotion_delay)
        if at <= now:
            self._preread(now, entry, effects)
        elif entry.deadline is None or at < entry.deadline:
            self._set(entry, Phase.DEFERRED, at)

    def _follow(
        self,
        now: float,
        entry: Entry[SpecT],
        new_primary: str,
        epoch: int,
        origin: float,
        effects: list[ElectionEffect],
        *,
        announced: bool,
    ) -> None:
        """Follow ``new_primary`` as the primary of ``epoch``, timed from ``origin``.

        A new primary that ``announced`` its promotion leaves the standby
        lineup: it holds no slot any more. One followed on the strength of
        its claim alone stays in the lineup: it never promoted as far as we
        know, so it may still stand by (and follow whoever takes over from
        it), and the standby that takes over must list it among its
        standbys, or believing itself unreplicated it would run the workload
        unbounded by a lease (failure mode 30).
        """
        self._withdraw(now, entry, effects)
        old = entry.slot
        lineup = [s for s in old.standbys(self.me) if not (announced and s == new_primary)]
        index = lineup.index(self.me)
        # The takeover's time is saved with the slot: a restarted follower
        # times the new primary's silence from it, not from the reservation
        # (failure mode 27).
        slot = attrs.evolve(
            old,
            primary=new_primary,
            epoch=epoch,
            standby_index=index,
            standby_count=len(lineup),
            peers=tuple(s for s in lineup if s != self.me),
            primary_since=max(origin, old.created_at),
        )
        self._index.leave_phase(entry)
        self._release_request(entry)
        # Re-file the entry under its new primary: it is in no set now, and
        # _watch (whose _leave_phase finds nothing of it under the new
        # primary) files it among the new primary's watchers.
        self._index.replace_slot(entry, slot)
        self._claims_seen.pop(slot.workload_id, None)
        entry.origin = slot.origin
        entry.revoked = False
        entry.state_uri = None
        entry.attempts = 0
        entry.rounds = 0
        entry.claim_failures = 0
        self._watch(entry)
        self._count("followed")
        effects.append(PrimaryChanged(slot.workload_id, old.primary, new_primary, epoch))
        effects.append(SlotSaved(slot))
