"""The monotonic clock and the sleep of the running backend, for code that uses them often.

``anyio.current_time()`` and ``anyio.sleep()`` look the backend up on every
call; a loop that reads the clock several times per turn (the node's timer
and heartbeat, a memory subscription's reader), for as long as it runs, or a
call that sleeps several times (a memory relay's legs), looks it up once: on
asyncio the clock is the event loop's ``time`` and the sleep
``asyncio.sleep``, which is what anyio would end up with, elsewhere anyio's
own functions.

:class:`LoopClock` is ``anyio.current_time()`` for an object that outlives a
task (an adapter shared by every task of a test, the memory relays): on
asyncio it keeps the event loop it found and reads that loop's clock while
it runs, rather than ask asyncio for the running loop on every call (a
system call on Python 3.11).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import anyio
import sniffio

__all__ = ["LoopClock", "monotonic", "sleeper"]


def monotonic() -> Callable[[], float]:
    """A function giving what ``anyio.current_time()`` gives, in the running task's backend."""
    if sniffio.current_async_library() == "asyncio":
        return asyncio.get_running_loop().time
    return anyio.current_time


def sleeper() -> Callable[[float], Awaitable[None]]:
    """The running backend's sleep: ``asyncio.sleep`` on asyncio, ``anyio.sleep`` elsewhere."""
    if sniffio.current_async_library() == "asyncio":
        return asyncio.sleep
    return anyio.sleep


class LoopClock:
    """Gives what ``anyio.current_time()`` gives; on asyncio, from the loop it last found.

    For objects used from one thread: the loop it keeps is asked for the
    time while it runs (the only loop running in that thread), and looked up
    again once it stops. Outside any loop it raises as anyio does.
    """

    __slots__ = ("_loop",)

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None

    def __call__(self) -> float:
        loop = self._loop
        if loop is not None and loop.is_running():
            return loop.time()
        now = anyio.current_time()
        self._loop = (
            asyncio.get_running_loop() if sniffio.current_async_library() == "asyncio" else None
        )
        return now
