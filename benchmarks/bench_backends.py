"""Failover over the consistent stores: etcd (3 members) and Redis, measured side by side.

Starts what the test suite starts (a 3-member etcd cluster with auth on
127.0.0.1, a ``redis-server`` bound to 127.0.0.1) and measures, with real
sockets and real time, for each store:

* **round trip**: one linearizable read of the claims of a workload
  (``query``), and a publish until another provider's subscription yields it
  (``publish -> receive``);
* **graceful handover**: ``StandbyNode.handover()`` on the primary until the
  first standby calls ``spawn`` (goal: within 3x ``publish -> receive`` of the
  same run; atomic claims need no ``claim_settle`` wait);
* **crash failover** of standby 0: from the primary's last acknowledged
  heartbeat until the standby confirms the silence, and until it calls
  ``spawn`` (the spawn itself excluded), divided by the configured silence
  (goal: at most 1.01).

Medians over ``--runs`` runs. The timing is the one of
``tests/test_nostr_e2e.py`` (silence 4 s) with one relay and quorums of 1.

    python benchmarks/bench_backends.py [--runs 10] [--backend asyncio|trio] [--only etcd|redis]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _etcd import EtcdCluster
from _redis import RedisServer

from standby import Phase, PromotionClaim, Timing, Topology, fencing_token
from standby.adapters.etcd import EtcdTransport
from standby.adapters.memory import MemoryRuntime, RuntimeRecord
from standby.adapters.redis import RedisTransport
from standby.node import (
    ContainerStarting,
    HeartbeatPublished,
    NodeEvent,
    SlotPhaseChanged,
    SpawnRequest,
    StandbyNode,
)
from standby.protocols import Query

TIMING = Timing(
    heartbeat_interval=1.0,
    lease=3.0,
    fence_grace=0.5,
    max_clock_skew=0.5,
    silence=4.0,
    promotion_delay=1.0,
    suspect_after=1.5,
    claim_timeout=0.7,
    claim_settle=0.9,
    query_timeout=0.3,
    retry_interval=0.5,
    spawn_timeout=0.5,
    spawn_retry_backoff=0.5,
    relay_count=1,
    write_quorum=1,
)
#: Crashes measured at once (the standbys serve every crashed workload concurrently).
CRASH_BATCH = 2

Factory = Callable[[str], Any]


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


async def wait_for(predicate: Callable[[], bool], within: float, what: str) -> None:
    with anyio.move_on_after(within):
        while not predicate():  # noqa: ASYNC110 - polls state other tasks change
            await anyio.sleep(0.002)
    if not predicate():
        raise SystemExit(f"timed out after {within}s waiting for {what}")


# --------------------------------------------------------------------------- stores


class Store:
    """Accounts on one store and transports for them."""

    def __init__(self, name: str, provision: Callable[[str], tuple[str, str]], make: Any) -> None:
        self.name = name
        self._provision = provision
        self._make = make

    def transport(self, label: str) -> Any:
        user, password = self._provision(label)
        return self._make(user, password)


@contextlib.contextmanager
def etcd_store(directory: Path) -> Iterator[Store]:
    cluster = EtcdCluster(directory / "etcd")
    try:
        cluster.start()
        cluster.wait_healthy()
        cluster.enable_auth()
        prefix = f"/bench/{uuid.uuid4().hex[:8]}/"

        def make(user: str, password: str) -> EtcdTransport:
            return EtcdTransport(
                cluster.endpoints, user=user, password=password, prefix=prefix, name="etcd"
            )

        yield Store("etcd (3 members)", lambda label: cluster.provider(label, prefix), make)
    finally:
        cluster.stop_all()


@contextlib.contextmanager
def redis_store(directory: Path) -> Iterator[Store]:
    server = RedisServer(directory / "redis")
    try:
        server.start()
        prefix = f"bench-{uuid.uuid4().hex[:8]}"

        def make(user: str, password: str) -> RedisTransport:
            return RedisTransport(
                "127.0.0.1", server.port, user=user, password=password, prefix=prefix, name="redis"
            )

        yield Store("redis", lambda label: server.provider(label, prefix), make)
    finally:
        server.stop()


# --------------------------------------------------------------------------- transport latencies


async def transport_latencies(store: Store, runs: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"receive": [], "query": []}
    async with store.transport("alice") as alice, store.transport("bob") as bob:
        subscription = bob.subscribe(Query(kinds={"claim"}, authors={alice.identity}))
        try:
            for run in range(runs + 2):  # the first two warm up
                workload = f"bench-{uuid.uuid4().hex[:10]}"
                claim = PromotionClaim(
                    workload_id=workload,
                    epoch=1,
                    fencing_token=fencing_token(1, 0),
                    claimant=alice.identity,
                    standby_index=0,
                    claimed_at=time.time(),
                )
                started = time.perf_counter()

                async def publish(claim: PromotionClaim = claim) -> None:
                    result = await alice.publish(claim, timeout=2.0)
                    assert result.acked, result

                async with anyio.create_task_group() as group:
                    group.start_soon(publish)
                    with anyio.fail_after(5):
                        while True:
                            envelope = await subscription.__anext__()
                            if envelope.message == claim:
                                received = time.perf_counter()
                                break
                query_started = time.perf_counter()
                result = await bob.query(
                    Query(kinds={"claim", "announcement"}, workload_ids={workload}), timeout=2.0
                )
                queried = time.perf_counter()
                assert result.answered, result
                if run >= 2:
                    out["receive"].append(received - started)
                    out["query"].append(queried - query_started)
        finally:
            await subscription.aclose()
    return out


# --------------------------------------------------------------------------- nodes


class Provider:
    def __init__(self, label: str, store: Store, record: RuntimeRecord) -> None:
        self.transport = store.transport(label)
        self.runtime = MemoryRuntime(label, record=record)
        self.events: list[NodeEvent] = []
        self.node: StandbyNode[Any] | None = None
        self.scope = anyio.CancelScope()

    @property
    def identity(self) -> str:
        return str(self.transport.identity)

    async def launch(self, group: anyio.abc.TaskGroup) -> None:
        async def run(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            with self.scope:
                async with (
                    self.transport,
                    StandbyNode(
                        transport=self.transport,
                        runtime=self.runtime,
                        timing=TIMING,
                        on_event=self.events.append,
                    ) as node,
                ):
                    self.node = node
                    task_status.started()
                    await anyio.sleep_forever()

        await group.start(run)

    def starting_at(self, workload_id: str) -> float | None:
        for event in self.events:
            if isinstance(event, ContainerStarting) and event.workload_id == workload_id:
                return event.at
        return None

    def confirmed_at(self, workload_id: str) -> float | None:
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
        stamps = [
            e.timestamp
            for e in self.events
            if isinstance(e, HeartbeatPublished) and len(e.acked) >= TIMING.write_quorum
        ]
        return max(stamps)


def request(workload_id: str, primary: Provider, standbys: list[Provider]) -> SpawnRequest[Any]:
    return SpawnRequest(
        workload_id=workload_id,
        topology=Topology(primary=primary.identity, standbys=tuple(s.identity for s in standbys)),
        spec={"image": "bench:1"},
        owner="bench",
        expires_at=time.time() + 3600,
        created_at=time.time(),
    )


async def handovers(store: Store, runs: int) -> list[float]:
    record = RuntimeRecord()
    primary, *standbys = [Provider(n, store, record) for n in ("primary", "sb0", "sb1")]
    took: list[float] = []
    async with anyio.create_task_group() as group:
        for provider in (primary, *standbys):
            await provider.launch(group)
        for _run in range(runs):
            workload = f"handover-{uuid.uuid4().hex[:10]}"
            for provider in (primary, *standbys):
                assert provider.node is not None
                await provider.node.accept(request(workload, primary, standbys))
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


async def crashes(store: Store, runs: int) -> tuple[list[float], list[float]]:
    record = RuntimeRecord()
    standbys = [Provider(n, store, record) for n in ("sb0", "sb1")]
    confirm: list[float] = []
    spawn: list[float] = []
    async with anyio.create_task_group() as group:
        for provider in standbys:
            await provider.launch(group)
        done = 0
        while done < runs:
            batch = min(CRASH_BATCH, runs - done)
            primaries = [Provider(f"primary-{done + i}", store, record) for i in range(batch)]
            workloads = [f"crash-{uuid.uuid4().hex[:10]}" for _ in primaries]
            for primary, workload in zip(primaries, workloads, strict=True):
                await primary.launch(group)
                for provider in (primary, *standbys):
                    assert provider.node is not None
                    await provider.node.accept(request(workload, primary, standbys))
            for primary, workload in zip(primaries, workloads, strict=True):
                await wait_for(
                    lambda p=primary, w=workload: bool(p.runtime.running(w)), 5, "a primary"
                )
            await anyio.sleep(1.5 * TIMING.heartbeat_interval)
            for primary in primaries:
                primary.runtime.crash()
                primary.scope.cancel()
            for workload in workloads:
                await wait_for(
                    lambda w=workload: standbys[0].starting_at(w) is not None,
                    TIMING.silence * 3,
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


# --------------------------------------------------------------------------- report


async def bench(store: Store, runs: int) -> list[tuple[str, str, bool | None]]:
    latencies = await transport_latencies(store, runs)
    receive = median_ms(latencies["receive"])
    query = median_ms(latencies["query"])
    handover = median_ms(await handovers(store, runs))
    confirm, spawn = await crashes(store, runs)
    silence_ms = TIMING.silence * 1000
    confirm_ratio = median_ms(confirm) / silence_ms
    spawn_ratio = median_ms(spawn) / silence_ms
    return [
        ("query (claims of a workload)", f"{query:.1f} ms", None),
        ("publish -> receive (subscription)", f"{receive:.1f} ms", None),
        (
            "handover -> spawn call",
            f"{handover:.1f} ms = {handover / receive:.2f} x receive (goal <= 3)",
            handover <= 3 * receive,
        ),
        (
            "crash: last heartbeat -> silence confirmed",
            f"{median_ms(confirm):.0f} ms = {confirm_ratio:.4f} x silence",
            None,
        ),
        (
            "crash: last heartbeat -> spawn call",
            f"{median_ms(spawn):.0f} ms = {spawn_ratio:.4f} x silence (goal <= 1.01)",
            spawn_ratio <= 1.01,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per measurement (median)")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--only", choices=("etcd", "redis"), default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    stores = [s for s in (etcd_store, redis_store) if args.only in (None, s.__name__[:-6])]
    results: list[tuple[str, list[tuple[str, str, bool | None]]]] = []
    with tempfile.TemporaryDirectory(prefix="bench-backends-") as directory:
        for make_store in stores:
            with make_store(Path(directory)) as store:
                results.append(
                    (store.name, anyio.run(bench, store, args.runs, backend=args.backend))
                )
    print(f"backend={args.backend} runs={args.runs} (local servers on 127.0.0.1)")
    print(f"timing: silence={TIMING.silence}s, one relay, atomic claims")
    print(f"{'store':<18} {'measurement':<44} median")
    for name, rows in results:
        for measurement, value, ok in rows:
            verdict = "" if ok is None else ("  ok" if ok else "  MISSED")
            print(f"{name:<18} {measurement:<44} {value}{verdict}")


if __name__ == "__main__":
    main()
