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
A slot in ``HOLD`` waits before resuming one of the phases above (retry
after a quorum shortfall, a timed-out claim or a failed spawn).
"""

from __future__ import annotations

import enum
import heapq
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Concatenate, Generic, TypeVar

import attrs
from typing_extensions import ParamSpec

from ._effects import (
    Announce,
    CompareAndSetClaim,
    Dropped,
    DropReason,
    ElectionEffect,
    PhaseChanged,
    PrimaryChanged,
    Promoted,
    PublishClaim,
    QueryClaims,
    QueryHeartbeats,
    QuorumShortfall,
    SlotRemoved,
    SlotSaved,
    Spawn,
    StopOrphan,
    WithdrawClaim,
)
from ._errors import InvalidSlot
from ._helpers import primary_is_silent, promotion_delay, silence_baseline
from ._models import (
    Envelope,
    Heartbeat,
    LeaseRevocation,
    PromotionAnnouncement,
    PromotionClaim,
    StandbySlot,
    fencing_token,
)
from ._phase import Phase
from ._timing import Timing

__all__ = ["TRANSITIONS", "IllegalTransition", "Phase", "SlotStatus", "StandbyElection"]

SpecT = TypeVar("SpecT")

_PRIMARY = 0
_SLOT = 1
_INF = float("inf")
#: At most this many workloads share one claims read (keeps requests and
#: answers well inside relay limits: filter sizes, result caps).
MAX_BATCH = 100
#: ``entry.request`` of a slot whose claims read is queued for the batch.
_QUEUED = 0

_P = ParamSpec("_P")
_ElectionT = TypeVar("_ElectionT", bound="StandbyElection[Any]")


def _batched(
    method: Callable[Concatenate[_ElectionT, _P], list[ElectionEffect]],
) -> Callable[Concatenate[_ElectionT, _P], list[ElectionEffect]]:
    """Emit the claims reads queued during ``method`` as batched effects."""

    def wrapper(self: _ElectionT, /, *args: _P.args, **kwargs: _P.kwargs) -> list[ElectionEffect]:
        changes = self._changes
        changes.clear()
        try:
            effects = method(self, *args, **kwargs)
            if self._queued_reads:
                self._flush_reads(effects)
            effects.extend(changes)
        finally:
            changes.clear()
        return effects

    wrapper.__doc__ = method.__doc__
    wrapper.__name__ = method.__name__
    wrapper.__qualname__ = method.__qualname__
    return wrapper


_W, _C, _H, _B = Phase.WATCHING, Phase.CONFIRMING, Phase.HOLD, Phase.BACKOFF
_PR, _CL, _SE, _RR = Phase.PREREAD, Phase.CLAIMING, Phase.SETTLING, Phase.REREAD
_SP, _DE = Phase.SPAWNING, Phase.DEFERRED

#: Every legal move of a slot: from a phase to the phases it may enter next.
#: ``None`` stands for "not in the table": a slot enters from ``None`` when it
#: is reserved or restored, and goes to ``None`` from any phase when it is
#: removed, expires or is promoted. Re-entering the same phase (a new
#: deadline) is not a move. The docs' state diagram is drawn from this table.
TRANSITIONS: Mapping[Phase | None, frozenset[Phase | None]] = MappingProxyType(
    {
        None: frozenset({_W}),
        _W: frozenset({_C, _B, None}),
        _C: frozenset({_W, _B, _H, None}),
        _H: frozenset({_W, _B, _PR, None}),
        _B: frozenset({_PR, _W, None}),
        _PR: frozenset({_CL, _DE, _H, _W, None}),
        _CL: frozenset({_SE, _SP, _DE, _H, _W, None}),
        _SE: frozenset({_RR, _W, None}),
        _RR: frozenset({_SP, _DE, _H, _W, None}),
        _SP: frozenset({_H, None}),
        _DE: frozenset({_PR, _W, None}),
    }
)


class _Request(enum.Enum):
    """The kinds of request a slot can have outstanding (``_requests``).

    Reads (heartbeats, claims) are batched and tracked apart, per primary.
    """

    PUBLISH = "publish"
    COMPARE_AND_SET = "compare-and-set"
    SPAWN = "spawn"


class IllegalTransition(RuntimeError):
    """Internal error: the machine tried a phase move that :data:`TRANSITIONS` forbids."""


def _name(phase: Phase | None) -> str:
    return "(not in the table)" if phase is None else phase.name


# Phases in which the slot has not spawned and may still step back when the
# primary turns out to be alive.
_PRE_SPAWN = frozenset(
    {Phase.HOLD, Phase.BACKOFF, Phase.PREREAD, Phase.CLAIMING, Phase.SETTLING, Phase.REREAD}
)


@attrs.frozen
class SlotStatus:
    """A read-only snapshot of one slot's election state."""

    workload_id: str
    primary: str
    epoch: int
    phase: Phase
    deadline: float | None
    revoked: bool
    spawn_attempts: int
    deferred_to: str | None


