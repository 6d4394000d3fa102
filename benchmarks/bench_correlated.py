"""Correlated failover at scale: one primary with many workloads dies (failure mode 19).

One primary carries ``--workloads`` workloads, each with the same two
standbys; it is crashed, and standby 0 must take every workload over,
once. In the same run and on the same relays the benchmark measures the
**relay floor** (``benchmarks/_floor.py``): how long the relays take to
answer the takeover's batched claims reads and store its claims and
announcements (the library's own signed events, one connection per relay,
pipelined). It reports the last takeover after the primary's last
heartbeat and as ``(last - silence - claim_settle) / floor``, the goal
(<= 1.5) beside it, and whether each workload was taken over exactly once
by standby 0, workloads started twice, leases lost by a freshly promoted
primary, relay refusals, quorum shortfalls, the primary's accept time and
the load average.

    python benchmarks/bench_correlated.py [--workloads 1000]
        [--timing fast
         | --timing silence=30,heartbeat_interval=10,relay_latency=0.25,max_clock_skew=2]
        [--relay nostr-relay | rust-local | memory]
        [--costs measured | --costs NAME=VALUE,...] [--unpaced]
        [--large 100000] [--skip-large]

``--timing`` takes ``fast`` (the timing of the real-relay tests: silence
4 s, ``claim_settle`` 0.9 s) or ``Timing.for_target`` arguments.
``--relay nostr-relay`` runs three local ``nostr-relay`` processes;
``rust-local`` three rust-nostr ``LocalRelay`` processes (without a rate
limit; ``--relay-default-rate`` keeps the relay's own); ``memory`` the
memory relays with ``nostr-relay``'s limits on trio's virtual clock, where
``--costs`` is their cost model: ``measured`` (``RelayCosts.measured()``)
or ``RelayCosts`` fields as ``NAME=VALUE``. ``--unpaced`` gives every
transport one connection per relay and no pacing (``Pacing.unpaced()``),
the transport before failure mode 26 was fixed.
``--large`` measures one standby holding many slots over memory relays:
resident memory per slot, CPU per heartbeat envelope.

Not part of the test suite; a real-relay run of 1,000 workloads takes a
few minutes.
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import os
import resource
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import trio
import trio.testing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _e2e import eventually
from _floor import Floor, memory_floor, relay_floor
from _harness import Provider, last_heartbeat, nostr_provider, request
from _nostr_relays import RelayCluster

from standby import Envelope, Heartbeat, JsonFileStore, NodeError, Query, Timing, UnsafeTiming
from standby.adapters.memory import (
    MemoryRelayNetwork,
    MemoryRuntime,
    MemorySlotStore,
    Pacing,
    RelayCosts,
    RelayLimits,
    RuntimeRecord,
)
from standby.adapters.nostr import NostrKeys
from standby.core import LifecycleState
from standby.node import LifecycleChanged, NodeEvent, QuorumMissed, SpawnRequest, StandbyNode
from standby.testing._relay_process import RelayCluster as ProcessRelays
from standby.testing._relay_process import RelaySettings, local_relay_timing, running_relays

EPOCH = 1_700_000_000.0
#: The goal for ``(last - silence - claim_settle) / floor``.
RATIO_GOAL = 1.5
#: The goal for the primary accepting 1,000 workloads (seconds).
ACCEPT_GOAL = 5.0
RELAYS = ("nostr-relay", "rust-local", "memory")


def progress(text: str) -> None:
    print(f"   [{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


# --------------------------------------------------------------------------- options


def _number(text: str) -> float | int:
    try:
        return int(text)
    except ValueError:
        return float(text)


def parse_pairs(text: str, what: str) -> dict[str, float | int]:
    """``a=1,b=0.5`` as a dict; ``ValueError`` naming ``what`` when malformed."""
    pairs: dict[str, float | int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"{what}: expected NAME=VALUE, got {item!r}")
        try:
            pairs[name.strip()] = _number(value.strip())
        except ValueError:
            raise ValueError(f"{what}: {name.strip()} must be a number, got {value!r}") from None
    return pairs


def parse_timing(text: str) -> Timing:
    """``fast`` or ``Timing.for_target`` arguments (``silence=30,heartbeat_interval=10,...``)."""
    if text == "fast":
        return local_relay_timing()
    try:
        return Timing.for_target(**parse_pairs(text, "--timing"))  # type: ignore[arg-type]
    except TypeError as exc:
        raise ValueError(f"--timing: {exc} (Timing.for_target's arguments)") from None
    except UnsafeTiming as exc:
        raise ValueError(f"--timing: {exc}") from None


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f} ({os.cpu_count()} cores)"


# --------------------------------------------------------------------------- judging


class Outcome:
    def __init__(self) -> None:
        self.last_takeover = math.nan
        self.first_takeover = math.nan
        self.taken_over = 0
        self.exactly_once = False
        self.by_standby0 = 0
        self.started_twice = 0
        self.leases_lost = 0
        self.refusals = 0
        self.quorum_misses = 0
        self.claims_reads = 0
        self.primary_accept = math.nan
        self.accept_retries = 0
        self.stages: dict[str, int] = {}
        self.floor: Floor | None = None


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
    """Takeover times and counts from the runtimes' record (stamped ``epoch + at``)."""
    takeovers = []
    promoted: Counter[str] = Counter()
    by_workload: dict[str, list[Any]] = {}
    for event in record.of_kind("started"):
        if event.host != "prime":
            by_workload.setdefault(event.workload_id, []).append(event)
    for workload_id in ids:
        starts = by_workload.get(workload_id, [])
        if starts:
            takeovers.append(epoch + starts[0].at - last_heartbeat)
            promoted[starts[0].host] += 1
    outcome.started_twice = sum(len(by_workload.get(w, ())) > 1 for w in ids)
    outcome.taken_over = len(takeovers)
    outcome.exactly_once = outcome.started_twice == 0 and len(takeovers) == len(ids)
    outcome.by_standby0 = promoted.get("sb0", 0)
    if takeovers:
        outcome.first_takeover = min(takeovers)
        outcome.last_takeover = max(takeovers)


