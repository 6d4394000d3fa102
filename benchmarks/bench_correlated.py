"""Correlated failover at scale: one primary with many workloads dies (failure mode 19).

Measures, with the fast timing of ``bench_nostr.py`` (silence 4 s,
``claim_settle`` 0.9 s):

* **memory**: one primary carrying ``--workloads`` workloads (default 1,000),
  2 standbys each, over memory relays that model ``nostr-relay``'s limits
  (64 subscriptions and 10 queries in flight per connection), on trio's
  virtual clock: last takeover after the primary's last heartbeat, whether
  every workload was promoted exactly once (by standby 0), relay refusals;
* **real**: the same over three local ``nostr-relay`` processes (their
  default limits), on real time; plus accepting ``--workloads`` slots on one
  standby with a ``JsonFileStore`` (one after the other, and all at once);
* **large**: one standby node holding ``--large`` slots (default 100,000;
  100 slots for each of 1,000 primaries) over memory relays: resident memory
  per slot, and CPU per heartbeat envelope the node ingests (fed to the
  node's subscription handler as the transport would hand them over).

    python benchmarks/bench_correlated.py [--workloads 1000] [--large 100000]
        [--skip-real] [--skip-large]

The real-relay part takes a minute or two; it is not part of the test suite.
"""

from __future__ import annotations

import argparse
import gc
import logging
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import trio
import trio.testing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _e2e import eventually
from _harness import Provider, last_heartbeat, nostr_provider, request
from _nostr_relays import RelayCluster

from standby import Envelope, Heartbeat, JsonFileStore, NodeError
from standby.adapters.memory import (
    MemoryRelayNetwork,
    MemoryRuntime,
    MemorySlotStore,
    RelayLimits,
    RuntimeRecord,
)
from standby.adapters.nostr import NostrKeys
from standby.node import NodeEvent, QuorumMissed, SpawnRequest, StandbyNode
from standby.testing._relay_process import local_relay_timing, running_relays

TIMING = local_relay_timing()
EPOCH = 1_700_000_000.0


