"""Real Nostr relay processes for the test suite.

The session fixture ``nostr_relays`` starts three ``nostr-relay`` processes
(the Python relay from PyPI) on ``127.0.0.1``, each on a free port with its
own SQLite database and config file, waits until each accepts connections
and stops them by PID at the end of the session, whatever happened.

Relay 0 is configured *without* signature checking (``lax``): it stores
forged events and hands them out, which is how the tests prove that the
transport verifies every event itself. Relays 1 and 2 check signatures like
public relays do.

If a relay cannot start (the ``nostr-relay`` program is missing, its port is
taken, it does not answer in time), every test that needs it fails with the
reason and the tail of the relay's log: it is never skipped.

Test modules import the fixtures they use::

    from _nostr_relays import nostr_relays, relays  # noqa: F401
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["RelayCluster", "RelayProcess", "nostr_relays", "relays"]

RELAY_COUNT = 3
START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0


def relay_program() -> list[str]:
    """The command that runs ``nostr-relay`` (fails the test when it is missing)."""
    beside = Path(sys.executable).with_name("nostr-relay")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("nostr-relay")
    if found:
        return [found]
    pytest.fail(
        "the `nostr-relay` program is not installed, so the real-relay tests cannot run: "
        "`pip install nostr-relay` (see .ci/run)",
        pytrace=False,
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


_CONFIG = """\
DEBUG: false
relay_name: standby test relay {name}
storage:
  sqlalchemy.url: sqlite+aiosqlite:///{db}
  validators:
{validators}
gunicorn:
  bind: 127.0.0.1:{port}
  workers: 1
  loglevel: warning
authentication:
  enabled: false
message_timeout: 600
subscription_limit: 64
logging:
  version: 1
  root:
    level: WARNING
"""


class RelayProcess:
    """One relay process: its config, database, log and PID."""

    def __init__(self, name: str, directory: Path, *, lax: bool) -> None:
        self.name = name
        self.directory = directory
        self.lax = lax
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        state = f"pid {self.proc.pid}" if self.running else "stopped"
        return f"RelayProcess({self.name}, {self.url}, {state})"

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    @property
    def config_path(self) -> Path:
        return self.directory / "relay.yaml"

    @property
    def log_path(self) -> Path:
        return self.directory / "relay.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _write_config(self) -> None:
        validators = ["nostr_relay.validators.is_not_too_large", "nostr_relay.validators.is_recent"]
        if not self.lax:
            validators.insert(1, "nostr_relay.validators.is_signed")
        self.config_path.write_text(
            _CONFIG.format(
                name=self.name,
                db=self.directory / "relay.sqlite3",
                port=self.port,
                validators="\n".join(f"    - {v}" for v in validators),
            )
        )

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def launch(self, program: list[str]) -> None:
        """Start the process (does not wait for it to listen)."""
        self._write_config()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*program, "-c", str(self.config_path), "serve", "--use-uvicorn"],
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
            if _accepts(self.port):
                return None
            time.sleep(0.05)
        return f"did not accept connections on port {self.port} within {timeout:.0f}s"

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
    """The three relay processes of a test session."""

    def __init__(self, directory: Path, count: int = RELAY_COUNT) -> None:
        self.program = relay_program()
        self.relays = [
            RelayProcess(f"relay-{i}", directory / f"relay-{i}", lax=(i == 0)) for i in range(count)
        ]

    def __repr__(self) -> str:
        return f"RelayCluster({self.relays!r})"

    @property
    def urls(self) -> list[str]:
        return [relay.url for relay in self.relays]

    def start(self, *indices: int) -> None:
        """Start the given relays (default: every stopped one) and wait until they listen."""
        chosen = [self.relays[i] for i in indices] if indices else self.relays
        chosen = [relay for relay in chosen if not relay.running]
        problems: list[str] = []
        for attempt in range(3):
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
            if attempt < 2:
                for relay in chosen:  # the port may have been taken meanwhile
                    relay.port = free_port()
        logs = "\n\n".join(f"--- {relay.name} log ---\n{relay.log_tail()}" for relay in chosen)
        pytest.fail(
            "could not start the local Nostr relays: " + "; ".join(problems) + "\n" + logs,
            pytrace=False,
        )

    def stop(self, index: int, *, kill: bool = False) -> None:
        self.relays[index].stop(kill=kill)

    def stop_all(self) -> None:
        for relay in self.relays:
            relay.stop()


@pytest.fixture(scope="session")
def nostr_relays(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayCluster]:
    """Three running relay processes for the whole session (stopped at its end)."""
    cluster = RelayCluster(tmp_path_factory.mktemp("nostr-relays"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop_all()


@pytest.fixture
def relays(nostr_relays: RelayCluster) -> RelayCluster:
    """The session's relays, every one of them running when the test starts."""
    nostr_relays.start()
    return nostr_relays


def backends() -> list[Any]:
    """``anyio_backend`` params for tests on real sockets: asyncio and trio, real clocks."""
    return ["asyncio", "trio"]


_key_numbers = itertools.count(1)


def fixed_keys() -> Any:
    """A fresh key pair, derived from a counter: the same keys on every run.

    Tests use these instead of random keys, so a failure reproduces exactly.
    """
    from standby.adapters.nostr import NostrKeys

    seed = f"standby-test-key-{next(_key_numbers)}".encode()
    return NostrKeys.from_secret(hashlib.sha256(seed).hexdigest())
