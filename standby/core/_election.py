"""The standby side: a sans-I/O election machine for many reserved slots.

``StandbyElection`` keeps this provider's table of reserved slots and decides,
for each one, when the primary counts as silent and when this standby may
promote. It never reads a clock or does I/O: every call takes ``now`` (Unix
seconds, this host's wall clock) and returns a list of effects; the driver
calls :meth:`StandbyElection.tick` no later than :meth:`next_deadline`.

Life of a slot (``Phase``): :data:`TRANSITIONS` lists every legal move, and
every move goes through one checked step that reports it as a
:class:`~standby.core.PhaseChanged` effect. In short: ``WATCHING`` until the
primary's silence deadline, ``CONFIRMING`` the silence with a quorum read,
``BACKOFF`` by standby index (a revocation skips straight here), then the
claim protocol ``PREREAD`` -> ``CLAIMING`` -> ``SETTLING`` -> ``REREAD`` ->
``SPAWNING``, after which the promoted slot leaves the table. A peer's claim
sends the slot to ``DEFERRED``; a live primary sends it back to ``WATCHING``.
A slot in ``RETRY_WATCH`` waits before watching again (its confirmation
missed the read quorum); one in ``RETRY_CLAIM`` waits before pre-reading
again (a claims read or a claim missed its quorum or deadline, or a spawn
failed).

One module, one machine: the rules that decide a single question (is this
heartbeat news, which rival claim wins, when does a slot retry, how long
after a failure) are the pure functions at the top; the machine below holds
the state, takes the public calls and the network's inputs, and makes every
move through :meth:`StandbyElection._enter`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Concatenate, Generic, Protocol, TypeVar

import attrs
from typing_extensions import ParamSpec

from ._admission import IN_FLIGHT, ClaimAdmission, initial_claim_window
from ._claim_reads import MAX_BATCH, ClaimReads
from ._effects import (
    Announce,
    CannotStart,
    CompareAndSetClaim,
    Dropped,
    DropReason,
    ElectionEffect,
    PhaseChanged,
    PrimaryChanged,
    Promoted,
    PublishClaim,
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
from ._slot_entry import Entry, Request, SlotStatus
from ._slot_index import SlotIndex
from ._timing import Timing
from ._transitions import (
    ON_DEADLINE,
    ON_INPUT,
    TRANSITIONS,
    IllegalTransition,
    Input,
    Step,
    checked_move,
)

__all__ = [
    "MAX_BATCH",
    "TRANSITIONS",
    "IllegalTransition",
    "Phase",
    "SlotStatus",
    "StandbyElection",
]

SpecT = TypeVar("SpecT")

#: Every kind of message a subscription may deliver.
MESSAGES: tuple[type[Any], ...] = (
    Heartbeat,
    LeaseRevocation,
    PromotionClaim,
    PromotionAnnouncement,
)
#: The messages a heartbeat read (confirming a silence) takes into account.
HEARTBEAT_READ: tuple[type[Any], ...] = (Heartbeat, LeaseRevocation)
#: The messages a claims read takes into account.
CLAIMS_READ: tuple[type[Any], ...] = (PromotionAnnouncement, PromotionClaim)

#: The phases in which :meth:`StandbyElection.reserve` may replace a slot
#: (nothing is in flight and no claim is held).
_REPLACEABLE = frozenset({Phase.WATCHING, Phase.RETRY_WATCH, Phase.RETRY_CLAIM})

# ----------------------------------------------------------------------
# Rules: each decides one question, from what it is handed
# ----------------------------------------------------------------------


def heartbeat_is_news(last: float | None, timestamp: float) -> bool:
    """Whether a heartbeat stamped ``timestamp`` is newer than the ``last`` one accepted."""
    return last is None or timestamp > last


def beyond_skew(now: float, stamp: float, max_clock_skew: float) -> bool:
    """Whether a message stamped ``stamp`` claims a time this host cannot have reached yet."""
    return stamp > now + max_clock_skew


def shows_alive(
    now: float, origin: float, timestamp: float, confirmed_baseline: float, silence: float
) -> bool:
    """Whether a heartbeat stamped ``timestamp`` ends a silence this slot acted on.

    Only a heartbeat later than the baseline the silence was confirmed from
    counts, and only while it is recent enough that the primary is not silent.
    """
    baseline = silence_baseline(origin, timestamp)
    return baseline > confirmed_baseline and not primary_is_silent(now, baseline, silence)


def retry_at(ready: float, standby_index: int, delay: float) -> float:
    """When a slot whose wait ends at ``ready`` may pre-read again.

    Every retry of a promotion keeps the standby order (failure mode 21):
    standby i waits its index backoff on top of whatever it waited for (a
    retry interval, a failed spawn's backoff, a deferral), so standby 0
    still goes first.
    """
    return ready + promotion_delay(standby_index, delay)


def claim_retry_wait(timing: Timing, claim_failures: int) -> float:
    """The wait after the ``claim_failures``-th claim in a row missed its quorum or deadline.

    It doubles with each failure (capped at 32 retry intervals), so a
    standby whose claims cannot get through stops getting in the way of
    peers whose claims can.
    """
    wait: float = timing.retry_interval * 2 ** min(claim_failures - 1, 5)
    return wait


def spawn_retry(timing: Timing, attempts: int, rounds: int) -> tuple[int, int, float | None]:
    """After a failed spawn: the new ``(attempts, rounds)`` and the wait (``None``: give up).

    ``attempts`` and ``rounds`` are the counts before this failure. Quick
    retries back off exponentially; out of them, a round is over and the
    slot falls back to a silence window that doubles with every round.
    After the last round the workload cannot start here (failure mode 24).
    """
    attempts += 1
    if attempts < timing.max_spawn_attempts:
        return attempts, rounds, timing.spawn_retry_backoff * 2 ** (attempts - 1)
    rounds += 1
    if rounds >= timing.max_spawn_rounds:
        return 0, rounds, None
    return 0, rounds, timing.silence * 2 ** (rounds - 1)


def strongest_rival(
    seen: Mapping[str, PromotionClaim] | None, slot: StandbySlot[Any], rereading: bool
) -> PromotionClaim | None:
    """The held peer claim (of those ``seen``) that ``slot`` must yield to, if any.

    Before claiming (pre-read) any held claim on our target epoch or a later
    one wins. At the settle re-read, a later epoch wins, and on our own epoch
    the lower standby index wins (the tie rule).
    """
    if not seen:
        return None
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


#: At most this many settle re-reads of one claim are read again after
#: missing their quorum (:func:`may_reread`).
MAX_REREADS = 2


def may_reread(timing: Timing, now: float, claim: PromotionClaim | None, rereads: int) -> bool:
    """Whether a settle re-read that missed its quorum may be read again, keeping the claim.

    A re-read that starts later than the settle requires is as sound as one
    on time (it can only see more rival claims), so what bounds a repeat is
    the lease rule of ``Timing``: the repeat (``2 * query_timeout``) and the
    spawn after it (``spawn_timeout``) must still end inside the lease that
    began with the claim. At most :data:`MAX_REREADS` repeats per claim, so
    relays that fail every read at once are not asked in a loop.
    Withdrawing instead costs the relays the withdrawal, a new pre-read and
    a new claim, and the slot a retry interval and a new settle.
    """
    if claim is None or rereads >= MAX_REREADS:
        return False
    end = now + 2 * timing.query_timeout + timing.spawn_timeout
    return end < claim.claimed_at + timing.lease


#: At most this many pre-reads of one slot in a row wait for a lower standby
#: at work on the same primary's other workloads (:func:`lower_standby_at_work`).
MAX_TURN_WAITS = 3


def lower_standby_at_work(slot: StandbySlot[Any], at_work: Iterable[str], waits: int) -> bool:
    """Whether a slot about to pre-read or claim should let a lower standby go first.

    ``at_work``: the peers with a held claim younger than
    ``peer_claim_grace`` (in the middle of a promotion: not announced yet,
    not yet followed on the claim alone) on any workload of the slot's
    primary, as seen by a claims read or the live subscription.

    In a correlated failover a lower standby may still be working through
    the dead primary's workloads when this one's backoff ends. Pre-reading
    and claiming now would only race it (both claim, the tie rule picks the
    lower standby, the higher one withdraws) and load the relays twice. The
    slot waits one more turn instead, at most :data:`MAX_TURN_WAITS` times in
    a row, so a lower standby that does not hold this workload at all (it
    dropped the slot) delays it by a bounded time. Waiting is always safe:
    no claim is made.
    """
    if waits >= MAX_TURN_WAITS:
        return False
    mine = slot.standby_index
    return any((i := slot.peer_index(s)) is not None and i < mine for s in at_work)


def claim_is_news(known: PromotionClaim | None, claim: PromotionClaim) -> bool:
    """Whether a peer's ``claim`` replaces the one ``known`` from the same signer.

    An older claim never does, nor one stamped at the same instant as a
    withdrawal already seen.
    """
    return known is None or not (
        claim.claimed_at < known.claimed_at
        or (claim.claimed_at == known.claimed_at and known.withdrawn)
    )


def ends_deferral(deferred: PromotionClaim | None, signer: str, claim: PromotionClaim) -> bool:
    """Whether ``claim`` is the withdrawal of the claim a slot ``deferred`` to."""
    return (
        deferred is not None
        and deferred.claimant == signer
        and claim.withdrawn
        and claim.epoch == deferred.epoch
    )


def release_delay(standby_index: int, releaser_index: int | None, delay: float) -> float:
    """How long a deferred standby waits once the peer it deferred to let its claim go.

    The next standby after the releaser goes at once (guarantee 2: a failed
    spawn lets the next standby go without waiting out its whole backoff);
    each one after it waits one ``promotion_delay`` more, so deferred
    standbys released together keep their order (failure mode 21).
    """
    behind = standby_index if releaser_index is None else max(standby_index - releaser_index - 1, 0)
    return promotion_delay(behind, delay)


def follows_claim_alone(rival: PromotionClaim, now: float, peer_claim_grace: float) -> bool:
    """Whether a rival claim is old enough to follow its claimant as the new primary.

    A rival that claimed ``peer_claim_grace`` ago and never announced is
    followed, so that its own silence can be detected (failure mode 28: a
    holder that died right after its claim must not block the epoch for
    good); a recent one is deferred to.
    """
    return rival.claimed_at + peer_claim_grace <= now


_P = ParamSpec("_P")


class _Batching(Protocol):
    """What :func:`batched` needs of the machine it wraps."""

    _changes: list[PhaseChanged]
    _deadline_known: bool
    _admission: ClaimAdmission[Any]
    _reads: ClaimReads[Any]

    def _let_in(self, now: float, effects: list[ElectionEffect]) -> None: ...

    def _flush_reads(self, effects: list[ElectionEffect]) -> None: ...


_MachineT = TypeVar("_MachineT", bound=_Batching)


def batched(
    method: Callable[Concatenate[_MachineT, float, _P], list[ElectionEffect]],
) -> Callable[Concatenate[_MachineT, float, _P], list[ElectionEffect]]:
    """Wrap one call of the machine (``now`` first): reads batched, moves reported last.

    Once ``method`` is done, the slots waiting for room in the claim window
    that now fit are let in to pre-read; the claims reads queued during the
    call become batched :class:`~standby.core.QueryClaims` effects, and the
    phase moves it made are appended as :class:`~standby.core.PhaseChanged`
    effects. A call that raises leaves no reported move behind for the next
    one. Every call forgets the machine's next deadline (see
    :meth:`StandbyElection.next_deadline`).
    """

    def wrapper(
        self: _MachineT, now: float, /, *args: _P.args, **kwargs: _P.kwargs
    ) -> list[ElectionEffect]:
        changes = self._changes
        changes.clear()
        self._deadline_known = False  # every input may move the next deadline
        try:
            effects = method(self, now, *args, **kwargs)
            # Most calls leave no slot waiting for room, queue no read and
            # move no slot: each step is skipped when it has nothing to do.
            if self._admission.waiting:
                self._let_in(now, effects)
            if self._reads.queued:
                self._flush_reads(effects)
            if changes:
                effects.extend(changes)
        finally:
            changes.clear()
        return effects

    wrapper.__doc__ = method.__doc__
    wrapper.__name__ = method.__name__
    wrapper.__qualname__ = method.__qualname__
    return wrapper


class StandbyElection(Generic[SpecT]):
    """Election machine for every slot this provider reserved.

    ``me`` is this provider's canonical identity. With ``atomic_claims=True``
    the machine asks for a :class:`~standby.core.CompareAndSetClaim` instead of
    publish-and-settle (use it when the transport implements
    :class:`~standby.protocols.AtomicClaims`). ``claim_window`` is how many
    slots may run the claim protocol at once before the relays have answered
    any (the window then adapts to them; see :attr:`claim_window`); by
    default what the timing's ``claim_timeout`` suggests
    (:func:`~standby.core._admission.initial_claim_window`: 100 for the
    default timing, 28 for a ``claim_timeout`` of 0.7 s).

    Costs: a heartbeat is O(1) whatever the number of slots of its primary;
    deadlines live in a heap (O(log n) per change); expiry is checked on every
    call through its own heap.
    """

    def __init__(
        self,
        *,
        me: str,
        timing: Timing,
        atomic_claims: bool = False,
        claim_window: int | None = None,
    ) -> None:
        if not isinstance(me, str) or not me.strip():
            raise ValueError(f"`me` must be a non-empty identity, got {me!r}")
        self.me = me
        self.timing = timing
        self.atomic_claims = atomic_claims
        self._index: SlotIndex[SpecT] = SlotIndex(timing)
        self._reads: ClaimReads[SpecT] = ClaimReads()
        if claim_window is None:
            claim_window = initial_claim_window(timing)
        self._admission: ClaimAdmission[SpecT] = ClaimAdmission(
            claim_window, timing.claim_timeout / 2
        )
        #: Publish, compare-and-set and spawn requests: request -> (kind, workload id).
        self._requests: dict[int, tuple[Request, str]] = {}
        #: Heartbeat reads in flight: request -> (primary, workload ids).
        self._confirming: dict[int, tuple[str, tuple[str, ...]]] = {}
        #: Spawns given up while in flight: request -> (workload id, fencing token).
        self._abandoned: dict[int, tuple[str, int]] = {}
        self._claims_seen: dict[str, dict[str, PromotionClaim]] = {}
        #: Per primary and peer, the held claims seen on the primary's
        #: workloads (workload -> stamp, in the order seen), for
        #: :func:`lower_standby_at_work`.
        self._at_work: dict[str, dict[str, dict[str, float]]] = {}
        self._next_request = 0
        #: Phase moves made during the current call, reported at its end.
        self._changes: list[PhaseChanged] = []
        #: :meth:`next_deadline`'s answer, good until the next input (every
        #: input goes through :func:`batched`, which clears the flag).
        self._deadline: float | None = None
        self._deadline_known = False
        self.counters: dict[str, int] = {}

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

    def rereading(self, request_id: int) -> bool:
        """Whether claims read ``request_id`` is a settle re-read (not a pre-read).

        A re-read may take up to its deadline, ``2 * query_timeout`` (what the
        lease rule of ``Timing`` allows it); a pre-read's answer must leave
        room for the claim within ``claim_timeout``.
        """
        reading = self._reads.reading.get(request_id)
        return reading is not None and reading[0] is Phase.REREAD

    @property
    def claim_window(self) -> int:
        """How many slots may be between their pre-read and their claim's answer now.

        It grows by one for each slot the relays answered well within
        ``claim_timeout``, shrinks by one for each answered later (while
        slots wait and the relays have shown a rate, it is held to that rate
        instead) and halves (once a round, not below that rate) when they
        did not answer in time; slots beyond it wait in ``PACED``.
        """
        return int(self._admission.window)

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
        """The earliest instant at which :meth:`tick` has work to do.

        It depends on the machine's state alone, so it is worked out once
        between two inputs (a driver asks before and after each tick).
        """
        if not self._deadline_known:
            self._deadline = self._index.next_deadline()
            self._deadline_known = True
        return self._deadline

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
        """Report the result of a :class:`~standby.core.QueryHeartbeats`."""
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
        """Report the result of a :class:`~standby.core.QueryClaims`.

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
        """Report which relays acknowledged a :class:`~standby.core.PublishClaim`."""
        effects = self._swept(now)
        entry = self._take_request(request_id, Request.PUBLISH, effects)
        if entry is None:
            return effects
        acks = len(set(acknowledged))
        in_time = now <= entry.preread_at + self.timing.claim_timeout
        if acks >= self.timing.write_quorum and in_time:
            self._got_through(now, entry)
            self._set(entry, Phase.SETTLING, now + self.timing.claim_settle)
            return effects
        self._claim_failed(now, entry, acks, effects)
        return effects

    @batched
    def claim_compared(
        self, now: float, request_id: int, won: bool, holder: PromotionClaim | None = None
    ) -> list[ElectionEffect]:
        """Report the outcome of a :class:`~standby.core.CompareAndSetClaim`.

        ``holder`` is the claim that holds the epoch when this one lost.
        """
        effects = self._swept(now)
        entry = self._take_request(request_id, Request.COMPARE_AND_SET, effects)
        if entry is None:
            return effects
        self._got_through(now, entry)
        if won:
            self._spawn(now, entry, effects)
            return effects
        self._count("claims_lost")
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
        """Report the outcome of a :class:`~standby.core.Spawn`."""
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
        effects.extend(self._swept(now))
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

    # ------------------------------------------------------------------
    # The rules for what the network says, slot by slot
    # ------------------------------------------------------------------

    def _receive(
        self,
        now: float,
        envelope: Envelope[Any],
        accepted: tuple[type[Any], ...],
        effects: list[ElectionEffect],
    ) -> bool:
        """Apply one message if its kind is in ``accepted``; whether it was."""
        message = envelope.message
        if not isinstance(message, accepted):
            return False
        signer = envelope.signer
        if isinstance(message, Heartbeat):
            self._heartbeat(now, signer, message.timestamp, effects)
        elif isinstance(message, LeaseRevocation):
            self._revocation(now, signer, message, effects)
        elif isinstance(message, PromotionClaim):
            self._peer_claim(now, signer, message, effects)
        elif isinstance(message, PromotionAnnouncement):
            self._announcement(now, signer, message, effects)
        return True

    def _claims_read(
        self,
        now: float,
        entry: Entry[SpecT],
        phase: Phase,
        count: int,
        effects: list[ElectionEffect],
    ) -> None:
        """One slot's share of a claims read: the per-workload rule of guarantee 2."""
        if self._index.entries.get(entry.slot.workload_id) is not entry or entry.phase is not phase:
            return  # an announcement moved the slot on
        rereading = phase is Phase.REREAD
        if count < self.timing.read_quorum:
            stage = "reread" if rereading else "preread"
            self._claims_read_failed(now, entry, stage, count, effects)
            return
        rival = strongest_rival(
            self._claims_seen.get(entry.slot.workload_id), entry.slot, rereading
        )
        if rival is not None:
            self._got_through(now, entry)
            self._yield_to(now, entry, rival, effects)
            return
        if rereading:
            self._spawn(now, entry, effects)
        elif now >= entry.preread_at + self.timing.claim_timeout:
            self._fell_short(now, entry)
            self._retry_claim(now, entry, self.timing.retry_interval)
        elif self._lower_at_work(now, entry):
            self._got_through(now, entry)
            self._wait_a_turn(now, entry)
        else:
            self._claim(now, entry, effects)

    # ------------------------------------------------------------------
    # Messages
    # ------------------------------------------------------------------

    def _heartbeat(
        self, now: float, signer: str, timestamp: float, effects: list[ElectionEffect]
    ) -> None:
        if not heartbeat_is_news(self._index.last_hb.get(signer), timestamp):
            return
        busy = self._index.busy.get(signer)
        if busy is None and signer not in self._index.watchers:
            return  # not the primary of any slot here
        if beyond_skew(now, timestamp, self.timing.max_clock_skew):
            detail = (
                f"heartbeat stamped {timestamp} is beyond now={now} + "
                f"max_clock_skew={self.timing.max_clock_skew}"
            )
            self._drop("future_dated", DropReason.FUTURE_DATED, None, signer, detail, effects)
            return
        self._index.last_hb[signer] = timestamp
        if busy:
            silence = self.timing.silence
            for workload_id in list(busy):
                entry = self._index.entries[workload_id]
                step = ON_INPUT[Input.ALIVE].get(entry.phase)
                if step is None or entry.revoked:
                    continue
                if shows_alive(now, entry.origin, timestamp, entry.confirmed_baseline, silence):
                    self._take(step, now, entry, effects)

    def _revocation(
        self, now: float, signer: str, revocation: LeaseRevocation, effects: list[ElectionEffect]
    ) -> None:
        workload_id = revocation.workload_id
        entry = self._index.entries.get(workload_id)

        def drop(reason: DropReason, detail: str) -> None:
            counter = f"revocation_{reason.name.lower()}"
            self._drop(counter, reason, workload_id, signer, detail, effects)

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
        if beyond_skew(now, revocation.revoked_at, skew):
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
        step = ON_INPUT[Input.REVOKED].get(entry.phase)
        if step is not None:
            self._take(step, now, entry, effects)

    def _peer_claim(
        self, now: float, signer: str, claim: PromotionClaim, effects: list[ElectionEffect]
    ) -> None:
        if signer == self.me:
            return
        entry = self._index.entries.get(claim.workload_id)
        if entry is None or signer == entry.slot.primary or claim.epoch <= entry.slot.epoch:
            # The current primary's own (old) claim, or one on an epoch the
            # slot is already past (the first primary's claim on epoch 0, say),
            # is no news.
            return
        if entry.slot.peer_index(signer) is None:
            reason, workload_id = DropReason.NOT_A_PEER, claim.workload_id
            detail = "claim from a stranger"
            self._drop("claim_not_a_peer", reason, workload_id, signer, detail, effects)
            return
        if claim.claimant != signer:
            claim = attrs.evolve(claim, claimant=signer)
        seen = self._claims_seen.setdefault(claim.workload_id, {})
        if not claim_is_news(seen.get(signer), claim):
            return
        seen[signer] = claim
        held = self._at_work.setdefault(entry.slot.primary, {}).setdefault(signer, {})
        held.pop(claim.workload_id, None)
        if not claim.withdrawn:
            held[claim.workload_id] = claim.claimed_at  # newest last
        step = ON_INPUT[Input.RELEASED].get(entry.phase)
        if step is not None and ends_deferral(entry.deferred, signer, claim):
            self._take(step, now, entry, effects)

    def _announcement(
        self,
        now: float,
        signer: str,
        announcement: PromotionAnnouncement,
        effects: list[ElectionEffect],
    ) -> None:
        if signer == self.me:
            return
        entry = self._index.entries.get(announcement.workload_id)
        if entry is None:
            return
        slot = entry.slot

        def drop(counter: str | None, reason: DropReason, detail: str) -> None:
            self._drop(counter, reason, slot.workload_id, signer, detail, effects)

        if signer == slot.primary and (
            announcement.epoch is None or announcement.epoch <= slot.epoch
        ):
            # Another copy (one per relay) of the announcement we already followed.
            drop("announcement_duplicate", DropReason.DUPLICATE, "already following")
            return
        if slot.peer_index(signer) is None:
            drop("announcement_not_a_peer", DropReason.NOT_A_PEER, "announcement from a stranger")
            return
        epoch = slot.epoch + 1 if announcement.epoch is None else announcement.epoch
        if epoch <= slot.epoch:
            drop(None, DropReason.STALE, f"announces epoch {epoch}")
            return
        if ON_INPUT[Input.ANNOUNCED].get(entry.phase) is not Step.FOLLOW:
            detail = f"peer announced epoch {epoch} while this standby is {entry.phase.value}"
            drop("conflict", DropReason.CONFLICT, detail)
            return
        skew = self.timing.max_clock_skew
        origin = min(announcement.promoted_at, now + skew)
        self._follow(now, entry, signer, epoch, origin, effects, announced=True)

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
        self._admission.moved(entry, entry.phase, None)
        self._index.remove(workload_id)
        self._claims_seen.pop(workload_id, None)
        self._forget_at_work(entry.slot.primary, workload_id)

    def _forget_at_work(self, primary: str, workload_id: str) -> None:
        """The slot left ``primary`` (removed, promoted, followed a new one)."""
        by_signer = self._at_work.get(primary)
        if by_signer is None:
            return
        for signer, held in list(by_signer.items()):
            held.pop(workload_id, None)
            if not held:
                del by_signer[signer]
        if not by_signer:
            del self._at_work[primary]

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

    def _swept(self, now: float) -> list[ElectionEffect]:
        """A new list of effects for a call, holding what expired by ``now``."""
        effects: list[ElectionEffect] = []
        expiry = self._index.expiry
        if expiry and expiry[0][0] <= now:  # the common case costs no generator
            for entry in self._index.expired(now):
                self._expire(now, entry, effects)
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
            self._admission.moved(entry, old, new)
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

    def _retry_watch(self, now: float, entry: Entry[SpecT]) -> None:
        """Wait a retry interval, then watch again."""
        self._release_request(entry)
        self._set(entry, Phase.RETRY_WATCH, now + self.timing.retry_interval)

    def _retry_claim(self, now: float, entry: Entry[SpecT], wait: float) -> None:
        """Wait ``wait`` (and the index backoff: :func:`retry_at`), then pre-read again."""
        at = retry_at(now + wait, entry.slot.standby_index, self.timing.promotion_delay)
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
        """A slot's own deadline: take the step :data:`ON_DEADLINE` names for its phase."""
        step = ON_DEADLINE.get(entry.phase)
        if step is not None:
            self._take(step, now, entry, effects)

    def _take(
        self, step: Step, now: float, entry: Entry[SpecT], effects: list[ElectionEffect]
    ) -> None:
        """Take one step a table named (:data:`ON_DEADLINE`, :data:`ON_INPUT`)."""
        _STEPS[step](self, now, entry, effects)

    def _back_off(self, now: float, entry: Entry[SpecT], effects: list[ElectionEffect]) -> None:
        self._backoff(now, entry)

    def _alive_after_all(
        self, now: float, entry: Entry[SpecT], effects: list[ElectionEffect]
    ) -> None:
        self._withdraw(now, entry, effects)
        self._rearm(entry)

    def _confirm_timed_out(
        self, now: float, entry: Entry[SpecT], effects: list[ElectionEffect]
    ) -> None:
        self._confirm_failed(now, [entry], 0, effects)

    def _watch_again(self, now: float, entry: Entry[SpecT], effects: list[ElectionEffect]) -> None:
        if entry.revoked:
            self._backoff(now, entry)
        else:
            self._watch(entry)

    def _claims_read_timed_out(
        self, now: float, entry: Entry[SpecT], effects: list[ElectionEffect]
    ) -> None:
        self._claims_read_failed(now, entry, entry.phase.value, 0, effects)

    def _claim_timed_out(
        self, now: float, entry: Entry[SpecT], effects: list[ElectionEffect]
    ) -> None:
        self._claim_failed(now, entry, 0, effects)

    def _spawn_timed_out(
        self, now: float, entry: Entry[SpecT], effects: list[ElectionEffect]
    ) -> None:
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
        """Pre-read now, or wait a turn for a lower standby, or wait for room."""
        self._go(now, entry, effects, lower_first=True)

    def _go(
        self, now: float, entry: Entry[SpecT], effects: list[ElectionEffect], *, lower_first: bool
    ) -> None:
        """Pre-read now, or wait in ``PACED`` while the claim window is full.

        With ``lower_first``, first wait a turn while a lower standby claims
        the primary's other workloads (:func:`lower_standby_at_work`).
        """
        if not self._still_silent(now, entry):
            self._rearm(entry)
            return
        entry.deferred = None
        if lower_first and self._lower_at_work(now, entry):
            self._wait_a_turn(now, entry)
            return
        if self._admission.full():
            self._release_request(entry)
            self._enter(entry, Phase.PACED)
            entry.deadline = None
            return
        self._start_preread(now, entry, effects)

    def _still_silent(self, now: float, entry: Entry[SpecT]) -> bool:
        """Whether the slot may still claim: its lease was revoked, or the silence holds.

        The primary may have spoken while the slot was deferring, spawning
        or waiting for room: never claim without a revocation or a full
        silence.
        """
        if entry.revoked:
            return True
        baseline = silence_baseline(entry.origin, self._index.last_hb.get(entry.slot.primary))
        return primary_is_silent(now, baseline, self.timing.silence)

    def _start_preread(
        self, now: float, entry: Entry[SpecT], effects: list[ElectionEffect]
    ) -> None:
        entry.preread_at = now
        self._query_claims(now, entry, Phase.PREREAD, effects)

    def _let_in(self, now: float, effects: list[ElectionEffect]) -> None:
        """Pre-read the slots waiting in ``PACED`` that the claim window has room for."""
        for entry in self._admission.let_in():
            if self._still_silent(now, entry):
                self._start_preread(now, entry, effects)
            else:
                self._rearm(entry)

    def _lower_at_work(self, now: float, entry: Entry[SpecT]) -> bool:
        """Whether a lower standby is claiming this slot's primary's other workloads now.

        A peer counts while it holds a claim younger than ``peer_claim_grace``
        on one of them; older claims are dropped from the front, oldest seen
        first.
        """
        seen = self._at_work.get(entry.slot.primary)
        if not seen:
            return False
        grace = self.timing.peer_claim_grace
        for signer, held in list(seen.items()):
            while held:
                first = next(iter(held))
                if held[first] + grace > now:
                    break
                del held[first]  # no longer in the middle of a promotion
            if not held:
                del seen[signer]
        # Its claim on this very workload is a rival, which the pre-read
        # answers as ever (defer, or follow): only the others count here.
        mine = entry.slot.workload_id
        at_work = [s for s, held in seen.items() if len(held) > 1 or mine not in held]
        return lower_standby_at_work(entry.slot, at_work, entry.turn_waits)

    def _wait_a_turn(self, now: float, entry: Entry[SpecT]) -> None:
        """Let a lower standby at work go first: pre-read again after the index backoff."""
        self._count("waited_for_lower_standby")
        entry.turn_waits += 1
        self._retry_claim(now, entry, 0.0)

    def _got_through(self, now: float, entry: Entry[SpecT]) -> None:
        """A slot in the claim window was answered in time."""
        if entry.phase in IN_FLIGHT:
            self._admission.got_through(now, now - entry.preread_at)

    def _fell_short(self, now: float, entry: Entry[SpecT]) -> None:
        """A slot in the claim window missed a quorum or a deadline."""
        if entry.phase in IN_FLIGHT and self._admission.fell_short(now, entry.preread_at):
            self._count("claim_window_cut")

    def _rearm(self, entry: Entry[SpecT]) -> None:
        """The primary is alive after all: watch it again, the retry counts reset."""
        self._count("rearmed_by_heartbeat")
        entry.attempts = 0
        entry.rounds = 0
        entry.claim_failures = 0
        entry.turn_waits = 0
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
        entry.rereads = 0
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
        self._count("claims_won")
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
        entry.attempts, entry.rounds, wait = spawn_retry(self.timing, entry.attempts, entry.rounds)
        if wait is None:
            self._give_up(entry, effects)
            return
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
        """A claims read missed its quorum: read again, or withdraw any claim and pre-read later.

        A settle re-read is read again, keeping the claim, while
        :func:`may_reread` allows it; anything else withdraws.
        """
        self._fell_short(now, entry)
        effects.append(self._shortfall(stage, [entry], answered, self.timing.read_quorum))
        if entry.phase is Phase.REREAD and may_reread(self.timing, now, entry.claim, entry.rereads):
            self._count("reread_again")
            entry.rereads += 1
            self._query_claims(now, entry, Phase.REREAD, effects)
            return
        self._withdraw(now, entry, effects)
        self._retry_claim(now, entry, self.timing.retry_interval)

    def _claim_failed(
        self, now: float, entry: Entry[SpecT], acks: int, effects: list[ElectionEffect]
    ) -> None:
        """A claim missed its quorum or its deadline: withdraw, wait, retry.

        The wait is :func:`claim_retry_wait`.
        """
        self._fell_short(now, entry)
        effects.append(self._shortfall("claim", [entry], acks, self.timing.write_quorum))
        self._withdraw(now, entry, effects)
        entry.claim_failures += 1
        self._retry_claim(now, entry, claim_retry_wait(self.timing, entry.claim_failures))

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

        Follow the rival as the primary of its epoch when its claim is old
        (:func:`follows_claim_alone`), else defer to it. The one rule for a
        claims read that finds a rival and for a compare-and-set lost to a
        holder.
        """
        if entry.claim is not None:
            self._count("claims_lost")
        self._withdraw(now, entry, effects)
        if follows_claim_alone(rival, now, self.timing.peer_claim_grace):
            self._follow(now, entry, rival.claimant, rival.epoch, now, effects, announced=False)
        else:
            self._defer(now, entry, rival)

    def _defer(self, now: float, entry: Entry[SpecT], rival: PromotionClaim) -> None:
        """Stand down for a peer's recent claim, until its grace ends (then pre-read)."""
        self._release_request(entry)
        self._count("deferred")
        until = max(now, min(rival.claimed_at, now + self.timing.max_clock_skew))
        ready = until + self.timing.peer_claim_grace
        self._set(
            entry,
            Phase.DEFERRED,
            retry_at(ready, entry.slot.standby_index, self.timing.promotion_delay),
        )
        entry.deferred = rival

    def _deferral_ended(
        self, now: float, entry: Entry[SpecT], effects: list[ElectionEffect]
    ) -> None:
        """The peer this slot deferred to let its claim go (its spawn failed).

        Pre-read after :func:`release_delay`; a deferral's own end, if it
        comes first, still counts.
        """
        releaser = None if entry.deferred is None else entry.deferred.claimant
        ahead = None if releaser is None else entry.slot.peer_index(releaser)
        at = now + release_delay(entry.slot.standby_index, ahead, self.timing.promotion_delay)
        if at <= now:
            # The next standby after the releaser goes at once (guarantee 2).
            self._go(now, entry, effects, lower_first=False)
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
        self._forget_at_work(old.primary, slot.workload_id)
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
        entry.turn_waits = 0
        self._watch(entry)
        self._count("followed")
        effects.append(PrimaryChanged(slot.workload_id, old.primary, new_primary, epoch))
        effects.append(SlotSaved(slot))


_StepMethod = Callable[[StandbyElection[Any], float, Entry[Any], list[ElectionEffect]], None]

#: How the machine takes each step the tables name (``FOLLOW`` needs the
#: announcement's own data: the announcement rule takes it).
_STEPS: Mapping[Step, _StepMethod] = MappingProxyType(
    {
        Step.CONFIRM_TIMED_OUT: StandbyElection._confirm_timed_out,
        Step.WATCH_AGAIN: StandbyElection._watch_again,
        Step.PREREAD: StandbyElection._preread,
        Step.CLAIMS_READ_TIMED_OUT: StandbyElection._claims_read_timed_out,
        Step.REREAD_TIMED_OUT: StandbyElection._claims_read_timed_out,
        Step.CLAIM_TIMED_OUT: StandbyElection._claim_timed_out,
        Step.SETTLED: StandbyElection._settled,
        Step.SPAWN_TIMED_OUT: StandbyElection._spawn_timed_out,
        Step.REARM: StandbyElection._alive_after_all,
        Step.BACK_OFF: StandbyElection._back_off,
        Step.DEFERRAL_ENDED: StandbyElection._deferral_ended,
    }
)
