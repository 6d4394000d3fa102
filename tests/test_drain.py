"""Lease at risk, drain, stop and the store lock, on the node in virtual time.

The scenarios run on trio's ``MockClock`` with the reference timing; the
last class runs the same drain and at-risk paths on asyncio with a sped-up
timing (real time, kept short, asserting order and counts only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from test_node import EPOCH, Cluster, events_of, start_workload, wait_until, wall

from standby import JsonFileStore, StoreError, Timing
from standby.adapters.memory import MemoryRuntime
from standby.core import LifecycleState
from standby.core._errors import NodeMisuse
from standby.node import (
    DrainReport,
    LeaseAtRisk,
    LifecycleChanged,
    StopReport,
    TakenOver,
)

pytestmark = pytest.mark.anyio

TIMING = Timing()
FAST = Timing().scaled(1 / 600)


def fenced_at(cluster: Cluster, name: str, workload_id: str = "w1") -> list[float]:
    return [
        e.at
        for e in events_of(cluster, name, LifecycleChanged)
        if e.workload_id == workload_id and e.new is LifecycleState.FENCED
    ]


# --------------------------------------------------------------------------- lease at risk


async def test_a_primary_cut_off_from_its_relays_reports_its_lease_at_risk_before_it_fences() -> (
    None
):
    cluster = Cluster(timing=TIMING)
    async with anyio.create_task_group() as group:
        await start_workload(cluster, group)
        await anyio.sleep(300)
        assert events_of(cluster, "prime", LeaseAtRisk) == []  # a healthy lease says nothing
        # One relay of three left: no write quorum.
        cluster.network.partition("prime", ["relay-0", "relay-1"])
        await wait_until(lambda: fenced_at(cluster, "prime") != [], within=2 * TIMING.lease)
        await anyio.sleep(60)
        group.cancel_scope.cancel()
    [risk] = events_of(cluster, "prime", LeaseAtRisk)
    [fenced] = fenced_at(cluster, "prime")
    assert (risk.workload_id, risk.epoch) == ("w1", 0)
    assert "below the write quorum of 2" in risk.reason
    assert risk.at < fenced <= risk.lease_end
    assert risk.remaining == pytest.approx(risk.lease_end - risk.at)
    assert cluster.nodes["prime"].status().counters["leases_at_risk"] == 1


async def test_a_lease_at_risk_that_is_renewed_may_be_reported_again() -> None:
    # With the reference timing one missed heartbeat already costs the lease
    # (the next one is stamped at its end); heartbeat twice as often here.
    timing = Timing(heartbeat_interval=TIMING.heartbeat_interval / 2)
    cluster = Cluster(timing=timing)
    async with anyio.create_task_group() as group:
        await start_workload(cluster, group)
        for _ in range(2):
            cluster.network.partition("prime", ["relay-0", "relay-1"])
            await anyio.sleep(timing.heartbeat_interval)  # one heartbeat short of its quorum
            cluster.network.heal("prime", ["relay-0", "relay-1"])
            await anyio.sleep(2 * timing.heartbeat_interval)  # renewed
        group.cancel_scope.cancel()
    assert len(events_of(cluster, "prime", LeaseAtRisk)) == 2
    assert fenced_at(cluster, "prime") == []
    assert cluster.hosts_started() == ["prime"]


def test_a_lease_at_risk_threshold_a_healthy_lease_crosses_is_refused() -> None:
    cluster = Cluster(timing=TIMING)
    with pytest.raises(ValueError, match="lease - heartbeat_interval"):
        cluster.make_node("prime", lease_at_risk=TIMING.lease - TIMING.heartbeat_interval)
    node = cluster.make_node("prime", lease_at_risk=30.0)
    assert node.lease_at_risk == 30.0


async def test_the_lease_at_risk_threshold_reaches_a_promoted_primarys_lifecycle() -> None:
    cluster = Cluster(timing=TIMING)
    async with anyio.create_task_group() as group:
        await cluster.launch(group, "prime")
        await cluster.launch(group, "sb0", lease_at_risk=40.0)
        await cluster.launch(group, "sb1")
        await start_workload(cluster, group)
        await cluster.nodes["prime"].handover("w1")
        await wait_until(lambda: len(cluster.starts()) == 2, within=TIMING.silence)
        workload = cluster.nodes["sb0"].primary.workloads["w1"]
        assert workload.lifecycle.at_risk == 40.0
        group.cancel_scope.cancel()


# --------------------------------------------------------------------------- drain


def accept_alone(cluster: Cluster, workload_id: str) -> Any:
    """A request for a workload with no standbys, run by the primary only."""
    return cluster.request(workload_id, standbys=[])


async def test_drain_hands_every_workload_over_and_reports_it() -> None:
    cluster = Cluster(timing=TIMING)
    async with anyio.create_task_group() as group:
        await start_workload(cluster, group, "w1")
        await start_workload(cluster, group, "w2")
        alone = accept_alone(cluster, "w3")
        await cluster.nodes["prime"].accept(alone)
        await anyio.sleep(120)
        began = anyio.current_time()
        report = await cluster.nodes["prime"].drain()
        took = anyio.current_time() - began
        await anyio.sleep(600)
        group.cancel_scope.cancel()
    assert isinstance(report, DrainReport)
    assert report.taken_over == (
        TakenOver("w1", 0, 1, "sb0"),
        TakenOver("w2", 0, 1, "sb0"),
    )
    assert dict(report.not_handed_over) == {"w3": "workload 'w3' has no standbys to hand over to"}
    assert not report.complete
    assert took < TIMING.silence  # a revocation skips the silence wait
    for workload_id in ("w1", "w2"):
        assert cluster.hosts_started(workload_id) == ["prime", "sb0"]
        assert cluster.record.max_concurrent(workload_id) == 1
    # The workload without standbys keeps running where it was.
    assert [h.host for h in cluster.record.intervals("w3") if h.end is None] == ["prime"]


async def test_drain_reports_a_workload_no_standby_takes_over_by_the_deadline() -> None:
    cluster = Cluster(timing=TIMING)
    async with anyio.create_task_group() as group:
        await start_workload(cluster, group)
        cluster.stop("sb0")
        cluster.stop("sb1")
        await anyio.sleep(1)
        began = anyio.current_time()
        report = await cluster.nodes["prime"].drain(within=90)
        waited = anyio.current_time() - began
        group.cancel_scope.cancel()
    assert report.taken_over == ()
    assert dict(report.not_handed_over) == {
        "w1": "no standby claimed or announced a later epoch than 0 in 90 s"
    }
    assert waited >= 90
    assert cluster.hosts_started() == ["prime"]
    assert cluster.record.intervals("w1")[0].end is not None  # it was stopped all the same


async def test_drain_past_its_deadline_says_what_it_saw_and_the_standby_still_takes_over() -> None:
    cluster = Cluster(timing=TIMING)
    cluster.runtimes["sb0"].spawn_latency = 40.0
    async with anyio.create_task_group() as group:
        await start_workload(cluster, group)
        report = await cluster.nodes["prime"].drain(within=TIMING.claim_settle + 5)
        await wait_until(lambda: len(cluster.starts()) == 2, within=TIMING.silence)
        group.cancel_scope.cancel()
    assert report.taken_over == ()
    assert dict(report.not_handed_over) == {
        "w1": "a standby claimed epoch 1 but announced no later epoch in 20 s"
    }
    assert cluster.hosts_started() == ["prime", "sb0"]


async def test_drain_without_a_read_quorum_says_so() -> None:
    cluster = Cluster(timing=TIMING)
    async with anyio.create_task_group() as group:
        await start_workload(cluster, group)
        prime = cluster.nodes["prime"]
        cluster.network.partition("prime")
        report = await prime.drain(within=30)
        group.cancel_scope.cancel()
    [why] = report.not_handed_over.values()
    # Cut off from every relay, its revocation cannot reach a write quorum either.
    assert why == (
        "its revocation of epoch 0 was not acknowledged by a write quorum within 30 s "
        "(still retried)"
    )


async def test_drain_and_stop_need_a_running_node_and_a_sane_deadline() -> None:
    cluster = Cluster(timing=TIMING)
    node = cluster.make_node("prime")
    with pytest.raises(NodeMisuse):
        await node.drain()
    with pytest.raises(NodeMisuse):
        await node.stop_workloads()
    async with anyio.create_task_group() as group:
        node = await cluster.launch(group, "prime")
        for bad in (-1.0, float("inf"), float("nan"), True):
            with pytest.raises(ValueError, match="within must be"):
                await node.drain(within=bad)
            with pytest.raises(ValueError, match="within must be"):
                await node.stop_workloads(within=bad)
        assert await node.drain() == DrainReport((), {})
        group.cancel_scope.cancel()


# --------------------------------------------------------------------------- stop


async def test_stop_workloads_stops_everything_and_the_standbys_take_the_replicated_one() -> None:
    cluster = Cluster(timing=TIMING)
    async with anyio.create_task_group() as group:
        await start_workload(cluster, group, "w1")
        await cluster.nodes["prime"].accept(accept_alone(cluster, "w2"))
        await anyio.sleep(120)
        report = await cluster.nodes["prime"].stop_workloads()
        running_after = [h.workload_id for h in cluster.runtimes["prime"].running()]
        await wait_until(lambda: len(cluster.starts("w1")) == 2, within=TIMING.silence)
        await anyio.sleep(600)
        group.cancel_scope.cancel()
    assert report == StopReport(("w1", "w2"), {})
    assert running_after == []
    assert cluster.hosts_started("w1") == ["prime", "sb0"]
    assert cluster.hosts_started("w2") == ["prime"]  # not restarted
    assert cluster.record.max_concurrent("w1") == 1
    assert cluster.nodes["prime"].status().primaries == ()


class _StuckRuntime(MemoryRuntime):
    """A runtime whose stop never succeeds."""

    async def stop(self, handle: Any) -> None:
        raise RuntimeError("engine not answering")


async def test_stop_workloads_reports_a_stop_the_runtime_never_confirms() -> None:
    cluster = Cluster(timing=TIMING)
    cluster.runtimes["prime"] = _StuckRuntime("prime", record=cluster.record, wall_clock=wall)
    async with anyio.create_task_group() as group:
        await start_workload(cluster, group)
        report = await cluster.nodes["prime"].stop_workloads(within=20)
        group.cancel_scope.cancel()
    assert report.stopped == ()
    assert dict(report.not_stopped) == {
        "w1": "the runtime had not confirmed its stop after 20 s (still retried)"
    }
    assert cluster.nodes["prime"].status().counters["stop_errors"] >= 1


# --------------------------------------------------------------------------- the store lock


async def test_a_second_node_on_the_same_store_is_refused_until_the_first_leaves(
    tmp_path: Path,
) -> None:
    path = tmp_path / "slots.json"
    cluster = Cluster(timing=TIMING)
    first = cluster.make_node("prime", store=JsonFileStore(path, offload=False))
    second = cluster.make_node("prime", store=JsonFileStore(path, offload=False))
    async with first:
        await first.accept(cluster.request("w1", standbys=[]))
        # Running, so the second node adopts it (a primary that never started
        # is not kept across a restart: its host accepts it again).
        await wait_until(
            lambda: getattr(first.status().primary("w1"), "running", False),
            within=TIMING.spawn_timeout,
        )
        with pytest.raises(StoreError, match="in use"):
            await second.__aenter__()
        assert not second.running
        # A read-only look beside the running node takes no lock and saves nothing.
        viewer: JsonFileStore[Any] = JsonFileStore(path, offload=False, read_only=True)
        assert [p.workload_id for p in (await viewer.load_state()).primaries] == ["w1"]
        with pytest.raises(StoreError, match="read-only"):
            await viewer.save([])
    async with second:
        assert second.status().primary("w1") is not None


def test_the_store_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    path = tmp_path / "slots.json"
    one: JsonFileStore[Any] = JsonFileStore(path)
    other: JsonFileStore[Any] = JsonFileStore(path)
    one.acquire("node a")
    one.acquire("node a")  # taking it again is a no-op
    assert one.held
    with pytest.raises(StoreError, match=r"locked by another holder \(node a"):
        other.acquire("node b")
    assert not other.held
    one.release()
    other.acquire("node b")
    assert other.held
    assert not one.held
    other.release()
    with pytest.raises(StoreError, match="read-only"):
        JsonFileStore(path, read_only=True).acquire()


def test_the_store_lock_dies_with_its_process(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    path = tmp_path / "slots.json"
    code = (
        "import sys; from standby import JsonFileStore; "
        f"JsonFileStore({str(path)!r}).acquire('child'); print('held', flush=True); "
        "sys.stdin.read()"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    store: JsonFileStore[Any] = JsonFileStore(path)
    with subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "held"
            with pytest.raises(StoreError, match="child"):
                store.acquire("parent")
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
    store.acquire("parent")
    store.release()


# --------------------------------------------------------------------------- on asyncio


class TestOnAsyncio:
    """The same paths on a real asyncio loop (sped-up timing; order and counts only)."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    async def test_drain(self) -> None:
        cluster = Cluster(timing=FAST)
        async with anyio.create_task_group() as group:
            await start_workload(cluster, group)
            report = await cluster.nodes["prime"].drain(within=FAST.silence * 6)
            group.cancel_scope.cancel()
        assert report.taken_over == (TakenOver("w1", 0, 1, "sb0"),)
        assert report.complete
        assert cluster.record.max_concurrent("w1") == 1

    async def test_lease_at_risk_then_fence(self) -> None:
        cluster = Cluster(timing=FAST)
        async with anyio.create_task_group() as group:
            await start_workload(cluster, group)
            cluster.network.partition("prime", ["relay-0", "relay-1"])
            await wait_until(
                lambda: fenced_at(cluster, "prime") != [], within=FAST.lease * 10, step=0.01
            )
            group.cancel_scope.cancel()
        [risk] = events_of(cluster, "prime", LeaseAtRisk)
        assert risk.at <= fenced_at(cluster, "prime")[0]

    async def test_stop_workloads(self) -> None:
        cluster = Cluster(timing=FAST)
        async with anyio.create_task_group() as group:
            await start_workload(cluster, group)
            report = await cluster.nodes["prime"].stop_workloads()
            group.cancel_scope.cancel()
        assert report.stopped == ("w1",)
        assert cluster.runtimes["prime"].running() == []


assert EPOCH  # the shared scenario clock (test_node) is the one these tests run on


def test_the_operations_page_has_one_entry_per_node_event() -> None:
    import re
    import typing

    import standby.node

    page = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text(
        encoding="utf-8"
    )
    section = page[page.index("## What to do after each event") :]
    section = section[: section.find("\n## ", 1) if "\n## " in section[1:] else None]
    listed = re.findall(r"^- \*\*`(\w+)`\*\*", section, flags=re.M)
    listed += re.findall(r", \*\*`(\w+)`\*\*", section)
    events = {kind.__name__ for kind in typing.get_args(standby.node.NodeEvent)}
    assert sorted(listed) == sorted(events)
