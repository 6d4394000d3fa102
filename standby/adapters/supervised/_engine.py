"""What the container engines share: one container per workload, driven through the CLI.

:class:`EngineRuntime` is the whole of a container runtime whose engine
speaks the podman/docker command line: how the CLI is run, the labels a
container carries, the ``run`` line the supervisor executes (so the lease
supervisor and its guard bound the container from its first instant),
``status``, ``stop`` and ``list`` (``ps`` by label, then ``container
inspect``). :class:`~standby.adapters.podman.PodmanRuntime` and
:class:`~standby.adapters.docker.DockerRuntime` only choose the CLI and how
it reaches its engine.

Only commands and output that both engines share are used: ``run
--detach``, ``kill --signal``, ``wait``, ``stop -t``, ``rm --force``, ``ps
--quiet --no-trunc --filter``, ``image inspect --format``, ``container
inspect`` (whose JSON has the same ``Id``, ``Config.Labels`` and
``State`` in both; ``ps --format json`` does not).
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
from typing import Any, ClassVar, TypedDict, TypeVar

import anyio
import anyio.to_thread
import attrs

from ...core._errors import RuntimeFailure, SpawnError
from ...protocols._contracts import ContainerStatus, RunningWorkload
from .._runtime import SpawnOrder
from ._runs import Run, Supervision
from ._runtime import SupervisedRuntime, bad_spec, open_spec, spec_env

__all__ = [
    "CONTAINER_LEASE_FILE",
    "ContainerHandle",
    "EngineOptions",
    "EngineRuntime",
    "Labelled",
    "parse_inspect",
]

#: Where the lease file appears inside the container (its directory is mounted read-only).
CONTAINER_LEASE_FILE = "/run/standby/lease"

_SPEC_KEYS = frozenset({"image", "command", "env"})
#: ``State.Status`` values (podman, docker) of a container that runs or will run again.
_RUNNING = frozenset({"running", "paused", "stopping", "restarting"})
#: How the engines say an image is missing (podman, docker).
_NO_IMAGE = ("image not known", "no such image", "unable to find image")
#: What docker answers a removal while another is under way (the container's
#: own supervisor removing it as it exits, say): it is going, not refused.
_REMOVING = "already in progress"
#: How long (seconds) to wait for a removal someone else started.
_REMOVAL_WAIT = 10.0
#: The labels every container gets, under the runtime's prefix.
_LABELS = ("provider", "workload", "token", "run", "lease-end")


HandleT = TypeVar("HandleT", bound="ContainerHandle")


@attrs.frozen
class ContainerHandle:
    """A container started by an engine runtime (``container`` is its engine id).

    Each engine has its own subclass, so one engine's runtime refuses the
    other's handles.
    """

    run_id: str
    workload_id: str
    fencing_token: int
    container: str
    supervisor_pid: int = attrs.field(default=0, repr=False)
    supervisor_start: str | None = attrs.field(default=None, repr=False)

    @classmethod
    def _of(cls: type[HandleT], run: Run) -> HandleT:
        return cls(container=run.target, **run.handle_fields())

    def _run(self, provider: str) -> Run:
        return Run.of_handle(self, provider, target=self.container)


#: A parsed spec: the image, the command and the spec's own environment.
_Spec = tuple[str, list[str], dict[str, str]]


def _parse_spec(given: Any, workload_id: str) -> _Spec:
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


def _name(run_id: str) -> str:
    """The container's name: the run's id, which no other run has."""
    return f"standby-{run_id}"


@attrs.frozen
class Labelled:
    """What one container's labels say: its run, workload, token and lease end at spawn."""

    container: str
    run_id: str
    workload_id: str
    fencing_token: int
    lease_end: float


def parse_inspect(code: int, out: str, err: str, *, prefix: str, provider: str) -> list[Labelled]:
    """The running containers of ``provider`` in ``container inspect``'s output.

    ``code``, ``out`` and ``err`` are the command's exit status and output.
    A container whose labels are missing or malformed, of another provider
    or not running is left out (it may be gone since ``ps``: the engine
    then prints what it found and fails). Raises :class:`RuntimeFailure`
    when the output is not the JSON list the engines print.
    """
    try:
        rows = json.loads(out or "[]")
    except ValueError as exc:
        if code != 0:
            raise RuntimeFailure(f"cannot inspect containers: {err}") from exc
        raise RuntimeFailure(f"the engine's inspect output is not JSON: {out[:200]!r}") from exc
    if not isinstance(rows, list):
        raise RuntimeFailure(f"the engine's inspect output is not a list: {out[:200]!r}")
    found = []
    for row in rows:
        if not isinstance(row, Mapping):
            continue
        labels = (row.get("Config") or {}).get("Labels") or {}
        running = (row.get("State") or {}).get("Running")
        if labels.get(f"{prefix}.provider") != provider or running is not True:
            continue
        try:
            found.append(
                Labelled(
                    container=str(row.get("Id") or ""),
                    run_id=str(labels[f"{prefix}.run"]),
                    workload_id=str(labels[f"{prefix}.workload"]),
                    fencing_token=int(labels[f"{prefix}.token"]),
                    lease_end=float(labels[f"{prefix}.lease-end"]),
                )
            )
        except (KeyError, ValueError, TypeError):
            continue
    return found