class _Entry(Generic[SpecT]):
    """Mutable per-slot runtime state (private)."""

    __slots__ = (
        "attempts",
        "claim",
        "claim_failures",
        "confirmed_baseline",
        "deadline",
        "deferred",
        "joined",
        "origin",
        "phase",
        "preread_at",
        "request",
        "resume",
        "revoked",
        "slot",
        "state_uri",
    )

    def __init__(self, slot: StandbySlot[SpecT], origin: float) -> None:
        self.slot = slot
        self.origin = origin
        self.phase = Phase.WATCHING
        self.deadline: float | None = None
        self.request: int | None = None
        self.revoked = False
        self.state_uri: str | None = None
        self.claim: PromotionClaim | None = None
        self.attempts = 0
        self.claim_failures = 0
        self.preread_at = 0.0
        self.resume = Phase.WATCHING
        self.deferred: PromotionClaim | None = None
        self.confirmed_baseline = 0.0
        self.joined = False


class StandbyElection(Generic[SpecT]):
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
        self.me = me
        self.timing = timing
        self.atomic_claims = atomic_claims
        self._entries: dict[str, _Entry[SpecT]] = {}
        self._slots: dict[str, StandbySlot[SpecT]] = {}
        self._last_hb: dict[str, float] = {}
        self._watchers: dict[str, set[str]] = {}
        self._busy: dict[str, set[str]] = {}
        #: Per primary, a heap of (origin, workload id) of its watching slots;
        #: entries of slots that stopped watching are dropped lazily.
        self._origins: dict[str, list[tuple[float, str]]] = {}
        self._pushed: dict[str, float] = {}
        self._heap: list[tuple[float, int, int, str]] = []
        self._expiry: list[tuple[float, str]] = []
        #: Publish, compare-and-set and spawn requests: request -> (kind, workload id).
        self._requests: dict[int, tuple[_Request, str]] = {}
        self._confirming: dict[int, tuple[str, tuple[str, ...]]] = {}
        #: Claims reads in flight: request -> (phase, workload ids).
        self._reading: dict[int, tuple[Phase, tuple[str, ...]]] = {}
        #: Claims reads queued during the current call, per (primary, phase).
        self._queued_reads: dict[tuple[str, Phase], list[_Entry[SpecT]]] = {}
        self._abandoned: dict[int, tuple[str, int]] = {}
        self._promoted: dict[str, float] = {}
        self._claims_seen: dict[str, dict[str, PromotionClaim]] = {}
        self._seq = 0
        self._next_request = 0
        #: Phase moves made during the current call, reported at its end.
        self._changes: list[PhaseChanged] = []
        self.counters: dict[str, int] = {}

    # ------------------------------------------------------------------
    # Table management
    # ------------------------------------------------------------------

    @property
    def slots(self) -> Mapping[str, StandbySlot[SpecT]]:
        """The current slot table (read-only view), keyed by workload id."""
        return MappingProxyType(self._slots)

    def status(self, workload_id: str) -> SlotStatus:
        """Snapshot of one slot; ``KeyError`` when it is not in the table."""
        entry = self._entries[workload_id]
        deadline = entry.deadline
        if entry.phase is Phase.WATCHING:
            deadline = self._watch_deadline(entry)
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
        entry = self._entries.get(workload_id)
        return None if entry is None else entry.phase

    def last_heartbeat(self, primary: str) -> float | None:
        """Newest accepted heartbeat timestamp of ``primary``, if any."""
        return self._last_hb.get(primary)

    @_batched
    def reserve(self, now: float, slot: StandbySlot[SpecT]) -> list[ElectionEffect]:
        """Add a slot (or renew one that is still only watching).

        Raises :class:`InvalidSlot` for a slot that already expired, one this
        process already promoted, or one whose promotion is under way.
        """
        effects: list[ElectionEffect] = []
        self._sweep(now, effects)
        if slot.expires_at <= now:
            raise InvalidSlot(
                f"slot {slot.workload_id!r} expired at {slot.expires_at}, "
                f"which is not after now={now}"
            )
        if slot.workload_id in self._promoted:
            raise InvalidSlot(f"workload {slot.workload_id!r} was already promoted by this process")
        existing = self._entries.get(slot.workload_id)
        if existing is not None:
            if existing.phase not in (Phase.WATCHING, Phase.HOLD) or existing.revoked:
                raise InvalidSlot(
                    f"slot {slot.workload_id!r} is {existing.phase.value}: cannot replace it now"
                )
            self._discard(existing)
        self._add(slot, slot.created_at)
        effects.append(SlotSaved(slot))
        return effects

    @_batched
    def restore(self, now: float, slots: Iterable[StandbySlot[SpecT]]) -> list[ElectionEffect]:
        """Load slots persisted before a restart; expired ones are dropped and reported."""
        effects: list[ElectionEffect] = []
        self._sweep(now, effects)
        for slot in slots:
            if slot.expires_at <= now:
                self._count("expired_on_restore")
                effects.append(SlotRemoved(slot.workload_id, "expired"))
                continue
            existing = self._entries.get(slot.workload_id)
            if existing is not None:
                self._discard(existing)
            self._add(slot, slot.created_at)
        return effects

    @_batched
    def remove(self, now: float, workload_id: str) -> list[ElectionEffect]:
        """Drop a slot on the host's request (e.g. the consumer cancelled)."""
        effects: list[ElectionEffect] = []
        self._sweep(now, effects)
        entry = self._entries.get(workload_id)
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
        heap = self._heap
        while heap:
            at, _, kind, key = heap[0]
            if kind == _PRIMARY:
                if self._pushed.get(key) != at or not self._watchers.get(key):
                    heapq.heappop(heap)
                    if self._pushed.get(key) == at:
                        del self._pushed[key]
                    continue
                actual = self._primary_deadline(key)
                if actual > at:
                    heapq.heappop(heap)
                    del self._pushed[key]
                    self._push_primary(key, actual)
                    continue
            else:
                entry = self._entries.get(key)
                if entry is None or entry.deadline != at:
                    heapq.heappop(heap)
                    continue
            break
        expiry = self._expiry
        while expiry and not self._expiry_live(*expiry[0]):
            heapq.heappop(expiry)
        best = heap[0][0] if heap else _INF
        if expiry and expiry[0][0] < best:
            best = expiry[0][0]
        return None if best == _INF else best

    @_batched
    def tick(self, now: float) -> list[ElectionEffect]:
        """Handle every deadline that is due at ``now``."""
        effects: list[ElectionEffect] = []
        self._sweep(now, effects)
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, _, kind, key = heapq.heappop(heap)
            if kind == _PRIMARY:
                if self._pushed.get(key) != at:
                    continue
                del self._pushed[key]
                self._primary_due(now, key, effects)
            else:
                entry = self._entries.get(key)
                if entry is None or entry.deadline != at:
                    continue
                entry.deadline = None
                self._slot_due(now, entry, effects)
        return effects

    # ------------------------------------------------------------------
    # Inputs from the network
    # ------------------------------------------------------------------

    @_batched
    def on_message(self, now: float, envelope: Envelope[Any]) -> list[ElectionEffect]:
        """Feed one authenticated message from a subscription."""
        effects: list[ElectionEffect] = []
        if self._expiry and self._expiry[0][0] <= now:
            self._sweep(now, effects)
        message = envelope.message
        if isinstance(message, Heartbeat):
            self._heartbeat(now, envelope.signer, message.timestamp, effects)
        elif isinstance(message, LeaseRevocation):
            self._revocation(now, envelope.signer, message, effects)
        elif isinstance(message, PromotionClaim):
            self._peer_claim(now, envelope.signer, message, effects)
        elif isinstance(message, PromotionAnnouncement):
            self._announcement(now, envelope.signer, message, effects)
        else:
            raise TypeError(f"not a standby message: {message!r}")
        return effects

    @_batched
    def heartbeats_queried(
        self,
        now: float,
        request_id: int,
        results: Sequence[Envelope[Any]],
        answered: Iterable[str],
    ) -> list[ElectionEffect]:
        """Report the result of a :class:`~standby.QueryHeartbeats`."""
        effects: list[ElectionEffect] = []
        self._sweep(now, effects)
        pending = self._confirming.pop(request_id, None)
        if pending is None:
            self._late(request_id, effects)
            return effects
        primary, workload_ids = pending
        for envelope in results:
            message = envelope.message
            if isinstance(message, Heartbeat):
                self._heartbeat(now, envelope.signer, message.timestamp, effects)
            elif isinstance(message, LeaseRevocation):
                self._revocation(now, envelope.signer, message, effects)
        entries = [
            e
            for wid in workload_ids
            if (e := self._entries.get(wid)) is not None
            and e.phase is Phase.CONFIRMING
            and e.request == request_id
        ]
        count = len(set(answered))
        if count < self.timing.read_quorum:
            self._confirm_failed(now, entries, count, effects)
            return effects
        last = self._last_hb.get(primary)
        for entry in entries:
            baseline = silence_baseline(entry.origin, last)
            if primary_is_silent(now, baseline, self.timing.silence):
                entry.confirmed_baseline = baseline
                self._count("silence_confirmed")
                self._backoff(now, entry)
            else:
                self._watch(entry)
        return effects

    @_batched
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
        effects: list[ElectionEffect] = []
        self._sweep(now, effects)
        pending = self._reading.pop(request_id, None)
        if pending is None:
            self._late(request_id, effects)
            return effects
        phase, workload_ids = pending
        entries = [
            e
            for wid in workload_ids
            if (e := self._entries.get(wid)) is not None
            and e.phase is phase
            and e.request == request_id
        ]
        if not entries:
            self._late(request_id, effects)
            return effects
        for entry in entries:
            entry.request = None
        for envelope in results:
            message = envelope.message
            if isinstance(message, PromotionAnnouncement):
                self._announcement(now, envelope.signer, message, effects)
            elif isinstance(message, PromotionClaim):
                self._peer_claim(now, envelope.signer, message, effects)
        count = len(set(answered))
        for entry in entries:
            self._claims_read(now, entry, phase, count, effects)
        return effects

    def _claims_read(
        self,
        now: float,
        entry: _Entry[SpecT],
        phase: Phase,
        count: int,
        effects: list[ElectionEffect],
    ) -> None:
        """One slot's share of a claims read: the per-workload rule of guarantee 2."""
        if self._entries.get(entry.slot.workload_id) is not entry or entry.phase is not phase:
            return  # an announcement moved the slot on
        rereading = phase is Phase.REREAD
        if count < self.timing.read_quorum:
            stage = "reread" if rereading else "preread"
            self._claims_read_failed(now, entry, stage, count, effects)
            return
        rival = self._strongest_rival(entry, rereading)
        if rival is not None:
            self._withdraw(now, entry, effects)
            if rival.claimed_at + self.timing.peer_claim_grace <= now:
                # The rival claimed long ago and never announced: treat it as the
                # primary of that epoch, so its own silence can be detected.
                self._follow(now, entry, rival.claimant, rival.epoch, now, effects)
            else:
                self._defer(now, entry, rival)
            return
        if rereading:
            self._spawn(now, entry, effects)
        elif now >= entry.preread_at + self.timing.claim_timeout:
            self._hold(now, entry, self.timing.retry_interval, Phase.PREREAD)
        else:
            self._claim(now, entry, effects)

    @_batched
    def claim_published(
        self, now: float, request_id: int, acknowledged: Iterable[str]
    ) -> list[ElectionEffect]:
        """Report which relays acknowledged a :class:`~standby.PublishClaim`."""
        effects: list[ElectionEffect] = []
        self._sweep(now, effects)
        entry = self._take_request(request_id, _Request.PUBLISH, effects)
        if entry is None:
            return effects
        acks = len(set(acknowledged))
        in_time = now <= entry.preread_at + self.timing.claim_timeout
        if acks >= self.timing.write_quorum and in_time:
            self._set(entry, Phase.SETTLING, now + self.timing.claim_settle)
            return effects
        self._claim_failed(now, entry, acks, effects)
        return effects

    @_batched
    def claim_compared(
        self, now: float, request_id: int, won: bool, holder: PromotionClaim | None = None
    ) -> list[ElectionEffect]:
        """Report the outcome of a :class:`~standby.CompareAndSetClaim`.

        ``holder`` is the claim that holds the epoch when this one lost.
        """
        effects: list[ElectionEffect] = []
        self._sweep(now, effects)
        entry = self._take_request(request_id, _Request.COMPARE_AND_SET, effects)
        if entry is None:
            return effects
        if won:
            self._spawn(now, entry, effects)
            return effects
        entry.claim = None
        if holder is not None and entry.slot.peer_index(holder.claimant) is not None:
            self._defer(now, entry, holder)
        else:
            self._hold(now, entry, self.timing.retry_interval, Phase.PREREAD)
        return effects

    @_batched
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
        kind_key = self._requests.get(request_id)
        entry = None
        if kind_key is not None and kind_key[0] is _Request.SPAWN:
            del self._requests[request_id]
            entry = self._entries.get(kind_key[1])
        if entry is None or entry.request != request_id:
            self._late(request_id, effects)
            return effects
        entry.request = None
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
            effects.append(
                StopOrphan(
                    slot.workload_id, claim.fencing_token, "spawn outlived the claim's lease"
                )
            )
            self._spawn_failed(now, entry, effects)
        elif ok:
            self._count("promoted")
            self._discard(entry)
            self._promoted[slot.workload_id] = slot.expires_at
            heapq.heappush(self._expiry, (slot.expires_at, slot.workload_id))
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
        else:
            self._count("spawn_failed")
            self._spawn_failed(now, entry, effects)
        self._sweep(now, effects)
        return effects

    # ------------------------------------------------------------------
    # Internals: bookkeeping
    # ------------------------------------------------------------------

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def _late(self, request_id: int, effects: list[ElectionEffect]) -> None:
        self._count("late_result")
        effects.append(Dropped(DropReason.LATE_RESULT, None, None, f"request {request_id}"))

    def _new_request(self, kind: _Request, workload_id: str) -> int:
        self._next_request += 1
        self._requests[self._next_request] = (kind, workload_id)
        return self._next_request

    def _take_request(
        self, request_id: int, kind: _Request, effects: list[ElectionEffect]
    ) -> _Entry[SpecT] | None:
        found = self._requests.get(request_id)
        if found is None or found[0] is not kind:
            self._late(request_id, effects)
            return None
        del self._requests[request_id]
        entry = self._entries.get(found[1])
        if entry is None or entry.request != request_id:
            self._late(request_id, effects)
            return None
        entry.request = None
        return entry

    def _add(self, slot: StandbySlot[SpecT], origin: float) -> None:
        entry = _Entry(slot, origin)
        self._moved(slot.workload_id, None, Phase.WATCHING, revoked=False)
        self._entries[slot.workload_id] = entry
        self._slots[slot.workload_id] = slot
        heapq.heappush(self._expiry, (slot.expires_at, slot.workload_id))
        self._watch(entry)

    def _discard(self, entry: _Entry[SpecT]) -> None:
        workload_id = entry.slot.workload_id
        self._leave_phase(entry)
        self._release_request(entry)
        entry.deadline = None
        self._moved(workload_id, entry.phase, None, revoked=entry.revoked)
        del self._entries[workload_id]
        del self._slots[workload_id]
        self._claims_seen.pop(workload_id, None)

    def _release_request(self, entry: _Entry[SpecT]) -> None:
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
            # Left in the batch: claims_queried skips a slot whose request moved on.
            reading = self._reading.get(request)
            if reading is not None and all(
                (e := self._entries.get(w)) is None or e is entry or e.request != request
                for w in reading[1]
            ):
                del self._reading[request]
        else:
            self._requests.pop(request, None)

    def _expiry_live(self, at: float, workload_id: str) -> bool:
        entry = self._entries.get(workload_id)
        if entry is not None:
            return entry.slot.expires_at == at and entry.phase is not Phase.SPAWNING
        return self._promoted.get(workload_id) == at

    def _sweep(self, now: float, effects: list[ElectionEffect]) -> None:
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:
            at, workload_id = heapq.heappop(expiry)
            if self._promoted.get(workload_id) == at:
                del self._promoted[workload_id]
            entry = self._entries.get(workload_id)
            if entry is None or entry.slot.expires_at != at:
                continue
            if entry.phase is Phase.SPAWNING:
                # Settled when the spawn reports back: a container that started
                # after its slot expired is stopped, never promoted.
                continue
            self._expire(now, entry, effects)

    def _expire(self, now: float, entry: _Entry[SpecT], effects: list[ElectionEffect]) -> None:
        self._count("expired")
        self._withdraw(now, entry, effects)
        self._discard(entry)
        effects.append(SlotRemoved(entry.slot.workload_id, "expired"))

    # ------------------------------------------------------------------
    # Internals: phases and deadlines
    # ------------------------------------------------------------------

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

    def _primary_deadline(self, primary: str) -> float:
        origin = self._min_watch_origin(primary)
        if origin is None:
            return _INF
        return self._silent_from(silence_baseline(origin, self._last_hb.get(primary)))

    def _origin_live(self, primary: str, origin: float, workload_id: str) -> bool:
        entry = self._entries.get(workload_id)
        return (
            entry is not None
            and entry.phase is Phase.WATCHING
            and entry.origin == origin
            and entry.slot.primary == primary
        )

    def _min_watch_origin(self, primary: str) -> float | None:
        """The earliest origin among ``primary``'s watching slots (amortised O(log n))."""
        heap = self._origins.get(primary)
        while heap:
            origin, workload_id = heap[0]
            if self._origin_live(primary, origin, workload_id):
                return origin
            heapq.heappop(heap)
        return None

    def _watch_deadline(self, entry: _Entry[SpecT]) -> float:
        last = self._last_hb.get(entry.slot.primary)
        return self._silent_from(silence_baseline(entry.origin, last))

    def _push_primary(self, primary: str, at: float) -> None:
        current = self._pushed.get(primary)
        if current is not None and current <= at:
            return
        self._pushed[primary] = at
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, _PRIMARY, primary))

    def _leave_phase(self, entry: _Entry[SpecT]) -> None:
        primary = entry.slot.primary
        workload_id = entry.slot.workload_id
        if entry.phase is Phase.WATCHING:
            watchers = self._watchers.get(primary)
            if watchers is not None:
                watchers.discard(workload_id)
                if not watchers:
                    del self._watchers[primary]
                    self._origins.pop(primary, None)
            # Its origin stays in the heap until it reaches the top (lazy removal).
        else:
            busy = self._busy.get(primary)
            if busy is not None:
                busy.discard(workload_id)
                if not busy:
                    del self._busy[primary]

    def _watch(self, entry: _Entry[SpecT]) -> None:
        self._leave_phase(entry)
        self._release_request(entry)
        self._enter(entry, Phase.WATCHING)
        entry.deadline = None
        entry.deferred = None
        primary = entry.slot.primary
        watchers = self._watchers.setdefault(primary, set())
        watchers.add(entry.slot.workload_id)
        heap = self._origins.setdefault(primary, [])
        heapq.heappush(heap, (entry.origin, entry.slot.workload_id))
        if len(heap) > 2 * len(watchers) + 16:
            # Too many stale entries: rebuild (amortised O(1) per push).
            entries = self._entries
            heap[:] = [(entries[w].origin, w) for w in watchers]
            heapq.heapify(heap)
        self._push_primary(primary, self._primary_deadline(primary))

    def _enter(self, entry: _Entry[SpecT], new: Phase) -> None:
        """The one place a slot in the table changes phase (checked, reported)."""
        old = entry.phase
        if old is not new:
            self._moved(entry.slot.workload_id, old, new, revoked=entry.revoked)
            entry.phase = new

    def _moved(
        self, workload_id: str, old: Phase | None, new: Phase | None, *, revoked: bool
    ) -> None:
        """Check one move against :data:`TRANSITIONS` and queue its report."""
        if new not in TRANSITIONS[old]:
            raise IllegalTransition(
                f"slot {workload_id!r}: no move from {_name(old)} to {_name(new)} "
                "in TRANSITIONS (a bug in the election machine)"
            )
        self._changes.append(PhaseChanged(workload_id, old, new, revoked))

    def _set(self, entry: _Entry[SpecT], phase: Phase, deadline: float) -> None:
        """Move to a phase with a per-slot deadline (anything but WATCHING)."""
        if entry.phase is Phase.WATCHING:
            self._leave_phase(entry)
            self._busy.setdefault(entry.slot.primary, set()).add(entry.slot.workload_id)
        self._enter(entry, phase)
        entry.deadline = deadline
        self._seq += 1
        heapq.heappush(self._heap, (deadline, self._seq, _SLOT, entry.slot.workload_id))

    def _hold(self, now: float, entry: _Entry[SpecT], wait: float, resume: Phase) -> None:
        if resume is Phase.PREREAD:
            # Every retry of a promotion keeps the standby order (failure mode
            # 21): standby i waits its index backoff on top of the retry wait,
            # so after a shortfall standby 0 still goes first.
            wait += promotion_delay(entry.slot.standby_index, self.timing.promotion_delay)
        self._release_request(entry)
        entry.resume = resume
        self._set(entry, Phase.HOLD, now + wait)

    def _backoff(self, now: float, entry: _Entry[SpecT]) -> None:
        self._release_request(entry)
        delay = promotion_delay(entry.slot.standby_index, self.timing.promotion_delay)
        self._set(entry, Phase.BACKOFF, now + delay)

    def _primary_due(self, now: float, primary: str, effects: list[ElectionEffect]) -> None:
        watchers = self._watchers.get(primary)
        if not watchers:
            return
        last = self._last_hb.get(primary)
        silence = self.timing.silence
        entries = self._entries
        # Oldest origin first: the due slots are a prefix of the origin heap.
        heap = self._origins.get(primary, [])
        due: list[_Entry[SpecT]] = []
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
            due.append(entries[wid])
        if due:
            self._next_request += 1
            request = self._next_request
            wait = now + 2 * self.timing.query_timeout
            for entry in due:
                self._set(entry, Phase.CONFIRMING, wait)
                entry.request = request
            workload_ids = tuple(sorted(e.slot.workload_id for e in due))
            self._confirming[request] = (primary, workload_ids)
            since = silence_baseline(min(e.origin for e in due), last)
            effects.append(QueryHeartbeats(request, primary, workload_ids, since))
        if self._watchers.get(primary):
            self._push_primary(primary, self._primary_deadline(primary))

    def _slot_due(self, now: float, entry: _Entry[SpecT], effects: list[ElectionEffect]) -> None:
        phase = entry.phase
        if phase is Phase.CONFIRMING:
            self._confirm_failed(now, [entry], 0, effects)
        elif phase is Phase.HOLD:
            if entry.resume is Phase.PREREAD:
                self._preread(now, entry, effects)
            elif entry.revoked:
                self._backoff(now, entry)
            else:
                self._watch(entry)
        elif phase in (Phase.BACKOFF, Phase.DEFERRED):
            self._preread(now, entry, effects)
        elif phase in (Phase.PREREAD, Phase.REREAD):
            self._claims_read_failed(now, entry, phase.value, 0, effects)
        elif phase is Phase.CLAIMING:
            self._claim_failed(now, entry, 0, effects)
        elif phase is Phase.SETTLING:
            self._settled(now, entry, effects)
        elif phase is Phase.SPAWNING:
            self._count("spawn_timeout")
            self._spawn_failed(now, entry, effects)

    def _settled(self, now: float, entry: _Entry[SpecT], effects: list[ElectionEffect]) -> None:
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
            for workload_id in self._busy.get(primary, ()):
                other = self._entries[workload_id]
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
        self, now: float, entry: _Entry[SpecT], phase: Phase, effects: list[ElectionEffect]
    ) -> None:
        self._release_request(entry)
        self._set(entry, phase, now + 2 * self.timing.query_timeout)
        entry.request = _QUEUED
        self._queued_reads.setdefault((entry.slot.primary, phase), []).append(entry)

    def _flush_reads(self, effects: list[ElectionEffect]) -> None:
        """One claims read per primary and step (at most MAX_BATCH workloads each)."""
        queued, self._queued_reads = self._queued_reads, {}
        for (_, phase), group in queued.items():
            live = [
                e
                for e in group
                if self._entries.get(e.slot.workload_id) is e
                and e.phase is phase
                and e.request == _QUEUED
            ]
            for first in range(0, len(live), MAX_BATCH):
                chunk = live[first : first + MAX_BATCH]
                self._next_request += 1
                request = self._next_request
                workload_ids = tuple(e.slot.workload_id for e in chunk)
                for entry in chunk:
                    entry.request = request
                self._reading[request] = (phase, workload_ids)
                self._count("claims_reads")
                effects.append(QueryClaims(request, workload_ids[0], workload_ids))

    def _preread(self, now: float, entry: _Entry[SpecT], effects: list[ElectionEffect]) -> None:
        if not entry.revoked:
            baseline = silence_baseline(entry.origin, self._last_hb.get(entry.slot.primary))
            if not primary_is_silent(now, baseline, self.timing.silence):
                # The primary spoke while we were deferring or spawning: never
                # claim without a revocation or a full silence.
                self._count("rearmed_by_heartbeat")
                entry.attempts = 0
                entry.claim_failures = 0
                self._watch(entry)
                return
        entry.deferred = None
        entry.preread_at = now
        self._query_claims(now, entry, Phase.PREREAD, effects)

    def _claim(self, now: float, entry: _Entry[SpecT], effects: list[ElectionEffect]) -> None:
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
            request = self._new_request(_Request.COMPARE_AND_SET, slot.workload_id)
            effects.append(CompareAndSetClaim(request, claim))
        else:
            request = self._new_request(_Request.PUBLISH, slot.workload_id)
            effects.append(PublishClaim(request, claim))
        self._set(entry, Phase.CLAIMING, entry.preread_at + self.timing.claim_timeout)
        entry.request = request

    def _spawn(self, now: float, entry: _Entry[SpecT], effects: list[ElectionEffect]) -> None:
        claim = entry.claim
        assert claim is not None
        slot = entry.slot
        request = self._new_request(_Request.SPAWN, slot.workload_id)
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

    def _spawn_failed(
        self, now: float, entry: _Entry[SpecT], effects: list[ElectionEffect]
    ) -> None:
        self._release_request(entry)  # a spawn still running is remembered as abandoned
        if entry.slot.expires_at <= now:
            self._expire(now, entry, effects)
            return
        self._withdraw(now, entry, effects)
        entry.attempts += 1
        if entry.attempts < self.timing.max_spawn_attempts:
            wait = self.timing.spawn_retry_backoff * 2 ** (entry.attempts - 1)
        else:
            # Out of quick retries: fall back to a whole silence window.
            entry.attempts = 0
            wait = self.timing.silence
        self._hold(now, entry, wait, Phase.PREREAD)

    def _shortfall(
        self, stage: str, entries: Sequence[_Entry[SpecT]], answered: int, needed: int
    ) -> QuorumShortfall:
        self._count("claim_failed" if stage == "claim" else "quorum_shortfall")
        return QuorumShortfall(stage, tuple(e.slot.workload_id for e in entries), answered, needed)

    def _confirm_failed(
        self,
        now: float,
        entries: Sequence[_Entry[SpecT]],
        answered: int,
        effects: list[ElectionEffect],
    ) -> None:
        """Too few relays answered the confirmation: not silence; watch again later."""
        effects.append(self._shortfall("confirm", entries, answered, self.timing.read_quorum))
        for entry in entries:
            self._hold(now, entry, self.timing.retry_interval, Phase.WATCHING)

    def _claims_read_failed(
        self,
        now: float,
        entry: _Entry[SpecT],
        stage: str,
        answered: int,
        effects: list[ElectionEffect],
    ) -> None:
        """A claims read missed its quorum: withdraw any claim and pre-read again later."""
        effects.append(self._shortfall(stage, [entry], answered, self.timing.read_quorum))
        self._withdraw(now, entry, effects)
        self._hold(now, entry, self.timing.retry_interval, Phase.PREREAD)

    def _claim_failed(
        self, now: float, entry: _Entry[SpecT], acks: int, effects: list[ElectionEffect]
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
        self._hold(now, entry, wait, Phase.PREREAD)

    def _withdraw(self, now: float, entry: _Entry[SpecT], effects: list[ElectionEffect]) -> None:
        claim = entry.claim
        if claim is None:
            return
        entry.claim = None
        claimed_at = max(now, claim.claimed_at)
        effects.append(WithdrawClaim(attrs.evolve(claim, withdrawn=True, claimed_at=claimed_at)))

    def _defer(self, now: float, entry: _Entry[SpecT], rival: PromotionClaim) -> None:
        self._release_request(entry)
        self._count("deferred")
        until = max(now, min(rival.claimed_at, now + self.timing.max_clock_skew))
        self._set(entry, Phase.DEFERRED, until + self.timing.peer_claim_grace)
        entry.deferred = rival

    def _follow(
        self,
        now: float,
        entry: _Entry[SpecT],
        new_primary: str,
        epoch: int,
        origin: float,
        effects: list[ElectionEffect],
    ) -> None:
        self._withdraw(now, entry, effects)
        old = entry.slot
        lineup = [s for s in old.standbys(self.me) if s != new_primary]
        index = lineup.index(self.me)
        slot = attrs.evolve(
            old,
            primary=new_primary,
            epoch=epoch,
            standby_index=index,
            standby_count=len(lineup),
            peers=tuple(s for s in lineup if s != self.me),
        )
        self._leave_phase(entry)
        self._release_request(entry)
        # Re-file the entry under its new primary: it is in no set now, and
        # _watch (whose _leave_phase finds nothing of it under the new
        # primary) files it among the new primary's watchers.
        entry.slot = slot
        self._slots[slot.workload_id] = slot
        self._claims_seen.pop(slot.workload_id, None)
        entry.origin = max(origin, slot.created_at)
        entry.revoked = False
        entry.state_uri = None
        entry.attempts = 0
        entry.claim_failures = 0
        self._watch(entry)
        self._count("followed")
        effects.append(PrimaryChanged(slot.workload_id, old.primary, new_primary, epoch))
        effects.append(SlotSaved(slot))

    def _strongest_rival(self, entry: _Entry[SpecT], rereading: bool) -> PromotionClaim | None:
        """The held peer claim this slot must yield to, if any.

        Before claiming (pre-read) any held claim on our target epoch or a later
        one wins. At the settle re-read, a later epoch wins, and on our own epoch
        the lower standby index wins (the tie rule).
        """
        seen = self._claims_seen.get(entry.slot.workload_id)
        if not seen:
            return None
        slot = entry.slot
        target = slot.epoch + 1
        best: tuple[int, int] | None = None
        winner: PromotionClaim | None = None
        for signer, claim in seen.items():
            if claim.withdrawn or claim.epoch < target:
                continue
            index = slot.peer_index(signer)
            if index is None:
                continue
            if rereading and claim.epoch == target and index > slot.standby_index:
                continue
            rank = (-claim.epoch, index)
            if best is None or rank < best:
                best, winner = rank, claim
        return winner

    # ------------------------------------------------------------------
    # Internals: messages
    # ------------------------------------------------------------------

    def _heartbeat(
        self, now: float, signer: str, timestamp: float, effects: list[ElectionEffect]
    ) -> None:
        last = self._last_hb.get(signer)
        if last is not None and timestamp <= last:
            return
        busy = self._busy.get(signer)
        if busy is None and signer not in self._watchers:
            return  # not the primary of any slot here
        if timestamp > now + self.timing.max_clock_skew:
            self._count("future_dated")
            effects.append(
                Dropped(
                    DropReason.FUTURE_DATED,
                    None,
                    signer,
                    f"heartbeat stamped {timestamp} is beyond now={now} + "
                    f"max_clock_skew={self.timing.max_clock_skew}",
                )
            )
            return
        self._last_hb[signer] = timestamp
        if busy:
            silence = self.timing.silence
            for workload_id in list(busy):
                entry = self._entries[workload_id]
                if entry.revoked or entry.phase not in _PRE_SPAWN:
                    continue
                if entry.phase is Phase.HOLD and entry.resume is Phase.WATCHING:
                    continue
                baseline = silence_baseline(entry.origin, timestamp)
                if baseline > entry.confirmed_baseline and not primary_is_silent(
                    now, baseline, silence
                ):
                    self._count("rearmed_by_heartbeat")
                    self._withdraw(now, entry, effects)
                    entry.attempts = 0
                    entry.claim_failures = 0
                    self._watch(entry)

    def _revocation(
        self, now: float, signer: str, revocation: LeaseRevocation, effects: list[ElectionEffect]
    ) -> None:
        workload_id = revocation.workload_id
        entry = self._entries.get(workload_id)

        def drop(reason: DropReason, detail: str) -> None:
            self._count(f"revocation_{reason.name.lower()}")
            effects.append(Dropped(reason, workload_id, signer, detail))

        if entry is None:
            drop(DropReason.UNKNOWN_WORKLOAD, "no slot for this workload")
            return
        slot = entry.slot
        if signer != slot.primary:
            drop(DropReason.WRONG_SIGNER, f"signed by {signer!r}, the primary is {slot.primary!r}")
            return
        if revocation.epoch != slot.epoch:
            drop(DropReason.WRONG_EPOCH, f"epoch {revocation.epoch}, the slot is at {slot.epoch}")
            return
        skew = self.timing.max_clock_skew
        if revocation.revoked_at > now + skew:
            drop(
                DropReason.FUTURE_DATED, f"revoked_at={revocation.revoked_at} > now={now} + {skew}"
            )
            return
        if revocation.revoked_at < entry.origin - skew:
            drop(DropReason.STALE, f"revoked_at={revocation.revoked_at} predates the slot")
            return
        if entry.revoked:
            drop(DropReason.DUPLICATE, "already revoked")
            return
        entry.revoked = True
        entry.state_uri = revocation.state_uri
        self._count("revoked")
        if entry.phase in (Phase.WATCHING, Phase.CONFIRMING) or (
            entry.phase is Phase.HOLD and entry.resume is Phase.WATCHING
        ):
            self._backoff(now, entry)

    def _peer_claim(
        self, now: float, signer: str, claim: PromotionClaim, effects: list[ElectionEffect]
    ) -> None:
        if signer == self.me:
            return
        entry = self._entries.get(claim.workload_id)
        if entry is None or signer == entry.slot.primary:
            return  # the current primary's own (old) claim is no news
        if entry.slot.peer_index(signer) is None:
            self._count("claim_not_a_peer")
            effects.append(
                Dropped(DropReason.NOT_A_PEER, claim.workload_id, signer, "claim from a stranger")
            )
            return
        if claim.claimant != signer:
            claim = attrs.evolve(claim, claimant=signer)
        seen = self._claims_seen.setdefault(claim.workload_id, {})
        known = seen.get(signer)
        if known is not None and (
            claim.claimed_at < known.claimed_at
            or (claim.claimed_at == known.claimed_at and known.withdrawn)
        ):
            return
        seen[signer] = claim
        deferred = entry.deferred
        if (
            entry.phase is Phase.DEFERRED
            and deferred is not None
            and deferred.claimant == signer
            and claim.withdrawn
            and claim.epoch == deferred.epoch
        ):
            # The peer's spawn failed and it let go: try at once.
            self._preread(now, entry, effects)

    def _announcement(
        self,
        now: float,
        signer: str,
        announcement: PromotionAnnouncement,
        effects: list[ElectionEffect],
    ) -> None:
        if signer == self.me:
            return
        entry = self._entries.get(announcement.workload_id)
        if entry is None:
            return
        slot = entry.slot
        if signer == slot.primary and (
            announcement.epoch is None or announcement.epoch <= slot.epoch
        ):
            # Another copy (one per relay) of the announcement we already followed.
            self._count("announcement_duplicate")
            effects.append(
                Dropped(DropReason.DUPLICATE, slot.workload_id, signer, "already following")
            )
            return
        if slot.peer_index(signer) is None:
            self._count("announcement_not_a_peer")
            effects.append(
                Dropped(
                    DropReason.NOT_A_PEER, slot.workload_id, signer, "announcement from a stranger"
                )
            )
            return
        epoch = slot.epoch + 1 if announcement.epoch is None else announcement.epoch
        if epoch <= slot.epoch:
            effects.append(
                Dropped(DropReason.STALE, slot.workload_id, signer, f"announces epoch {epoch}")
            )
            return
        if entry.phase is Phase.SPAWNING:
            self._count("conflict")
            effects.append(
                Dropped(
                    DropReason.CONFLICT,
                    slot.workload_id,
                    signer,
                    f"peer announced epoch {epoch} while this standby is spawning",
                )
            )
            return
        skew = self.timing.max_clock_skew
        origin = min(announcement.promoted_at, now + skew)
        self._follow(now, entry, signer, epoch, origin, effects)
