"""Coroutines that only wait out delays, written as generators and run without a task.

A leg of a call to a free in-memory relay does nothing but wait out link
delays between its checks. Written as a generator that yields each delay
(:data:`Steps`), it runs anywhere a coroutine does (:func:`run_steps`), and
on asyncio without a task at all: a :class:`StepLeg` runs its generator from
loop callbacks placed exactly where the task's steps would run (its first
step on the iteration after it is made, each later one on the iteration
after its delay's timer fires, or after a zero delay on the next one), is
cancelled where the task would be, and is noticed done one iteration after
it returns, like a task. A loop that counts its tasks' steps (the
simulator's) counts a :class:`StepLeg`'s steps as a task's, so a simulated
run is the same with either, step for step.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Generator
from typing import Any

from ._clock import sleeper

__all__ = ["StepLeg", "Steps", "run_steps"]

Steps = Generator[float | Awaitable[Any], None, None]
"""One leg as a generator: it yields a delay to wait out (seconds; ``<= 0``:
just let the others run) or, where it must wait for something else (a relay
that charges costs, say), an awaitable; its code between two yields is one
step. A :class:`StepLeg` takes delays only."""


async def run_steps(steps: Steps) -> None:
    """Run one leg written as :data:`Steps`: sleep its delays, await its awaitables."""
    sleep = sleeper()
    try:
        for step in steps:
            if isinstance(step, (int, float)):
                await sleep(step)
            else:
                await step
    finally:
        steps.close()  # cancelled: it stops where it waited, as a StepLeg does


#: A StepLeg's states: a step is queued (its first, or after a zero delay), it
#: waits out a delay (its timer pending), its delay is over (its step queued),
#: it is done.
_QUEUED, _SLEEPING, _WOKEN, _DONE = range(4)


class StepLeg:
    """One leg run by loop callbacks where a task would run it (asyncio only).

    Its steps are calls of its bound :meth:`_step`: a loop that counts task
    steps by the object a callback is bound to counts them as a task's.
    ``on_done(leg)`` is called one iteration after it ends, as a task's done
    callback would be; :meth:`done`, :meth:`cancelled`, :meth:`exception`
    and :meth:`cancel` answer as a task's do.
    """

    __slots__ = (
        "_cancelled",
        "_context",
        "_error",
        "_loop",
        "_must_cancel",
        "_on_done",
        "_state",
        "_steps",
        "_timer",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        steps: Steps,
        context: contextvars.Context,
        on_done: Callable[[StepLeg], object],
    ) -> None:
        self._loop = loop
        self._steps = steps
        self._context = context
        self._on_done = on_done
        self._state = _QUEUED
        self._timer: asyncio.Handle | None = None
        self._must_cancel = False
        self._cancelled = False
        self._error: BaseException | None = None
        loop.call_soon(self._step, context=context)

    def __repr__(self) -> str:
        return f"<StepLeg {('queued', 'sleeping', 'woken', 'done')[self._state]}>"

    def done(self) -> bool:
        """Whether it returned, failed or was cancelled."""
        return self._state == _DONE

    def cancelled(self) -> bool:
        """Whether it ended cancelled."""
        return self._cancelled

    def exception(self) -> BaseException | None:
        """What it raised (``None``: it returned or was cancelled)."""
        return self._error

    def woken(self) -> bool:
        """Its delay is over and its step queued (a task whose wait is done)."""
        return self._state == _WOKEN

    def cancel(self) -> None:
        """Cancel it as a task: it ends at its next step (queued now if it was sleeping)."""
        if self._state == _DONE:
            return
        self._must_cancel = True
        if self._state == _SLEEPING:
            self._state = _QUEUED
            self._loop.call_soon(self._step, context=self._context)

    def _step(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._must_cancel:
            self._steps.close()
            self._cancelled = True
            self._finish()
            return
        try:
            delay = next(self._steps)
        except StopIteration:
            self._finish()
            return
        except Exception as exc:
            self._error = exc
            self._finish()
            return
        if not isinstance(delay, (int, float)):
            self._steps.close()
            self._error = TypeError(f"a leg run without a task yielded {delay!r}, not a delay")
            self._finish()
            return
        loop = self._loop
        if delay <= 0:  # asyncio.sleep(0): the next iteration
            loop.call_soon(self._step, context=self._context)
            return
        self._state = _SLEEPING
        self._timer = loop.call_later(delay, _woken, self, context=self._context)

    def _finish(self) -> None:
        self._state = _DONE
        self._loop.call_soon(self._on_done, self, context=self._context)


def _woken(leg: StepLeg) -> None:
    """A sleeping leg's timer fired: its next step runs on the next iteration."""
    if leg._state != _SLEEPING:
        return
    leg._timer = None
    leg._state = _WOKEN
    leg._loop.call_soon(leg._step, context=leg._context)
