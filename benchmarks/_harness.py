"""What the benchmarks over real relays and stores share.

Importing it puts ``tests/`` on ``sys.path`` (the benchmarks start the
servers the test suite starts). Then:

* :func:`median_ms`, :func:`wait_for`: figures and polling;
* :func:`request`: a consumer's request for one workload;
* :func:`round_trips`: publish -> receive and query latencies between two
  transports;
* :class:`Provider`: one node with a :class:`MemoryRuntime` on a real
  transport, and the instants its events tell; :func:`nostr_provider` makes
  one on Nostr relays;
* :func:`handovers` and :func:`crashes`: graceful and crash failovers of
  providers made by a benchmark's own factory, timed from those events.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _e2e import eventually

from standby import PromotionClaim, Timing, Topology, fencing_token
from standby.adapters.memory import MemoryRuntime, RuntimeRecord
from standby.adapters.nostr import NostrKeys, NostrTransport
from standby.core import Phase
from standby.node import (
    ContainerStarting,
    HeartbeatPublished,
    NodeEvent,
    SlotPhaseChanged,
    SpawnRequest,
    StandbyNode,
)
from standby.protocols import Query

#: Crashes measured at once (the standbys serve every crashed workload concurrently).
CRASH_BATCH = 2
#: Round trips measured before the ones that count.
WARM_UP = 2


def median_ms(values: list[float]) -> float:
    """The median of ``values`` (seconds), in milliseconds."""
    return statistics.median(values) * 1000


async def wait_for(predicate: Callable[[], bool], within: float, what: str) -> None:
    """Give up the benchmark unless ``predicate`` holds within ``within`` s."""
    if not await eventually(predicate, within, step=0.002):
        raise SystemExit(f"timed out after {within}s waiting for {what}")


def request(
    workload_id: str, primary: str, standbys: Sequence[str], now: float
) -> SpawnRequest[Any]:
    """A request for ``workload_id`` on ``primary`` and ``standbys``, made at ``now``."""
    return SpawnRequest(
        workload_id=workload_id,
        topology=Topology(primary=primary, standbys=tuple(standbys)),
        spec={"image": "bench:1"},
        owner="bench",
        expires_at=now + 3600,
        created_at=now,
    )


def last_heartbeat(events: Iterable[NodeEvent], timing: Timing) -> float:
    """When the latest heartbeat in ``events`` that reached a write quorum was stamped."""
    return max(
        e.timestamp
        for e in events
        if isinstance(e, HeartbeatPublished) and len(e.acked) >= timing.write_quorum
    )


# --------------------------------------------------------------------------- transport latencies


async def round_trips(
    alice: Any, bob: Any, runs: int, query_kinds: set[str]
) -> dict[str, list[float]]:
    """``runs`` claims from ``alice`` to ``bob``'s subscription, each then queried by ``bob``.

    Seconds from the publish to bob's subscription yielding it
    (``receive``), to every relay's acknowledgement (``publish``), and of
    bob's query of the workload's ``query_kinds`` (``query``); every relay
    must acknowledge and answer.
    """
    out: dict[str, list[float]] = {"receive": [], "publish": [], "query": []}
    subscription = bob.subscribe(Query(kinds={"claim"}, authors={alice.identity}))
    try:
        for run in range(runs + WARM_UP):
            workload = f"bench-{uuid.uuid4().hex[:10]}"
            claim = PromotionClaim(
                workload_id=workload,
                epoch=1,
                fencing_token=fencing_token(1, 0),
                claimant=alice.identity,
                standby_index=0,
                claimed_at=time.time(),
            )
            published: list[float] = []
            started = time.perf_counter()

            async def publish(claim: PromotionClaim = claim, published: Any = published) -> None:
                result = await alice.publish(claim, timeout=2.0)
                assert len(result.acked) == alice.relay_count, result
                published.append(time.perf_counter())

            async with anyio.create_task_group() as group:
                group.start_soon(publish)
                with anyio.fail_after(5):
                    while True:
                        envelope = await subscription.__anext__()
                        if envelope.message == claim:
                            received = time.perf_counter()
                            break
            query_started = time.perf_counter()
            result = await bob.query(Query(kinds=query_kinds, workload_ids={workload}), timeout=2.0)
            queried = time.perf_counter()
            assert len(result.answered) == bob.relay_count, result
            if run >= WARM_UP:
                out["receive"].append(received - started)
                out["publish"].append(published[0] - started)
                out["query"].append(queried - query_started)
    finally:
        await subscription.aclose()
    return out


# --------------------------------------------------------------------------- nodes


class Provider:
    """One provider: a node on the transport ``connect()`` opens, a :class:`MemoryRuntime`.

    ``identity`` is how requests name it; the node keeps its events in
    :attr:`events`, saves to ``store`` when given, and stops (as its host
    dying would) when :attr:`scope` is cancelled.
    """

    def __init__(
        self,
        name: str,
        record: RuntimeRecord,
        *,
        identity: str,
        connect: Callable[[], AbstractAsyncContextManager[Any]],
        timing: Timing,
        store: Any = None,
    ) -> None:
        self.name = name
        self.identity = identity
        self.connect = connect
        self.timing = timing
        self.store = store
        self.runtime = MemoryRuntime(name, record=record)
        self.events: list[NodeEvent] = []
        self.transport: Any = None
        self.node: StandbyNode[Any] | None = None
        self.scope = anyio.CancelScope()

    async def launch(self, group: anyio.abc.TaskGroup) -> None:
        """Start the node in ``group``; return once it runs."""

        async def run(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            with self.scope:
                async with self.connect() as transport:
                    self.transport = transport
                    async with StandbyNode(
                        transport=transport,
                        runtime=self.runtime,
                        store=self.store,
                        timing=self.timing,
                        on_event=self.events.append,
                    ) as node:
                        self.node = node
                        task_status.started()
                        await anyio.sleep_forever()

        await group.start(run)

    async def accept(self, workload_id: str, primary: Provider, standbys: list[Provider]) -> None:
        """This node accepts ``workload_id`` on ``primary`` and ``standbys``."""
        assert self.node is not None
        ids = [s.identity for s in standbys]
        await self.node.accept(request(workload_id, primary.identity, ids, time.time()))

    def starting_at(self, workload_id: str) -> float | None:
        """When this node started spawning ``workload_id``, if it did."""
        for event in self.events:
            if isinstance(event, ContainerStarting) and event.workload_id == workload_id:
                return event.at
        return None

    def confirmed_at(self, workload_id: str) -> float | None:
        """When this node confirmed the primary of ``workload_id`` silent, if it did."""
        for event in self.events:
            if (
                isinstance(event, SlotPhaseChanged)
                and event.workload_id == workload_id
                and event.old is Phase.CONFIRMING
                and event.new is not Phase.WATCHING
            ):
                return event.at
        return None

    def last_heartbeat(self) -> float:
        """When this node's latest heartbeat that reached a write quorum was stamped."""
        return last_heartbeat(self.events, self.timing)


