"""The primary side of the node: the workloads it runs, their lifecycles and containers."""

from __future__ import annotations

import heapq
import math
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Generic, TypeVar

import anyio
import attrs
from typing_extensions import assert_never

from ..aio import fail_after
from ..core._effects import (
    AtRisk,
    CheckContainer,
    LifecycleEffect,
    PublishRevocation,
    ReclaimContainer,
    StartContainer,
    StateChanged,
    StopContainer,
)
from ..core._errors import (
    NodeMisuse,
    QuorumUnavailable,
    RequestRefused,
    RetryLater,
    StoreError,
    WorkloadConflict,
)
from ..core._lifecycle import RestartPolicy, WorkloadLifecycle
from ..core._models import PromotionClaim, StandbySlot, Topology
from ..core._records import PrimaryRecord
from ..core._timing import Timing
from ..protocols._contracts import ContainerRuntime
from ._epochs import EpochsRead
from ._events import (
    ContainerExited,
    ContainerStarted,
    ContainerStarting,
    ContainerStopped,
    LeaseAtRisk,
    LeaseRenewed,
    LifecycleChanged,
    RevocationPublished,
)
from ._io import NodeIO
from ._observe import Observer
from ._persistence import Persistence
from ._types import RUNNING, PrimaryWorkload, SpawnRequest

__all__ = ["PrimarySide"]

SpecT = TypeVar("SpecT")

#: A stop is retried until it succeeds; the wait between tries is capped at this.
_MAX_STOP_BACKOFF = 60.0


