"""The monotonic clock and the sleep of the running backend, for code that uses them often.

``anyio.current_time()`` and ``anyio.sleep()`` look the backend up on every
call; a loop that reads the clock several times per turn (the node's timer
and heartbeat, a memory subscription's reader), for as long as it runs, or a
call that sleeps several times (a memory relay's legs), looks it up once: on
asyncio the clock is the event loop's ``time`` and the sleep
``asyncio.sleep``, which is what anyio would end up with, elsewhere anyio's
own functions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import anyio
import sniffio

__all__ = ["monotonic", "sleeper"]


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
