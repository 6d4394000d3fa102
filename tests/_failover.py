"""One crash failover of three real nodes on the memory adapters, for the observability tests.

A primary and two standbys share memory relays and one runtime record; the
primary's host crashes once the workload runs, and the run goes on until
the first standby has taken over. On trio the clock is virtual
(``MockClock``) and the reference timing is used; on asyncio (a real
clock) a timing scaled down 200 times keeps it to a few seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from trio.testing import MockClock

from standby import Timing, Topology
from standby.adapters.memory import (
    MemoryRelayNetwork,
    MemoryRuntime,
    MemorySlotStore,
    RuntimeRecord,
)
from standby.core import LifecycleState
from standby.node import NodeEvent, SpawnRequest, StandbyNode

EPOCH = 1_700_000_000.0
NAMES = ("prime", "sb0", "sb1")


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """Trio on a fresh virtual clock, and asyncio on the real one (import it into a test)."""
    if request.param == "trio":
        return ("trio", {"clock": MockClock(autojump_threshold=0)})
    return "asyncio"


def timing_for(backend: Any) -> Timing:
    """The reference timing on a virtual clock, a fast one on a real clock."""
    return Timing() if backend != "asyncio" else Timing().scaled(1 / 200)


def wall() -> float:
    return EPOCH + anyio.current_time()


async def wait_until(predicate: Callable[[], bool], within: float, what: str) -> None:
    try:
        with anyio.fail_after(within):
            while not predicate():  # noqa: ASYNC110 - polls the nodes' state
                await anyio.sleep(within / 400)
    except TimeoutError:
        raise AssertionError(f"timed out after {within}s waiting for {what}") from None


class Failover:
    """The three nodes, their runtimes and events; :meth:`run` plays the crash."""

    def __init__(self, timing: Timing, event_logs: Path | None = None, **options: Any) -> None:
        self.timing = timing
        self.network = MemoryRelayNetwork(3, seed=1, wall_clock=wall)
        self.record = RuntimeRecord()
        self.runtimes = {n: MemoryRuntime(n, record=self.record, wall_clock=wall) for n in NAMES}
        self.events: dict[str, list[NodeEvent]] = {n: [] for n in NAMES}
        self.nodes: dict[str, StandbyNode[Any]] = {
            name: StandbyNode(
                transport=self.network.transport(name),
                runtime=self.runtimes[name],
                store=MemorySlotStore(),
                timing=timing,
                wall_clock=wall,
                on_event=self.events[name].append,
                event_log=None if event_logs is None else event_logs / f"{name}.events",
                **options,
            )
            for name in NAMES
        }
        self.scopes = {name: anyio.CancelScope() for name in NAMES}

    def starts(self) -> list[tuple[str, int]]:
        return [(e.host, e.fencing_token) for e in self.record.of_kind("started", "w1")]

    async def _serve(
        self, name: str, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        with self.scopes[name]:
            async with self.nodes[name]:
                task_status.started()
                await anyio.sleep_forever()

    async def run(self, *, inspect: Callable[[Failover], None] | None = None) -> None:
        """Start, crash the primary, wait for the takeover; ``inspect`` runs before the stop."""
        timing = self.timing
        async with anyio.create_task_group() as group:
            for name in NAMES:
                await group.start(self._serve, name)
            request: SpawnRequest[Any] = SpawnRequest(
                workload_id="w1",
                topology=Topology(primary="prime", standbys=("sb0", "sb1")),
                spec={"image": "app:1"},
                owner="consumer",
                expires_at=wall() + 86_400,
            )
            for node in self.nodes.values():
                await node.accept(request)
            prime = self.nodes["prime"]

            def live() -> bool:
                status = prime.status().primary("w1")
                return status is not None and status.state is LifecycleState.LIVE

            await wait_until(live, 2 * timing.heartbeat_interval, "the primary to run w1")
            await anyio.sleep(3 * timing.heartbeat_interval)
            self.runtimes["prime"].crash()
            self.scopes["prime"].cancel()
            limit = 3 * (timing.silence + timing.claim_settle + timing.spawn_timeout)
            await wait_until(lambda: len(self.starts()) >= 2, limit, "a standby to take over")
            await anyio.sleep(2 * timing.heartbeat_interval)
            if inspect is not None:
                inspect(self)
            group.cancel_scope.cancel()
