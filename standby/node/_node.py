"""Implementation of :mod:`standby.node` (see its docstring): the node and its tasks.

The node is put together from one part per concern, each in its own module:
:class:`~standby.node._standby.StandbySide` (the election and promotions),
:class:`~standby.node._primary.PrimarySide` (the lifecycles and containers of
the workloads it runs), :class:`~standby.node._heartbeat.Heartbeats`,
:class:`~standby.node._stepdown.StepDown` (a primary that sees a later epoch),
:class:`~standby.node._reconcile.Reconciler` (reconciliation on entry),
:class:`~standby.node._epochs.EpochReader` (with
:class:`~standby.node._epochs.BatchedEpochReads` for the starts of many workloads at once),
:class:`~standby.node._persistence.Persistence`,
:class:`~standby.node._subscriptions.Subscriptions`, and one
:class:`~standby.node._observe.Observer` through which every part logs,
counts and reports events. No part holds the node: each is built from the
objects it uses and narrow calls for what it needs of another part, wired
here (:meth:`StandbyNode._build_parts`). This module holds the host's
surface and the timer that drives both machines.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable
from types import MappingProxyType, TracebackType
from typing import Any, Final, Generic, TypeVar

import anyio
import anyio.abc

if sys.version_info < (3, 11):  # pragma: no cover - the backport anyio depends on
    from exceptiongroup import BaseExceptionGroup

from ..aio import Wakeup, fail_after, monotonic
from ..core._election import StandbyElection
from ..core._errors import (
    NodeMisuse,
    NotAddressedError,
    RequestRefused,
    RetryLater,
    RuntimeFailure,
    SpawnError,
    raise_unwrapped,
)
from ..core._helpers import role_of
from ..core._lifecycle import Never, RestartPolicy, check_at_risk
from ..core._models import StandbySlot, Topology
from ..core._records import NodeState
from ..core._roles import NotAddressed, Primary, Role, Standby
from ..core._timing import Timing
from ..protocols._contracts import (
    AtomicClaims,
    ChecksSpecs,
    ContainerRuntime,
    RelayTransport,
    ReportsDrops,
    SlotStore,
    WaitsConnected,
)
from ._drain import Drainer, DrainReport, StopReport
from ._epochs import BatchedEpochReads, EpochReader
from ._eventlog import EventLog
from ._events import NodeEvent
from ._heartbeat import Heartbeats
from ._io import NodeIO
from ._observe import Observer
from ._persistence import Persistence
from ._primary import PrimarySide
from ._reconcile import Reconciler
from ._standby import StandbySide
from ._stepdown import StepDown
from ._subscriptions import Subscriptions
from ._types import NodeStatus, PrimaryStatus, SpawnRequest

__all__ = ["StandbyNode"]

SpecT = TypeVar("SpecT")

#: Shortest sleep of the timer loop (guards a busy loop; see _timer_loop).
_MIN_SLEEP = 1e-3
_NEVER: Final = Never()


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

    ``connect_timeout`` (seconds, default 10) bounds how long entering waits
    for a transport with :class:`~standby.protocols.WaitsConnected` to open
    and log in to its relays, before the node's first request: a cold
    handshake must not eat into a ``query_timeout`` sized for a warm
    connection. Relays still not ready then are logged (and counted as
    ``relays_not_ready_at_start``); the node runs on without them.

    ``lease_at_risk`` (seconds, below ``lease - heartbeat_interval``) is the lease remaining
    below which a workload run here as primary reports
    :class:`~standby.node.LeaseAtRisk` (once per lease); a heartbeat that
    misses its write quorum reports it whatever the threshold (``None``: that
    only).

    ``event_log`` names a file the node appends every event to, one JSON
    line each (see ``docs/operations.md``, "Event logs and timelines"); a
    line it cannot write is counted as ``event_log_errors``, never fatal.

    ``claim_window`` is how many of this node's slots may run the claim
    protocol at once when many workloads fail over together, before the
    relays have answered any (default: what ``timing.claim_timeout``
    suggests, at most 100); the window then follows what the relays
    acknowledge in time (see ``docs/scale.md``).
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
        connect_timeout: float = 10.0,
        lease_at_risk: float | None = None,
        event_log: str | os.PathLike[str] | None = None,
        claim_window: int | None = None,
    ) -> None:
        if not (connect_timeout > 0 and math.isfinite(connect_timeout)):
            raise ValueError(
                f"connect_timeout must be a finite number of seconds > 0, got {connect_timeout!r}"
            )
        self.connect_timeout = connect_timeout
        self.timing = timing = timing if timing is not None else Timing()
        check_at_risk(lease_at_risk, timing)
        self.lease_at_risk = lease_at_risk
        self.transport = transport
        self.runtime = runtime
        self.store = store
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
        _check_adapters(transport, runtime, timing)
        self.me = transport.identity
        self.observer = observer = Observer(
            self.me, clock=self.now, logger=logger, on_event=on_event
        )
        if event_log is not None:
            observer.event_log = EventLog(
                event_log, self.me, timing, clock=self.now, on_error=observer.event_log_failed
            )
        self.logger = self.observer.logger
        self.counters = self.observer.counters
        self.election: StandbyElection[SpecT] = StandbyElection(
            me=self.me, timing=timing, atomic_claims=atomic_claims, claim_window=claim_window
        )
        self._build_parts(transport, runtime, store, timing)
        #: The task group while the node runs (entered and left by hand, not through
        #: an AsyncExitStack: the stack's frame keeps the exception it re-raises,
        #: a reference cycle through everything the traceback's frames hold).
        self._group: anyio.abc.TaskGroup | None = None
        self._running = False
        self._wake: Wakeup | None = None

    def _build_parts(
        self,
        transport: RelayTransport,
        runtime: ContainerRuntime,
        store: SlotStore | None,
        timing: Timing,
    ) -> None:
        """Build each part from the few objects it uses, and wire what crosses parts.

        No part holds the node. The primary side is built first: the step-down
        watch, the heartbeat and the restart work on the workloads it runs. A
        part that needs something of a part built after it (the standby side
        and the primary side refresh the subscription; the primary side pokes
        the heartbeat) gets a call that looks that part up when made.
        """
        me, observer = self.me, self.observer
        self.io = io = NodeIO(transport, timing, observer)
        self.persistence = persistence = Persistence(store, timing, observer, self._collect)
        self.epochs = EpochReader(me, timing, io, self.now)
        starts = BatchedEpochReads(self.epochs.read)
        election = self.election

        def refresh() -> None:
            self.subscriptions.refresh()

        def heartbeat_soon() -> None:
            self.heartbeat.poke()

        def slot(workload_id: str) -> StandbySlot[SpecT] | None:
            return election.slots.get(workload_id)

        self.primary: PrimarySide[SpecT] = PrimarySide(
            me,
            timing,
            observer,
            io,
            runtime,
            persistence,
            restart=self.restart,
            now=self.now,
            poke=self.poke,
            refresh=refresh,
            heartbeat_soon=heartbeat_soon,
            slot=slot,
            read_epochs=starts.read,
            check_spec=self._check_spec,
            at_risk=self.lease_at_risk,
            reads_done=starts.idle,
        )
        primary = self.primary
        self.stepdown: StepDown[SpecT] = StepDown(me, timing, observer, io, primary, now=self.now)
        self.heartbeat: Heartbeats[SpecT] = Heartbeats(
            me, timing, observer, io, primary, now=self.now, watch=self.stepdown.read
        )
        self.standby: StandbySide[SpecT] = StandbySide(
            me,
            timing,
            observer,
            io,
            runtime,
            persistence,
            election,
            claims=transport
            if self.atomic_claims and isinstance(transport, AtomicClaims)
            else None,
            now=self.now,
            poke=self.poke,
            refresh=refresh,
            to_primary=self.stepdown.on_envelope,
            already_runs=primary.already_runs,
            ended_run=primary.ended_run,
            take_over=primary.take_over,
            stop_container=primary.stop_container,
            heartbeat_soon=heartbeat_soon,
            check_spec=self._check_spec,
        )
        self.reconciler: Reconciler[SpecT] = Reconciler(
            me,
            timing,
            observer,
            io,
            runtime,
            election,
            persistence,
            primary,
            now=self.now,
            read_epochs=self.epochs.read,
            spend=self.standby.spend,
            announce=self.standby.announce,
        )
        self.drainer: Drainer[SpecT] = Drainer(
            timing, observer, primary, now=self.now, read_epochs=self.epochs.read
        )
        self.subscriptions = Subscriptions(
            transport,
            timing,
            observer,
            election,
            self.standby.on_envelope,
            self.stepdown.authors,
        )

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return (
            f"StandbyNode({self.me!r}, {state}, {len(self.election.slots)} slots, "
            f"{len(self.primary.workloads)} primaries)"
        )

    # ------------------------------------------------------------------
    # Life of the node
    # ------------------------------------------------------------------

    async def __aenter__(self) -> StandbyNode[SpecT]:
        if self._group is not None:
            raise NodeMisuse(f"node {self.me!r} is already running")
        self._wake = Wakeup()
        if self.observer.event_log is not None:
            self.observer.event_log.open()
        self.heartbeat.open()
        self.subscriptions.open()
        self.persistence.open(f"node {self.me}")
        try:
            await self._wait_connected()
            self.io.entering = True
            try:
                await self.reconciler.restore()
            finally:
                self.io.entering = False
            group = anyio.create_task_group()
            await group.__aenter__()
        except BaseException:
            self.persistence.close()
            raise
        self._group = group
        self._running = True
        if isinstance(self.transport, ReportsDrops):
            self.transport.set_drop_hook(self.observer.transport_dropped)
        self.io.start(
            group,
            (self._timer_loop, f"standby-timer-{self.me}"),
            (self.heartbeat.loop, f"standby-heartbeat-{self.me}"),
            (self.subscriptions.loop, f"standby-subscription-{self.me}"),
            (self.persistence.loop, f"standby-store-{self.me}"),
        )
        if self.election.slots:
            self.io.spawn(self.standby.catch_up, tuple(self.election.slots))
        self.observer.started(len(self.election.slots))
        return self

    async def _wait_connected(self) -> None:
        """Let a ``WaitsConnected`` transport finish connecting (``connect_timeout``)."""
        transport = self.transport
        if not isinstance(transport, WaitsConnected):
            return
        ready: frozenset[str] = frozenset()
        error = ""
        with anyio.move_on_after(self.connect_timeout):
            try:
                ready = await transport.wait_connected(timeout=self.connect_timeout)
            except Exception as exc:  # an adapter's failure is never fatal
                error = f": {type(exc).__name__}: {exc}"
        missing = transport.relay_count - len(ready)
        if missing > 0:
            self.observer.count("relays_not_ready_at_start", missing)
            self.logger.warning(
                "node %s: %d of %d relays ready after connect_timeout=%ss (%s)%s; "
                "starting anyway, the transport keeps trying the others",
                self.me,
                len(ready),
                transport.relay_count,
                self.connect_timeout,
                ", ".join(sorted(ready)) or "none",
                error,
            )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        group = self._group
        assert group is not None
        self._running = False
        group.cancel_scope.cancel()
        self.io.cancel_tasks()
        try:
            errors: BaseExceptionGroup[BaseException] | None = None
            try:
                handled = bool(await group.__aexit__(exc_type, exc, tb)) and exc is not None
            except BaseExceptionGroup as raised:
                errors, handled = raised, False
            finally:
                # The node's plain tasks (see NodeIO.spawn) are gone too.
                with anyio.CancelScope(shield=True):
                    await self.io.wait_tasks()
            if self.io.failures:
                errors = BaseExceptionGroup(
                    "unhandled errors in a TaskGroup",
                    [*(() if errors is None else errors.exceptions), *self.io.failures],
                )
            if errors is not None:
                raise_unwrapped(errors, exc)
                return False
            return handled
        finally:
            # An exception leaving this call keeps this frame in its traceback:
            # the frame lets go of the exceptions (no cycle through it).
            exc = tb = errors = None
            self._group = self.io.group = None
            if isinstance(self.transport, ReportsDrops):
                self.transport.set_drop_hook(None)
            with anyio.CancelScope(shield=True):
                await self.persistence.final_save()
            self.persistence.close()
            self.observer.stopped()
            if self.observer.event_log is not None:
                self.observer.event_log.close()

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

        Accept is all or nothing: whatever is refused leaves no trace in
        memory or on disk. What the host does with each error:

        - :class:`~standby.RetryLater` (:class:`~standby.QuorumUnavailable`
          names the relays that did not answer): nothing was done; send the
          same request again later.
        - :class:`~standby.RequestRefused` (:class:`~standby.NotAddressedError`
          among them): refused for good; tell the consumer.
        - :class:`~standby.InvalidRequest`, :class:`~standby.IdentityError`,
          :class:`~standby.InvalidSlot`, :class:`~standby.TopologyError`:
          the request is malformed (a spec the store cannot save included).
        - :class:`~standby.NodeMisuse`: the node is not running.

        A runtime with the :class:`~standby.protocols.ChecksSpecs` capability
        checks the spec of a request that would reserve a slot or start the
        workload, on both sides (not a re-accept of what this node already
        holds): a spec that can never start (a missing executable or image)
        is a :class:`~standby.RequestRefused`.
        """
        self._require_running()
        canonical = self.transport.canonical
        topology = Topology(
            primary=canonical(request.topology.primary),
            standbys=tuple(canonical(s) for s in request.topology.standbys),
        )
        role = role_of(self.me, topology.primary, topology.standbys)
        if isinstance(role, NotAddressed):
            raise NotAddressedError(
                request.workload_id, self.me, topology.primary, topology.standbys
            )
        now = self.now()
        if isinstance(role, Primary):
            if await self.primary.accept(now, request, topology):
                await self.flush()
            return role
        assert isinstance(role, Standby)
        await self.standby.accept(now, request, topology, role)
        return role

    async def _check_spec(self, request: SpawnRequest[SpecT]) -> None:
        """Refuse a spec the runtime says can never start (failure mode 24)."""
        runtime = self.runtime
        if not isinstance(runtime, ChecksSpecs):
            return
        workload_id = request.workload_id
        try:
            with fail_after(self.timing.spawn_timeout):
                await runtime.check_spec(request.spec, workload_id=workload_id)
        except SpawnError as exc:
            raise RequestRefused(
                f"workload {workload_id!r} can never start here: {exc}", workload_id=workload_id
            ) from exc
        except (RuntimeFailure, TimeoutError) as exc:
            raise RetryLater(
                f"workload {workload_id!r}: the runtime could not check its spec "
                f"({type(exc).__name__}: {exc}); try again"
            ) from exc

    async def handover(
        self, workload_id: str, state_uri: str | None = None, *, reason: str = "handover"
    ) -> None:
        """Planned switchover of a workload this node runs as primary.

        The node fences the workload (stops the container), then publishes a
        signed revocation; the first standby takes over without waiting out
        the silence. Raises :class:`~standby.NodeMisuse` for a workload this
        node does not run and :class:`~standby.StandbyError` when the
        workload has no standbys or already ended.
        """
        self._require_running()
        self.primary.handover(self.now(), workload_id, state_uri, reason)

    async def drain(self, within: float | None = None) -> DrainReport:
        """Hand every workload this node runs as primary to its standbys, and wait.

        Each replicated workload is handed over as by :meth:`handover`
        (fenced, stopped, a signed revocation published); then the node reads
        the relays until a read quorum shows each one announced by a standby
        in a later epoch, or ``within`` seconds pass (by default long enough
        for the last standby's turn, :func:`~standby.node._drain.takeover_within`).
        The report lists what was taken over and, for every other workload
        (one without standbys included, which keeps running), why not.
        Slots this node holds as a standby are untouched: a node drained for
        maintenance still stands by until it leaves.
        """
        self._require_running()
        return await self.drainer.drain(_duration("within", within))

    async def stop_workloads(self, within: float | None = None) -> StopReport:
        """Stop every workload this node runs as primary, for good (a host shutting down).

        Each workload fences: its container is stopped and, when it has
        standbys, a revocation follows so they take over at once; one without
        standbys is simply stopped. Waits until the runtime confirms every
        stop or ``within`` seconds pass (default ``timing.spawn_timeout``);
        the report lists what stopped and what the node is still stopping.
        """
        self._require_running()
        return await self.drainer.stop_workloads(_duration("within", within))

    async def remove(self, workload_id: str) -> bool:
        """Drop a reserved slot (the consumer cancelled); ``False`` when there was none."""
        self._require_running()
        if workload_id not in self.election.slots:
            return False
        now = self.now()
        self.standby.effects(now, self.election.remove(now, workload_id))
        await self.flush()
        return True

    async def flush(self) -> None:
        """Wait until the slot table as it is now has been saved.

        Raises :class:`~standby.StoreError` when the save failed (the node
        keeps retrying in the background).
        """
        await self.persistence.flush()

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
                running=record.container_up,
            )
            for workload_id, record in sorted(self.primary.workloads.items())
        )
        counters = dict(self.counters)
        for name, value in self.election.counters.items():
            counters[f"election.{name}"] = value
        heartbeats: dict[str, float] = {}
        for slot in slots:
            last = self.election.last_heartbeat(slot.primary)
            if last is not None:
                heartbeats[slot.primary] = last
        return NodeStatus(
            identity=self.me,
            running=self._running,
            slots=slots,
            primaries=primaries,
            counters=MappingProxyType(counters),
            at=self.now(),
            heartbeats=MappingProxyType(heartbeats),
        )

    # ------------------------------------------------------------------
    # Shared by the parts
    # ------------------------------------------------------------------

    def now(self) -> float:
        """The node's wall-clock time (Unix seconds)."""
        return self.wall_clock()

    def poke(self) -> None:
        """New input for the machines: the timer looks at their deadlines again."""
        if self._wake is not None:
            self._wake.set()

    def _require_running(self) -> None:
        if not self._running:
            raise NodeMisuse(f"node {self.me!r} is not running: use `async with node:`")

    def _collect(self) -> NodeState[Any]:
        """What the store keeps: slots, promotion intents, and the primary side's records."""
        return NodeState(
            slots=list(self.election.slots.values()),
            intents=tuple(self.standby.intents.values()),
            primaries=tuple(self.primary.saved_records(self.now())),
        )

    # ------------------------------------------------------------------
    # The timer
    # ------------------------------------------------------------------

    def _next_deadline(self) -> float | None:
        election, primary = self.election.next_deadline(), self.primary.next_deadline()
        if election is None or (primary is not None and primary < election):
            return primary
        return election

    def _tick(self, now: float) -> None:
        # The election is ticked only when one of its deadlines is due: a tick
        # with nothing due decides nothing (its next_deadline says when it will).
        due = self.election.next_deadline()
        if due is not None and due <= now:
            self.standby.call(now, lambda: self.election.tick(now))
        self.primary.tick(now)

    async def _timer_loop(self) -> None:
        clock = monotonic()
        while True:
            if self.primary.workloads:
                self.heartbeat.catch_up_clock(every=False)
            now = self.now()
            self._tick(now)
            ticked = clock()
            # Created after the (synchronous) tick, so the tick's own pokes do not
            # count as new input; anything that arrives while we sleep does.
            wake = self._wake
            assert wake is not None
            wake.clear()
            deadline = self._next_deadline()
            if deadline is None:
                delay = math.inf
            else:
                if deadline <= now:
                    self.observer.count("timer_spins")
                # Never sleep less than _MIN_SLEEP: a wall clock of ~1.7e9 s
                # has a resolution of ~2e-7 s, so a shorter sleep might not move
                # it past the deadline at all (and on a virtual clock it never
                # would: the loop would spin forever).
                delay = deadline - self.now()  # max() with _MIN_SLEEP, for less:
                delay = _MIN_SLEEP if delay < _MIN_SLEEP else delay
            await wake.wait(delay)
            # At most one tick per _MIN_SLEEP: an input that arrives at the very
            # instant of a tick must not make the loop tick again at that same
            # instant (a due deadline whose query answers instantly would
            # otherwise spin without time ever moving on a virtual clock).
            rest = ticked + _MIN_SLEEP - clock()
            if rest > 0:
                await anyio.sleep(rest)


def _duration(name: str, value: float | None) -> float | None:
    """``value`` when it is ``None`` or a finite number of seconds ``>= 0``; else ``ValueError``."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (math.isfinite(value) and value >= 0)
    ):
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


def _check_adapters(transport: RelayTransport, runtime: ContainerRuntime, timing: Timing) -> None:
    """Refuse adapters whose quorums or stop grace do not fit the timing."""
    relay_count = getattr(transport, "relay_count", None)
    if relay_count != timing.relay_count:
        raise NodeMisuse(
            f"the transport reads and writes {relay_count} relays but the timing is set for "
            f"relay_count={timing.relay_count}: its quorums (write "
            f"{timing.write_quorum}, read {timing.read_quorum}) would not overlap; "
            "build the Timing with the transport's relay count"
        )
    stop_grace = getattr(runtime, "stop_grace", None)
    if not isinstance(stop_grace, (int, float)) or stop_grace > timing.fence_grace:
        raise NodeMisuse(
            f"the runtime stops a workload up to stop_grace={stop_grace!r} s after its "
            f"lease end, more than the timing's fence_grace={timing.fence_grace} s: "
            "a standby could start it while the old one still runs"
        )
