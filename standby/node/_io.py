"""The node's calls to its transport, bounded in time, and the tasks they run in."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, TypeVar

import anyio
import anyio.abc
import sniffio

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

    def spawn(self, func: Task, *args: Any) -> bool:
        """Run ``func(*args)`` in the node's task group (once it runs).

        Whether it will run: ``False`` once the node stopped.
        """
        group = self.group
        if group is None:
            if self.entering:  # reconciling on entry: run once the tasks start
                self._deferred.append((func, args))
                return True
            self.observer.count("effects_after_stop")
            return False
        group.start_soon(func, *args)
        return True

    def start(self, group: anyio.abc.TaskGroup) -> None:
        """The node's tasks run: start what was deferred while it reconciled."""
        self.group = group
        deferred, self._deferred = self._deferred, []
        for func, args in deferred:
            group.start_soon(func, *args)

    async def bounded(self, limit: float, call: Awaitable[_T]) -> _T:
        """Await an adapter call with a safety net of twice its own timeout.

        The net is ``TimeoutError`` after ``2 * limit``: it fires only when an
        adapter overruns its own timeout, so it is paid for on every call and
        used almost never. On asyncio (3.11 on) it is asyncio's own
        ``timeout``, about half the cost of an anyio cancel scope; both
        cancel the call's task from their timer.
        """
        if _NATIVE_TIMEOUT and sniffio.current_async_library() == "asyncio":
            async with asyncio.timeout(2 * limit):  # type: ignore[attr-defined,unused-ignore]
                return await call
        with anyio.fail_after(2 * limit):
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
