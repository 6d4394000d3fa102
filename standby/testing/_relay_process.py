"""Local Nostr relay processes, for tests, benchmarks and demos on real sockets.

:class:`RelayCluster` starts a few relay processes on ``127.0.0.1``, each on
a free port with its own directory, database and log; it waits until each
is ready and stops them by PID. :func:`running_relays` wraps that in a
context manager. Two independent relay implementations can run:

* ``"nostr-relay"`` (the default): the Python relay from PyPI
  (``pip install nostr-relay``), with a SQLite database and a config file;
  what goes into that file beyond the port and the database is a
  :class:`RelaySettings`. The cluster waits until it accepts connections.
* ``"rust-local"``: rust-nostr's ``LocalRelay`` from the ``nostr-sdk``
  wheel, served by :mod:`standby.testing._local_relay` in a child Python
  process with an LMDB database; the cluster waits for its ``ready`` line.
  It takes no settings (it always checks signatures: never lax).

:func:`local_relay_timing` is the fast timing this project runs over such
relays (silence 4 s, queries of 0.3 s: a local relay answers in a few ms).

Public through :mod:`standby.testing` (``RelayCluster``, ``RelaySettings``,
``RelayUnavailable``, ``running_relays``, ``local_relay_timing``); the
project's own tests also use its other helpers by this path.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import attrs

from ..core._timing import Timing

__all__ = [
    "RELAY_IMPLEMENTATIONS",
    "RelayCluster",
    "RelayImplementation",
    "RelayProcess",
    "RelaySettings",
    "RelayUnavailable",
    "local_relay_timing",
    "running_relays",
]

#: The relay programs a cluster can run (see the module's docstring).
RelayImplementation = Literal["nostr-relay", "rust-local"]
RELAY_IMPLEMENTATIONS: tuple[RelayImplementation, ...] = get_args(RelayImplementation)

START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
#: How often a relay that does not start is tried again (on a fresh port).
START_ATTEMPTS = 3

#: The validator that checks event signatures (a "lax" relay goes without it).
SIGNED = "nostr_relay.validators.is_signed"

_LOCAL_RELAY_TIMING: dict[str, Any] = {
    "heartbeat_interval": 1.0,
    "lease": 3.0,
    "fence_grace": 0.5,
    "max_clock_skew": 0.5,
    "silence": 4.0,
    "promotion_delay": 1.0,
    "suspect_after": 1.5,
    "claim_timeout": 0.7,
    "claim_settle": 0.9,
    "query_timeout": 0.3,
    "retry_interval": 0.5,
    "spawn_timeout": 0.5,
    "spawn_retry_backoff": 0.5,
}


def local_relay_timing(**changes: Any) -> Timing:
    """Silence 4 s, ``claim_settle`` 0.9 s, queries 0.3 s; ``changes`` override fields."""
    return Timing(**{**_LOCAL_RELAY_TIMING, **changes})


class RelayUnavailable(RuntimeError):
    """The relay program is missing, or a relay did not start."""


def relay_program(implementation: RelayImplementation = "nostr-relay") -> list[str]:
    """The command that runs a relay of ``implementation``.

    ``nostr-relay``: the program beside this Python, else on ``PATH``;
    ``rust-local``: this Python running :mod:`standby.testing._local_relay`.
    """
    if implementation not in RELAY_IMPLEMENTATIONS:
        raise ValueError(
            f"unknown relay implementation {implementation!r}: "
            f"one of {', '.join(RELAY_IMPLEMENTATIONS)}"
        )
    if implementation == "rust-local":
        if importlib.util.find_spec("nostr_sdk") is None:
            raise RelayUnavailable(
                "the `nostr-sdk` package is not installed: "
                "pip install 'nostr-sdk>=0.45,<0.46' (it comes with the dev extra)"
            )
        return [sys.executable, "-m", "standby.testing._local_relay"]
    beside = Path(sys.executable).with_name("nostr-relay")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("nostr-relay")
    if found:
        return [found]
    raise RelayUnavailable(
        "the `nostr-relay` program is not installed: `pip install nostr-relay` (see .ci/run)"
    )


#: The ports :func:`free_port` handed out in this process.
_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now and that this
    process has not handed out before.

    The kernel may offer a port again as soon as the probing socket closes:
    two calls made before either server started could get the same port (an
    etcd cluster was once given one peer port for two members, and refused
    to start with "duplicate url").
    """
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free TCP port on 127.0.0.1 that was not handed out already")


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@attrs.frozen
class RelaySettings:
    """What a relay's config file says besides its port and database.

    ``validators`` is the list of event checks (``None``: the relay's own
    defaults); ``limits`` are further top-level settings such as
    ``subscription_limit``, written as given. A ``rust-local`` relay takes
    only ``rate_limit``: ``(max_reqs, notes_per_minute)`` per connection
    (``None``: the relay's own default).
    """

    title: str = "standby relay"
    validators: tuple[str, ...] | None = None
    limits: tuple[tuple[str, int], ...] = ()
    rate_limit: tuple[int, int] | None = None

    @property
    def lax(self) -> bool:
        """Whether the relay stores events without checking their signatures."""
        return self.validators is not None and SIGNED not in self.validators

    def render(self, name: str, db: Path, port: int) -> str:
        """The YAML config file of relay ``name``."""
        lines = ["DEBUG: false", f"relay_name: {self.title} {name}", "storage:"]
        lines.append(f"  sqlalchemy.url: sqlite+aiosqlite:///{db}")
        if self.validators is not None:
            lines += ["  validators:", *(f"    - {v}" for v in self.validators)]
        lines += ["gunicorn:", f"  bind: 127.0.0.1:{port}", "  workers: 1", "  loglevel: warning"]
        lines += ["authentication:", "  enabled: false"]
        lines += [f"{key}: {value}" for key, value in self.limits]
        lines += ["logging:", "  version: 1", "  root:", "    level: WARNING"]
        return "\n".join(lines) + "\n"


