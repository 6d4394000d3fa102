"""Runtimes with real processes and containers: spawn and stop latency, failover margins.

Measures, on this machine:

* **spawn** and **stop** latency of ``MemoryRuntime``, ``ProcessRuntime``
  (a ``sleep`` under its supervisor), ``PodmanRuntime`` and
  ``DockerRuntime`` (a busybox container, through a private podman and a
  child ``dockerd`` set up as the test suite does); medians and maxima over
  ``--runs`` runs (default 10);
* **margin** between the old workload's end and the new one's start in
  ``examples/process_failover.py``'s two scenarios (three provider
  processes, three local Nostr relays): after ``kill -9`` of the primary's
  node, and after ``SIGSTOP`` of it for twice the lease; median of
  ``--failovers`` runs (default 5), with whether two workloads ever ran at
  once.

    python benchmarks/bench_runtimes.py [--runs 10] [--failovers 5] [--skip-podman]
        [--skip-docker] [--skip-failovers]
"""

from __future__ import annotations

import argparse
import contextlib
import os
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

from _docker import private_docker  # noqa: E402
from _e2e import load_example  # noqa: E402
from _engines import Engine, EngineUnavailable  # noqa: E402
from _nostr_relays import RelayCluster  # noqa: E402
from _podman import private_podman, remove_private_podman  # noqa: E402

from standby.adapters.memory import MemoryRuntime  # noqa: E402
from standby.adapters.process import ProcessRuntime  # noqa: E402
from standby.testing._relay_process import running_relays  # noqa: E402


def summary(name: str, values: list[float], unit: str = "ms", scale: float = 1000.0) -> str:
    digits = 1 if unit == "ms" else 3
    return (
        f"{name:40} median {statistics.median(values) * scale:8.{digits}f} {unit}"
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


#: A container that stops at once on SIGTERM (a shell as PID 1 ignores signals it does not trap).
SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; sleep 600 & wait"]


#: How a case makes its runtime and spec (what it starts is undone by the stack).
_Case = Callable[[contextlib.ExitStack], Awaitable[tuple[Any, Any]]]


def installed(*programs: str) -> list[str]:
    """The real paths of ``programs`` (looked up in ``/usr/sbin`` too), or ``EngineUnavailable``."""
    path = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"
    found = [shutil.which(program, path=path) for program in programs]
    missing = [program for program, where in zip(programs, found, strict=True) if where is None]
    if missing:
        raise EngineUnavailable(f"not installed: {', '.join(missing)}")
    return [os.path.realpath(str(where)) for where in found]


async def bench_latencies(runs: int, skip: set[str], work: Path) -> None:
    async def memory(_stack: contextlib.ExitStack) -> tuple[Any, Any]:
        return MemoryRuntime("bench"), {"image": "app:1"}

    async def process(_stack: contextlib.ExitStack) -> tuple[Any, Any]:
        runtime = ProcessRuntime(work / "process", provider="bench", stop_grace=2.0)
        return runtime, {"argv": ["sleep", "600"]}

    def engine_case(name: str, setup: Engine) -> tuple[Any, Any]:
        runtime = setup.runtime(work / name, provider="bench", stop_grace=2.0)
        return runtime, {"image": setup.image, "command": SLEEPER}

    async def podman(stack: contextlib.ExitStack) -> tuple[Any, Any]:
        cli, busybox = installed("podman", "busybox")
        base = Path(tempfile.mkdtemp(prefix="sbpod-", dir="/tmp"))
        stack.callback(shutil.rmtree, base, ignore_errors=True)
        setup = await anyio.to_thread.run_sync(private_podman, cli, Path(busybox), base)
        stack.callback(remove_private_podman, setup, base)
        return engine_case("podman", setup)

    async def docker(stack: contextlib.ExitStack) -> tuple[Any, Any]:
        dockerd, cli, busybox = installed("dockerd", "docker", "busybox")
        base = Path(tempfile.mkdtemp(prefix="sbdk-", dir="/tmp"))
        stack.callback(shutil.rmtree, base, ignore_errors=True)
        engine = private_docker(dockerd, cli, Path(busybox), base)
        setup = await anyio.to_thread.run_sync(stack.enter_context, engine)
        return engine_case("docker", setup)

    cases: list[tuple[str, str, _Case]] = [
        ("memory", "MemoryRuntime", memory),
        ("process", "ProcessRuntime", process),
        ("podman", "PodmanRuntime (podman + runc)", podman),
        ("docker", "DockerRuntime (dockerd + runc)", docker),
    ]
    for key, name, make in cases:
        if key in skip:
            continue
        with contextlib.ExitStack() as stack:
            try:
                runtime, spec = await make(stack)
            except EngineUnavailable as exc:
                print(f"{name}: skipped: {exc}")
                continue
            spawns, stops = await latencies(runtime, spec, runs)
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
    parser.add_argument("--skip-docker", action="store_true")
    parser.add_argument("--skip-failovers", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-runtimes-") as tmp:
        work = Path(tmp)
        skip = {name for name in ("podman", "docker") if getattr(args, f"skip_{name}")}
        anyio.run(bench_latencies, args.runs, skip, work)
        if not args.skip_failovers and args.failovers > 0:
            bench_failovers(args.failovers, work)


if __name__ == "__main__":
    main()