def leases_lost(events: Iterable[NodeEvent]) -> int:
    """Workloads a standby took over and then fenced (its fresh lease lost)."""
    return len(
        {
            e.workload_id
            for e in events
            if isinstance(e, LifecycleChanged) and e.new is LifecycleState.FENCED
        }
    )


def standby_counts(outcome: Outcome, node: StandbyNode[Any], events: Sequence[NodeEvent]) -> None:
    counters = node.status().counters
    outcome.quorum_misses = counters.get("quorum_shortfall", 0)
    outcome.claims_reads = counters.get("election.claims_reads", 0)
    outcome.stages = dict(Counter(e.stage for e in events if isinstance(e, QuorumMissed)))


# --------------------------------------------------------------------------- memory relays


def memory_network(wall: Any, costs: RelayCosts, pacing: Pacing) -> MemoryRelayNetwork:
    """Three memory relays with ``nostr-relay``'s limits and the cost model ``costs``."""
    return MemoryRelayNetwork(
        3,
        wall_clock=wall,
        limits=RelayLimits.nostr_relay_defaults(),
        seed=1,
        costs=costs,
        pacing=pacing,
    )


def parse_costs(text: str) -> RelayCosts:
    """``measured``, nothing (free relays) or ``RelayCosts`` fields as ``NAME=VALUE,...``."""
    if text == "measured":
        return RelayCosts.measured()
    pairs = parse_pairs(text, "--costs")
    try:
        return RelayCosts(**pairs)
    except TypeError as exc:
        raise ValueError(f"--costs: {exc}") from None