class PrimarySide(Generic[SpecT]):
    """Runs each workload's :class:`~standby.WorkloadLifecycle` and carries out its effects.

    Each workload's next lifecycle deadline sits in a heap (stale entries are
    dropped lazily), so the timer costs O(log n) per change, not O(primaries)
    per wake.
    """

    def __init__(
        self,
        me: str,
        timing: Timing,
        observer: Observer,
        io: NodeIO,
        runtime: ContainerRuntime,
        persistence: Persistence,
        *,
        restart: RestartPolicy,
        now: Callable[[], float],
        poke: Callable[[], None],
        refresh: Callable[[], None],
        heartbeat_soon: Callable[[], None],
        slot: Callable[[str], StandbySlot[Any] | None],
        read_epochs: Callable[[set[str]], Awaitable[EpochsRead]],
        check_spec: Callable[[SpawnRequest[SpecT]], Awaitable[None]] | None = None,
        at_risk: float | None = None,
        reads_done: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.me = me
        self.timing = timing
        self.observer = observer
        self.io = io
        self.runtime = runtime
        self.persistence = persistence
        #: The restart policy of a workload whose request names none.
        self.restart = restart
        self.now = now
        #: New input for the machines: the node's timer looks at the deadlines again.
        self.poke = poke
        #: Who the node listens to changed (the standbys of the workloads run here).
        self.refresh = refresh
        #: Heartbeat soon (a workload just started or promoted).
        self.heartbeat_soon = heartbeat_soon
        #: The standby slot this node holds for a workload id, if any.
        self.slot = slot
        #: What the relays say of some workloads' epochs.
        self.read_epochs = read_epochs
        #: Waits (at most the given seconds) until no epoch read is pending, so
        #: that the epoch-0 claims of many accepts do not queue the later
        #: accepts' reads behind them on the relay connections (FM 19).
        self.reads_done = reads_done
        self.check_spec = check_spec
        #: The lease remaining below which a workload's lease is reported at risk.
        self.at_risk = at_risk
        #: The workloads this node runs as primary, live (what the store keeps of
        #: each is its :class:`~standby.core._records.PrimaryRecord`).
        self.workloads: dict[str, PrimaryWorkload[SpecT]] = {}
        #: Replicated runs that ended here (fenced, handed over, failed, found gone
        #: after a restart), kept and saved until their reservation ends: their
        #: epoch was revoked, so they are never started again here (FM 29).
        self.ended: dict[str, PrimaryRecord] = {}
        self._due: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._changed: anyio.Event | None = None

    # -- accepting, handing over ---------------------------------------------

    async def accept(self, now: float, request: SpawnRequest[SpecT], topology: Topology) -> bool:
        """Start ``request`` as primary; ``False`` when it already runs here (adopted).

        A workload adopted after a restart is not started again: the request
        only hands its spec back. A replicated run that ended here is never
        started again in its reservation (failure mode 29); an id held here
        under another topology raises :class:`~standby.WorkloadConflict`
        (failure mode 32). Before a replicated workload starts, the relays
        are read (:meth:`_check_epoch`).
        """
        workload_id = request.workload_id
        ended = self.ended_run(workload_id, now)
        if ended is not None:
            raise RequestRefused(
                f"workload {workload_id!r} ran here as primary in epoch {ended.epoch} until it "
                f"ended ({ended.ended}); that epoch was fenced and revoked and its standbys take "
                "the workload over, so it is not started here again",
                workload_id=workload_id,
            )
        existing = self.workloads.get(workload_id)
        if existing is not None:
            self._check_same(existing, topology)
        if existing is not None and existing.spec is None:
            existing.spec = request.spec
            if not existing.ended:
                self.observer.reaccepted(
                    workload_id, "primary", "already runs here (adopted after a restart)"
                )
                return False
        slot = self.slot(workload_id)
        if slot is not None:
            lineup = (slot.primary, slot.standbys(self.me))
            raise WorkloadConflict(
                workload_id, (topology.primary, topology.standbys), held=lineup, detail=" (a slot)"
            )
        self._check_free(workload_id)
        if self.check_spec is not None:
            await self.check_spec(request)  # only a request that would start (FM 24)
            now = self.now()
        if topology.standbys:
            await self._check_epoch(workload_id, topology)
            self._check_free(workload_id)
        self._start(now, request, topology)
        return True

    async def _check_epoch(self, workload_id: str, topology: Topology) -> None:
        """Refuse to start epoch 0 of a workload the relays show has moved on or is not ours.

        A read quorum must answer. Any revocation of the workload (by this
        node in an earlier life whose record is gone, or by anyone) means an
        epoch of it was fenced and handed to the standbys (failure mode 29);
        a claim or announcement of a later epoch means it was taken over
        (failure mode 16); anything published about it by a node outside
        this request's topology means another primary's workload carries the
        same id (failure mode 32).
        """
        read = await self.read_epochs({workload_id})
        if not read.reached:
            raise QuorumUnavailable(
                f"workload {workload_id!r}: it is unknown whether a standby already took it "
                "over, so it is not started; try again",
                answered=read.answered,
                needed=self.timing.read_quorum,
                reasons=read.errors,
            )
        strangers = read.signers.get(workload_id, set()) - set(topology.standbys)
        if strangers:
            raise WorkloadConflict(
                workload_id,
                (topology.primary, topology.standbys),
                holders=tuple(sorted(strangers)),
                detail=", and none of them is in this request's topology",
            )
        revoked = read.revoked.get(workload_id)
        if revoked is not None:
            raise RequestRefused(
                f"workload {workload_id!r}: its epoch {revoked} was revoked (it ran and was "
                "fenced or handed over), so its standbys take it over and this primary must "
                "not start it again",
                workload_id=workload_id,
            )
        later = max(read.claimed.get(workload_id, -1), read.announced.get(workload_id, -1))
        if later > 0:
            raise RequestRefused(
                f"workload {workload_id!r} was already taken over (epoch {later} was claimed "
                "or announced): this primary must not start it again",
                workload_id=workload_id,
            )

    def _check_same(self, existing: PrimaryWorkload[SpecT], topology: Topology) -> None:
        """Refuse a request for a workload that runs here under other standbys (FM 32)."""
        lifecycle = existing.lifecycle
        if lifecycle.epoch == 0 and lifecycle.standbys != topology.standbys:
            raise WorkloadConflict(
                lifecycle.workload_id,
                (topology.primary, topology.standbys),
                held=(self.me, lifecycle.standbys),
                detail=" (it runs here as primary)",
            )

    def _check_free(self, workload_id: str) -> None:
        existing = self.workloads.get(workload_id)
        if existing is not None:
            if not existing.ended:
                raise NodeMisuse(f"workload {workload_id!r} already runs here as primary")
            raise RetryLater(
                f"workload {workload_id!r} ended here ({existing.lifecycle.state.value}) and is "
                "still winding down (stopping its container or publishing its revocation); "
                "try again later"
            )
        if self.slot(workload_id) is not None:
            raise NodeMisuse(f"workload {workload_id!r} has a standby slot here; remove it first")

    def _start(self, now: float, request: SpawnRequest[SpecT], topology: Topology) -> None:
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
            at_risk=self.at_risk,
        )
        self.add(
            PrimaryWorkload(
                lifecycle, request.spec, created_at=created_at, expires_at=request.expires_at
            )
        )
        self.persistence.mark_dirty()
        if topology.standbys:
            self.io.spawn(self._publish_start, workload_id, now)
        self.observer.accepted_primary(workload_id, len(topology.standbys))
        self.call(workload_id, lambda lc: lc.start(now), now)
        self.heartbeat_soon()

    def already_runs(self, workload_id: str, spec: SpecT) -> bool:
        """Whether ``workload_id`` runs here (not ended): a standby's request for it is
        then a re-accept, which hands back the spec of a run adopted after a restart."""
        running = self.workloads.get(workload_id)
        if running is None or running.ended:
            return False
        if running.spec is None:
            running.spec = spec
        self.observer.reaccepted(
            workload_id,
            "primary",
            "this node already runs it as primary of epoch %d",
            running.lifecycle.epoch,
        )
        return True

    def saved_records(self, now: float) -> list[PrimaryRecord]:
        """What the store must keep of the workloads run here as primary.

        Every workload that runs or may still run, and every replicated run
        that ended here, until its reservation ends, marked ``ended``: from
        the moment it fences, not only once it is retired, so a restart in
        between still refuses to start its revoked epoch again (FM 29).
        """
        records: list[PrimaryRecord] = []
        for workload_id, workload in self.workloads.items():
            if not workload.ended or workload.container_up:
                records.append(workload.saved())
            elif workload.lifecycle.replicated and workload.expires_at > now:
                records.append(self._ended_record(workload_id, workload))
        records.extend(
            record
            for workload_id, record in self.ended.items()
            if workload_id not in self.workloads and record.expires_at > now
        )
        return records

    def _ended_record(self, workload_id: str, workload: PrimaryWorkload[SpecT]) -> PrimaryRecord:
        """The record of a replicated run that ended here (the reason it ended kept)."""
        known = self.ended.get(workload_id)
        if known is not None:
            return known
        return attrs.evolve(workload.saved(), ended=workload.lifecycle.state.value)

    def ended_run(self, workload_id: str, now: float) -> PrimaryRecord | None:
        """The replicated run of ``workload_id`` that ended here, while its reservation lasts."""
        ended = self.ended.get(workload_id)
        if ended is not None and ended.expires_at <= now:
            del self.ended[workload_id]  # the reservation is over: forget it
            return None
        return ended

    async def _publish_start(self, workload_id: str, now: float) -> None:
        """Claim epoch 0 of a replicated workload as its primary (failure mode 32).

        Heartbeats are per provider, so without this nothing on the relays
        would say that this node holds the workload: a second primary named
        for the same id would find nothing to refuse on. Its standbys ignore
        their primary's own claim; a claim on epoch 0 never competes with a
        standby's, which is always for a later epoch.
        """
        if self.reads_done is not None:
            # Not urgent (nothing waits for it): let pending epoch reads go first.
            await self.reads_done(self.timing.heartbeat_interval)
        claim = PromotionClaim(
            workload_id=workload_id,
            epoch=0,
            fencing_token=0,
            claimant=self.me,
            standby_index=0,
            claimed_at=now,
        )
        await self.io.publish_until_quorum(
            claim, operation="publish_start", workload_id=workload_id, role="primary"
        )

    def take_over(
        self,
        now: float,
        saved: PrimaryRecord,
        *,
        lease_from: float,
        spec: SpecT | None,
        handle: Any = None,
        restart: RestartPolicy | None = None,
        renewed: float = -math.inf,
    ) -> None:
        """Run ``saved``'s workload from its epoch on (promoted, adopted or fenced).

        The lease starts at ``lease_from``; ``restart`` defaults to the node's
        policy; ``renewed`` is the lease end the runtime was already given.
        """
        lifecycle = WorkloadLifecycle.promoted(
            workload_id=saved.workload_id,
            me=self.me,
            timing=self.timing,
            now=now,
            standbys=saved.standbys,
            epoch=saved.epoch,
            fencing_token=saved.fencing_token,
            lease_from=lease_from,
            expires_at=saved.expires_at,
            restart=self.restart if restart is None else restart,
            at_risk=self.at_risk,
        )
        workload = PrimaryWorkload(
            lifecycle, spec, handle, created_at=saved.created_at, expires_at=saved.expires_at
        )
        workload.renewed = renewed
        self.add(workload)

    def add(self, workload: PrimaryWorkload[SpecT]) -> None:
        """Run ``workload`` from now on (started here, promoted, adopted or fenced)."""
        workload_id = workload.lifecycle.workload_id
        self.workloads[workload_id] = workload
        self.schedule(workload_id)
        self.refresh()  # hear its standbys' claims (FM25)

    def handover(self, now: float, workload_id: str, state_uri: str | None, reason: str) -> None:
        workload = self.workloads.get(workload_id)
        if workload is None:
            raise NodeMisuse(f"workload {workload_id!r} does not run here as primary")
        effects = workload.lifecycle.handover(now, state_uri=state_uri, reason=reason)
        self.observer.handing_over(workload_id, reason)
        self.effects(workload_id, now, effects)

    def stop(self, now: float, workload_id: str, reason: str) -> None:
        """Stop ``workload_id`` for good (the host shuts down); a no-op once it ended."""
        workload = self.workloads.get(workload_id)
        if workload is None:
            raise NodeMisuse(f"workload {workload_id!r} does not run here as primary")
        self.observer.stopping(workload_id, reason)
        self.call(workload_id, lambda lc: lc.stop(now, reason), now)

    def active(self) -> list[str]:
        """The workloads whose lifecycle has not ended."""
        return [w for w, r in self.workloads.items() if not r.ended]

    # -- the lifecycle's effects -----------------------------------------------

    def call(
        self,
        workload_id: str,
        call: Callable[[WorkloadLifecycle], list[LifecycleEffect]],
        now: float,
    ) -> None:
        """Feed one input to a workload's lifecycle and carry out what it decides."""
        workload = self.workloads.get(workload_id)
        if workload is None:
            return
        try:
            effects = call(workload.lifecycle)
        except Exception as exc:
            self.observer.machine_refused("lifecycle", exc, workload_id)
            return
        self.effects(workload_id, now, effects)

    def effects(self, workload_id: str, now: float, effects: Sequence[LifecycleEffect]) -> None:
        workload = self.workloads.get(workload_id)
        if workload is None:
            return
        for effect in effects:
            self._effect(workload_id, workload, now, effect)
        self._retire(workload_id)
        self.schedule(workload_id)
        self.poke()
        self._tell_changed()

    async def changed(self) -> None:
        """Wait until some workload's lifecycle moves or a container operation ends."""
        if self._changed is None:
            self._changed = anyio.Event()
        await self._changed.wait()

    def _tell_changed(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    def _effect(
        self,
        workload_id: str,
        workload: PrimaryWorkload[SpecT],
        now: float,
        effect: LifecycleEffect,
    ) -> None:
        """The one dispatcher of lifecycle effects (``assert_never`` on a new type)."""
        match effect:
            case StartContainer():
                self._busy(workload, self._run_start, workload_id, workload, effect)
            case StopContainer():
                self._busy(workload, self._run_stop, workload_id, workload, effect.reason)
            case PublishRevocation():
                self._busy(workload, self._run_revoke, workload_id, effect)
            case CheckContainer():
                self._busy(workload, self._run_check, workload_id, workload)
            case ReclaimContainer():
                self._busy(workload, self._run_reclaim, workload_id, workload)
            case StateChanged():
                self.observer.report(
                    LifecycleChanged(now, workload_id, effect.old, effect.new, effect.reason)
                )
            case AtRisk():
                self.observer.report(
                    LeaseAtRisk(
                        now,
                        workload_id,
                        effect.epoch,
                        effect.lease_end,
                        effect.remaining,
                        effect.reason,
                    )
                )
            case _:
                assert_never(effect)

    def _busy(
        self,
        workload: PrimaryWorkload[SpecT],
        func: Callable[..., Coroutine[Any, Any, None]],
        *args: Any,
    ) -> None:
        workload.busy += 1

        async def run() -> None:
            try:
                await func(*args)
            finally:
                workload.busy -= 1
                self._retire(args[0])
                self._tell_changed()

        self.io.spawn(run)

    def _retire(self, workload_id: str) -> None:
        """Forget a workload once it ended and has nothing left to do (FM 5)."""
        workload = self.workloads.get(workload_id)
        if workload is None or workload.busy:
            return
        lifecycle = workload.lifecycle
        if workload.ended and lifecycle.next_deadline() is None:
            if workload.container_up:
                return
            if lifecycle.replicated:
                # Its epoch was revoked: never start it again (FM 29).
                self.ended.setdefault(workload_id, self._ended_record(workload_id, workload))
            del self.workloads[workload_id]
            self._due.pop(workload_id, None)
            self.persistence.mark_dirty()
            self.refresh()
            self.observer.retired(workload_id, lifecycle.state.value)

    # -- containers ----------------------------------------------------------------

    async def _run_start(
        self, workload_id: str, workload: PrimaryWorkload[SpecT], effect: StartContainer
    ) -> None:
        token = effect.fencing_token
        started_at = self.now()
        workload.starting = done = anyio.Event()
        self.observer.report(ContainerStarting(started_at, workload_id, token, promotion=False))
        error: str | None = None
        lease_end: float | None = None
        try:
            error = await self._may_start(workload_id, workload)
            if error is None:
                lease_end = self.bound_for(workload)
                with fail_after(self.timing.spawn_timeout):
                    handle = await self.runtime.spawn(
                        workload.spec,
                        workload_id=workload_id,
                        fencing_token=token,
                        lease_end=lease_end,
                    )
                workload.renewed = lease_end
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            self.observer.failed("start", error, workload_id=workload_id, role="primary")
        else:
            if error is None:
                workload.handle = handle
                workload.started = True
                workload.stopped = False
                self.persistence.mark_dirty()
        finally:
            workload.starting = None
            done.set()
        now = self.now()
        self.observer.report(
            ContainerStarted(
                now,
                workload_id,
                token,
                False,
                error is None,
                error,
                now - started_at,
                lease_end if error is None else None,
            )
        )
        if error is None:
            self.call(workload_id, lambda lc: lc.container_started(now), now)
        else:
            self.call(workload_id, lambda lc: lc.container_failed(now, error), now)

    async def _may_start(self, workload_id: str, workload: PrimaryWorkload[SpecT]) -> str | None:
        """Why a container must not start now (``None``: it may).

        The lifecycle is first brought up to the present (a node that was
        paused fences before it starts anything), and the primary record is
        made durable, so a restarted node knows what it may find running.
        """
        now = self.now()
        self.call(workload_id, lambda lc: lc.tick(now), now)
        lifecycle = workload.lifecycle
        if workload.ended:
            return f"the workload ended before its start ({lifecycle.state.value})"
        if lifecycle.replicated and not lifecycle.holds_lease(now):
            return "the lease ran out before the container could start"
        if workload.spec is None:
            return "no spec for this workload yet (adopted after a restart; re-accept it)"
        if self.persistence.store is not None:
            self.persistence.mark_dirty()
            try:
                await self.persistence.flush()
            except StoreError as exc:
                return f"primary record not saved, so not starting: {exc}"
        return None

    def bound_for(self, workload: PrimaryWorkload[SpecT]) -> float:
        """The lease end a runtime enforces for ``workload``'s container (see the lifecycle)."""
        return workload.lifecycle.runtime_bound()

    async def renew(
        self, workload_id: str, workload: PrimaryWorkload[SpecT], lease_end: float
    ) -> None:
        """Hand a renewed lease end to the runtime (its supervisor enforces it)."""
        handle = workload.handle
        if handle is None or lease_end <= workload.renewed:
            return
        try:
            await self.io.within(self.timing.query_timeout, self.runtime.renew(handle, lease_end))
        except Exception as exc:
            self.observer.failed("renew", exc, workload_id=workload_id, role="primary")
            return
        workload.renewed = max(workload.renewed, lease_end)
        token = workload.lifecycle.fencing_token
        self.observer.report(LeaseRenewed(self.now(), workload_id, token, lease_end))

    async def _run_stop(
        self, workload_id: str, workload: PrimaryWorkload[SpecT], reason: str
    ) -> None:
        if workload.starting is not None:
            await workload.starting.wait()  # never leave a start that was in flight running
        if workload.handle is not None and not workload.stopped:
            await self.stop_container(
                workload.handle, workload_id, workload.lifecycle.fencing_token, reason, "primary"
            )
        workload.stopped = True
        now = self.now()
        self.call(workload_id, lambda lc: lc.container_stopped(now), now)

    async def stop_container(
        self, handle: Any, workload_id: str, token: int, reason: str, role: str
    ) -> None:
        """Stop a container, retrying until the runtime confirms it."""
        wait = self.timing.retry_interval
        while True:
            try:
                with fail_after(self.timing.spawn_timeout):
                    await self.runtime.stop(handle)
            except Exception as exc:
                self.observer.failed("stop", exc, workload_id=workload_id, role=role)
                await anyio.sleep(wait)
                wait = min(wait * 2, _MAX_STOP_BACKOFF)
                continue
            break
        self.observer.report(
            ContainerStopped(self.observer.clock(), workload_id, token, reason), role=role
        )

    async def _run_revoke(self, workload_id: str, effect: PublishRevocation) -> None:
        revocation = effect.revocation
        result = await self.io.publish(
            revocation, operation="publish_revocation", workload_id=workload_id, role="primary"
        )
        now = self.now()
        self.observer.report(RevocationPublished(now, workload_id, revocation.epoch, result.acked))
        acked = tuple(result.acked)
        self.call(workload_id, lambda lc: lc.revocation_published(now, acked), now)

    async def _run_check(self, workload_id: str, workload: PrimaryWorkload[SpecT]) -> None:
        status = await self.container_status(workload_id, workload)
        if status is None:
            return
        now = self.now()
        self.call(workload_id, lambda lc: lc.container_status(now, status), now)

    async def _run_reclaim(self, workload_id: str, workload: PrimaryWorkload[SpecT]) -> None:
        if workload.handle is not None:
            await self.stop_container(
                workload.handle,
                workload_id,
                workload.lifecycle.fencing_token,
                "reclaimed",
                "primary",
            )
        workload.stopped = True
        workload.handle = None

    async def container_status(self, workload_id: str, workload: PrimaryWorkload[SpecT]) -> Any:
        """The runtime's status of ``workload``'s container (``None``: it could not say)."""
        if workload.handle is None:
            return "absent"
        timeout = self.timing.query_timeout
        try:
            return await self.io.within(timeout, self.runtime.status(workload.handle))
        except Exception as exc:
            self.observer.failed("status", exc, workload_id=workload_id, role="primary")
            return None

    async def poll_containers(self) -> None:
        """Detect containers that stopped without being asked to."""
        for workload_id, workload in list(self.workloads.items()):
            if (
                workload.lifecycle.state not in RUNNING
                or workload.handle is None
                or workload.stopped
                or workload.starting is not None
            ):
                continue
            status = await self.container_status(workload_id, workload)
            if status in (None, "running") or workload.stopped:
                continue
            if self.workloads.get(workload_id) is not workload:
                continue
            workload.stopped = True
            now = self.now()
            self.observer.report(ContainerExited(now, workload_id, str(status)))
            self._exited(workload_id, now, str(status))

    def _exited(self, workload_id: str, now: float, reason: str) -> None:
        self.call(workload_id, lambda lc: lc.container_exited(now, reason), now)

    # -- deadlines -----------------------------------------------------------------

    def schedule(self, workload_id: str) -> None:
        """Record the next deadline of one primary's lifecycle (after every change to it)."""
        workload = self.workloads.get(workload_id)
        due = None if workload is None else workload.lifecycle.next_deadline()
        if due is None:
            self._due.pop(workload_id, None)
        elif self._due.get(workload_id) != due:
            self._due[workload_id] = due
            heapq.heappush(self._heap, (due, workload_id))
            if len(self._heap) > 2 * len(self._due) + 64:
                self._heap = [(d, w) for w, d in self._due.items()]
                heapq.heapify(self._heap)

    def next_deadline(self) -> float | None:
        """The earliest lifecycle deadline."""
        heap = self._heap
        while heap:
            due, workload_id = heap[0]
            if self._due.get(workload_id) == due:
                return due
            heapq.heappop(heap)
        return None

    def tick(self, now: float) -> None:
        """Tick every lifecycle that is due, each at most once."""
        due: list[str] = []
        while (top := self.next_deadline()) is not None and top <= now:
            _, workload_id = heapq.heappop(self._heap)
            del self._due[workload_id]
            due.append(workload_id)
        for workload_id in due:
            self.call(workload_id, lambda lc: lc.tick(now), now)
            self.schedule(workload_id)

    def tick_all(self, now: float) -> None:
        """Bring every lifecycle up to ``now`` (after a pause: leases that ran out fence)."""
        for workload_id in list(self.workloads):
            self.call(workload_id, lambda lc: lc.tick(now), now)
