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
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _etcd import EtcdCluster
from _harness import Factory, Provider, crashes, handovers, median_ms, round_trips
from _redis import RedisServer

from standby.adapters.etcd import EtcdTransport
from standby.adapters.memory import RuntimeRecord
from standby.adapters.redis import RedisTransport
from standby.testing._relay_process import local_relay_timing

TIMING = local_relay_timing(relay_count=1, write_quorum=1)


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


# --------------------------------------------------------------------------- measurements


async def transport_latencies(store: Store, runs: int) -> dict[str, list[float]]:
    async with store.transport("alice") as alice, store.transport("bob") as bob:
        return await round_trips(alice, bob, runs, {"claim", "announcement"})


def providers(store: Store) -> Factory:
    """Makes providers with their own accounts on ``store``."""

    def make(name: str, record: RuntimeRecord) -> Provider:
        transport = store.transport(name)
        return Provider(
            name,
            record,
            identity=str(transport.identity),
            connect=lambda: transport,
            timing=TIMING,
        )

    return make


# --------------------------------------------------------------------------- report


async def bench(store: Store, runs: int) -> list[tuple[str, str, bool | None]]:
    latencies = await transport_latencies(store, runs)
    receive = median_ms(latencies["receive"])
    query = median_ms(latencies["query"])
    handover = median_ms(await handovers(providers(store), runs))
    confirm, spawn = await crashes(providers(store), runs)
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
