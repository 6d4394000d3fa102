"""Runtimes with real processes and containers: spawn and stop latency, failover margins.

Measures, on this machine:

* **spawn** and **stop** latency of ``MemoryRuntime``, ``ProcessRuntime``
  (a ``sleep`` under its supervisor) and ``PodmanRuntime`` (a busybox
  container, through a private podman set up as the test suite does);
  medians and maxima over ``--runs`` runs (default 10);
* **margin** between the old workload's end and the new one's start in
  ``examples/process_failover.py``'s two scenarios (three provider
  processes, three local Nostr relays): after ``kill -9`` of the primary's
  node, and after ``SIGSTOP`` of it for twice the lease; median of
  ``--failovers`` runs (default 5), with whether two workloads ever ran at
  once.

    python benchmarks/bench_runtimes.py [--runs 10] [--failovers 5] [--skip-podman]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from _e2e import load_example  # noqa: E402
from _nostr_relays import RelayCluster  # noqa: E402
from _podman import PodmanUnavailable, private_podman, remove_private_podman  # noqa: E402

from standby.adapters.memory import MemoryRuntime  # noqa: E402
from standby.adapters.podman import PodmanRuntime  # noqa: E402
from standby.adapters.process import ProcessRuntime  # noqa: E402
from standby.testing._relay_process import running_relays  # noqa: E402


def summary(name: str, values: list[float], unit: str = "ms", scale: float = 1000.0) -> str:
    digits = 1 if unit == "ms" else 3
    return (
        f"{name:34} median {statistics.median(values) * scale:8.{digits}f} {unit}"
        f"   min {min(values) * scale:8.{digits}f} {unit}"
        f"   max {max(values) * scale:8.{digits}f} {unit}   (n={len(values)})"
    )


async def latencies(runtime: Any, spec: Any, runs: int) -> tuple[list[float], list[float]]:
    spawns, stops = [], []
    for index in range(runs):
        started = time.perf_counter()
        handle = await runtime.spawn(
            spec, workload_id=f"bench-{index}", fencing_token=index, lease_end=time.time() + 600
        )
        spawns.append(time.perf_counter() - started)
        started = time.perf_counter()
        await runtime.stop(handle)
        stops.append(time.perf_counter() - started)
        assert await runtime.status(handle) != "running"
    return spawns, stops


async def bench_latencies(runs: int, skip_podman: bool, work: Path) -> None:
    cases: list[tuple[str, Callable[[], Awaitable[tuple[Any, Any, Callable[[], None]]]]]] = []

    async def memory() -> tuple[Any, Any, Callable[[], None]]:
        return MemoryRuntime("bench"), {"image": "app:1"}, lambda: None

    async def process() -> tuple[Any, Any, Callable[[], None]]:
        runtime = ProcessRuntime(work / "process", provider="bench", stop_grace=2.0)
        return runtime, {"argv": ["sleep", "600"]}, lambda: None

    async def podman() -> tuple[Any, Any, Callable[[], None]]:
        cli, found = shutil.which("podman"), shutil.which("busybox")
        if cli is None or found is None:
            raise PodmanUnavailable("podman or busybox is not installed")
        busybox = await anyio.Path(found).resolve()
        base = Path(tempfile.mkdtemp(prefix="sbpod-", dir="/tmp"))
        setup = await anyio.to_thread.run_sync(private_podman, cli, Path(busybox), base)
        runtime = PodmanRuntime(
            work / "podman",
            provider="bench",
            stop_grace=2.0,
            cli=setup.cli,
            cli_args=setup.cli_args,
            env=setup.env,
        )
        spec = {
            "image": setup.image,
            "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 600 & wait"],
        }
        return runtime, spec, lambda: remove_private_podman(setup, base)

    cases = [("MemoryRuntime", memory), ("ProcessRuntime", process)]
    if not skip_podman:
        cases.append(("PodmanRuntime (podman + runc)", podman))
    for name, make in cases:
        try:
            runtime, spec, cleanup = await make()
        except PodmanUnavailable as exc:
            print(f"{name}: skipped: {exc}")
            continue
        try:
            spawns, stops = await latencies(runtime, spec, runs)
        finally:
            cleanup()
        print(summary(f"{name} spawn", spawns))
        print(summary(f"{name} stop", stops))


def bench_failovers(count: int, work: Path) -> None:
    failover = load_example("process_failover")
    with running_relays(RelayCluster(work / "relays")) as cluster:
        for kind, label in (("kill", "kill -9"), ("freeze", "SIGSTOP for 2 x lease")):
            margins, overlapping = [], 0
            for index in range(count):
                tag = uuid.uuid4().hex[:10]
                result = failover.scenario(
                    work / f"{kind}-{index}", cluster.urls, kind, seed=tag, workload=f"job-{tag}"
                )
                overlapping += bool(result["overlaps"])
                if result["margin"] is not None:
                    margins.append(result["margin"])
                print(f"  {label} run {index + 1}: margin {result['margin']}", flush=True)
            print(
                summary(f"margin old stop -> new start, {label}", margins, unit="s", scale=1.0)
                + f"   runs with two workloads at once: {overlapping}/{count}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--failovers", type=int, default=5)
    parser.add_argument("--skip-podman", action="store_true")
    parser.add_argument("--skip-failovers", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-runtimes-") as tmp:
        work = Path(tmp)
        anyio.run(bench_latencies, args.runs, args.skip_podman, work)
        if not args.skip_failovers and args.failovers > 0:
            bench_failovers(args.failovers, work)


if __name__ == "__main__":
    main()
