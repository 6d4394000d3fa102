"""Each part of the node built alone, from memory adapters and fakes, without a StandbyNode.

A part is built from the few objects it uses (the transport's calls, the
runtime, the timing, the observer, the store) and narrow calls for what it
needs of another part (issue 21); here each is put together by hand and one
of its behaviours exercised, on trio's virtual clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
from trio.testing import MockClock

from standby import (
    Envelope,
    LeaseRevocation,
    PromotionAnnouncement,
    PromotionClaim,
    Timing,
    Topology,
    WorkloadConflict,
    fencing_token,
)
from standby.adapters.memory import MemoryRelayNetwork, MemoryRuntime
from standby.core._effects import Announce
from standby.core._election import StandbyElection
from standby.core._errors import RequestRefused
from standby.core._lifecycle import Never
from standby.core._models import StandbySlot
from standby.core._records import NodeState, PromotionIntent
from standby.core._relay_messages import Query
from standby.core._roles import Standby
from standby.node import (
    HeartbeatPublished,
    NodeEvent,
    Reconciled,
    SpawnRequest,
    StandbyNode,
    SteppedDown,
)
from standby.node._epochs import EpochsRead
from standby.node._heartbeat import Heartbeats
from standby.node._io import NodeIO
from standby.node._observe import Observer
from standby.node._persistence import Persistence
from standby.node._primary import PrimarySide
from standby.node._reconcile import Reconciler
from standby.node._standby import StandbySide
from standby.node._stepdown import StepDown

pytestmark = pytest.mark.anyio

EPOCH = 1_700_000_000.0


def wall() -> float:
    return EPOCH + anyio.current_time()


class Kit:
    """The objects a part is built from, for one provider, on memory adapters."""

    def __init__(self, name: str = "prime", network: MemoryRelayNetwork | None = None) -> None:
        self.timing = Timing()
        self.network = network or MemoryRelayNetwork(3, wall_clock=wall)
        self.transport = self.network.transport(name)
        self.me = self.transport.identity
        self.runtime = MemoryRuntime(name, wall_clock=wall)
        self.events: list[NodeEvent] = []
        self.observer = Observer(self.me, clock=wall, logger=None, on_event=self.events.append)
        self.io = NodeIO(self.transport, self.timing, self.observer)
        self.persistence = Persistence(None, self.timing, self.observer, NodeState)
        self.calls: list[str] = []
        self.epochs = EpochsRead(reached=True, answered=3)
        self.slots: dict[str, StandbySlot[Any]] = {}

    def note(self, what: str) -> Any:
        return lambda *args, **kwargs: self.calls.append(what)

    async def read_epochs(self, workloads: set[str]) -> EpochsRead:
        self.calls.append(f"read_epochs {sorted(workloads)}")
        return self.epochs

    def primary_side(self) -> PrimarySide[Any]:
        return PrimarySide(
            self.me,
            self.timing,
            self.observer,
            self.io,
            self.runtime,
            self.persistence,
            restart=Never(),
            now=wall,
            poke=self.note("poke"),
            refresh=self.note("refresh"),
            heartbeat_soon=self.note("heartbeat_soon"),
            slot=self.slots.get,
            read_epochs=self.read_epochs,
        )

    def request(self, *standbys: str, workload_id: str = "w1") -> SpawnRequest[Any]:
        return SpawnRequest(
            workload_id=workload_id,
            topology=Topology(primary="prime", standbys=standbys),
            spec={"image": "app:1"},
            owner="consumer",
            expires_at=wall() + 86_400.0,
        )


@pytest.fixture
async def group() -> AsyncIterator[anyio.abc.TaskGroup]:
    async with anyio.create_task_group() as tasks:
        yield tasks
        tasks.cancel_scope.cancel()


async def test_primary_side_alone_starts_a_workload_and_asks_for_a_heartbeat(
    group: anyio.abc.TaskGroup,
) -> None:
    kit = Kit()
    kit.io.start(group)
    primary = kit.primary_side()
    request = kit.request()
    assert await primary.accept(wall(), request, request.topology)
    assert "heartbeat_soon" in kit.calls
    await anyio.wait_all_tasks_blocked()  # the start ran in the io's task group
    assert kit.runtime.running("w1")
    assert primary.workloads["w1"].container_up


async def test_primary_side_alone_refuses_an_id_the_standby_side_holds() -> None:
    kit = Kit()
    primary = kit.primary_side()
    request = kit.request("sb0")
    kit.slots["w1"] = StandbySlot.reserve(
        me=kit.me,
        workload_id="w1",
        topology=Topology(primary="other", standbys=(kit.me,)),
        spec=None,
        owner="consumer",
        created_at=wall(),
        expires_at=wall() + 100.0,
    )
    with pytest.raises(WorkloadConflict):
        await primary.accept(wall(), request, request.topology)
    assert not primary.workloads


async def test_primary_side_alone_does_not_start_a_revoked_workload() -> None:
    """Failure mode 29, decided on what the injected epoch read returns."""
    kit = Kit()
    primary = kit.primary_side()
    kit.epochs = EpochsRead(reached=True, answered=3, revoked={"w1": 0})
    request = kit.request("sb0")
    with pytest.raises(RequestRefused, match="revoked"):
        await primary.accept(wall(), request, request.topology)
    assert kit.calls == ["read_epochs ['w1']"]
    assert not primary.workloads


def standby_side(kit: Kit) -> tuple[StandbySide[Any], StandbyElection[Any]]:
    election: StandbyElection[Any] = StandbyElection(me=kit.me, timing=kit.timing)

    async def stop(*_args: Any) -> None:
        raise AssertionError("nothing to stop")

    standby: StandbySide[Any] = StandbySide(
        kit.me,
        kit.timing,
        kit.observer,
        kit.io,
        kit.runtime,
        kit.persistence,
        election,
        claims=None,
        now=wall,
        poke=kit.note("poke"),
        refresh=kit.note("refresh"),
        to_primary=lambda _envelope: False,
        already_runs=lambda _workload_id, _spec: False,
        ended_run=lambda _workload_id, _now: None,
        take_over=kit.note("take_over"),
        stop_container=stop,
        heartbeat_soon=kit.note("heartbeat_soon"),
    )
    return standby, election


async def test_standby_side_alone_reserves_a_slot() -> None:
    kit = Kit("sb0")
    standby, election = standby_side(kit)
    request = kit.request("sb0", "sb1")
    await standby.accept(wall(), request, request.topology, Standby(0, 2))
    assert set(election.slots) == {"w1"}
    assert kit.calls == ["refresh", "poke"]


async def test_a_slot_that_follows_a_new_primary_heeds_its_earlier_revocation(
    group: anyio.abc.TaskGroup,
) -> None:
    """The new primary revoked before the slot followed it: read back, then heeded."""
    kit = Kit("sb1")
    kit.io.start(group)
    standby, election = standby_side(kit)
    request = kit.request("sb0", "sb1")
    await standby.accept(wall(), request, request.topology, Standby(1, 2))
    sb0 = kit.network.transport("sb0")
    now = wall()
    revocation = LeaseRevocation(
        workload_id="w1", primary="sb0", standbys=("sb1",), revoked_at=now, epoch=1
    )
    await sb0.publish(revocation, timeout=1.0)
    standby.on_envelope(Envelope(revocation, "sb0", "relay-0", now))
    assert not election.status("w1").revoked  # a peer's revocation: not heeded
    announcement = PromotionAnnouncement(
        workload_id="w1", new_primary="sb0", promoted_at=now, epoch=1, fencing_token=2
    )
    await sb0.publish(announcement, timeout=1.0)
    queries: list[Query] = []
    query = kit.transport.query

    async def watched(q: Query, *, timeout: float) -> Any:  # noqa: ASYNC109
        queries.append(q)
        return await query(q, timeout=timeout)

    kit.transport.query = watched  # type: ignore[method-assign]
    standby.on_envelope(Envelope(announcement, "sb0", "relay-0", now))
    assert election.slots["w1"].primary == "sb0"
    await anyio.wait_all_tasks_blocked()
    assert [(set(q.kinds), q.authors) for q in queries] == [({"revocation"}, {"sb0"})]
    assert election.status("w1").revoked  # read back, and heeded now that sb0 is primary


async def test_heartbeats_alone_publish_for_the_primary_sides_workloads(
    group: anyio.abc.TaskGroup,
) -> None:
    kit = Kit()
    kit.io.start(group)
    primary = kit.primary_side()

    async def watch() -> None:
        kit.calls.append("watch")

    heartbeats: Heartbeats[Any] = Heartbeats(
        kit.me, kit.timing, kit.observer, kit.io, primary, now=wall, watch=watch
    )
    await heartbeats.send()
    assert not [e for e in kit.events if isinstance(e, HeartbeatPublished)]  # nothing runs
    request = kit.request()
    await primary.accept(wall(), request, request.topology)
    await heartbeats.send()
    sent = [e for e in kit.events if isinstance(e, HeartbeatPublished)]
    assert len(sent) == 1
    assert sent[0].workloads == 1


async def primary_watching(
    group: anyio.abc.TaskGroup, workloads: int = 1
) -> tuple[Kit, StepDown[Any]]:
    """A primary side running ``workloads`` workloads with standby ``sb0``, and its watch."""
    kit = Kit()
    kit.io.start(group)
    primary = kit.primary_side()
    stepdown: StepDown[Any] = StepDown(kit.me, kit.timing, kit.observer, kit.io, primary, now=wall)
    names = ["w1"] if workloads == 1 else [f"w{n:03d}" for n in range(workloads)]
    for workload_id in names:
        request = kit.request("sb0", workload_id=workload_id)
        await primary.accept(wall(), request, request.topology)
    return kit, stepdown


async def test_stepdown_alone_steps_a_primary_down_on_a_later_claim(
    group: anyio.abc.TaskGroup,
) -> None:
    """Failure mode 25: the watch's read finds a standby's claim of a later epoch."""
    kit, stepdown = await primary_watching(group)
    assert stepdown.watched() == ["w1"]
    assert stepdown.authors() == {"sb0"}
    claim = PromotionClaim(
        workload_id="w1",
        epoch=1,
        fencing_token=fencing_token(1, 0),
        claimant="sb0",
        standby_index=0,
        claimed_at=wall(),
    )
    await kit.network.transport("sb0").publish(claim, timeout=5)
    await stepdown.read()
    stepped = [e for e in kit.events if isinstance(e, SteppedDown)]
    assert [(e.workload_id, e.later_epoch) for e in stepped] == [("w1", 1)]


async def test_stepdown_reads_only_the_standbys_messages(
    group: anyio.abc.TaskGroup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watch asks the relays for the standbys' claims, never this node's own."""
    kit, stepdown = await primary_watching(group)
    asked: list[Query] = []
    query = kit.io.query

    async def spy(read: Query, **options: Any) -> Any:
        asked.append(read)
        return await query(read, **options)

    monkeypatch.setattr(kit.io, "query", spy)
    await stepdown.read()
    assert [(q.authors, q.workload_ids) for q in asked] == [(frozenset({"sb0"}), frozenset({"w1"}))]


