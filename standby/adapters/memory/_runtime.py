"""The in-memory container runtime and the record its hosts share.

Re-exported by :mod:`standby.adapters.memory`, their public home.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, Literal

import anyio
import anyio.lowlevel
import attrs

from ...aio import LoopClock
from ...core._errors import RuntimeFailure, SpawnError
from ...protocols._contracts import ContainerStatus, RunningWorkload
from .._runtime import OrderedRuntime, SpawnOrder
from ..supervised._supervisor import lease_deadline

__all__ = ["MemoryHandle", "MemoryRuntime", "RunInterval", "RuntimeEvent", "RuntimeRecord"]

RuntimeEventKind = Literal[
    "spawn", "started", "spawn-failed", "spawn-cancelled", "stopped", "exited", "expired", "renewed"
]


@attrs.frozen
class RuntimeEvent:
    """One thing that happened in a :class:`MemoryRuntime`.

    ``at`` is :func:`anyio.current_time` (virtual in tests). ``spawn`` is the
    request, ``started`` the moment the container runs, ``stopped`` a stop
    the node asked for, ``exited`` an unexpected end (injected exit or host
    crash), ``expired`` the supervisor stopping it at its lease end (whether
    or not the node still lives), ``renewed`` a lease extension.
    """

    at: float
    host: str
    kind: RuntimeEventKind
    workload_id: str
    fencing_token: int
    handle: int | None = None
    detail: str = ""


@attrs.frozen
class RunInterval:
    """A container's run, from ``start`` to ``end`` (``None``: still running)."""

    host: str
    workload_id: str
    fencing_token: int
    handle: int
    start: float
    end: float | None

    def overlaps(self, other: RunInterval) -> bool:
        """Whether the two runs were ever running at the same instant."""
        mine = math.inf if self.end is None else self.end
        theirs = math.inf if other.end is None else other.end
        return self.start < theirs and other.start < mine


_ENDS: Final = frozenset({"stopped", "exited", "expired"})


class _Host:
    """What one host runs, kept in the shared record so it outlives a runtime object."""

    __slots__ = ("deadlines", "known", "leases", "running")

    def __init__(self) -> None:
        self.running: dict[int, MemoryHandle] = {}
        self.known: dict[int, MemoryHandle] = {}
        #: handle id -> lease end (the host's wall clock, Unix seconds)
        self.leases: dict[int, float] = {}
        #: handle id -> the instant of the record's clock (virtual, monotonic)
        #: at which the lease runs out: fixed when the lease end is received,
        #: so a later step of the host's wall clock does not move it (FM31)
        self.deadlines: dict[int, float] = {}


