"""Where a provider's own code and data meet the node (failure mode 22, typed errors).

A malformed request is refused before anything is registered, one record
that cannot be saved never stops the others, and a single error raised in
``async with`` comes out as itself, not wrapped in an exception group.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from standby import (
    InvalidRequest,
    NodeError,
    NodeMisuse,
    NotAddressedError,
    QuorumUnavailable,
    RequestRefused,
    RetryLater,
    SpawnError,
    StandbyError,
    StandbySlot,
    Timing,
    Topology,
)
from standby.adapters._transport_base import TransportBase
from standby.adapters.files._store import JsonFileStore
from standby.adapters.memory import MemoryRelayNetwork, MemoryRuntime
from standby.adapters.process import ProcessRuntime
from standby.node import SpawnRequest, StandbyNode, WorkloadCannotStart
from standby.protocols import ChecksSpecs

pytestmark = pytest.mark.anyio

EPOCH = 1_700_000_000.0
TOPOLOGY = Topology("prime", ("sb0", "sb1"))


def wall() -> float:
    return EPOCH + anyio.current_time()


def request(workload_id: str = "w1", **changes: Any) -> SpawnRequest[Any]:
    fields: dict[str, Any] = {
        "workload_id": workload_id,
        "topology": TOPOLOGY,
        "spec": {"image": "app:1"},
        "owner": "consumer",
        "expires_at": wall() + 86_400.0,
    }
    fields.update(changes)
    return SpawnRequest(**fields)


# ----------------------------------------------------------------------
# Failure mode 22: accept is all or nothing
# ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"expires_at": "tomorrow"}, "expires_at"),
        ({"expires_at": float("inf")}, "expires_at"),
        ({"expires_at": float("nan")}, "expires_at"),
        ({"expires_at": True}, "expires_at"),
        ({"created_at": "now"}, "created_at"),
        ({"created_at": EPOCH + 10**9}, "created_at"),
        ({"workload_id": ""}, "workload_id"),
        ({"workload_id": 7}, "workload_id"),
        ({"owner": None}, "owner"),
        ({"topology": ("prime", ("sb0",))}, "topology"),
        ({"restart": "always"}, "restart"),
        ({"spec_id": ""}, "spec_id"),
    ],
)
def test_fm22_a_malformed_request_is_refused_when_it_is_built(
    changes: dict[str, Any], field: str
) -> None:
    fields: dict[str, Any] = {
        "workload_id": "w1",
        "topology": TOPOLOGY,
        "spec": {},
        "owner": "consumer",
        "expires_at": EPOCH + 86_400.0,
        **changes,
    }
    with pytest.raises(InvalidRequest) as info:
        SpawnRequest(**fields)
    assert info.value.field == field
    assert field in str(info.value)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, StandbyError)


# A file store saves in a worker thread, and a virtual clock jumps to the next
# deadline while every task waits for it: this one runs on a real clock.
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_fm22_a_spec_the_store_cannot_save_is_refused_and_leaves_no_trace(
    tmp_path: Path,
) -> None:
    network = MemoryRelayNetwork(3, wall_clock=wall)
    store: JsonFileStore[Any] = JsonFileStore(tmp_path / "sb0.json")
    node: StandbyNode[Any] = StandbyNode(
        transport=network.transport("sb0"),
        runtime=MemoryRuntime("sb0", wall_clock=wall),
        store=store,
        timing=Timing(),
        wall_clock=wall,
    )
    async with node:
        with pytest.raises(InvalidRequest) as info:
            await node.accept(request("bad", spec={"image": object()}))
        assert info.value.field == "spec"
        assert "bad" not in node.election.slots  # nothing registered in memory
        # the node goes on persisting every good request
        await node.accept(request("good-1"))
        await node.accept(request("good-2"))
        await node.flush()
        assert node.status().slot("bad") is None
    saved = JsonFileStore[Any](tmp_path / "sb0.json").load_sync()
    assert sorted(s.workload_id for s in saved) == ["good-1", "good-2"]


def test_fm22_one_slot_that_cannot_be_encoded_never_stops_the_others(tmp_path: Path) -> None:
    store: JsonFileStore[Any] = JsonFileStore(tmp_path / "state.json")

    def slot(workload_id: str, spec: Any) -> StandbySlot[Any]:
        return StandbySlot.reserve(
            me="sb0",
            workload_id=workload_id,
            topology=TOPOLOGY,
            spec=spec,
            owner="consumer",
            created_at=EPOCH,
            expires_at=EPOCH + 86_400.0,
        )

    bad = slot("bad", {"when": {1, 2}})  # a set is not JSON
    with pytest.raises(StandbyError, match="bad"):
        store.check_slot(bad)
    kept = store.save_sync([slot("a", {"n": 1}), bad, slot("b", {"n": 2})])
    assert kept == ["bad"]  # kept in memory only, and said so
    document = json.loads((tmp_path / "state.json").read_text())
    assert sorted(s["workload_id"] for s in document["slots"]) == ["a", "b"]


# ----------------------------------------------------------------------
# Errors a host can act on
# ----------------------------------------------------------------------


def test_node_errors_come_in_three_kinds_a_host_can_act_on() -> None:
    assert issubclass(QuorumUnavailable, RetryLater)
    for kind in (RetryLater, RequestRefused, NodeMisuse):
        assert issubclass(kind, NodeError)
    assert issubclass(NotAddressedError, RequestRefused)
    missed = QuorumUnavailable(
        "workload 'w1': its epoch is unknown",
        answered=1,
        needed=2,
        reasons={"relay-2": "timed out", "relay-1": "down"},
    )
    assert missed.reasons == {"relay-1": "down", "relay-2": "timed out"}
    assert "relay-1: down" in str(missed)
    assert "1 of the 2 relays needed answered" in str(missed)


async def test_a_host_misusing_the_node_gets_node_misuse() -> None:
    network = MemoryRelayNetwork(3, wall_clock=wall)
    node: StandbyNode[Any] = StandbyNode(
        transport=network.transport("sb0"),
        runtime=MemoryRuntime("sb0", wall_clock=wall),
        timing=Timing(),
        wall_clock=wall,
    )
    with pytest.raises(NodeMisuse, match="not running"):
        await node.accept(request())
    async with node:
        with pytest.raises(NodeMisuse, match="does not run here"):
            await node.handover("w1")


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_an_error_inside_async_with_comes_out_unwrapped() -> None:
    network = MemoryRelayNetwork(3)
    node: StandbyNode[Any] = StandbyNode(
        transport=network.transport("sb0"), runtime=MemoryRuntime("sb0"), timing=Timing()
    )
    with pytest.raises(KeyError, match="the host's own bug"):
        async with node:
            raise KeyError("the host's own bug")


class Busy(TransportBase):
    """A transport with a background task, as the relay transports have."""

    def _started(self, group: anyio.abc.TaskGroup) -> None:
        group.start_soon(anyio.sleep_forever)


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_an_error_inside_a_transports_async_with_comes_out_unwrapped() -> None:
    with pytest.raises(LookupError, match="inside the transport"):
        async with Busy():
            raise LookupError("inside the transport")


# ----------------------------------------------------------------------
# Failure mode 24: a spec that can never start is refused at accept
# ----------------------------------------------------------------------


async def test_fm24_a_spec_that_can_never_start_is_refused_on_both_sides() -> None:
    network = MemoryRelayNetwork(3, wall_clock=wall)
    nodes: dict[str, StandbyNode[Any]] = {}
    for name in ("prime", "sb0"):
        runtime = MemoryRuntime(name, wall_clock=wall)
        runtime.never_starts("w1", "executable '/opt/app' not found")
        nodes[name] = StandbyNode(
            transport=network.transport(name), runtime=runtime, timing=Timing(), wall_clock=wall
        )
    async with nodes["prime"] as prime, nodes["sb0"] as sb0:
        for node in (prime, sb0):
            with pytest.raises(RequestRefused, match="can never start here") as info:
                await node.accept(request("w1"))
            assert info.value.workload_id == "w1"
        assert sb0.status().slot("w1") is None
        assert prime.status().primary("w1") is None
        # another workload on the same nodes is accepted as usual
        assert (await sb0.accept(request("w2"))).index == 0  # type: ignore[union-attr]
        assert sb0.status().slot("w2") is not None


async def test_fm24_the_process_runtime_checks_a_spec_without_starting_it(tmp_path: Path) -> None:
    runtime = ProcessRuntime(tmp_path / "runs", provider="p")
    assert isinstance(runtime, ChecksSpecs)
    await runtime.check_spec({"argv": ["true"]}, workload_id="ok")
    with pytest.raises(SpawnError, match="not found"):
        await runtime.check_spec({"argv": ["/no/such/program"]}, workload_id="missing")
    with pytest.raises(SpawnError, match="argv"):
        await runtime.check_spec({"argv": "true"}, workload_id="a-string")
    assert await runtime.list() == []
    assert not any((tmp_path / "runs").glob("*/*"))  # no run directory was made


async def test_fm24_a_workload_that_fails_every_spawn_reaches_a_final_state_everywhere() -> None:
    """The loop of claim, failed spawn, withdraw ends: each standby gives up and says so."""
    network = MemoryRelayNetwork(3, wall_clock=wall)
    names = ("prime", "sb0", "sb1")
    events: dict[str, list[Any]] = {name: [] for name in names}
    runtimes = {name: MemoryRuntime(name, wall_clock=wall) for name in names}
    for runtime in runtimes.values():
        runtime.fail_spawns(10_000, workload_id="w1", error="exec: /opt/app: not found")
    timing = Timing()
    async with anyio.create_task_group() as group:
        nodes: dict[str, StandbyNode[Any]] = {}
        for name in names:
            node: StandbyNode[Any] = StandbyNode(
                transport=network.transport(name),
                runtime=runtimes[name],
                timing=timing,
                wall_clock=wall,
                on_event=events[name].append,
            )
            nodes[name] = await group.start(node.run)
        for name in ("sb0", "sb1", "prime"):
            await nodes[name].accept(request("w1"))
        await anyio.sleep(40 * timing.silence)
        per_standby = timing.max_spawn_rounds * timing.max_spawn_attempts
        for name in ("sb0", "sb1"):
            (gave_up,) = [e for e in events[name] if isinstance(e, WorkloadCannotStart)]
            assert gave_up.workload_id == "w1"
            assert gave_up.attempts == per_standby
            assert gave_up.error is not None
            assert "not found" in gave_up.error
            assert nodes[name].status().slot("w1") is None
            assert len(runtimes[name].record.of_kind("spawn-failed", "w1")) == per_standby
        failed = len(runtimes["sb0"].record.of_kind("spawn-failed", "w1"))
        await anyio.sleep(20 * timing.silence)  # nothing tries again: a final state
        assert len(runtimes["sb0"].record.of_kind("spawn-failed", "w1")) == failed
        group.cancel_scope.cancel()


async def test_fm24_a_re_accept_of_a_held_slot_asks_the_runtime_nothing() -> None:
    """Only a request that would reserve or start is checked: a re-sent one is idempotent."""
    network = MemoryRelayNetwork(3, wall_clock=wall)
    runtime = MemoryRuntime("sb0", wall_clock=wall)
    node: StandbyNode[Any] = StandbyNode(
        transport=network.transport("sb0"), runtime=runtime, timing=Timing(), wall_clock=wall
    )
    async with node:
        await node.accept(request("w1"))
        runtime.never_starts("w1")  # the runtime would refuse it now
        assert (await node.accept(request("w1"))).index == 0  # type: ignore[union-attr]
        assert node.status().slot("w1") is not None
