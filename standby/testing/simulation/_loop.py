"""A deterministic virtual-time asyncio event loop with per-process control.

:class:`VirtualLoop` is an asyncio event loop whose clock is a number that
only moves when the loop has nothing ready to run: where a real loop would
block in ``select(timeout)`` waiting for I/O, this one adds ``timeout`` to its
clock and carries on (there is no real I/O to wait for). Ready callbacks run
in FIFO order and timers in ``(when, scheduling order)`` order, so one seed
and one schedule of faults give the same run, byte for byte, in any process.

Why asyncio and not trio: trio deliberately shuffles the batch of tasks that
become runnable together (to flush out ordering assumptions), so two runs of
one scenario interleave differently unless its private random generator is
seeded; asyncio's ready queue is a plain FIFO. The node is written for anyio
and runs unchanged on either; the simulator picks the backend whose order is
a function of the inputs alone.

Each simulated process is a :class:`Process`: the tasks of one node
incarnation carry it in a context variable (tasks inherit their creator's
context, and asyncio runs every callback in the context it was scheduled
from), so the loop knows, for every callback, which process it belongs to:

* a **frozen** process's callbacks are held and queued again, in their
  original order, when it thaws (``SIGSTOP`` / ``SIGCONT``, a paused VM).
  When its clock is held too (a paused VM), its timers are put off by the
  length of the freeze: a sleep that had 60 s to go still has 60 s to go
  on thaw, while the wall clock jumped;
* a **killed** process never runs again (``kill -9``). Its coroutines are then
  unwound by cancellation so they can be garbage collected quietly, but only
  after the world has been cut off from them: the simulator fuses every
  adapter of a killed process, so nothing it does afterwards has any effect;
* every step a running process takes (one of its tasks resuming after an
  await) is counted (:attr:`Process.steps`), which is how a kill can land
  after any step the code reaches.

Tasks hash by their creation number on the loop, not by address: libraries
keep tasks in sets and iterate over them (to deliver a cancellation, say),
and that order must not change from one run to the next.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import math
from collections.abc import Callable
from typing import Any

import sniffio

__all__ = ["CURRENT_PROCESS", "Process", "VirtualLoop"]

RUNNING = 0
FROZEN = 1
KILLED = 2


class Process:
    """One incarnation of a simulated process, as the loop sees it."""

    __slots__ = (
        "frozen_at",
        "held",
        "kill_at_step",
        "name",
        "on_kill",
        "root",
        "state",
        "steps",
        "timers",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.state = RUNNING
        self.steps = 0
        self.kill_at_step: int | None = None
        self.on_kill: Callable[[Process], None] | None = None
        self.held: list[tuple[Callable[..., object], tuple[Any, ...], contextvars.Context]] = []
        self.root: asyncio.Task[None] | None = None
        self.frozen_at: float | None = None
        self.timers: list[tuple[asyncio.TimerHandle, float]] = []

    def __repr__(self) -> str:
        state = ("running", "frozen", "killed")[self.state]
        return f"<Process {self.name} {state} after {self.steps} steps>"

    @property
    def alive(self) -> bool:
        """Not killed (it may be frozen)."""
        return self.state != KILLED

    @property
    def frozen(self) -> bool:
        """Frozen: its callbacks are held until it thaws."""
        return self.state == FROZEN


CURRENT_PROCESS: contextvars.ContextVar[Process | None] = contextvars.ContextVar(
    "standby_simulated_process", default=None
)
"""The process a task belongs to (``None``: the simulator itself)."""


class _Task(asyncio.Task):  # type: ignore[type-arg]
    """A task whose hash is its creation number on its loop, not its address.

    Libraries keep tasks in sets (anyio's cancel scopes and task groups do)
    and iterate over them, for instance to deliver a cancellation; with
    address-based hashes that order, and with it the order of the callbacks
    it schedules, would change from run to run.
    """

    def __init__(self, coro: Any, *, loop: VirtualLoop, **kwargs: Any) -> None:
        loop._tasks_made += 1
        self._number = loop._tasks_made  # before the base class files it in a set
        super().__init__(coro, loop=loop, **kwargs)

    def __hash__(self) -> int:
        return self._number

    def __eq__(self, other: object) -> bool:
        return self is other


class _Timer(asyncio.TimerHandle):
    """A timer ordered by ``(when, scheduling order)``: ties go first come, first served.

    asyncio's own timers compare by time alone, so the order of two timers
    due at the same instant depends on the shape of the loop's heap, which
    every timer ever scheduled (or cancelled) changes.
    """

    __slots__ = ("_seq",)

    def __init__(
        self,
        seq: int,
        when: float,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        loop: VirtualLoop,
        context: contextvars.Context | None,
    ) -> None:
        super().__init__(when, callback, args, loop, context)
        self._seq = seq

    def __lt__(self, other: object) -> bool:
        assert isinstance(other, _Timer)
        when = self._when  # type: ignore[attr-defined]
        other_when = other._when  # type: ignore[attr-defined]
        return when < other_when or (when == other_when and self._seq < other._seq)


def _task_factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> _Task:
    assert isinstance(loop, VirtualLoop)
    return _Task(coro, loop=loop, **kwargs)


class _Clockwork:
    """The loop's stand-in for a selector: waiting moves the virtual clock."""

    def __init__(self, loop: VirtualLoop) -> None:
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is None:
            raise RuntimeError(
                "the simulated world has nothing left to do and nothing scheduled: "
                "a run must always have a deadline"
            )
        if timeout > 0:
            self._loop._now += timeout
        return []

    def close(self) -> None:
        pass


class VirtualLoop(asyncio.BaseEventLoop):
    """An asyncio loop on a virtual clock that gates callbacks by process."""

    def __init__(self) -> None:
        super().__init__()
        self._now = 0.0
        self._selector = _Clockwork(self)
        self._clock_resolution = 1e-9
        self.errors: list[str] = []
        self._tasks_made = 0
        self._timers_made = 0
        self.set_exception_handler(self._on_error)
        self.set_task_factory(_task_factory)

    # -- the clock --------------------------------------------------------

    def time(self) -> float:
        return self._now

    def _process_events(self, event_list: list[Any]) -> None:
        pass

    def _write_to_self(self) -> None:
        pass

    def advance_to(self, when: float) -> None:
        """Run everything scheduled up to virtual time ``when``, then stop there."""
        handle: asyncio.Handle
        if when > self._now:
            handle = self._timer(when, self.stop, (), None)
        else:
            handle = asyncio.BaseEventLoop.call_soon(self, self.stop)
        # Every callback of this loop runs under asyncio, tasks or not (the
        # world's own callbacks call anyio.current_time() outside any task).
        previous = getattr(sniffio.thread_local, "name", None)
        sniffio.thread_local.name = "asyncio"
        try:
            self.run_forever()
        finally:
            sniffio.thread_local.name = previous
            handle.cancel()
        self._now = max(self._now, when)

    def next_timer(self) -> float | None:
        """When the next timer is due (``None`` when none is scheduled)."""
        scheduled: list[asyncio.TimerHandle] = self._scheduled  # type: ignore[attr-defined]
        while scheduled and scheduled[0].cancelled():
            heapq.heappop(scheduled)
        return scheduled[0].when() if scheduled else None

    # -- gating -----------------------------------------------------------

    def call_soon(  # type: ignore[override]
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        if context is None:
            context = contextvars.copy_context()
        process = context.get(CURRENT_PROCESS)
        if process is None:
            return super().call_soon(callback, *args, context=context)
        return super().call_soon(self._gate, process, callback, args, context, context=context)

    def call_at(  # type: ignore[override]
        self,
        when: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        if context is None:
            context = contextvars.copy_context()
        process = context.get(CURRENT_PROCESS)
        if process is None:
            return self._timer(when, callback, args, context)
        return self._timer(when, self._gate, (process, callback, args, context), context)

    def _timer(
        self,
        when: float,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        context: contextvars.Context | None,
    ) -> asyncio.TimerHandle:
        self._check_closed()  # type: ignore[attr-defined]
        self._timers_made += 1
        timer = _Timer(self._timers_made, when, callback, args, self, context)
        heapq.heappush(self._scheduled, timer)  # type: ignore[attr-defined]
        timer._scheduled = True  # type: ignore[attr-defined]
        return timer

    def _gate(
        self,
        process: Process,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        context: contextvars.Context,
    ) -> None:
        state = process.state
        if state == RUNNING:
            callback(*args)
            # A step is a task resuming (an await returning); other callbacks,
            # such as a library's retries, are not counted, so the count does
            # not depend on how often those happen to run.
            if type(getattr(callback, "__self__", None)) is _Task:
                process.steps += 1
                if process.kill_at_step is not None and process.steps >= process.kill_at_step:
                    process.kill_at_step = None
                    self.kill(process)
        elif state == FROZEN:
            process.held.append((callback, args, context))
        # KILLED: unwinding (see kill); the callback runs only to let the
        # coroutines finish, the world is already cut off from them.
        else:
            callback(*args)

    # -- process control --------------------------------------------------

    def freeze(self, process: Process, *, hold_clock: bool = False) -> None:
        """Hold every callback of ``process`` from now on (and its timers with ``hold_clock``)."""
        if process.state != RUNNING:
            return
        process.state = FROZEN
        if not hold_clock:
            return
        process.frozen_at = self._now
        scheduled: list[asyncio.TimerHandle] = self._scheduled  # type: ignore[attr-defined]
        for handle in scheduled:
            args = handle._args
            if args and args[0] is process and not handle.cancelled():
                process.timers.append((handle, handle.when()))
                handle._when = math.inf  # type: ignore[attr-defined]
        if process.timers:
            heapq.heapify(scheduled)

    def thaw(self, process: Process) -> None:
        """Release ``process``: what it held runs now, in its original order."""
        if process.state != FROZEN:
            return
        process.state = RUNNING
        self._release(process)

    def _release(self, process: Process) -> None:
        if process.frozen_at is not None:
            held_for = self._now - process.frozen_at
            for handle, when in process.timers:
                handle._when = when + held_for  # type: ignore[attr-defined]
            process.frozen_at = None
            process.timers = []
            heapq.heapify(self._scheduled)  # type: ignore[attr-defined]
        held, process.held = process.held, []
        for callback, args, context in held:
            super().call_soon(self._gate, process, callback, args, context, context=context)

    def kill(self, process: Process) -> None:
        """``kill -9``: ``process`` never acts again; its coroutines are unwound."""
        if process.state == KILLED:
            return
        process.state = KILLED
        if process.on_kill is not None:
            process.on_kill(process)
        self._release(process)
        if process.root is not None and not process.root.done():
            process.root.cancel()

    # -- errors -----------------------------------------------------------

    def _on_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", "error"))
        exc = context.get("exception")
        if exc is not None:
            message += f": {type(exc).__name__}: {exc}"
        self.errors.append(message)
