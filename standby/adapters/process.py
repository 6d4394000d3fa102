"""Real OS processes under a lease supervisor: :class:`ProcessRuntime`.

Each workload runs as its own process group under a small supervisor
process (``standby/adapters/_supervisor.py``, standard library only) that
lives in its own session, apart from the node. The supervisor stops the
workload at its lease end whatever happens to the node: a node that is
killed (``kill -9``), frozen (``SIGSTOP``) or restarted leaves nothing
running past the lease (``SAFETY.md``, guarantee 4). See
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

from .._errors import RuntimeFailure, SpawnError
from .._protocols import ContainerStatus, RunningWorkload
from ._supervised import (
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
        return cls(
            run_id=run.run_id,
            workload_id=run.workload_id,
            fencing_token=run.fencing_token,
            pgid=int(run.target),
            supervisor_pid=run.supervisor_pid,
            supervisor_start=run.supervisor_start,
        )

    def _run(self, provider: str) -> Run:
        return Run(
            run_id=self.run_id,
            workload_id=self.workload_id,
            fencing_token=self.fencing_token,
            provider=provider,
            supervisor_pid=self.supervisor_pid,
            supervisor_start=self.supervisor_start,
            target=str(self.pgid),
        )


@attrs.frozen
class _Spec:
    argv: tuple[str, ...]
    executable: str
    env: Mapping[str, str]
    cwd: str | None


def _bad(workload_id: str, problem: str) -> SpawnError:
    return SpawnError(f"cannot start workload {workload_id!r}: {problem}", workload_id=workload_id)


def _parse_spec(spec: Any, workload_id: str) -> _Spec:
    if not isinstance(spec, Mapping):
        raise _bad(workload_id, f"the spec must be a mapping with 'argv', got {spec!r}")
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        raise _bad(
            workload_id,
            f"unknown spec keys {sorted(map(str, unknown))}; known: {sorted(_SPEC_KEYS)}",
        )
    argv = spec.get("argv")
    if (
        isinstance(argv, str | bytes)
        or not isinstance(argv, Sequence)
        or not argv
        or not all(isinstance(a, str) for a in argv)
    ):
        raise _bad(workload_id, f"spec 'argv' must be a non-empty list of strings, got {argv!r}")
    env = spec.get("env", {})
    if not isinstance(env, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) and k and "=" not in k for k, v in env.items()
    ):
        raise _bad(workload_id, f"spec 'env' must map variable names to strings, got {env!r}")
    cwd = spec.get("cwd")
    if cwd is not None:
        if not isinstance(cwd, str | os.PathLike):
            raise _bad(workload_id, f"spec 'cwd' must be a path, got {cwd!r}")
        cwd = os.fspath(cwd)
        if not Path(cwd).is_dir():
            raise _bad(workload_id, f"spec 'cwd' {cwd!r} is not a directory")
    path = env.get("PATH", os.environ.get("PATH", os.defpath))
    program = argv[0]
    if os.sep in program:
        candidate = Path(cwd or ".", program) if not os.path.isabs(program) else Path(program)
        if not candidate.is_file() or not os.access(candidate, os.X_OK):
            raise _bad(workload_id, f"executable {program!r} not found or not executable")
        executable = str(candidate.absolute())
    else:
        found = shutil.which(program, path=path)
        if found is None:
            raise _bad(workload_id, f"executable {program!r} not found on PATH {path!r}")
        executable = found
    return _Spec(tuple(argv), executable, dict(env), cwd)


class ProcessRuntime:
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
        self._runs = Supervision(
            state_dir,
            provider=provider,
            stop_grace=stop_grace,
            wall_clock=wall_clock,
            start_timeout=start_timeout,
            python=python,
        )

    def __repr__(self) -> str:
        return f"ProcessRuntime({str(self._runs.state_dir)!r}, provider={self.provider!r})"

    @property
    def provider(self) -> str:
        """Whose workloads these are (``list()`` reports only this provider's)."""
        return self._runs.provider

    @property
    def state_dir(self) -> Path:
        """Where the run directories live."""
        return self._runs.state_dir

    @property
    def stop_grace(self) -> float:
        """Seconds after a lease end by which the workload is stopped, at most."""
        return self._runs.stop_grace

    def lease_file(self, handle: ProcessHandle) -> Path:
        """The file holding ``handle``'s current lease end (what the workload reads)."""
        return self._runs.lease_file(self._check(handle).run_id)

    def output_file(self, handle: ProcessHandle) -> Path:
        """Where ``handle``'s workload writes its stdout and stderr."""
        return self._runs.run_dir(self._check(handle).run_id) / "output.log"

    def _check(self, handle: Any) -> ProcessHandle:
        if not isinstance(handle, ProcessHandle):
            raise RuntimeFailure(f"not a handle of a ProcessRuntime: {handle!r}")
        return handle

    async def spawn(
        self,
        spec: Any,
        *,
        workload_id: str,
        fencing_token: int,
        lease_end: float,
        restore_from: str | None = None,
    ) -> ProcessHandle:
        """Start the workload under its supervisor; return once its process runs."""
        parsed = _parse_spec(spec, workload_id)
        lease_end = self._runs.check_lease_end(lease_end, workload_id)
        run_id = self._runs.new_run_id(workload_id, fencing_token)
        env = {"PATH": os.environ.get("PATH", os.defpath), **parsed.env}
        env.update(
            {
                ENV_WORKLOAD_ID: workload_id,
                ENV_FENCING_TOKEN: str(fencing_token),
                ENV_LEASE_FILE: str(self._runs.lease_file(run_id)),
                ENV_LEASE_END: repr(lease_end),
                ENV_STOP_GRACE: repr(self.stop_grace),
                ENV_RUN_ID: run_id,
            }
        )
        if restore_from is not None:
            env[ENV_RESTORE_FROM] = restore_from
        run = await self._runs.launch(
            mode="process",
            run_id=run_id,
            workload_id=workload_id,
            fencing_token=fencing_token,
            lease_end=lease_end,
            payload={
                "argv": list(parsed.argv),
                "executable": parsed.executable,
                "env": env,
                "cwd": parsed.cwd,
            },
        )
        return ProcessHandle._of(run)

    async def renew(self, handle: Any, lease_end: float) -> None:
        """Move the lease end later (an earlier one, or a stopped workload: no-op)."""
        await self._runs.renew(self._check(handle).run_id, lease_end)

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
