"""The memory relays' waits on asyncio, without anyio's per-wait machinery.

:func:`each_relay`, one call's legs (one per relay) run at once and
abandoned at the call's deadline, the same as its anyio form in everything
but cost (a subscription's wait for its next delivery is
:class:`standby.aio.Wakeup`, shared with the node), and :func:`sleeper`,
the backend's own sleep (what ``anyio.sleep`` ends up calling, without
looking the backend up on every call).

``each_relay``: on trio, and wherever the call is not on asyncio, this is an anyio task
group whose cancel scope has the deadline. On asyncio each leg is a plain
task and the caller waits on one future: anyio's task group would add, per
leg, a task handle, a cancel scope entered and left, a completion event and
its bookkeeping, which is most of what a memory relay call costs (and the
simulator makes many thousands of them).

The asyncio path keeps the task group's schedule, so a simulated run is the
same with either: the legs are created in order, as tasks, in the caller's
context, after the deadline's timer; each resumes exactly where it would
(a leg's steps are its own awaits); a leg's completion is noticed by a
callback one loop iteration after it returns, and the caller resumes on the
iteration after the last one. At the deadline the unfinished legs are
cancelled and the caller wakes once, then again when the last leg is gone,
as it does inside anyio's group; the same when a leg fails, and the call
then raises the failures as an exception group, as the task group does.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import anyio
import sniffio

if sys.version_info < (3, 11):  # pragma: no cover - the backport
    from exceptiongroup import BaseExceptionGroup

__all__ = ["each_relay", "sleeper"]

Leg = Callable[[str], Coroutine[Any, Any, None]]


def sleeper() -> Callable[[float], Awaitable[None]]:
    """The running backend's sleep: ``asyncio.sleep`` on asyncio, ``anyio.sleep`` elsewhere."""
    if sniffio.current_async_library() == "asyncio":
        return asyncio.sleep
    return anyio.sleep


async def each_relay(
    relays: Sequence[str],
    leg: Leg,
    timeout: float,  # noqa: ASYNC109 - the call's own timeout
) -> None:
    """Run ``leg(relay)`` for every relay at once; after ``timeout`` the rest are abandoned."""
    if sniffio.current_async_library() == "asyncio":
        await _Fanout(asyncio.get_running_loop(), timeout).run(relays, leg)
        return
    async with anyio.create_task_group() as group:
        group.cancel_scope.deadline = anyio.current_time() + timeout
        for relay in relays:
            group.start_soon(leg, relay)


class _Fanout:
    """The legs of one call on asyncio, and the caller's wait for them."""

    __slots__ = ("_deadline", "_errors", "_left", "_loop", "_tasks", "_timer", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self._loop = loop
        self._deadline = loop.time() + timeout
        self._tasks: list[asyncio.Task[None]] = []
        self._left = 0
        self._errors: list[BaseException] = []
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.Handle | None = None

    async def run(self, relays: Sequence[str], leg: Leg) -> None:
        loop = self._loop
        expired = self._deadline <= loop.time()
        if not expired:
            self._timer = loop.call_at(self._deadline, self._expire)
        for relay in relays:
            task = loop.create_task(leg(relay))
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

    def _done(self, task: asyncio.Task[None]) -> None:
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
            waiter = getattr(task, "_fut_waiter", None)
            if waiter is not None and waiter.done():
                retry = True  # it runs this iteration anyway; cancel it at its next wait
                continue
            task.cancel()
        if retry:
            self._loop.call_soon(self._cancel_legs)
