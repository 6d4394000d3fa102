"""Implementation of :mod:`standby.node` (see its docstring)."""

from __future__ import annotations

import contextlib
import heapq
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from types import MappingProxyType, TracebackType
from typing import Any, Final, Generic, TypeVar

import anyio
import anyio.abc
import attrs
from typing_extensions import assert_never

from ._effects import (
    Announce,
    CheckContainer,
    CompareAndSetClaim,
    Dropped,
    DropReason,
    ElectionEffect,
    LifecycleEffect,
    LifecycleState,
    PhaseChanged,
    PrimaryChanged,
    Promoted,
    PublishClaim,
    PublishRevocation,
    QueryClaims,
    QueryHeartbeats,
    QuorumShortfall,
    ReclaimContainer,
    SlotRemoved,
    SlotSaved,
    Spawn,
    StartContainer,
    StateChanged,
    StopContainer,
    StopOrphan,
    WithdrawClaim,
)
from ._election import MAX_BATCH, SlotStatus, StandbyElection
from ._errors import NodeError, NotAddressedError, StoreError
from ._helpers import role_of
from ._lifecycle import Never, RestartPolicy, WorkloadLifecycle
from ._models import (
    Envelope,
    Heartbeat,
    Message,
    PromotionAnnouncement,
    PromotionClaim,
    StandbySlot,
    Topology,
)
from ._node_events import (
    AnnouncementPublished,
    ClaimCompared,
    ClaimPublished,
    ClockJumped,
    ContainerExited,
    ContainerStarted,
    ContainerStarting,
    ContainerStopped,
    HeartbeatPublished,
    InputDropped,
    LifecycleChanged,
    NodeEvent,
    OperationFailed,
    PrimaryFollowed,
    PromotedHere,
    QuorumMissed,
    Reconciled,
    RevocationPublished,
    SlotPhaseChanged,
    SlotsNotPersisted,
    SubscriptionLost,
)
from ._protocols import (
    MESSAGE_KINDS,
    AtomicClaims,
    ContainerRuntime,
    PublishResult,
    Query,
    QueryResult,
    RelayTransport,
    ReportsDrops,
    RunningWorkload,
    SlotStore,
    TransportDrop,
)
from ._roles import NotAddressed, Primary, Role, Standby
from ._state import NodeState, PrimaryRecord, PromotionIntent
from ._timing import Timing

__all__ = [
    "AnnouncementPublished",
    "ClaimCompared",
    "ClaimPublished",
    "ClockJumped",
    "ContainerExited",
    "ContainerStarted",
    "ContainerStarting",
    "ContainerStopped",
    "HeartbeatPublished",
    "InputDropped",
    "LifecycleChanged",
    "NodeEvent",
    "NodeStatus",
    "OperationFailed",
    "PrimaryFollowed",
    "PrimaryStatus",
    "PromotedHere",
    "QuorumMissed",
    "Reconciled",
    "RevocationPublished",
    "SlotPhaseChanged",
    "SlotsNotPersisted",
    "SpawnRequest",
    "StandbyNode",
    "SubscriptionLost",
]

SpecT = TypeVar("SpecT")
_T = TypeVar("_T")

LOGGER_NAME = "standby.node"

_TERMINAL = frozenset({LifecycleState.FENCED, LifecycleState.FAILED, LifecycleState.EXPIRED})
_RUNNING = frozenset({LifecycleState.LIVE, LifecycleState.SUSPECT})
#: How many times an announcement or a withdrawal is published before giving up.
_PUBLISH_ATTEMPTS = 4
#: A stop is retried until it succeeds; the wait between tries is capped at this.
_MAX_STOP_BACKOFF = 60.0
#: Shortest sleep of the timer loop (guards a busy loop; see _timer_loop).
_MIN_SLEEP = 1e-3
#: A lost subscription is retried after retry_interval, doubling up to this many times.
_MAX_SUBSCRIBE_DOUBLINGS = 5
#: Early heartbeats are at least this fraction of heartbeat_interval apart
#: (each heartbeat feeds every workload's lifecycle: O(workloads)).
_EARLY_HEARTBEAT_SPACING = 0.25
#: Seconds a change of the live subscription waits, so that changes coalesce.
_SUBSCRIBE_COALESCE = 0.05
_NEVER: Final = Never()


@attrs.frozen
class SpawnRequest(Generic[SpecT]):
    """A consumer's request, sent alike to the primary and to every standby.

    ``topology`` names the primary and the ordered standbys in whatever
    encoding the consumer used; the node canonicalises them through its
    transport. ``created_at`` defaults to the moment each node accepts it;
    consumers should set it, so the primary and the standbys agree on when the
    reservation began (a primary that has no lease by ``created_at + silence -
    max_clock_skew`` never starts the workload, as the standbys may promote).
    ``restart`` applies when this node runs the workload as primary without
    standbys (``None``: the node's default). ``spec_id`` is the id of the
    offer the consumer paid for; a standby keeps it in its slot (and store).
    """

    workload_id: str
    topology: Topology
    spec: SpecT
    owner: str
    expires_at: float
    created_at: float | None = None
    restart: RestartPolicy | None = None
    spec_id: str | None = None


@attrs.frozen
class PrimaryStatus:
    """A snapshot of one workload this node runs (or ran) as primary."""

    workload_id: str
    state: LifecycleState
    epoch: int
    fencing_token: int
    lease_end: float | None
    standbys: tuple[str, ...]
    running: bool


@attrs.frozen
class NodeStatus:
    """A snapshot of the whole node, from :meth:`StandbyNode.status`."""

    identity: str
    running: bool
    slots: tuple[SlotStatus, ...]
    primaries: tuple[PrimaryStatus, ...]
    counters: Mapping[str, int] = attrs.field(eq=False)

    def slot(self, workload_id: str) -> SlotStatus | None:
        """The slot of ``workload_id``, if this node holds one."""
        return next((s for s in self.slots if s.workload_id == workload_id), None)

    def primary(self, workload_id: str) -> PrimaryStatus | None:
        """The primary record of ``workload_id``, if this node runs it."""
        return next((p for p in self.primaries if p.workload_id == workload_id), None)


class _Primary(Generic[SpecT]):
    """A workload this node runs as primary (private)."""

    __slots__ = (
        "busy",
        "created_at",
        "expires_at",
        "handle",
        "lifecycle",
        "renewed",
        "spec",
        "started",
        "starting",
        "stopped",
    )

    def __init__(
        self,
        lifecycle: WorkloadLifecycle,
        spec: SpecT | None,
        handle: Any = None,
        *,
        created_at: float,
        expires_at: float,
    ) -> None:
        self.lifecycle = lifecycle
        #: ``None`` for a workload adopted after a restart until the host re-accepts it.
        self.spec = spec
        self.handle = handle
        self.created_at = created_at
        self.expires_at = expires_at
        self.busy = 0
        self.starting: anyio.Event | None = None
        self.started = handle is not None
        self.stopped = False
        #: The lease end the runtime was last given.
        self.renewed = -math.inf

    def saved(self) -> PrimaryRecord:
        """What the store keeps of this workload."""
        lifecycle = self.lifecycle
        return PrimaryRecord(
            workload_id=lifecycle.workload_id,
            epoch=lifecycle.epoch,
            fencing_token=lifecycle.fencing_token,
            standbys=lifecycle.standbys,
            created_at=self.created_at,
            expires_at=self.expires_at,
            started=self.started,
        )


