"""The node's Wakeup: a wait until set or a delay, as cheap as a future on asyncio.

On trio (mock clock) and on asyncio (the simulator's virtual loop) it wakes
when set or when the delay is over; on the virtual loop it takes exactly the
steps ``move_on_after`` around an ``Event`` took, so a simulated run does not
change with it.
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Awaitable, Callable

import anyio
import pytest

from standby.aio import Wakeup
from standby.testing.simulation._loop import CURRENT_PROCESS, Process, VirtualLoop


def _first_delay(schedule: str) -> float:
    """The first wait's delay: none left, none at all (``math.inf``) or 10 s."""
    return {"zero": 0.0, "set-during-no-deadline": math.inf}.get(schedule, 10.0)


async def _times(wakeup: Wakeup, schedule: str) -> list[float]:
    """Run one schedule; the times at which each wait returned."""
    start = anyio.current_time()
    seen: list[float] = []
    async with anyio.create_task_group() as group:
        if schedule == "set-before":
            wakeup.set()
        elif schedule in ("set-during", "set-during-no-deadline"):

            async def poke() -> None:
                await anyio.sleep(3)
                wakeup.set()

            group.start_soon(poke)
        await wakeup.wait(_first_delay(schedule))
        seen.append(anyio.current_time() - start)
        wakeup.clear()
        await wakeup.wait(5.0)
        seen.append(anyio.current_time() - start)
    return seen


EXPECTED = {
    "set-before": [0.0, 5.0],
    "set-during": [3.0, 8.0],
    "set-during-no-deadline": [3.0, 8.0],
    "timeout": [10.0, 15.0],
    "zero": [0.0, 5.0],
}


@pytest.mark.anyio
@pytest.mark.parametrize("schedule", sorted(EXPECTED))
async def test_a_wait_returns_when_set_or_when_its_delay_is_over_on_trio(schedule: str) -> None:
    assert await _times(Wakeup(), schedule) == EXPECTED[schedule]


def _in_process(loop: VirtualLoop, name: str, work: Callable[[], Awaitable[object]]) -> Process:
    process = Process(name)
    context = contextvars.copy_context()
    context.run(CURRENT_PROCESS.set, process)

    async def root() -> None:
        await work()

    process.root = context.run(loop.create_task, root())
    return process


async def _event_times(schedule: str) -> list[float]:
    """The same schedule written with ``move_on_after`` and an ``Event``."""
    start = anyio.current_time()
    seen: list[float] = []
    event = anyio.Event()
    async with anyio.create_task_group() as group:
        if schedule == "set-before":
            event.set()
        elif schedule in ("set-during", "set-during-no-deadline"):

            async def poke() -> None:
                await anyio.sleep(3)
                event.set()

            group.start_soon(poke)
        with anyio.move_on_after(_first_delay(schedule)):
            await event.wait()
        seen.append(anyio.current_time() - start)
        event = anyio.Event()
        with anyio.move_on_after(5.0):
            await event.wait()
        seen.append(anyio.current_time() - start)
    return seen


@pytest.mark.parametrize("schedule", sorted(EXPECTED))
def test_on_the_virtual_loop_a_wait_takes_the_steps_of_a_cancel_scope(schedule: str) -> None:
    loop = VirtualLoop()
    results: dict[str, list[float]] = {}

    async def cheap() -> None:
        results["wakeup"] = await _times(Wakeup(), schedule)

    async def scoped() -> None:
        results["scope"] = await _event_times(schedule)

    a = _in_process(loop, "wakeup", cheap)
    b = _in_process(loop, "scope", scoped)
    loop.advance_to(100)
    assert results["wakeup"] == results["scope"] == EXPECTED[schedule]
    assert a.steps == b.steps > 0
    loop.close()


def test_a_cancelled_wait_leaves_no_timer_behind() -> None:
    loop = VirtualLoop()
    wakeup = Wakeup()
    outcome: list[str] = []

    async def work() -> None:
        with anyio.move_on_after(2):
            await wakeup.wait(50)
        outcome.append(f"cancelled at {anyio.current_time():g}")

    _in_process(loop, "a", work)
    loop.advance_to(10)
    assert outcome == ["cancelled at 2"]
    assert loop.next_timer() is None
    wakeup.set()  # nobody waits: nothing to wake, nothing raised
    assert wakeup.is_set()
    loop.close()
