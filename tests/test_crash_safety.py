"""Failure modes 14 to 18, 20 and 21: the node killed, restarted, paused.

Scenarios run the shipped node over the memory adapters on trio's virtual
clock. A kill severs the incarnation's adapters first (see ``_crash.py``):
nothing after it reaches the store or the relays, and the containers live
on in the host's runtime under their lease end.
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.abc
import attrs
import pytest
from _crash import SeverableRuntime, SeverableStore, SeverableTransport
from test_node import EPOCH, SPAWN, TIMING, Cluster, events_of, start_workload, wait_until, wall

from standby import (
    Heartbeat,
    NodeMisuse,
    RequestRefused,
    Timing,
    TransportError,
    WorkloadLifecycle,
    fencing_token,
)
from standby.adapters.memory import MemoryRuntime, MemorySlotStore
from standby.core import LifecycleState
from standby.node import (
    ClockJumped,
    Reconciled,
    StandbyGivenUp,
    StandbyNode,
    SubscriptionLost,
)
from standby.protocols import Query

pytestmark = pytest.mark.anyio


class CrashCluster(Cluster):
    """A cluster whose nodes can be killed hard and restarted from their store."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.disks = {n: MemorySlotStore() for n in self.names}
        self.handles: dict[str, tuple[SeverableStore, SeverableTransport, SeverableRuntime]] = {}
        self.clock_offset: dict[str, float] = dict.fromkeys(self.names, 0.0)

    def make_node(self, name: str, **options: Any) -> StandbyNode[Any]:
        store = SeverableStore(self.disks[name])
        transport = SeverableTransport(self.network.transport(name))
        runtime = SeverableRuntime(
            MemoryRuntime(name, record=self.record, wall_clock=self.wall_of(name))
        )
        self.runtimes[name] = runtime.inner
        self.handles[name] = (store, transport, runtime)
        options.setdefault("on_event", self.events[name].append)
        node: StandbyNode[Any] = StandbyNode(
            transport=transport,
            runtime=runtime,
            store=store,
            timing=self.timing,
            wall_clock=self.wall_of(name),
            **options,
        )
        self.nodes[name] = node
        return node

    def wall_of(self, name: str) -> Any:
        return lambda: wall() + self.clock_offset[name]

    def kill(self, name: str) -> None:
        """``kill -9`` of the node process: its containers keep running."""
        for handle in self.handles[name]:
            handle.sever()
        self.stop(name)


def starts_of(cluster: Cluster, workload_id: str = "w1") -> list[tuple[str, int]]:
    return [(host, token) for host, _at, token in cluster.starts(workload_id)]


# --------------------------------------------------------------------------- FM14


@pytest.mark.parametrize("enforce", [True, False])
async def test_fm14_killed_primary_node_leaves_no_workload_past_its_lease(enforce: bool) -> None:
    """The old workload is stopped at its lease end by the runtime, not by the dead node.

    With the supervisor turned off (``enforce=False``) the same scenario
    runs two workloads at once: the counter-demonstration.
    """
    cluster = CrashCluster(timing=TIMING)
    async with anyio.create_task_group() as group:
        await cluster.launch_all(group)
        cluster.handles["prime"][2].inner.enforce_leases = enforce
        await start_workload(cluster, group)
        await anyio.sleep(300)
        cluster.kill("prime")
        await wait_until(lambda: len(cluster.starts()) >= 2, within=3 * TIMING.silence)
        await anyio.sleep(600)
        group.cancel_scope.cancel()
    assert starts_of(cluster)[:2] == [("prime", 0), ("sb0", fencing_token(1, 0))]
    if enforce:
        assert cluster.record.max_concurrent("w1") == 1
        [expired] = [e for e in cluster.record.events if e.kind == "expired" and e.host == "prime"]
        [started] = [e for e in cluster.record.of_kind("started", "w1") if e.host == "sb0"]
        assert expired.at <= started.at  # the margin is what the timing rules leave
    else:
        assert cluster.record.max_concurrent("w1") == 2


# --------------------------------------------------------------------------- FM15


