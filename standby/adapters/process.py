"""Real OS processes under a lease supervisor: :class:`ProcessRuntime`.

Each workload runs as its own process group under a small supervisor
process (``standby/adapters/supervised/_supervisor.py``, standard library only) that
lives in its own session, apart from the node. The supervisor stops the
workload at its lease end whatever happens to the node: a node that is
killed (``kill -9``), frozen (``SIGSTOP``) or restarted leaves nothing
running past the lease (``docs/safety.md``, guarantee 4). See
``docs/runtimes.md``.

Needs no extra dependency. Linux gives the strongest guarantees (a parent
death signal, ``/proc`` to recognise a supervisor after a restart); other
POSIX systems run it with the weaker checks described in the docs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import attrs

from ..protocols._contracts import ContainerStatus, RunningWorkload
from ._runtime import SpawnOrder
from .supervised._runs import (
    ENV_FENCING_TOKEN,
    ENV_LEASE_END,
    ENV_LEASE_FILE,
    ENV_RESTORE_FROM,
    ENV_RUN_ID,
    ENV_STOP_GRACE,
    ENV_WORKLOAD_ID,
    Run,
    Supervision,
)
from .supervised._runtime import SupervisedRuntime, bad_spec, open_spec, spec_env

__all__ = [
    "ENV_FENCING_TOKEN",
    "ENV_LEASE_END",
    "ENV_LEASE_FILE",
    "ENV_RESTORE_FROM",
    "ENV_STOP_GRACE",
    "ENV_WORKLOAD_ID",
    "ProcessHandle",
    "ProcessRuntime",
]

_SPEC_KEYS = frozenset({"argv", "env", "cwd"})


@attrs.frozen
class ProcessHandle:
    """A workload started by :class:`ProcessRuntime`.

    ``run_id`` names its directory in the runtime's ``state_dir``; ``pgid``
    is the workload's process group (its first process's pid);
    ``supervisor_pid`` the supervisor that bounds it.
    """

    run_id: str
    workload_id: str
    fencing_token: int
    pgid: int
    supervisor_pid: int
    supervisor_start: str | None = attrs.field(default=None, repr=False)

    @classmethod
    def _of(cls, run: Run) -> ProcessHandle:
        return cls(pgid=int(run.target), **run.handle_fields())

    def _run(self, provider: str) -> Run:
        return Run.of_handle(self, provider, target=str(self.pgid))


@attrs.frozen
class _Spec:
    argv: tuple[str, ...]
    executable: str
    env: Mapping[str, str]
    cwd: str | None


def _parse_spec(given: Any, workload_id: str) -> _Spec:
    spec = open_spec(given, workload_id, known=_SPEC_KEYS, needs="argv")
    argv = spec.get("argv")
    if (
        isinstance(argv, str | bytes)
        or not isinstance(argv, Sequence)
        or not argv
        or not all(isinstance(a, str) for a in argv)
    ):
        raise bad_spec(
            workload_id, f"spec 'argv' must be a non-empty list of strings, got {argv!r}"
        )
    env = spec_env(spec, workload_id)
    cwd = spec.get("cwd")
    if cwd is not None:
        if not isinstance(cwd, str | os.PathLike):
            raise bad_spec(workload_id, f"spec 'cwd' must be a path, got {cwd!r}")
        cwd = os.fspath(cwd)
        if not Path(cwd).is_dir():
            raise bad_spec(workload_id, f"spec 'cwd' {cwd!r} is not a directory")
    path = env.get("PATH", os.environ.get("PATH", os.defpath))
    program = argv[0]
    if os.sep in program:
        candidate = Path(cwd or ".", program) if not os.path.isabs(program) else Path(program)
        if not candidate.is_file() or not os.access(candidate, os.X_OK):
            raise bad_spec(workload_id, f"executable {program!r} not found or not executable")
        executable = str(candidate.absolute())
    else:
        found = shutil.which(program, path=path)
        if found is None:
            raise bad_spec(workload_id, f"executable {program!r} not found on PATH {path!r}")
        executable = found
    return _Spec(tuple(argv), executable, env, cwd)


class ProcessRuntime(SupervisedRuntime[ProcessHandle]):
    """A :class:`~standby.protocols.ContainerRuntime` running real OS processes.

    ``state_dir`` holds one directory per workload (its record, its lease
    file, its output); a fresh ``ProcessRuntime`` on the same directory and
    ``provider`` finds what runs (:meth:`list`). Several providers may share
    one ``state_dir``: each lists and adopts only its own workloads.

    A spec is a mapping: ``argv`` (a non-empty list of strings; the program
    is looked up on the spec's ``PATH``), optional ``env`` (variables for the
    workload; besides them it gets only the node's ``PATH`` and the
    ``STANDBY_*`` variables below) and ``cwd``.

    The workload sees ``STANDBY_WORKLOAD_ID``, ``STANDBY_FENCING_TOKEN``,
    ``STANDBY_LEASE_END`` (at spawn), ``STANDBY_LEASE_FILE`` (a file holding
    the current lease end, replaced atomically on every renewal),
    ``STANDBY_STOP_GRACE`` and, when given, ``STANDBY_RESTORE_FROM``. Its
    output goes to ``output.log`` in its run directory.

    At the lease end the supervisor sends ``SIGTERM`` to the workload's
    process group and ``SIGKILL`` shortly before ``lease_end +
    stop_grace``. ``wall_clock`` (Unix seconds) only judges whether a lease
    end is already past at spawn; the supervisor reads the system clock.
    """

    _NAME = "ProcessRuntime"
    _HANDLE = ProcessHandle

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        provider: str = "default",
        stop_grace: float = 2.0,
        wall_clock: Callable[[], float] = time.time,
        start_timeout: float = 10.0,
        python: str = sys.executable,
    ) -> None:
        self._runs = Supervision(state_dir, provider, stop_grace, wall_clock, start_timeout, python)

    @property
    def state_dir(self) -> Path:
        """Where the run directories live."""
        return self._runs.state_dir

    def lease_file(self, handle: ProcessHandle) -> Path:
        """The file holding ``handle``'s current lease end (what the workload reads)."""
        return self._runs.lease_file(self._check(handle).run_id)

    def output_file(self, handle: ProcessHandle) -> Path:
        """Where ``handle``'s workload writes its stdout and stderr."""
        return self._runs.run_dir(self._check(handle).run_id) / "output.log"

    async def check_spec(self, spec: Any, *, workload_id: str) -> None:
        """Raise :class:`~standby.SpawnError` when ``spec`` could never start.

        Checks what a spawn would, without starting anything: the spec's
        shape, the ``cwd`` and that the executable exists and is executable.
        """
        _parse_spec(spec, workload_id)

    async def _start(self, order: SpawnOrder) -> ProcessHandle:
        """Start the workload under its supervisor; return once its process runs."""
        parsed = _parse_spec(order.spec, order.workload_id)
        run_id, lease_end = self._admit(order)
        lease_file = str(self._runs.lease_file(run_id))
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            **parsed.env,
            **self._standby_env(order, run_id, lease_end, lease_file),
        }
        run = await self._runs.launch(
            mode="process",
            run_id=run_id,
            workload_id=order.workload_id,
            fencing_token=order.fencing_token,
            lease_end=lease_end,
            payload={
                "argv": list(parsed.argv),
                "executable": parsed.executable,
                "env": env,
                "cwd": parsed.cwd,
            },
        )
        return ProcessHandle._of(run)

    async def status(self, handle: Any) -> ContainerStatus:
        """``running`` while its supervisor lives, ``stopped`` once ended, ``absent`` if pruned."""
        checked = self._check(handle)
        return await self._runs.state(checked._run(self.provider))

    async def stop(self, handle: Any) -> None:
        """Stop the workload (``SIGTERM``, then ``SIGKILL``); idempotent.

        The run directory stays (its status is ``stopped``, its output and
        exit record remain readable) until :meth:`prune` removes it.
        """
        checked = self._check(handle)
        run = checked._run(self.provider)
        if not await anyio.to_thread.run_sync(self._runs.run_dir(run.run_id).is_dir):
            return
        await self._runs.stop_supervisor(run)
        # Whatever the supervisor may have left (it was killed, say): the
        # processes that still carry this run's id in their environment.
        await anyio.to_thread.run_sync(_kill_leftovers, run.run_id, checked.pgid)
        await self._runs.mark_ended(run.run_id, "stopped")

    async def prune(self, older_than: float = 3600.0) -> int:
        """Remove the directories of runs that ended over ``older_than`` seconds ago; how many."""
        return await self._runs.prune(older_than)

    async def list(self) -> Sequence[RunningWorkload]:
        """Every workload of this provider whose supervisor runs, with its lease end."""
        return [
            RunningWorkload(
                workload_id=run.workload_id,
                fencing_token=run.fencing_token,
                handle=ProcessHandle._of(run),
                lease_end=lease,
            )
            for run, lease in await self._runs.running()
        ]


def _kill_leftovers(run_id: str, pgid: int) -> int:
    """``SIGKILL`` the processes of ``pgid`` that carry ``run_id`` (Linux ``/proc``); how many."""
    marker = f"{ENV_RUN_ID}={run_id}".encode()
    killed = 0
    proc = Path("/proc")
    if not proc.is_dir():
        # Without /proc nothing proves the group is still ours (its id may
        # have been reused): leave it.
        return 0
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            if os.getpgid(pid) != pgid:
                continue
            environ = (entry / "environ").read_bytes()
        except (OSError, ProcessLookupError):
            continue
        if marker in environ.split(b"\0"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
    return killed
