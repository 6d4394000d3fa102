"""The relay checks of trouble: a relay that goes down and comes back, cancelled calls.

Like the checks of :mod:`._relay_checks`, each takes a fresh
:class:`~standby.testing.RelayHarness` and fails with the check's name.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import anyio

from ...core._models import Heartbeat
from ...protocols._contracts import PublishResult, Query, QueryResult, RelayTransport
from ._base import fail, probe, unique
from ._relay_harness import RelayHarness, collect, describe, make_announcement, pick

__all__ = ["check_cancellation", "check_relay_down"]


async def check_relay_down(harness: RelayHarness) -> None:
    check = "relay_down"
    relay_down = probe(harness.relay_down, "relay_down/relay_up")
    relay_up = probe(harness.relay_up, "relay_down/relay_up")
    alice, bob, _carol = pick(harness, check)
    relays = frozenset(harness.relays)
    victim = sorted(relays)[0]
    workload = unique("down")
    timeout = harness.timeout
    subscription = bob.subscribe(Query(authors={alice.identity}, workload_ids={workload}))
    try:
        await relay_down(victim)
        try:
            now = harness.wall_clock()
            message = make_announcement(workload, alice, now)
            await _outage_reported(
                check, victim, relays, "publish", lambda: alice.publish(message, timeout=timeout)
            )
            query = Query(authors={alice.identity})
            await _outage_reported(
                check, victim, relays, "query", lambda: bob.query(query, timeout=timeout)
            )
            # Read the subscription during the outage: the relays that are up
            # keep delivering, and reading must not make it give up on the
            # one that is down. (With a single relay nothing is up to deliver.)
            if len(relays) > 1:
                during = await collect(
                    subscription,
                    until=lambda got: any(e.message == message for e in got),
                    within=harness.delivery_timeout,
                    check=check,
                )
                if not any(e.message == message for e in during):
                    raise fail(
                        check,
                        f"with only {victim} down, an open subscription got nothing from the "
                        f"other relays: {describe(during)}",
                    )
        finally:
            await relay_up(victim)
        # The relay is back: publishing reaches it again, and the open
        # subscription gets deliveries from it again (reconnected).
        later = make_announcement(workload, alice, harness.wall_clock() + 1, epoch=2)
        acked: frozenset[str] = frozenset()
        with anyio.move_on_after(harness.delivery_timeout):
            while acked != relays:
                acked = (await alice.publish(later, timeout=harness.timeout)).acked
                if acked != relays:
                    await anyio.sleep(0.05)
        if acked != relays:
            raise fail(check, f"{victim} is back up but publishing reached only {sorted(acked)}")
        received = await collect(
            subscription,
            until=lambda got: any(e.message == later and e.relay == victim for e in got),
            within=harness.delivery_timeout,
            check=check,
        )
        if not any(e.message == later and e.relay == victim for e in received):
            raise fail(
                check,
                f"after {victim} came back, a subscription opened before it went down (and "
                f"read during the outage) got nothing from it: {describe(received)}",
            )
    finally:
        await subscription.aclose()


#: Per operation: its result type, the field of the relays it reached, the verb for them.
_REACH = {
    "publish": ("PublishResult", "acked", "acknowledge"),
    "query": ("QueryResult", "answered", "answer"),
}


async def _outage_reported(
    check: str,
    victim: str,
    relays: frozenset[str],
    what: str,
    operation: Callable[[], Awaitable[PublishResult | QueryResult]],
) -> None:
    """With ``victim`` down, ``operation`` reports it in its errors and reaches the others."""
    kind, field, verb = _REACH[what]
    try:
        result = await operation()
    except Exception as exc:
        raise fail(
            check,
            f"with {victim} down, {what} must report it in {kind}.errors, not "
            f"raise {type(exc).__name__}: {exc}",
        ) from exc
    reached = getattr(result, field)
    if victim in reached or reached != relays - {victim}:
        raise fail(check, f"with {victim} down, the others (only) must {verb}: {result}")
    if victim not in result.errors:
        raise fail(check, f"a down relay must appear in {kind}.errors: {result}")


async def _settled(count: Callable[[], int], limit: int, within: float) -> int:
    value = count()
    with anyio.move_on_after(within):
        while value > limit:
            await anyio.sleep(0.01)
            value = count()
    return value


async def _operation(
    harness: RelayHarness, alice: RelayTransport, bob: RelayTransport, query: Query, what: str
) -> None:
    """One ``"query"`` (by bob) or ``"publish"`` (of a heartbeat of alice's)."""
    if what == "query":
        await bob.query(query, timeout=harness.timeout)
    else:
        heartbeat = Heartbeat(provider=alice.identity, timestamp=harness.wall_clock())
        await alice.publish(heartbeat, timeout=harness.timeout)


async def check_cancellation(harness: RelayHarness) -> None:
    check = "cancellation"
    alice, bob, _carol = pick(harness, check)
    query = Query(authors={alice.identity})
    # Warm up: connections and long-lived tasks exist before the baseline.
    await alice.publish(
        Heartbeat(provider=alice.identity, timestamp=harness.wall_clock()), timeout=harness.timeout
    )
    await bob.query(query, timeout=harness.timeout)
    await anyio.sleep(0.05)

    def tasks() -> int:
        return len(anyio.get_running_tasks())

    base_tasks = tasks()
    open_requests = harness.open_requests
    base_open = open_requests() if open_requests is not None else 0
    delays = (0.0, 0.0002, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016)
    for delay in delays:
        for what in ("query", "publish"):
            with anyio.move_on_after(delay):
                await _operation(harness, alice, bob, query, what)
            left = await _settled(tasks, base_tasks, harness.delivery_timeout)
            if left > base_tasks:
                raise fail(
                    check,
                    f"a {what} cancelled after {delay}s left {left - base_tasks} task(s) running",
                )
            if open_requests is not None:
                still = await _settled(open_requests, base_open, harness.delivery_timeout)
                if still > base_open:
                    raise fail(
                        check,
                        f"a {what} cancelled after {delay}s left {still - base_open} request(s) "
                        "open (open_requests)",
                    )
    for what in ("publish", "query"):
        latency = await _cancel_latency(harness, alice, bob, query, what)
        if latency > harness.cancel_latency:
            raise fail(
                check,
                f"a cancelled {what} must return promptly: it took {latency:.3f}s after the "
                f"cancellation (best of 3, cancelled halfway; allowed {harness.cancel_latency}s)",
            )
    result = await bob.query(query, timeout=harness.timeout)
    if result.answered != frozenset(harness.relays):
        raise fail(check, f"after cancelled operations, a query must still work: {result}")


async def _cancel_latency(
    harness: RelayHarness, alice: RelayTransport, bob: RelayTransport, query: Query, what: str
) -> float:
    """Seconds a cancelled ``what`` takes to return after its cancellation (best of 3).

    Each try is cancelled halfway through (half the quickest of three
    uncancelled runs), so the operation is in flight; a try that completes
    before its cancellation does not count.
    """

    full = math.inf
    for _attempt in range(3):
        started = anyio.current_time()
        await _operation(harness, alice, bob, query, what)
        full = min(full, anyio.current_time() - started)
    best: float | None = None
    for _attempt in range(3):
        delay = full / 2
        started = anyio.current_time()
        with anyio.move_on_after(delay) as scope:
            await _operation(harness, alice, bob, query, what)
        if not scope.cancelled_caught:
            continue
        latency = max(0.0, anyio.current_time() - started - delay)
        if latency <= harness.cancel_latency:
            return latency
        best = latency if best is None else min(best, latency)
    return 0.0 if best is None else best