@contextlib.asynccontextmanager
async def nostr_connected(urls: list[str], keys: NostrKeys) -> AsyncIterator[NostrTransport]:
    """A transport to every relay of ``urls``, once it is connected."""
    async with NostrTransport(urls, keys) as transport:
        await transport.wait_connected(timeout=5)
        yield transport


def nostr_provider(
    name: str, record: RuntimeRecord, urls: list[str], timing: Timing, store: Any = None
) -> Provider:
    """A provider with fresh keys on the relays of ``urls``."""
    keys = NostrKeys.generate()
    return Provider(
        name,
        record,
        identity=keys.npub,
        connect=lambda: nostr_connected(urls, keys),
        timing=timing,
        store=store,
    )


#: Makes a benchmark's provider: its name and the runtime record of the run.
Factory = Callable[[str, RuntimeRecord], Provider]


async def handovers(make: Factory, runs: int) -> list[float]:
    """Seconds from ``handover()`` on the primary until standby 0 starts spawning."""
    record = RuntimeRecord()
    primary, *standbys = [make(n, record) for n in ("primary", "sb0", "sb1")]
    took: list[float] = []
    async with anyio.create_task_group() as group:
        for provider in (primary, *standbys):
            await provider.launch(group)
        for _run in range(runs):
            workload = f"handover-{uuid.uuid4().hex[:10]}"
            for provider in (primary, *standbys):
                await provider.accept(workload, primary, standbys)
            await wait_for(
                lambda w=workload: bool(primary.runtime.running(w)), 5, "the primary to start"
            )
            await anyio.sleep(0.2)
            assert primary.node is not None
            started = time.time()
            await primary.node.handover(workload)
            await wait_for(
                lambda w=workload: standbys[0].starting_at(w) is not None, 5, "the handover"
            )
            at = standbys[0].starting_at(workload)
            assert at is not None
            took.append(at - started)
        group.cancel_scope.cancel()
    return took


async def crashes(make: Factory, runs: int) -> tuple[list[float], list[float]]:
    """Seconds from a crashed primary's last heartbeat until standby 0 confirms, and spawns."""
    record = RuntimeRecord()
    standbys = [make(n, record) for n in ("sb0", "sb1")]
    timing = standbys[0].timing
    confirm: list[float] = []
    spawn: list[float] = []
    async with anyio.create_task_group() as group:
        for provider in standbys:
            await provider.launch(group)
        done = 0
        while done < runs:
            batch = min(CRASH_BATCH, runs - done)
            primaries = [make(f"primary-{done + i}", record) for i in range(batch)]
            workloads = [f"crash-{uuid.uuid4().hex[:10]}" for _ in primaries]
            for primary, workload in zip(primaries, workloads, strict=True):
                await primary.launch(group)
                for provider in (primary, *standbys):
                    await provider.accept(workload, primary, standbys)
            for primary, workload in zip(primaries, workloads, strict=True):
                await wait_for(
                    lambda p=primary, w=workload: bool(p.runtime.running(w)), 5, "a primary"
                )
            await anyio.sleep(1.5 * timing.heartbeat_interval)
            for primary in primaries:
                primary.runtime.crash()
                primary.scope.cancel()
            for workload in workloads:
                await wait_for(
                    lambda w=workload: standbys[0].starting_at(w) is not None,
                    timing.silence * 3,
                    "a failover",
                )
            for primary, workload in zip(primaries, workloads, strict=True):
                last = primary.last_heartbeat()
                confirmed = standbys[0].confirmed_at(workload)
                starting = standbys[0].starting_at(workload)
                assert confirmed is not None
                assert starting is not None
                confirm.append(confirmed - last)
                spawn.append(starting - last)
            done += batch
        group.cancel_scope.cancel()
    return confirm, spawn
