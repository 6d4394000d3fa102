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
import collections
import contextvars
import heapq
import math
import sys
import threading
import types
from collections.abc import Callable
from typing import Any

import sniffio

from ...aio import StepLeg

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
        self.timers: list[tuple[_Timer, float]] = []

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

    # Equality stays object identity (the default, compared in C).


class _Call(asyncio.Handle):
    """A ready callback, with the process it belongs to (``None``: the simulator's own).

    Made by the loop itself (see :meth:`VirtualLoop._call`), without
    :class:`asyncio.Handle`'s constructor (which asks the loop whether it
    is in debug mode on every call): the loop runs it itself. What only a
    debugging loop sets per handle is a constant of the class here.
    """

    __slots__ = ("_process",)

    _callback: Callable[..., object]
    _args: tuple[Any, ...]
    _context: contextvars.Context
    _process: Process | None
    _loop = None
    _repr = None
    _source_traceback = None

    def cancel(self) -> None:
        self._cancelled = True
        self._callback = None  # type: ignore[assignment]
        self._args = None  # type: ignore[assignment]


class _Timer(asyncio.TimerHandle):
    """A timer of the loop, kept in its heap as ``(when, scheduling order, timer)``.

    Ties go first come, first served: asyncio's own timers compare by time
    alone, so the order of two timers due at the same instant would depend
    on the shape of the heap, which every timer ever scheduled (or
    cancelled) changes. Made by the loop itself, like :class:`_Call`.
    """

    __slots__ = ("_process",)

    _callback: Callable[..., object]
    _args: tuple[Any, ...]
    _context: contextvars.Context
    _process: Process | None
    _loop: VirtualLoop
    _when: float
    _scheduled: bool
    _repr = None
    _source_traceback = None

    def cancel(self) -> None:
        if not self._cancelled:
            self._cancelled = True
            self._callback = None  # type: ignore[assignment]
            self._args = None  # type: ignore[assignment]
            if self._scheduled:
                self._loop._timer_cancelled_count += 1


#: What a counted step's callback is bound to: a task, or a leg that stands in for one.
_STEPPERS = frozenset({_Task, StepLeg})

#: A plain function's callback is bound to nothing: never a step (and asking
#: it for ``__self__`` would cost an exception).
_FUNCTION = types.FunctionType


_new = object.__new__


class _ErrorLog:
    """The loop's exception handler: each error, as a line of ``errors``."""

    __slots__ = ("errors",)

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", "error"))
        exc = context.get("exception")
        if exc is not None:
            message += f": {type(exc).__name__}: {exc}"
        self.errors.append(message)


def _task_factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> _Task:
    assert isinstance(loop, VirtualLoop)
    return _Task(coro, loop=loop, **kwargs)


#: asyncio's cap on one wait (a day); kept so the clock moves exactly as it did.
_LONGEST_WAIT = 24 * 3600.0

#: Cancelled timers stay in the heap until they reach its front, unless more
#: than this many and more than half of the heap are cancelled: then they are
#: dropped at once. A simulated world keeps few timers (a dozen, most of them
#: cancelled early: a wakeup's timer goes when it is woken), so a heap kept
#: small is cheaper to push to and pop from than asyncio's threshold of 100
#: would leave it.
_FEWEST_TO_DROP = 4

#: Heap entries: ``(when, scheduling order, timer)``.
_Entry = tuple[float, int, _Timer]


