"""What the tests' private container engines share: a local busybox image and one way to drive them.

``tests/_podman.py`` and ``tests/_docker.py`` each set up an engine of their
own (its own storage, and for docker its own daemon) and hand the tests an
:class:`Engine`: how to run its CLI, the image to use, and the options that
make a runtime of ``standby`` talk to that engine. Both import the same
image, made here from ``/bin/busybox`` (package ``busybox-static``) and
links for its applets, so nothing is ever pulled.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from standby.adapters.docker import DockerRuntime
from standby.adapters.podman import PodmanRuntime
from standby.adapters.supervised._engine import EngineRuntime

__all__ = [
    "IMAGE",
    "RUNTIMES",
    "Engine",
    "EngineUnavailable",
    "busybox_tarball",
    "import_busybox",
]

IMAGE = "localhost/standby-busybox:test"
APPLETS = ("sh", "sleep", "cat", "echo", "env", "true", "false", "test", "ls", "kill")
#: The runtime class that drives each engine.
RUNTIMES: Mapping[str, type[EngineRuntime[Any]]] = {
    "podman": PodmanRuntime,
    "docker": DockerRuntime,
}


class EngineUnavailable(Exception):
    """The engine is installed but cannot do what the tests need here (its own message)."""


@attrs.frozen
class Engine:
    """A private engine: its CLI and global options, the image, and a runtime's options.

    ``options`` are the keyword arguments (JSON-friendly) that point a
    runtime of kind ``name`` at this engine.
    """

    name: str
    cli: str
    cli_args: tuple[str, ...]
    env: dict[str, str]
    image: str
    options: dict[str, Any]

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

    def remove(self, *containers: str) -> None:
        """Kill and remove ``containers`` at once (``rm --force`` alone waits on podman)."""
        if containers:
            self.run("kill", "--signal", "KILL", *containers)
            self.run("rm", "--force", *containers)

    def runtime(self, state_dir: Path, **options: Any) -> EngineRuntime[Any]:
        """A runtime of this engine's kind on ``state_dir`` (``options`` override)."""
        return RUNTIMES[self.name](state_dir, **{**self.options, **options})

    def owner_args(self) -> list[str]:
        """What ``tests/_runtime_owner.py`` needs after its state dir, lease and grace."""
        return [self.image, json.dumps(self.options)]

    def unavailable(self, what: str, done: subprocess.CompletedProcess[str]) -> EngineUnavailable:
        message = (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
        return EngineUnavailable(f"{self.name} cannot {what} here: {message}")


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


def import_busybox(engine: Engine, busybox: Path, base: Path) -> None:
    """Import the busybox image into ``engine`` and run one container of it.

    Raises :class:`EngineUnavailable` with the engine's message when either
    fails.
    """
    tarball = base / "busybox.tar"
    tarball.write_bytes(busybox_tarball(busybox))
    done = engine.run("import", str(tarball), engine.image)
    if done.returncode != 0:
        raise engine.unavailable(f"import a local image ({tarball})", done)
    done = engine.run(
        "run", "--rm", "--network", "none", "--pull", "never", engine.image, "echo", "engine-ok"
    )
    if done.returncode != 0 or "engine-ok" not in done.stdout:
        raise engine.unavailable("run a container", done)
