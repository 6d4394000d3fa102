"""A private docker daemon for the tests: a child ``dockerd`` with its own everything.

Nothing here touches the machine's docker state. The session fixture
``docker`` (import ``docker_fixture``) starts Debian's ``dockerd`` (package
``docker.io``) as a child process, in a temporary directory of its own:

- its own ``--data-root``, ``--exec-root`` (where it starts its own
  containerd), ``--pidfile`` and ``--config-file`` (so the machine's
  ``/etc/docker/daemon.json`` does not count), which only moves the
  daemon's identity key into the directory (``deprecated-key-path``:
  dockerd 20.10 writes ``/etc/docker/key.json`` otherwise);
- one unix socket, ``--host unix://DIR/docker.sock``, and no TCP;
- no networking of its own: ``--bridge none --iptables=false
  --ip-forward=false --ip-masq=false`` (containers run with ``--network
  none``);
- the busybox image of ``tests/_engines.py`` imported with ``docker
  import``, so nothing is ever pulled.

The fixture waits until the socket answers ``/_ping``, fails with the
daemon's log when it does not start, and at the end removes every
container, stops the daemon by its PID (``SIGTERM``, then ``SIGKILL`` after
a bound) and removes the directory. Without ``dockerd``, the docker CLI or
busybox the tests skip with the ``apt-get`` line (they fail in CI, see
``tests/_real.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from _engines import IMAGE, Engine, EngineUnavailable, import_busybox
from _real import fail_with_log, require_program, stop_process, wait_until

__all__ = ["APT", "DockerdDidNotStart", "docker_fixture", "private_docker"]

APT = "docker.io busybox-static"
#: How long the daemon may take to answer, and to stop (it stops its containerd too).
START_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0


class DockerdDidNotStart(EngineUnavailable):
    """The child ``dockerd`` exited or never answered; ``log`` holds its messages."""

    def __init__(self, why: str, log: Path) -> None:
        super().__init__(f"dockerd ({why})")
        self.log = log


def answers(sock: Path) -> bool:
    """Whether a docker daemon answers ``GET /_ping`` on the unix socket ``sock``."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(2.0)
            client.connect(str(sock))
            client.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = client.recv(4096)
    except OSError:
        return False
    return reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n", 1)[0]


def start_dockerd(dockerd: str, base: Path) -> subprocess.Popen[bytes]:
    """Start a ``dockerd`` of our own under ``base``; return once its socket answers."""
    # Its identity key in ``base`` (dockerd 20.10 writes /etc/docker/key.json otherwise).
    config = {"deprecated-key-path": str(base / "key.json")}
    (base / "daemon.json").write_text(json.dumps(config))
    sock = base / "docker.sock"
    log = base / "dockerd.log"
    command = [
        dockerd,
        "--data-root", str(base / "data"),
        "--exec-root", str(base / "exec"),
        "--pidfile", str(base / "dockerd.pid"),
        "--config-file", str(base / "daemon.json"),
        "--host", f"unix://{sock}",
        "--bridge", "none",
        "--iptables=false",
        "--ip-forward=false",
        "--ip-masq=false",
    ]  # fmt: skip
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    up = wait_until(lambda: process.poll() is not None or answers(sock), timeout=START_TIMEOUT)
    if process.poll() is not None:
        raise DockerdDidNotStart(f"exited with status {process.returncode}", log)
    if not up:
        stop_dockerd(process, base)
        raise DockerdDidNotStart(f"did not answer on {sock} within {START_TIMEOUT:g}s", log)
    return process


def _ours(pid: int, base: Path) -> bool:
    """Whether ``pid`` runs with a path under ``base`` on its command line."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return os.fsencode(str(base)) in cmdline


def stop_dockerd(process: subprocess.Popen[bytes], base: Path) -> None:
    """Stop the daemon by its PID; should it need ``SIGKILL``, what it leaves goes too.

    A daemon stopped by ``SIGTERM`` stops its containerd and unmounts its
    data root itself; one killed leaves both, so its containerd is killed
    by the PID in its pid file and the mounts under ``base`` are unmounted.
    """
    stop_process(process, timeout=STOP_TIMEOUT)
    pidfile = base / "exec" / "containerd" / "containerd.pid"
    with contextlib.suppress(OSError, ValueError):
        pid = int(pidfile.read_text().strip())
        if _ours(pid, base):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        prefix = f"{base}/"
        for mount in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
            subprocess.run(["umount", "--lazy", mount], capture_output=True, check=False)


@contextlib.contextmanager
def private_docker(dockerd: str, cli: str, busybox: Path, base: Path) -> Iterator[Engine]:
    """A child ``dockerd`` under ``base`` with the busybox image, stopped at the end.

    Raises :class:`DockerdDidNotStart` (its log is in ``base``) or
    :class:`EngineUnavailable` (the engine's message) when it cannot serve.
    The caller makes ``base`` (a short path: unix socket paths are limited
    to 108 bytes) and removes it.
    """
    process = start_dockerd(dockerd, base)
    try:
        host = f"unix://{base / 'docker.sock'}"
        env = {"DOCKER_CONFIG": str(base / "cli")}
        setup = Engine(
            name="docker",
            cli=cli,
            cli_args=("--host", host),
            env=env,
            image=IMAGE,
            options={"cli": cli, "host": host, "env": env},
        )
        import_busybox(setup, busybox, base)
        try:
            yield setup
        finally:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                setup.remove(*setup.run("ps", "--all", "--quiet", "--no-trunc").stdout.split())
    finally:
        stop_dockerd(process, base)


@pytest.fixture(scope="session", name="docker")
def docker_fixture() -> Iterator[Engine]:
    dockerd = require_program("dockerd", APT)
    cli = require_program("docker", APT)
    busybox = Path(require_program("busybox", APT)).resolve()
    base = Path(tempfile.mkdtemp(prefix="sbdk-", dir="/tmp"))
    try:
        with contextlib.ExitStack() as stack:
            try:
                setup = stack.enter_context(private_docker(dockerd, cli, busybox, base))
            except DockerdDidNotStart as exc:
                fail_with_log(str(exc), exc.log)
            except EngineUnavailable as exc:
                pytest.fail(str(exc), pytrace=False)
            yield setup
    finally:
        shutil.rmtree(base, ignore_errors=True)
