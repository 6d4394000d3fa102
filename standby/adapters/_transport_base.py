"""What every network transport shares (etcd, Redis, Nostr): checks and lifecycle.

Private to the adapters. :class:`TransportBase` runs a transport as an
async context manager around one task group (its background tasks: watches,
relay connections), ends the live subscriptions when it stops and keeps
the counters. The functions check constructor arguments and map the
helpful ``ImportError`` of a missing extra.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import sys
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from types import MappingProxyType, TracebackType
from typing import Any, ClassVar, Final, Protocol, TypeVar

import anyio
import anyio.abc
import attrs

from ..core._errors import IdentityError, TransportError, raise_unwrapped
from ..core._errors import missing_extra as _missing_extra

if sys.version_info < (3, 11):  # pragma: no cover - the backport anyio depends on
    from exceptiongroup import BaseExceptionGroup
from ..protocols._contracts import Query

__all__ = [
    "DEFAULT_RETENTION",
    "MIN_RETENTION",
    "TransportBase",
    "canonical_query",
    "check_backoff",
    "check_host_port",
    "check_retention",
    "check_urls",
    "close_shielded",
    "keep_recent",
    "missing_extra",
    "url_list",
]

_Self = TypeVar("_Self", bound="TransportBase")
_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


def missing_extra(module: str, extra: str, exc: ImportError) -> ImportError:
    """The error raised when ``standby.adapters.<module>`` lacks its extra's packages."""
    return _missing_extra(f"standby.adapters.{module}", extra, exc)


def check_backoff(name: str, backoff: Sequence[float]) -> tuple[float, float]:
    """``(first, longest)`` of a backoff option; ``ValueError`` unless ``0 < first <= longest``."""
    first, longest = backoff
    if not 0 < first <= longest:
        raise ValueError(
            f"{name} must be (first, longest) with 0 < first <= longest, got {backoff!r}"
        )
    return first, longest


def url_list(urls: Any, what: str) -> list[Any]:
    """``urls`` as a list; ``TypeError`` for a single string (which would iterate as characters)."""
    if isinstance(urls, (str, bytes)):
        raise TypeError(
            f"{what} must be a list of URLs, got the single string {urls!r}: pass [{urls!r}]"
        )
    try:
        return list(urls)
    except TypeError:
        raise TypeError(f"{what} must be a list of URLs, got {urls!r}") from None


def check_urls(
    urls: Sequence[Any], schemes: tuple[str, ...], *, what: str, empty: str, unique: bool = False
) -> None:
    """Refuse a single string (``TypeError``), an empty list (``empty`` says so), a repeated
    URL (when ``unique``) or a URL of another scheme."""
    url_list(urls, what)
    if not urls:
        raise ValueError(empty)
    if unique and len(set(urls)) != len(urls):
        raise ValueError(f"{what} must be unique, got {list(urls)!r}")
    for url in urls:
        if not (isinstance(url, str) and url.startswith(schemes)):
            raise ValueError(f"{what} must start with {' or '.join(schemes)}, got {url!r}")


#: How long a key-value transport keeps what it writes, by default: 400 days,
#: longer than any reservation a provider is expected to sell.
DEFAULT_RETENTION: Final = 400 * 86_400.0
#: The shortest retention accepted (a guard against passing minutes for seconds).
MIN_RETENTION: Final = 3_600.0


def check_retention(retention: Any) -> float | None:
    """``retention`` in seconds (``None``: keep for ever); ``ValueError`` below an hour."""
    if retention is None:
        return None
    if isinstance(retention, bool) or not isinstance(retention, (int, float)):
        raise TypeError(f"retention must be a number of seconds or None, got {retention!r}")
    if not (math.isfinite(retention) and retention >= MIN_RETENTION):
        raise ValueError(
            f"retention must be a finite number of seconds >= {MIN_RETENTION:g} (and longer than "
            f"any reservation the provider sells), or None to keep keys for ever; got {retention!r}"
        )
    return float(retention)


