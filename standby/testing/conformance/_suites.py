"""Conformance suites for adapter authors: ``check_relay_transport`` (and the shared runner).

An adapter author points a suite at a *factory*: a zero-argument callable
returning an async context manager that yields a *harness* (the adapter
under test plus a few probes the checks cannot do without). Each check
enters a fresh harness, so state never leaks from one check to the next.
A check that fails raises :class:`AssertionError` naming the check and
what was expected; a check whose optional probe the harness lacks is
reported as skipped in the returned :class:`ConformanceReport`.

Both suites are plain async functions: run them from any anyio test (on
asyncio and on trio). See ``docs/conformance.md``. The runner and the
report live in :mod:`._conformance_base`, the harness in
:mod:`._relay_harness`, the relay checks in :mod:`._relay_checks` and
:mod:`._relay_trouble`; the runtime suite, ``check_container_runtime``, in
:mod:`._conformance_runtime`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection

import anyio
import attrs

from ._base import ConformanceReport, LoopWatch, Skip, fail, run_suite, watched
from ._relay_checks import (
    check_forged,
    check_identity,
    check_newest,
    check_publish,
    check_query,
    check_signer,
    check_since,
    check_subscribe,
)
from ._relay_harness import DEFAULT_MALFORMED_IDENTITIES, RelayHarness, RelayHarnessFactory
from ._relay_trouble import check_cancellation, check_relay_down

__all__ = [
    "DEFAULT_MALFORMED_IDENTITIES",
    "RELAY_CHECKS",
    "ConformanceReport",
    "RelayHarness",
    "RelayHarnessFactory",
    "check_relay_transport",
]


def _named(
    name: str, check: Callable[[RelayHarness], Awaitable[None]]
) -> Callable[[RelayHarness], Awaitable[None]]:
    """``check``, with whatever the transport raises turned into a failure of ``name``.

    So a transport that raises where it must not (or ends a subscription
    early) fails a named check instead of crashing the suite.
    """

    async def run(harness: RelayHarness) -> None:
        try:
            await check(harness)
        except (Skip, anyio.get_cancelled_exc_class()):
            raise
        except AssertionError as exc:
            if str(exc).startswith(f"[{name}]"):
                raise
            raise fail(name, str(exc) or "an assertion failed") from exc
        except Exception as exc:  # StopAsyncIteration included
            raise fail(name, f"the transport raised {type(exc).__name__}: {exc}") from exc

    return run


_RELAY_CHECKS: tuple[tuple[str, Callable[[RelayHarness], Awaitable[None]]], ...] = tuple(
    (name, _named(name, check))
    for name, check in (
        ("identity", check_identity),
        ("publish", check_publish),
        ("query", check_query),
        ("signer", check_signer),
        ("forged", check_forged),
        ("subscribe", check_subscribe),
        ("newest", check_newest),
        ("since", check_since),
        ("cancellation", check_cancellation),
        ("relay_down", check_relay_down),
    )
)


def _guard(harness: RelayHarness, watch: LoopWatch) -> RelayHarness:
    """``harness`` with each transport watched for calls that block the event loop."""
    transports = [watched(t, watch, f"transports[{i}]") for i, t in enumerate(harness.transports)]
    return attrs.evolve(harness, transports=transports)


#: Names of the checks of :func:`check_relay_transport`, in the order they run.
RELAY_CHECKS: tuple[str, ...] = tuple(name for name, _check in _RELAY_CHECKS)


async def check_relay_transport(
    factory: RelayHarnessFactory, *, only: Collection[str] | None = None
) -> ConformanceReport:
    """Check a :class:`~standby.protocols.RelayTransport` against its contract.

    ``factory()`` must return an async context manager yielding a fresh
    :class:`RelayHarness`; every check enters its own. The checks:

    ``identity``
        identities are canonical, ``canonical`` is idempotent, maps every
        alias to the same identity and refuses malformed ones with
        ``IdentityError``.
    ``publish``
        every relay acknowledges when all are up; publishing twice is
        harmless; a non-message raises ``TransportError``.
    ``query``
        every relay answers; the messages come back unchanged with their
        signer, one per addressable key; filters by author and workload
        hold; an empty answer still counts as answered.
    ``signer``
        a body naming someone else is attributed to whoever signed it.
    ``forged``
        a message forged in someone's name (``harness.forge``) is never
        delivered or returned as theirs.
    ``subscribe``
        heartbeats, revocations (addressed to the subscriber), claims and
        announcements are delivered; a cancelled ``__anext__`` breaks
        nothing; ``aclose`` is idempotent and ends the iteration.
    ``newest``
        the newest version per addressable key wins, also when an older one
        is published later; a withdrawal beats its claim (same timestamp).
    ``since``
        a query with ``since`` leaves out older messages; a subscription
        with ``since`` first delivers the stored messages at least that new,
        and nothing older.
    ``cancellation``
        a publish or query cancelled at any moment leaves no task and no
        open request behind, returns within ``harness.cancel_latency``, and
        the transport keeps working.
    ``relay_down``
        (needs ``relay_down``/``relay_up``) a down relay is reported, not
        raised; a subscription read during the outage keeps delivering from
        the other relays, and once the relay is back, publishes and that
        subscription reach it again.

    Every check also fails when one call of a transport (``publish``,
    ``query``, ``subscribe``, ``canonical``, a subscription's ``__anext__``
    or ``aclose``...) keeps the event loop from running other tasks for
    more than ``harness.max_blocking`` seconds of real time (50 ms by
    default): a synchronous call inside an adapter stalls the whole node.

    ``only`` restricts the run to some checks. Raises
    :class:`AssertionError`, whose message starts with the check's name in
    brackets, at the first failure (also when the transport raised or a
    subscription ended where it must not); returns a
    :class:`ConformanceReport` otherwise.
    """
    return await run_suite("relay transport", _RELAY_CHECKS, factory, only, _guard)
