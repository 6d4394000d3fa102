"""``check_container_runtime`` against :class:`MemoryRuntime`, and the runtimes it must catch.

The memory harness runs on trio's virtual clock (a lease of a virtual second
costs nothing) and on asyncio with real time and leases of a few tens of
milliseconds. ``ProcessRuntime`` and ``PodmanRuntime`` run the same suite in
their own test modules, on real processes and containers. A few deliberately
broken runtimes show that the suite catches what it claims to catch, a
runtime without a lease supervisor first among them (failure mode 14).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import attrs
import pytest
from trio.testing import MockClock

from standby.adapters.memory import MemoryRuntime, RuntimeRecord
from standby.protocols import ContainerRuntime
from standby.testing import RUNTIME_CHECKS, RuntimeHarness, check_container_runtime

pytestmark = pytest.mark.anyio

EPOCH = 1_700_000_000.0


@pytest.fixture(params=["trio-virtual", "asyncio-real"])
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    if request.param == "trio-virtual":
        return ("trio", {"clock": MockClock(autojump_threshold=0)})
    return "asyncio"


def virtual(anyio_backend: Any) -> bool:
    return isinstance(anyio_backend, tuple)


@contextlib.asynccontextmanager
async def memory_runtime(
    anyio_backend: Any, *, enforce_leases: bool = True
) -> AsyncIterator[RuntimeHarness]:
    record = RuntimeRecord()
    step = [0.0]  # what step_clock() added to the host's wall clock
    if virtual(anyio_backend):

        def wall_clock() -> float:
            return EPOCH + anyio.current_time() + step[0]

        lease, grace = 1.0, 0.5
    else:

        def wall_clock() -> float:
            return time.time() + step[0]

        lease, grace = 0.05, 0.02

    def make() -> MemoryRuntime:
        return MemoryRuntime(
            "conformance-host",
            record=record,
            wall_clock=wall_clock,
            stop_grace=grace,
            enforce_leases=enforce_leases,
        )

    runtime = make()

    def failing_spec() -> Any:
        runtime.fail_spawns(1, error="image not found")
        return {"image": "missing:1"}

    def slow_spec() -> Any:
        runtime.spawn_latency = 0.5
        return {"image": "slow:1"}

    async def token_of(handle: Any) -> int:
        return int(handle.fencing_token)

    async def restore_of(handle: Any) -> str | None:
        return handle.restore_from  # type: ignore[no-any-return]

    async def workload_id_of(handle: Any) -> str:
        return str(handle.workload_id)

    async def lease_end_of(handle: Any) -> float | None:
        # The memory runtime has no workload side: what its supervisor holds.
        return make().lease_end(handle)

    async def running_count() -> int:
        return len(make().running())

    async def reopen() -> ContainerRuntime:
        return make()

    async def abandon() -> None:
        # The containers live in the shared record, not in the object.
        nonlocal runtime
        del runtime

    async def step_clock(seconds: float) -> None:
        step[0] += seconds

    yield RuntimeHarness(
        runtime=runtime,
        spec={"image": "app:1"},
        failing_spec=failing_spec,
        token_of=token_of,
        restore_of=restore_of,
        workload_id_of=workload_id_of,
        lease_end_of=lease_end_of,
        running_count=running_count,
        slow_spec=slow_spec,
        reopen=reopen,
        abandon=abandon,
        step_clock=step_clock,
        wall_clock=wall_clock,
        lease=lease,
        tolerance=0.001 if virtual(anyio_backend) else 0.02,
        timeout=5.0,
    )


async def test_memory_runtime_passes_the_runtime_suite(anyio_backend: Any) -> None:
    report = await check_container_runtime(lambda: memory_runtime(anyio_backend))
    assert report.passed == RUNTIME_CHECKS
    assert report.skipped == ()


async def test_missing_probes_are_reported_as_skipped(anyio_backend: Any) -> None:
    @contextlib.asynccontextmanager
    async def bare() -> AsyncIterator[RuntimeHarness]:
        async with memory_runtime(anyio_backend) as harness:
            yield attrs.evolve(harness, reopen=None, abandon=None, lease_end_of=None)

    report = await check_container_runtime(bare, only={"list", "abandoned", "bound_visible"})
    assert report.passed == ()
    assert [name for name, _why in report.skipped] == ["bound_visible", "list", "abandoned"]


async def test_unknown_runtime_check_names_are_refused(anyio_backend: Any) -> None:
    with pytest.raises(ValueError, match="unknown container runtime checks"):
        await check_container_runtime(lambda: memory_runtime(anyio_backend), only={"nope"})


# --------------------------------------------------------------------------- broken runtimes


async def test_the_suite_catches_a_runtime_without_a_lease_supervisor(anyio_backend: Any) -> None:
    """Failure mode 14: a workload that runs past its lease once its owner is gone."""
    for check in ("lease_end", "abandoned"):
        with pytest.raises(AssertionError, match=rf"\[{check}\] .*still run"):
            await check_container_runtime(
                lambda: memory_runtime(anyio_backend, enforce_leases=False), only={check}
            )


@attrs.frozen
class _NeverRenews:
    """A runtime whose ``renew`` is lost: the first lease end stays the bound."""

    inner: MemoryRuntime

    @property
    def stop_grace(self) -> float:
        return self.inner.stop_grace

    async def renew(self, handle: Any, lease_end: float) -> None:
        await anyio.lowlevel.checkpoint()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def _suite_catches(
    anyio_backend: Any, broken: Callable[[RuntimeHarness], RuntimeHarness], check: str, error: str
) -> None:
    """``check`` must fail with ``error`` on the memory harness as ``broken`` changes it."""

    @contextlib.asynccontextmanager
    async def harness() -> AsyncIterator[RuntimeHarness]:
        async with memory_runtime(anyio_backend) as sound:
            yield broken(sound)

    with pytest.raises(AssertionError, match=error):
        await check_container_runtime(harness, only={check})


@attrs.frozen
class _BlocksTheLoop:
    """A runtime whose ``status`` makes a blocking call (0.2 s of real time)."""

    inner: MemoryRuntime

    @property
    def stop_grace(self) -> float:
        return self.inner.stop_grace

    async def status(self, handle: Any) -> Any:
        time.sleep(0.2)  # noqa: ASYNC251 - the planted bug
        return await self.inner.status(handle)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_the_suite_catches_a_runtime_that_blocks_the_event_loop(anyio_backend: Any) -> None:
    """Real time, even when the suite runs on a virtual clock."""

    def blocking(harness: RuntimeHarness) -> RuntimeHarness:
        assert isinstance(harness.runtime, MemoryRuntime)
        return attrs.evolve(harness, runtime=_BlocksTheLoop(harness.runtime))

    error = r"\[lifecycle\] runtime\.status\(\) blocked the event loop for \d+ ms"
    await _suite_catches(anyio_backend, blocking, "lifecycle", error)


async def test_the_suite_catches_a_lost_renewal(anyio_backend: Any) -> None:
    def lossy(harness: RuntimeHarness) -> RuntimeHarness:
        assert isinstance(harness.runtime, MemoryRuntime)
        return attrs.evolve(harness, runtime=_NeverRenews(harness.runtime))

    error = r"\[renew\] renew\(.*\) must extend the lease"
    await _suite_catches(anyio_backend, lossy, "renew", error)


async def test_the_suite_catches_a_lost_fencing_token(anyio_backend: Any) -> None:
    async def token_of(handle: Any) -> int:
        return 0  # the workload never saw its token

    def ignoring_tokens(harness: RuntimeHarness) -> RuntimeHarness:
        return attrs.evolve(harness, token_of=token_of)

    error = r"\[lifecycle\] the workload must receive"
    await _suite_catches(anyio_backend, ignoring_tokens, "lifecycle", error)


async def test_the_suite_catches_a_silent_spawn_failure(anyio_backend: Any) -> None:
    def never_fails(harness: RuntimeHarness) -> RuntimeHarness:
        return attrs.evolve(harness, failing_spec=lambda: {"image": "fine:1"})

    await _suite_catches(anyio_backend, never_fails, "spawn_failure", r"\[spawn_failure\]")


async def test_the_suite_catches_a_spawn_error_that_names_nothing(anyio_backend: Any) -> None:
    def vague(harness: RuntimeHarness) -> RuntimeHarness:
        assert isinstance(harness.runtime, MemoryRuntime)
        # The spawn is refused, but with a message that does not say why.
        harness.runtime.fail_spawns(1, error="failed")
        return attrs.evolve(harness, bad_specs=[({"image": ""}, "image")])

    error = r"\[bad_spec\] the SpawnError must name the problem"
    await _suite_catches(anyio_backend, vague, "bad_spec", error)


class WallClockRuntime(MemoryRuntime):
    """A supervisor that compares the lease end with the wall clock at every look."""

    def _rebound(self) -> None:
        for handle_id in self._state.running:
            left = self._state.leases[handle_id] + self.stop_grace - self.wall_clock()
            self._state.deadlines[handle_id] = anyio.current_time() + left

    async def status(self, handle: Any) -> Any:
        self._rebound()
        return await super().status(handle)


async def test_the_suite_catches_a_lease_held_on_the_wall_clock(anyio_backend: Any) -> None:
    """Failure mode 31: a step back of the wall clock must not extend the lease."""

    @contextlib.asynccontextmanager
    async def broken() -> AsyncIterator[RuntimeHarness]:
        async with memory_runtime(anyio_backend) as harness:
            runtime = harness.runtime
            assert isinstance(runtime, MemoryRuntime)
            yield attrs.evolve(
                harness,
                runtime=WallClockRuntime(
                    "conformance-host",
                    record=runtime.record,
                    wall_clock=runtime.wall_clock,
                    stop_grace=runtime.stop_grace,
                ),
            )

    with pytest.raises(AssertionError, match=r"\[clock_step\] .*failure mode 31"):
        await check_container_runtime(broken, only={"clock_step"})
    report = await check_container_runtime(
        lambda: memory_runtime(anyio_backend), only={"clock_step"}
    )
    assert report.passed == ("clock_step",)
