"""A real 3-member etcd cluster for the test suite, with auth enabled.

The session fixture ``etcd_cluster`` starts three ``etcd`` processes on
``127.0.0.1`` (free client and peer ports, one data directory each under the
session's tmp directory), waits until every member is healthy, creates the
``root`` user and turns auth on. Members are stopped by PID at the end of
the session, whatever happened; tests may kill and restart single members
(:meth:`EtcdCluster.kill`, :meth:`EtcdCluster.start`).

Each provider of a test gets its own etcd user and role
(:meth:`EtcdCluster.provider`), with the permissions of
:func:`standby.adapters.etcd.provider_permissions`: read the prefix, write
only its own area and the shared claim keys. If a member cannot start, the
test fails with the tail of its log (in CI it is never skipped: see
``tests/_real.py``).

Raft runs with a 50 ms heartbeat and a 500 ms election timeout, so a
leader change takes about a second.
"""

from __future__ import annotations

import base64
import itertools
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _real import fail_with_log, free_port, require_program, stop_process, wait_until

from standby.adapters.etcd import provider_permissions

__all__ = ["EtcdCluster", "EtcdMember", "etcd", "etcd_cluster"]

MEMBERS = 3
START_TIMEOUT = 30.0
ROOT_PASSWORD = "root-test-password"
_users = itertools.count(1)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class EtcdMember:
    """One member: its ports, data directory, log and process."""

    def __init__(self, name: str, directory: Path) -> None:
        self.name = name
        self.directory = directory
        self.client_port = free_port()
        self.peer_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        state = f"pid {self.proc.pid}" if self.running else "stopped"
        return f"EtcdMember({self.name}, {self.client_url}, {state})"

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "etcd.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def launch(self, program: str, initial_cluster: str) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    program,
                    "--name",
                    self.name,
                    "--data-dir",
                    str(self.directory / "data"),
                    "--listen-client-urls",
                    self.client_url,
                    "--advertise-client-urls",
                    self.client_url,
                    "--listen-peer-urls",
                    self.peer_url,
                    "--initial-advertise-peer-urls",
                    self.peer_url,
                    "--initial-cluster",
                    initial_cluster,
                    "--initial-cluster-state",
                    "new",
                    "--initial-cluster-token",
                    "standby-tests",
                    "--heartbeat-interval",
                    "50",
                    "--election-timeout",
                    "500",
                    "--log-level",
                    "warn",
                    # Test passwords need no strength: keep logins cheap.
                    "--bcrypt-cost",
                    "4",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def healthy(self) -> bool:
        try:
            answer = httpx.get(self.client_url + "/health", timeout=0.5)
        except httpx.HTTPError:
            return False
        return answer.status_code == 200 and '"health":"true"' in answer.text.replace(" ", "")

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5.0)
        stop_process(self.proc)