class VirtualLoop(asyncio.BaseEventLoop):
    """An asyncio loop on a virtual clock that gates callbacks by process.

    It runs its own iterations (:meth:`run_forever`), in the order asyncio's
    ``_run_once`` gives: the callbacks ready when an iteration starts run in
    FIFO order (those they schedule wait for the next one); when nothing is
    ready, the clock moves to the earliest timer, and the timers due then
    join the ready queue in ``(when, scheduling order)`` order.
    """

    def __init__(self) -> None:
        super().__init__()
        self._now = 0.0
        self._clock_resolution = 1e-9
        self._timers: list[_Entry] = []
        self._ready: collections.deque[_Call | _Timer] = collections.deque()
        self.errors: list[str] = []
        self._tasks_made = 0
        self._timers_made = 0
        # The handler holds the list, not the loop (no cycle for the collector).
        self.set_exception_handler(_ErrorLog(self.errors))
        self.set_task_factory(_task_factory)

    def set_debug(self, enabled: bool) -> None:
        super().set_debug(enabled)
        # Every future and task asks its loop get_debug() when it is made: the
        # bound __bool__ of the answer gives it without a Python frame.
        self.get_debug = bool(enabled).__bool__  # type: ignore[method-assign]

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
            handle = self._timer(when, self.stop, (), contextvars.copy_context(), None)
        else:
            handle = self._call(self.stop, (), contextvars.copy_context(), None)
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
        timers = self._timers
        while timers and timers[0][2]._cancelled:
            heapq.heappop(timers)[2]._scheduled = False
            self._timer_cancelled_count -= 1
        return timers[0][0] if timers else None

    def run_forever(self) -> None:
        """Run iterations until :meth:`stop` (see the class docstring for their order)."""
        self._check_closed()  # type: ignore[attr-defined]
        self._check_running()  # type: ignore[attr-defined]
        old_hooks = sys.get_asyncgen_hooks()
        try:
            self._thread_id = threading.get_ident()
            sys.set_asyncgen_hooks(
                firstiter=self._asyncgen_firstiter_hook,  # type: ignore[attr-defined]
                finalizer=self._asyncgen_finalizer_hook,  # type: ignore[attr-defined]
            )
            asyncio.events._set_running_loop(self)
            self._iterate()
        finally:
            self._stopping = False
            self._thread_id = None  # type: ignore[assignment]
            asyncio.events._set_running_loop(None)
            sys.set_asyncgen_hooks(*old_hooks)

    def _iterate(self) -> None:
        ready = self._ready
        popleft = ready.popleft
        append = ready.append
        timers = self._timers
        heappop = heapq.heappop
        resolution = self._clock_resolution
        steppers = _STEPPERS
        function = _FUNCTION
        # Timers due by ``end`` are due now; only this loop moves the clock. Due
        # at ``end`` too: from about 1e9 s on, the resolution is below the
        # clock's own precision (``end`` equals the clock), and a timer due
        # exactly now would otherwise never be due.
        end = self._now + resolution
        while True:
            if not ready and not self._stopping:
                # Nothing to run: the clock moves to the earliest live timer.
                cancelled = self._timer_cancelled_count
                if cancelled > _FEWEST_TO_DROP and cancelled * 2 > len(timers):
                    self._drop_cancelled()
                while timers and timers[0][2]._cancelled:
                    heappop(timers)[2]._scheduled = False
                    self._timer_cancelled_count -= 1
                if not timers:
                    raise RuntimeError(
                        "the simulated world has nothing left to do and nothing scheduled: "
                        "a run must always have a deadline"
                    )
                wait = timers[0][0] - self._now
                if wait > 0:
                    self._now += wait if wait < _LONGEST_WAIT else _LONGEST_WAIT
                    end = self._now + resolution
            # The timers due now join the ready queue (a cancelled one is let go).
            while timers and timers[0][0] <= end:
                timer = heappop(timers)[2]
                timer._scheduled = False
                if timer._cancelled:  # counted when cancelled in the heap
                    self._timer_cancelled_count -= 1
                else:
                    append(timer)
            # The callbacks ready now; those they schedule wait for the next round.
            left = len(ready)
            while left:
                left -= 1
                handle = popleft()
                if handle._cancelled:
                    continue
                process = handle._process
                callback = handle._callback
                args = handle._args
                try:
                    if process is None:  # the simulator's own
                        if args:
                            handle._context.run(callback, *args)
                        else:
                            handle._context.run(callback)
                    elif process.state == RUNNING:
                        if args:
                            handle._context.run(callback, *args)
                        else:
                            handle._context.run(callback)
                        # A step is a task resuming (an await returning); other
                        # callbacks, such as a library's retries, are not counted,
                        # so the count does not depend on how often those run.
                        if (
                            type(callback) is not function
                            and type(getattr(callback, "__self__", None)) in steppers
                        ):
                            process.steps += 1
                            if process.kill_at_step is not None:
                                self._stepped(process, handle._context)
                    elif process.state == KILLED:
                        # Unwinding (see kill): the callback runs only to let the
                        # coroutines finish, the world is already cut off from them.
                        if args:
                            handle._context.run(callback, *args)
                        else:
                            handle._context.run(callback)
                    else:  # FROZEN
                        process.held.append((callback, tuple(args), handle._context))
                except (SystemExit, KeyboardInterrupt):
                    raise
                except BaseException as exc:
                    self._failed(handle, callback, exc)
            if self._stopping:
                return

    def _stepped(self, process: Process, context: contextvars.Context) -> None:
        """A step of ``process`` that is to be killed after some step: is it this one?"""
        if process.kill_at_step is not None and process.steps >= process.kill_at_step:
            process.kill_at_step = None
            context.run(self.kill, process)

    def _failed(
        self, handle: _Call | _Timer, callback: Callable[..., object], exc: BaseException
    ) -> None:
        # The handle may have been cancelled by its own callback: name what ran.
        source = asyncio.format_helpers._format_callback_source(  # type: ignore[attr-defined]
            callback, handle._args or ()
        )
        self.call_exception_handler(
            {"message": f"Exception in callback {source}", "exception": exc, "handle": handle}
        )

    def _drop_cancelled(self) -> None:
        kept = []
        for entry in self._timers:
            if entry[2]._cancelled:
                entry[2]._scheduled = False
            else:
                kept.append(entry)
        heapq.heapify(kept)
        self._timers[:] = kept
        self._timer_cancelled_count = 0

    # -- scheduling -------------------------------------------------------

    def call_soon(  # type: ignore[override]
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        if context is None:
            context = contextvars.copy_context()
        if self._closed:  # type: ignore[attr-defined]
            raise RuntimeError("Event loop is closed")
        handle = _new(_Call)
        handle._callback = callback
        handle._args = args
        handle._context = context
        handle._cancelled = False
        handle._process = context.get(CURRENT_PROCESS)
        self._ready.append(handle)
        return handle

    def _call(
        self,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        context: contextvars.Context,
        process: Process | None,
    ) -> _Call:
        if self._closed:  # type: ignore[attr-defined]
            raise RuntimeError("Event loop is closed")
        handle = _new(_Call)
        handle._callback = callback
        handle._args = args
        handle._context = context
        handle._cancelled = False
        handle._process = process
        self._ready.append(handle)
        return handle

    def _call_soon(
        self,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        context: contextvars.Context | None,
    ) -> _Call:
        # What asyncio's call_soon_threadsafe and its internals schedule with.
        if context is None:
            context = contextvars.copy_context()
        return self._call(callback, args, context, context.get(CURRENT_PROCESS))

    def close(self) -> None:
        super().close()
        self._timers.clear()

    def call_later(  # type: ignore[override]
        self,
        delay: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        if context is None:
            context = contextvars.copy_context()
        return self._timer(self._now + delay, callback, args, context, context.get(CURRENT_PROCESS))

    def call_at(  # type: ignore[override]
        self,
        when: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        if context is None:
            context = contextvars.copy_context()
        return self._timer(when, callback, args, context, context.get(CURRENT_PROCESS))

    def _timer(
        self,
        when: float,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        context: contextvars.Context,
        process: Process | None,
    ) -> _Timer:
        if self._closed:  # type: ignore[attr-defined]
            raise RuntimeError("Event loop is closed")
        self._timers_made += 1
        timer = _new(_Timer)
        timer._callback = callback
        timer._args = args
        timer._loop = self
        timer._context = context
        timer._cancelled = False
        timer._when = when
        timer._scheduled = True
        timer._process = process
        heapq.heappush(self._timers, (when, self._timers_made, timer))
        return timer

    # -- process control --------------------------------------------------

    def freeze(self, process: Process, *, hold_clock: bool = False) -> None:
        """Hold every callback of ``process`` from now on (and its timers with ``hold_clock``)."""
        if process.state != RUNNING:
            return
        process.state = FROZEN
        if not hold_clock:
            return
        process.frozen_at = self._now
        timers = self._timers
        for i, (when, seq, timer) in enumerate(timers):
            if timer._process is process and not timer._cancelled:
                process.timers.append((timer, when))
                timer._when = math.inf
                timers[i] = (math.inf, seq, timer)
        if process.timers:
            heapq.heapify(timers)

    def thaw(self, process: Process) -> None:
        """Release ``process``: what it held runs now, in its original order."""
        if process.state != FROZEN:
            return
        process.state = RUNNING
        self._release(process)

    def _release(self, process: Process) -> None:
        if process.frozen_at is not None:
            held_for = self._now - process.frozen_at
            for timer, when in process.timers:
                timer._when = when + held_for
            process.frozen_at = None
            process.timers = []
            timers = self._timers
            for i, (when, seq, timer) in enumerate(timers):
                if when != timer._when:
                    timers[i] = (timer._when, seq, timer)
            heapq.heapify(timers)
        held, process.held = process.held, []
        for callback, args, context in held:
            self._call(callback, args, context, process)

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
