"""A private podman setup for the tests: own config, own storage, a local busybox image.

Nothing here touches the machine's podman state. The session fixture
``podman`` (import ``podman_fixture``) makes, in a temporary directory,

- a ``containers.conf`` with ``runtime = "runc"`` (crun fails on cgroups v1
  hybrid hosts), lowered default ulimits (the defaults exceed what an
  unprivileged container host allows), the ``cgroupfs`` cgroup manager and
  file event logging (no systemd needed), pointed at by
  ``CONTAINERS_CONF``;
- storage under ``--root``/``--runroot`` of its own;
- an image ``localhost/standby-busybox:test`` imported from a tarball of
  ``/bin/busybox`` (package ``busybox-static``) and its applet links, so
  nothing is ever pulled.

Without podman, runc or busybox the tests skip with the ``apt-get`` line
(they fail in CI, see ``tests/_real.py``); when podman is installed but
cannot run a container here, they fail with the engine's own message.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from _real import require_program

__all__ = [
    "IMAGE",
    "Podman",
    "PodmanUnavailable",
    "podman_fixture",
    "private_podman",
    "remove_private_podman",
]

IMAGE = "localhost/standby-busybox:test"
APT = "podman runc busybox-static"
APPLETS = ("sh", "sleep", "cat", "echo", "env", "true", "false", "test", "ls", "kill")

CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""


@attrs.frozen
class Podman:
    """How to reach the private podman: its CLI options and environment, and the image."""

    cli: str
    cli_args: tuple[str, ...]
    env: dict[str, str]
    image: str
    conf: Path
    root: Path
    runroot: Path

    def run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.cli, *self.cli_args, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **self.env},
            check=False,
        )

    def containers(self, label: str) -> list[str]:
        """Ids of the containers (any state) that carry ``label``."""
        done = self.run("ps", "--all", "--quiet", "--no-trunc", "--filter", f"label={label}")
        return done.stdout.split()

    def running(self, label: str) -> list[str]:
        """Ids of the running containers that carry ``label``."""
        done = self.run("ps", "--quiet", "--no-trunc", "--filter", f"label={label}")
        return done.stdout.split()


def busybox_tarball(busybox: Path) -> bytes:
    """A root filesystem holding ``/bin/busybox`` and links for its applets."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in ("bin", "tmp", "run"):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        tar.add(str(busybox), arcname="bin/busybox")
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
    return buffer.getvalue()


class PodmanUnavailable(Exception):
    """Podman is installed but cannot do what the tests need here (the engine's message)."""


def _unavailable(what: str, done: subprocess.CompletedProcess[str]) -> PodmanUnavailable:
    message = (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
    return PodmanUnavailable(f"podman cannot {what} here: {message}")


def private_podman(cli: str, busybox: Path, base: Path) -> Podman:
    """Configure a podman of our own under ``base`` and import the busybox image into it."""
    conf = base / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    setup = Podman(
        cli=cli,
        cli_args=("--root", str(base / "root"), "--runroot", str(base / "run")),
        env={"CONTAINERS_CONF": str(conf)},
        image=IMAGE,
        conf=conf,
        root=base / "root",
        runroot=base / "run",
    )
    tarball = base / "busybox.tar"
    tarball.write_bytes(busybox_tarball(busybox))
    done = setup.run("import", str(tarball), IMAGE)
    if done.returncode != 0:
        raise _unavailable(f"import a local image ({tarball})", done)
    done = setup.run(
        "run", "--rm", "--network", "none", "--pull", "never", IMAGE, "echo", "podman-ok"
    )
    if done.returncode != 0 or "podman-ok" not in done.stdout:
        raise _unavailable("run a container", done)
    return setup


def remove_private_podman(setup: Podman, base: Path) -> None:
    """Remove every container and image of the private podman, then its directory."""
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        setup.run("rm", "--all", "--force", "--time", "0")
        setup.run("rmi", "--all", "--force")
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session", name="podman")
def podman_fixture() -> Iterator[Podman]:
    cli = require_program("podman", APT)
    require_program("runc", APT)
    busybox = Path(require_program("busybox", APT)).resolve()
    # A short path: podman puts unix sockets under the run root.
    base = Path(tempfile.mkdtemp(prefix="sbpod-", dir="/tmp"))
    try:
        setup = private_podman(cli, busybox, base)
    except PodmanUnavailable as exc:
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(str(exc), pytrace=False)
    try:
        yield setup
    finally:
        remove_private_podman(setup, base)
