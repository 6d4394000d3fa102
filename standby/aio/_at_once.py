"""Coroutines run at once until the last is done or a deadline, without anyio's per-task cost.

:func:`at_once` runs ``run(item)`` for every item at once, as an anyio task
group whose cancel scope has the deadline would (no deadline by default):
the memory relays' legs of one call (one per relay, abandoned at the call's
deadline), the primary's reads of its claims (one per batch of workloads).

On trio, and wherever the call is not on asyncio, it is that task group. On
asyncio each item runs in a plain task and the caller waits on one future:
anyio's task group would add, per task, a task handle, a cancel scope
entered and left, a completion event and its bookkeeping, which is most of
what a memory relay call costs (and the simulator makes many thousands of
them).

The asyncio path keeps the task group's schedule, so a simulated run is the
same with either: the tasks are created in order, in the caller's context,
after the deadline's timer (none without a deadline); each resumes exactly
where it would (a task's steps are its own awaits); a task's completion is
noticed by a callback one loop iteration after it returns, and the caller
resumes on the iteration after the last one. At the deadline the unfinished
tasks are cancelled and the caller wakes once, then again when the last one
is gone, as it does inside anyio's group; the same when one fails, and the
call then raises the failures as an exception group, as the task group does.

:func:`at_once_steps` does the same for legs written as
:data:`~standby.aio._steps.Steps` that yield delays only; on asyncio they run
as :class:`~standby.aio._steps.StepLeg`, without a task (its docstring says
how it keeps the task's schedule).
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import anyio
import sniffio

from ._steps import StepLeg, Steps, run_steps

if sys.version_info < (3, 11):  # pragma: no cover - the backport
    from exceptiongroup import BaseExceptionGroup

__all__ = ["at_once", "at_once_steps"]

_Item = TypeVar("_Item")


async def at_once(
    items: Sequence[_Item],
    run: Callable[[_Item], Coroutine[Any, Any, None]],
    timeout: float = math.inf,  # noqa: ASYNC109 - the call's own timeout
) -> None:
    """Run ``run(item)`` for every item at once; after ``timeout`` the rest are abandoned."""
    if sniffio.current_async_library() == "asyncio":
        await _Fanout(asyncio.get_running_loop(), timeout).run(items, run, None)
        return
    async with anyio.create_task_group() as group:
        group.cancel_scope.deadline = anyio.current_time() + timeout
        for item in items:
            group.start_soon(run, item)


async def at_once_steps(
    items: Sequence[_Item],
    steps: Callable[[_Item], Steps],
    timeout: float = math.inf,  # noqa: ASYNC109 - the call's own timeout
) -> None:
    """:func:`at_once` for legs that yield delays only; on asyncio, without tasks."""
    if sniffio.current_async_library() == "asyncio":
        await _Fanout(asyncio.get_running_loop(), timeout).run(items, None, steps)
        return
    await at_once(items, lambda item: run_steps(steps(item)), timeout)


class _Fanout:
    """The tasks ("legs") of one call on asyncio, and the caller's wait for them."""

    __slots__ = ("_deadline", "_errors", "_left", "_loop", "_tasks", "_timer", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self._loop = loop
        self._deadline = loop.time() + timeout
        self._tasks: list[asyncio.Task[None] | StepLeg] = []
        self._left = 0
        self._errors: list[BaseException] = []
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.Handle | None = None

    async def run(
        self,
        items: Sequence[_Item],
        leg: Callable[[_Item], Coroutine[Any, Any, None]] | None,
        steps: Callable[[_Item], Steps] | None,
    ) -> None:
        """Run ``leg`` (a coroutine for each item, as tasks) or ``steps`` (as StepLegs)."""
        loop = self._loop
        expired = self._deadline <= loop.time()
        if not expired and self._deadline != math.inf:
            self._timer = loop.call_at(self._deadline, self._expire)
        if steps is not None:
            # One context for the legs, as each task would copy it, in which
            # anyio finds its backend from a callback as it does in a task.
            context = contextvars.copy_context()
            context.run(sniffio.current_async_library_cvar.set, "asyncio")
            for item in items:
                self._tasks.append(StepLeg(loop, steps(item), context, self._done))
        else:
            assert leg is not None
            for item in items:
                task = loop.create_task(leg(item))
                task.add_done_callback(self._done)
                self._tasks.append(task)
        self._left = len(self._tasks)
        if expired:
            self._cancel_legs()
        try:
            if not self._tasks:
                await asyncio.sleep(0)
            await self._wait()
        except asyncio.CancelledError:
            # Cancelled from outside: the legs go too, and the caller leaves
            # once they are gone, shielded meanwhile, as from a task group.
            self._cancel_legs()
            with anyio.CancelScope(shield=True):
                await self._wait()
            raise
        finally:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if not self._left:
                # Let the legs go: each refers back to this fan-out (its done
                # callback), a cycle only the garbage collector would break.
                self._tasks = []
        if self._errors:
            raise BaseExceptionGroup("unhandled errors in a TaskGroup", self._errors)

    async def _wait(self) -> None:
        """Until every leg is done (woken once more if the deadline passes meanwhile)."""
        while self._left:
            self._waiter = waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _done(self, task: asyncio.Task[None] | StepLeg) -> None:
        self._left -= 1
        if not task.cancelled() and (error := task.exception()) is not None:
            # As the group's cancel scope would: the other legs go, and the
            # caller wakes once (then again when the last leg is gone).
            self._errors.append(error)
            self._cancel_legs()
            self._wake()
        elif not self._left:
            self._wake()

    def _expire(self) -> None:
        if self._loop.time() < self._deadline:  # a clock a hair short of the deadline
            self._timer = self._loop.call_at(self._deadline, self._expire)
            return
        self._timer = None
        self._cancel_legs()
        self._wake()

    def _cancel_legs(self) -> None:
        """Cancel every leg still running (one whose wait is over, on the next iteration)."""
        retry = False
        for task in self._tasks:
            if task.done():
                continue
            if isinstance(task, StepLeg):
                woken = task.woken()
            else:
                waiter = getattr(task, "_fut_waiter", None)
                woken = waiter is not None and waiter.done()
            if woken:
                retry = True  # it runs this iteration anyway; cancel it at its next wait
                continue
            task.cancel()
        if retry:
            self._loop.call_soon(self._cancel_legs)