class StandbyNode(Generic[SpecT]):
    """Warm-standby failover for one provider, on anyio (asyncio or trio).

    Use it as an async context manager (or start :meth:`run` in a task
    group). On entry it loads the slot store and restores the slots (expired
    ones are dropped and the store rewritten); on exit (including
    cancellation) it stops its tasks and saves the slot table one last time.
    Exiting does **not** stop the containers it runs: a node that goes away
    looks like a crash to its peers, and the lease rules take over.

    ``store=None`` keeps slots in memory only. ``on_event`` receives a
    :data:`~standby.node.NodeEvent` for everything worth a metric.
    ``atomic_claims`` defaults to whether the transport implements
    :class:`~standby.protocols.AtomicClaims`. ``wall_clock`` must return Unix
    seconds; in tests pass ``lambda: EPOCH + anyio.current_time()``.
    """

    def __init__(
        self,
        *,
        transport: RelayTransport,
        runtime: ContainerRuntime,
        store: SlotStore | None = None,
        timing: Timing | None = None,
        wall_clock: Callable[[], float] = time.time,
        on_event: Callable[[NodeEvent], object] | None = None,
        restart: RestartPolicy = _NEVER,
        atomic_claims: bool | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.transport = transport
        self.runtime = runtime
        self.store = store
        self.timing = timing if timing is not None else Timing()
        self.wall_clock = wall_clock
        self.on_event = on_event
        self.restart = restart
        if atomic_claims is None:
            atomic_claims = isinstance(transport, AtomicClaims)
        elif atomic_claims and not isinstance(transport, AtomicClaims):
            raise TypeError(
                f"atomic_claims=True needs a transport with AtomicClaims, got {transport!r}"
            )
        self.atomic_claims = atomic_claims
        relay_count = getattr(transport, "relay_count", None)
        if relay_count != self.timing.relay_count:
            raise NodeError(
                f"the transport reads and writes {relay_count} relays but the timing is set for "
                f"relay_count={self.timing.relay_count}: its quorums (write "
                f"{self.timing.write_quorum}, read {self.timing.read_quorum}) would not overlap; "
                "build the Timing with the transport's relay count"
            )
        stop_grace = getattr(runtime, "stop_grace", None)
        if not isinstance(stop_grace, (int, float)) or stop_grace > self.timing.fence_grace:
            raise NodeError(
                f"the runtime stops a workload up to stop_grace={stop_grace!r} s after its "
                f"lease end, more than the timing's fence_grace={self.timing.fence_grace} s: "
                "a standby could start it while the old one still runs"
            )
        self.me = transport.identity
        self.logger = logger if logger is not None else logging.getLogger(LOGGER_NAME)
        self.election: StandbyElection[SpecT] = StandbyElection(
            me=self.me, timing=self.timing, atomic_claims=atomic_claims
        )
        self.counters: dict[str, int] = {}
        self._primaries: dict[str, _Primary[SpecT]] = {}
        #: Each primary's next lifecycle deadline, and a heap of them (stale
        #: entries dropped lazily): the timer costs O(log n) per change, not
        #: O(primaries) per wake.
        self._lifecycle_at: dict[str, float] = {}
        self._lifecycle_heap: list[tuple[float, str]] = []
        self._intents: dict[str, PromotionIntent] = {}
        #: Workloads this node ran before a restart and found gone: never started again here.
        self._ended: dict[str, str] = {}
        self._clock_mark: tuple[float, float] | None = None
        self._spawned: dict[tuple[str, int], Any] = {}
        self._deferred: list[tuple[Callable[..., Coroutine[Any, Any, Any]], tuple[Any, ...]]] = []
        self._entering = False
        self._subscription_failures = 0
        self._stack: contextlib.AsyncExitStack | None = None
        self._group: anyio.abc.TaskGroup | None = None
        self._running = False
        self._wake: anyio.Event | None = None
        self._heartbeat_now: anyio.Event | None = None
        self._interest_changed: anyio.Event | None = None
        self._dirty: anyio.Event | None = None
        self._saved: anyio.Event | None = None
        self._version = 0
        self._saved_version = 0
        self._save_attempts = 0
        self._save_failure: tuple[int, int, BaseException] | None = None
        self._withheld: frozenset[str] = frozenset()

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return (
            f"StandbyNode({self.me!r}, {state}, {len(self.election.slots)} slots, "
            f"{len(self._primaries)} primaries)"
        )

    # ------------------------------------------------------------------
    # Life of the node
    # ------------------------------------------------------------------

    async def __aenter__(self) -> StandbyNode[SpecT]:
        if self._stack is not None:
            raise NodeError(f"node {self.me!r} is already running")
        self._wake = anyio.Event()
        self._heartbeat_now = anyio.Event()
        self._interest_changed = anyio.Event()
        self._dirty = anyio.Event()
        self._saved = anyio.Event()
        self._entering = True
        try:
            await self._restore()
        finally:
            self._entering = False
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            group = await stack.enter_async_context(anyio.create_task_group())
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        self._group = group
        self._running = True
        if isinstance(self.transport, ReportsDrops):
            self.transport.set_drop_hook(self._on_transport_drop)
        group.start_soon(self._timer_loop, name=f"standby-timer-{self.me}")
        group.start_soon(self._heartbeat_loop, name=f"standby-heartbeat-{self.me}")
        group.start_soon(self._subscription_loop, name=f"standby-subscription-{self.me}")
        group.start_soon(self._persist_loop, name=f"standby-store-{self.me}")
        deferred, self._deferred = self._deferred, []
        for func, args in deferred:
            group.start_soon(func, *args)
        if self.election.slots:
            group.start_soon(self._catch_up, tuple(self.election.slots))
        self._log(logging.INFO, "node started with %d slots", len(self.election.slots))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        stack, group = self._stack, self._group
        assert stack is not None
        assert group is not None
        self._running = False
        group.cancel_scope.cancel()
        try:
            return await stack.__aexit__(exc_type, exc, tb)
        finally:
            self._stack = self._group = None
            if isinstance(self.transport, ReportsDrops):
                self.transport.set_drop_hook(None)
            with anyio.CancelScope(shield=True):
                await self._final_save()
            self._log(logging.INFO, "node stopped")

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[StandbyNode[SpecT]] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until cancelled: ``node = await task_group.start(node.run)``."""
        async with self:
            task_status.started(self)
            await anyio.sleep_forever()

    @property
    def running(self) -> bool:
        """Whether the node's tasks are running."""
        return self._running

    async def _restore(self) -> None:
        """Load the saved state and reconcile it with the runtime and the relays."""
        state: NodeState[SpecT] = NodeState()
        if self.store is not None:
            state = await self.store.load_state()
        now = self._now()
        effects = self.election.restore(now, state.slots)
        self._count("slots_restored", len(self.election.slots))
        # Slots dropped on restore must not come back: rewrite the store.
        if any(isinstance(e, SlotRemoved) for e in effects):
            self._version += 1
        for effect in effects:
            if isinstance(effect, SlotRemoved):
                self._log(
                    logging.INFO,
                    "dropped %s slot on restore",
                    effect.reason,
                    workload_id=effect.workload_id,
                    role="standby",
                )
        await self._reconcile(state)

    async def _reconcile(self, state: NodeState[SpecT]) -> None:
        """Adopt or stop what the previous incarnation left behind (guarantee 5).

        The runtime says what still runs, the store what this node intended
        and ran, the relays which epoch each workload is at. A container runs
        on only when its lease is valid, the store knows its token and no
        later epoch was claimed or announced; everything else is stopped. A
        promotion that the restart interrupted is given up (its slot is
        dropped and its claim withdrawn) so its epoch and token are never
        used twice; a replicated workload whose container is gone is fenced
        (its revocation lets the standbys take over at once).
        """
        timeout = self.timing.query_timeout
        with anyio.fail_after(2 * timeout + self.timing.spawn_timeout):
            running: Sequence[RunningWorkload] = await self.runtime.list()
        primaries = {p.workload_id: p for p in state.primaries}
        intents = {i.workload_id: i for i in state.intents}
        workloads = set(primaries) | set(intents) | {r.workload_id for r in running}
        epochs, _own, reached = await self._read_epochs(workloads)
        now = self._now()
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
            reason = self._adoption_refused(found, known, epochs, reached, now, adopted)
            if reason is None and known is not None:
                self._adopt(now, found, known)
                adopted.add(workload_id)
                continue
            epoch = known.epoch if known is not None else -1
            await self._stop_handle(found.handle, workload_id, token, reason or "", "node")
            self._reconciled(now, workload_id, "stopped", epoch, token, reason or "")
        for workload_id, record in primaries.items():
            if workload_id in adopted:
                continue
            if record.replicated:
                # Started or about to start: either way nothing of it runs here
                # now, and the standbys may already count on its silence.
                self._fence_lost(now, record, "its container was gone after a restart")
        for workload_id, intent in intents.items():
            if workload_id in adopted:
                # Its token now runs here: like a finished promotion, the intent
                # stays as the spent marker until the reservation ends.
                if intent.expires_at > now:
                    self._intents[workload_id] = attrs.evolve(intent, spent=True)
                continue
            if intent.spent:
                if intent.expires_at > now:
                    self._intents[workload_id] = intent  # still spent: keep the marker
                continue
            self._abandon(now, intent)
        if primaries or intents or running:
            self._version += 1  # the reconciled state replaces what was saved

    async def _read_epochs(
        self, workloads: set[str]
    ) -> tuple[dict[str, int], dict[str, int], bool]:
        """The highest epoch others claimed or announced, and this node announced, per workload.

        Withdrawn claims do not count (nor this node's own claims: those it
        withdraws itself). The last value tells whether a read quorum
        answered; without one, nothing may be adopted.
        """
        if not workloads:
            return {}, {}, True
        query = Query(
            kinds=("claim", "announcement"),
            workload_ids=workloads,
            until=self._now() + self.timing.max_clock_skew,
        )
        result = await self._query(query, operation="reconcile", workload_id=None)
        others: dict[str, int] = {}
        own: dict[str, int] = {}
        for envelope in result.envelopes:
            message = envelope.message
            if isinstance(message, PromotionClaim) and message.withdrawn:
                continue
            if not isinstance(message, (PromotionClaim, PromotionAnnouncement)):
                continue
            mine = envelope.signer == self.me
            if mine and isinstance(message, PromotionClaim):
                continue
            into = own if mine else others
            # An announcement without an epoch (an older peer) still means a takeover.
            epoch = message.epoch if message.epoch is not None else 1
            into[message.workload_id] = max(into.get(message.workload_id, -1), epoch)
        return others, own, len(result.answered) >= self.timing.read_quorum

    def _adoption_refused(
        self,
        found: RunningWorkload,
        known: PrimaryRecord | PromotionIntent | None,
        epochs: Mapping[str, int],
        reached: bool,
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
        if replicated and not reached:
            return "no read quorum answered: the workload's current epoch is unknown"
        later = epochs.get(found.workload_id, -1)
        if replicated and later > known.epoch:
            return f"a peer claimed or announced epoch {later} (this container runs {known.epoch})"
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
            self._spawn_task(
                self._run_announce,
                Announce(
                    PromotionAnnouncement(
                        workload_id=workload_id,
                        new_primary=self.me,
                        promoted_at=now,
                        epoch=known.epoch,
                        fencing_token=known.fencing_token,
                    )
                ),
            )
        else:
            standbys, created_at, expires_at = known.standbys, known.created_at, known.expires_at
        lifecycle = WorkloadLifecycle.promoted(
            workload_id=workload_id,
            me=self.me,
            timing=self.timing,
            now=now,
            standbys=standbys,
            epoch=known.epoch,
            fencing_token=known.fencing_token,
            lease_from=found.lease_end - self.timing.lease,
            expires_at=expires_at,
            restart=self.restart,
        )
        record = _Primary(
            lifecycle, spec, found.handle, created_at=created_at, expires_at=expires_at
        )
        record.renewed = found.lease_end
        self._primaries[workload_id] = record
        self._schedule(workload_id)
        self._count("adopted")
        self._reconciled(
            now, workload_id, "adopted", known.epoch, known.fencing_token, "lease still valid"
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
        lifecycle = WorkloadLifecycle.promoted(
            workload_id=workload_id,
            me=self.me,
            timing=self.timing,
            now=now,
            standbys=record.standbys,
            epoch=record.epoch,
            fencing_token=record.fencing_token,
            lease_from=now - self.timing.lease,  # over now: the first tick fences and revokes
            expires_at=record.expires_at,
        )
        self._primaries[workload_id] = _Primary(
            lifecycle, None, created_at=record.created_at, expires_at=record.expires_at
        )
        self._schedule(workload_id)
        self._ended[workload_id] = reason
        self._reconciled(now, workload_id, action, record.epoch, record.fencing_token, reason)

    def _abandon(self, now: float, intent: PromotionIntent) -> None:
        """Give up a promotion the restart interrupted: its epoch and token are spent.

        The slot is dropped and the epoch revoked, but the claim stays: its
        token may have reached a workload, so no peer may take that epoch
        again (a lower-indexed peer would carry a lower token). Peers follow
        this node as that epoch's primary (through its claim or its
        announcement) and take the revocation as the signal to promote into
        the next epoch. The spent intent stays in the store until the
        reservation's end, so the node never stands by for the workload again.
        """
        workload_id = intent.workload_id
        reason = "a promotion was interrupted by a restart; its token is never used again"
        slot = self.election.slots.get(workload_id)
        if slot is not None:
            self.election.remove(now, workload_id)
        self._intents[workload_id] = attrs.evolve(intent, spent=True)
        self._fence_lost(
            now,
            PrimaryRecord(
                workload_id=workload_id,
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

    def _reconciled(
        self, now: float, workload_id: str, action: str, epoch: int, token: int, reason: str
    ) -> None:
        self._count(f"reconcile_{action}")
        self._log(
            logging.WARNING if action != "adopted" else logging.INFO,
            "after restart: %s (epoch %d, token %d): %s",
            action,
            epoch,
            token,
            reason,
            workload_id=workload_id,
            role="node",
        )
        self._emit(Reconciled(now, workload_id, action, epoch, token, reason))

    # ------------------------------------------------------------------
    # Host surface
    # ------------------------------------------------------------------

    async def accept(self, request: SpawnRequest[SpecT]) -> Role:
        """Take a consumer's spawn request: reserve a slot or run the workload.

        Identities are canonicalised by the transport before the role is
        computed (failure mode 2). As a standby the node reserves a slot and
        returns once the slot is saved (raises :class:`~standby.StoreError`
        when it could not be; the slot is then kept and saving is retried).
        As primary it starts a :class:`~standby.WorkloadLifecycle` and
        heartbeats at once; the container starts when the lease is granted.
        Raises :class:`~standby.NotAddressedError` when the request names this
        provider in neither role, :class:`~standby.IdentityError` for a
        malformed identity and :class:`~standby.InvalidSlot` /
        :class:`~standby.TopologyError` for an invalid request.
        """
        self._require_running()
        canonical = self.transport.canonical
        topology = Topology(
            primary=canonical(request.topology.primary),
            standbys=tuple(canonical(s) for s in request.topology.standbys),
        )
        role = role_of(self.me, topology.primary, topology.standbys)
        now = self._now()
        workload_id = request.workload_id
        if isinstance(role, NotAddressed):
            raise NotAddressedError(workload_id, self.me, topology.primary, topology.standbys)
        if isinstance(role, Primary):
            if await self._accept_primary(now, request, topology):
                await self.flush()
            return role
        assert isinstance(role, Standby)
        if workload_id in self.election.slots:
            self._log(
                logging.INFO,
                "re-accepted: the slot is already reserved (epoch %d)",
                self.election.slots[workload_id].epoch,
                workload_id=workload_id,
                role="standby",
            )
            return role
        running = self._primaries.get(workload_id)
        if running is not None and running.lifecycle.state not in _TERMINAL:
            if running.spec is None:
                running.spec = request.spec
            self._log(
                logging.INFO,
                "re-accepted: this node already runs it as primary of epoch %d",
                running.lifecycle.epoch,
                workload_id=workload_id,
                role="primary",
            )
            return role
        spent = self._intents.get(workload_id)
        if spent is not None and spent.spent:
            raise NodeError(
                f"workload {workload_id!r}: this node already promoted into epoch {spent.epoch} "
                f"(token {spent.fencing_token}) for it, so it no longer stands by for it; the "
                "consumer may reserve another standby"
            )
        ended = self._ended.get(workload_id)
        if ended is not None:
            raise NodeError(
                f"workload {workload_id!r} ran here as primary before this node restarted and "
                f"was fenced ({ended}); this node no longer stands by for it"
            )
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
        effects = self.election.reserve(now, slot)
        self._log(
            logging.INFO,
            "reserved standby slot %d of %d for primary %s",
            role.index,
            role.count,
            topology.primary,
            workload_id=workload_id,
            role="standby",
        )
        self._election_effects(now, effects)
        await self.flush()
        return role

    async def _accept_primary(
        self, now: float, request: SpawnRequest[SpecT], topology: Topology
    ) -> bool:
        """Start ``request`` as primary; ``False`` when it already runs here (adopted).

        A workload adopted after a restart is not started again: the request
        only hands its spec back. Before a replicated workload starts, the
        relays are asked which epoch it is at (failure mode 16): when a
        standby already claimed or announced a later epoch, or no read quorum
        answers, the request is refused.
        """
        workload_id = request.workload_id
        ended = self._ended.get(workload_id)
        if ended is not None:
            raise NodeError(
                f"workload {workload_id!r} ran here as primary before this node restarted and "
                f"was fenced ({ended}); its standbys take it over, so it is not started again"
            )
        existing = self._primaries.get(workload_id)
        if existing is not None and existing.spec is None:
            existing.spec = request.spec
            if existing.lifecycle.state not in _TERMINAL:
                self._log(
                    logging.INFO,
                    "re-accepted: already runs here (adopted after a restart)",
                    workload_id=workload_id,
                    role="primary",
                )
                return False
        self._check_primary(workload_id)
        if topology.standbys:
            await self._check_epoch(workload_id)
            self._check_primary(workload_id)
        self._start_primary(now, request, topology)
        return True

    async def _check_epoch(self, workload_id: str) -> None:
        epochs, own, reached = await self._read_epochs({workload_id})
        if not reached:
            raise NodeError(
                f"workload {workload_id!r}: fewer than {self.timing.read_quorum} relays answered, "
                "so it is unknown whether a standby already took it over; try again"
            )
        later = max(epochs.get(workload_id, -1), own.get(workload_id, -1))
        if later > 0:
            raise NodeError(
                f"workload {workload_id!r} was already taken over (epoch {later} was claimed "
                "or announced): this primary must not start it again"
            )

    def _check_primary(self, workload_id: str) -> None:
        existing = self._primaries.get(workload_id)
        if existing is not None:
            state = existing.lifecycle.state
            if state not in _TERMINAL:
                raise NodeError(f"workload {workload_id!r} already runs here as primary")
            raise NodeError(
                f"workload {workload_id!r} ended here ({state.value}) and is still winding "
                "down (stopping its container or publishing its revocation); try again later"
            )
        if workload_id in self.election.slots:
            raise NodeError(f"workload {workload_id!r} has a standby slot here; remove it first")

    def _start_primary(self, now: float, request: SpawnRequest[SpecT], topology: Topology) -> None:
        workload_id = request.workload_id
        created_at = now if request.created_at is None else request.created_at
        lifecycle = WorkloadLifecycle(
            workload_id=workload_id,
            me=self.me,
            timing=self.timing,
            standbys=topology.standbys,
            created_at=created_at,
            expires_at=request.expires_at,
            restart=request.restart if request.restart is not None else self.restart,
        )
        self._primaries[workload_id] = _Primary(
            lifecycle, request.spec, created_at=created_at, expires_at=request.expires_at
        )
        self._schedule(workload_id)
        self._mark_dirty()
        self._log(
            logging.INFO,
            "accepted as primary with %d standbys",
            len(topology.standbys),
            workload_id=workload_id,
            role="primary",
        )
        self._lifecycle_call(workload_id, lambda lc: lc.start(now), now)
        self._poke_heartbeat()

    async def handover(
        self, workload_id: str, state_uri: str | None = None, *, reason: str = "handover"
    ) -> None:
        """Planned switchover of a workload this node runs as primary.

        The node fences the workload (stops the container), then publishes a
        signed revocation; the first standby takes over without waiting out
        the silence. Raises :class:`~standby.NodeError` for a workload this
        node does not run and :class:`~standby.StandbyError` when the
        workload has no standbys or already ended.
        """
        self._require_running()
        record = self._primaries.get(workload_id)
        if record is None:
            raise NodeError(f"workload {workload_id!r} does not run here as primary")
        now = self._now()
        effects = record.lifecycle.handover(now, state_uri=state_uri, reason=reason)
        self._log(
            logging.INFO, "handing over (%s)", reason, workload_id=workload_id, role="primary"
        )
        self._lifecycle_effects(workload_id, now, effects)

    async def remove(self, workload_id: str) -> bool:
        """Drop a reserved slot (the consumer cancelled); ``False`` when there was none."""
        self._require_running()
        if workload_id not in self.election.slots:
            return False
        now = self._now()
        self._election_effects(now, self.election.remove(now, workload_id))
        await self.flush()
        return True

    async def flush(self) -> None:
        """Wait until the slot table as it is now has been saved.

        Raises :class:`~standby.StoreError` when the save failed (the node
        keeps retrying in the background).
        """
        if self.store is None:
            return
        target = self._version
        attempts = self._save_attempts
        while self._saved_version < target:
            failure = self._save_failure
            if failure is not None and failure[0] > attempts and failure[1] >= target:
                raise StoreError(f"slot table not saved: {failure[2]}") from failure[2]
            assert self._saved is not None
            await self._saved.wait()

    def status(self) -> NodeStatus:
        """A snapshot: slots with their phase, primaries with their state, counters."""
        slots = tuple(self.election.status(w) for w in sorted(self.election.slots))
        primaries = tuple(
            PrimaryStatus(
                workload_id=workload_id,
                state=record.lifecycle.state,
                epoch=record.lifecycle.epoch,
                fencing_token=record.lifecycle.fencing_token,
                lease_end=record.lifecycle.lease_end(),
                standbys=record.lifecycle.standbys,
                running=record.started and not record.stopped,
            )
            for workload_id, record in sorted(self._primaries.items())
        )
        counters = dict(self.counters)
        for name, value in self.election.counters.items():
            counters[f"election.{name}"] = value
        return NodeStatus(
            identity=self.me,
            running=self._running,
            slots=slots,
            primaries=primaries,
            counters=MappingProxyType(counters),
        )

    # ------------------------------------------------------------------
    # Plumbing
    # ------------------------------------------------------------------

    def _now(self) -> float:
        return self.wall_clock()

    def _require_running(self) -> None:
        if not self._running:
            raise NodeError(f"node {self.me!r} is not running: use `async with node:`")

    def _count(self, name: str, amount: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + amount

    def _log(
        self,
        level: int,
        message: str,
        *args: object,
        workload_id: str | None = None,
        role: str = "node",
        exc_info: BaseException | None = None,
    ) -> None:
        self.logger.log(
            level,
            message,
            *args,
            extra={"workload_id": workload_id or "-", "role": role, "node": self.me},
            exc_info=exc_info,
        )

    def _emit(self, event: NodeEvent) -> None:
        hook = self.on_event
        if hook is None:
            return
        try:
            hook(event)
        except Exception as exc:
            self._count("event_hook_errors")
            self._log(logging.WARNING, "event hook raised on %r", event, exc_info=exc)

    def _spawn_task(self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        group = self._group
        if group is None:
            if self._entering:  # reconciling on entry: run once the tasks start
                self._deferred.append((func, args))
                return
            self._count("effects_after_stop")
            return
        group.start_soon(func, *args)

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _poke_heartbeat(self) -> None:
        if self._heartbeat_now is not None:
            self._heartbeat_now.set()

    def _failed(
        self,
        operation: str,
        exc: BaseException | str,
        *,
        workload_id: str | None = None,
        role: str = "node",
    ) -> None:
        self._count(f"{operation}_errors")
        text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        self._log(
            logging.WARNING, "%s failed: %s", operation, text, workload_id=workload_id, role=role
        )
        self._emit(OperationFailed(self._now(), operation, workload_id, text))

    async def _bounded(self, limit: float, call: Awaitable[_T]) -> _T:
        """Await an adapter call with a safety net of twice its own timeout."""
        with anyio.fail_after(2 * limit):
            return await call

    async def _publish(
        self, message: Message, *, operation: str, workload_id: str | None, role: str
    ) -> PublishResult:
        timeout = self.timing.query_timeout
        try:
            return await self._bounded(timeout, self.transport.publish(message, timeout=timeout))
        except Exception as exc:
            self._failed(operation, exc, workload_id=workload_id, role=role)
            return PublishResult(frozenset(), {"*": str(exc) or type(exc).__name__})

    async def _query(self, query: Query, *, operation: str, workload_id: str | None) -> QueryResult:
        timeout = self.timing.query_timeout
        try:
            return await self._bounded(timeout, self.transport.query(query, timeout=timeout))
        except Exception as exc:
            self._failed(operation, exc, workload_id=workload_id, role="standby")
            return QueryResult((), frozenset())

    async def _publish_until_quorum(
        self, message: Message, *, operation: str, workload_id: str | None, role: str
    ) -> PublishResult:
        """Publish, retrying with doubling waits until a write quorum acknowledged."""
        result = PublishResult(frozenset())
        acked: set[str] = set()
        wait = self.timing.retry_interval
        for attempt in range(_PUBLISH_ATTEMPTS):
            if attempt:
                await anyio.sleep(wait)
                wait *= 2
            result = await self._publish(
                message, operation=operation, workload_id=workload_id, role=role
            )
            acked |= result.acked
            if len(acked) >= self.timing.write_quorum:
                break
            self._count(f"{operation}_retries")
        return PublishResult(frozenset(acked), result.errors)

    # ------------------------------------------------------------------
    # Election side
    # ------------------------------------------------------------------

    def _election_call(self, now: float, call: Callable[[], list[ElectionEffect]]) -> None:
        try:
            effects = call()
        except Exception as exc:
            self._count("machine_errors")
            self._log(logging.ERROR, "election machine refused an input", exc_info=exc)
            return
        self._election_effects(now, effects)

    def _election_effects(self, now: float, effects: Sequence[ElectionEffect]) -> None:
        interest = False
        for effect in effects:
            interest |= self._election_effect(now, effect)
        if interest:
            self._refresh_interest()
        self._poke()

    def _election_effect(self, now: float, effect: ElectionEffect) -> bool:
        """Carry out one election effect; whether the subscriptions need a refresh.

        The one dispatcher of election effects: a new effect type that is not
        handled here fails type checking at ``assert_never``.
        """
        match effect:
            case QueryHeartbeats():
                self._spawn_task(self._run_query_heartbeats, effect)
            case QueryClaims():
                self._spawn_task(self._run_query_claims, effect)
            case PublishClaim():
                self._spawn_task(self._run_publish_claim, effect)
            case CompareAndSetClaim():
                self._spawn_task(self._run_compare_claim, effect)
            case WithdrawClaim():
                self._spawn_task(self._run_withdraw, effect)
            case Spawn():
                self._spawn_task(self._run_spawn, effect)
            case Announce():
                self._spawn_task(self._run_announce, effect)
            case Promoted():
                self._promoted(now, effect)
                return True
            case StopOrphan():
                self._stop_orphan(effect)
            case SlotSaved():
                self._mark_dirty()
                return True
            case SlotRemoved():
                self._slot_removed(effect)
                return True
            case PrimaryChanged():
                self._primary_changed(now, effect)
            case Dropped():
                self._input_dropped(now, effect)
            case QuorumShortfall():
                self._quorum_missed(now, effect)
            case PhaseChanged():
                self._phase_changed(now, effect)
            case _:
                assert_never(effect)
        return False

    def _slot_removed(self, effect: SlotRemoved) -> None:
        self._mark_dirty()
        self._log(
            logging.INFO,
            "slot removed (%s)",
            effect.reason,
            workload_id=effect.workload_id,
            role="standby",
        )

    def _primary_changed(self, now: float, effect: PrimaryChanged) -> None:
        self._count("primary_changed")
        # What the new primary published before this slot followed it
        # (a revocation above all) went by unheeded: read it back.
        self._spawn_task(self._catch_up, (effect.workload_id,))
        self._log(
            logging.INFO,
            "%s took over from %s in epoch %d",
            effect.new_primary,
            effect.old_primary,
            effect.epoch,
            workload_id=effect.workload_id,
            role="standby",
        )
        self._emit(
            PrimaryFollowed(
                now, effect.workload_id, effect.old_primary, effect.new_primary, effect.epoch
            )
        )

    def _input_dropped(self, now: float, effect: Dropped) -> None:
        self._count("dropped")
        self._log(
            logging.INFO,
            "dropped input from %s: %s (%s)",
            effect.signer,
            effect.reason.value,
            effect.detail,
            workload_id=effect.workload_id,
            role="standby",
        )
        self._emit(
            InputDropped(now, effect.workload_id, effect.signer, effect.reason, effect.detail)
        )

    def _quorum_missed(self, now: float, effect: QuorumShortfall) -> None:
        self._count("quorum_shortfall")
        self._log(
            logging.WARNING,
            "%s reached %d of %d relays; retrying later",
            effect.stage,
            effect.answered,
            effect.needed,
            workload_id=",".join(effect.workload_ids) or None,
            role="standby",
        )
        self._emit(
            QuorumMissed(now, effect.stage, effect.workload_ids, effect.answered, effect.needed)
        )

    def _phase_changed(self, now: float, effect: PhaseChanged) -> None:
        old, new = effect.old, effect.new
        self._log(
            logging.INFO,
            "slot phase %s -> %s%s",
            "-" if old is None else old.value,
            "-" if new is None else new.value,
            " (lease revoked)" if effect.revoked else "",
            workload_id=effect.workload_id,
            role="standby",
        )
        self._emit(SlotPhaseChanged(now, effect.workload_id, old, new, effect.revoked))

    def _on_transport_drop(self, drop: TransportDrop) -> None:
        """The transport dropped an incoming message (``ReportsDrops``): count, log, report."""
        self._count("transport_drops")
        self._count(f"transport_drops.{drop.reason.name.lower()}")
        forged = drop.reason in (DropReason.BAD_SIGNATURE, DropReason.UNEXPECTED_AUTHOR)
        self._log(
            logging.WARNING if forged else logging.INFO,
            "transport dropped a message from %s on %s: %s (%s)",
            drop.signer,
            drop.relay,
            drop.reason.value,
            drop.detail,
            workload_id=drop.workload_id,
            role="standby",
        )
        self._emit(
            InputDropped(
                self._now(),
                drop.workload_id,
                drop.signer,
                drop.reason,
                f"{drop.detail} (dropped by the transport, relay {drop.relay})",
            )
        )

    def _on_envelope(self, envelope: Envelope[Message]) -> None:
        self._count("messages")
        if envelope.signer == self.me:
            return
        message = envelope.message
        if not isinstance(message, Heartbeat) and message.workload_id not in self.election.slots:
            # The subscription filters by author only: a peer's message about
            # a workload it shares with others, not with this node.
            self._count("messages_not_ours")
            return
        now = self._now()
        self._election_call(now, lambda: self.election.on_message(now, envelope))

    async def _run_query_heartbeats(self, effect: QueryHeartbeats) -> None:
        query = Query(
            kinds=("heartbeat", "revocation"),
            authors=(effect.primary,),
            workload_ids=effect.workload_ids,
            until=self._now() + self.timing.max_clock_skew,
        )
        result = await self._query(
            query, operation="query_heartbeats", workload_id=",".join(effect.workload_ids)
        )
        now = self._now()
        self._election_call(
            now,
            lambda: self.election.heartbeats_queried(
                now, effect.request_id, result.envelopes, result.answered
            ),
        )

    async def _run_query_claims(self, effect: QueryClaims) -> None:
        query = Query(
            kinds=("claim", "announcement"),
            workload_ids=effect.workload_ids,
            until=self._now() + self.timing.max_clock_skew,
        )
        result = await self._query(
            query, operation="query_claims", workload_id=",".join(effect.workload_ids)
        )
        now = self._now()
        self._election_call(
            now,
            lambda: self.election.claims_queried(
                now, effect.request_id, result.envelopes, result.answered
            ),
        )

    async def _run_publish_claim(self, effect: PublishClaim) -> None:
        claim = effect.claim
        result = await self._publish(
            claim, operation="publish_claim", workload_id=claim.workload_id, role="standby"
        )
        now = self._now()
        self._emit(
            ClaimPublished(
                now, claim.workload_id, claim.epoch, claim.fencing_token, False, result.acked
            )
        )
        self._log(
            logging.INFO,
            "claimed epoch %d (token %d): %d relays acknowledged",
            claim.epoch,
            claim.fencing_token,
            len(result.acked),
            workload_id=claim.workload_id,
            role="standby",
        )
        self._election_call(
            now,
            lambda: self.election.claim_published(now, effect.request_id, result.acked),
        )

    async def _run_compare_claim(self, effect: CompareAndSetClaim) -> None:
        claim = effect.claim
        transport = self.transport
        assert isinstance(transport, AtomicClaims)
        timeout = self.timing.query_timeout
        won, holder = False, None
        try:
            outcome = await self._bounded(
                timeout, transport.compare_and_set_claim(claim, timeout=timeout)
            )
            won, holder = outcome.won, outcome.holder
        except Exception as exc:
            self._failed("compare_claim", exc, workload_id=claim.workload_id, role="standby")
        now = self._now()
        self._emit(
            ClaimCompared(
                now,
                claim.workload_id,
                claim.epoch,
                claim.fencing_token,
                won,
                None if holder is None else holder.claimant,
            )
        )
        self._election_call(
            now,
            lambda: self.election.claim_compared(now, effect.request_id, won, holder),
        )

    async def _run_withdraw(self, effect: WithdrawClaim) -> None:
        claim = effect.claim
        transport = self.transport
        if self.atomic_claims and isinstance(transport, AtomicClaims):
            timeout = self.timing.query_timeout
            try:
                await self._bounded(timeout, transport.release_claim(claim, timeout=timeout))
            except Exception as exc:
                self._failed("release_claim", exc, workload_id=claim.workload_id, role="standby")
        result = await self._publish_until_quorum(
            claim, operation="withdraw_claim", workload_id=claim.workload_id, role="standby"
        )
        self._emit(
            ClaimPublished(
                self._now(),
                claim.workload_id,
                claim.epoch,
                claim.fencing_token,
                True,
                result.acked,
            )
        )

    async def _run_spawn(self, effect: Spawn[SpecT]) -> None:
        workload_id, token = effect.workload_id, effect.fencing_token
        started_at = self._now()
        self._emit(ContainerStarting(started_at, workload_id, token, promotion=True))
        self._log(
            logging.INFO,
            "spawning as new primary of epoch %d with fencing token %d",
            effect.epoch,
            token,
            workload_id=workload_id,
            role="standby",
        )
        error = await self._record_intent(effect, started_at)
        if error is not None and self._intents.pop(workload_id, None) is not None:
            self._mark_dirty()  # never spawned: the intent that could not be saved is void
        else:
            # From here on the token has been handed to the runtime: even when
            # the spawn fails, the intent stays, so a restarted node never
            # hands that token out again (it gives the promotion up instead).
            try:
                with anyio.fail_after(self.timing.spawn_timeout):
                    handle = await self.runtime.spawn(
                        effect.spec,
                        workload_id=workload_id,
                        fencing_token=token,
                        lease_end=effect.lease_end,
                        restore_from=effect.restore_from,
                    )
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                self._failed("spawn", error, workload_id=workload_id, role="standby")
            else:
                self._spawned[(workload_id, token)] = handle
        now = self._now()
        self._emit(
            ContainerStarted(now, workload_id, token, True, error is None, error, now - started_at)
        )
        self._election_call(
            now,
            lambda: self.election.spawn_finished(now, effect.request_id, error is None, error),
        )
        leftover = self._spawned.pop((workload_id, token), None)
        if leftover is not None:
            # The machine neither promoted nor orphaned it: never leave it running.
            self._count("unclaimed_containers")
            await self._stop_handle(leftover, workload_id, token, "unclaimed spawn", role="standby")

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
        self._intents[effect.workload_id] = intent
        self._mark_dirty()
        if self.store is None:
            return None
        try:
            await self.flush()
        except StoreError as exc:
            error = f"promotion intent not saved, so not spawning: {exc}"
            self._failed("spawn", error, workload_id=effect.workload_id, role="standby")
            return error
        return None

    def _promoted(self, now: float, effect: Promoted[SpecT]) -> None:
        slot = effect.slot
        workload_id = slot.workload_id
        handle = self._spawned.pop((workload_id, effect.fencing_token), None)
        lifecycle = WorkloadLifecycle.promoted(
            workload_id=workload_id,
            me=self.me,
            timing=self.timing,
            now=now,
            standbys=effect.standbys,
            epoch=effect.epoch,
            fencing_token=effect.fencing_token,
            lease_from=effect.lease_from,
            expires_at=slot.expires_at,
            restart=self.restart,
        )
        record = _Primary(
            lifecycle, slot.spec, handle, created_at=slot.created_at, expires_at=slot.expires_at
        )
        intent = self._intents.get(workload_id)
        if intent is not None:
            record.renewed = intent.lease_end
            # Kept, spent, until the reservation ends: this node never stands
            # by for the workload again with an epoch and token it used.
            self._intents[workload_id] = attrs.evolve(intent, spent=True)
        self._primaries[workload_id] = record
        self._schedule(workload_id)
        self._mark_dirty()
        self._count("promotions")
        self._log(
            logging.WARNING,
            "promoted: now primary of epoch %d with fencing token %d",
            effect.epoch,
            effect.fencing_token,
            workload_id=workload_id,
            role="primary",
        )
        self._emit(PromotedHere(now, workload_id, effect.epoch, effect.fencing_token))
        self._poke_heartbeat()

    def _stop_orphan(self, effect: StopOrphan) -> None:
        handle = self._spawned.pop((effect.workload_id, effect.fencing_token), None)
        self._count("orphans")
        self._log(
            logging.WARNING,
            "stopping orphan container (token %d): %s",
            effect.fencing_token,
            effect.reason,
            workload_id=effect.workload_id,
            role="standby",
        )
        if handle is not None:
            self._spawn_task(
                self._stop_handle,
                handle,
                effect.workload_id,
                effect.fencing_token,
                effect.reason,
                "standby",
            )

    async def _run_announce(self, effect: Announce) -> None:
        announcement: PromotionAnnouncement = effect.announcement
        result = await self._publish_until_quorum(
            announcement, operation="announce", workload_id=announcement.workload_id, role="primary"
        )
        self._log(
            logging.INFO,
            "announced epoch %s: %d relays acknowledged",
            announcement.epoch,
            len(result.acked),
            workload_id=announcement.workload_id,
            role="primary",
        )
        self._emit(
            AnnouncementPublished(
                self._now(),
                announcement.workload_id,
                announcement.epoch,
                announcement.fencing_token,
                result.acked,
            )
        )

    async def _catch_up(self, workload_ids: tuple[str, ...]) -> None:
        """After a restart: read revocations, claims and announcements missed while down."""
        # In chunks, so each request and answer stays inside relay limits.
        for first in range(0, len(workload_ids), MAX_BATCH):
            chunk = workload_ids[first : first + MAX_BATCH]
            query = Query(kinds=("revocation", "claim", "announcement"), workload_ids=chunk)
            result = await self._query(query, operation="catch_up", workload_id=None)
            for envelope in result.envelopes:
                self._on_envelope(envelope)

    # ------------------------------------------------------------------
    # Primary side
    # ------------------------------------------------------------------

    def _lifecycle_call(
        self,
        workload_id: str,
        call: Callable[[WorkloadLifecycle], list[LifecycleEffect]],
        now: float,
    ) -> None:
        record = self._primaries.get(workload_id)
        if record is None:
            return
        try:
            effects = call(record.lifecycle)
        except Exception as exc:
            self._count("machine_errors")
            self._log(
                logging.ERROR,
                "lifecycle machine refused an input",
                workload_id=workload_id,
                role="primary",
                exc_info=exc,
            )
            return
        self._lifecycle_effects(workload_id, now, effects)

    def _lifecycle_effects(
        self, workload_id: str, now: float, effects: Sequence[LifecycleEffect]
    ) -> None:
        record = self._primaries.get(workload_id)
        if record is None:
            return
        for effect in effects:
            self._lifecycle_effect(workload_id, record, now, effect)
        self._retire(workload_id)
        self._schedule(workload_id)
        self._poke()

    def _lifecycle_effect(
        self, workload_id: str, record: _Primary[SpecT], now: float, effect: LifecycleEffect
    ) -> None:
        """The one dispatcher of lifecycle effects (``assert_never`` on a new type)."""
        match effect:
            case StartContainer():
                self._busy_task(record, self._run_start, workload_id, record, effect)
            case StopContainer():
                self._busy_task(record, self._run_stop, workload_id, record, effect.reason)
            case PublishRevocation():
                self._busy_task(record, self._run_revoke, workload_id, effect)
            case CheckContainer():
                self._busy_task(record, self._run_check, workload_id, record)
            case ReclaimContainer():
                self._busy_task(record, self._run_reclaim, workload_id, record)
            case StateChanged():
                self._count(f"lifecycle_{effect.new.value}")
                level = logging.WARNING if effect.new in _TERMINAL else logging.INFO
                self._log(
                    level,
                    "%s -> %s: %s",
                    effect.old.value,
                    effect.new.value,
                    effect.reason,
                    workload_id=workload_id,
                    role="primary",
                )
                self._emit(
                    LifecycleChanged(now, workload_id, effect.old, effect.new, effect.reason)
                )
            case _:
                assert_never(effect)

    def _busy_task(
        self, record: _Primary[SpecT], func: Callable[..., Coroutine[Any, Any, None]], *args: Any
    ) -> None:
        record.busy += 1

        async def run() -> None:
            try:
                await func(*args)
            finally:
                record.busy -= 1
                self._retire(args[0])

        self._spawn_task(run)

    def _retire(self, workload_id: str) -> None:
        """Forget a primary record once it ended and has nothing left to do (FM 5)."""
        record = self._primaries.get(workload_id)
        if record is None or record.busy:
            return
        lifecycle = record.lifecycle
        if lifecycle.state in _TERMINAL and lifecycle.next_deadline() is None:
            if record.started and not record.stopped:
                return
            del self._primaries[workload_id]
            self._lifecycle_at.pop(workload_id, None)
            self._mark_dirty()
            self._log(
                logging.INFO,
                "finished as primary (%s)",
                lifecycle.state.value,
                workload_id=workload_id,
                role="primary",
            )

    async def _run_start(
        self, workload_id: str, record: _Primary[SpecT], effect: StartContainer
    ) -> None:
        token = effect.fencing_token
        started_at = self._now()
        record.starting = done = anyio.Event()
        self._emit(ContainerStarting(started_at, workload_id, token, promotion=False))
        self._log(
            logging.INFO,
            "starting container (attempt %d, token %d)",
            effect.attempt,
            token,
            workload_id=workload_id,
            role="primary",
        )
        error: str | None = None
        try:
            error = await self._may_start(workload_id, record)
            if error is None:
                lease_end = self._bound_for(record)
                with anyio.fail_after(self.timing.spawn_timeout):
                    handle = await self.runtime.spawn(
                        record.spec,
                        workload_id=workload_id,
                        fencing_token=token,
                        lease_end=lease_end,
                    )
                record.renewed = lease_end
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            self._failed("start", error, workload_id=workload_id, role="primary")
        else:
            if error is None:
                record.handle = handle
                record.started = True
                record.stopped = False
                self._mark_dirty()
        finally:
            record.starting = None
            done.set()
        now = self._now()
        self._emit(
            ContainerStarted(now, workload_id, token, False, error is None, error, now - started_at)
        )
        if error is None:
            self._lifecycle_call(workload_id, lambda lc: lc.container_started(now), now)
        else:
            self._lifecycle_call(workload_id, lambda lc: lc.container_failed(now, error), now)

    async def _may_start(self, workload_id: str, record: _Primary[SpecT]) -> str | None:
        """Why a container must not start now (``None``: it may).

        The lifecycle is first brought up to the present (a node that was
        paused fences before it starts anything), and the primary record is
        made durable, so a restarted node knows what it may find running.
        """
        now = self._now()
        self._lifecycle_call(workload_id, lambda lc: lc.tick(now), now)
        lifecycle = record.lifecycle
        if lifecycle.state in _TERMINAL:
            return f"the workload ended before its start ({lifecycle.state.value})"
        if lifecycle.replicated and not lifecycle.holds_lease(now):
            return "the lease ran out before the container could start"
        if record.spec is None:
            return "no spec for this workload yet (adopted after a restart; re-accept it)"
        if self.store is not None:
            self._mark_dirty()
            try:
                await self.flush()
            except StoreError as exc:
                return f"primary record not saved, so not starting: {exc}"
        return None

    def _bound_for(self, record: _Primary[SpecT]) -> float:
        """The lease end a runtime enforces for ``record``'s container.

        A replicated workload runs under its lease; one without standbys
        does not fence on quorum loss (failure mode 6) and is bounded by its
        reservation's expiry only.
        """
        lifecycle = record.lifecycle
        if not lifecycle.replicated:
            return record.expires_at
        end = lifecycle.lease_end()
        return -math.inf if end is None else end

    async def _renew(self, workload_id: str, record: _Primary[SpecT], lease_end: float) -> None:
        """Hand a renewed lease end to the runtime (its supervisor enforces it)."""
        handle = record.handle
        if handle is None or lease_end <= record.renewed:
            return
        try:
            with anyio.fail_after(self.timing.query_timeout):
                await self.runtime.renew(handle, lease_end)
        except Exception as exc:
            self._failed("renew", exc, workload_id=workload_id, role="primary")
            return
        record.renewed = max(record.renewed, lease_end)

    async def _run_stop(self, workload_id: str, record: _Primary[SpecT], reason: str) -> None:
        if record.starting is not None:
            await record.starting.wait()  # never leave a start that was in flight running
        if record.handle is not None and not record.stopped:
            await self._stop_handle(
                record.handle, workload_id, record.lifecycle.fencing_token, reason, "primary"
            )
        record.stopped = True
        now = self._now()
        self._lifecycle_call(workload_id, lambda lc: lc.container_stopped(now), now)

    async def _stop_handle(
        self, handle: Any, workload_id: str, token: int, reason: str, role: str
    ) -> None:
        """Stop a container, retrying until the runtime confirms it."""
        wait = self.timing.retry_interval
        while True:
            try:
                with anyio.fail_after(self.timing.spawn_timeout):
                    await self.runtime.stop(handle)
            except Exception as exc:
                self._failed("stop", exc, workload_id=workload_id, role=role)
                await anyio.sleep(wait)
                wait = min(wait * 2, _MAX_STOP_BACKOFF)
                continue
            break
        self._log(logging.INFO, "container stopped: %s", reason, workload_id=workload_id, role=role)
        self._emit(ContainerStopped(self._now(), workload_id, token, reason))

    async def _run_revoke(self, workload_id: str, effect: PublishRevocation) -> None:
        revocation = effect.revocation
        result = await self._publish(
            revocation, operation="publish_revocation", workload_id=workload_id, role="primary"
        )
        now = self._now()
        self._log(
            logging.INFO,
            "revocation published: %d relays acknowledged",
            len(result.acked),
            workload_id=workload_id,
            role="primary",
        )
        self._emit(RevocationPublished(now, workload_id, revocation.epoch, result.acked))
        acked = tuple(result.acked)
        self._lifecycle_call(workload_id, lambda lc: lc.revocation_published(now, acked), now)

    async def _run_check(self, workload_id: str, record: _Primary[SpecT]) -> None:
        status = await self._container_status(workload_id, record)
        if status is None:
            return
        now = self._now()
        self._lifecycle_call(workload_id, lambda lc: lc.container_status(now, status), now)

    async def _run_reclaim(self, workload_id: str, record: _Primary[SpecT]) -> None:
        if record.handle is not None:
            await self._stop_handle(
                record.handle, workload_id, record.lifecycle.fencing_token, "reclaimed", "primary"
            )
        record.stopped = True
        record.handle = None

    async def _container_status(self, workload_id: str, record: _Primary[SpecT]) -> Any:
        if record.handle is None:
            return "absent"
        timeout = self.timing.query_timeout
        try:
            with anyio.fail_after(timeout):
                return await self.runtime.status(record.handle)
        except Exception as exc:
            self._failed("status", exc, workload_id=workload_id, role="primary")
            return None

    def _active_primaries(self) -> list[str]:
        return [w for w, r in self._primaries.items() if r.lifecycle.state not in _TERMINAL]

    def _catch_up_clock(self, *, every: bool = True) -> float:
        """Bring every lifecycle up to the present before acting as primary (FM17).

        A wall clock that moved further than the monotonic clock since the
        last look (a paused VM, a clock step) is reported, and counts as a
        pause: leases that ran out meanwhile fence before anything is sent.
        With ``every=False`` (the timer loop, whose tick then brings the due
        lifecycles up to date) only a jump ticks every lifecycle, so a node
        running many workloads does not tick them all on every input.
        Returns the wall-clock time.
        """
        now = self._now()
        mono = anyio.current_time()
        mark, self._clock_mark = self._clock_mark, (now, mono)
        jumped = False
        if mark is not None:
            wall_step, mono_step = now - mark[0], mono - mark[1]
            if abs(wall_step - mono_step) > self.timing.max_clock_skew:
                jumped = True
                self._count("clock_jumps")
                self._log(
                    logging.WARNING,
                    "wall clock moved %.3f s while the monotonic clock moved %.3f s: "
                    "treating it as a pause",
                    wall_step,
                    mono_step,
                )
                self._emit(ClockJumped(now, wall_step, mono_step))
        if not every and not jumped:
            return now
        for workload_id in list(self._primaries):
            self._lifecycle_call(workload_id, lambda lc: lc.tick(now), now)
        return now

    async def _send_heartbeat(self) -> None:
        timestamp = self._catch_up_clock()
        # Counted after the catch-up: a lease that ran out meanwhile has fenced.
        workloads = len(self._active_primaries())
        if not workloads:
            return
        heartbeat = Heartbeat(provider=self.me, timestamp=timestamp, active_workloads=workloads)
        result = await self._publish(
            heartbeat, operation="heartbeat", workload_id=None, role="primary"
        )
        now = self._now()
        self._count("heartbeats")
        self._emit(HeartbeatPublished(now, timestamp, result.acked, workloads))
        self._log(
            logging.DEBUG,
            "heartbeat %.3f acknowledged by %d relays",
            timestamp,
            len(result.acked),
            role="primary",
        )
        relays = sorted(result.acked)

        def feed(lifecycle: WorkloadLifecycle) -> list[LifecycleEffect]:
            effects: list[LifecycleEffect] = []
            for relay in relays:
                effects.extend(lifecycle.heartbeat_acked(now, relay, timestamp))
            return effects

        for workload_id in list(self._primaries):
            self._lifecycle_call(workload_id, feed, now)
        for workload_id, record in list(self._primaries.items()):
            lifecycle = record.lifecycle
            if (
                lifecycle.state not in _RUNNING
                or record.handle is None
                or record.stopped
                or (lifecycle.replicated and not lifecycle.holds_lease(now))
            ):
                continue
            # A workload left with no standbys (the last one promoted) is bound
            # by its reservation, not by the claim's lease it started under.
            end = self._bound_for(record)
            if end > record.renewed:
                self._spawn_task(self._renew, workload_id, record, end)

    async def _poll_containers(self) -> None:
        """Detect containers that stopped without being asked to."""
        for workload_id, record in list(self._primaries.items()):
            if (
                record.lifecycle.state not in _RUNNING
                or record.handle is None
                or record.stopped
                or record.starting is not None
            ):
                continue
            status = await self._container_status(workload_id, record)
            if status in (None, "running") or record.stopped:
                continue
            if self._primaries.get(workload_id) is not record:
                continue
            record.stopped = True
            now = self._now()
            self._count("container_exits")
            self._log(
                logging.WARNING,
                "container is %s although nobody stopped it",
                status,
                workload_id=workload_id,
                role="primary",
            )
            self._emit(ContainerExited(now, workload_id, str(status)))
            self._report_exit(workload_id, now, str(status))

    def _report_exit(self, workload_id: str, now: float, reason: str) -> None:
        self._lifecycle_call(workload_id, lambda lc: lc.container_exited(now, reason), now)

    # ------------------------------------------------------------------
    # Tasks
    # ------------------------------------------------------------------

    def _schedule(self, workload_id: str) -> None:
        """Record the next deadline of one primary's lifecycle (after every change to it)."""
        record = self._primaries.get(workload_id)
        due = None if record is None else record.lifecycle.next_deadline()
        if due is None:
            self._lifecycle_at.pop(workload_id, None)
        elif self._lifecycle_at.get(workload_id) != due:
            self._lifecycle_at[workload_id] = due
            heapq.heappush(self._lifecycle_heap, (due, workload_id))
            if len(self._lifecycle_heap) > 2 * len(self._lifecycle_at) + 64:
                self._lifecycle_heap = [(d, w) for w, d in self._lifecycle_at.items()]
                heapq.heapify(self._lifecycle_heap)

    def _next_lifecycle(self) -> tuple[float, str] | None:
        heap = self._lifecycle_heap
        while heap:
            due, workload_id = heap[0]
            if self._lifecycle_at.get(workload_id) == due:
                return heap[0]
            heapq.heappop(heap)
        return None

    def _next_deadline(self) -> float | None:
        known = [self.election.next_deadline()]
        top = self._next_lifecycle()
        if top is not None:
            known.append(top[0])
        found = [d for d in known if d is not None]
        return min(found) if found else None

    def _tick(self, now: float) -> None:
        self._election_call(now, lambda: self.election.tick(now))
        due: list[str] = []
        while (top := self._next_lifecycle()) is not None and top[0] <= now:
            heapq.heappop(self._lifecycle_heap)
            del self._lifecycle_at[top[1]]
            due.append(top[1])
        for workload_id in due:  # each at most once per tick, as before
            self._lifecycle_call(workload_id, lambda lc: lc.tick(now), now)
            self._schedule(workload_id)

    async def _timer_loop(self) -> None:
        while True:
            if self._primaries:
                self._catch_up_clock(every=False)
            now = self._now()
            self._tick(now)
            ticked = anyio.current_time()
            # Created after the (synchronous) tick, so the tick's own pokes do not
            # count as new input; anything that arrives while we sleep does.
            self._wake = wake = anyio.Event()
            deadline = self._next_deadline()
            if deadline is None:
                delay = math.inf
            else:
                if deadline <= now:
                    self._count("timer_spins")
                # Never sleep less than _MIN_SLEEP: a wall clock of ~1.7e9 s
                # has a resolution of ~2e-7 s, so a shorter sleep might not move
                # it past the deadline at all (and on a virtual clock it never
                # would: the loop would spin forever).
                delay = max(deadline - self._now(), _MIN_SLEEP)
            with anyio.move_on_after(delay):
                await wake.wait()
            # At most one tick per _MIN_SLEEP: an input that arrives at the very
            # instant of a tick must not make the loop tick again at that same
            # instant (a due deadline whose query answers instantly would
            # otherwise spin without time ever moving on a virtual clock).
            rest = ticked + _MIN_SLEEP - anyio.current_time()
            if rest > 0:
                await anyio.sleep(rest)

    async def _heartbeat_loop(self) -> None:
        interval = self.timing.heartbeat_interval
        polled = -math.inf
        while True:
            self._heartbeat_now = wake = anyio.Event()
            next_at = anyio.current_time() + interval
            active = self._active_primaries()
            if active:
                await self._send_heartbeat()
                # A heartbeat sent early (a workload just started or promoted)
                # does not poll every container again: once per interval.
                if anyio.current_time() - polled >= interval:
                    polled = anyio.current_time()
                    await self._poll_containers()
            with anyio.move_on_after(max(next_at - anyio.current_time(), 0.0)):
                await wake.wait()
            # Early heartbeats (a workload just started) are spaced out, so that
            # a burst of accepts sends a few heartbeats rather than one each; the
            # first workload of an idle node heartbeats at once.
            if active:
                spacing = interval * _EARLY_HEARTBEAT_SPACING
                rest = next_at - interval + spacing - anyio.current_time()
                if rest > 0:
                    await anyio.sleep(rest)

    def _interest(self) -> Query | None:
        """The live subscription: sized by primaries and peers, not by slots.

        It names the authors only (the primaries and peers of the slots), so
        a thousand slots of one primary need the same small request as one;
        messages about workloads without a slot here are dropped locally
        (:meth:`_on_envelope`). It changes only when the set of authors does.
        """
        slots = self.election.slots
        if not slots:
            return None
        authors: set[str] = set()
        for slot in slots.values():
            authors.add(slot.primary)
            authors.update(slot.peers)
        return Query(kinds=MESSAGE_KINDS, authors=authors)

    def _refresh_interest(self) -> None:
        if self._interest_changed is not None:
            self._interest_changed.set()

    async def _subscription_loop(self) -> None:
        current: Query | None = None
        scope: anyio.CancelScope | None = None
        alive: list[bool] = [False]
        async with anyio.create_task_group() as group:
            while True:
                self._interest_changed = changed = anyio.Event()
                if current is not None and alive[0]:
                    # Many accepts in a row change the slots many times: look
                    # once they are done (a fresh slot has a whole silence of
                    # grace, so a short wait costs nothing).
                    await anyio.sleep(_SUBSCRIBE_COALESCE)
                wanted = self._interest()
                if wanted != current or (wanted is not None and not alive[0]):
                    # Open the new subscription before closing the old one: no gap.
                    new_scope = anyio.CancelScope()
                    new_alive = [True]
                    if wanted is not None:
                        try:
                            subscription = self.transport.subscribe(wanted)
                        except Exception as exc:
                            self._subscription_lost("subscribe", exc)
                            new_alive[0] = False
                        else:
                            group.start_soon(self._read, subscription, new_scope, new_alive)
                    if scope is not None:
                        scope.cancel()
                    current, scope, alive = wanted, new_scope, new_alive
                    if wanted is not None and not new_alive[0]:
                        await anyio.sleep(self._subscribe_wait())
                        continue
                await changed.wait()

    async def _read(self, subscription: Any, scope: anyio.CancelScope, alive: list[bool]) -> None:
        with scope:
            try:
                async for envelope in subscription:
                    self._subscription_failures = 0
                    self._on_envelope(envelope)
            except Exception as exc:
                self._subscription_lost("subscription", exc)
                await anyio.sleep(self._subscribe_wait())
            finally:
                alive[0] = False
                with anyio.CancelScope(shield=True), anyio.move_on_after(self.timing.query_timeout):
                    try:
                        await subscription.aclose()
                    except Exception as exc:
                        self._failed("unsubscribe", exc)
                self._refresh_interest()

    # ------------------------------------------------------------------
    # Persistence
    # ------------------------------------------------------------------

    def _subscribe_wait(self) -> float:
        doublings = min(max(self._subscription_failures - 1, 0), _MAX_SUBSCRIBE_DOUBLINGS)
        return float(self.timing.retry_interval * 2**doublings)

    def _subscription_lost(self, operation: str, exc: BaseException) -> None:
        """A failed or refused subscription: warn, count, report, and retry with backoff (FM20)."""
        self._subscription_failures += 1
        self._failed(operation, exc)
        text = f"{type(exc).__name__}: {exc}"
        self._emit(
            SubscriptionLost(self._now(), text, self._subscription_failures, self._subscribe_wait())
        )

    def _mark_dirty(self) -> None:
        self._version += 1
        if self._dirty is not None:
            self._dirty.set()

    async def _persist_loop(self) -> None:
        if self.store is None:
            await anyio.sleep_forever()
        while True:
            if self._saved_version >= self._version:
                self._dirty = dirty = anyio.Event()
                await dirty.wait()
            if not await self._save_once():
                await anyio.sleep(self.timing.retry_interval)

    async def _save_once(self) -> bool:
        store = self.store
        if store is None:
            return True
        version = self._version
        slots = list(self.election.slots.values())
        state: NodeState[SpecT] = NodeState(
            slots=slots,
            intents=tuple(self._intents.values()),
            primaries=tuple(
                record.saved()
                for record in self._primaries.values()
                if record.lifecycle.state not in _TERMINAL
                or (record.started and not record.stopped)
            ),
        )
        self._save_attempts += 1
        attempt = self._save_attempts
        try:
            withheld = await store.save_state(state)
        except Exception as exc:
            self._save_failure = (attempt, version, exc)
            self._count("store_errors")
            self._log(logging.ERROR, "saving %d slots failed: %s", len(slots), exc, exc_info=exc)
            self._emit(OperationFailed(self._now(), "save", None, str(exc)))
            ok = False
        else:
            self._saved_version = max(self._saved_version, version)
            self._count("saves")
            self._report_withheld(withheld)
            ok = True
        saved, self._saved = self._saved, anyio.Event()
        if saved is not None:
            saved.set()
        return ok

    def _report_withheld(self, withheld: Sequence[str]) -> None:
        current = frozenset(withheld)
        fresh = current - self._withheld
        self._withheld = current
        if not fresh:
            return
        ids = tuple(sorted(fresh))
        self._count("slots_not_persisted", len(ids))
        for workload_id in ids:
            self._log(
                logging.WARNING,
                "slot holds a secret and is kept in memory only: it will not survive a restart",
                workload_id=workload_id,
                role="standby",
            )
        self._emit(SlotsNotPersisted(self._now(), ids))

    async def _final_save(self) -> None:
        if self.store is None or self._saved_version >= self._version:
            return
        with anyio.move_on_after(max(self.timing.query_timeout, 1.0)):
            await self._save_once()
