"""The standby side of the node: its slots' election, claims and promotions."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Generic, Protocol, TypeVar

import attrs
from typing_extensions import assert_never

from ..aio import fail_after
from ..core._effects import (
    Announce,
    CannotStart,
    CompareAndSetClaim,
    Dropped,
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
from ..core._election import MAX_BATCH, StandbyElection
from ..core._errors import InvalidRequest, RequestRefused, StoreError, WorkloadConflict
from ..core._models import (
    Envelope,
    Heartbeat,
    Message,
    PromotionAnnouncement,
    StandbySlot,
    Topology,
)
from ..core._records import PrimaryRecord, PromotionIntent
from ..core._relay_messages import catch_up_read, claims_read, followed_read, heartbeats_read
from ..core._roles import Standby
from ..core._timing import Timing
from ..protocols._contracts import AtomicClaims, ContainerRuntime, Query
from ._events import (
    AnnouncementPublished,
    ClaimCompared,
    ClaimPublished,
    ContainerStarted,
    ContainerStarting,
    InputDropped,
    PrimaryFollowed,
    PromotedHere,
    QuorumMissed,
    SlotPhaseChanged,
    WorkloadCannotStart,
)
from ._io import NodeIO
from ._observe import Observer
from ._persistence import Persistence
from ._types import SpawnRequest

__all__ = ["StandbySide"]

SpecT = TypeVar("SpecT")

#: The share of a settle re-read's deadline (``2 * query_timeout``) the node
#: waits for the relays' answers; the rest is left for the answer to arrive.
REREAD_SHARE = 0.75


class TakeOver(Protocol):
    """The primary side's :meth:`~standby.node._primary.PrimarySide.take_over`."""

    def __call__(
        self,
        now: float,
        saved: PrimaryRecord,
        *,
        lease_from: float,
        spec: Any,
        handle: Any = ...,
        renewed: float = ...,
    ) -> None: ...


