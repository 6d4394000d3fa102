"""The conformance suite for container runtimes: ``check_container_runtime``.

The checks drive a runtime through its protocol only and read back, through
the harness's probes, what the workload itself received. Leases in these
checks are short (``RuntimeHarness.lease``, 1 s by default) and waits go
through ``RuntimeHarness.sleep`` and ``RuntimeHarness.wall_clock``, so a
real runtime runs them on real time in a few seconds and a simulated one on
virtual time in no time at all.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeAlias

import anyio
import attrs

from ...core._errors import SpawnError
from ...core._models import fencing_token
from ...protocols._contracts import ContainerRuntime
from ._base import (
    DEFAULT_MAX_BLOCKING,
    ConformanceReport,
    LoopWatch,
    fail,
    probe,
    run_suite,
    unique,
    watched,
)

__all__ = [
    "RUNTIME_CHECKS",
    "RuntimeHarness",
    "RuntimeHarnessFactory",
    "check_container_runtime",
]


@attrs.frozen(kw_only=True)
class RuntimeHarness:
    """What :func:`check_container_runtime` needs from one harness.

    ``runtime``
        The runtime under test.
    ``spec``
        A container spec that starts and keeps running until stopped.
    ``failing_spec()``
        Returns a spec whose next spawn must fail (it may arrange the failure
        first); the runtime must raise :class:`~standby.SpawnError`.
    ``token_of(handle)``
        The fencing token the running workload *received* (read back from
        the container: its environment, a file, a label), not the one the
        check passed.

    Optional probes (a check that needs a missing one is skipped):

    ``restore_of(handle)``
        The ``restore_from`` the workload received.
    ``workload_id_of(handle)`` / ``lease_end_of(handle)``
        The workload id and the *current* lease end as the workload sees
        them (its environment, its lease file).
    ``running_count()``
        Containers this runtime runs now, counted from the outside (to check
        that a failed or cancelled spawn leaves none behind).
    ``slow_spec()``
        A spec whose spawn takes long enough to be cancelled midway (at
        least ``0.2`` s); called right before that spawn.
    ``bad_specs``
        Pairs ``(spec, problem)``: each spec must be refused with a
        :class:`~standby.SpawnError` whose message contains ``problem``
        (case-insensitive), e.g. ``({"argv": []}, "argv")``.
    ``reopen()``
        A fresh runtime object on the same state, as a restarted node would
        build it (same state directory, same provider).
    ``abandon()``
        Drop the owner of ``runtime`` without a clean shutdown (kill the
        process that holds it, or forget the object): no ``stop``, no
        ``renew`` comes after it. The check then uses ``reopen()``.
    ``step_clock(seconds)``
        Step the wall clock that the runtime's lease enforcement reads by
        ``seconds`` (negative: back), the monotonic clock untouched: a
        test hook of the runtime, or its simulated clock.

    Time: ``wall_clock`` gives Unix seconds (what ``lease_end`` is measured
    in), ``sleep`` waits (``anyio.sleep`` for real runtimes; a simulated one
    may advance its own clock instead). ``lease`` is the length of the
    leases the checks hand out, ``tolerance`` the slack a real clock needs
    when a check looks right at ``lease_end + stop_grace``. ``timeout``
    bounds every runtime call. ``max_blocking`` is how long one runtime call
    may keep the event loop from running anything else, in real seconds
    (``None``: not checked).
    """

    runtime: ContainerRuntime
    spec: Any
    failing_spec: Callable[[], Any]
    token_of: Callable[[Any], Awaitable[int | None]]
    restore_of: Callable[[Any], Awaitable[str | None]] | None = None
    workload_id_of: Callable[[Any], Awaitable[str | None]] | None = None
    lease_end_of: Callable[[Any], Awaitable[float | None]] | None = None
    running_count: Callable[[], Awaitable[int]] | None = None
    slow_spec: Callable[[], Any] | None = None
    bad_specs: Sequence[tuple[Any, str]] = ()
    reopen: Callable[[], Awaitable[ContainerRuntime]] | None = None
    abandon: Callable[[], Awaitable[None]] | None = None
    step_clock: Callable[[float], Awaitable[None]] | None = None
    wall_clock: Callable[[], float] = time.time
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep
    lease: float = 1.0
    tolerance: float = 0.25
    timeout: float = 30.0
    max_blocking: float | None = DEFAULT_MAX_BLOCKING


RuntimeHarnessFactory: TypeAlias = Callable[[], AbstractAsyncContextManager[RuntimeHarness]]
"""Zero-argument callable returning an async context manager yielding a :class:`RuntimeHarness`."""

#: A lease end far enough away that no check ever reaches it.
_FAR = 3600.0
#: How far ``clock_step`` steps the wall clock back: ten minutes.
_STEP_BACK = 600.0


async def _bounded(harness: RuntimeHarness, call: Awaitable[Any]) -> Any:
    with anyio.fail_after(harness.timeout):
        return await call


async def _spawn(
    harness: RuntimeHarness,
    runtime: ContainerRuntime,
    *,
    workload: str,
    token: int,
    lease_end: float,
    spec: Any = None,
    restore_from: str | None = None,
) -> Any:
    return await _bounded(
        harness,
        runtime.spawn(
            harness.spec if spec is None else spec,
            workload_id=workload,
            fencing_token=token,
            lease_end=lease_end,
            restore_from=restore_from,
        ),
    )


async def _sleep_until(harness: RuntimeHarness, instant: float) -> None:
    """Sleep until ``wall_clock() >= instant``."""
    while (left := instant - harness.wall_clock()) > 0:
        await harness.sleep(left)


async def _stop_quietly(harness: RuntimeHarness, runtime: ContainerRuntime, handle: Any) -> None:
    with anyio.CancelScope(shield=True):
        await _bounded(harness, runtime.stop(handle))


@contextlib.asynccontextmanager
async def _running(
    harness: RuntimeHarness, runtime: ContainerRuntime, **spawn: Any
) -> AsyncIterator[Any]:
    """A container spawned with ``spawn`` (see :func:`_spawn`), stopped on the way out."""
    handle = await _spawn(harness, runtime, **spawn)
    try:
        yield handle
    finally:
        await _stop_quietly(harness, runtime, handle)


@contextlib.asynccontextmanager
async def _none_left(harness: RuntimeHarness, check: str, failure: str) -> AsyncIterator[None]:
    """The block must leave as many containers running as it found (with ``running_count``).

    ``failure`` says what went wrong when it does not.
    """
    count = harness.running_count
    before = None if count is None else await count()
    yield
    if count is not None:
        after = await count()
        if after != before:
            raise fail(check, f"{failure}: {before} -> {after}")


async def _check_lifecycle(harness: RuntimeHarness) -> None:
    check = "lifecycle"
    runtime = harness.runtime
    token = fencing_token(5, 2)
    async with _running(
        harness,
        runtime,
        workload=unique("run"),
        token=token,
        lease_end=harness.wall_clock() + _FAR,
    ) as handle:
        status = await _bounded(harness, runtime.status(handle))
        if status != "running":
            raise fail(check, f"status right after spawn must be 'running', got {status!r}")
        received = await _bounded(harness, harness.token_of(handle))
        if received != token:
            raise fail(
                check,
                f"the workload must receive the fencing token {token}, it received {received!r}",
            )
    status = await _bounded(harness, runtime.status(handle))
    if status not in ("stopped", "absent"):
        raise fail(check, f"status after stop must be 'stopped' or 'absent', got {status!r}")


async def _check_restore(harness: RuntimeHarness) -> None:
    check = "restore"
    restore_of = probe(harness.restore_of, "restore_of probe")
    runtime = harness.runtime
    uri = "s3://conformance/state-1"
    async with _running(
        harness,
        runtime,
        workload=unique("restore"),
        token=1,
        lease_end=harness.wall_clock() + _FAR,
        restore_from=uri,
    ) as handle:
        received = await _bounded(harness, restore_of(handle))
        if received != uri:
            raise fail(check, f"the workload must receive restore_from={uri!r}, got {received!r}")


async def _check_bound_visible(harness: RuntimeHarness) -> None:
    check = "bound_visible"
    workload_id_of = probe(harness.workload_id_of, "workload_id_of or lease_end_of probe")
    lease_end_of = probe(harness.lease_end_of, "workload_id_of or lease_end_of probe")
    runtime = harness.runtime
    workload = unique("bound")
    lease_end = round(harness.wall_clock() + _FAR, 3)
    async with _running(
        harness, runtime, workload=workload, token=3, lease_end=lease_end
    ) as handle:
        seen_id = await _bounded(harness, workload_id_of(handle))
        if seen_id != workload:
            raise fail(check, f"the workload must receive its id {workload!r}, got {seen_id!r}")
        seen_end = await _bounded(harness, lease_end_of(handle))
        if seen_end is None or abs(seen_end - lease_end) > 1e-3:
            raise fail(
                check, f"the workload must see its lease end {lease_end}, it sees {seen_end!r}"
            )
        renewed = lease_end + 60.0
        await _bounded(harness, runtime.renew(handle, renewed))
        seen_end = await _bounded(harness, lease_end_of(handle))
        if seen_end is None or abs(seen_end - renewed) > 1e-3:
            raise fail(
                check,
                f"after renew({renewed}) the workload must see the new lease end, "
                f"it sees {seen_end!r}",
            )


async def _check_not_idempotent(harness: RuntimeHarness) -> None:
    check = "two_spawns"
    runtime = harness.runtime
    workload = unique("twice")
    lease_end = harness.wall_clock() + _FAR
    async with _running(harness, runtime, workload=workload, token=1, lease_end=lease_end) as first:
        async with _running(
            harness, runtime, workload=workload, token=2, lease_end=lease_end
        ) as second:
            if first == second:
                raise fail(check, "every spawn starts a container: two spawns gave one handle")
            states = [await _bounded(harness, runtime.status(h)) for h in (first, second)]
            if states != ["running", "running"]:
                raise fail(check, f"both containers must run, got {states!r}")
            tokens = [await _bounded(harness, harness.token_of(h)) for h in (first, second)]
            if tokens != [1, 2]:
                raise fail(check, f"each container keeps its own token, got {tokens!r}")
        if await _bounded(harness, runtime.status(first)) != "running":
            raise fail(check, "stopping one container stopped the other")


async def _expect_spawn_error(
    harness: RuntimeHarness, check: str, spec: Any, lease_end: float, problem: str | None
) -> None:
    runtime = harness.runtime
    workload = unique("fail")
    try:
        handle = await _spawn(
            harness, runtime, workload=workload, token=1, lease_end=lease_end, spec=spec
        )
    except SpawnError as exc:
        if exc.workload_id not in (None, workload):
            raise fail(
                check, f"SpawnError.workload_id is {exc.workload_id!r}, expected {workload!r}"
            ) from exc
        if problem is not None and problem.lower() not in str(exc).lower():
            raise fail(
                check, f"the SpawnError must name the problem ({problem!r}); it says: {exc}"
            ) from exc
    except Exception as exc:
        raise fail(
            check, f"a failed spawn must raise standby.SpawnError, got {type(exc).__name__}: {exc}"
        ) from exc
    else:
        await _stop_quietly(harness, runtime, handle)
        raise fail(check, f"spec {spec!r} started a container instead of raising SpawnError")


async def _check_spawn_failure(harness: RuntimeHarness) -> None:
    check = "spawn_failure"
    async with _none_left(harness, check, "a failed spawn left containers running"):
        spec = harness.failing_spec()
        await _expect_spawn_error(harness, check, spec, harness.wall_clock() + _FAR, None)


async def _check_bad_spec(harness: RuntimeHarness) -> None:
    check = "bad_spec"
    async with _none_left(harness, check, "refused spawns left containers running"):
        for spec, problem in harness.bad_specs:
            await _expect_spawn_error(harness, check, spec, harness.wall_clock() + _FAR, problem)
        # A lease end already past is refused whatever the spec.
        await _expect_spawn_error(harness, check, harness.spec, harness.wall_clock() - 1.0, "lease")


async def _check_cancelled_spawn(harness: RuntimeHarness) -> None:
    check = "cancelled_spawn"
    slow_spec = probe(harness.slow_spec, "slow_spec or running_count probe")
    probe(harness.running_count, "slow_spec or running_count probe")
    runtime = harness.runtime
    async with _none_left(harness, check, "a spawn cancelled midway left a container running"):
        spec = slow_spec()
        lease_end = harness.wall_clock() + _FAR
        with anyio.move_on_after(0.05) as scope:
            handle = await runtime.spawn(
                spec, workload_id=unique("cancel"), fencing_token=1, lease_end=lease_end
            )
        if not scope.cancelled_caught:
            await _stop_quietly(harness, runtime, handle)
            raise fail(check, "slow_spec() must give a spawn slower than 0.05s")


async def _check_stop_idempotent(harness: RuntimeHarness) -> None:
    check = "stop_idempotent"
    runtime = harness.runtime
    handle = await _spawn(
        harness, runtime, workload=unique("stop"), token=1, lease_end=harness.wall_clock() + _FAR
    )
    await _bounded(harness, runtime.stop(handle))
    for attempt in ("second", "third"):
        try:
            await _bounded(harness, runtime.stop(handle))
        except Exception as exc:
            raise fail(
                check, f"stop must be idempotent; the {attempt} stop raised {exc!r}"
            ) from exc
        status = await _bounded(harness, runtime.status(handle))
        if status == "running":
            raise fail(check, f"a stopped container runs again after a {attempt} stop")
    try:
        await _bounded(harness, runtime.renew(handle, harness.wall_clock() + _FAR))
    except Exception as exc:
        raise fail(check, f"renewing a stopped container must do nothing, raised {exc!r}") from exc
    if await _bounded(harness, runtime.status(handle)) == "running":
        raise fail(check, "renewing a stopped container started it again")
    if harness.reopen is not None:
        fresh = await harness.reopen()
        try:
            await _bounded(harness, fresh.stop(handle))
        except Exception as exc:
            raise fail(
                check, f"a fresh runtime must stop an already stopped handle, raised {exc!r}"
            ) from exc


async def _expect_stopped_by(
    harness: RuntimeHarness, check: str, runtime: ContainerRuntime, handle: Any, lease_end: float
) -> None:
    bound = lease_end + runtime.stop_grace
    await _sleep_until(harness, bound + harness.tolerance)
    status = await _bounded(harness, runtime.status(handle))
    if status == "running":
        raise fail(
            check,
            f"the workload still runs after lease_end + stop_grace ({lease_end:.3f} + "
            f"{runtime.stop_grace}); the runtime must stop it by itself",
        )
    if harness.running_count is not None and (count := await harness.running_count()) != 0:
        raise fail(check, f"{count} container(s) still run after lease_end + stop_grace")


async def _check_lease_end(harness: RuntimeHarness) -> None:
    check = "lease_end"
    runtime = harness.runtime
    lease_end = harness.wall_clock() + harness.lease
    async with _running(
        harness, runtime, workload=unique("lease"), token=1, lease_end=lease_end
    ) as handle:
        status = await _bounded(harness, runtime.status(handle))
        if status != "running":
            raise fail(check, f"status right after spawn must be 'running', got {status!r}")
        await _expect_stopped_by(harness, check, runtime, handle, lease_end)


async def _check_renew(harness: RuntimeHarness) -> None:
    check = "renew"
    runtime = harness.runtime
    first_end = harness.wall_clock() + harness.lease
    async with _running(
        harness, runtime, workload=unique("renew"), token=1, lease_end=first_end
    ) as handle:
        # Late enough to tell apart from the first bound, with room for a
        # status call in between.
        checked_at = first_end + runtime.stop_grace + harness.tolerance
        later_end = checked_at + max(harness.lease / 2, 0.5)
        await _bounded(harness, runtime.renew(handle, later_end))
        # An earlier lease end never shrinks the bound.
        await _bounded(harness, runtime.renew(handle, first_end - harness.lease / 2))
        await _sleep_until(harness, checked_at)
        status = await _bounded(harness, runtime.status(handle))
        if status != "running":
            raise fail(
                check,
                f"renew({later_end:.3f}) must extend the lease, but the workload is {status!r} "
                f"after its first lease end {first_end:.3f}",
            )
        await _expect_stopped_by(harness, check, runtime, handle, later_end)


async def _check_list(harness: RuntimeHarness) -> None:
    check = "list"
    reopen = probe(harness.reopen, "reopen() for a fresh runtime object")
    runtime = harness.runtime
    lease_end = harness.wall_clock() + _FAR
    workloads = {unique("listed-a"): 11, unique("listed-b"): 12}
    handles = [
        await _spawn(harness, runtime, workload=w, token=t, lease_end=lease_end)
        for w, t in workloads.items()
    ]
    try:
        fresh = await reopen()
        listed = await _bounded(harness, fresh.list())
        found = {w.workload_id: w for w in listed if w.workload_id in workloads}
        if {w: found[w].fencing_token for w in found} != workloads:
            raise fail(
                check,
                f"a fresh runtime must list what runs: expected {workloads}, listed {list(listed)}",
            )
        for item in found.values():
            if abs(item.lease_end - lease_end) > 1e-3:
                raise fail(check, f"listed lease end {item.lease_end} != {lease_end} ({item})")
        victim = found[next(iter(workloads))]
        if await _bounded(harness, fresh.status(victim.handle)) != "running":
            raise fail(check, "the handle list() gives must work with status()")
        await _bounded(harness, fresh.stop(victim.handle))
        if await _bounded(harness, runtime.status(handles[0])) == "running":
            raise fail(check, "stopping through a fresh runtime's handle left it running")
        remaining = {w.workload_id for w in await _bounded(harness, fresh.list())}
        if victim.workload_id in remaining or next(reversed(workloads)) not in remaining:
            raise fail(check, f"after one stop list() must hold the other only: {remaining}")
    finally:
        for handle in handles:
            await _stop_quietly(harness, runtime, handle)


async def _check_abandoned(harness: RuntimeHarness) -> None:
    check = "abandoned"
    reopen = probe(harness.reopen, "abandon() and reopen()")
    abandon = probe(harness.abandon, "abandon() and reopen()")
    runtime = harness.runtime
    workload = unique("orphan")
    lease_end = harness.wall_clock() + harness.lease
    handle = await _spawn(harness, runtime, workload=workload, token=4, lease_end=lease_end)
    stopped = False
    try:
        await abandon()
        fresh = await reopen()
        listed = [w for w in await _bounded(harness, fresh.list()) if w.workload_id == workload]
        if harness.wall_clock() < lease_end and len(listed) != 1:
            raise fail(
                check, f"a fresh runtime must list the abandoned workload once, got {listed}"
            )
        await _expect_stopped_by(harness, check, fresh, handle, lease_end)
        leftover = [w for w in await _bounded(harness, fresh.list()) if w.workload_id == workload]
        if leftover:
            raise fail(check, f"list() still reports the workload after its lease: {leftover}")
        await _bounded(harness, fresh.stop(handle))
        stopped = True
    finally:
        if not stopped:
            fresh = await reopen()
            await _stop_quietly(harness, fresh, handle)


async def _check_clock_step(harness: RuntimeHarness) -> None:
    check = "clock_step"
    step_clock = probe(harness.step_clock, "step_clock() to step the runtime's wall clock")
    runtime = harness.runtime
    lease_end = harness.wall_clock() + harness.lease
    async with _running(
        harness, runtime, workload=unique("step"), token=1, lease_end=lease_end
    ) as handle:
        await step_clock(-_STEP_BACK)
        try:
            # On the monotonic clock: the wall clock now reads ten minutes early.
            await harness.sleep(harness.lease + runtime.stop_grace + harness.tolerance)
            status = await _bounded(harness, runtime.status(handle))
        finally:
            await step_clock(_STEP_BACK)
        if status == "running":
            raise fail(
                check,
                f"the workload still runs after lease_end + stop_grace once the wall clock "
                f"stepped back {_STEP_BACK:g} s: the runtime must turn the lease end into a "
                "deadline on a monotonic clock when it receives it (failure mode 31)",
            )


_RUNTIME_CHECKS: tuple[tuple[str, Callable[[RuntimeHarness], Awaitable[None]]], ...] = (
    ("lifecycle", _check_lifecycle),
    ("restore", _check_restore),
    ("two_spawns", _check_not_idempotent),
    ("spawn_failure", _check_spawn_failure),
    ("cancelled_spawn", _check_cancelled_spawn),
    ("bad_spec", _check_bad_spec),
    ("bound_visible", _check_bound_visible),
    ("stop_idempotent", _check_stop_idempotent),
    ("lease_end", _check_lease_end),
    ("renew", _check_renew),
    ("list", _check_list),
    ("abandoned", _check_abandoned),
    ("clock_step", _check_clock_step),
)


def _guard(harness: RuntimeHarness, watch: LoopWatch) -> RuntimeHarness:
    """``harness`` with its runtimes (also reopened ones) watched for blocking calls."""
    reopen = harness.reopen
    changes: dict[str, Any] = {"runtime": watched(harness.runtime, watch, "runtime")}
    if reopen is not None:

        async def reopened() -> ContainerRuntime:
            runtime: ContainerRuntime = watched(await reopen(), watch, "reopen() runtime")
            return runtime

        changes["reopen"] = reopened
    return attrs.evolve(harness, **changes)


#: Names of the checks of :func:`check_container_runtime`, in the order they run.
RUNTIME_CHECKS: tuple[str, ...] = tuple(name for name, _check in _RUNTIME_CHECKS)


async def check_container_runtime(
    factory: RuntimeHarnessFactory, *, only: Collection[str] | None = None
) -> ConformanceReport:
    """Check a :class:`~standby.protocols.ContainerRuntime` against its contract.

    ``factory()`` must return an async context manager yielding a fresh
    :class:`RuntimeHarness`; every check enters its own. The checks:

    ``lifecycle``
        spawn, then ``status`` is ``running`` and the workload received the
        fencing token; ``stop`` ends it (``stopped`` or ``absent``).
    ``restore``
        (needs ``restore_of``) the workload receives ``restore_from``.
    ``two_spawns``
        spawn is not idempotent: two spawns, two containers, each with its
        own token; stopping one leaves the other running.
    ``spawn_failure``
        a spawn that cannot start raises :class:`~standby.SpawnError` and
        leaves nothing running.
    ``cancelled_spawn``
        (needs ``slow_spec`` and ``running_count``) a spawn cancelled
        midway leaves no container running.
    ``bad_spec``
        every one of ``bad_specs``, and a lease end already past, is refused
        with a :class:`~standby.SpawnError` naming the problem.
    ``bound_visible``
        (needs ``workload_id_of`` and ``lease_end_of``) the workload sees
        its id and its lease end, and the new lease end after ``renew``.
    ``stop_idempotent``
        stopping a stopped container succeeds (also from a fresh runtime
        object when ``reopen`` is given); renewing it does nothing.
    ``lease_end``
        with its owner still there, the runtime stops the workload by
        ``lease_end + stop_grace`` on its own.
    ``renew``
        ``renew`` with a later end extends the bound, an earlier end is
        ignored; the workload then stops by the new end.
    ``list``
        (needs ``reopen``) a fresh runtime object lists what runs, with
        workload id, token and lease end, and its handles work.
    ``abandoned``
        (needs ``abandon`` and ``reopen``) after the owner went away
        without a clean shutdown the workload still stops by
        ``lease_end + stop_grace``: the bound does not live in the owner.
    ``clock_step``
        (needs ``step_clock``) the wall clock stepping back ten minutes
        after the spawn does not extend the lease: the workload still stops
        by ``lease_end + stop_grace`` in true time (failure mode 31).

    Every check also fails when one runtime call keeps the event loop from
    running other tasks for more than ``harness.max_blocking`` seconds of
    real time (50 ms by default).

    ``only`` restricts the run to some checks. Raises
    :class:`AssertionError` at the first failure.
    """
    return await run_suite("container runtime", _RUNTIME_CHECKS, factory, only, _guard)
