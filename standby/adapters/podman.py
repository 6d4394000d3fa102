"""Real containers through the podman CLI, under a lease supervisor: :class:`PodmanRuntime`.

One container per workload, started detached with ``--network none`` and
``--pull never`` (images must already be present) and labelled with the
provider, workload id, fencing token, run id and initial lease end. A
supervisor process (the same one :class:`~standby.adapters.process.ProcessRuntime`
uses, in its *container* mode) starts the container, watches it with
``podman wait`` and, at the lease end, sends ``SIGTERM`` and then
``SIGKILL`` through ``podman kill`` and removes the container: a node that is
killed or frozen leaves nothing running past the lease (``docs/safety.md``,
guarantee 4). See ``docs/runtimes.md``.

Tested against podman 4 with runc. ``cli="docker"`` drives a
docker-compatible CLI with the same commands (``run -d``, ``kill
--signal``, ``wait``, ``inspect``, ``ps --format json``, ``rm --force``);
see the docs for what differs.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import attrs

from ..core._errors import RuntimeFailure, SpawnError
from ..protocols._contracts import ContainerStatus, RunningWorkload
from ._runtime import SpawnOrder
from .supervised._runs import Run, Supervision
from .supervised._runtime import SupervisedRuntime, bad_spec, open_spec, spec_env

__all__ = ["CONTAINER_LEASE_FILE", "PodmanHandle", "PodmanRuntime"]

#: Where the lease file appears inside the container (its directory is mounted read-only).
CONTAINER_LEASE_FILE = "/run/standby/lease"

_SPEC_KEYS = frozenset({"image", "command", "env"})
_RUNNING = frozenset({"running", "paused", "stopping"})
#: How engines say an image is missing (podman, docker).
_NO_IMAGE = ("image not known", "no such image", "unable to find image")


@attrs.frozen
class PodmanHandle:
    """A container started by :class:`PodmanRuntime` (``container`` is its engine id)."""

    run_id: str
    workload_id: str
    fencing_token: int
    container: str
    supervisor_pid: int = attrs.field(default=0, repr=False)
    supervisor_start: str | None = attrs.field(default=None, repr=False)

    @classmethod
    def _of(cls, run: Run) -> PodmanHandle:
        return cls(container=run.target, **run.handle_fields())

    def _run(self, provider: str) -> Run:
        return Run.of_handle(self, provider, target=self.container)


def _parse_spec(given: Any, workload_id: str) -> tuple[str, list[str], dict[str, str]]:
    spec = open_spec(given, workload_id, known=_SPEC_KEYS, needs="image")
    image = spec.get("image")
    if not isinstance(image, str) or not image.strip() or image.startswith("-"):
        raise bad_spec(workload_id, f"spec 'image' must name a local image, got {image!r}")
    command = spec.get("command", [])
    if isinstance(command, str | bytes) or not (
        isinstance(command, Sequence) and all(isinstance(a, str) for a in command)
    ):
        raise bad_spec(workload_id, f"spec 'command' must be a list of strings, got {command!r}")
    return image, list(command), spec_env(spec, workload_id)


class PodmanRuntime(SupervisedRuntime[PodmanHandle]):
    """A :class:`~standby.protocols.ContainerRuntime` running podman containers.

    ``state_dir`` holds one run directory per container (the supervisor's
    record and the lease file); ``list()`` asks the engine for this
    provider's running containers by label, so a fresh object finds them.
    ``cli`` is the engine's command (``podman``, or a compatible one),
    ``cli_args`` global options put before every command (``--root``,
    ``--runroot``, ``--url``...), ``env`` extra variables for the CLI (for
    example ``CONTAINERS_CONF``).

    A spec is a mapping: ``image`` (present locally: nothing is pulled),
    optional ``command`` (a list of strings) and ``env``. The container
    gets ``STANDBY_WORKLOAD_ID``, ``STANDBY_FENCING_TOKEN``,
    ``STANDBY_LEASE_END``, ``STANDBY_STOP_GRACE``, ``STANDBY_RESTORE_FROM``
    (when given) and ``STANDBY_LEASE_FILE`` (``/run/standby/lease``, kept
    current on renewal through a read-only mount).
    """

    _NAME = "PodmanRuntime"
    _HANDLE = PodmanHandle

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        provider: str = "default",
        stop_grace: float = 2.0,
        cli: str = "podman",
        cli_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        network: str = "none",
        label_prefix: str = "io.standby",
        wall_clock: Callable[[], float] = time.time,
        start_timeout: float = 60.0,
        cli_timeout: float = 60.0,
        python: str = sys.executable,
    ) -> None:
        self._runs = Supervision(state_dir, provider, stop_grace, wall_clock, start_timeout, python)
        self.cli = cli
        self.cli_args = tuple(cli_args)
        self.cli_env = {**os.environ, **(env or {})}
        self.network = network
        self.label_prefix = label_prefix
        self.cli_timeout = cli_timeout

    def _label(self, name: str) -> str:
        return f"{self.label_prefix}.{name}"

    def _command(self) -> list[str]:
        found = shutil.which(self.cli, path=self.cli_env.get("PATH"))
        if found is None:
            raise SpawnError(f"the container engine's CLI {self.cli!r} is not installed")
        return [found, *self.cli_args]

    async def _cli(self, *args: str) -> tuple[int, str, str]:
        command = [*self._command(), *args]
        try:
            with anyio.fail_after(self.cli_timeout):
                done = await anyio.run_process(command, check=False, env=self.cli_env)
        except TimeoutError as exc:
            raise RuntimeFailure(f"`{' '.join(command)}` took over {self.cli_timeout}s") from exc
        except OSError as exc:
            raise RuntimeFailure(f"cannot run `{' '.join(command)}`: {exc}") from exc
        return (
            done.returncode,
            done.stdout.decode(errors="replace").strip(),
            done.stderr.decode(errors="replace").strip(),
        )

    async def check_spec(self, spec: Any, *, workload_id: str) -> None:
        """Raise :class:`~standby.SpawnError` when ``spec`` could never start.

        Checks the spec's shape and that its image is present locally
        (nothing is ever pulled), without starting anything. Raises
        :class:`~standby.RuntimeFailure` when the engine cannot be asked.
        """
        image, _command, _env = _parse_spec(spec, workload_id)
        code, _out, err = await self._cli("image", "inspect", "--format", "{{.Id}}", image)
        if code != 0 and any(marker in err.lower() for marker in _NO_IMAGE):
            raise bad_spec(
                workload_id, f"image {image!r} is not present locally (nothing is pulled)"
            )
        if code != 0:
            raise RuntimeFailure(f"cannot ask the engine about image {image!r}: {err}")

    async def _start(self, order: SpawnOrder) -> PodmanHandle:
        """Start the container under its supervisor; return once it runs."""
        workload_id, fencing_token = order.workload_id, order.fencing_token
        image, command, spec_env = _parse_spec(order.spec, workload_id)
        run_id, lease_end = self._admit(order)
        name = f"standby-{run_id}"
        env = {**spec_env, **self._standby_env(order, run_id, lease_end, CONTAINER_LEASE_FILE)}
        labels = {
            "provider": self.provider,
            "workload": workload_id,
            "token": str(fencing_token),
            "run": run_id,
            "lease-end": repr(lease_end),
        }
        share = self._runs.lease_file(run_id).parent
        run_args = ["run", "--detach", "--name", name, "--network", self.network]
        mount = f"{share}:{Path(CONTAINER_LEASE_FILE).parent}:ro"
        run_args += ["--pull", "never", "--volume", mount]
        for key, value in labels.items():
            run_args += ["--label", f"{self._label(key)}={value}"]
        for key, value in env.items():
            run_args += ["--env", f"{key}={value}"]
        run_args += ["--", image, *command]
        run = await self._launch(
            image,
            mode="container",
            run_id=run_id,
            workload_id=workload_id,
            fencing_token=fencing_token,
            lease_end=lease_end,
            payload={
                "cli": self._command(),
                "cli_env": self.cli_env,
                "run_args": run_args,
                "container_name": name,
            },
            cleanup=lambda: self._remove(name),
        )
        return PodmanHandle._of(run)

    async def _launch(self, image: str, **options: Any) -> Run:
        try:
            return await self._runs.launch(**options)
        except SpawnError as exc:
            if not any(text in str(exc).lower() for text in _NO_IMAGE):
                raise
            raise SpawnError(
                f"{exc} (image {image!r} is not present locally, and nothing is pulled)",
                workload_id=exc.workload_id,
            ) from exc

    async def _remove(self, container: str) -> None:
        """Remove ``container`` (by name or id) if it exists, whatever its state."""
        # Killed first: `rm --force` alone waits out the stop timeout on podman.
        await self._cli("kill", "--signal", "KILL", container)
        await self._unless_gone(f"remove container {container}", "rm", "--force", container)

    async def _unless_gone(self, what: str, *args: str) -> None:
        """Run the CLI with ``args``; unless the container is gone, a failure raises."""
        code, _out, err = await self._cli(*args)
        if code != 0 and "no such" not in err.lower():
            raise RuntimeFailure(f"cannot {what}: {err}")

    async def status(self, handle: Any) -> ContainerStatus:
        """What the engine says: ``running``, ``stopped`` (exited, created) or ``absent``."""
        checked = self._check(handle)
        code, out, err = await self._cli(
            "container", "inspect", "--format", "{{.State.Status}}", checked.container
        )
        if code != 0:
            if "no such" in err.lower():
                return "absent"
            raise RuntimeFailure(f"cannot inspect container {checked.container}: {err}")
        return "running" if out.strip().lower() in _RUNNING else "stopped"

    async def stop(self, handle: Any) -> None:
        """Stop and remove the container, then forget its run (idempotent)."""
        checked = self._check(handle)
        run = checked._run(self.provider)
        supervised = bool(run.supervisor_pid) and await self._runs.stop_supervisor(run)
        if not supervised:
            # No supervisor to do it (it was killed, or this handle came
            # from a runtime without the run's state): the engine stops it.
            grace = str(max(0, math.floor(self.stop_grace - 0.5)))
            container = checked.container
            await self._unless_gone(
                f"stop container {container}", "stop", "--time", grace, container
            )
            await self._unless_gone(f"remove container {container}", "rm", "--force", container)
        await self._runs.forget(checked.run_id)

    async def list(self) -> Sequence[RunningWorkload]:
        """This provider's running containers (by label), with their current lease ends."""
        label = f"label={self._label('provider')}={self.provider}"
        code, out, err = await self._cli("ps", "--quiet", "--no-trunc", "--filter", label)
        if code != 0:
            raise RuntimeFailure(f"cannot list containers: {err}")
        ids = out.split()
        if not ids:
            return []
        # `inspect` speaks the same JSON in podman and docker (`ps --format`
        # does not); a container may be gone since `ps`: skip it.
        code, out, err = await self._cli("container", "inspect", *ids)
        try:
            rows = json.loads(out or "[]")
        except ValueError as exc:
            if code != 0:
                raise RuntimeFailure(f"cannot inspect containers: {err}") from exc
            raise RuntimeFailure(f"the engine's inspect output is not JSON: {out[:200]!r}") from exc
        found = []
        for row in rows or []:
            labels = (row.get("Config") or {}).get("Labels") or {}
            running = (row.get("State") or {}).get("Running")
            try:
                run_id = str(labels[self._label("run")])
                workload_id = str(labels[self._label("workload")])
                token = int(labels[self._label("token")])
                initial = float(labels[self._label("lease-end")])
            except (KeyError, ValueError):
                continue
            if labels.get(self._label("provider")) != self.provider or not running:
                continue
            run = await anyio.to_thread.run_sync(self._runs.read_run, run_id)
            lease = await anyio.to_thread.run_sync(self._runs.read_lease, run_id)
            handle = PodmanHandle(
                run_id=run_id,
                workload_id=workload_id,
                fencing_token=token,
                container=str(row.get("Id") or ""),
                supervisor_pid=0 if run is None else run.supervisor_pid,
                supervisor_start=None if run is None else run.supervisor_start,
            )
            found.append(
                RunningWorkload(
                    workload_id=workload_id,
                    fencing_token=token,
                    handle=handle,
                    lease_end=initial if lease is None else max(lease, initial),
                )
            )
        return found
