"""A primary accepting many workloads at once reads their epochs in batches (failure mode 19).

Before a replicated workload starts, its primary reads the relays for
claims, announcements and revocations of it. One read per workload, with
hundreds accepted at once, queued on each relay connection and missed the
read quorum; :class:`~standby.node._epochs.BatchedEpochReads` gathers the
callers of a moment into reads of at most ``MAX_BATCH`` workloads.
"""

from __future__ import annotations

import math
import time
from typing import Any

import anyio
import anyio.abc
import pytest
from _crash import ForwardingTransport
from _e2e import eventually
from _nostr_relays import backends
from hypothesis import given, settings
from hypothesis import strategies as st
from trio.testing import MockClock

from standby import PromotionClaim, SpawnRequest, Topology
from standby.adapters.memory import MemoryRelayNetwork, MemoryRuntime, RuntimeRecord
from standby.core._claim_reads import MAX_BATCH
from standby.node import StandbyNode
from standby.node._epochs import BatchedEpochReads, EpochsRead
from standby.protocols import PublishResult, Query, QueryResult

pytestmark = pytest.mark.anyio


@pytest.fixture(params=backends())
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


class HeldReads:
    """A read function whose answers wait until the test releases them."""

    def __init__(self, *, fail: bool = False) -> None:
        self.asked: list[set[str]] = []
        self.release = anyio.Event()
        self.fail = fail

    async def __call__(self, workloads: set[str]) -> EpochsRead:
        self.asked.append(set(workloads))
        await self.release.wait()
        if self.fail:
            raise RuntimeError("the relays went away")
        return EpochsRead(reached=True, answered=3, claimed=dict.fromkeys(workloads, 1))


async def read_all(
    reads: BatchedEpochReads, ids: list[str], held: HeldReads
) -> dict[str, EpochsRead | BaseException]:
    answers: dict[str, EpochsRead | BaseException] = {}

    async def one(workload_id: str) -> None:
        try:
            answers[workload_id] = await reads.read({workload_id})
        except RuntimeError as exc:
            answers[workload_id] = exc

    async with anyio.create_task_group() as group:
        for workload_id in ids:
            group.start_soon(one, workload_id)
        await anyio.wait_all_tasks_blocked()
        held.release.set()
    return answers


async def test_fm19_callers_of_one_moment_share_reads_of_at_most_a_batch() -> None:
    held = HeldReads()
    reads = BatchedEpochReads(held)
    ids = [f"w{i:04d}" for i in range(1_000)]
    answers = await read_all(reads, ids, held)
    assert len(held.asked) == math.ceil(len(ids) / MAX_BATCH)
    assert all(len(asked) <= MAX_BATCH for asked in held.asked)
    assert set().union(*held.asked) == set(ids)
    # Each caller gets the answer of the read that carried its own workload.
    for workload_id, answer in answers.items():
        assert isinstance(answer, EpochsRead)
        assert answer.reached
        assert answer.claimed[workload_id] == 1
    assert reads.reads == len(held.asked)


async def test_fm19_callers_arriving_while_reads_are_out_ride_the_next_batch() -> None:
    held = HeldReads()
    reads = BatchedEpochReads(held, batch_size=10, in_flight=1)
    answers: dict[str, EpochsRead] = {}

    async def one(workload_id: str) -> None:
        answers[workload_id] = await reads.read({workload_id})

    async with anyio.create_task_group() as group:
        for i in range(5):
            group.start_soon(one, f"early{i}")
        await anyio.wait_all_tasks_blocked()
        assert [len(asked) for asked in held.asked] == [5]
        for i in range(12):
            group.start_soon(one, f"late{i}")
        await anyio.wait_all_tasks_blocked()
        assert len(held.asked) == 1  # one read out at a time: the late ones wait, batched
        held.release.set()
    assert [len(asked) for asked in held.asked] == [5, 10, 2]
    assert len(answers) == 17
    assert all(answer.reached for answer in answers.values())


async def test_fm19_a_failed_batch_read_never_answers_reached() -> None:
    held = HeldReads(fail=True)
    reads = BatchedEpochReads(held)
    answers = await read_all(reads, [f"w{i}" for i in range(30)], held)
    errors = [a for a in answers.values() if isinstance(a, BaseException)]
    unreached = [a for a in answers.values() if isinstance(a, EpochsRead)]
    assert len(errors) == 1  # the caller whose read it was sees the error itself
    assert len(unreached) == 29
    assert not any(a.reached for a in unreached)
    # The next caller opens a fresh batch and gets a fresh read.
    held.fail, held.release = False, anyio.Event()
    held.release.set()
    again = await reads.read({"w0"})
    assert again.reached


async def test_fm19_a_cancelled_sender_leaves_its_batch_unreached() -> None:
    held = HeldReads()
    reads = BatchedEpochReads(held, in_flight=1)
    answers: dict[str, EpochsRead] = {}
    sender = anyio.CancelScope()

    async def one(workload_id: str, scope: anyio.CancelScope | None = None) -> None:
        with scope or anyio.CancelScope():
            answers[workload_id] = await reads.read({workload_id})

    async with anyio.create_task_group() as group:
        group.start_soon(one, "a")  # its read goes out (and is held)
        await anyio.wait_all_tasks_blocked()
        group.start_soon(one, "b", sender)  # opens the next batch, waits for its turn
        await anyio.wait_all_tasks_blocked()
        group.start_soon(one, "c")  # joins b's batch
        await anyio.wait_all_tasks_blocked()
        sender.cancel()
        await anyio.wait_all_tasks_blocked()
        held.release.set()
    assert held.asked == [{"a"}]  # b's batch was never read
    assert answers["a"].reached
    assert "b" not in answers  # cancelled
    assert not answers["c"].reached