def check_host_port(host: Any, port: Any, *, what: str) -> None:
    """Refuse a host that is not a bare host name or address, or a port outside 1..65535.

    ``ValueError`` (``TypeError`` for a port that is not an ``int``) saying
    what was given and what to pass instead.
    """
    if not isinstance(host, str) or not host or host != host.strip():
        raise ValueError(f"{what} needs a host name or address, got {host!r}")
    if "://" in host:
        raise ValueError(
            f"{what} takes a host name and a port, not a URL: got host={host!r} "
            "(pass host='name', port=6379)"
        )
    if "/" in host or any(c.isspace() for c in host):
        raise ValueError(f"{what} needs a bare host name or address, got {host!r}")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host.strip("[]"))
        except ValueError:
            raise ValueError(
                f"{what} takes the port separately: got host={host!r} (pass host='name', port=6379)"
            ) from None
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"{what} needs an integer port, got {port!r}")
    if not 1 <= port <= 65535:
        raise ValueError(f"{what} needs a port from 1 to 65535, got {port}")


def canonical_query(query: Query, canonical: Callable[[str], str]) -> Query:
    """``query`` with its authors in canonical form; ``TransportError`` for a malformed one."""
    if query.authors is None:
        return query
    try:
        authors = frozenset(canonical(a) for a in query.authors)
    except IdentityError as exc:
        raise TransportError(f"query names a malformed author: {exc}") from exc
    return attrs.evolve(query, authors=authors)


def keep_recent(cache: OrderedDict[_K, _V], key: _K, value: _V, kept: int) -> None:
    """Put ``key`` in ``cache`` as the most recent; forget the oldest beyond ``kept``."""
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > kept:
        cache.popitem(last=False)


class _Closeable(Protocol):
    async def aclose(self) -> None: ...


async def close_shielded(client: _Closeable | None) -> None:
    """Close ``client`` (when there is one), even while being cancelled."""
    if client is not None:
        with anyio.CancelScope(shield=True):
            await client.aclose()


class _Live(Protocol):
    def _end(self) -> None: ...


class TransportBase:
    """Lifecycle and counters of a transport with background tasks.

    A subclass opens what it needs in :meth:`_open_resources` (registering
    their clean-up on the stack) and starts its own tasks in
    :meth:`_started`; :meth:`_warm_up` runs in the background from entry
    on, to connect before the first request; leaving the context cancels the tasks and ends every
    live subscription (they raise ``TransportError`` to their consumer).
    """

    #: The backend's name in errors ("the etcd transport is not running").
    _backend: ClassVar[str] = "the"

    def __init__(self) -> None:
        self._counters: dict[str, int] = {}
        self._subscriptions: set[Any] = set()
        self._group: anyio.abc.TaskGroup | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._warmed: anyio.Event | None = None

    async def __aenter__(self: _Self) -> _Self:
        if self._stack is not None:
            raise TransportError(f"this {type(self).__name__} is already running")
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            await self._open_resources(stack)
            group = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(self._stopped)
            stack.callback(group.cancel_scope.cancel)
            self._group = group
            self._started(group)
            self._warmed = anyio.Event()
            group.start_soon(self._warming, self._warmed, name=f"{type(self).__name__}-warm-up")
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            try:
                await stack.__aexit__(exc_type, exc, tb)
            except BaseExceptionGroup as group:
                raise_unwrapped(group, exc)

    async def _open_resources(self, stack: contextlib.AsyncExitStack) -> None:
        """Open the clients the transport needs (before its task group starts)."""

    def _started(self, group: anyio.abc.TaskGroup) -> None:
        """Start the transport's own background tasks in ``group``."""

    async def _warm_up(self) -> None:
        """Started on entry, in the background: open the connections before they are needed.

        So the first real request pays no handshake or login (see
        ``WaitsConnected``). Must not raise.
        """

    async def _warming(self, done: anyio.Event) -> None:
        try:
            await self._warm_up()
        finally:
            done.set()

    async def _warm_up_done(self) -> None:
        """Wait until the warm-up started on entry has finished (at once when not running)."""
        warmed = self._warmed
        if warmed is not None:
            await warmed.wait()

    def _stopped(self) -> None:
        self._group = None
        live: list[_Live] = list(self._subscriptions)
        for subscription in live:
            subscription._end()
        self._subscriptions.clear()

    def _not_running(self) -> TransportError:
        return TransportError(
            f"the {self._backend} transport is not running: "
            f"use it as `async with {type(self).__name__}(...)`"
        )

    def _check_running(self) -> None:
        if self._group is None:
            raise self._not_running()

    @property
    def counters(self) -> Mapping[str, int]:
        """Counts of what happened, by name (read-only view; the class lists the names)."""
        return MappingProxyType(self._counters)

    def _count(self, name: str, amount: int = 1) -> None:
        self._counters[name] = self._counters.get(name, 0) + amount