class EngineOptions(TypedDict, total=False):
    """The keyword options of :class:`EngineRuntime` (for an engine that adds its own)."""

    provider: str
    stop_grace: float
    cli: str | None
    env: Mapping[str, str] | None
    network: str
    label_prefix: str
    wall_clock: Callable[[], float]
    start_timeout: float
    cli_timeout: float
    python: str


class EngineRuntime(SupervisedRuntime[HandleT]):
    """A :class:`~standby.protocols.ContainerRuntime` over a podman-compatible CLI.

    ``state_dir`` holds one run directory per container (the supervisor's
    record and the lease file); ``list()`` asks the engine for this
    provider's running containers by label, so a fresh object finds them.
    ``cli`` is the engine's command, ``cli_args`` global options put before
    every command, ``env`` extra variables for the CLI.
    """

    #: The engine's CLI when ``cli`` is not given.
    _CLI: ClassVar[str]

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        provider: str = "default",
        stop_grace: float = 2.0,
        cli: str | None = None,
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
        if isinstance(cli_args, str | bytes):
            raise TypeError(f"cli_args must be a list of strings, got the string {cli_args!r}")
        self.cli = self._CLI if cli is None else cli
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

    def _run_args(self, order: SpawnOrder, spec: _Spec, run_id: str, end: float) -> list[str]:
        """The ``run`` command line that starts ``order`` (its parsed ``spec``) as ``run_id``."""
        image, command, env = spec
        env = {**env, **self._standby_env(order, run_id, end, CONTAINER_LEASE_FILE)}
        values = (self.provider, order.workload_id, str(order.fencing_token), run_id, repr(end))
        share = self._runs.lease_file(run_id).parent
        args = ["run", "--detach", "--name", _name(run_id), "--network", self.network]
        args += ["--pull", "never", "--volume", f"{share}:{Path(CONTAINER_LEASE_FILE).parent}:ro"]
        for key, value in zip(_LABELS, values, strict=True):
            args += ["--label", f"{self._label(key)}={value}"]
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        return [*args, "--", image, *command]

    async def _start(self, order: SpawnOrder) -> HandleT:
        """Start the container under its supervisor; return once it runs."""
        spec = _parse_spec(order.spec, order.workload_id)
        run_id, lease_end = self._admit(order)
        name, image = _name(run_id), spec[0]
        run_args = self._run_args(order, spec, run_id, lease_end)
        try:
            run = await self._runs.launch(
                mode="container",
                run_id=run_id,
                workload_id=order.workload_id,
                fencing_token=order.fencing_token,
                lease_end=lease_end,
                payload={
                    "cli": self._command(),
                    "cli_env": self.cli_env,
                    "run_args": run_args,
                    "container_name": name,
                },
                cleanup=lambda: self._remove(name),
            )
        except SpawnError as exc:
            if not any(text in str(exc).lower() for text in _NO_IMAGE):
                raise
            raise SpawnError(
                f"{exc} (image {image!r} is not present locally, and nothing is pulled)",
                workload_id=exc.workload_id,
            ) from exc
        handle: HandleT = self._HANDLE._of(run)
        return handle

    async def _remove(self, container: str) -> None:
        """Remove ``container`` (by name or id) if it exists, whatever its state."""
        # Killed first: `rm --force` alone waits out the stop timeout on podman.
        await self._cli("kill", "--signal", "KILL", container)
        await self._unless_gone(f"remove container {container}", "rm", "--force", container)

    async def _unless_gone(self, what: str, *args: str) -> None:
        """Run the CLI with ``args``; unless the container is gone, a failure raises.

        A removal already under way (docker refuses a second one) is waited
        out: the container is gone when this returns.
        """
        code, _out, err = await self._cli(*args)
        if code == 0 or "no such" in err.lower():
            return
        if _REMOVING in err.lower():
            container = args[-1]
            with anyio.move_on_after(_REMOVAL_WAIT):
                while True:
                    code, _out, err = await self._cli("container", "inspect", container)
                    if code != 0 and "no such" in err.lower():
                        return
                    await anyio.sleep(0.1)
            raise RuntimeFailure(
                f"cannot {what}: a removal under way did not end within {_REMOVAL_WAIT:g} s"
            )
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
            await self._unless_gone(f"stop container {container}", "stop", "-t", grace, container)
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
        # A container may be gone since `ps`: inspect prints the others and fails.
        code, out, err = await self._cli("container", "inspect", *ids)
        found = []
        for labelled in parse_inspect(
            code, out, err, prefix=self.label_prefix, provider=self.provider
        ):
            run = await anyio.to_thread.run_sync(self._runs.read_run, labelled.run_id)
            lease = await anyio.to_thread.run_sync(self._runs.read_lease, labelled.run_id)
            handle = self._HANDLE(
                run_id=labelled.run_id,
                workload_id=labelled.workload_id,
                fencing_token=labelled.fencing_token,
                container=labelled.container,
                supervisor_pid=0 if run is None else run.supervisor_pid,
                supervisor_start=None if run is None else run.supervisor_start,
            )
            found.append(
                RunningWorkload(
                    workload_id=labelled.workload_id,
                    fencing_token=labelled.fencing_token,
                    handle=handle,
                    lease_end=labelled.lease_end
                    if lease is None
                    else max(lease, labelled.lease_end),
                )
            )
        return found
