"""Leader election with peer libraries, beside standby, on the same machine.

Not part of the test suite or CI. Needs the ``bench`` extra (``tooz`` with
``redis``, ``kazoo``), ``redis-server`` and Debian's ``zookeeper``
(``apt-get install -y redis-server zookeeper``). Everything listens on
127.0.0.1 only.

For each library, two candidate processes run the library's own leader
election with the same detection threshold as ``bench_backends.py``
(``--threshold``, default 4 s: tooz's member timeout, ZooKeeper's session
timeout; standby's silence), and the bench measures:

* **kill -9 of the leader**: from the kill until the other candidate is
  elected;
* **pause past the lease**: the leader is stopped (``SIGSTOP``) until the
  other one is elected, then resumed (``SIGCONT``); what the resumed leader
  does in the next two seconds: does it learn that it lost, and does its
  leader code keep running beside the new leader?

    python benchmarks/bench_peers.py [--threshold 4] [--runs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _real import free_port, stop_process, wait_until
from _redis import ADMIN_PASSWORD, RedisServer

# One candidate: prints "ELECTED <t>", then "LEADING <t>" every 0.1 s while its
# leader code runs, and "STATE <t> <what>" for whatever the library reports.
TOOZ_CANDIDATE = """
import sys, time
from tooz import coordination
url, me = sys.argv[1], sys.argv[2].encode()
coordinator = coordination.get_coordinator(url, me)
coordinator.start(start_heart=True)
group = b"bench"
try:
    coordinator.create_group(group).get()
except coordination.GroupAlreadyExist:
    pass
coordinator.join_group(group).get()
elected = []
def on_elected(event):
    elected.append(time.time())
    print(f"ELECTED {elected[0]}", flush=True)
coordinator.watch_elected_as_leader(group, on_elected)
while True:
    try:
        coordinator.run_watchers()
    except Exception as exc:
        print(f"STATE {time.time()} {type(exc).__name__}", flush=True)
    if elected:
        print(f"LEADING {time.time()}", flush=True)
    time.sleep(0.1)
"""

KAZOO_CANDIDATE = """
import sys, time
from kazoo.client import KazooClient
hosts, me, threshold = sys.argv[1], sys.argv[2], float(sys.argv[3])
client = KazooClient(hosts=hosts, timeout=threshold)
client.add_listener(lambda state: print(f"STATE {time.time()} {state}", flush=True))
client.start()
def lead():
    print(f"ELECTED {time.time()}", flush=True)
    while True:
        print(f"LEADING {time.time()}", flush=True)
        time.sleep(0.1)
