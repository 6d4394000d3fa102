"""What every conformance suite shares: the runner, its report, skips and failures.

A suite is a table of named checks; :func:`run_suite` enters a fresh harness
for each, records the ones that pass and the ones a missing probe skips, and
lets the first failure (an :class:`AssertionError` naming its check) through.

:func:`watched` wraps the adapter under test so that every call it makes is
timed against the event loop (a :class:`LoopWatch` ticks beside each check):
a call during which the loop could not run other tasks for longer than the
harness's ``max_blocking`` (a synchronous socket, ``time.sleep``, a
blocking subprocess call inside an ``async def``) fails the check that made
it, naming the call.
"""

from __future__ import annotations

import gc
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Final, TypeVar

import anyio
import attrs

__all__ = [
    "DEFAULT_MAX_BLOCKING",
    "ConformanceReport",
    "LoopWatch",
    "Skip",
    "fail",
    "probe",
    "run_suite",
    "unique",
    "watched",
]

#: How long (seconds) one call of an adapter may keep the event loop from
#: running anything else before a conformance check fails: generous enough
#: for a loaded two-core CI machine, far below a ``query_timeout``.
DEFAULT_MAX_BLOCKING: Final = 0.05

#: How often (seconds, on the loop's clock) the watcher task beside a call
#: wakes up. On a virtual clock it wakes as fast as the loop lets it.
_TICK: Final = 0.005

T = TypeVar("T")


@attrs.frozen
class ConformanceReport:
    """What a suite did: the checks that passed and the skipped ones, with why."""

    passed: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...] = ()


class Skip(Exception):
    """A check cannot run with this harness (a probe is missing)."""


def fail(check: str, text: str) -> AssertionError:
    """The failure of ``check``: its message starts with the check's name in brackets."""
    return AssertionError(f"[{check}] {text}")


def unique(what: str, *, suite: str = "conformance") -> str:
    """A fresh name (a workload id) no earlier check or run has used."""
    return f"{suite}-{what}-{uuid.uuid4().hex[:12]}"


async def run_suite(
    suite: str,
    checks: Sequence[tuple[str, Callable[[Any], Awaitable[None]]]],
    factory: Callable[[], AbstractAsyncContextManager[Any]],
    only: Collection[str] | None,
    guard: Callable[[Any, LoopWatch], Any] | None = None,
) -> ConformanceReport:
    """Run ``checks`` (or the ``only`` ones), each in a fresh harness from ``factory``.

    With ``guard``, each check runs beside a :class:`LoopWatch` (unless the
    harness's ``max_blocking`` is ``None``) and gets ``guard(harness,
    watch)``: the harness with the adapter under test :func:`watched`.
    """
    names = [name for name, _check in checks]
    if only is not None:
        unknown = set(only) - set(names)
        if unknown:
            raise ValueError(f"unknown {suite} checks {sorted(unknown)}; known: {names}")
    passed: list[str] = []
    skipped: list[tuple[str, str]] = []
    installed = _GC not in gc.callbacks
    if installed:
        gc.callbacks.append(_GC)
    try:
        for name, check in checks:
            if only is not None and name not in only:
                continue
            why = await _run_check(name, check, factory, guard)
            if why is None:
                passed.append(name)
            else:
                skipped.append((name, why))
    finally:
        if installed:
            gc.callbacks.remove(_GC)
    return ConformanceReport(tuple(passed), tuple(skipped))


async def _run_check(
    name: str,
    check: Callable[[Any], Awaitable[None]],
    factory: Callable[[], AbstractAsyncContextManager[Any]],
    guard: Callable[[Any, LoopWatch], Any] | None,
) -> str | None:
    """Run one check in a fresh harness; ``None`` when it passed, why when skipped."""
    async with factory() as harness:
        limit = getattr(harness, "max_blocking", None)
        error: Exception | None = None
        if guard is None or limit is None:
            try:
                await check(harness)
            except Exception as exc:
                error = exc
        else:
            watch = LoopWatch(name, limit)
            async with anyio.create_task_group() as group:
                group.start_soon(watch.tick)
                try:
                    await check(guard(harness, watch))
                except Exception as exc:  # raised below, outside the task group
                    error = exc
                finally:
                    group.cancel_scope.cancel()
    if isinstance(error, Skip):
        return str(error)
    if error is not None:
        raise error
    return None


def probe(value: T | None, what: str) -> T:
    """An optional probe of a harness; the check is skipped when it is missing.

    ``what`` completes the reason: "the harness offers no {what}".
    """
    if value is None:
        raise Skip(f"the harness offers no {what}")
    return value