class RelayProcess:
    """One relay process: its config, database, log and PID."""

    def __init__(
        self,
        name: str,
        directory: Path,
        settings: RelaySettings,
        implementation: RelayImplementation = "nostr-relay",
    ) -> None:
        self.name = name
        self.directory = directory
        self.settings = settings
        self.implementation = implementation
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_start = 0
        directory.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        state = f"pid {self.proc.pid}" if self.proc is not None and self.running else "stopped"
        return f"RelayProcess({self.name}, {self.url}, {state})"

    @property
    def lax(self) -> bool:
        """Whether this relay stores events without checking their signatures."""
        return self.implementation == "nostr-relay" and self.settings.lax

    @property
    def url(self) -> str:
        """Where to connect: ``ws://127.0.0.1:PORT/``."""
        return f"ws://127.0.0.1:{self.port}/"

    @property
    def config_path(self) -> Path:
        """The relay's config file."""
        return self.directory / "relay.yaml"

    @property
    def log_path(self) -> Path:
        """Where the relay's output goes."""
        return self.directory / "relay.log"

    @property
    def running(self) -> bool:
        """Whether the process was started and has not exited."""
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 25) -> str:
        """The last ``lines`` lines of the relay's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def command(self, program: Sequence[str]) -> list[str]:
        """The command line that serves this relay (writes its config file when it has one)."""
        if self.implementation == "rust-local":
            command = [*program, "--port", str(self.port), "--data", str(self.directory)]
            rate = self.settings.rate_limit
            if rate is not None:
                command += ["--rate-limit", str(rate[0]), str(rate[1])]
            return command
        db = self.directory / "relay.sqlite3"
        self.config_path.write_text(self.settings.render(self.name, db, self.port))
        return [*program, "-c", str(self.config_path), "serve", "--use-uvicorn"]

    def launch(self, program: Sequence[str]) -> None:
        """Start the process (does not wait for it to be ready)."""
        command = self.command(program)
        with self.log_path.open("ab") as log:
            self._log_start = log.tell()
            self.proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.directory,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = START_TIMEOUT) -> str | None:
        """Wait until the relay accepts connections; the reason when it does not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                return f"exited with code {code}"
            if self._ready():
                return None
            time.sleep(0.05)
        return f"did not accept connections on port {self.port} within {timeout:.0f}s"

    def _ready(self) -> bool:
        """Whether it is ready: its ``ready`` line printed (``rust-local``), or it accepts."""
        if self.implementation == "nostr-relay":
            return _accepts(self.port)
        from ._local_relay import READY_PREFIX

        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_start)
                text = log.read().decode(errors="replace")
        except OSError:
            return False
        return any(line.startswith(f"{READY_PREFIX} ws://") for line in text.splitlines())

    def stop(self, *, kill: bool = False) -> None:
        """Stop the process by its PID (SIGTERM, then SIGKILL when it lingers)."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.kill(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(STOP_TIMEOUT)
        except ProcessLookupError:
            pass
        # Wait until the port is free again, so a restart can bind it.
        deadline = time.monotonic() + STOP_TIMEOUT
        while _accepts(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)


class RelayCluster:
    """Relay processes, one for each of ``settings``, under ``directory/relay-N``.

    ``implementation`` chooses the relay program (see the module's
    docstring); ``rust-local`` relays ignore ``settings`` beyond their count.
    """

    def __init__(
        self,
        directory: Path,
        settings: Sequence[RelaySettings],
        *,
        implementation: RelayImplementation = "nostr-relay",
    ) -> None:
        self.implementation = implementation
        self.program = relay_program(implementation)
        self.relays = [
            RelayProcess(f"relay-{i}", directory / f"relay-{i}", one, implementation)
            for i, one in enumerate(settings)
        ]

    def __repr__(self) -> str:
        return f"RelayCluster({self.implementation}, {self.relays!r})"

    @property
    def urls(self) -> list[str]:
        """The relays' URLs, in order."""
        return [relay.url for relay in self.relays]

    def start(self, *indices: int) -> None:
        """Start the given relays (default: every stopped one) and wait until they listen.

        Raises :class:`RelayUnavailable` with the reasons and the tail of each
        failing relay's log when one did not start after a few attempts.
        """
        chosen = [self.relays[i] for i in indices] if indices else self.relays
        chosen = [relay for relay in chosen if not relay.running]
        problems: list[str] = []
        for attempt in range(START_ATTEMPTS):
            for relay in chosen:
                relay.launch(self.program)
            failed = []
            for relay in chosen:
                reason = relay.wait_ready()
                if reason is not None:
                    relay.stop(kill=True)
                    failed.append((relay, reason))
            if not failed:
                return
            problems = [f"{relay.name} ({relay.url}): {reason}" for relay, reason in failed]
            chosen = [relay for relay, _reason in failed]
            if attempt < START_ATTEMPTS - 1:
                for relay in chosen:  # the port may have been taken meanwhile
                    relay.port = free_port()
        logs = "\n\n".join(f"--- {relay.name} log ---\n{relay.log_tail()}" for relay in chosen)
        raise RelayUnavailable(
            f"could not start the local Nostr relays ({self.implementation}): "
            + "; ".join(problems)
            + "\n"
            + logs
        )

    def stop(self, index: int, *, kill: bool = False) -> None:
        """Stop relay ``index`` (``kill``: with SIGKILL at once)."""
        self.relays[index].stop(kill=kill)

    def stop_all(self) -> None:
        """Stop every relay that runs."""
        for relay in self.relays:
            relay.stop()


_Cluster = TypeVar("_Cluster", bound=RelayCluster)


@contextlib.contextmanager
def running_relays(cluster: _Cluster) -> Iterator[_Cluster]:
    """``cluster`` started, and stopped by PID at the end whatever happened."""
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop_all()
