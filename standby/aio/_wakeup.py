"""A flag one task sleeps on until it is set or a delay has passed, without a cancel scope.

The node's loops (the timer, the heartbeat) each sleep until their next
deadline or until new input pokes them. Written as ``anyio.move_on_after``
around ``Event.wait``, every such wait enters and leaves an anyio cancel
scope, which on asyncio is most of what a wait costs. :class:`Wakeup` does
the same with one future and one timer on asyncio, and keeps anyio's own
primitives on any other backend (trio's cancel scopes are its native ones).

On asyncio a wait takes exactly the loop iterations the cancel-scope version
took: a wait on a flag already set yields once (a checkpoint); a timeout
wakes the task on the iteration after its timer fires, as a cancellation
would; a delay already over wakes it after two iterations. A simulated run
on a virtual clock is therefore the same with either.

On asyncio a :class:`Wakeup` keeps the event loop of its first wait, rather
than look it up on every wait (asking asyncio for the running loop costs a
system call on Python 3.11): it belongs to that loop, as the node's do (the
node makes new ones each time it runs, a memory subscription has its own).
"""

from __future__ import annotations

import asyncio
import math

import anyio
import sniffio

__all__ = ["Wakeup"]


class Wakeup:
    """Set by anyone, waited on by one task at a time; :meth:`clear` starts over."""

    __slots__ = ("_event", "_flag", "_loop", "_timer", "_waiter")

    def __init__(self) -> None:
        self._flag = False
        #: On asyncio, the loop of the first wait (``None``: not waited on asyncio yet).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.Handle | None = None
        self._event: anyio.Event | None = None

    def __repr__(self) -> str:
        return f"<Wakeup {'set' if self._flag else 'clear'}>"

    def is_set(self) -> bool:
        """Whether :meth:`set` was called since the last :meth:`clear`."""
        return self._flag

    def set(self) -> None:
        """Wake the waiting task (or let the next wait return at once)."""
        self._flag = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._event is not None:
            self._event.set()

    def clear(self) -> None:
        """Forget an earlier :meth:`set`."""
        self._flag = False
        self._event = None

    async def wait(self, delay: float) -> None:
        """Return once set (after one checkpoint when set already) or after ``delay`` seconds."""
        loop = self._loop
        if loop is None:
            if sniffio.current_async_library() != "asyncio":
                if self._event is None:
                    self._event = anyio.Event()
                    if self._flag:
                        self._event.set()
                with anyio.move_on_after(delay):
                    await self._event.wait()
                return
            loop = self._loop = asyncio.get_running_loop()
        if self._flag:
            await asyncio.sleep(0)
            return
        self._waiter = waiter = loop.create_future()
        now = loop.time()
        deadline = now + delay
        if deadline <= now:
            self._timer = loop.call_soon(self._expire, loop, waiter, deadline)
        elif deadline != math.inf:
            self._timer = loop.call_at(deadline, self._expire, loop, waiter, deadline)
        try:
            await waiter
        finally:
            self._waiter = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _expire(
        self, loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[None], at: float
    ) -> None:
        if waiter.done():
            return
        if loop.time() < at:  # a clock that reached the timer a hair short of it
            self._timer = loop.call_at(at, self._expire, loop, waiter, at)
            return
        waiter.set_result(None)