class RuntimeRecord:
    """The log shared by the runtimes of several hosts, to check runs across them.

    It also holds what each host runs, so that a fresh :class:`MemoryRuntime`
    for the same host (a restarted node process) finds the containers its
    previous incarnation left running, exactly as a real supervisor or
    container engine would keep them.
    """

    def __init__(self) -> None:
        self.events: list[RuntimeEvent] = []
        #: ``anyio.current_time()``, for the record and its runtimes' events
        #: (whoever runs the record on a loop of its own may set that loop's ``time``).
        self.clock: Callable[[], float] = LoopClock()
        self._next_handle = 0
        self._hosts: dict[str, _Host] = {}
        #: No running container's deadline comes before this instant: until
        #: then :meth:`reap` has nothing to stop and looks at nothing.
        self._reap_from = math.inf

    def __repr__(self) -> str:
        return f"RuntimeRecord({len(self.events)} events)"

    def _handle_id(self) -> int:
        self._next_handle += 1
        return self._next_handle

    def _host(self, host: str) -> _Host:
        state = self._hosts.get(host)
        if state is None:
            state = self._hosts[host] = _Host()
        return state

    def _append(self, event: RuntimeEvent) -> None:
        if self.events and self.events[-1].at > event.at:
            bisect.insort_right(self.events, event, key=_event_time)
        else:
            self.events.append(event)

    def _deadline(self, state: _Host, handle_id: int, at: float) -> None:
        """``handle_id`` (of the host ``state``) is stopped at ``at`` unless renewed."""
        state.deadlines[handle_id] = at
        self._reap_from = min(self._reap_from, at)

    def _now(self) -> float:
        try:
            return self.clock()
        except Exception:  # no event loop: nothing can have expired since the last call
            return -math.inf

    def reap(self, now: float | None = None) -> int:
        """Stop every container whose lease ran out by ``now`` (default: the current time).

        This is the supervisor's work, done lazily: each query of a runtime or
        of this record reaps first, and the ``expired`` event carries the
        instant the lease ran out, not the instant of the query. Returns how
        many containers it stopped.
        """
        if now is None:
            now = self._now()
        if now < self._reap_from:
            return 0
        stopped = 0
        reap_from = math.inf
        for name, state in self._hosts.items():
            due = []
            for i, at in state.deadlines.items():
                if i not in state.running:
                    continue
                if at <= now:
                    due.append(i)
                elif at < reap_from:
                    reap_from = at
            if not due:
                continue
            for handle_id in sorted(due, key=lambda i: (state.deadlines[i], i)):
                handle = state.running.pop(handle_id)
                at = state.deadlines.pop(handle_id)
                self._append(
                    RuntimeEvent(
                        at,
                        name,
                        "expired",
                        handle.workload_id,
                        handle.fencing_token,
                        handle_id,
                        f"lease end {state.leases[handle_id]:.3f}",
                    )
                )
                stopped += 1
        self._reap_from = reap_from
        return stopped

    def intervals(self, workload_id: str | None = None) -> list[RunInterval]:
        """Every run (of ``workload_id``, or of all workloads), in start order."""
        self.reap()
        open_runs: dict[int, RuntimeEvent] = {}
        runs: list[RunInterval] = []
        for event in self.events:
            if workload_id is not None and event.workload_id != workload_id:
                continue
            if event.handle is None:
                continue
            if event.kind == "started":
                open_runs[event.handle] = event
            elif event.kind in _ENDS and event.handle in open_runs:
                start = open_runs.pop(event.handle)
                runs.append(_interval(start, event.at))
        runs.extend(_interval(start, None) for start in open_runs.values())
        runs.sort(key=lambda run: (run.start, run.handle))
        return runs

    def max_concurrent(self, workload_id: str) -> int:
        """Most runs of ``workload_id`` at one instant (a run ending as another starts: 1)."""
        points: list[tuple[float, int]] = []
        for run in self.intervals(workload_id):
            points.append((run.start, 1))
            if run.end is not None:
                points.append((run.end, -1))
        points.sort()  # at one instant, ends (-1) come before starts (+1)
        best = current = 0
        for _at, step in points:
            current += step
            best = max(best, current)
        return best

    def overlaps(self, workload_id: str) -> list[tuple[RunInterval, RunInterval]]:
        """Every pair of runs of ``workload_id`` that ran at the same time."""
        runs = self.intervals(workload_id)
        return [
            (first, second)
            for i, first in enumerate(runs)
            for second in runs[i + 1 :]
            if first.overlaps(second)
        ]

    def of_kind(self, kind: RuntimeEventKind, workload_id: str | None = None) -> list[RuntimeEvent]:
        """The events of one kind (for one workload), in order."""
        self.reap()
        return [
            e
            for e in self.events
            if e.kind == kind and (workload_id is None or e.workload_id == workload_id)
        ]


def _event_time(event: RuntimeEvent) -> float:
    return event.at


def _interval(start: RuntimeEvent, end: float | None) -> RunInterval:
    assert start.handle is not None
    return RunInterval(
        host=start.host,
        workload_id=start.workload_id,
        fencing_token=start.fencing_token,
        handle=start.handle,
        start=start.at,
        end=end,
    )


@attrs.frozen
class MemoryHandle:
    """The handle :meth:`MemoryRuntime.spawn` returns."""

    id: int
    host: str
    workload_id: str
    fencing_token: int
    spec: Any = attrs.field(eq=False, repr=False)
    restore_from: str | None = None