class StandbySide(Generic[SpecT]):
    """Carries out what the :class:`~standby.StandbyElection` decides, and feeds it back.

    Promotion intents live here: one is saved and flushed before every
    spawn, and stays, spent, until the reservation ends once its token was
    handed to the runtime (guarantee 5).
    """

    def __init__(
        self,
        me: str,
        timing: Timing,
        observer: Observer,
        io: NodeIO,
        runtime: ContainerRuntime,
        persistence: Persistence,
        election: StandbyElection[SpecT],
        *,
        claims: AtomicClaims | None,
        now: Callable[[], float],
        poke: Callable[[], None],
        refresh: Callable[[], None],
        to_primary: Callable[[Envelope[Message]], bool],
        already_runs: Callable[[str, SpecT], bool],
        ended_run: Callable[[str, float], PrimaryRecord | None],
        take_over: TakeOver,
        stop_container: Callable[[Any, str, int, str, str], Coroutine[Any, Any, None]],
        heartbeat_soon: Callable[[], None],
        check_spec: Callable[[SpawnRequest[SpecT]], Awaitable[None]] | None = None,
    ) -> None:
        self.me = me
        self.timing = timing
        self.observer = observer
        self.io = io
        self.runtime = runtime
        self.persistence = persistence
        self.election = election
        #: The transport, when claims are compare-and-set (``None``: published).
        self.claims = claims
        self.now = now
        #: New input for the machines: the node's timer looks at the deadlines again.
        self.poke = poke
        #: Who the node listens to changed (the slots' primaries and peers).
        self.refresh = refresh
        # What the standby side needs of the primary side (and its step-down
        # watch and heartbeat), each one call:
        #: Whether a message concerns a workload run here as primary (it then went there).
        self.to_primary = to_primary
        self.already_runs = already_runs
        self.ended_run = ended_run
        self.take_over = take_over
        self.stop_container = stop_container
        self.heartbeat_soon = heartbeat_soon
        self.check_spec = check_spec
        self.intents: dict[str, PromotionIntent] = {}
        self._spawned: dict[tuple[str, int], Any] = {}
        #: Claims ``(workload, token)`` a paced transport never sent to any relay.
        self._unsent: set[tuple[str, int]] = set()
        #: Workloads whose slot followed a new primary and whose catch-up read
        #: has not started yet, in order (see :meth:`catch_up_soon`).
        self._to_catch_up: dict[str, str] = {}
        self._catching_up = False

    # -- the host's requests ---------------------------------------------------

    async def accept(
        self, now: float, request: SpawnRequest[SpecT], topology: Topology, role: Standby
    ) -> None:
        """Reserve a standby slot for ``request`` (nothing when this node already holds it)."""
        workload_id = request.workload_id
        held = self.election.slots.get(workload_id)
        if held is not None:
            self._check_same(held, topology)
            self.observer.reaccepted(
                workload_id, "standby", "the slot is already reserved (epoch %d)", held.epoch
            )
            return
        if self.already_runs(workload_id, request.spec):
            return
        spent = self.intents.get(workload_id)
        if spent is not None and spent.spent:
            self.observer.count("reaccepts_refused")
            raise RequestRefused(
                f"workload {workload_id!r}: this node already promoted into epoch {spent.epoch} "
                f"(token {spent.fencing_token}) for it, so it no longer stands by for it: its "
                "peers and later primaries left it out of the workload's standby lineup. The "
                "workload has one standby fewer until its reservation ends; the consumer "
                "should reserve another standby",
                workload_id=workload_id,
            )
        ended = self.ended_run(workload_id, now)
        if ended is not None:
            raise RequestRefused(
                f"workload {workload_id!r} ran here as primary in epoch {ended.epoch} until it "
                f"ended ({ended.ended}); this node no longer stands by for it",
                workload_id=workload_id,
            )
        if self.check_spec is not None:
            await self.check_spec(request)  # only a request that would reserve (FM 24)
            now = self.now()
        created_at = now if request.created_at is None else request.created_at
        slot: StandbySlot[SpecT] = StandbySlot.reserve(
            me=self.me,
            workload_id=workload_id,
            topology=topology,
            spec=request.spec,
            owner=request.owner,
            created_at=created_at,
            expires_at=request.expires_at,
            spec_id=request.spec_id,
        )
        try:
            self.persistence.check_slot(slot)
        except StoreError as exc:
            raise InvalidRequest(
                f"workload {workload_id!r}: the store cannot save its slot ({exc}); "
                "a spec must encode as JSON",
                field="spec",
            ) from exc
        effects = self.election.reserve(now, slot)
        self.observer.reserved(workload_id, role.index, role.count, topology.primary)
        self.effects(now, effects)
        await self.persistence.flush()

    def _check_same(self, held: StandbySlot[SpecT], topology: Topology) -> None:
        """Refuse a second reservation of a held id under another topology (FM 32).

        A slot still at epoch 0 must match the request exactly. One that
        followed a takeover lost the chain's primaries from its lineup: its
        primary must be one of the request's standbys, and its lineup the
        request's standbys in their order, less some.
        """
        lineup = held.standbys(self.me)
        requested = topology.standbys
        if held.epoch == 0:
            same = held.primary == topology.primary and lineup == requested
        else:
            rest = iter(requested)
            same = held.primary in requested and all(s in rest for s in lineup)
        if not same:
            detail = f" (epoch {held.epoch})" if held.epoch else ""
            raise WorkloadConflict(
                held.workload_id,
                (topology.primary, requested),
                held=(held.primary, lineup),
                detail=detail,
            )

    # -- the election's effects ------------------------------------------------

    def call(self, now: float, call: Callable[[], list[ElectionEffect]]) -> None:
        """Feed one input to the election and carry out what it decides."""
        try:
            effects = call()
        except Exception as exc:
            self.observer.machine_refused("election", exc)
            return
        self.effects(now, effects)

    def effects(self, now: float, effects: Sequence[ElectionEffect]) -> None:
        interest = False
        for effect in effects:
            interest |= self._effect(now, effect)
        if interest:
            self.refresh()
        self.poke()

    def _effect(self, now: float, effect: ElectionEffect) -> bool:
        """Carry out one election effect; whether the subscriptions need a refresh.

        The one dispatcher of election effects: a new effect type that is not
        handled here fails type checking at ``assert_never``.
        """
        spawn = self.io.spawn
        match effect:
            case QueryHeartbeats():
                spawn(self._run_query_heartbeats, effect)
            case QueryClaims():
                spawn(self._run_query_claims, effect)
            case PublishClaim():
                spawn(self._run_publish_claim, effect)
            case CompareAndSetClaim():
                spawn(self._run_compare_claim, effect)
            case WithdrawClaim():
                spawn(self._run_withdraw, effect)
            case Spawn():
                spawn(self._run_spawn, effect)
            case Announce():
                spawn(self.announce, effect)
            case Promoted():
                self._promoted(now, effect)
                return True
            case StopOrphan():
                self._stop_orphan(effect)
            case SlotSaved():
                self.persistence.mark_dirty()
                return True
            case SlotRemoved():
                self.persistence.mark_dirty()
                self.observer.slot_removed(effect)
                return True
            case PrimaryChanged():
                # What the new primary published before this slot followed it
                # (a revocation above all) went by unheeded: read it back.
                self.catch_up_soon(effect.workload_id, effect.new_primary)
                self.observer.report(
                    PrimaryFollowed(
                        now,
                        effect.workload_id,
                        effect.old_primary,
                        effect.new_primary,
                        effect.epoch,
                    )
                )
            case Dropped():
                self.observer.report(
                    InputDropped(
                        now, effect.workload_id, effect.signer, effect.reason, effect.detail
                    )
                )
            case QuorumShortfall():
                self.observer.report(
                    QuorumMissed(
                        now, effect.stage, effect.workload_ids, effect.answered, effect.needed
                    )
                )
            case CannotStart():
                self.observer.report(
                    WorkloadCannotStart(now, effect.workload_id, effect.attempts, effect.error)
                )
            case PhaseChanged():
                self.observer.report(
                    SlotPhaseChanged(
                        now, effect.workload_id, effect.old, effect.new, effect.revoked
                    )
                )
            case _:
                assert_never(effect)
        return False

    def on_envelope(self, envelope: Envelope[Message]) -> None:
        """A message from the subscription or a catch-up read."""
        self.observer.count("messages")
        if envelope.signer == self.me:
            return
        message = envelope.message
        if not isinstance(message, Heartbeat) and self.to_primary(envelope):
            return  # a claim or announcement of a workload run here as primary
        if not isinstance(message, Heartbeat) and message.workload_id not in self.election.slots:
            # The subscription filters by author only: a peer's message about
            # a workload it shares with others, not with this node.
            self.observer.count("messages_not_ours")
            return
        now = self.now()
        self.call(now, lambda: self.election.on_message(now, envelope))

    def catch_up_soon(self, workload_id: str, new_primary: str) -> None:
        """Read back what a slot that followed ``new_primary`` did not heed
        (:func:`~standby.core._relay_messages.followed_read`), in a batch with
        the other slots that need it.

        In a correlated failover hundreds of slots follow the new primary
        one announcement at a time: one read each would load the relays
        with reads of one workload while they are busy storing claims
        (failure mode 26). One task reads for every slot waiting, up to
        ``MAX_BATCH`` a read; slots that follow while it reads wait for its
        next read.
        """
        self._to_catch_up[workload_id] = new_primary
        if not self._catching_up:
            self._catching_up = self.io.spawn(self._catch_up_waiting)

    async def _catch_up_waiting(self) -> None:
        try:
            while self._to_catch_up:
                waiting = dict(self._to_catch_up)
                self._to_catch_up.clear()
                await self._read_back(waiting)
        finally:
            self._catching_up = False

    async def catch_up(self, workload_ids: tuple[str, ...]) -> None:
        """Read the revocations, claims and announcements missed (after a restart)."""
        await self._read_in(workload_ids, catch_up_read)

    async def _read_back(self, new_primaries: dict[str, str]) -> None:
        """Read the new primaries' revocations of workloads whose slots followed them."""
        await self._read_in(
            tuple(new_primaries),
            lambda chunk: followed_read(chunk, {new_primaries[w] for w in chunk}),
        )

    async def _read_in(
        self, workload_ids: tuple[str, ...], query_for: Callable[[tuple[str, ...]], Query]
    ) -> None:
        """Read ``query_for(chunk)`` and take in what it returns, a chunk at a time
        (so each request and answer stays inside relay limits)."""
        for first in range(0, len(workload_ids), MAX_BATCH):
            query = query_for(workload_ids[first : first + MAX_BATCH])
            result = await self.io.query(query, operation="catch_up", workload_id=None)
            for envelope in result.envelopes:
                self.on_envelope(envelope)

    # -- reads and claims ---------------------------------------------------------

    async def _run_query_heartbeats(self, effect: QueryHeartbeats) -> None:
        query = heartbeats_read(
            effect.primary, effect.workload_ids, self.now(), self.timing.max_clock_skew
        )
        await self._read(query, "query_heartbeats", effect, self.election.heartbeats_queried)

    async def _run_query_claims(self, effect: QueryClaims) -> None:
        query = claims_read(
            effect.workload_ids, self.now(), self.timing.max_clock_skew, effect.authors
        )
        timeout = None
        if self.election.rereading(effect.request_id):
            # A settle re-read may use most of its deadline (2 * query_timeout,
            # inside the lease rule): on relays busy with a correlated
            # failover, one slow read would otherwise withdraw a hundred good
            # claims (failure mode 26). A quarter is left for the answer.
            timeout = REREAD_SHARE * 2 * self.timing.query_timeout
        await self._read(query, "query_claims", effect, self.election.claims_queried, timeout)

    async def _read(
        self,
        query: Query,
        operation: str,
        effect: QueryHeartbeats | QueryClaims,
        answer: Callable[
            [float, int, Sequence[Envelope[Message]], frozenset[str]], list[ElectionEffect]
        ],
        timeout: float | None = None,
    ) -> None:
        """Run a read the election asked for and hand it the answer."""
        result = await self.io.query(
            query, operation=operation, workload_id=",".join(effect.workload_ids), timeout=timeout
        )
        now = self.now()
        self.call(now, lambda: answer(now, effect.request_id, result.envelopes, result.answered))

    async def _run_publish_claim(self, effect: PublishClaim) -> None:
        claim = effect.claim
        # The election takes acknowledgements until claim_timeout after the
        # pre-read: a claim waiting for room on a busy relay may use all of it.
        result = await self.io.publish(
            claim,
            operation="publish_claim",
            workload_id=claim.workload_id,
            role="standby",
            timeout=self.timing.claim_timeout,
        )
        if result.never_sent:
            self._unsent.add((claim.workload_id, claim.fencing_token))
        now = self.now()
        self.observer.report(
            ClaimPublished(
                now, claim.workload_id, claim.epoch, claim.fencing_token, False, result.acked
            )
        )
        self.call(now, lambda: self.election.claim_published(now, effect.request_id, result.acked))

    async def _run_compare_claim(self, effect: CompareAndSetClaim) -> None:
        claim = effect.claim
        transport = self.claims
        assert transport is not None
        timeout = self.timing.query_timeout
        won, holder = False, None
        try:
            outcome = await self.io.bounded(
                timeout, transport.compare_and_set_claim(claim, timeout=timeout)
            )
            won, holder = outcome.won, outcome.holder
        except Exception as exc:
            self.observer.failed(
                "compare_claim", exc, workload_id=claim.workload_id, role="standby"
            )
        now = self.now()
        self.observer.report(
            ClaimCompared(
                now,
                claim.workload_id,
                claim.epoch,
                claim.fencing_token,
                won,
                None if holder is None else holder.claimant,
            )
        )
        self.call(now, lambda: self.election.claim_compared(now, effect.request_id, won, holder))

    async def _run_withdraw(self, effect: WithdrawClaim) -> None:
        claim = effect.claim
        transport = self.claims
        if transport is not None:
            timeout = self.timing.query_timeout
            try:
                await self.io.bounded(timeout, transport.release_claim(claim, timeout=timeout))
            except Exception as exc:
                self.observer.failed(
                    "release_claim", exc, workload_id=claim.workload_id, role="standby"
                )
        if (claim.workload_id, claim.fencing_token) in self._unsent:
            # No relay was ever sent the claim: nothing to withdraw, and
            # publishing a withdrawal would only add to a busy relay's queue.
            self._unsent.discard((claim.workload_id, claim.fencing_token))
            self.observer.count("withdrawals_not_needed")
            return
        result = await self.io.publish_until_quorum(
            claim, operation="withdraw_claim", workload_id=claim.workload_id, role="standby"
        )
        self.observer.report(
            ClaimPublished(
                self.now(),
                claim.workload_id,
                claim.epoch,
                claim.fencing_token,
                True,
                result.acked,
            )
        )

    # -- promotion -------------------------------------------------------------------

    async def _run_spawn(self, effect: Spawn[SpecT]) -> None:
        workload_id, token = effect.workload_id, effect.fencing_token
        started_at = self.now()
        self.observer.report(ContainerStarting(started_at, workload_id, token, promotion=True))
        error = await self._record_intent(effect, started_at)
        if error is not None and self.intents.pop(workload_id, None) is not None:
            self.persistence.mark_dirty()  # never spawned: the unsaved intent is void
        else:
            # From here on the token has been handed to the runtime: even when
            # the spawn fails, the intent stays, so a restarted node never
            # hands that token out again (it gives the promotion up instead).
            try:
                with fail_after(self.timing.spawn_timeout):
                    handle = await self.runtime.spawn(
                        effect.spec,
                        workload_id=workload_id,
                        fencing_token=token,
                        lease_end=effect.lease_end,
                        restore_from=effect.restore_from,
                    )
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                self.observer.failed("spawn", error, workload_id=workload_id, role="standby")
            else:
                self._spawned[(workload_id, token)] = handle
        now = self.now()
        self.observer.report(
            ContainerStarted(
                now,
                workload_id,
                token,
                True,
                error is None,
                error,
                now - started_at,
                effect.lease_end if error is None else None,
            )
        )
        self.call(
            now,
            lambda: self.election.spawn_finished(now, effect.request_id, error is None, error),
        )
        leftover = self._spawned.pop((workload_id, token), None)
        if leftover is not None:
            # The machine neither promoted nor orphaned it: never leave it running.
            self.observer.count("unclaimed_containers")
            await self.stop_container(leftover, workload_id, token, "unclaimed spawn", "standby")

    async def _record_intent(self, effect: Spawn[SpecT], now: float) -> str | None:
        """Save the promotion intent durably before the spawn (guarantee 5).

        Returns why the spawn must not go ahead (``None``: it may). Without a
        store there is nothing to make durable (and no crash safety).
        """
        slot = self.election.slots.get(effect.workload_id)
        intent = PromotionIntent(
            workload_id=effect.workload_id,
            epoch=effect.epoch,
            fencing_token=effect.fencing_token,
            lease_end=effect.lease_end,
            recorded_at=now,
            standbys=() if slot is None else slot.peers,
            expires_at=math.inf if slot is None else slot.expires_at,
        )
        self.intents[effect.workload_id] = intent
        self.persistence.mark_dirty()
        if self.persistence.store is None:
            return None
        try:
            await self.persistence.flush()
        except StoreError as exc:
            error = f"promotion intent not saved, so not spawning: {exc}"
            self.observer.failed("spawn", error, workload_id=effect.workload_id, role="standby")
            return error
        return None

    def _promoted(self, now: float, effect: Promoted[SpecT]) -> None:
        slot = effect.slot
        workload_id = slot.workload_id
        handle = self._spawned.pop((workload_id, effect.fencing_token), None)
        saved = PrimaryRecord(
            workload_id=workload_id,
            epoch=effect.epoch,
            fencing_token=effect.fencing_token,
            standbys=effect.standbys,
            created_at=slot.created_at,
            expires_at=slot.expires_at,
        )
        intent = self.intents.get(workload_id)
        self.take_over(
            now,
            saved,
            lease_from=effect.lease_from,
            spec=slot.spec,
            handle=handle,
            renewed=-math.inf if intent is None else intent.lease_end,
        )
        if intent is not None:
            self.spend(intent)
        self.persistence.mark_dirty()
        self.observer.report(PromotedHere(now, workload_id, effect.epoch, effect.fencing_token))
        self.heartbeat_soon()

    def spend(self, intent: PromotionIntent) -> None:
        """Keep ``intent``, spent, until the reservation ends: this node never
        stands by for the workload again with an epoch and token it used."""
        self.intents[intent.workload_id] = attrs.evolve(intent, spent=True)

    def _stop_orphan(self, effect: StopOrphan) -> None:
        handle = self._spawned.pop((effect.workload_id, effect.fencing_token), None)
        self.observer.orphan(effect.workload_id, effect.fencing_token, effect.reason)
        if handle is not None:
            self.io.spawn(
                self.stop_container,
                handle,
                effect.workload_id,
                effect.fencing_token,
                effect.reason,
                "standby",
            )

    async def announce(self, effect: Announce) -> None:
        """Publish that this node is the workload's new primary (until a write quorum holds it)."""
        announcement: PromotionAnnouncement = effect.announcement
        result = await self.io.publish_until_quorum(
            announcement, operation="announce", workload_id=announcement.workload_id, role="primary"
        )
        self.observer.report(
            AnnouncementPublished(
                self.observer.clock(),
                announcement.workload_id,
                announcement.epoch,
                announcement.fencing_token,
                result.acked,
            )
        )