async def test_stepdown_reads_its_batches_one_after_another(
    group: anyio.abc.TaskGroup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A primary of 250 workloads watches them in three queries, never two at once.

    The relays answer a connection's requests in order: sent together, the
    watch's queries would hold up every claims read sharing the connection.
    """
    kit, stepdown = await primary_watching(group, 250)
    sizes: list[int] = []
    running = [0, 0]  # now, most at once
    query = kit.io.query

    async def spy(read: Query, **options: Any) -> Any:
        running[0] += 1
        running[1] = max(running)
        try:
            await anyio.lowlevel.checkpoint()  # let any other query start
            return await query(read, **options)
        finally:
            running[0] -= 1
            assert read.workload_ids is not None
            sizes.append(len(read.workload_ids))

    monkeypatch.setattr(kit.io, "query", spy)
    await stepdown.read()
    assert sizes == [100, 100, 50]
    assert running[1] == 1


async def test_reconciler_alone_stops_a_stray_container() -> None:
    kit = Kit()
    primary = kit.primary_side()
    election: StandbyElection[Any] = StandbyElection(me=kit.me, timing=kit.timing)
    spent: list[PromotionIntent] = []

    async def announce(_effect: Announce) -> None:
        raise AssertionError("nothing to announce")

    reconciler: Reconciler[Any] = Reconciler(
        kit.me,
        kit.timing,
        kit.observer,
        kit.io,
        kit.runtime,
        election,
        kit.persistence,
        primary,
        now=wall,
        read_epochs=kit.read_epochs,
        spend=spent.append,
        announce=announce,
    )
    await kit.runtime.spawn(
        {"image": "app:1"}, workload_id="w9", fencing_token=7, lease_end=wall() + 60.0
    )
    await reconciler.restore()
    assert not kit.runtime.running("w9")
    reconciled = [e for e in kit.events if isinstance(e, Reconciled)]
    assert [(e.workload_id, e.action) for e in reconciled] == [("w9", "stopped")]
    assert not primary.workloads
    assert not spent


class OnBothBackends:
    """Tests run on asyncio and on trio with a virtual clock."""

    @pytest.fixture(params=["asyncio", "trio"])
    def anyio_backend(self, request: pytest.FixtureRequest) -> Any:
        if request.param == "trio":
            return ("trio", {"clock": MockClock(autojump_threshold=0)})
        return "asyncio"


class TestSpawnedTasks(OnBothBackends):
    """The node's short tasks (plain asyncio tasks on asyncio) keep the task group's rules."""

    @staticmethod
    def node(kit: Kit) -> StandbyNode[Any]:
        return StandbyNode(
            transport=kit.transport, runtime=kit.runtime, timing=kit.timing, wall_clock=wall
        )

    async def test_a_failing_task_stops_the_node_which_raises_its_error(self) -> None:
        node = self.node(Kit())

        async def fail() -> None:
            await anyio.sleep(0.01)
            raise RuntimeError("broken task")

        async def host() -> None:
            async with node:
                assert node.io.spawn(fail)
                await anyio.sleep(5)
            pytest.fail("the host's body should have been cancelled")

        with pytest.raises(RuntimeError, match="broken task"):
            await host()
        assert not node.running

    async def test_tasks_are_cancelled_and_waited_for_when_the_node_stops(self) -> None:
        node = self.node(Kit())
        ended: list[str] = []

        async def slow(name: str) -> None:
            try:
                await anyio.sleep(3600)
            finally:
                with anyio.CancelScope(shield=True):
                    await anyio.sleep(0.01)
                ended.append(name)

        async with node:
            node.io.spawn(slow, "a")
            node.io.spawn(slow, "b")
            await anyio.sleep(0.01)
        assert sorted(ended) == ["a", "b"]
        assert not node.io.spawn(slow, "c")
        assert node.counters["effects_after_stop"] == 1


class TestBoundedCalls(OnBothBackends):
    """NodeIO.bounded: a call that overruns twice its timeout is cut off, nothing else is."""

    @staticmethod
    async def takes(seconds: float) -> str:
        await anyio.sleep(seconds)
        return "answer"

    async def test_a_call_within_twice_its_limit_returns_its_answer(self) -> None:
        io = Kit().io
        assert await io.bounded(0.05, self.takes(0.08)) == "answer"

    async def test_a_call_past_twice_its_limit_raises_timeout_error(self) -> None:
        io = Kit().io
        start = anyio.current_time()
        with pytest.raises(TimeoutError):
            await io.bounded(0.02, self.takes(3600))
        assert anyio.current_time() - start < 1.0
        # The net took its cancellation back: the task goes on unharmed.
        await anyio.sleep(0.01)

    async def test_a_call_past_its_bound_raises_timeout_error(self) -> None:
        io = Kit().io
        assert await io.within(0.05, self.takes(0.01)) == "answer"
        start = anyio.current_time()
        with pytest.raises(TimeoutError):
            await io.within(0.02, self.takes(3600))
        assert anyio.current_time() - start < 1.0
        await anyio.sleep(0.01)  # the task goes on unharmed

    async def test_a_cancellation_from_outside_goes_through(self) -> None:
        io = Kit().io
        with anyio.move_on_after(0.02) as outer:
            await io.bounded(1.0, self.takes(3600))
        assert outer.cancelled_caught

    async def test_the_calls_own_error_goes_through(self) -> None:
        io = Kit().io

        async def fail() -> None:
            await anyio.sleep(0.01)
            raise KeyError("own")

        with pytest.raises(KeyError):
            await io.bounded(1.0, fail())


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_bound_on_asyncio_cuts_off_a_call_hung_in_a_shielded_scope() -> None:
    """As ``asyncio.timeout`` does: an adapter's shield does not hold the node's bound off."""
    io = Kit().io
    reached: list[str] = []

    async def hung_in_a_shield() -> None:
        with anyio.CancelScope(shield=True):
            reached.append("shielded")
            await anyio.sleep(3600)

    start = anyio.current_time()
    with pytest.raises(TimeoutError):
        await io.within(0.02, hung_in_a_shield())
    assert reached == ["shielded"]
    assert anyio.current_time() - start < 1.0


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_net_whose_timer_runs_after_the_call_ended_does_nothing() -> None:
    """A loop may run a timer it held (the simulator's, for a frozen process) after its cancel."""
    import asyncio

    from standby.node._io import _Net

    task = asyncio.current_task()
    assert task is not None
    net = _Net(task, 10.0)
    net.close()
    net._fire()  # what the held timer would do
    assert not net.caught()
    await asyncio.sleep(0)  # not cancelled
    assert task.cancelling() == 0