class MemoryRuntime(OrderedRuntime[MemoryHandle]):
    """A fake container runtime for one host; implements ``ContainerRuntime``.

    It models a lease supervisor that does not share the node's fate: what a
    host runs lives in the shared :class:`RuntimeRecord`, so containers
    outlive the runtime object (and the node) that started them, a fresh
    ``MemoryRuntime`` for the same host and record lists them (adoption),
    and each stops on its own at its lease end (read against ``wall_clock``,
    the host's clock in Unix seconds, when the lease end is received and
    then kept on the monotonic clock, so a later step of the wall clock
    does not move it; tests pass ``lambda: EPOCH + anyio.current_time()``).
    ``enforce_leases=False`` turns the supervisor off, to show what goes
    wrong without it (failure mode 14).

    Several hosts share one record (``record=``), so a test can check that
    two of them never ran a workload at once. Spawns take ``spawn_latency``
    seconds (settable at any time); :meth:`fail_spawns` makes the next spawns
    fail, :meth:`never_starts` makes a workload's spec one that can never
    start (its spawns fail and :meth:`check_spec` refuses it, as a missing
    executable would). Event times come from :func:`anyio.current_time`.
    """

    def __init__(
        self,
        host: str = "host",
        *,
        record: RuntimeRecord | None = None,
        spawn_latency: float = 0.0,
        stop_latency: float = 0.0,
        wall_clock: Callable[[], float] = time.time,
        stop_grace: float = 0.0,
        enforce_leases: bool = True,
    ) -> None:
        if not stop_grace >= 0.0 or not math.isfinite(stop_grace):
            raise ValueError(f"stop_grace must be finite and >= 0, got {stop_grace!r}")
        self.host = host
        self.record = record if record is not None else RuntimeRecord()
        self.spawn_latency = spawn_latency
        self.stop_latency = stop_latency
        self.wall_clock = wall_clock
        self._stop_grace = stop_grace
        self.enforce_leases = enforce_leases
        self._failures: list[tuple[str | None, str]] = []
        self._unstartable: dict[str, str] = {}
        self._state = self.record._host(host)

    def __repr__(self) -> str:
        return f"MemoryRuntime({self.host!r}, {len(self._state.running)} running)"

    @property
    def stop_grace(self) -> float:
        """The supervisor stops a container at its lease end; this bounds how late."""
        return self._stop_grace

    @property
    def events(self) -> list[RuntimeEvent]:
        """This host's events, in order."""
        self.record.reap()
        return [e for e in self.record.events if e.host == self.host]

    def _log(
        self,
        kind: RuntimeEventKind,
        workload_id: str,
        token: int,
        handle: int | None = None,
        detail: str = "",
    ) -> None:
        self.record._append(
            RuntimeEvent(self.record.clock(), self.host, kind, workload_id, token, handle, detail)
        )

    def _bound(self, handle_id: int, lease_end: float) -> None:
        """Take ``lease_end`` as received now: the supervisor's rule (failure mode 31).

        It becomes a deadline on the monotonic (virtual) clock at once, the
        same :func:`~._supervisor.lease_deadline` the real supervisor uses;
        a deadline never moves earlier.
        """
        state = self._state
        state.leases[handle_id] = lease_end
        if self.enforce_leases:
            due = lease_deadline(
                lease_end + self._stop_grace, self.wall_clock(), self.record.clock()
            )
            self.record._deadline(
                state, handle_id, max(state.deadlines.get(handle_id, -math.inf), due)
            )

    def fail_spawns(
        self, count: int = 1, *, workload_id: str | None = None, error: str = "injected failure"
    ) -> None:
        """Make the next ``count`` spawns (of ``workload_id``, or any) fail with ``error``."""
        self._failures.extend([(workload_id, error)] * count)

    def never_starts(self, workload_id: str, error: str = "executable not found") -> None:
        """Make ``workload_id``'s spec one that can never start on this host."""
        self._unstartable[workload_id] = error

    async def check_spec(self, spec: Any, *, workload_id: str) -> None:
        """Refuse the spec of a workload marked with :meth:`never_starts`."""
        error = self._unstartable.get(workload_id)
        if error is not None:
            raise SpawnError(
                f"{self.host}: {workload_id!r} can never start: {error}", workload_id=workload_id
            )

    def running(self, workload_id: str | None = None) -> list[MemoryHandle]:
        """Handles of the containers running now."""
        self.record.reap()
        return [
            h
            for h in self._state.running.values()
            if workload_id is None or h.workload_id == workload_id
        ]

    def lease_end(self, handle: MemoryHandle) -> float | None:
        """The lease end the supervisor enforces for ``handle`` (``None``: unknown)."""
        return self._state.leases.get(handle.id)

    async def _start(self, order: SpawnOrder) -> MemoryHandle:
        """Start a container after ``spawn_latency``."""
        workload_id, fencing_token = order.workload_id, order.fencing_token
        lease_end, restore_from = order.lease_end, order.restore_from
        if math.isnan(lease_end):
            raise SpawnError(f"{self.host}: lease end is NaN", workload_id=workload_id)
        self._log("spawn", workload_id, fencing_token, detail=f"restore_from={restore_from}")
        try:
            await anyio.sleep(self.spawn_latency)
        except BaseException:
            self._log("spawn-cancelled", workload_id, fencing_token)
            raise
        never = self._unstartable.get(workload_id)
        if never is not None:
            self._log("spawn-failed", workload_id, fencing_token, detail=never)
            raise SpawnError(
                f"{self.host}: cannot start {workload_id!r}: {never}", workload_id=workload_id
            )
        for position, (target, error) in enumerate(self._failures):
            if target is None or target == workload_id:
                del self._failures[position]
                self._log("spawn-failed", workload_id, fencing_token, detail=error)
                raise SpawnError(
                    f"{self.host}: cannot start {workload_id!r}: {error}", workload_id=workload_id
                )
        if self.enforce_leases and lease_end <= self.wall_clock():
            self._log("spawn-failed", workload_id, fencing_token, detail="lease already over")
            raise SpawnError(
                f"{self.host}: cannot start {workload_id!r}: its lease ended at {lease_end:.3f}",
                workload_id=workload_id,
            )
        handle = MemoryHandle(
            id=self.record._handle_id(),
            host=self.host,
            workload_id=workload_id,
            fencing_token=fencing_token,
            spec=order.spec,
            restore_from=restore_from,
        )
        self._state.running[handle.id] = handle
        self._state.known[handle.id] = handle
        self._bound(handle.id, lease_end)
        self._log("started", workload_id, fencing_token, handle.id, f"lease end {lease_end:.3f}")
        return handle

    def _check(self, handle: Any) -> MemoryHandle:
        if not isinstance(handle, MemoryHandle) or handle.host != self.host:
            raise RuntimeFailure(f"{self.host}: not a handle of this runtime: {handle!r}")
        return handle

    async def renew(self, handle: Any, lease_end: float) -> None:
        """Extend the lease of a running container; an earlier end is ignored."""
        checked = self._check(handle)
        await anyio.lowlevel.checkpoint()
        self.record.reap()
        state = self._state
        if checked.id not in state.running or math.isnan(lease_end):
            return
        if lease_end > state.leases.get(checked.id, -math.inf):
            self._bound(checked.id, lease_end)
            self._log(
                "renewed",
                checked.workload_id,
                checked.fencing_token,
                checked.id,
                f"lease end {lease_end:.3f}",
            )

    async def status(self, handle: Any) -> ContainerStatus:
        """``running``, ``stopped`` or ``absent``."""
        checked = self._check(handle)
        await anyio.lowlevel.checkpoint()
        self.record.reap()
        if checked.id in self._state.running:
            return "running"
        if checked.id in self._state.known:
            return "stopped"
        return "absent"

    async def stop(self, handle: Any) -> None:
        """Stop the container (idempotent)."""
        checked = self._check(handle)
        if self.stop_latency:
            await anyio.sleep(self.stop_latency)
        else:
            await anyio.lowlevel.checkpoint()
        self.record.reap()
        if self._state.running.pop(checked.id, None) is not None:
            self._state.deadlines.pop(checked.id, None)
            self._log("stopped", checked.workload_id, checked.fencing_token, checked.id)

    async def list(self) -> list[RunningWorkload]:
        """What this host runs now (also as seen from a fresh runtime object)."""
        await anyio.lowlevel.checkpoint()
        self.record.reap()
        state = self._state
        return [
            RunningWorkload(h.workload_id, h.fencing_token, h, state.leases[h.id])
            for h in sorted(state.running.values(), key=lambda h: h.id)
        ]

    def remove(self, handle: MemoryHandle) -> None:
        """Forget a stopped container: its status becomes ``absent``."""
        if handle.id not in self._state.running:
            self._state.known.pop(handle.id, None)

    def _end(self, gone: Sequence[MemoryHandle], reason: str) -> int:
        for handle in gone:
            del self._state.running[handle.id]
            self._state.deadlines.pop(handle.id, None)
            self._log("exited", handle.workload_id, handle.fencing_token, handle.id, reason)
        return len(gone)

    def exit(self, workload_id: str, reason: str = "crashed") -> int:
        """Make the running containers of ``workload_id`` exit unexpectedly; returns how many."""
        self.record.reap()
        return self._end(
            [h for h in self._state.running.values() if h.workload_id == workload_id], reason
        )

    def crash(self, reason: str = "host crashed") -> int:
        """The host dies: every running container ends at once; returns how many."""
        self.record.reap()
        return self._end(list(self._state.running.values()), reason)