async def _promote_sb0_and_kill_it(cluster: CrashCluster, *, before_spawn: bool) -> None:
    """Crash the primary; kill standby 0 during its promotion."""
    cluster.runtimes["sb0"].spawn_latency = SPAWN
    cluster.disks["sb0"].save_latency = 0.5
    cluster.crash("prime")

    def spawning() -> bool:
        kinds = [e.kind for e in cluster.record.events if e.host == "sb0"]
        return ("spawn" in kinds) if before_spawn else ("started" in kinds)

    await wait_until(spawning, within=3 * TIMING.silence, step=0.01)
    cluster.kill("sb0")


@pytest.mark.parametrize("before_spawn", [False, True])
async def test_fm15_standby_killed_mid_promotion_never_reuses_its_token(
    before_spawn: bool,
) -> None:
    """Killed after the spawn (or during it) and before the promotion was saved.

    The restarted node finds its durable intent: it adopts the container the
    runtime still runs (after the spawn) or gives the promotion up (during
    it); it never spawns the same epoch and token again.
    """
    cluster = CrashCluster(timing=TIMING)
    async with anyio.create_task_group() as group:
        await start_workload(cluster, group)
        await anyio.sleep(300)
        await _promote_sb0_and_kill_it(cluster, before_spawn=before_spawn)
        intents = cluster.disks["sb0"].state.intents
        assert [(i.epoch, i.fencing_token) for i in intents] == [(1, fencing_token(1, 0))]
        await anyio.sleep(1.0)
        await cluster.launch(group, "sb0")
        await anyio.sleep(3 * TIMING.silence)
        group.cancel_scope.cancel()
    tokens = [token for host, token in starts_of(cluster) if host == "sb0"]
    assert len(tokens) == len(set(tokens))
    assert tokens.count(fencing_token(1, 0)) <= 1
    assert cluster.record.max_concurrent("w1") == 1
    actions = [e.action for e in events_of(cluster, "sb0", Reconciled)]
    if before_spawn:
        # The spawn died with the process: the promotion is given up (its token
        # is spent) and standby 1 takes over with a token of its own.
        assert actions == ["abandoned"]
        assert [host for host, _token in starts_of(cluster)] == ["prime", "sb1"]
        [spent] = cluster.disks["sb0"].state.intents
        assert spent.spent
        assert spent.fencing_token == fencing_token(1, 0)
    else:
        assert actions == ["adopted"]
        assert cluster.nodes["sb0"].status().primary("w1") is not None


async def test_fm15_a_node_that_gave_up_a_promotion_never_stands_by_for_it_again() -> None:
    # Its peers count it as the primary of the epoch it gave up, so it is out
    # of their lineup: it tells the host so (failure mode 33), once, and
    # refuses every re-accept until the reservation ends.
    cluster = CrashCluster(timing=TIMING)
    async with anyio.create_task_group() as group:
        request = await start_workload(cluster, group)
        await anyio.sleep(300)
        await _promote_sb0_and_kill_it(cluster, before_spawn=True)
        node = await cluster.launch(group, "sb0")
        for _ in range(2):
            with pytest.raises(
                RequestRefused, match=r"already promoted into epoch 1.*reserve another"
            ):
                await node.accept(request)
        group.cancel_scope.cancel()
    [given_up] = events_of(cluster, "sb0", StandbyGivenUp)
    assert (given_up.workload_id, given_up.epoch) == ("w1", 1)
    assert given_up.fencing_token == fencing_token(1, 0)
    assert given_up.until == request.expires_at
    assert node.counters["standbys_given_up"] == 1
    assert node.counters["reaccepts_refused"] == 2


# --------------------------------------------------------------------------- FM29