client.Election("/bench-election", me).run(lead)
"""


class Candidate:
    """One candidate process and the lines it printed, with their kind."""

    def __init__(self, program: str, *args: str) -> None:
        self.errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", program, *args],
            stdout=subprocess.PIPE,
            stderr=self.errors,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            text=True,
        )
        self.lines: queue.Queue[tuple[str, float, str]] = queue.Queue()
        self.seen: list[tuple[str, float, str]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            kind, _, rest = line.strip().partition(" ")
            stamp, _, what = rest.partition(" ")
            with contextlib.suppress(ValueError):
                self.lines.put((kind, float(stamp), what))

    def drain(self) -> None:
        while not self.lines.empty():
            self.seen.append(self.lines.get_nowait())

    def wait_for(self, kind: str, *, after: float, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.drain()
            for seen_kind, stamp, _what in self.seen:
                if seen_kind == kind and stamp >= after:
                    return stamp
            time.sleep(0.01)
        return None

    def since(self, after: float) -> list[tuple[str, float, str]]:
        self.drain()
        return [line for line in self.seen if line[1] >= after]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
        stop_process(self.proc)
        self.errors.close()

    def failed(self, what: str) -> SystemExit:
        self.errors.seek(0)
        tail = self.errors.read().decode(errors="replace").strip().splitlines()[-5:]
        return SystemExit(f"{what}; the candidate said:\n" + "\n".join(tail))


@contextlib.contextmanager
def zookeeper(directory: Path, tick_ms: int) -> Iterator[str]:
    java = shutil.which("java")
    jar = Path("/usr/share/java/zookeeper.jar")
    if java is None or not jar.exists():
        raise SystemExit("ZooKeeper is not installed: apt-get install -y zookeeper")
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "zoo.cfg"
    config.write_text(
        f"tickTime={tick_ms}\n"
        f"dataDir={directory / 'data'}\n"
        f"clientPort={port}\n"
        "clientPortAddress=127.0.0.1\n"
        "admin.enableServer=false\n"
        f"maxSessionTimeout={tick_ms * 20}\n"
        "4lw.commands.whitelist=ruok\n"
    )
    log = (directory / "zookeeper.log").open("wb")
    proc = subprocess.Popen(
        [
            java,
            "-cp",
            f"/etc/zookeeper/conf:{jar}",
            "-Dzookeeper.root.logger=WARN,CONSOLE",
            "org.apache.zookeeper.server.ZooKeeperServerMain",
            str(config),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:

        def ruok() -> bool:
            with contextlib.suppress(OSError):
                import socket

                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                    sock.sendall(b"ruok")
                    return sock.recv(4) == b"imok"
            return False

        if not wait_until(ruok, timeout=30):
            raise SystemExit(f"ZooKeeper did not start; see {directory / 'zookeeper.log'}")
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(proc)
        log.close()


#: The leader first, the other candidate second.
Candidates = tuple[Candidate, Candidate]


@contextlib.contextmanager
def elected_pair(program: str, args: list[list[str]], threshold: float) -> Iterator[Candidates]:
    """The first candidate elected, the second one running beside it; both stopped after."""
    first = Candidate(program, *args[0])
    second: Candidate | None = None
    try:
        if first.wait_for("ELECTED", after=0, timeout=threshold * 4) is None:
            raise first.failed("the first candidate was never elected")
        second = Candidate(program, *args[1])
        time.sleep(1.0)
        yield first, second
    finally:
        first.stop()
        if second is not None:
            second.stop()


def kill_run(program: str, args: list[list[str]], threshold: float) -> float:
    with elected_pair(program, args, threshold) as (first, second):
        killed = time.time()
        os.kill(first.proc.pid, signal.SIGKILL)
        elected = second.wait_for("ELECTED", after=killed, timeout=threshold * 5)
        if elected is None:
            raise SystemExit("nobody took over after the kill")
        return elected - killed


def pause_run(program: str, args: list[list[str]], threshold: float) -> str:
    with elected_pair(program, args, threshold) as (first, second):
        os.kill(first.proc.pid, signal.SIGSTOP)
        paused = time.time()
        elected = second.wait_for("ELECTED", after=paused, timeout=threshold * 5)
        if elected is None:
            return "nobody took over while the leader was paused"
        time.sleep(0.5)
        resumed = time.time()
        os.kill(first.proc.pid, signal.SIGCONT)
        time.sleep(2.0)
        after = first.since(resumed)
        leading = [stamp for kind, stamp, _ in after if kind == "LEADING"]
        states = [(stamp, what) for kind, stamp, what in after if kind == "STATE"]
        both = bool(leading) and bool([s for k, s, _ in second.since(resumed) if k == "LEADING"])
        told = (
            ", ".join(f"{what} after {stamp - resumed:.2f} s" for stamp, what in states[:2])
            or "no notification"
        )
        if both:
            span = max(leading) - resumed
            return (
                f"took over after {elected - paused:.1f} s; {span:.1f} s after the resume the "
                f"old leader's code still ran beside the new one ({told})"
            )
        return f"took over after {elected - paused:.1f} s; the resumed leader stopped ({told})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threshold", type=float, default=4.0, help="detection threshold (s)")
    parser.add_argument("--runs", type=int, default=3, help="kill -9 runs per library (median)")
    args = parser.parse_args()
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as directory:
        server = RedisServer(Path(directory) / "redis")
        server.start()
        try:
            url = f"redis://:{ADMIN_PASSWORD}@127.0.0.1:{server.port}?timeout={args.threshold:g}"

            # Fresh member ids every run: a killed member stays in the group
            # until its timeout, and joining under its id would fail.
            def tooz_args(run: int) -> list[list[str]]:
                return [[url, f"a{run}"], [url, f"b{run}"]]

            kills = [
                kill_run(TOOZ_CANDIDATE, tooz_args(run), args.threshold) for run in range(args.runs)
            ]
            pause = pause_run(TOOZ_CANDIDATE, tooz_args(args.runs), args.threshold)
            rows.append(("tooz (redis driver)", f"{statistics.median(kills):.2f} s", pause))
        finally:
            server.stop()
        tick = max(1, int(args.threshold * 1000 / 4))
        with zookeeper(Path(directory) / "zk", tick) as hosts:
            kazoo_args = [[hosts, "a", str(args.threshold)], [hosts, "b", str(args.threshold)]]
            kills = [
                kill_run(KAZOO_CANDIDATE, kazoo_args, args.threshold) for _ in range(args.runs)
            ]
            pause = pause_run(KAZOO_CANDIDATE, kazoo_args, args.threshold)
            rows.append(("kazoo (ZooKeeper)", f"{statistics.median(kills):.2f} s", pause))
    print(f"threshold={args.threshold}s runs={args.runs} (local servers on 127.0.0.1)")
    print(f"{'library':<22} {'kill -9 -> new leader':<22} pause past the lease, then resume")
    for name, kill, pause in rows:
        print(f"{name:<22} {kill:<22} {pause}")


if __name__ == "__main__":
    main()
