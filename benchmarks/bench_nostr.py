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
import sys
import tempfile
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _harness import (
    Factory,
    crashes,
    handovers,
    median_ms,
    nostr_connected,
    nostr_provider,
    round_trips,
)
from _nostr_relays import RelayCluster

from standby.adapters.nostr import NostrKeys
from standby.testing._relay_process import local_relay_timing, running_relays

TIMING = local_relay_timing()


async def transport_latencies(urls: list[str], runs: int) -> dict[str, list[float]]:
    async with (
        nostr_connected(urls, NostrKeys.generate()) as alice,
        nostr_connected(urls, NostrKeys.generate()) as bob,
    ):
        return await round_trips(alice, bob, runs, {"claim"})


def providers(urls: list[str]) -> Factory:
    """Makes providers with fresh keys on the relays of ``urls``."""
    return lambda name, record: nostr_provider(name, record, urls, TIMING)


# --------------------------------------------------------------------------- report


async def bench(urls: list[str], runs: int) -> list[tuple[str, float, str, bool]]:
    latencies = await transport_latencies(urls, runs)
    receive = median_ms(latencies["receive"])
    query = median_ms(latencies["query"])
    handover = median_ms(await handovers(providers(urls), runs))
    confirm, spawn = await crashes(providers(urls), runs)
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
    with (
        tempfile.TemporaryDirectory(prefix="bench-nostr-") as directory,
        running_relays(RelayCluster(Path(directory))) as cluster,
    ):
        rows = anyio.run(bench, cluster.urls, args.runs, backend=args.backend)
    print(f"backend={args.backend} runs={args.runs} relays=3 (local nostr-relay processes)")
    print(f"timing: silence={TIMING.silence}s claim_settle={TIMING.claim_settle}s")
    print(f"{'measurement':<45} {'median':>10}  target")
    for name, value, target, ok in rows:
        verdict = "" if not target else ("  ok" if ok else "  MISSED")
        print(f"{name:<45} {value:>8.1f}ms  {target}{verdict}")


if __name__ == "__main__":
    main()
