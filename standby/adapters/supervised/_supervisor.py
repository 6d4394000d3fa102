"""The lease supervisor: one small process per workload, outside the node.

Run as a script with the standard library only (``python -I _supervisor.py
RUN_DIR``), so it starts in a few milliseconds and never imports the node's
code. :class:`~standby.adapters.process.ProcessRuntime`,
:class:`~standby.adapters.podman.PodmanRuntime` and
:class:`~standby.adapters.docker.DockerRuntime` start it; nobody else needs
to.

What it does, in order:

1. Forks. The first process (the *launcher*) only relays the outcome of the
   start to its stdout as one JSON line and exits, so the runtime that
   started it can reap it at once; the second process is the supervisor
   and is parented by init (or a subreaper), never by the node.
2. Reads ``RUN_DIR/launch.json`` and starts the workload: in ``process``
   mode a child in its own process group, which gets ``SIGKILL`` when the
   supervisor dies (Linux ``PR_SET_PDEATHSIG``); in ``container`` mode a
   detached container through the engine's CLI, watched by a ``wait``
   child.
3. Writes ``RUN_DIR/record.json`` (its pid and start time, the workload's
   pid or container id), then reports ready.
4. Sleeps until the lease runs out. The lease end is a Unix time (the
   node's wall clock); the supervisor turns it into a deadline on the
   monotonic clock the moment it receives it (:func:`lease_deadline`), at
   the start and at each renewal, so a later step of the wall clock can
   neither extend nor shorten a lease it holds (failure mode 31). A
   renewal replaces ``RUN_DIR/share/lease`` (write, then rename); the
   supervisor reads that file each time it wakes (at least every
   ``_MAX_NAP`` seconds, and at the deadline before it acts on it) and
   takes a later value as a renewal. A deadline never moves earlier. The
   runtime writes no renewal once the lease it holds has run out, so a
   lease that ran out is not revived.
5. At the lease end, on ``SIGTERM``/``SIGHUP``/``SIGINT`` (a stop), or when
   the workload exits by itself: ``SIGTERM`` to the workload's process group
   (or ``kill -s TERM`` to the container), ``SIGKILL`` after ``kill_after``
   seconds, then writes ``RUN_DIR/exit.json`` and exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["TEST_CLOCK_OFFSET_ENV", "lease_deadline", "main"]

#: ``prctl`` options (linux/prctl.h).
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
#: Longest single sleep: a renewal is noticed within this.
_MAX_NAP = 0.5
#: For tests only: names a file holding seconds added to the supervisor's
#: wall clock (re-read at each look, so a test can step the clock of a
#: running supervisor). Unset, the supervisor reads ``time.time()``.
TEST_CLOCK_OFFSET_ENV = "STANDBY_SUPERVISOR_TEST_CLOCK_OFFSET"
#: How long the container engine's CLI may take for one command.
_CLI_TIMEOUT = 30.0

_stop_requested = False


def _on_stop(_signum: int, _frame: object) -> None:
    global _stop_requested  # noqa: PLW0603 - the one flag a signal handler may set
    _stop_requested = True


def _on_child(_signum: int, _frame: object) -> None:
    """Nothing to do: the wakeup fd ends the current nap."""


def lease_deadline(lease_end: float, wall_now: float, mono_now: float) -> float:
    """The instant on the monotonic clock at which a lease ending at ``lease_end`` runs out.

    ``lease_end`` is a Unix time; ``wall_now`` and ``mono_now`` are the wall
    and monotonic clocks read together when the lease end is received (at
    the start and at each renewal). Enforcing the result instead of
    ``lease_end`` keeps a later step of the wall clock from extending the
    lease (failure mode 31). One rule for every runtime here: the
    supervisor and :class:`~standby.adapters.memory.MemoryRuntime` both
    call it.
    """
    return mono_now + (lease_end - wall_now)


def _wall_clock() -> Callable[[], float]:
    """The wall clock: ``time.time``, or shifted by the test hook's offset file."""
    path = os.environ.get(TEST_CLOCK_OFFSET_ENV)
    if not path:
        return time.time

    def shifted() -> float:
        try:
            with open(path, encoding="ascii") as source:
                offset = float(source.read().strip() or 0.0)
        except (OSError, ValueError):
            offset = 0.0
        return time.time() + offset

    return shifted


