"""The anyio node end to end, on memory adapters and trio's virtual clock.

Scenario tests run protocol hours in milliseconds on
``MockClock(autojump_threshold=0)`` with the reference timing; every check of
"who ran what when" goes through the shared :class:`RuntimeRecord`. A short
smoke set at the end also runs on asyncio (and on trio's real clock) with a
sped-up timing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import attrs
import pytest
from _crash import ForwardingTransport

from standby import (
    InvalidSlot,
    LeaseRevocation,
    PromotionAnnouncement,
    PromotionClaim,
    StoreError,
    Timing,
    Topology,
    WorkloadConflict,
    fencing_token,
)
from standby.__main__ import main as standby_main
from standby.adapters.files._store import JsonFileStore
from standby.adapters.memory import (
    MemoryRelayNetwork,
    MemoryRuntime,
    MemorySlotStore,
    RuntimeRecord,
)
from standby.core import LifecycleState, Phase
from standby.core._errors import (
    IdentityError,
    NodeError,
    NotAddressedError,
    StoreQuarantined,
    TransportError,
)
from standby.node import (
    ContainerExited,
    HeartbeatPublished,
    InputDropped,
    LifecycleChanged,
    NodeEvent,
    OperationFailed,
    PrimaryFollowed,
    PromotedHere,
    RevocationPublished,
    SlotPhaseChanged,
    SlotsNotPersisted,
    SpawnRequest,
    StandbyNode,
    SteppedDown,
)
from standby.protocols import Query, QueryResult, SlotStore

pytestmark = pytest.mark.anyio

EPOCH = 1_700_000_000.0


def wall() -> float:
    """Wall clock on the event loop's (virtual, in tests) clock."""
    return EPOCH + anyio.current_time()


async def wait_until(
    predicate: Callable[[], bool], *, within: float, step: float = 0.5, what: str = ""
) -> None:
    """Sleep (virtual) in ``step``s until ``predicate()`` holds; fail after ``within`` s."""
    try:
        with anyio.fail_after(within):
            while True:
                if predicate():
                    return
                await anyio.sleep(step)
    except TimeoutError:
        raise AssertionError(f"timed out after {within}s waiting for {what or predicate}") from None


