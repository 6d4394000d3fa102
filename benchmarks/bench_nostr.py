"""Failover over real Nostr relays: latencies measured on three local relay processes.

Starts three ``nostr-relay`` processes on 127.0.0.1 (as the test suite does)
and measures, with real sockets and real time:

* **publish -> receive**: a claim published by one transport until another
  transport's subscription yields it (and, on the side, a publish until every
  relay's ``OK`` and a read-quorum query until every relay's ``EOSE``);
* **graceful handover**: ``StandbyNode.handover()`` on the primary until the
  first standby calls ``spawn`` (target: within 3x the publish -> receive
  latency of the same run, plus ``claim_settle``);
* **crash failover**: the primary's host dies; from its last heartbeat until
  the first standby confirms the silence (target: within 1.01x the configured
  silence) and until it calls ``spawn`` (target: within ``silence +
  claim_settle`` + 3x the query latency of the same run).

Medians over ``--runs`` runs (default 20) of each. The timing is the one of
``tests/test_nostr_e2e.py`` (silence 4 s, ``claim_settle`` 0.9 s).

    python benchmarks/bench_nostr.py [--runs 20] [--backend asyncio|trio]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _nostr_relays import RelayCluster

from standby import Phase, PromotionClaim, Timing, Topology, fencing_token
from standby.adapters.memory import MemoryRuntime, RuntimeRecord
from standby.adapters.nostr import NostrKeys, NostrTransport
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
)
#: Crashes measured at once (the standbys serve every crashed workload concurrently).
CRASH_BATCH = 2


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


async def wait_for(predicate: Callable[[], bool], within: float, what: str) -> None:
    with anyio.move_on_after(within):
        while not predicate():  # noqa: ASYNC110 - polls state other tasks change
            await anyio.sleep(0.002)
    if not predicate():
        raise SystemExit(f"timed out after {within}s waiting for {what}")


# --------------------------------------------------------------------------- transport latencies


async def transport_latencies(urls: list[str], runs: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"receive": [], "publish": [], "query": []}
    async with (
        NostrTransport(urls, NostrKeys.generate()) as alice,
        NostrTransport(urls, NostrKeys.generate()) as bob,
    ):
        await alice.wait_connected(timeout=5)
        await bob.wait_connected(timeout=5)
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
                published: list[float] = []
                started = time.perf_counter()

                async def publish(
                    claim: PromotionClaim = claim, published: Any = published
                ) -> None:
                    result = await alice.publish(claim, timeout=2.0)
                    assert len(result.acked) == len(urls), result
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
                result = await bob.query(
                    Query(kinds={"claim"}, workload_ids={workload}), timeout=2.0
                )
                queried = time.perf_counter()
                assert len(result.answered) == len(urls), result
                if run >= 2:
                    out["receive"].append(received - started)
                    out["publish"].append(published[0] - started)
                    out["query"].append(queried - query_started)
        finally:
            await subscription.aclose()
    return out


# --------------------------------------------------------------------------- nodes


class Provider:
    def __init__(self, name: str, record: RuntimeRecord) -> None:
        self.name = name
        self.keys = NostrKeys.generate()
        self.runtime = MemoryRuntime(name, record=record)
        self.events: list[NodeEvent] = []
        self.node: StandbyNode[Any] | None = None
        self.scope = anyio.CancelScope()

    async def launch(self, group: anyio.abc.TaskGroup, urls: list[str]) -> None:
        async def run(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            with self.scope:
                async with NostrTransport(urls, self.keys) as transport:
                    await transport.wait_connected(timeout=5)
                    async with StandbyNode(
                        transport=transport,
                        runtime=self.runtime,
                        timing=TIMING,
                        on_event=self.events.append,
                    ) as node:
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
        topology=Topology(primary=primary.keys.npub, standbys=tuple(s.keys.npub for s in standbys)),
        spec={"image": "bench:1"},
        owner="bench",
        expires_at=time.time() + 3600,
    )


async def handovers(urls: list[str], runs: int) -> list[float]:
    record = RuntimeRecord()
    primary, *standbys = [Provider(n, record) for n in ("primary", "sb0", "sb1")]
    took: list[float] = []
    async with anyio.create_task_group() as group:
        for provider in (primary, *standbys):
            await provider.launch(group, urls)
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


async def crashes(urls: list[str], runs: int) -> tuple[list[float], list[float]]:
    record = RuntimeRecord()
    standbys = [Provider(n, record) for n in ("sb0", "sb1")]
    confirm: list[float] = []
    spawn: list[float] = []
    async with anyio.create_task_group() as group:
        for provider in standbys:
            await provider.launch(group, urls)
        done = 0
        while done < runs:
            batch = min(CRASH_BATCH, runs - done)
            primaries = [Provider(f"primary-{done + i}", record) for i in range(batch)]
            workloads = [f"crash-{uuid.uuid4().hex[:10]}" for _ in primaries]
            for primary, workload in zip(primaries, workloads, strict=True):
                await primary.launch(group, urls)
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


async def bench(urls: list[str], runs: int) -> list[tuple[str, float, str, bool]]:
    latencies = await transport_latencies(urls, runs)
    receive = median_ms(latencies["receive"])
    query = median_ms(latencies["query"])
    handover = median_ms(await handovers(urls, runs))
    confirm, spawn = await crashes(urls, runs)
    confirm_ms, spawn_ms = median_ms(confirm), median_ms(spawn)
    silence_ms = TIMING.silence * 1000
    settle_ms = TIMING.claim_settle * 1000
    handover_target = 3 * receive + settle_ms
    spawn_target = silence_ms + settle_ms + 3 * query
    return [
        ("publish -> receive (subscription)", receive, "", True),
        ("publish -> OK from every relay", median_ms(latencies["publish"]), "", True),
        ("query -> EOSE from every relay", query, "", True),
        (
            "graceful handover -> standby's spawn call",
            handover,
            f"<= 3 x receive + claim_settle = {handover_target:.1f} ms",
            handover <= handover_target,
        ),
        (
            "crash: last heartbeat -> silence confirmed",
            confirm_ms,
            f"<= 1.01 x silence = {1.01 * silence_ms:.1f} ms",
            confirm_ms <= 1.01 * silence_ms,
        ),
        (
            "crash: last heartbeat -> spawn call",
            spawn_ms,
            f"<= silence + claim_settle + 3 x query = {spawn_target:.1f} ms",
            spawn_ms <= spawn_target,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs per measurement (median)")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="bench-nostr-") as directory:
        cluster = RelayCluster(Path(directory))
        try:
            cluster.start()
            rows = anyio.run(bench, cluster.urls, args.runs, backend=args.backend)
        finally:
            cluster.stop_all()
    print(f"backend={args.backend} runs={args.runs} relays=3 (local nostr-relay processes)")
    print(f"timing: silence={TIMING.silence}s claim_settle={TIMING.claim_settle}s")
    print(f"{'measurement':<45} {'median':>10}  target")
    for name, value, target, ok in rows:
        verdict = "" if not target else ("  ok" if ok else "  MISSED")
        print(f"{name:<45} {value:>8.1f}ms  {target}{verdict}")


if __name__ == "__main__":
    main()