def _prctl(option: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(option, value, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _write_json(path: str, data: dict[str, Any]) -> None:
    """Replace ``path`` atomically (write a temporary file, then rename)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as out:
        json.dump(data, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def exists(send: Callable[[int, int], None], target: int) -> bool:
    """Whether ``target`` (a pid for ``os.kill``, a group for ``os.killpg``) still exists.

    Signal 0 checks without sending anything; a process that is not ours
    to signal exists all the same.
    """
    try:
        send(target, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or ``None``.

    Together with the pid it names one process for good: a pid the kernel
    reuses later comes with another start time.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            text = stat.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces.
    fields = text[text.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


class _Supervisor:
    def __init__(self, run_dir: str, launch: dict[str, Any], wakeup: int) -> None:
        self.run_dir = run_dir
        self.launch = launch
        self.wakeup = wakeup
        self.lease_file = os.path.join(run_dir, "share", "lease")
        self.wall_clock = _wall_clock()
        #: The latest lease end received (Unix time), and its monotonic deadline.
        self.lease_end = float(launch["lease_end"])
        self.deadline = lease_deadline(self.lease_end, self.wall_clock(), time.monotonic())
        self.kill_after = float(launch["kill_after"])
        self.mode = str(launch["mode"])
        self.leader: int | None = None
        self.leader_status: int | None = None
        self.container: str | None = None
        self.waiter: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ start

    def start(self) -> dict[str, Any]:
        if self.mode == "process":
            return self._start_process()
        return self._start_container()

    def _child_setup(self) -> None:  # pragma: no cover - runs in the forked child
        parent = int(self.launch["supervisor_pid"])
        os.setpgid(0, 0)
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != parent:
            # The supervisor died before the death signal was armed.
            os._exit(127)

    def _start_process(self) -> dict[str, Any]:
        _prctl(_PR_SET_CHILD_SUBREAPER, 1)
        output = open(  # noqa: SIM115 - handed to the child, closed right after
            os.path.join(self.run_dir, "output.log"), "ab"
        )
        try:
            child = subprocess.Popen(
                list(self.launch["argv"]),
                executable=self.launch.get("executable"),
                env=dict(self.launch["env"]),
                cwd=self.launch.get("cwd"),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                preexec_fn=self._child_setup,  # noqa: PLW1509 - the supervisor has one thread
                close_fds=True,
            )
        finally:
            output.close()
        # The supervisor reaps with waitpid itself (it is a subreaper).
        child.returncode = 0
        self.leader = child.pid
        return {"workload_pid": child.pid, "pgid": child.pid}

    def _cli(self, *args: str, timeout: float = _CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.launch["cli"], *args],
            env=self.launch.get("cli_env"),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    def _start_container(self) -> dict[str, Any]:
        done = self._cli(*self.launch["run_args"])
        if done.returncode != 0:
            message = (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
            # A failed start may leave a created container behind.
            self._cli("rm", "--force", str(self.launch["container_name"]))
            raise _StartFailed(message)
        self.container = done.stdout.strip().splitlines()[-1]
        # The guard waits for the container; should this supervisor die (even
        # of SIGKILL) the kernel sends the guard SIGTERM and it kills the
        # container.
        guard = [sys.executable, "-I", os.path.abspath(__file__), "--guard"]
        self.waiter = subprocess.Popen(
            [*guard, self.run_dir, self.container],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            preexec_fn=_guard_setup,  # noqa: PLW1509 - the supervisor has one thread
        )
        # Ready only once the guard can act on the death signal.
        assert self.waiter.stdout is not None
        line = self.waiter.stdout.readline()
        self.waiter.stdout.close()
        if line.strip() != b"guarding":
            self._cli("rm", "--force", self.container)
            raise _StartFailed(f"the container's guard did not start ({line!r})")
        return {"container_id": self.container}

    # ------------------------------------------------------------------ run

    def _nap(self, seconds: float) -> None:
        if seconds <= 0:
            return
        with contextlib.suppress(InterruptedError):
            ready, _, _ = select.select([self.wakeup], [], [], min(seconds, _MAX_NAP))
            if ready:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self.wakeup, 512):
                        pass

    def _reap(self) -> None:
        """Collect every exited child (the workload and its orphans)."""
        if self.mode != "process":
            return
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.leader:
                self.leader_status = status

    def _workload_ended(self) -> bool:
        if self.mode == "process":
            self._reap()
            return self.leader_status is not None
        return self.waiter is not None and self.waiter.poll() is not None

    def _take_renewal(self) -> None:
        """Move the deadline by a renewal found in the lease file (if any)."""
        try:
            with open(self.lease_file, encoding="ascii") as lease:
                value = float(lease.read().strip())
        except (OSError, ValueError):
            return
        # An older or equal value is no renewal (a lease never shrinks).
        if value <= self.lease_end:
            return
        self.lease_end = value
        due = lease_deadline(value, self.wall_clock(), time.monotonic())
        self.deadline = max(self.deadline, due)

    def watch(self) -> str:
        while True:
            if _stop_requested:
                return "stopped"
            if self._workload_ended():
                return "exited"
            self._take_renewal()
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                return "lease-expired"
            self._nap(remaining)

    # ------------------------------------------------------------------ stop

    def _group_alive(self) -> bool:
        if self.leader is None:
            return False
        self._reap()
        return exists(os.killpg, self.leader)

    def _signal_group(self, signum: int) -> None:
        if self.leader is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.leader, signum)

    def _until(self, done: Callable[[], bool], deadline: float) -> bool:
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._nap(min(left, 0.05))
        return True

    def terminate(self) -> int | None:
        if self.mode == "process":
            self._signal_group(signal.SIGTERM)
            gone = self._until(lambda: not self._group_alive(), time.monotonic() + self.kill_after)
            if not gone:
                self._signal_group(signal.SIGKILL)
                self._until(lambda: not self._group_alive(), time.monotonic() + 5.0)
            status = self.leader_status
            if status is None:
                return None
            return os.waitstatus_to_exitcode(status)
        assert self.container is not None
        if self.waiter is not None and self.waiter.poll() is None:
            self._cli("kill", "--signal", "TERM", self.container)
            waiter = self.waiter

            def exited() -> bool:
                return waiter.poll() is not None

            if not self._until(exited, time.monotonic() + self.kill_after):
                self._cli("kill", "--signal", "KILL", self.container)
                self._until(exited, time.monotonic() + 10.0)
        self._cli("rm", "--force", self.container)
        if self.waiter is not None and self.waiter.poll() is None:
            self.waiter.kill()
            self.waiter.wait()
        # The guard exits with the container's exit status (or 0 when it
        # could not tell).
        return None if self.waiter is None else self.waiter.returncode


def _guard_setup() -> None:  # pragma: no cover - runs in the forked child
    os.setpgid(0, 0)
    _prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


def _guard(run_dir: str, container: str) -> int:
    """Wait for ``container`` to exit; kill it at once if the supervisor dies first.

    Started by the supervisor with ``SIGTERM`` as its parent death signal:
    a ``SIGTERM`` here means the supervisor is gone (or is stopping
    everything), so the container must not outlive it.
    """
    wake_read, wake_write = os.pipe()
    for fd in (wake_read, wake_write):
        os.set_blocking(fd, False)
    signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, _on_stop)
    signal.signal(signal.SIGCHLD, _on_child)
    with open(os.path.join(run_dir, "launch.json"), encoding="utf-8") as source:
        launch = json.load(source)
    cli, env = list(launch["cli"]), launch.get("cli_env")
    waiter = subprocess.Popen(
        [*cli, "wait", container],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL)),  # noqa: PLW1509
    )
    with contextlib.suppress(OSError):
        os.write(1, b"guarding\n")
        os.close(1)
    while waiter.poll() is None and not _stop_requested:
        with contextlib.suppress(InterruptedError):
            ready, _, _ = select.select([wake_read], [], [], _MAX_NAP)
            if ready:
                with contextlib.suppress(BlockingIOError):
                    while os.read(wake_read, 512):
                        pass
    if waiter.poll() is not None:
        assert waiter.stdout is not None
        words = waiter.stdout.read().split()
        waiter.stdout.close()
        return int(words[-1]) & 0xFF if words and words[-1].lstrip(b"-").isdigit() else 0
    for command in (["kill", "--signal", "KILL", container], ["rm", "--force", container]):
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run(
                [*cli, *command],
                env=env,
                capture_output=True,
                timeout=_CLI_TIMEOUT,
                check=False,
                stdin=subprocess.DEVNULL,
            )
    waiter.kill()
    waiter.communicate()
    exit_file = os.path.join(run_dir, "exit.json")
    if not os.path.exists(exit_file):
        with contextlib.suppress(OSError):
            _write_json(
                exit_file,
                {"reason": "supervisor-died", "returncode": None, "ended_at": time.time()},
            )
    return 0


class _StartFailed(Exception):
    """The workload could not be started; the message is for the runtime's SpawnError."""


def _launcher(read_end: int) -> int:
    """Relay the supervisor's one-line report to stdout; exit 0 when it is ready."""
    chunks = []
    while True:
        try:
            chunk = os.read(read_end, 65536)
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            continue
        if not chunk:
            break
        chunks.append(chunk)
    report = b"".join(chunks)
    if not report:
        report = json.dumps({"ok": False, "error": "the supervisor died while starting"}).encode()
    sys.stdout.buffer.write(report.rstrip(b"\n") + b"\n")
    sys.stdout.flush()
    try:
        return 0 if json.loads(report)["ok"] else 1
    except (ValueError, KeyError, TypeError):
        return 1


def _supervise(run_dir: str, write_end: int) -> int:
    wake_read, wake_write = os.pipe()
    for fd in (wake_read, wake_write):
        os.set_blocking(fd, False)
        os.set_inheritable(fd, False)
    signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, _on_stop)
    signal.signal(signal.SIGCHLD, _on_child)

    def report(data: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            os.write(write_end, json.dumps(data).encode() + b"\n")
        with contextlib.suppress(OSError):
            os.close(write_end)

    try:
        with open(os.path.join(run_dir, "launch.json"), encoding="utf-8") as source:
            launch = json.load(source)
        launch["supervisor_pid"] = os.getpid()
        supervisor = _Supervisor(run_dir, launch, wake_read)
        started = supervisor.start()
        record = {
            "version": 1,
            "run_id": launch["run_id"],
            "mode": launch["mode"],
            "provider": launch["provider"],
            "workload_id": launch["workload_id"],
            "fencing_token": launch["fencing_token"],
            "supervisor_pid": os.getpid(),
            "supervisor_start": start_time(os.getpid()),
            "started_at": time.time(),
            **started,
        }
        _write_json(os.path.join(run_dir, "record.json"), record)
    except _StartFailed as failure:
        report({"ok": False, "error": str(failure)})
        return 1
    except OSError as exc:
        report({"ok": False, "error": f"{exc.strerror or exc}: {exc.filename or ''}".strip()})
        return 1
    except Exception as exc:
        report({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return 1
    report({"ok": True, **record})

    reason = supervisor.watch()
    code = supervisor.terminate()
    _write_json(
        os.path.join(run_dir, "exit.json"),
        {"reason": reason, "returncode": code, "ended_at": time.time()},
    )
    return 0


def main(argv: list[str]) -> int:
    """Entry point: ``_supervisor.py RUN_DIR`` (or ``--guard RUN_DIR CONTAINER``)."""
    if len(argv) == 4 and argv[1] == "--guard":
        return _guard(argv[2], argv[3])
    if len(argv) != 2:
        sys.stderr.write("usage: _supervisor.py RUN_DIR | --guard RUN_DIR CONTAINER\n")
        return 2
    run_dir = argv[1]
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        return _launcher(read_end)
    os.close(read_end)
    # Detach stdout from the launcher's pipe: the runtime reads until EOF.
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 1)
    os.close(devnull)
    try:
        code = _supervise(run_dir, write_end)
    except BaseException:  # pragma: no cover - last resort, never leave a traceback pipe open
        code = 1
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