async def test_fm29_an_ended_primary_refuses_its_workload_from_store_or_relays() -> None:
    """After a handover, re-accepting is refused: in process, after a restart, without a disk."""
    cluster = CrashCluster(timing=TIMING)
    async with anyio.create_task_group() as group:
        request = await start_workload(cluster, group)
        await anyio.sleep(300)
        await cluster.nodes["prime"].handover("w1")
        await wait_until(lambda: len(starts_of(cluster)) == 2, within=TIMING.silence)
        await anyio.sleep(60)  # the ended record retired
        assert cluster.nodes["prime"].status().primary("w1") is None
        with pytest.raises(RequestRefused, match="until it ended"):
            await cluster.nodes["prime"].accept(request)
        cluster.kill("prime")
        node = await cluster.launch(group, "prime")
        with pytest.raises(RequestRefused, match="until it ended"):
            await node.accept(request)  # the store kept the ended record
        cluster.kill("prime")
        cluster.disks["prime"] = MemorySlotStore()  # the disk is lost
        node = await cluster.launch(group, "prime")
        with pytest.raises(RequestRefused, match="epoch 0 was revoked"):
            await node.accept(request)  # the relays hold its revocation
        await anyio.sleep(60)
        group.cancel_scope.cancel()
    assert starts_of(cluster) == [("prime", 0), ("sb0", fencing_token(1, 0))]


# --------------------------------------------------------------------------- FM16


@pytest.mark.parametrize("with_created_at", [False, True])
async def test_fm16_restarted_primary_adopts_its_container_and_reaccept_starts_no_copy(
    with_created_at: bool,
) -> None:
    cluster = CrashCluster(timing=TIMING)
    async with anyio.create_task_group() as group:
        request = await start_workload(cluster, group)
        await anyio.sleep(200)
        cluster.kill("prime")
        await anyio.sleep(10)
        node = await cluster.launch(group, "prime")
        if with_created_at:
            request = attrs.evolve(request, created_at=wall() - 210)
        await node.accept(request)  # the host re-sends what it had accepted
        await anyio.sleep(3 * TIMING.silence)
        group.cancel_scope.cancel()
    assert starts_of(cluster) == [("prime", 0)]
    assert [e.action for e in events_of(cluster, "prime", Reconciled)] == ["adopted"]
    assert cluster.record.max_concurrent("w1") == 1
    status = cluster.nodes["prime"].status().primary("w1")
    assert status is not None
    assert status.state is LifecycleState.LIVE


async def test_fm16_primary_refuses_a_workload_a_standby_already_took_over() -> None:
    cluster = CrashCluster(timing=TIMING)
    async with anyio.create_task_group() as group:
        request = await start_workload(cluster, group)
        await anyio.sleep(200)
        cluster.crash("prime")  # host crash: the container is gone too
        await wait_until(lambda: len(cluster.starts()) >= 2, within=3 * TIMING.silence)
        node = await cluster.launch(group, "prime")
        with pytest.raises(RequestRefused, match=r"taken over|fenced"):
            await node.accept(request)
        await anyio.sleep(600)
        group.cancel_scope.cancel()
    assert [host for host, _token in starts_of(cluster)] == ["prime", "sb0"]
    assert cluster.record.max_concurrent("w1") == 1


# --------------------------------------------------------------------------- FM17


def test_fm17_acknowledgement_of_a_heartbeat_stamped_after_the_lease_end_never_renews() -> None:
    timing = Timing(relay_count=1, write_quorum=1, read_quorum=1)
    start = 1_000.0
    machine = WorkloadLifecycle(
        workload_id="w", me="p", timing=timing, standbys=("s",), created_at=start
    )
    machine.start(start)
    machine.heartbeat_acked(start, "r", start)
    machine.container_started(start + 0.1)
    end = machine.lease_end()
    assert end is not None
    late = end + 900.0  # the process was paused past its lease
    machine.heartbeat_acked(late, "r", late)
    assert machine.lease_end() == end
    assert machine.state is LifecycleState.FENCED
    assert machine.late_acks == 1


async def test_fm17_primary_paused_past_its_lease_fences_before_it_heartbeats() -> None:
    """The wall clock jumps past the lease (a paused VM): fence first, never renew."""
    timing = attrs.evolve(TIMING, relay_count=1, write_quorum=1, read_quorum=1)
    cluster = CrashCluster(timing=timing, relays=1)
    async with anyio.create_task_group() as group:
        await start_workload(cluster, group)
        await anyio.sleep(100)
        cluster.clock_offset["prime"] = 2 * timing.lease  # what a pause looks like on wake
        await anyio.sleep(timing.heartbeat_interval + 1)
        group.cancel_scope.cancel()
    status = cluster.nodes["prime"].status().primary("w1")
    assert status is None or status.state is LifecycleState.FENCED
    assert events_of(cluster, "prime", ClockJumped)
    # The supervisor's bound was never extended past the pause.
    renewed = [e for e in cluster.record.events if e.kind == "renewed" and e.host == "prime"]
    assert all(float(e.detail.split()[-1]) < EPOCH + 100 + timing.lease + 1 for e in renewed)


