"""``at_once``: coroutines run at once until the last is done or a deadline (standby.aio).

On trio (mock clock) it is anyio's own task group. On the simulator's virtual
loop it must do what the task group does, in the same loop steps, so that a
simulated run does not change with it: each test runs a schedule once with
the cheap form and once with the anyio form, in two simulated processes, and
compares what happened, when, and the steps each process took. The backend's
sleep (``sleeper``) is checked here too.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
from test_wakeup import _in_process

from standby.aio import Steps, at_once, at_once_steps, run_steps, sleeper
from standby.testing.simulation._loop import VirtualLoop

RELAYS = ("relay-0", "relay-1", "relay-2")
#: How long each relay's leg takes in the schedules (relay-2 outlasts a 5 s deadline).
TAKES = {"relay-0": 1.0, "relay-1": 2.0, "relay-2": 9.0}

Fanout = Callable[[tuple[str, ...], Any, float], Awaitable[None]]


async def _task_group(
    relays: tuple[str, ...],
    leg: Callable[[str], Awaitable[None]],
    timeout: float,  # noqa: ASYNC109 - as at_once
) -> None:
    """The anyio form at_once replaces on asyncio."""
    async with anyio.create_task_group() as group:
        group.cancel_scope.deadline = anyio.current_time() + timeout
        for relay in relays:
            group.start_soon(leg, relay)


async def _task_group_steps(
    relays: tuple[str, ...],
    leg: Callable[[str], Steps],
    timeout: float,  # noqa: ASYNC109 - as at_once_steps
) -> None:
    """The anyio form at_once_steps replaces on asyncio: each leg a task of the group."""
    await _task_group(relays, lambda relay: run_steps(leg(relay)), timeout)


async def _legs(fanout: Fanout, schedule: str, *, steps: bool = False) -> list[str]:
    """Run one schedule of three legs; what happened, with the virtual time.

    ``steps``: the legs are :data:`~standby.aio.Steps` (generators of delays)
    for ``at_once_steps`` or its anyio form, else coroutines.
    """
    start = anyio.current_time()
    seen: list[str] = []

    def note(what: str) -> None:
        seen.append(f"{what} at {anyio.current_time() - start:g}")

    async def leg(relay: str) -> None:
        try:
            await anyio.sleep(TAKES[relay] / 2)
            if schedule == "a leg fails" and relay == "relay-0":
                raise ValueError(relay)
            await anyio.sleep(TAKES[relay] / 2)
            note(f"{relay} done")
        except anyio.get_cancelled_exc_class():
            note(f"{relay} cancelled")
            raise

    def leg_steps(relay: str) -> Steps:
        try:
            yield TAKES[relay] / 2
            if schedule == "a leg fails" and relay == "relay-0":
                raise ValueError(relay)
            yield TAKES[relay] / 2
            note(f"{relay} done")
        except GeneratorExit:
            note(f"{relay} cancelled")
            raise

    timeout = {"past the deadline": 5.0, "no deadline": math.inf}.get(schedule, 20.0)
    legs: Any = leg_steps if steps else leg
    try:
        if schedule == "cancelled from outside":
            with anyio.move_on_after(1.5):
                await fanout(RELAYS, legs, timeout)
        else:
            await fanout(RELAYS, legs, timeout)
    except Exception as exc:  # the task group's exception group
        note(f"raised {type(exc).__name__} of {[str(e) for e in exc.exceptions]}")  # type: ignore[attr-defined]
    note("returned")
    return seen


EXPECTED = {
    "in time": ["relay-0 done at 1", "relay-1 done at 2", "relay-2 done at 9", "returned at 9"],
    "no deadline": ["relay-0 done at 1", "relay-1 done at 2", "relay-2 done at 9", "returned at 9"],
    "past the deadline": [
        "relay-0 done at 1",
        "relay-1 done at 2",
        "relay-2 cancelled at 5",
        "returned at 5",
    ],
    "a leg fails": [
        "relay-1 cancelled at 0.5",
        "relay-2 cancelled at 0.5",
        "raised ExceptionGroup of ['relay-0'] at 0.5",
        "returned at 0.5",
    ],
    "cancelled from outside": [
        "relay-0 done at 1",
        "relay-1 cancelled at 1.5",
        "relay-2 cancelled at 1.5",
        "returned at 1.5",
    ],
}


def _both(
    cheap: Callable[[], Awaitable[list[str]]], anyio_form: Callable[[], Awaitable[list[str]]]
) -> tuple[list[str], list[str], int, int]:
    """Run both forms on one virtual loop: (cheap's log, anyio's log, their steps)."""
    loop = VirtualLoop()
    results: dict[str, list[str]] = {}

    async def run_cheap() -> None:
        results["cheap"] = await cheap()

    async def run_anyio() -> None:
        results["anyio"] = await anyio_form()

    a = _in_process(loop, "cheap", run_cheap)
    b = _in_process(loop, "anyio", run_anyio)
    loop.advance_to(100)
    assert not loop.errors
    assert loop.next_timer() is None  # neither left a timer behind
    loop.close()
    return results["cheap"], results["anyio"], a.steps, b.steps


@pytest.mark.anyio
@pytest.mark.parametrize("steps", [False, True], ids=["coroutines", "steps"])
@pytest.mark.parametrize("schedule", sorted(EXPECTED))
async def test_at_once_runs_the_legs_at_once_until_the_deadline_on_trio(
    schedule: str, steps: bool
) -> None:
    seen = await _legs(at_once_steps if steps else at_once, schedule, steps=steps)
    assert sorted(seen) == sorted(EXPECTED[schedule])


@pytest.mark.parametrize("steps", [False, True], ids=["coroutines", "steps"])
@pytest.mark.parametrize("schedule", sorted(EXPECTED))
def test_on_the_virtual_loop_at_once_takes_the_steps_of_a_task_group(
    schedule: str, steps: bool
) -> None:
    """``at_once`` (plain tasks) and ``at_once_steps`` (StepLegs, no task) against anyio's group."""
    cheap_form = at_once_steps if steps else at_once
    anyio_form = _task_group_steps if steps else _task_group
    cheap, reference, cheap_steps, reference_steps = _both(
        lambda: _legs(cheap_form, schedule, steps=steps),
        lambda: _legs(anyio_form, schedule, steps=steps),
    )
    assert sorted(cheap) == sorted(EXPECTED[schedule])
    # anyio cancels the legs' scopes in the order of a set of them (by
    # address), so only the legs that finished keep their order there.
    assert sorted(cheap) == sorted(reference)
    assert [e for e in cheap if "cancelled" not in e] == [
        e for e in reference if "cancelled" not in e
    ]
    assert cheap_steps == reference_steps > 0


def test_a_step_leg_that_yields_no_delay_fails_instead_of_hanging() -> None:
    """Run without tasks (asyncio), a leg may only wait out delays: anything else is an error."""
    loop = VirtualLoop()
    raised: list[BaseException] = []

    def leg(relay: str) -> Steps:
        yield 1.0
        yield "not a delay"  # type: ignore[misc]

    async def run() -> None:
        try:
            await at_once_steps(RELAYS, leg)
        except Exception as exc:  # the task group's exception group
            raised.append(exc)

    _in_process(loop, "legs", run)
    loop.advance_to(10)
    loop.close()
    [group] = raised
    assert [type(e) for e in group.exceptions] == [TypeError] * 3  # type: ignore[attr-defined]
    assert "not a delay" in str(group.exceptions[0])  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_sleeper_sleeps_on_the_running_backend() -> None:
    start = anyio.current_time()
    await sleeper()(4.0)
    assert anyio.current_time() - start == 4.0