def test_batch_size_and_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        BatchedEpochReads(HeldReads(), batch_size=0)
    with pytest.raises(ValueError, match="at least 1"):
        BatchedEpochReads(HeldReads(), in_flight=0)


class CountingTransport(ForwardingTransport):
    """Counts the epoch reads (queries asking for revocations) that reach the relays,
    and the order of those reads and the primary's epoch-0 claims."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.epoch_reads: list[int] = []
        self.order: list[str] = []

    async def query(self, query: Query, *, timeout: float) -> QueryResult:  # noqa: ASYNC109
        if "revocation" in query.kinds and query.workload_ids:
            self.epoch_reads.append(len(query.workload_ids))
            self.order.append("read")
        return await super().query(query, timeout=timeout)

    async def publish(self, message: Any, *, timeout: float) -> PublishResult:  # noqa: ASYNC109
        if isinstance(message, PromotionClaim) and message.epoch == 0:
            self.order.append("claim0")
        return await super().publish(message, timeout=timeout)


async def test_fm19_a_primary_accepting_1000_workloads_reads_their_epochs_in_batches() -> None:
    network = MemoryRelayNetwork(3)
    transport = CountingTransport(network.transport("prime"))
    runtime = MemoryRuntime("prime", record=RuntimeRecord())
    node: StandbyNode[Any] = StandbyNode(transport=transport, runtime=runtime)
    # Without batching: one read per workload (1,000); with it, one per batch.
    ids = [f"w{i:04d}" for i in range(1_000)]
    now = time.time()
    topology = Topology(primary="prime", standbys=("sb0", "sb1"))
    accepted: list[str] = []

    async def accept(request: SpawnRequest[Any]) -> None:
        if await node.accept(request):
            accepted.append(request.workload_id)

    async with node, anyio.create_task_group() as group:
        for workload_id in ids:
            request = SpawnRequest(
                workload_id=workload_id,
                topology=topology,
                spec={"image": "w"},
                owner="bench",
                expires_at=now + 3600,
                created_at=now,
            )
            group.start_soon(accept, request)
    assert sorted(accepted) == ids  # each started here as primary
    assert sum(transport.epoch_reads) == len(ids)
    assert len(transport.epoch_reads) <= 2 * math.ceil(len(ids) / MAX_BATCH)


async def test_fm19_the_epoch0_claims_of_many_accepts_wait_for_their_epoch_reads() -> None:
    """On a relay connection served in order, a read sent after 800 claims waits for
    all of them: the primary's epoch-0 claims (nothing waits for them) go after
    the epoch reads its accepts are waiting for."""
    network = MemoryRelayNetwork(3)
    transport = CountingTransport(network.transport("prime"))
    node: StandbyNode[Any] = StandbyNode(
        transport=transport, runtime=MemoryRuntime("prime", record=RuntimeRecord())
    )
    now = time.time()
    topology = Topology(primary="prime", standbys=("sb0", "sb1"))
    async with node, anyio.create_task_group() as group:
        for i in range(1_000):
            request = SpawnRequest(
                workload_id=f"w{i:04d}",
                topology=topology,
                spec={"image": "w"},
                owner="bench",
                expires_at=now + 3600,
                created_at=now,
            )
            group.start_soon(node.accept, request)
        assert await eventually(lambda: transport.order.count("claim0") == 1_000, 60, 0.01)
    reads = transport.order.count("read")
    assert reads >= math.ceil(1_000 / MAX_BATCH)
    assert transport.order[:reads] == ["read"] * reads  # every read before any claim


# --------------------------------------------------------------------------- property


@settings(max_examples=60, deadline=None)
@given(
    arrivals=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=8),
    batch_size=st.integers(min_value=1, max_value=30),
    in_flight=st.integers(min_value=1, max_value=4),
    read_time=st.integers(min_value=0, max_value=3),
    backend=st.sampled_from(["trio", "asyncio"]),
)
def test_fm19_every_caller_gets_the_answer_of_a_read_that_carried_its_workload(
    arrivals: list[int], batch_size: int, in_flight: int, read_time: int, backend: str
) -> None:
    """Callers arrive in waves (one wave a virtual second) while reads take ``read_time``."""
    asked: list[set[str]] = []
    scale = 1.0 if backend == "trio" else 0.0  # asyncio: no virtual clock, checkpoints only

    async def read(workloads: set[str]) -> EpochsRead:
        asked.append(set(workloads))
        number = len(asked)
        await anyio.sleep(read_time * scale)
        return EpochsRead(reached=True, claimed=dict.fromkeys(workloads, number))

    async def run() -> dict[str, tuple[int, EpochsRead]]:
        reads = BatchedEpochReads(read, batch_size=batch_size, in_flight=in_flight)
        answers: dict[str, tuple[int, EpochsRead]] = {}

        async def one(workload_id: str) -> None:
            answers[workload_id] = (len(asked), await reads.read({workload_id}))

        async with anyio.create_task_group() as group:
            for wave, count in enumerate(arrivals):
                for i in range(count):
                    group.start_soon(one, f"w{wave}-{i}")
                await anyio.sleep(scale)
        return answers

    options = {"clock": MockClock(autojump_threshold=0)} if backend == "trio" else {}
    answers = anyio.run(run, backend=backend, backend_options=options)
    assert len(answers) == sum(arrivals)
    assert all(len(workloads) <= batch_size for workloads in asked)
    assert sum(len(workloads) for workloads in asked) == sum(arrivals)  # one read each
    for workload_id, (reads_before, answer) in answers.items():
        assert answer.reached
        number = answer.claimed[workload_id]  # the read that carried it...
        assert workload_id in asked[number - 1]
        assert number > reads_before  # ...was sent after the caller asked