class _GarbageCollections:
    """Seconds spent in the garbage collector since this object was installed."""

    def __init__(self) -> None:
        self.total = 0.0
        self._started: float | None = None

    def __call__(self, phase: str, _info: dict[str, int]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._started = now
        elif self._started is not None:
            self.total += now - self._started
            self._started = None


def _excused() -> float:
    """Seconds (a running total) no adapter is to blame for.

    The time this thread spent runnable but waiting for a CPU (a loaded
    machine; Linux only) and the time spent collecting garbage: both stall
    the loop whatever the adapter does, so they are taken off a stall.
    """
    waited = 0.0
    try:
        with open("/proc/thread-self/schedstat", "rb") as stats:
            waited = int(stats.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        pass
    return waited + _GC.total


_GC: Final = _GarbageCollections()


class LoopWatch:
    """Notices when the event loop stalls, and which watched call was running then.

    :meth:`tick` runs as a task beside a check: it sleeps ``_TICK`` seconds
    on the loop's clock (real or virtual) and measures the *real* time
    between its wake-ups (:func:`time.perf_counter`): a loop kept busy wakes
    it late, whatever the clock. A stall longer than ``limit`` seconds that
    overlaps a watched call fails ``check``, naming the call. Time spent
    waiting for a CPU or collecting garbage is taken off (:func:`_excused`).
    """

    def __init__(self, check: str, limit: float) -> None:
        self.check = check
        self.limit = limit
        self._last = time.perf_counter()
        self._queued = _excused()
        self._stalls: list[tuple[float, float]] = []
        """``(ended at, seconds)`` of each stall longer than ``limit``."""

    async def tick(self) -> None:
        """Wake up every ``_TICK`` seconds until cancelled, noting stalls."""
        self._last, self._queued = time.perf_counter(), _excused()
        while True:
            await anyio.sleep(_TICK)
            now, queued = time.perf_counter(), _excused()
            stall = now - self._last - _TICK - (queued - self._queued)
            if stall > self.limit:
                self._stalls.append((now, stall))
            self._last, self._queued = now, queued

    def _worst_since(self, started: float) -> float:
        now = time.perf_counter()
        open_stall = now - self._last - (_excused() - self._queued)
        return max([open_stall, *(s for end, s in self._stalls if end >= started)])

    def ended(self, call: str, started: float) -> None:
        """``call``, begun at ``started`` (``perf_counter``), just returned: judge it."""
        worst = self._worst_since(started)
        if worst > self.limit:
            # Blamed once: a later call (a cleanup) does not inherit this stall.
            self._last, self._queued = time.perf_counter(), _excused()
            self._stalls.clear()
            raise fail(
                self.check,
                f"{call} blocked the event loop for {worst * 1000:.0f} ms (allowed: "
                f"{self.limit * 1000:.0f} ms, the harness's max_blocking): no other task of "
                "the node runs meanwhile, so heartbeats and timers stall. Make the blocking "
                "part asynchronous (an async client) or run it in a worker thread "
                "(anyio.to_thread.run_sync).",
            )

    async def run(self, call: str, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable``, then judge the stalls it overlapped (see :meth:`ended`)."""
        started = time.perf_counter()
        try:
            result = await awaitable
        except Exception:
            self.ended(call, started)
            raise
        self.ended(call, started)
        return result


class _WatchedIterator:
    """An async iterator (a subscription) whose calls are watched."""

    def __init__(self, inner: Any, watch: LoopWatch, label: str) -> None:
        self._inner = inner
        self._watch = watch
        self._label = label

    def __aiter__(self) -> _WatchedIterator:
        return self

    async def __anext__(self) -> Any:
        return await self._watch.run(f"{self._label}.__anext__()", self._inner.__anext__())

    def __getattr__(self, name: str) -> Any:
        return _watched_attribute(self._inner, name, self._watch, self._label)


class _Watched:
    """``target`` with every method call watched (see :func:`watched`)."""

    def __init__(self, target: Any, watch: LoopWatch, label: str) -> None:
        self._target = target
        self._watch = watch
        self._label = label

    def __repr__(self) -> str:
        return f"watched({self._target!r})"

    def __getattr__(self, name: str) -> Any:
        return _watched_attribute(self._target, name, self._watch, self._label)


def _watched_attribute(target: Any, name: str, watch: LoopWatch, label: str) -> Any:
    value = getattr(target, name)
    if not callable(value) or inspect.isclass(value):
        return value
    call = f"{label}.{name}()"

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        result = value(*args, **kwargs)
        watch.ended(call, started)
        if inspect.isawaitable(result):
            return watch.run(call, result)
        if hasattr(result, "__anext__"):
            return _WatchedIterator(result, watch, call)
        return result

    return timed


def watched(target: Any, watch: LoopWatch, label: str) -> Any:
    """``target`` (a transport, a runtime) with every call checked against ``watch``.

    Each method call (and each call of a subscription or other async
    iterator a method returns) fails ``watch.check`` when the event loop
    stalled for longer than ``watch.limit`` while it ran. Attributes that
    are not methods pass through unchanged.
    """
    return _Watched(target, watch, label)