def progress(text: str) -> None:
    print(f"   [{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


class Outcome:
    def __init__(self) -> None:
        self.last_takeover = float("nan")
        self.first_takeover = float("nan")
        self.taken_over = 0
        self.exactly_once = False
        self.by_standby0 = 0
        self.refusals = 0
        self.quorum_misses = 0
        self.claims_reads = 0
        self.primary_accept = float("nan")
        self.stages: dict[str, int] = {}


def taken_over(record: RuntimeRecord, ids: list[str], primary: str = "prime") -> bool:
    """Whether every workload's latest start is off the primary (one pass over the record)."""
    latest: dict[str, str] = {}
    for event in record.events:
        if event.kind == "started":
            latest[event.workload_id] = event.host
    return all(latest.get(w, primary) != primary for w in ids)


def judge(
    outcome: Outcome, record: RuntimeRecord, ids: list[str], last_heartbeat: float, epoch: float
) -> None:
    takeovers = []
    promoted: Counter[str] = Counter()
    once = True
    by_workload: dict[str, list[Any]] = {}
    for event in record.of_kind("started"):
        if event.host != "prime":
            by_workload.setdefault(event.workload_id, []).append(event)
    for workload_id in ids:
        starts = by_workload.get(workload_id, [])
        if starts:
            takeovers.append(epoch + starts[0].at - last_heartbeat)
            promoted[starts[0].host] += 1
        once = once and len(starts) == 1
    outcome.taken_over = len(takeovers)
    outcome.exactly_once = once and len(takeovers) == len(ids)
    outcome.by_standby0 = promoted.get("sb0", 0)
    if takeovers:
        outcome.first_takeover = min(takeovers)
        outcome.last_takeover = max(takeovers)


# --------------------------------------------------------------------------- memory relays


async def memory_failover(workloads: int) -> Outcome:
    def wall() -> float:
        return EPOCH + trio.current_time()

    network = MemoryRelayNetwork(
        3, wall_clock=wall, limits=RelayLimits.nostr_relay_defaults(), seed=1
    )
    record = RuntimeRecord()
    names = ["prime", "sb0", "sb1"]
    events: dict[str, list[NodeEvent]] = {n: [] for n in names}
    nodes: dict[str, StandbyNode[Any]] = {}
    scopes: dict[str, anyio.CancelScope] = {}
    runtimes = {n: MemoryRuntime(n, record=record, wall_clock=wall) for n in names}
    ids = [f"w{i:05d}" for i in range(workloads)]
    outcome = Outcome()
    async with anyio.create_task_group() as group:
        for name in names:
            node: StandbyNode[Any] = StandbyNode(
                transport=network.transport(name),
                runtime=runtimes[name],
                store=MemorySlotStore(),
                timing=TIMING,
                wall_clock=wall,
                on_event=events[name].append,
            )
            nodes[name] = node
            scopes[name] = scope = anyio.CancelScope()

            async def run(
                node: StandbyNode[Any] = node,
                scope: anyio.CancelScope = scope,
                *,
                task_status: anyio.abc.TaskStatus[None],
            ) -> None:
                with scope:
                    async with node:
                        task_status.started()
                        await anyio.sleep_forever()

            await group.start(run)
        now = wall()
        for name in names:
            async with anyio.create_task_group() as accepts:
                for workload_id in ids:
                    accepts.start_soon(
                        nodes[name].accept, request(workload_id, "prime", ["sb0", "sb1"], now)
                    )
        await eventually(lambda: len(runtimes["prime"].running()) == workloads, 60, 0.1)
        await anyio.sleep(2 * TIMING.heartbeat_interval)
        runtimes["prime"].crash()
        scopes["prime"].cancel()
        last = last_heartbeat(events["prime"], TIMING)
        await eventually(lambda: taken_over(record, ids), 60, 0.1)
        await anyio.sleep(TIMING.silence)
        group.cancel_scope.cancel()
    judge(outcome, record, ids, last, EPOCH)
    assert network.limiter is not None
    outcome.refusals = network.limiter.refused
    counters = nodes["sb0"].status().counters
    outcome.quorum_misses = counters.get("quorum_shortfall", 0)
    outcome.claims_reads = counters.get("election.claims_reads", 0)
    return outcome


# --------------------------------------------------------------------------- real relays


def real_provider(name: str, record: RuntimeRecord, urls: list[str], directory: Path) -> Provider:
    """A provider on the real relays that saves its slots to a ``JsonFileStore``."""
    store: JsonFileStore[Any] = JsonFileStore(directory / f"{name}.json")
    return nostr_provider(name, record, urls, TIMING, store=store)


async def accept_retrying(
    gate: anyio.Semaphore, node: StandbyNode[Any], req: SpawnRequest[Any]
) -> None:
    async with gate:
        for attempt in range(10):
            if await accept_once(node, req):
                return
            await anyio.sleep(0.1 * (attempt + 1))


async def accept_once(node: StandbyNode[Any], req: SpawnRequest[Any]) -> bool:
    try:
        await node.accept(req)
    except NodeError:
        return False  # the epoch read missed its quorum (relays busy): try again
    return True


async def real_failover(urls: list[str], workloads: int, directory: Path) -> tuple[Outcome, float]:
    record = RuntimeRecord()
    prime, sb0, sb1 = (real_provider(n, record, urls, directory) for n in ("prime", "sb0", "sb1"))
    ids = [f"r{i:05d}" for i in range(workloads)]
    outcome = Outcome()
    accept_seconds = float("nan")
    async with anyio.create_task_group() as group:
        for provider in (prime, sb0, sb1):
            await provider.launch(group)
        now = time.time()
        standbys = [sb0.identity, sb1.identity]
        for provider in (sb0, sb1, prime):
            node = provider.node
            assert node is not None
            started = time.perf_counter()
            # The primary reads each workload's epoch before it starts it: a
            # few at a time, each retried when the relays were too slow.
            gate = anyio.Semaphore(8 if provider is prime else workloads)

            async with anyio.create_task_group() as accepts:
                for workload_id in ids:
                    accepts.start_soon(
                        accept_retrying,
                        gate,
                        node,
                        request(workload_id, prime.identity, standbys, now),
                    )
            if provider is sb0:
                accept_seconds = time.perf_counter() - started
            if provider is prime:
                outcome.primary_accept = time.perf_counter() - started
            progress(
                f"{provider.name} accepted {workloads} in {time.perf_counter() - started:.1f} s"
            )
        await eventually(lambda: len(prime.runtime.running()) == workloads, 120, 0.2)
        progress(f"primary runs {len(prime.runtime.running())} workloads; crashing it")
        await anyio.sleep(2 * TIMING.heartbeat_interval)
        prime.runtime.crash()
        prime.scope.cancel()
        last = last_heartbeat(prime.events, TIMING)
        await eventually(lambda: taken_over(record, ids), 120, 0.2)
        progress("takeovers done (or given up after 120 s)")
        await anyio.sleep(TIMING.silence)
        # Runtime events are stamped on the event loop's clock; heartbeats on the wall clock.
        judge(outcome, record, ids, last, time.time() - anyio.current_time())
        for provider in (sb0, sb1):
            transport = provider.transport
            assert transport is not None
            counters = transport.counters
            outcome.refusals += counters.get("relay_refusals", 0) + counters.get(
                "live_subscriptions_refused", 0
            )
        assert sb0.node is not None
        node_counters = sb0.node.status().counters
        outcome.quorum_misses = node_counters.get("quorum_shortfall", 0)
        stages = Counter(e.stage for e in sb0.events if isinstance(e, QuorumMissed))
        outcome.stages = dict(stages)
        outcome.claims_reads = node_counters.get("election.claims_reads", 0)
        group.cancel_scope.cancel()
    return outcome, accept_seconds


async def real_sequential_accepts(urls: list[str], workloads: int, directory: Path) -> float:
    record = RuntimeRecord()
    standby = real_provider("seq", record, urls, directory)
    primary = NostrKeys.generate().npub
    async with anyio.create_task_group() as group:
        await standby.launch(group)
        node = standby.node
        assert node is not None
        now = time.time()
        started = time.perf_counter()
        for i in range(workloads):
            await node.accept(request(f"s{i:05d}", primary, [standby.identity], now))
        took = time.perf_counter() - started
        group.cancel_scope.cancel()
    return took


# --------------------------------------------------------------------------- 100k slots


async def large_node(slots: int, primaries: int, rounds: int) -> tuple[float, float, int]:
    def wall() -> float:
        return EPOCH + trio.current_time()

    network = MemoryRelayNetwork(3, wall_clock=wall)
    names = [f"p{i:04d}" for i in range(primaries)]
    node: StandbyNode[Any] = StandbyNode(
        transport=network.transport("me"),
        runtime=MemoryRuntime("me", record=RuntimeRecord(), wall_clock=wall),
        store=None,  # the slots' own cost; saving is measured on real relays above
        timing=TIMING,
        wall_clock=wall,
    )
    gc.collect()
    before = rss_bytes()
    async with node:
        now = wall()
        per_primary = slots // primaries
        for i in range(slots):
            primary = names[i % primaries]
            await node.accept(request(f"x{i:06d}", primary, ["me", f"q{i % 7}"], now))
        assert len(node.election.slots) == per_primary * primaries
        gc.collect()
        rss = (rss_bytes() - before) / slots
        # Heartbeat envelopes as the live subscription hands them over: one
        # per relay for each primary and round.
        envelopes = []
        for k in range(rounds):
            stamp = wall() + k * TIMING.heartbeat_interval
            for name in names:
                beat = Heartbeat(provider=name, timestamp=stamp, active_workloads=per_primary)
                envelopes.extend(Envelope(beat, name, relay, stamp) for relay in network.relays)
        ingest = node.standby.on_envelope
        start = time.process_time()
        for envelope in envelopes:
            ingest(envelope)
        cpu = time.process_time() - start
        ingested = len(envelopes)
    return rss, cpu / max(ingested, 1) * 1e6, ingested


# --------------------------------------------------------------------------- report


def row(name: str, value: str, goal: str) -> None:
    print(f"{name:<62} {value:>22}   {goal}")


def report(title: str, outcome: Outcome, workloads: int, bound: float) -> None:
    print(f"-- {title}")
    row("taken over", f"{outcome.taken_over}/{workloads}", "all")
    row(
        "first / last takeover after the last heartbeat (s)",
        f"{outcome.first_takeover:.2f} / {outcome.last_takeover:.2f}",
        f"last <= {bound:.1f}",
    )
    row("every workload promoted exactly once", str(outcome.exactly_once), "True")
    row("promoted by standby 0", f"{outcome.by_standby0}/{workloads}", "all")
    row("relay refusals", str(outcome.refusals), "0")
    row("quorum shortfalls (standby 0)", str(outcome.quorum_misses), "")
    row("claims reads (standby 0)", str(outcome.claims_reads), "")
    if outcome.stages:
        row("shortfalls by stage (standby 0)", str(outcome.stages), "")
    if outcome.primary_accept == outcome.primary_accept:
        row("the primary accepting them, 8 at a time (s)", f"{outcome.primary_accept:.1f}", "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--primaries", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--skip-large", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print(
        f"timing: silence={TIMING.silence}s claim_settle={TIMING.claim_settle}s "
        f"claim_timeout={TIMING.claim_timeout}s query_timeout={TIMING.query_timeout}s"
    )
    clock = trio.testing.MockClock(autojump_threshold=0)
    started = time.perf_counter()
    outcome = trio.run(memory_failover, args.workloads, clock=clock)
    report(
        f"memory relays, nostr-relay limits, {args.workloads} workloads, virtual clock "
        f"({time.perf_counter() - started:.0f} s of CPU)",
        outcome,
        args.workloads,
        TIMING.silence + TIMING.claim_settle + 1,
    )
    if not args.skip_real:
        with (
            tempfile.TemporaryDirectory(prefix="bench-correlated-") as directory,
            running_relays(RelayCluster(Path(directory) / "relays")) as cluster,
        ):
            base = Path(directory)
            real, accept_all = anyio.run(real_failover, cluster.urls, args.workloads, base)
            sequential = anyio.run(real_sequential_accepts, cluster.urls, args.workloads, base)
        report(
            f"real relays (3 local nostr-relay), {args.workloads} workloads",
            real,
            args.workloads,
            TIMING.silence + TIMING.claim_settle + 2,
        )
        row(
            f"accepting {args.workloads} slots on one standby, all at once (s)",
            f"{accept_all:.2f}",
            "<= 2",
        )
        row(
            f"accepting {args.workloads} slots on one standby, one by one (s)",
            f"{sequential:.2f}",
            "",
        )
    if not args.skip_large:
        clock = trio.testing.MockClock(autojump_threshold=0)
        rss, cpu_us, ingested = trio.run(
            large_node, args.large, args.primaries, args.rounds, clock=clock
        )
        print(f"-- one node, {args.large} slots of {args.primaries} primaries, memory relays")
        row("resident memory per slot (bytes)", f"{rss:.0f}", "<= 2048")
        row(
            f"CPU per heartbeat envelope ingested (us, {ingested} envelopes)",
            f"{cpu_us:.1f}",
            "<= 20",
        )


if __name__ == "__main__":
    main()