# --------------------------------------------------------------------------- FM18


async def test_fm18_a_future_heartbeat_masks_no_genuine_one() -> None:
    cluster = CrashCluster(timing=TIMING)
    async with anyio.create_task_group() as group:
        await start_workload(cluster, group)
        # One heartbeat from the primary's key, stamped an hour ahead (a clock step).
        forged = Heartbeat(provider="prime", timestamp=wall() + 3600, active_workloads=1)
        await cluster.network.transport("prime").publish(forged, timeout=1)
        await anyio.sleep(4 * TIMING.silence)
        query = Query(kinds=("heartbeat",), authors=("prime",), until=wall() + 1)
        result = await cluster.network.transport("sb0").query(query, timeout=1)
        group.cancel_scope.cancel()
    assert starts_of(cluster) == [("prime", 0)]  # nobody promoted over a live primary
    [envelope] = result.envelopes
    assert isinstance(envelope.message, Heartbeat)
    assert envelope.message.timestamp <= wall()


# --------------------------------------------------------------------------- FM20


async def test_fm20_a_refused_subscription_is_retried_warned_and_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster = CrashCluster(timing=TIMING)
    refusals = [3]
    real = SeverableTransport.subscribe

    def refusing(self: SeverableTransport, query: Query) -> Any:
        if self.inner.identity == "sb0" and refusals[0] > 0:
            refusals[0] -= 1
            raise TransportError("too many messages waiting to be sent")
        return real(self, query)

    caplog.set_level("WARNING", logger="standby.node")
    SeverableTransport.subscribe = refusing  # type: ignore[method-assign]
    try:
        async with anyio.create_task_group() as group:
            await start_workload(cluster, group)
            await anyio.sleep(TIMING.silence)
            group.cancel_scope.cancel()
    finally:
        SeverableTransport.subscribe = real  # type: ignore[method-assign]
    lost = events_of(cluster, "sb0", SubscriptionLost)
    assert [e.attempt for e in lost] == [1, 2, 3]
    assert [e.retry_in for e in lost] == sorted(e.retry_in for e in lost)
    assert any("too many messages" in r.getMessage() for r in caplog.records)
    assert cluster.nodes["sb0"].status().counters["messages"] >= 1  # it hears again


# --------------------------------------------------------------------------- FM21


@pytest.mark.parametrize("seed", range(5))
async def test_fm21_after_a_claim_shortfall_standby_0_still_goes_first(seed: int) -> None:
    if True:
        cluster = CrashCluster(timing=TIMING, seed=seed)
        async with anyio.create_task_group() as group:
            await start_workload(cluster, group)
            await anyio.sleep(300)
            cluster.crash("prime")
            # Two of three relays refuse everything while the standbys try.
            cluster.network.relay_down("relay-1")
            cluster.network.relay_down("relay-2")
            await anyio.sleep(TIMING.silence + 4 * TIMING.promotion_delay)
            cluster.network.relay_up("relay-1")
            cluster.network.relay_up("relay-2")
            await wait_until(lambda: len(cluster.starts()) >= 2, within=6 * TIMING.silence)
            await anyio.sleep(600)
            group.cancel_scope.cancel()
        assert [host for host, _t in starts_of(cluster)] == ["prime", "sb0"], seed


# --------------------------------------------------------------------------- relay count


def test_a_transport_with_another_relay_count_than_the_timing_is_refused() -> None:
    cluster = Cluster(timing=TIMING, relays=5)
    with pytest.raises(NodeMisuse, match=r"5 relays.*relay_count=3"):
        cluster.make_node("prime")


def test_a_runtime_that_stops_later_than_the_fence_grace_is_refused() -> None:
    cluster = Cluster(timing=TIMING)
    slow = MemoryRuntime("prime", stop_grace=TIMING.fence_grace + 1)
    with pytest.raises(NodeMisuse, match="stop_grace"):
        cluster.make_node("prime", runtime=slow)
