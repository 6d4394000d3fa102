"""The monotonic clock of the running backend, for loops that read it often.

``anyio.current_time()`` looks the backend up on every call; a loop that
reads the clock several times per turn (the node's timer and heartbeat, a
memory subscription's reader), for as long as it runs, looks it up once: on
asyncio the clock is the event loop's ``time``, which is what anyio would
return, elsewhere anyio's own function.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import anyio
import sniffio

__all__ = ["monotonic"]


def monotonic() -> Callable[[], float]:
    """A function giving what ``anyio.current_time()`` gives, in the running task's backend."""
    if sniffio.current_async_library() == "asyncio":
        return asyncio.get_running_loop().time
    return anyio.current_time
