"""Benchmark of StandbyElection: heartbeat ingest, next_deadline(), memory per slot.

Run: python benchmarks/bench_election.py [--sizes 1000 10000 100000] [--primaries 100]

Slots are spread evenly over the primaries. Targets (issue 3): at most 10 us
per heartbeat ingest, per-operation cost growing at most 2x from 1k to 100k
slots, at most 1 KiB per slot (the spec excluded: every slot shares one).
Churn (issue 12): reserve a new slot and drop the oldest, with a
next_deadline() each time, every slot on one primary; its cost must grow at most 2x from 1k to 100k.
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
from typing import Any

import attrs

import standby as sb

CREATED = 1_700_000_000.0
SPEC = {"image": "app:1"}  # shared by every slot: the spec is excluded


def build(n: int, primaries: int) -> sb.StandbyElection[Any]:
    election: sb.StandbyElection[Any] = sb.StandbyElection(me="me", timing=sb.Timing())
    for i in range(n):
        slot = sb.StandbySlot(
            workload_id=f"workload-{i:08d}",
            primary=f"primary-{i % primaries:04d}",
            standby_index=1,
            standby_count=3,
            spec=SPEC,
            expires_at=CREATED + 30 * 86_400,
            owner="consumer",
            created_at=CREATED + (i % 60),
            peers=("peer-a", "peer-b"),
        )
        election.reserve(CREATED + 60, slot)
    return election


def memory_per_slot(n: int, primaries: int) -> float:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    election = build(n, primaries)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    total = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert len(election.slots) == n
    return total / n


def per_call(fn: Any, calls: int) -> float:
    start = time.perf_counter()
    fn(calls)
    return (time.perf_counter() - start) / calls * 1e6


def bench(n: int, primaries: int, beats: int) -> dict[str, float]:
    election = build(n, primaries)
    names = [f"primary-{p:04d}" for p in range(primaries)]
    envelopes = []
    now = CREATED + 100
    for k in range(beats):
        at = now + k * 0.01
        signer = names[k % primaries]
        envelopes.append(
            (at, sb.Envelope(sb.Heartbeat(provider=signer, timestamp=at), signer, "r1", at))
        )

    def ingest(calls: int) -> None:
        on_message = election.on_message
        for at, envelope in envelopes[:calls]:
            on_message(at, envelope)

    def deadline(calls: int) -> None:
        next_deadline = election.next_deadline
        for _ in range(calls):
            next_deadline()

    def ingest_then_deadline(calls: int) -> None:
        on_message = election.on_message
        next_deadline = election.next_deadline
        for at, envelope in envelopes[beats - calls :]:
            on_message(at, envelope)
            next_deadline()

    half = beats // 2
    ingest_us = per_call(ingest, half)
    deadline_us = per_call(deadline, half)
    mixed_us = per_call(ingest_then_deadline, half)
    # The earliest deadline must be exact: no polling granularity.
    silence = election.timing.silence
    expected = min(
        sb.silence_baseline(slot.created_at, election.last_heartbeat(slot.primary)) + silence
        for slot in election.slots.values()
    )
    if election.next_deadline() != expected:
        raise AssertionError(f"next_deadline {election.next_deadline()} != {expected}")
    # Churn on one primary holding every slot: the correlated case.
    churn_us = churn(build(n, 1), n, min(beats // 2, 5_000))
    return {
        "ingest_us": ingest_us,
        "deadline_us": deadline_us,
        "mixed_us": mixed_us,
        "churn_us": churn_us,
    }


def churn(election: sb.StandbyElection[Any], n: int, calls: int) -> float:
    """Reserve a new slot and drop the oldest one (with next_deadline), per call."""
    template = next(iter(election.slots.values()))
    oldest = sorted(election.slots.values(), key=lambda s: (s.created_at, s.workload_id))
    order = [s.workload_id for s in oldest]
    primaries = sorted({s.primary for s in oldest})
    now = CREATED + 100
    fresh = [
        attrs.evolve(
            template,
            workload_id=f"churn-{k:08d}",
            primary=primaries[k % len(primaries)],
            created_at=now + k * 1e-4,
        )
        for k in range(calls)
    ]
    reserve, remove, next_deadline = election.reserve, election.remove, election.next_deadline

    def run(count: int) -> None:
        for k in range(count):
            at = now + k * 1e-4
            reserve(at, fresh[k])
            remove(at, order[k] if k < n else fresh[k - n].workload_id)
            next_deadline()

    return per_call(run, calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--primaries", type=int, default=100)
    parser.add_argument("--beats", type=int, default=200_000)
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        result = bench(n, args.primaries, args.beats)
        result["bytes_per_slot"] = memory_per_slot(n, args.primaries)
        rows.append((n, result))
    print(f"slots spread over {args.primaries} primaries; {args.beats // 2} calls per figure")
    print(
        f"{'slots':>8} {'heartbeat us':>13} {'next_deadline us':>17} "
        f"{'hb+deadline us':>15} {'churn us':>9} {'bytes/slot':>11}"
    )
    for n, r in rows:
        print(
            f"{n:>8} {r['ingest_us']:>13.2f} {r['deadline_us']:>17.3f} "
            f"{r['mixed_us']:>15.2f} {r['churn_us']:>9.2f} {r['bytes_per_slot']:>11.0f}"
        )
    first, last = rows[0][1], rows[-1][1]
    for key in ("ingest_us", "deadline_us", "mixed_us", "churn_us"):
        print(f"growth {rows[0][0]} -> {rows[-1][0]} slots, {key}: {last[key] / first[key]:.2f}x")


if __name__ == "__main__":
    main()
