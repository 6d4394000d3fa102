"""The primary's heartbeat: one per interval for all its workloads, and the wake-up check."""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

import anyio

from ..aio import Wakeup, monotonic
from ..core._effects import LifecycleEffect
from ..core._lifecycle import WorkloadLifecycle
from ..core._models import Heartbeat
from ..core._timing import Timing
from ._events import ClockJumped, HeartbeatPublished
from ._io import NodeIO
from ._observe import Observer
from ._primary import PrimarySide

__all__ = ["Heartbeats"]

SpecT = TypeVar("SpecT")

#: Early heartbeats are at least this fraction of heartbeat_interval apart
#: (each heartbeat feeds every workload's lifecycle: O(workloads)).
_EARLY_HEARTBEAT_SPACING = 0.25


class Heartbeats(Generic[SpecT]):
    """Sends the heartbeat, feeds its acknowledgements to every lifecycle, renews leases.

    Before anything is sent the lifecycles are brought up to the present
    (failure mode 17): a wall clock that moved further than the monotonic
    clock since the last look (a paused VM, a clock step) counts as a pause,
    and leases that ran out meanwhile fence first. A wall clock that fell
    behind the monotonic clock by more than ``max_clock_skew`` (a step
    back) does not lengthen any lease: each ends when it would have without
    the step (failure mode 31).
    """

    def __init__(
        self,
        me: str,
        timing: Timing,
        observer: Observer,
        io: NodeIO,
        primary: PrimarySide[SpecT],
        *,
        now: Callable[[], float],
        watch: Callable[[], Coroutine[Any, Any, None]],
    ) -> None:
        self.me = me
        self.timing = timing
        self.observer = observer
        self.io = io
        self.primary = primary
        self.now = now
        #: The step-down watch's read of the claims (once per interval, FM25).
        self.watch = watch
        self._mark: tuple[float, float] | None = None
        self._now: Wakeup | None = None
        #: The monotonic clock of the loop the node runs on (looked up once a run).
        self._clock: Callable[[], float] | None = None

    def open(self) -> None:
        self._now = Wakeup()
        self._clock = None

    def poke(self) -> None:
        """Heartbeat soon (a workload just started or promoted)."""
        if self._now is not None:
            self._now.set()

    def catch_up_clock(self, *, every: bool = True) -> float:
        """Bring every lifecycle up to the present before acting as primary (FM17).

        With ``every=False`` (the timer loop, whose tick then brings the due
        lifecycles up to date) only a clock jump ticks every lifecycle, so a
        node running many workloads does not tick them all on every input.
        Returns the wall-clock time.
        """
        now = self.now()
        clock = self._clock
        if clock is None:
            self._clock = clock = monotonic()
        mono = clock()
        mark, self._mark = self._mark, (now, mono)
        jumped = False
        if mark is not None:
            wall_step, mono_step = now - mark[0], mono - mark[1]
            if abs(wall_step - mono_step) > self.timing.max_clock_skew:
                jumped = True
                self.observer.report(ClockJumped(now, wall_step, mono_step))
                if wall_step < mono_step:
                    # A step back: no lease may last longer for it (FM31).
                    back = mono_step - wall_step
                    for workload_id in list(self.primary.workloads):
                        self.primary.call(
                            workload_id, lambda lc: lc.clock_stepped_back(now, back), now
                        )
        if every or jumped:
            self.primary.tick_all(now)
        return now

    async def send(self) -> None:
        """One heartbeat for every active workload."""
        timestamp = self.catch_up_clock()
        # Counted after the catch-up: a lease that ran out meanwhile has fenced.
        workloads = len(self.primary.active())
        if not workloads:
            return
        heartbeat = Heartbeat(provider=self.me, timestamp=timestamp, active_workloads=workloads)
        result = await self.io.publish(
            heartbeat, operation="heartbeat", workload_id=None, role="primary"
        )
        now = self.now()
        self.observer.report(HeartbeatPublished(now, timestamp, result.acked, workloads))
        relays = sorted(result.acked)

        def feed(lifecycle: WorkloadLifecycle) -> list[LifecycleEffect]:
            return lifecycle.heartbeat_published(now, timestamp, relays)

        running = self.primary.workloads
        for workload_id in list(running):
            self.primary.call(workload_id, feed, now)
        for workload_id, workload in list(running.items()):
            lifecycle = workload.lifecycle
            if workload.handle is None or workload.stopped or not lifecycle.renews(now):
                continue
            # A workload left with no standbys (the last one promoted) is bound
            # by its reservation, not by the claim's lease it started under.
            end = self.primary.bound_for(workload)
            if end > workload.renewed:
                self.io.spawn(self.primary.renew, workload_id, workload, end)

    async def loop(self) -> None:
        """The heartbeat task (once per interval it also polls the containers, reads the claims)."""
        interval = self.timing.heartbeat_interval
        clock = monotonic()
        polled = -math.inf
        read_at = -math.inf
        while True:
            wake = self._now
            assert wake is not None
            wake.clear()
            next_at = clock() + interval
            active = self.primary.active()
            if active:
                if clock() >= read_at:
                    # Has a standby claimed a later epoch of ours (FM25)? Once per
                    # interval, in a task of its own: it never delays the heartbeat.
                    read_at = next_at
                    self.io.spawn(self.watch)
                await self.send()
                # A heartbeat sent early (a workload just started or promoted)
                # does not poll every container again: once per interval.
                if clock() - polled >= interval:
                    polled = clock()
                    await self.primary.poll_containers()
            left = next_at - clock()
            await wake.wait(0.0 if left < 0.0 else left)  # max(left, 0.0), for less
            # Early heartbeats (a workload just started) are spaced out, so that
            # a burst of accepts sends a few heartbeats rather than one each; the
            # first workload of an idle node heartbeats at once.
            if active:
                spacing = interval * _EARLY_HEARTBEAT_SPACING
                rest = next_at - interval + spacing - clock()
                if rest > 0:
                    await anyio.sleep(rest)
