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
  nothing is ever pulled (``tests/_engines.py``).

Without podman, runc or busybox the tests skip with the ``apt-get`` line
(they fail in CI, see ``tests/_real.py``); when podman is installed but
cannot run a container here, they fail with the engine's own message.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from _engines import IMAGE, Engine, EngineUnavailable, import_busybox
from _real import require_program

__all__ = ["APT", "podman_fixture", "private_podman", "remove_private_podman"]

APT = "podman runc busybox-static"

CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""


def private_podman(cli: str, busybox: Path, base: Path) -> Engine:
    """Configure a podman of our own under ``base`` and import the busybox image into it."""
    conf = base / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    cli_args = ("--root", str(base / "root"), "--runroot", str(base / "run"))
    env = {"CONTAINERS_CONF": str(conf)}
    setup = Engine(
        name="podman",
        cli=cli,
        cli_args=cli_args,
        env=env,
        image=IMAGE,
        options={"cli": cli, "cli_args": list(cli_args), "env": env},
    )
    import_busybox(setup, busybox, base)
    return setup


def remove_private_podman(setup: Engine, base: Path) -> None:
    """Remove every container and image of the private podman, then its directory."""
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        setup.run("rm", "--all", "--force", "--time", "0")
        setup.run("rmi", "--all", "--force")
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session", name="podman")
def podman_fixture() -> Iterator[Engine]:
    cli = require_program("podman", APT)
    require_program("runc", APT)
    busybox = Path(require_program("busybox", APT)).resolve()
    # A short path: podman puts unix sockets under the run root.
    base = Path(tempfile.mkdtemp(prefix="sbpod-", dir="/tmp"))
    try:
        setup = private_podman(cli, busybox, base)
    except EngineUnavailable as exc:
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(str(exc), pytrace=False)
    try:
        yield setup
    finally:
        remove_private_podman(setup, base)
