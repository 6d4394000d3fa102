"""Three providers in three OS processes, real Nostr relays, real workload processes.

Run: python examples/process_failover.py [--scenario kill|freeze|restart] [--relays URL,...]

Without ``--relays`` it starts three local relays itself (needs the
``nostr-relay`` program: ``pip install nostr-relay``). Then it starts one
primary and two standbys, each a :class:`~standby.node.StandbyNode` in its
own process with a :class:`~standby.adapters.process.ProcessRuntime`, hands
them one workload, and once the primary runs it:

``kill``
    ``kill -9`` the primary's node. Its workload's supervisor stops the
    workload at the lease end; the first standby takes over after the
    silence wait.
``freeze``
    ``SIGSTOP`` the primary's node for twice the lease, then ``SIGCONT``.
    The supervisor stops the workload at the lease end while the node is
    frozen; the woken node fences and stays down.
``restart``
    ``kill -9`` the primary's node and start it again at once on the same
    state directory and store: the new node finds the workload still
    running (``ProcessRuntime.list()``) and adopts it; nobody fails over.

It prints a timeline (node events and the workload runs, read from the
runtimes' records) and the margin between the old workload's end and the
new one's start. Each node also writes its event log
(``StandbyNode(event_log=...)``); ``--svg FILE`` draws the three logs with
``python -m standby timeline --svg`` (``docs/process-failover.svg`` is one
such picture). ``python examples/process_failover.py provider ...`` runs
one provider; the coordinator starts three of them that way.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio

from standby import JsonFileStore, Topology
from standby.adapters.nostr import NostrKeys, NostrTransport
from standby.adapters.process import ProcessRuntime
from standby.node import SpawnRequest, StandbyNode
from standby.testing import (
    RelayCluster,
    RelaySettings,
    RelayUnavailable,
    local_relay_timing,
    running_relays,
)

#: Fast settings that still validate: a lease of 3 s, silence 4 s (the timing
#: the project's real-relay tests use, with more time for a process to spawn).
TIMING = local_relay_timing(spawn_timeout=0.7)
STOP_GRACE = 0.5
NAMES = ("primary", "sb0", "sb1")
#: Each provider's event loop: the library runs on both.
BACKENDS = {"primary": "asyncio", "sb0": "trio", "sb1": "asyncio"}
#: The workload: prints its token and the lease end it sees, twice a second.
WORKLOAD = [
    "sh",
    "-c",
    'while :; do echo "token $STANDBY_FENCING_TOKEN lease $(cat "$STANDBY_LEASE_FILE")";'
    " sleep 0.5; done",
]


def secret_of(name: str, seed: str) -> str:
    return hashlib.sha256(f"process-failover-{seed}-{name}".encode()).hexdigest()


# --------------------------------------------------------------------------- one provider


def _describe(event: Any) -> str:
    fields = getattr(type(event), "__attrs_attrs__", ())
    parts = []
    for field in fields:
        value = getattr(event, field.name)
        if field.name in ("at", "workload_id") or value is None:
            continue
        if isinstance(value, float):
            value = f"{value:.3f}"
        elif isinstance(value, frozenset | set):
            value = f"{len(value)}-relays"
        elif hasattr(value, "name"):
            value = value.name
        parts.append(f"{field.name}={value}")
    return " ".join(parts)


async def run_provider(args: argparse.Namespace) -> None:
    keys = {name: NostrKeys.from_secret(secret_of(name, args.seed)) for name in NAMES}
    me = keys[args.name]

    def emit(event: Any) -> None:
        line = {"at": event.at, "who": args.name, "event": type(event).__name__}
        line["text"] = _describe(event)
        print(json.dumps(line), flush=True)

    runtime = ProcessRuntime(args.state_dir, provider=args.name, stop_grace=STOP_GRACE)
    async with NostrTransport(args.relays.split(","), me, reconnect_backoff=(0.05, 0.5)) as link:
        await link.wait_connected(timeout=10.0)
        store: JsonFileStore[Any] = JsonFileStore(Path(args.state_dir).with_suffix(".store.json"))
        async with StandbyNode(
            transport=link,
            runtime=runtime,
            store=store,
            timing=TIMING,
            on_event=emit,
            event_log=args.event_log,
        ) as node:
            await node.accept(
                SpawnRequest(
                    workload_id=args.workload,
                    topology=Topology(
                        primary=keys["primary"].npub,
                        standbys=(keys["sb0"].npub, keys["sb1"].npub),
                    ),
                    spec={"argv": WORKLOAD},
                    owner="consumer",
                    expires_at=args.expires_at,
                )
            )
            print(json.dumps({"at": time.time(), "who": args.name, "event": "Ready"}), flush=True)
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _signum in signals:
                    break


# --------------------------------------------------------------------------- the coordinator


class Provider:
    """One provider process, started by pid and stopped by pid."""

    def __init__(
        self,
        name: str,
        state_dir: Path,
        relays: Sequence[str],
        workload: str,
        seed: str,
        incarnation: int = 1,
    ) -> None:
        self.name = name
        self.state_dir = state_dir
        self.log = state_dir.parent / f"{name}.{incarnation}.events"
        #: The node's event log (a restarted node appends to it).
        self.event_log = event_log_of(state_dir.parent, name)
        self.event_log.parent.mkdir(parents=True, exist_ok=True)
        root = str(Path(__file__).resolve().parent.parent)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
        }
        command = [sys.executable, str(Path(__file__).resolve()), "provider", "--name", name]
        command += ["--state-dir", str(state_dir), "--relays", ",".join(relays)]
        command += ["--workload", workload, "--seed", seed, "--expires-at", str(time.time() + 3600)]
        command += ["--backend", BACKENDS[name], "--event-log", str(self.event_log)]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(command, stdout=out, env=env)
        #: The provider's previous incarnations (processes killed before this one).
        self.earlier: list[Provider] = []

    def events(self) -> list[dict[str, Any]]:
        found = []
        with contextlib.suppress(OSError):
            for line in self.log.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    found.append(json.loads(line))
        return found

    def ready(self) -> bool:
        return any(e["event"] == "Ready" for e in self.events())

    def signal(self, signum: int) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signum)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def event_log_of(base: Path, name: str) -> Path:
    """Where provider ``name`` writes its event log (its lane's name is the file's stem)."""
    return base / "event-logs" / f"{name}.jsonl"


def draw(base: Path, svg: str) -> int:
    """Draw the event logs under ``base`` into ``svg`` (``python -m standby timeline``)."""
    logs = [str(event_log_of(base, name)) for name in NAMES]
    command = [sys.executable, "-m", "standby", "timeline", *logs, "--svg", svg]
    return subprocess.run(command, check=False).returncode


def runs(state_dir: Path) -> list[dict[str, Any]]:
    """The workload runs recorded under ``state_dir``: start, end, why, token, lease end."""
    found = []
    for record_file in sorted(state_dir.glob("*/record.json")):
        record = json.loads(record_file.read_text())
        ended: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            ended = json.loads((record_file.parent / "exit.json").read_text())
        lease = float((record_file.parent / "share" / "lease").read_text())
        found.append(
            {
                "provider": record["provider"],
                "token": record["fencing_token"],
                "started_at": record["started_at"],
                "ended_at": ended.get("ended_at"),
                "reason": ended.get("reason"),
                "lease_end": lease,
            }
        )
    return found


def overlaps(all_runs: Sequence[dict[str, Any]], now: float) -> list[tuple[Any, Any]]:
    """Pairs of runs that were alive at the same instant."""
    spans = sorted((r["started_at"], r["ended_at"] or now, r) for r in all_runs)
    return [(a[2], b[2]) for i, a in enumerate(spans) for b in spans[i + 1 :] if b[0] < a[1]]


def wait_for(probe: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within}s waiting for {what}")
        time.sleep(0.05)


@contextlib.contextmanager
def providers(
    base: Path, relays: Sequence[str], *, workload: str = "job-1", seed: str = "demo"
) -> Iterator[dict[str, Provider]]:
    """Start the three providers; stop them (and check nothing runs) at the end."""
    started: dict[str, Provider] = {}
    try:
        for name in NAMES:
            started[name] = Provider(name, base / name, relays, workload, seed)
        wait_for(lambda: all(p.ready() for p in started.values()), 60.0, "the providers")
        yield started
    finally:
        for provider in started.values():
            provider.stop()
            for earlier in provider.earlier:
                earlier.stop()


def scenario(
    base: Path, relays: Sequence[str], kind: str, *, seed: str = "demo", workload: str = "job-1"
) -> dict[str, Any]:
    """Run one scenario (``kill``, ``freeze`` or ``restart``) and return what happened.

    ``restart``: ``kill -9`` of the primary's node, then a new node process
    on the same state directory and store; it must adopt the workload that
    still runs (no failover, no second copy).
    """
    with providers(base, relays, seed=seed, workload=workload) as nodes:
        primary = nodes["primary"]
        wait_for(lambda: runs(primary.state_dir), 20.0, "the primary's workload")
        time.sleep(TIMING.heartbeat_interval * 1.5)
        acted_at = time.time()
        if kind == "freeze":
            primary.signal(signal.SIGSTOP)
        else:
            primary.signal(signal.SIGKILL)
        if kind == "restart":
            primary.process.wait(5)
            again = Provider("primary", primary.state_dir, relays, workload, seed, incarnation=2)
            again.earlier = [primary, *primary.earlier]
            nodes["primary"] = primary = again
            wait_for(primary.ready, 30.0, "the restarted primary")
            # Past the old lease end and the standbys' silence wait.
            until = acted_at + TIMING.silence + TIMING.heartbeat_interval
            time.sleep(max(0.0, until - time.time()))
            now = time.time()
            every = [r for n in NAMES for r in runs(nodes[n].state_dir)]
            events = [e for n in NAMES for e in nodes[n].events()] + primary.earlier[0].events()
            every.sort(key=lambda r: r["started_at"])
            return {
                "kind": kind,
                "acted_at": acted_at,
                "woke_at": None,
                "runs": every,
                "events": events,
                "overlaps": overlaps(every, now),
                "margin": None,
            }

        def taken_over() -> bool:
            return any(runs(nodes[n].state_dir) for n in ("sb0", "sb1"))

        wait_for(taken_over, TIMING.silence + TIMING.lease + 10.0, "a standby to take over")
        if kind == "freeze":
            time.sleep(max(0.0, acted_at + 2 * TIMING.lease - time.time()))
            woke_at = time.time()  # before the signal: the node may stamp its events first
            primary.signal(signal.SIGCONT)
            # The woken node fences at once, before its next heartbeat.
            time.sleep(TIMING.heartbeat_interval)
        else:
            woke_at = None
            # Long enough for the second standby's backoff to run out too.
            time.sleep(TIMING.promotion_delay)
        now = time.time()
        every = [r for n in NAMES for r in runs(nodes[n].state_dir)]
        events = [e for n in NAMES for e in nodes[n].events()]
    every.sort(key=lambda r: r["started_at"])
    old = [r for r in every if r["provider"] == "primary"]
    new = [r for r in every if r["provider"] != "primary"]
    margin = None
    if old and new and old[0]["ended_at"] is not None:
        margin = new[0]["started_at"] - old[0]["ended_at"]
    return {
        "kind": kind,
        "acted_at": acted_at,
        "woke_at": woke_at,
        "runs": every,
        "events": events,
        "overlaps": overlaps(every, now),
        "margin": margin,
    }


_SHOWN = {
    "ContainerStarted",
    "ContainerStopped",
    "ContainerExited",
    "PromotedHere",
    "ClaimPublished",
    "LifecycleChanged",
    "SlotPhaseChanged",
    "AnnouncementPublished",
    "Reconciled",
}


def timeline(result: dict[str, Any]) -> list[str]:
    """The scenario as readable lines, times relative to the signal."""
    zero = result["acted_at"]
    rows: list[tuple[float, str]] = []
    verb = "SIGSTOP" if result["kind"] == "freeze" else "kill -9"
    rows.append((zero, f"{'coordinator':11} {verb} of the primary's node"))
    if result["kind"] == "restart":
        rows.append((zero, f"{'coordinator':11} restarts the primary's node"))
    if result["woke_at"] is not None:
        rows.append((result["woke_at"], f"{'coordinator':11} SIGCONT of the primary's node"))
    rows.extend(
        (event["at"], f"{event['who']:11} {event['event']} {event.get('text', '')}")
        for event in result["events"]
        if event["event"] in _SHOWN
    )
    for run in result["runs"]:
        who = run["provider"]
        rows.append((run["started_at"], f"{who:11} workload token {run['token']} runs"))
        if run["ended_at"] is not None:
            text = f"workload token {run['token']} gone ({run['reason']}; lease end "
            text += f"{run['lease_end'] - zero:+.2f}s)"
            rows.append((run["ended_at"], f"{who:11} {text}"))
    return [f"{at - zero:+7.2f}s  {text}" for at, text in sorted(rows, key=lambda r: r[0])]


# --------------------------------------------------------------------------- local relays


@contextlib.contextmanager
def local_relays(base: Path) -> Iterator[list[str]]:
    """Three ``nostr-relay`` processes on free local ports, stopped by pid at the end."""
    try:
        cluster = RelayCluster(base, [RelaySettings(title="process failover demo")] * 3)
    except RelayUnavailable as exc:
        raise SystemExit(f"{exc}; or pass --relays") from None
    with running_relays(cluster):
        yield cluster.urls


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    one = sub.add_parser("provider", help="run one provider (the coordinator starts three)")
    one.add_argument("--name", choices=NAMES, required=True)
    one.add_argument("--state-dir", required=True)
    one.add_argument("--relays", required=True)
    one.add_argument("--workload", required=True)
    one.add_argument("--seed", default="demo")
    one.add_argument("--expires-at", type=float, required=True)
    one.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    one.add_argument("--event-log", help="the node's event log (JSON lines)")
    parser.add_argument("--scenario", choices=("kill", "freeze", "restart"), default="kill")
    parser.add_argument("--relays", help="comma-separated relay URLs (default: start three)")
    parser.add_argument("--svg", help="draw the nodes' event logs into this SVG file")
    args = parser.parse_args(argv)
    if args.command == "provider":
        anyio.run(run_provider, args, backend=args.backend)
        return 0
    with tempfile.TemporaryDirectory(prefix="process-failover-") as tmp:
        base = Path(tmp)
        with contextlib.ExitStack() as stack:
            urls = (
                args.relays.split(",") if args.relays else stack.enter_context(local_relays(base))
            )
            result = scenario(base / "run", urls, args.scenario, seed=str(os.getpid()))
        if args.svg and draw(base / "run", args.svg) != 0:
            return 1
    print("\n".join(timeline(result)))
    if result["margin"] is not None:
        print(f"old workload gone {result['margin']:.2f}s before the new one started")
    print("two workloads at once:", "never" if not result["overlaps"] else result["overlaps"])
    took_over = result["margin"] is not None
    return 0 if not result["overlaps"] and (took_over or args.scenario == "restart") else 1


if __name__ == "__main__":
    sys.exit(main())
