"""A real ``redis-server`` for the test suite, with ACL users per provider.

The session fixture ``redis_server`` starts ``redis-server --bind 127.0.0.1
--port N --save '' --appendonly no`` (always bound to loopback; nothing is
written to disk) with a password on the ``default`` user, waits until it
answers and stops it by PID at the end of the session. Each provider of a
test gets its own ACL user with the rules of
:func:`standby.adapters.redis.provider_acl` (:meth:`RedisServer.provider`).
If the server cannot start, the test fails with the tail of its log (in CI
it is never skipped: see ``tests/_real.py``).
"""

from __future__ import annotations

import itertools
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _real import fail_with_log, free_port, require_program, stop_process, wait_until

from standby.adapters.redis import provider_acl

__all__ = ["RedisServer", "redis", "redis_server"]

ADMIN_PASSWORD = "admin-test-password"
_users = itertools.count(1)


def _encode(*args: str) -> bytes:
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        raw = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(parts)


class RedisServer:
    """One ``redis-server`` process on loopback."""

    def __init__(self, directory: Path) -> None:
        self.program = require_program("redis-server", "redis-server")
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"RedisServer(127.0.0.1:{self.port}, {'running' if self.running else 'stopped'})"

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.program,
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--requirepass",
                    ADMIN_PASSWORD,
                    "--dir",
                    str(self.directory),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.directory,
                start_new_session=True,
            )
        if not wait_until(lambda: self._ping() or not self.running, timeout=20.0):
            fail_with_log(f"redis-server on 127.0.0.1:{self.port}", self.log_path)
        if not self.running:
            fail_with_log(f"redis-server on 127.0.0.1:{self.port} (exited)", self.log_path)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def _ping(self) -> bool:
        try:
            return self.command("PING") == "PONG"
        except OSError:
            return False

    def command(self, *args: str) -> str:
        """One admin command (logged in as ``default``); its first reply line."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2.0) as sock:
            sock.sendall(_encode("AUTH", ADMIN_PASSWORD) + _encode(*args))
            reply = b""
            while reply.count(b"\r\n") < 2:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
        lines = reply.split(b"\r\n")
        if not lines[0].startswith(b"+OK"):
            raise RuntimeError(f"AUTH failed: {lines[0]!r}")
        answer = lines[1].decode()
        if answer.startswith("-"):
            raise RuntimeError(f"{args[0]} failed: {answer}")
        return answer[1:]

    def provider(self, label: str, prefix: str) -> tuple[str, str]:
        """A new ACL user for one provider under ``prefix``: ``(user, password)``."""
        user = f"{label}-{next(_users)}-{time.monotonic_ns() % 100000}"
        password = f"pw-{user}"
        self.command(
            "ACL", "SETUSER", user, "reset", "on", f">{password}", *provider_acl(prefix, user)
        )
        return user, password


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A running ``redis-server`` for the whole session."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis(redis_server: RedisServer) -> RedisServer:
    """The session's server, running when the test starts."""
    redis_server.start()
    return redis_server
