"""The node's calls to its transport, bounded in time, and the tasks they run in.

On asyncio the node's tasks (its loops, and the short ones: a lease renewal,
the step-down read of each heartbeat, a promotion's steps) run as plain
asyncio tasks beside its anyio task group rather than in it: an anyio task
costs, besides the task, a task handle with a cancel scope and an event, a
wrapper coroutine that every step passes through and its bookkeeping in the
group, about four times the task itself. The group's rules hold for them
all the same (see :meth:`NodeIO.spawn`), and each runs exactly the steps,
in the same loop iterations, it would run in the group.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, TypeVar

import anyio
import anyio.abc
import sniffio

from ..aio import fail_after
from ..core._models import Message
from ..core._timing import Timing
from ..protocols._contracts import PublishResult, Query, QueryResult, RelayTransport
from ._observe import Observer

__all__ = ["NodeIO"]

_T = TypeVar("_T")

#: Whether asyncio has ``asyncio.timeout`` (Python 3.11 on).
_NATIVE_TIMEOUT = sys.version_info >= (3, 11)

#: How many times an announcement or a withdrawal is published before giving up.
_PUBLISH_ATTEMPTS = 4

Task = Callable[..., Coroutine[Any, Any, Any]]


class NodeIO:
    """Publishes and queries with timeouts, and starts the node's background tasks.

    A failed call is reported (counted, logged, an ``OperationFailed``
    event) and comes back as an empty result: the machines treat it like
    relays that did not answer.
    """

    def __init__(self, transport: RelayTransport, timing: Timing, observer: Observer) -> None:
        self.transport = transport
        self.timing = timing
        self.observer = observer
        self.group: anyio.abc.TaskGroup | None = None
        #: Set while the node reconciles on entry: tasks wait for the group.
        self.entering = False
        self._deferred: list[tuple[Task, tuple[Any, ...]]] = []
        #: On asyncio, the plain tasks spawned and not done yet, oldest first.
        self._plain: dict[asyncio.Task[Any], None] | None = None
        #: On asyncio, the event loop the tasks run on (looked up once a run:
        #: asking asyncio for the running loop costs a system call on 3.11).
        self._loop: asyncio.AbstractEventLoop | None = None
        #: What the plain tasks raised (the node raises it when it stops).
        self.failures: list[BaseException] = []
        self._stopping = False

    def spawn(self, func: Task, *args: Any) -> bool:
        """Run ``func(*args)`` as one of the node's tasks (once they run).

        Whether it will run: ``False`` once the node stopped. On asyncio it is
        a plain task that obeys the group's rules: it is cancelled when the
        node stops (:meth:`cancel_tasks`), the node waits for it before it
        stops (:meth:`wait_tasks`), and when it fails (or ends cancelled
        while the node runs) the group is cancelled and the node raises
        what it raised, as when one of the group's tasks fails.
        """
        group = self.group
        if group is None:
            if self.entering:  # reconciling on entry: run once the tasks start
                self._deferred.append((func, args))
                return True
            self.observer.count("effects_after_stop")
            return False
        self._start(group, func, args)
        return True

    def start(self, group: anyio.abc.TaskGroup, *loops: tuple[Task, str]) -> None:
        """The node's tasks run: its ``loops`` (each with its task's name), then what waited.

        The loops are the node's long-lived tasks; they run as the others do
        (see :meth:`spawn`), started before what was deferred while the node
        reconciled.
        """
        self.group = group
        on_asyncio = sniffio.current_async_library() == "asyncio"
        self._plain = {} if on_asyncio else None
        self._loop = asyncio.get_running_loop() if on_asyncio else None
        self._stopping = False
        self.failures = []
        for func, name in loops:
            self._start(group, func, (), name)
        deferred, self._deferred = self._deferred, []
        for func, args in deferred:
            self._start(group, func, args)

    def _start(
        self, group: anyio.abc.TaskGroup, func: Task, args: tuple[Any, ...], name: str | None = None
    ) -> None:
        plain = self._plain
        if plain is None:
            group.start_soon(func, *args, name=name)
            return
        # Made where the group would make it (in the caller's context, first
        # step on the next iteration); its end is noticed by a done callback
        # on the iteration after, as the group's is.
        loop = self._loop
        assert loop is not None  # set with _plain
        task = loop.create_task(func(*args), name=name)
        plain[task] = None
        task.add_done_callback(self._ended)
        if self._stopping:  # as in a cancelled group: cancelled at its first wait
            loop.call_soon(_cancel, task)

    def _ended(self, task: asyncio.Task[Any]) -> None:
        if self._plain is not None:
            self._plain.pop(task, None)
        if not task.cancelled():
            error = task.exception()
            if error is None:
                return
            self.failures.append(error)
        if self._stopping:
            return
        # As the group does when one of its tasks fails or ends cancelled: the
        # node's other tasks are cancelled, the host's too (the node then stops).
        if self.group is not None:
            self.group.cancel_scope.cancel()
        self.cancel_tasks()

    def cancel_tasks(self) -> None:
        """The node stops: cancel its plain tasks (its group's scope cancels the rest)."""
        if self._stopping:
            return
        self._stopping = True
        for task in list(self._plain or ()):
            task.cancel()

    async def wait_tasks(self) -> None:
        """Until every plain task is done (after :meth:`cancel_tasks`)."""
        while self._plain:
            await asyncio.wait(list(self._plain))

    def bounded(self, limit: float, call: Awaitable[_T]) -> Coroutine[Any, Any, _T]:
        """Await a transport call with a safety net of twice its own timeout ``limit``.

        The net fires only when an adapter overruns its own timeout, so it is
        paid for on every call and used almost never (see :meth:`within`).
        """
        return self.within(2 * limit, call)

    async def within(self, seconds: float, call: Awaitable[_T]) -> _T:
        """Await an adapter call; ``TimeoutError`` once it has taken ``seconds``.

        On asyncio (3.11 on) the bound is a :class:`_Net`: a timer that
        cancels the call's task, as asyncio's own ``timeout`` does, for less
        than half of what that costs (a quarter of an anyio cancel scope).
        Like ``asyncio.timeout``, and unlike an anyio cancel scope, it
        cancels the call even inside a shielded scope of the adapter's: a
        call bounded this way must not rely on a shield to finish (the
        transport's calls, the runtime's ``renew`` and ``status``). A hung
        shielded call then still ends at the bound, rather than stall the
        node's heartbeat. Elsewhere it is an anyio cancel scope.
        """
        if _NATIVE_TIMEOUT and sniffio.current_async_library() == "asyncio":
            # The loop of this run's tasks, if it is the running one (a call
            # made before the tasks start, or in another run, looks it up).
            task = None if self._loop is None else asyncio.current_task(self._loop)
            if task is None:
                task = asyncio.current_task()
            assert task is not None
            net = _Net(task, seconds)
            try:
                return await call
            except asyncio.CancelledError:
                if net.caught():
                    raise TimeoutError from None
                raise
            finally:
                net.close()
        with fail_after(seconds):
            return await call

    async def publish(
        self,
        message: Message,
        *,
        operation: str,
        workload_id: str | None,
        role: str,
        timeout: float | None = None,  # noqa: ASYNC109 - passed on to the transport
    ) -> PublishResult:
        """Publish with ``timeout`` (default ``query_timeout``); a failure is an empty result."""
        if timeout is None:
            timeout = self.timing.query_timeout
        try:
            result = await self.bounded(timeout, self.transport.publish(message, timeout=timeout))
        except Exception as exc:
            self.observer.failed(operation, exc, workload_id=workload_id, role=role)
            return PublishResult(frozenset(), {"*": str(exc) or type(exc).__name__})
        self._refused(result.errors)
        return result

    async def query(
        self,
        query: Query,
        *,
        operation: str,
        workload_id: str | None,
        timeout: float | None = None,  # noqa: ASYNC109 - passed on to the transport
    ) -> QueryResult:
        """Query with ``timeout`` (default ``query_timeout``); a failure is an empty result."""
        if timeout is None:
            timeout = self.timing.query_timeout
        try:
            result = await self.bounded(timeout, self.transport.query(query, timeout=timeout))
        except Exception as exc:
            self.observer.failed(operation, exc, workload_id=workload_id, role="standby")
            return QueryResult((), frozenset(), {"*": f"{type(exc).__name__}: {exc}"})
        self._refused(result.errors)
        return result

    def _refused(self, errors: Mapping[str, str]) -> None:
        """Count the relays that answered a call with an error (``relay_refusals``)."""
        if errors:
            self.observer.count("relay_refusals", len(errors))

    async def publish_until_quorum(
        self, message: Message, *, operation: str, workload_id: str | None, role: str
    ) -> PublishResult:
        """Publish, retrying with doubling waits until a write quorum acknowledged."""
        result = PublishResult(frozenset())
        acked: set[str] = set()
        wait = self.timing.retry_interval
        for attempt in range(_PUBLISH_ATTEMPTS):
            if attempt:
                await anyio.sleep(wait)
                wait *= 2
            result = await self.publish(
                message, operation=operation, workload_id=workload_id, role=role
            )
            acked |= result.acked
            if len(acked) >= self.timing.write_quorum:
                break
            self.observer.count(f"{operation}_retries")
        return PublishResult(frozenset(acked), result.errors)


class _Net:
    """The timer of :meth:`NodeIO.within` on asyncio: asyncio's ``timeout``, pared down.

    At ``delay`` from now it cancels ``task`` (which then gets
    ``CancelledError`` at its wait); :meth:`caught` tells whether a
    ``CancelledError`` that left the call was the net's (it takes back the
    net's cancellation, as ``asyncio.timeout`` does); :meth:`close` cancels
    the timer. A timer that fires after :meth:`close` (a loop that held it,
    as the simulator's does for a frozen process) does nothing.
    """

    __slots__ = ("_cancelling", "_closed", "_fired", "_handle", "_task")

    def __init__(self, task: asyncio.Task[Any], delay: float) -> None:
        self._task = task
        self._cancelling: int = task.cancelling()  # type: ignore[attr-defined,unused-ignore]
        self._fired = False
        self._closed = False
        self._handle = task.get_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        if self._closed:
            return
        self._fired = True
        self._task.cancel()

    def caught(self) -> bool:
        """Whether the net cancelled the task and nothing else did meanwhile."""
        if not self._fired:
            return False
        self._fired = False
        uncancelled: int = self._task.uncancel()  # type: ignore[attr-defined,unused-ignore]
        return uncancelled <= self._cancelling

    def close(self) -> None:
        if self._fired:  # it fired, but the call ended some other way: take it back
            self._fired = False
            self._task.uncancel()  # type: ignore[attr-defined,unused-ignore]
        self._closed = True
        self._handle.cancel()


def _cancel(task: asyncio.Task[Any]) -> None:
    # A function, not the task's bound method: a loop that counts the steps of
    # its tasks by what a callback is bound to does not count this one.
    task.cancel()