class EtcdCluster:
    """Three members on loopback, auth enabled, plus helpers to provision providers."""

    def __init__(self, directory: Path, count: int = MEMBERS) -> None:
        self.program = require_program("etcd", "etcd-server")
        self.members = [EtcdMember(f"m{i}", directory / f"m{i}") for i in range(count)]
        self.initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        self._root_token: str | None = None
        # One keep-alive client for the admin calls (a new connection per
        # call costs far more than the call).
        self.http = httpx.Client(timeout=3.0)

    def __repr__(self) -> str:
        return f"EtcdCluster({self.members!r})"

    @property
    def endpoints(self) -> list[str]:
        return [member.client_url for member in self.members]

    # -------------------------------------------------------------- processes

    def start(self, *indices: int, timeout: float = START_TIMEOUT) -> None:
        """Start the given members (default: every stopped one); wait until they serve."""
        chosen = [self.members[i] for i in indices] if indices else self.members
        chosen = [member for member in chosen if not member.running]
        for member in chosen:
            member.launch(self.program, self.initial_cluster)
        for member in chosen:
            if not wait_until(lambda m=member: m.healthy() or not m.running, timeout=timeout):
                fail_with_log(f"etcd member {member.name} ({member.client_url})", member.log_path)
            if not member.running:
                fail_with_log(f"etcd member {member.name} (exited)", member.log_path)

    def kill(self, index: int) -> None:
        """``kill -9`` one member (its data directory stays)."""
        self.members[index].stop(kill=True)

    def stop_all(self) -> None:
        for member in self.members:
            member.stop()
        self.http.close()

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until every running member reports healthy (it has a leader)."""
        for member in self.members:
            if member.running and not wait_until(member.healthy, timeout=timeout):
                fail_with_log(f"etcd member {member.name} (not healthy)", member.log_path)

    # -------------------------------------------------------------- admin calls

    def _post(self, path: str, body: dict[str, Any], *, token: str | None = None) -> Any:
        headers = {} if token is None else {"Authorization": token}
        last: Exception | None = None
        for _attempt in range(40):
            for member in self.members:
                if not member.running:
                    continue
                try:
                    answer = self.http.post(member.client_url + path, json=body, headers=headers)
                except httpx.HTTPError as exc:
                    last = exc
                    continue
                if answer.status_code == 200:
                    return answer.json()
                last = RuntimeError(f"{path}: HTTP {answer.status_code}: {answer.text}")
                if answer.status_code < 500:
                    raise last
            time.sleep(0.1)
        raise RuntimeError(f"etcd admin call {path} failed: {last}")

    def enable_auth(self) -> None:
        self._post("/v3/auth/user/add", {"name": "root", "password": ROOT_PASSWORD})
        self._post("/v3/auth/user/grant", {"user": "root", "role": "root"})
        self._post("/v3/auth/enable", {})

    def root_token(self) -> str:
        if self._root_token is None:
            answer = self._post(
                "/v3/auth/authenticate", {"name": "root", "password": ROOT_PASSWORD}
            )
            self._root_token = str(answer["token"])
        return self._root_token

    def admin(self, path: str, body: dict[str, Any]) -> Any:
        """An admin call as ``root`` (logs in again when a restarted member lost the token)."""
        try:
            return self._post(path, body, token=self.root_token())
        except RuntimeError as exc:
            if "invalid auth token" not in str(exc):
                raise
            self._root_token = None
            return self._post(path, body, token=self.root_token())

    def provider(self, label: str, prefix: str) -> tuple[str, str]:
        """A new etcd user (and role) for one provider under ``prefix``: ``(user, password)``."""
        user = f"{label}-{next(_users)}-{time.monotonic_ns() % 100000}"
        password = f"pw-{user}"
        self.admin("/v3/auth/user/add", {"name": user, "password": password})
        self.admin("/v3/auth/role/add", {"name": user})
        for kind, key, end in provider_permissions(prefix, user):
            self.admin(
                "/v3/auth/role/grant",
                {
                    "name": user,
                    "perm": {"key": _b64(key), "range_end": _b64(end), "permType": kind},
                },
            )
        self.admin("/v3/auth/user/grant", {"user": user, "role": user})
        return user, password

    def leader(self) -> int:
        """Index of the member that leads now (waits up to 10 s for one)."""
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            for index, member in enumerate(self.members):
                if not member.running:
                    continue
                try:
                    answer = self.http.post(
                        member.client_url + "/v3/maintenance/status",
                        json={},
                        headers={"Authorization": self.root_token()},
                        timeout=1.0,
                    ).json()
                except (httpx.HTTPError, ValueError):
                    continue
                if answer.get("leader") and answer.get("leader") == answer["header"]["member_id"]:
                    return index
            time.sleep(0.05)
        raise RuntimeError("the etcd cluster has no leader")


@pytest.fixture(scope="session")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """Three running etcd members with auth enabled, for the whole session."""
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd"))
    try:
        cluster.start()
        cluster.wait_healthy()
        cluster.enable_auth()
        yield cluster
    finally:
        cluster.stop_all()


@pytest.fixture
def etcd(etcd_cluster: EtcdCluster) -> EtcdCluster:
    """The session's cluster, every member running and healthy when the test starts."""
    etcd_cluster.start()
    etcd_cluster.wait_healthy()
    return etcd_cluster