class Cluster:
    """A primary and ordered standbys sharing memory relays and one runtime record."""

    def __init__(
        self,
        *,
        timing: Timing,
        standbys: int = 2,
        relays: int = 3,
        seed: int = 0,
        atomic_claims: bool = False,
        primary: str = "prime",
    ) -> None:
        self.timing = timing
        self.network = MemoryRelayNetwork(
            relays, seed=seed, wall_clock=wall, atomic_claims=atomic_claims
        )
        self.record = RuntimeRecord()
        self.primary = primary
        self.standbys = [f"sb{i}" for i in range(standbys)]
        self.names = [primary, *self.standbys]
        self.runtimes = {
            n: MemoryRuntime(n, record=self.record, wall_clock=wall) for n in self.names
        }
        self.stores: dict[str, SlotStore] = {n: MemorySlotStore() for n in self.names}
        self.events: dict[str, list[NodeEvent]] = {n: [] for n in self.names}
        self.nodes: dict[str, StandbyNode[Any]] = {}
        self.scopes: dict[str, anyio.CancelScope] = {}

    def make_node(self, name: str, **options: Any) -> StandbyNode[Any]:
        options.setdefault("transport", self.network.transport(name))
        options.setdefault("runtime", self.runtimes[name])
        options.setdefault("store", self.stores[name])
        options.setdefault("on_event", self.events[name].append)
        node: StandbyNode[Any] = StandbyNode(timing=self.timing, wall_clock=wall, **options)
        self.nodes[name] = node
        return node

    async def launch(
        self, group: anyio.abc.TaskGroup, name: str, **options: Any
    ) -> StandbyNode[Any]:
        """Start node ``name`` in ``group``, in a cancel scope of its own."""
        node = self.make_node(name, **options)
        scope = anyio.CancelScope()
        self.scopes[name] = scope

        async def runner(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            with scope:
                async with node:
                    task_status.started()
                    await anyio.sleep_forever()

        await group.start(runner)
        return node

    async def launch_all(self, group: anyio.abc.TaskGroup) -> None:
        for name in self.names:
            await self.launch(group, name)

    def stop(self, name: str) -> None:
        """Stop the node's process (its containers keep their state)."""
        self.scopes[name].cancel()

    def crash(self, name: str) -> None:
        """The host dies: its node stops and every container on it ends."""
        self.runtimes[name].crash()
        self.stop(name)

    def request(
        self,
        workload_id: str = "w1",
        *,
        spec: Any = None,
        lifetime: float = 86_400.0,
        standbys: Sequence[str] | None = None,
        primary: str | None = None,
    ) -> SpawnRequest[Any]:
        return SpawnRequest(
            workload_id=workload_id,
            topology=Topology(
                primary=primary or self.primary,
                standbys=tuple(self.standbys if standbys is None else standbys),
            ),
            spec={"image": "app:1"} if spec is None else spec,
            owner="consumer",
            expires_at=wall() + lifetime,
        )

    async def accept_everywhere(self, request: SpawnRequest[Any]) -> None:
        for name in self.names:
            node = self.nodes.get(name)
            if node is not None and node.running:
                await node.accept(request)

    def starts(self, workload_id: str = "w1") -> list[tuple[str, float, int]]:
        """``(host, wall time, token)`` of every container start of the workload."""
        return [
            (e.host, EPOCH + e.at, e.fencing_token)
            for e in self.record.of_kind("started", workload_id)
        ]

    def hosts_started(self, workload_id: str = "w1") -> list[str]:
        return [host for host, _at, _token in self.starts(workload_id)]

    def last_heartbeat(self, name: str) -> float:
        stamps = [e.timestamp for e in self.events[name] if isinstance(e, HeartbeatPublished)]
        assert stamps, f"{name} never heartbeated"
        return max(stamps)


# --------------------------------------------------------------------------- helpers

TIMING = Timing()
SPAWN = 2.0
"""Seconds a standby's spawn takes in the scenarios."""


def primary_state(cluster: Cluster, name: str, workload_id: str = "w1") -> LifecycleState | None:
    status = cluster.nodes[name].status().primary(workload_id)
    return None if status is None else status.state


async def start_workload(
    cluster: Cluster, group: anyio.abc.TaskGroup, workload_id: str = "w1", **options: Any
) -> SpawnRequest[Any]:
    if not cluster.nodes:
        await cluster.launch_all(group)
    request = cluster.request(workload_id, **options)
    await cluster.accept_everywhere(request)
    await wait_until(
        lambda: primary_state(cluster, cluster.primary, workload_id) is LifecycleState.LIVE,
        within=cluster.timing.heartbeat_interval,
        step=cluster.timing.heartbeat_interval / 100,
        what="the primary to run the workload",
    )
    return request


def events_of(cluster: Cluster, name: str, kind: type[Any]) -> list[Any]:
    return [e for e in cluster.events[name] if isinstance(e, kind)]


def slow_standbys(cluster: Cluster, latency: float = SPAWN) -> None:
    for name in cluster.standbys:
        cluster.runtimes[name].spawn_latency = latency


# --------------------------------------------------------------------------- failover scenarios


async def test_crash_standby0_runs_the_workload_within_silence_plus_settle() -> None:
    cluster = Cluster(timing=TIMING)
    slow_standbys(cluster)
    async with anyio.create_task_group() as group:
        await start_workload(cluster, group)
        await anyio.sleep(600)
        cluster.crash("prime")
        last = cluster.last_heartbeat("prime")
        await wait_until(lambda: len(cluster.starts()) == 2, within=3 * TIMING.silence)
        await anyio.sleep(3600)  # an hour later: still exactly one, and stable
        group.cancel_scope.cancel()

    (first, _t0, token0), (host, started, token) = cluster.starts()
    assert (first, token0) == ("prime", 0)
    assert (host, token) == ("sb0", fencing_token(1, 0))
    bound = TIMING.silence + TIMING.claim_settle + SPAWN + 4 * TIMING.query_timeout
    assert TIMING.silence <= started - last <= bound
    assert cluster.record.max_concurrent("w1") == 1
    assert primary_state(cluster, "sb0") is LifecycleState.LIVE
    follower = cluster.nodes["sb1"].status().slot("w1")
    assert follower is not None
    assert (follower.primary, follower.epoch, follower.phase) == ("sb0", 1, Phase.WATCHING)
    assert [e.new_primary for e in events_of(cluster, "sb1", PrimaryFollowed)] == ["sb0"]
    assert [e.fencing_token for e in events_of(cluster, "sb0", PromotedHere)] == [token]


@pytest.mark.parametrize("seed", range(4))
async def test_crash_with_two_standbys_exactly_one_runs_it(seed: int) -> None:
    cluster = Cluster(timing=TIMING, seed=seed)
    cluster.network.set_faults(latency=0.05, jitter=0.5, duplicate=0.2)
    slow_standbys(cluster)
    async with anyio.create_task_group() as group:
        await start_workload(cluster, group)
        await anyio.sleep(300 + 37 * seed)
        cluster.crash("prime")
        await wait_until(lambda: len(cluster.starts()) >= 2, within=3 * TIMING.silence)
        await anyio.sleep(3600)
        group.cancel_scope.cancel()

    assert cluster.hosts_started() == ["prime", "sb0"]
    assert cluster.record.max_concurrent("w1") == 1
    assert [e.host for e in cluster.record.of_kind("spawn", "w1")] == ["prime", "sb0"]


async def crash_primary_and_settle(cluster: Cluster, group: anyio.abc.TaskGroup) -> None:
    """Run the workload, crash its primary, wait for a takeover and an hour after it."""
    await start_workload(cluster, group)
    await anyio.sleep(300)
    cluster.crash("prime")
    await wait_until(lambda: len(cluster.starts()) >= 2, within=4 * TIMING.silence)
    await anyio.sleep(3600)
    group.cancel_scope.cancel()


async def test_spawn_slower_than_promotion_delay_still_yields_exactly_one() -> None:
    slow = 0.8 * TIMING.spawn_timeout
    assert slow > TIMING.promotion_delay
    cluster = Cluster(timing=TIMING)
    slow_standbys(cluster, slow)
    async with anyio.create_task_group() as group:
        await crash_primary_and_settle(cluster, group)

    assert cluster.hosts_started() == ["prime", "sb0"]
    assert [e.host for e in cluster.record.of_kind("spawn", "w1")] == ["prime", "sb0"]
    assert cluster.record.max_concurrent("w1") == 1
    deferred = [e for e in events_of(cluster, "sb1", SlotPhaseChanged) if e.new is Phase.DEFERRED]
    assert deferred, "standby 1 should have deferred to standby 0's claim"


async def test_failed_spawn_hands_over_to_the_next_standby_and_rearms() -> None:
    cluster = Cluster(timing=TIMING)
    slow_standbys(cluster)
    cluster.runtimes["sb0"].spawn_latency = 40.0
    cluster.runtimes["sb0"].fail_spawns(1, error="out of capacity")
    async with anyio.create_task_group() as group:
        await crash_primary_and_settle(cluster, group)

    assert [e.host for e in cluster.record.of_kind("spawn-failed", "w1")] == ["sb0"]
    assert cluster.hosts_started() == ["prime", "sb1"]
    assert cluster.starts()[1][2] == fencing_token(1, 1)
    assert cluster.record.max_concurrent("w1") == 1
    rearmed = cluster.nodes["sb0"].status().slot("w1")
    assert rearmed is not None
    assert (rearmed.primary, rearmed.epoch, rearmed.phase) == ("sb1", 1, Phase.WATCHING)


async def test_forged_revocation_yields_no_promotion() -> None:
    cluster = Cluster(timing=TIMING)
    async with anyio.create_task_group() as group:
        await start_workload(cluster, group)
        await anyio.sleep(120)
        forged = LeaseRevocation(
            workload_id="w1",
            primary="prime",
            standbys=("sb0", "sb1"),
            reason="handover",
            revoked_at=wall(),
        )
        for forger in ("mallory", "sb1"):  # a stranger, and a peer standby
            await cluster.network.transport(forger).publish(forged, timeout=5)
        await anyio.sleep(3600)
        group.cancel_scope.cancel()

    assert cluster.hosts_started() == ["prime"]
    assert [e.host for e in cluster.record.of_kind("spawn", "w1")] == ["prime"]
    slot = cluster.nodes["sb0"].status().slot("w1")
    assert slot is not None
    assert (slot.phase, slot.revoked) == (Phase.WATCHING, False)
    drops = [e for e in events_of(cluster, "sb0", InputDropped) if e.signer == "sb1"]
    assert drops  # one per relay that delivered it
    assert {e.reason.name for e in drops} == {"WRONG_SIGNER"}
    # The stranger is outside the subscription's authors: the transport drops
    # its revocation, and the node counts and reports each drop.
    stranger = [e for e in events_of(cluster, "sb0", InputDropped) if e.signer == "mallory"]
    assert [(e.reason.name, e.workload_id) for e in stranger] == [("UNEXPECTED_AUTHOR", "w1")] * 3
    assert all("dropped by the transport" in e.detail for e in stranger)
    counters = cluster.nodes["sb0"].status().counters
    assert counters["transport_drops"] == 3
    assert counters["transport_drops.unexpected_author"] == 3


async def test_restart_restores_slots_and_drops_expired_ones(tmp_path: Path) -> None:
    path = tmp_path / "sb0-slots.json"
    cluster = Cluster(timing=TIMING, standbys=1)
    cluster.stores["sb0"] = JsonFileStore(path, offload=False)
    async with anyio.create_task_group() as group:
        await cluster.launch_all(group)
        await start_workload(cluster, group, "short", lifetime=300)
        await start_workload(cluster, group, "long", lifetime=86_400)
        on_disk = sorted(s.workload_id for s in JsonFileStore(path).load_sync())
        assert on_disk == ["long", "short"]
        await anyio.sleep(60)
        cluster.stop("sb0")
        await anyio.sleep(400)  # "short" expires while the standby is down
        cluster.stores["sb0"] = JsonFileStore(path, offload=False)
        restarted = await cluster.launch(group, "sb0")
        status = restarted.status()
        assert [s.workload_id for s in status.slots] == ["long"]
        assert status.counters["election.expired_on_restore"] == 1
        await wait_until(
            lambda: [s.workload_id for s in JsonFileStore(path).load_sync()] == ["long"],
            within=5,
            step=0.1,
            what="the expired slot to leave the file",
        )
        await anyio.sleep(1800)
        slot = restarted.status().slot("long")
        assert slot is not None
        assert slot.phase is Phase.WATCHING
        group.cancel_scope.cancel()

    assert cluster.hosts_started("long") == ["prime"]
    assert cluster.hosts_started("short") == ["prime"]


async def test_primary_cut_off_from_two_of_three_relays_stops_before_the_new_one_spawns() -> None:
    cluster = Cluster(timing=TIMING)
    slow_standbys(cluster)
    async with anyio.create_task_group() as group:
        await start_workload(cluster, group)
        await anyio.sleep(300)
        cut = wall()
        cluster.network.partition("prime", ["relay-1", "relay-2"])
        await wait_until(lambda: len(cluster.starts()) >= 2, within=4 * TIMING.silence)
        await anyio.sleep(3600)
        group.cancel_scope.cancel()

    assert cluster.hosts_started() == ["prime", "sb0"]
    # Stopped by the node as it fenced, or by the runtime's supervisor at the
    # same lease end, whichever came first: either way before the new spawn.
    [old_stop] = [
        e
        for e in cluster.record.events
        if e.host == "prime" and e.kind in ("stopped", "expired") and e.workload_id == "w1"
    ]
    [new_spawn] = [e for e in cluster.record.of_kind("spawn", "w1") if e.host == "sb0"]
    assert old_stop.at <= new_spawn.at
    assert cluster.record.max_concurrent("w1") == 1
    assert EPOCH + new_spawn.at - cut <= TIMING.lease + TIMING.heartbeat_interval + TIMING.silence
    assert primary_state(cluster, "prime") in (LifecycleState.FENCED, None)


async def test_handover_promotes_without_waiting_out_the_silence() -> None:
    cluster = Cluster(timing=TIMING)
    slow_standbys(cluster)
    async with anyio.create_task_group() as group:
        await start_workload(cluster, group)
        await anyio.sleep(300)
        asked = wall()
        await cluster.nodes["prime"].handover("w1", state_uri="s3://snapshots/w1")
        await wait_until(lambda: len(cluster.starts()) >= 2, within=TIMING.silence)
        await anyio.sleep(600)
        group.cancel_scope.cancel()

    (_, _, _), (host, started, token) = cluster.starts()
    assert (host, token) == ("sb0", fencing_token(1, 0))
    assert started - asked <= TIMING.claim_settle + SPAWN + 4 * TIMING.query_timeout
    assert started - asked < TIMING.silence
    [old_stop] = [e for e in cluster.record.of_kind("stopped", "w1") if e.host == "prime"]
    assert EPOCH + old_stop.at <= started
    [run] = [r for r in cluster.record.intervals("w1") if r.host == "sb0"]
    assert [h.restore_from for h in cluster.runtimes["sb0"].running("w1")] == ["s3://snapshots/w1"]
    assert run.end is None
    assert [e.new_primary for e in events_of(cluster, "sb1", PrimaryFollowed)] == ["sb0"]


async def test_fm32_a_second_primary_for_the_same_workload_is_refused() -> None:
    # "other" is a second provider that the consumer (by mistake) names as
    # primary of a workload id that "prime" already runs with sb0 and sb1.
    cluster = Cluster(timing=TIMING, standbys=3)
    cluster.names = [*cluster.names, "other"]
    cluster.runtimes["other"] = MemoryRuntime("other", record=cluster.record, wall_clock=wall)
    cluster.stores["other"] = MemorySlotStore()
    cluster.events["other"] = []
    first = cluster.request(standbys=["sb0", "sb1"])
    second = cluster.request(primary="other", standbys=["sb0", "sb1"])
    async with anyio.create_task_group() as group:
        await cluster.launch_all(group)
        for name in ("prime", "sb0", "sb1"):
            await cluster.nodes[name].accept(first)
        await anyio.sleep(300)
        # A standby refuses the second topology loudly, naming both, and
        # keeps its slot; re-sending the first request stays fine.
        for name in ("sb0", "sb1"):
            with pytest.raises(WorkloadConflict) as refused:
                await cluster.nodes[name].accept(second)
            assert refused.value.held == ("prime", ("sb0", "sb1"))
            assert refused.value.requested == ("other", ("sb0", "sb1"))
            assert "'prime'" in str(refused.value)
            assert "'other'" in str(refused.value)
            await cluster.nodes[name].accept(first)
        # The second primary reads the first one's claim on epoch 0 and
        # refuses to start a copy beside it.
        with pytest.raises(WorkloadConflict) as refused:
            await cluster.nodes["other"].accept(second)
        assert refused.value.holders == ("prime",)
        assert refused.value.requested == ("other", ("sb0", "sb1"))
        # The first primary refuses the id under other standbys.
        with pytest.raises(WorkloadConflict, match="runs here as primary"):
            await cluster.nodes["prime"].accept(cluster.request(standbys=["sb2"]))
        # After a handover (a revocation by prime, a claim and an
        # announcement by sb0) a primary of yet another topology refuses too.
        await cluster.nodes["prime"].handover("w1")
        await wait_until(lambda: len(cluster.starts()) == 2, within=TIMING.silence)
        with pytest.raises(WorkloadConflict) as refused:
            await cluster.nodes["sb2"].accept(cluster.request(primary="sb2", standbys=["sb1"]))
        assert refused.value.holders == ("prime", "sb0")
        await anyio.sleep(600)
        group.cancel_scope.cancel()
    assert cluster.hosts_started() == ["prime", "sb0"]
    assert cluster.nodes["sb1"].status().slot("w1") is not None


async def test_unexpected_exit_on_the_primary_hands_the_workload_over() -> None:
    cluster = Cluster(timing=TIMING)
    slow_standbys(cluster)
    async with anyio.create_task_group() as group:
        await start_workload(cluster, group)
        await anyio.sleep(200)
        died = wall()
        assert cluster.runtimes["prime"].exit("w1", "oom-killed") == 1
        await wait_until(lambda: len(cluster.starts()) >= 2, within=TIMING.silence)
        group.cancel_scope.cancel()

    assert [e.status for e in events_of(cluster, "prime", ContainerExited)] == ["stopped"]
    reasons = [e.reason for e in events_of(cluster, "prime", LifecycleChanged)]
    assert "container stopped" in reasons
    assert not any("container container" in reason for reason in reasons)
    assert cluster.hosts_started() == ["prime", "sb0"]
    assert cluster.starts()[1][1] - died < TIMING.heartbeat_interval + TIMING.claim_settle + 30


async def test_atomic_claims_transport_uses_compare_and_set() -> None:
    from standby.node import ClaimCompared, ClaimPublished

    cluster = Cluster(timing=TIMING, atomic_claims=True)
    slow_standbys(cluster, 0.8 * TIMING.spawn_timeout)
    async with anyio.create_task_group() as group:
        await start_workload(cluster, group)
        assert cluster.nodes["sb0"].atomic_claims
        await anyio.sleep(300)
        cluster.crash("prime")
        await wait_until(lambda: len(cluster.starts()) >= 2, within=4 * TIMING.silence)
        await anyio.sleep(1800)
        group.cancel_scope.cancel()

    assert cluster.hosts_started() == ["prime", "sb0"]
    assert [e.won for e in events_of(cluster, "sb0", ClaimCompared)] == [True]
    assert events_of(cluster, "sb0", ClaimPublished) == []
    lost = events_of(cluster, "sb1", ClaimCompared)
    assert all(not e.won and e.holder == "sb0" for e in lost)
    assert cluster.record.max_concurrent("w1") == 1


# --------------------------------------------------------------------------- a later epoch (FM25)


class DeafSubscriptions(ForwardingTransport):
    """A transport whose live subscription never delivers anything (every message missed)."""

    def subscribe(self, query: Query) -> Any:
        return _Silent()


class BlindReads(ForwardingTransport):
    """A transport whose queries find nothing once ``blind`` is set (no relay answers)."""

    blind = False

    async def query(self, query: Query, *, timeout: float) -> QueryResult:  # noqa: ASYNC109
        if self.blind:
            return QueryResult((), frozenset())
        return await super().query(query, timeout=timeout)


class _Silent:
    def __aiter__(self) -> _Silent:
        return self

    async def __anext__(self) -> Any:
        await anyio.sleep_forever()

    async def aclose(self) -> None:
        pass


def primary_stops(cluster: Cluster) -> list[float]:
    """Wall times at which the primary's node stopped a container of ``w1``."""
    return [EPOCH + e.at for e in cluster.record.of_kind("stopped", "w1") if e.host == "prime"]


async def test_fm25_a_primary_that_hears_a_later_epoch_stops_its_container_at_once() -> None:
    cluster = Cluster(timing=TIMING)
    blind = BlindReads(cluster.network.transport("prime"))
    async with anyio.create_task_group() as group:
        await cluster.launch(group, "prime", transport=blind)  # the standbys: identities only
        await start_workload(cluster, group)
        blind.blind = True  # from here on only the live subscription can tell it
        await anyio.sleep(120)
        status = cluster.nodes["prime"].status().primary("w1")
        assert status is not None
        assert status.lease_end is not None
        assert status.lease_end > wall() + 30  # the lease alone would let it run on
        announced = wall()
        announcement = PromotionAnnouncement(
            workload_id="w1",
            new_primary="sb1",
            promoted_at=announced,
            epoch=1,
            fencing_token=fencing_token(1, 1),
        )
        await cluster.network.transport("sb1").publish(announcement, timeout=5)
        await wait_until(lambda: bool(primary_stops(cluster)), within=10, step=0.1)
        await anyio.sleep(TIMING.heartbeat_interval)
        group.cancel_scope.cancel()

    # Heard on the live subscription: stopped at once, well inside its lease.
    [stopped] = primary_stops(cluster)
    assert stopped - announced < 2
    [down] = events_of(cluster, "prime", SteppedDown)
    assert (down.workload_id, down.epoch, down.later_epoch) == ("w1", 0, 1)
    assert (down.by, down.kind) == ("sb1", "announcement")
    fenced = events_of(cluster, "prime", LifecycleChanged)[-1]
    assert fenced.new is LifecycleState.FENCED
    assert "later epoch 1" in fenced.reason
    [revoked] = events_of(cluster, "prime", RevocationPublished)
    assert revoked.epoch == 0
    assert cluster.nodes["prime"].counters["stepped_down"] == 1


async def test_fm25_a_claim_the_subscription_missed_is_read_within_a_heartbeat_interval() -> None:
    cluster = Cluster(timing=TIMING)
    deaf = DeafSubscriptions(cluster.network.transport("prime"))
    async with anyio.create_task_group() as group:
        await cluster.launch(group, "prime", transport=deaf)
        await start_workload(cluster, group)
        await anyio.sleep(90)
        claimed = wall()
        claim = PromotionClaim(
            workload_id="w1",
            epoch=1,
            fencing_token=fencing_token(1, 0),
            claimant="sb0",
            standby_index=0,
            claimed_at=claimed,
        )
        await cluster.network.transport("sb0").publish(claim, timeout=5)
        await wait_until(lambda: bool(primary_stops(cluster)), within=2 * TIMING.heartbeat_interval)
        group.cancel_scope.cancel()

    [stopped] = primary_stops(cluster)
    assert stopped - claimed <= TIMING.heartbeat_interval + TIMING.query_timeout + 1
    [down] = events_of(cluster, "prime", SteppedDown)
    assert (down.later_epoch, down.by, down.kind) == (1, "sb0", "claim")


async def test_fm25_a_stranger_an_old_epoch_or_a_withdrawal_makes_no_primary_step_down() -> None:
    cluster = Cluster(timing=TIMING)
    async with anyio.create_task_group() as group:
        await cluster.launch(group, "prime")
        await start_workload(cluster, group)
        await anyio.sleep(30)
        now = wall()

        def claim(epoch: int, *, by: str = "sb0", withdrawn: bool = False) -> PromotionClaim:
            index = 0 if by == "sb0" else 5
            return PromotionClaim(
                workload_id="w1",
                epoch=epoch,
                fencing_token=fencing_token(epoch, index),
                claimant=by,
                standby_index=index,
                claimed_at=now,
                withdrawn=withdrawn,
            )

        await cluster.network.transport("mallory").publish(claim(1, by="mallory"), timeout=5)
        await cluster.network.transport("sb0").publish(claim(0), timeout=5)
        await cluster.network.transport("sb1").publish(
            attrs.evolve(claim(1, withdrawn=True), claimant="sb1", standby_index=1), timeout=5
        )
        await anyio.sleep(3 * TIMING.heartbeat_interval)
        group.cancel_scope.cancel()

    assert primary_state(cluster, "prime") is LifecycleState.LIVE
    assert primary_stops(cluster) == []
    assert events_of(cluster, "prime", SteppedDown) == []
    counters = cluster.nodes["prime"].counters
    assert counters.get("stepped_down", 0) == 0
    assert counters["takeovers_ignored"] >= 2  # the stranger's and the old epoch, read again


# --------------------------------------------------------------------------- host surface


async def test_accept_canonicalises_identities_before_the_role_check() -> None:
    cluster = Cluster(timing=TIMING)
    async with anyio.create_task_group() as group:
        node = await cluster.launch(group, "sb1")
        request = cluster.request(primary="MEM:Prime", standbys=[" SB0 ", "mem:SB1"])
        role = await node.accept(request)
        assert (role.index, role.count) == (1, 2)  # type: ignore[union-attr]
        slot = node.election.slots["w1"]
        assert (slot.primary, slot.peers) == ("prime", ("sb0",))
        group.cancel_scope.cancel()


async def test_accept_rejects_requests_not_addressed_or_malformed() -> None:
    cluster = Cluster(timing=TIMING)
    async with anyio.create_task_group() as group:
        node = await cluster.launch(group, "sb0")
        with pytest.raises(NotAddressedError, match="not addressed to this provider 'sb0'"):
            await node.accept(cluster.request(standbys=["x", "y"]))
        with pytest.raises(IdentityError, match="malformed identity"):
            await node.accept(cluster.request(standbys=["sb0", "bad identity"]))
        # documented in docs/node.md: a slot the request cannot make is InvalidSlot
        with pytest.raises(InvalidSlot, match="expires_at > created_at"):
            await node.accept(cluster.request(lifetime=-1.0))
        assert node.status().slots == ()
        group.cancel_scope.cancel()


async def test_a_standby_keeps_the_offer_id_of_the_request(tmp_path: Path) -> None:
    cluster = Cluster(timing=TIMING)
    store: JsonFileStore[Any] = JsonFileStore(tmp_path / "slots.json", offload=False)
    async with anyio.create_task_group() as group:
        node = await cluster.launch(group, "sb0", store=store)
        paid = attrs.evolve(cluster.request("w1"), spec_id="offer-42")
        await node.accept(paid)
        await node.accept(cluster.request("w2"))
        assert node.election.slots["w1"].spec_id == "offer-42"
        assert node.election.slots["w2"].spec_id is None
        group.cancel_scope.cancel()
    saved = {slot.workload_id: slot.spec_id for slot in store.load_sync()}
    assert saved == {"w1": "offer-42", "w2": None}


async def test_host_calls_need_a_running_node() -> None:
    cluster = Cluster(timing=TIMING)
    node = cluster.make_node("sb0")
    with pytest.raises(NodeError, match="not running"):
        await node.accept(cluster.request())
    async with node:
        with pytest.raises(NodeError, match="does not run here"):
            await node.handover("nope")
        assert await node.remove("nope") is False
    assert not node.running


async def test_status_snapshot_and_remove() -> None:
    cluster = Cluster(timing=TIMING)
    async with anyio.create_task_group() as group:
        await start_workload(cluster, group)
        primary = cluster.nodes["prime"].status().primary("w1")
        assert primary is not None
        assert primary.running
        assert primary.standbys == ("sb0", "sb1")
        assert primary.lease_end is not None
        assert primary.lease_end > wall()
        standby = cluster.nodes["sb0"].status()
        assert [(s.workload_id, s.phase) for s in standby.slots] == [("w1", Phase.WATCHING)]
        await anyio.sleep(TIMING.heartbeat_interval)
        standby = cluster.nodes["sb0"].status()
        assert standby.counters["messages"] >= 1
        assert await cluster.nodes["sb0"].remove("w1") is True
        assert cluster.nodes["sb0"].status().slots == ()
        store = cluster.stores["sb0"]
        assert isinstance(store, MemorySlotStore)
        assert store.slots == ()
        group.cancel_scope.cancel()


async def test_log_records_carry_workload_and_role(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="standby.node")
    cluster = Cluster(timing=TIMING)
    async with anyio.create_task_group() as group:
        await start_workload(cluster, group)
        await anyio.sleep(120)
        group.cancel_scope.cancel()
    records = [r for r in caplog.records if r.name == "standby.node"]
    assert records
    assert all(hasattr(r, "workload_id") and hasattr(r, "role") for r in records)
    assert any(r.workload_id == "w1" and r.role == "primary" for r in records)  # type: ignore[attr-defined]
    assert any(r.workload_id == "w1" and r.role == "standby" for r in records)  # type: ignore[attr-defined]


async def test_event_hook_errors_never_stop_the_node() -> None:
    calls: list[NodeEvent] = []

    def broken(event: NodeEvent) -> None:
        calls.append(event)
        raise RuntimeError("metrics backend is down")

    cluster = Cluster(timing=TIMING, standbys=1)
    async with anyio.create_task_group() as group:
        await cluster.launch(group, "prime", on_event=broken)
        await cluster.launch(group, "sb0")
        await start_workload(cluster, group)
        await anyio.sleep(300)
        assert cluster.nodes["prime"].running
        assert cluster.nodes["prime"].status().counters["event_hook_errors"] == len(calls)
        group.cancel_scope.cancel()
    assert any(isinstance(e, HeartbeatPublished) for e in calls)


class FlakyQueries(ForwardingTransport):
    """A transport whose queries fail while ``broken`` is set."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.broken = True

    async def query(self, query: Query, *, timeout: float) -> QueryResult:  # noqa: ASYNC109
        if self.broken:
            raise TransportError("relay pool exploded")
        return await super().query(query, timeout=timeout)


async def test_adapter_errors_are_counted_and_never_fatal() -> None:
    cluster = Cluster(timing=TIMING, standbys=1)
    flaky = FlakyQueries(cluster.network.transport("sb0"))
    async with anyio.create_task_group() as group:
        await cluster.launch(group, "prime")
        await cluster.launch(group, "sb0", transport=flaky)
        await start_workload(cluster, group)
        await anyio.sleep(120)
        cluster.crash("prime")
        await anyio.sleep(3 * TIMING.silence)
        assert cluster.hosts_started() == ["prime"]  # no read quorum, no promotion
        status = cluster.nodes["sb0"].status()
        assert status.running
        assert status.counters["query_heartbeats_errors"] >= 2
        assert events_of(cluster, "sb0", OperationFailed)
        flaky.broken = False
        await wait_until(lambda: len(cluster.starts()) >= 2, within=2 * TIMING.silence)
        group.cancel_scope.cancel()
    assert cluster.hosts_started() == ["prime", "sb0"]


class HungRuntime(MemoryRuntime):
    """A runtime whose lease renewals and status checks, once ``hung``, never answer."""

    hung = False

    async def renew(self, handle: Any, lease_end: float) -> None:
        if self.hung:
            await anyio.sleep_forever()
        await super().renew(handle, lease_end)

    async def status(self, handle: Any) -> Any:
        if self.hung:
            await anyio.sleep_forever()
        return await super().status(handle)


async def test_a_hung_runtime_neither_stalls_the_heartbeat_nor_piles_up_renewals() -> None:
    """``renew`` and ``status`` are cut off at ``query_timeout``; the heartbeat goes on."""
    cluster = Cluster(timing=TIMING, standbys=1)
    runtime = HungRuntime("prime", record=cluster.record, wall_clock=wall)
    cluster.runtimes["prime"] = runtime
    async with anyio.create_task_group() as group:
        await start_workload(cluster, group)
        runtime.hung = True
        before = len(events_of(cluster, "prime", HeartbeatPublished))
        await anyio.sleep(5 * TIMING.heartbeat_interval)
        after = len(events_of(cluster, "prime", HeartbeatPublished))
        failed = [e.operation for e in events_of(cluster, "prime", OperationFailed)]
        group.cancel_scope.cancel()
    assert after - before >= 4  # one a heartbeat interval, as before
    assert failed.count("renew") >= 4
    assert failed.count("status") >= 4


async def test_secret_slots_are_reported_to_the_host(tmp_path: Path) -> None:
    path = tmp_path / "slots.json"
    cluster = Cluster(timing=TIMING, standbys=1)
    cluster.stores["sb0"] = JsonFileStore(path, offload=False)
    secret = "nsec1qqqsupersecretkeymaterial"
    async with anyio.create_task_group() as group:
        node = await cluster.launch(group, "sb0")
        await node.accept(cluster.request("w-secret", spec={"env": {"NOSTR_NSEC": secret}}))
        await node.accept(cluster.request("w-plain", spec={"image": "app"}))
        group.cancel_scope.cancel()
    [event] = events_of(cluster, "sb0", SlotsNotPersisted)
    assert event.workload_ids == ("w-secret",)
    assert secret.encode() not in path.read_bytes()
    assert node.status().counters["slots_not_persisted"] == 1


async def test_store_failure_surfaces_on_accept_and_is_retried() -> None:
    cluster = Cluster(timing=TIMING)
    store = cluster.stores["sb0"]
    assert isinstance(store, MemorySlotStore)
    async with anyio.create_task_group() as group:
        node = await cluster.launch(group, "sb0")
        store.fail_next_save = True
        with pytest.raises(StoreError, match="not saved"):
            await node.accept(cluster.request())
        await node.flush()  # the retry succeeds
        assert [s.workload_id for s in store.slots] == ["w1"]
        group.cancel_scope.cancel()


async def test_corrupt_store_refuses_to_start(tmp_path: Path) -> None:
    path = tmp_path / "slots.json"
    path.write_text("{not json")
    cluster = Cluster(timing=TIMING)
    node = cluster.make_node("sb0", store=JsonFileStore(path))
    with pytest.raises(StoreError, match="corrupt"):
        async with node:
            pass  # pragma: no cover
    assert not node.running
    assert (tmp_path / "slots.json.corrupt-1").read_text() == "{not json"


async def test_fm23_a_quarantined_store_refuses_to_start_until_the_loss_is_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "slots.json"
    cluster = Cluster(timing=TIMING)
    async with cluster.make_node("sb0", store=JsonFileStore(path, offload=False)) as node:
        await node.accept(cluster.request("w1"))
        await node.accept(cluster.request("w2"))
    # One slot becomes unreadable: the file parses, the slot does not decode.
    document = json.loads(path.read_text())
    document["slots"][0] = {"workload_id": "w1"}
    path.write_text(json.dumps(document))
    for start in ("first", "second (an auto-restart)", "third"):
        node = cluster.make_node("sb0", store=JsonFileStore(path, offload=False))
        with pytest.raises(StoreQuarantined, match=r"slots\.json\.corrupt-1") as caught:
            async with node:
                pass  # pragma: no cover
        assert not node.running, start
        assert "2 slot(s)" in caught.value.lost
        assert "accept-loss" in str(caught.value)
    assert (tmp_path / "slots.json.corrupt-1").exists()
    assert not path.exists()
    assert standby_main(["store", "accept-loss", str(path)]) == 0
    out = capsys.readouterr().out
    assert "2 slot(s), 0 promotion intent(s), 0 primary record(s)" in out
    async with cluster.make_node("sb0", store=JsonFileStore(path, offload=False)) as node:
        assert node.status().slots == ()
        await node.accept(cluster.request("w3"))
    async with cluster.make_node("sb0", store=JsonFileStore(path, offload=False)) as node:
        assert [s.workload_id for s in node.status().slots] == ["w3"]


async def test_shutdown_saves_the_table_and_stops_every_task() -> None:
    cluster = Cluster(timing=TIMING)
    store = cluster.stores["sb0"]
    assert isinstance(store, MemorySlotStore)
    node = cluster.make_node("sb0")
    with anyio.move_on_after(10):
        async with node:
            await node.accept(cluster.request("w1"))
            await node.accept(cluster.request("w2"))
            await anyio.sleep_forever()
    assert not node.running
    assert sorted(s.workload_id for s in store.slots) == ["w1", "w2"]
    # nothing of the node is still scheduled: virtual time moves on with no effect
    saves = store.saves
    await anyio.sleep(TIMING.silence * 2)
    assert store.saves == saves
    assert cluster.record.events == []


async def test_unreplicated_primary_restarts_by_its_policy() -> None:
    from standby import OnFailure

    cluster = Cluster(timing=TIMING, standbys=0)
    async with anyio.create_task_group() as group:
        node = await cluster.launch(group, "prime", restart=OnFailure(max_attempts=2, backoff=5))
        await node.accept(cluster.request(standbys=[]))
        await wait_until(lambda: len(cluster.starts()) == 1, within=10)
        cluster.runtimes["prime"].exit("w1", "segfault")
        await wait_until(lambda: len(cluster.starts()) == 2, within=2 * TIMING.heartbeat_interval)
        assert primary_state(cluster, "prime") is LifecycleState.LIVE
        group.cancel_scope.cancel()
    assert cluster.record.max_concurrent("w1") == 1


async def test_expired_workloads_are_stopped_and_forgotten() -> None:
    cluster = Cluster(timing=TIMING)
    async with anyio.create_task_group() as group:
        await start_workload(cluster, group, lifetime=500)
        await anyio.sleep(600)
        assert cluster.nodes["prime"].status().primaries == ()
        assert cluster.nodes["sb0"].status().slots == ()
        group.cancel_scope.cancel()
    [run] = cluster.record.intervals("w1")
    assert run.end is not None
    assert cluster.hosts_started() == ["prime"]


# --------------------------------------------------------------------------- smoke on asyncio

FAST = Timing().scaled(1 / 600)  # silence 0.3 s of real time


class TestSmokeOnAsyncio:
    """A real event loop and the real clock; kept to well under a second each."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    async def test_crash_failover(self) -> None:
        cluster = Cluster(timing=FAST)
        async with anyio.create_task_group() as group:
            await start_workload(cluster, group)
            await anyio.sleep(FAST.heartbeat_interval * 2)
            cluster.crash("prime")
            await wait_until(lambda: len(cluster.starts()) >= 2, within=FAST.silence * 6, step=0.01)
            await anyio.sleep(FAST.heartbeat_interval)
            group.cancel_scope.cancel()
        assert cluster.hosts_started() == ["prime", "sb0"]
        assert cluster.record.max_concurrent("w1") == 1

    async def test_handover(self) -> None:
        cluster = Cluster(timing=FAST)
        async with anyio.create_task_group() as group:
            await start_workload(cluster, group)
            await cluster.nodes["prime"].handover("w1")
            await wait_until(lambda: len(cluster.starts()) >= 2, within=FAST.silence * 6, step=0.01)
            group.cancel_scope.cancel()
        assert cluster.hosts_started() == ["prime", "sb0"]
        assert cluster.record.max_concurrent("w1") == 1


def test_the_example_in_docs_node_md_runs(capsys: pytest.CaptureFixture[str]) -> None:
    import re

    doc = Path(__file__).resolve().parent.parent / "docs" / "node.md"
    [block] = re.findall(r"```python\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.S)
    exec(compile(block, str(doc), "exec"), {"__name__": "docs_node"})
    assert capsys.readouterr().out.splitlines() == ["new primary: bob", "token: 1048576"]


# --------------------------------------------------------------------------- connecting first


class _ColdTransport(ForwardingTransport):
    """Needs ``handshake`` seconds to connect; records when each call was made."""

    def __init__(self, inner: Any, handshake: float) -> None:
        super().__init__(inner)
        self.handshake = handshake
        self.calls: list[tuple[str, float]] = []

    async def wait_connected(self, *, timeout: float) -> frozenset[str]:  # noqa: ASYNC109
        self.calls.append(("wait_connected", anyio.current_time()))
        with anyio.move_on_after(timeout):
            await anyio.sleep(self.handshake)
            self.calls.append(("connected", anyio.current_time()))
            return frozenset({"relay-0", "relay-1", "relay-2"})
        return frozenset()

    async def publish(self, message: Any, *, timeout: float) -> Any:  # noqa: ASYNC109
        self.calls.append(("publish", anyio.current_time()))
        return await super().publish(message, timeout=timeout)

    async def query(self, query: Query, *, timeout: float) -> QueryResult:  # noqa: ASYNC109
        self.calls.append(("query", anyio.current_time()))
        return await super().query(query, timeout=timeout)

    def subscribe(self, query: Query) -> Any:
        self.calls.append(("subscribe", anyio.current_time()))
        return super().subscribe(query)


async def test_entering_waits_for_the_transport_to_connect_before_any_request() -> None:
    """A cold handshake (longer than a query_timeout) is paid on entry, not by a request."""
    from standby.protocols import WaitsConnected

    network = MemoryRelayNetwork(3, wall_clock=wall)
    handshake = 2 * TIMING.query_timeout
    transport = _ColdTransport(network.transport("sb0"), handshake=handshake)
    assert isinstance(transport, WaitsConnected)
    node: StandbyNode[Any] = StandbyNode(
        transport=transport,
        runtime=MemoryRuntime("sb0", wall_clock=wall),
        timing=TIMING,
        wall_clock=wall,
    )
    started = anyio.current_time()
    async with node:
        entered = anyio.current_time() - started
        await node.accept(
            SpawnRequest(
                workload_id="w1",
                topology=Topology(primary="prime", standbys=("sb0",)),
                spec={"image": "app:1"},
                owner="consumer",
                expires_at=wall() + 86_400.0,
            )
        )
        await anyio.sleep(TIMING.heartbeat_interval)
    names = [name for name, _at in transport.calls]
    assert names[:2] == ["wait_connected", "connected"]
    assert len(names) > 2, "the node made requests after connecting"
    assert entered == pytest.approx(handshake)


async def test_entering_waits_no_longer_than_connect_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    network = MemoryRelayNetwork(3, wall_clock=wall)
    transport = _ColdTransport(network.transport("sb0"), handshake=3600.0)
    node: StandbyNode[Any] = StandbyNode(
        transport=transport,
        runtime=MemoryRuntime("sb0", wall_clock=wall),
        timing=TIMING,
        wall_clock=wall,
        connect_timeout=5.0,
    )
    started = anyio.current_time()
    with caplog.at_level(logging.WARNING, logger="standby"):
        async with node:
            entered = anyio.current_time() - started
            counters = dict(node.counters)
    assert entered == pytest.approx(5.0)
    assert counters["relays_not_ready_at_start"] == 3
    assert any("0 of 3 relays ready" in r.getMessage() for r in caplog.records)


def test_connect_timeout_must_be_positive() -> None:
    network = MemoryRelayNetwork(3, wall_clock=wall)
    with pytest.raises(ValueError, match="connect_timeout"):
        StandbyNode(
            transport=network.transport("sb0"),
            runtime=MemoryRuntime("sb0", wall_clock=wall),
            connect_timeout=0.0,
        )


async def test_the_memory_transport_reports_the_relays_it_reaches() -> None:
    network = MemoryRelayNetwork(3, wall_clock=wall)
    transport = network.transport("sb0")
    assert await transport.wait_connected(timeout=1.0) == frozenset(network.relays)
    network.relay_down("relay-1")
    network.partition("sb0", ["relay-2"])
    assert await transport.wait_connected(timeout=1.0) == {"relay-0"}