async def memory_failover(
    workloads: int, timing: Timing, costs: RelayCosts, pacing: Pacing
) -> Outcome:
    def wall() -> float:
        return EPOCH + trio.current_time()

    network = memory_network(wall, costs, pacing)
    outcome = Outcome()
    outcome.floor = await memory_floor(network, workloads, timing.write_quorum)
    record = RuntimeRecord()
    names = ["prime", "sb0", "sb1"]
    events: dict[str, list[NodeEvent]] = {n: [] for n in names}
    nodes: dict[str, StandbyNode[Any]] = {}
    scopes: dict[str, anyio.CancelScope] = {}
    runtimes = {n: MemoryRuntime(n, record=record, wall_clock=wall) for n in names}
    ids = [f"w{i:05d}" for i in range(workloads)]
    async with anyio.create_task_group() as group:
        for name in names:
            node: StandbyNode[Any] = StandbyNode(
                transport=network.transport(name),
                runtime=runtimes[name],
                store=MemorySlotStore(),
                timing=timing,
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
        for name in ("sb0", "sb1", "prime"):
            started = anyio.current_time()
            async with anyio.create_task_group() as accepts:
                for workload_id in ids:
                    accepts.start_soon(
                        nodes[name].accept, request(workload_id, "prime", ["sb0", "sb1"], now)
                    )
            if name == "prime":
                outcome.primary_accept = anyio.current_time() - started
        await eventually(lambda: len(runtimes["prime"].running()) == workloads, 60, 0.1)
        await anyio.sleep(2 * timing.heartbeat_interval)
        runtimes["prime"].crash()
        scopes["prime"].cancel()
        last = last_heartbeat(events["prime"], timing)
        await eventually(lambda: taken_over(record, ids), timing.silence + 600, 0.1)
        await anyio.sleep(timing.silence)
        group.cancel_scope.cancel()
    judge(outcome, record, ids, last, EPOCH)
    assert network.limiter is not None
    outcome.refusals = network.limiter.refused
    outcome.leases_lost = leases_lost(events["sb0"]) + leases_lost(events["sb1"])
    standby_counts(outcome, nodes["sb0"], events["sb0"])
    return outcome


# --------------------------------------------------------------------------- real relays


#: A rate limit no failover reaches (``LocalRelay``'s own allows about 60
#: events a minute per connection: a provider running it sets its own).
UNLIMITED = (1_000_000, 1_000_000)


def relay_cluster(kind: str, directory: Path, *, default_rate: bool = False) -> Any:
    """Three local relays of ``kind`` (``nostr-relay`` or ``rust-local``).

    ``rust-local`` relays run without a rate limit unless ``default_rate``
    keeps the relay's own.
    """
    if kind == "nostr-relay" or default_rate:
        return RelayCluster(directory, implementation=kind)
    settings = [RelaySettings(rate_limit=UNLIMITED)] * 3
    return ProcessRelays(directory, settings, implementation=kind)


def real_provider(
    name: str, record: RuntimeRecord, urls: list[str], timing: Timing, directory: Path
) -> Provider:
    """A provider on the real relays that saves its slots to a ``JsonFileStore``."""
    store: JsonFileStore[Any] = JsonFileStore(directory / f"{name}.json")
    return nostr_provider(name, record, urls, timing, store=store)


async def accept_retrying(node: StandbyNode[Any], req: SpawnRequest[Any], outcome: Outcome) -> None:
    for attempt in range(10):
        try:
            await node.accept(req)
        except NodeError:  # noqa: PERF203 - a retry loop
            # The epoch read missed its quorum (relays busy): try again.
            outcome.accept_retries += 1
            await anyio.sleep(0.1 * (attempt + 1))
        else:
            return


async def stored_last_heartbeat(reader: Provider, prime: Provider, timing: Timing) -> float:
    """The newest of the crashed primary's heartbeats on any relay.

    The standbys count the silence from the newest heartbeat they heard, and
    a heartbeat the crash cut off after it was sent but before its
    acknowledgements came back is on the relays all the same: taking only the
    heartbeats the primary saw acknowledged put the last heartbeat up to an
    interval early, and every takeover that much late.
    """
    transport = reader.transport
    assert transport is not None
    newest = last_heartbeat(prime.events, timing)
    query = Query(kinds=("heartbeat",), authors={prime.identity})
    result = await transport.query(query, timeout=10 * timing.query_timeout)
    for envelope in result.envelopes:
        if isinstance(envelope.message, Heartbeat):
            newest = max(newest, envelope.message.timestamp)
    return newest


async def real_failover(
    urls: list[str], workloads: int, timing: Timing, directory: Path
) -> tuple[Outcome, float]:
    outcome = Outcome()
    progress(f"measuring the relay floor of {workloads} workloads")
    outcome.floor = await relay_floor(urls, workloads, timing.write_quorum, time.time())
    record = RuntimeRecord()
    prime, sb0, sb1 = (
        real_provider(n, record, urls, timing, directory) for n in ("prime", "sb0", "sb1")
    )
    ids = [f"r{i:05d}" for i in range(workloads)]
    accept_seconds = math.nan
    async with anyio.create_task_group() as group:
        for provider in (prime, sb0, sb1):
            await provider.launch(group)
        now = time.time()
        standbys = [sb0.identity, sb1.identity]
        for provider in (sb0, sb1, prime):
            node = provider.node
            assert node is not None
            started = time.perf_counter()
            async with anyio.create_task_group() as accepts:
                for workload_id in ids:
                    req = request(workload_id, prime.identity, standbys, now)
                    accepts.start_soon(accept_retrying, node, req, outcome)
            took = time.perf_counter() - started
            if provider is sb0:
                accept_seconds = took
            if provider is prime:
                outcome.primary_accept = took
            progress(f"{provider.name} accepted {workloads} in {took:.1f} s")
        await eventually(lambda: len(prime.runtime.running()) == workloads, 120, 0.2)
        progress(f"primary runs {len(prime.runtime.running())} workloads; crashing it")
        await anyio.sleep(2 * timing.heartbeat_interval)
        prime.runtime.crash()
        prime.scope.cancel()
        last = await stored_last_heartbeat(sb0, prime, timing)
        await eventually(lambda: taken_over(record, ids), timing.silence + 300, 0.2)
        progress("takeovers done (or given up)")
        await anyio.sleep(timing.silence)
        # Runtime events are stamped on the event loop's clock; heartbeats on the wall clock.
        judge(outcome, record, ids, last, time.time() - anyio.current_time())
        for provider in (sb0, sb1):
            transport = provider.transport
            assert transport is not None
            counters = transport.counters
            outcome.refusals += counters.get("relay_refusals", 0) + counters.get(
                "live_subscriptions_refused", 0
            )
        outcome.leases_lost = leases_lost(sb0.events) + leases_lost(sb1.events)
        assert sb0.node is not None
        standby_counts(outcome, sb0.node, sb0.events)
        group.cancel_scope.cancel()
    return outcome, accept_seconds


async def real_sequential_accepts(
    urls: list[str], workloads: int, timing: Timing, directory: Path
) -> float:
    record = RuntimeRecord()
    standby = real_provider("seq", record, urls, timing, directory)
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


async def large_node(
    slots: int, primaries: int, rounds: int, timing: Timing
) -> tuple[float, float, int]:
    def wall() -> float:
        return EPOCH + trio.current_time()

    network = MemoryRelayNetwork(3, wall_clock=wall)
    names = [f"p{i:04d}" for i in range(primaries)]
    node: StandbyNode[Any] = StandbyNode(
        transport=network.transport("me"),
        runtime=MemoryRuntime("me", record=RuntimeRecord(), wall_clock=wall),
        store=None,  # the slots' own cost; saving is measured on real relays above
        timing=timing,
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
            stamp = wall() + k * timing.heartbeat_interval
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


def row(name: str, value: str, goal: str = "") -> None:
    print(f"{name:<62} {value:>22}   {goal}")


def ratio(outcome: Outcome, timing: Timing) -> float:
    """``(last - silence - claim_settle) / floor``."""
    assert outcome.floor is not None
    above = outcome.last_takeover - timing.silence - timing.claim_settle
    if outcome.floor.seconds <= 0:
        return math.inf  # relays that charge nothing (memory relays without costs)
    return above / outcome.floor.seconds


def report(title: str, outcome: Outcome, workloads: int, timing: Timing) -> None:
    print(f"-- {title}")
    floor = outcome.floor
    assert floor is not None
    row("taken over", f"{outcome.taken_over}/{workloads}", "all")
    row(
        "every workload taken over exactly once, all by standby 0",
        str(outcome.exactly_once and outcome.by_standby0 == workloads),
        f"True (standby 0: {outcome.by_standby0}/{workloads})",
    )
    row(
        "first / last takeover after the last heartbeat (s)",
        f"{outcome.first_takeover:.2f} / {outcome.last_takeover:.2f}",
    )
    per_relay = ", ".join(f"{s:.2f}" for s in sorted(floor.per_relay.values()))
    row(
        f"relay floor: {floor.events} events + {floor.reads} reads (s)",
        f"{floor.seconds:.2f}",
        f"write quorum of {floor.quorum}; per relay {per_relay}",
    )
    row(
        "(last - silence - claim_settle) / floor",
        f"{ratio(outcome, timing):.2f}",
        f"<= {RATIO_GOAL}",
    )
    row("workloads started twice", str(outcome.started_twice), "0")
    row("leases lost by a freshly promoted primary", str(outcome.leases_lost), "0")
    row("relay refusals", str(outcome.refusals), "0")
    row("quorum shortfalls (standby 0)", str(outcome.quorum_misses))
    if outcome.stages:
        row("shortfalls by stage (standby 0)", str(outcome.stages))
    row("claims reads (standby 0)", str(outcome.claims_reads))
    row(
        f"the primary accepting {workloads} workloads at once (s)",
        f"{outcome.primary_accept:.2f}",
        f"<= {ACCEPT_GOAL:g} for 1,000 (accepts retried: {outcome.accept_retries})",
    )
    row("load average (1, 5, 15 min)", load_average())


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--workloads", type=int, default=1_000)
    parser.add_argument(
        "--timing",
        default="fast",
        help="'fast' or Timing.for_target arguments, e.g. "
        "silence=30,heartbeat_interval=10,relay_latency=0.25,max_clock_skew=2",
    )
    parser.add_argument("--relay", choices=RELAYS, default="nostr-relay")
    parser.add_argument(
        "--costs",
        default="",
        help="memory relays only: 'measured' or RelayCosts fields as NAME=VALUE,...",
    )
    parser.add_argument(
        "--unpaced",
        action="store_true",
        help="memory relays only: one connection per relay, no pacing (Pacing.unpaced())",
    )
    parser.add_argument(
        "--relay-default-rate",
        action="store_true",
        help="rust-local only: keep LocalRelay's own rate limit (about 60 events a minute)",
    )
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--primaries", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--skip-sequential", action="store_true")
    args = parser.parse_args()
    try:
        timing = parse_timing(args.timing)
        costs = parse_costs(args.costs)
    except ValueError as exc:
        parser.error(str(exc))
    if args.workloads < 1:
        parser.error(f"--workloads must be at least 1, got {args.workloads}")
    if (args.costs or args.unpaced) and args.relay != "memory":
        parser.error("--costs and --unpaced are for --relay memory only")
    logging.basicConfig(level=logging.ERROR)
    print(
        f"timing {args.timing}: silence={timing.silence}s claim_settle={timing.claim_settle}s "
        f"claim_timeout={timing.claim_timeout}s query_timeout={timing.query_timeout}s "
        f"heartbeat_interval={timing.heartbeat_interval}s lease={timing.lease}s"
    )
    started = time.perf_counter()
    if args.relay == "memory":
        clock = trio.testing.MockClock(autojump_threshold=0)
        pacing = Pacing.unpaced() if args.unpaced else Pacing()
        outcome = trio.run(memory_failover, args.workloads, timing, costs, pacing, clock=clock)
        report(
            f"memory relays, nostr-relay limits, {costs}, "
            f"{'unpaced' if args.unpaced else 'paced'}, {args.workloads} "
            f"workloads, virtual clock ({time.perf_counter() - started:.0f} s of CPU)",
            outcome,
            args.workloads,
            timing,
        )
    else:
        with (
            tempfile.TemporaryDirectory(prefix="bench-correlated-") as directory,
            running_relays(
                relay_cluster(
                    args.relay, Path(directory) / "relays", default_rate=args.relay_default_rate
                )
            ) as cluster,
        ):
            base = Path(directory)
            real, accept_all = anyio.run(real_failover, cluster.urls, args.workloads, timing, base)
            sequential = math.nan
            if not args.skip_sequential:
                sequential = anyio.run(
                    real_sequential_accepts, cluster.urls, args.workloads, timing, base
                )
        report(
            f"real relays (3 local {args.relay}), {args.workloads} workloads, "
            f"{time.perf_counter() - started:.0f} s",
            real,
            args.workloads,
            timing,
        )
        row(
            f"accepting {args.workloads} slots on one standby, all at once (s)",
            f"{accept_all:.2f}",
            "<= 2",
        )
        if not args.skip_sequential:
            row(
                f"accepting {args.workloads} slots on one standby, one by one (s)",
                f"{sequential:.2f}",
            )
    if not args.skip_large:
        clock = trio.testing.MockClock(autojump_threshold=0)
        rss, cpu_us, ingested = trio.run(
            large_node, args.large, args.primaries, args.rounds, timing, clock=clock
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
