"""What the process and container runtimes share: runs under a lease supervisor.

A *run* is one spawned workload: a directory ``STATE_DIR/RUN_ID`` that holds

``launch.json``
    what the supervisor must start (written here, read once by it);
``share/lease``
    the current lease end as a decimal Unix time; the supervisor re-reads
    it at the old end, the workload may read it any time; replaced
    atomically on renewal;
``record.json``
    written by the supervisor once the workload runs: provider, workload
    id, fencing token, the supervisor's pid and kernel start time, the
    workload's process group or container id;
``exit.json``
    written by the supervisor when the workload ended (why, exit code);
``supervisor.log``, ``output.log``
    the supervisor's own messages and the workload's output (processes).

Everything the node needs after a restart is in these files, so a fresh
runtime object on the same ``state_dir`` finds what runs (``list()``). The
supervisor's pid is trusted only when its start time (from ``/proc``) and
its command line still match the record, so a reused pid is never taken
for one of ours.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

import anyio
import anyio.to_thread
import attrs

from ...core._errors import RuntimeFailure, SpawnError
from . import _supervisor

__all__ = [
    "ENV_FENCING_TOKEN",
    "ENV_LEASE_END",
    "ENV_LEASE_FILE",
    "ENV_RESTORE_FROM",
    "ENV_RUN_ID",
    "ENV_STOP_GRACE",
    "ENV_WORKLOAD_ID",
    "Run",
    "RunHandle",
    "Supervision",
    "kill_after",
]

#: Environment variables every supervised workload gets.
ENV_WORKLOAD_ID = "STANDBY_WORKLOAD_ID"
ENV_FENCING_TOKEN = "STANDBY_FENCING_TOKEN"
ENV_LEASE_FILE = "STANDBY_LEASE_FILE"
ENV_LEASE_END = "STANDBY_LEASE_END"
ENV_STOP_GRACE = "STANDBY_STOP_GRACE"
ENV_RESTORE_FROM = "STANDBY_RESTORE_FROM"
ENV_RUN_ID = "STANDBY_RUN_ID"

_SUPERVISOR = Path(_supervisor.__file__).resolve()
_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")
#: Part of ``stop_grace`` kept back for the supervisor's wake-up and the kill itself.
_KILL_MARGIN = 0.25


def kill_after(stop_grace: float) -> float:
    """Seconds between ``SIGTERM`` and ``SIGKILL`` that keep a stop within ``stop_grace``."""
    return stop_grace - min(_KILL_MARGIN, stop_grace / 2)


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe, bounded form of ``text`` (for run ids and container names)."""
    return _SLUG.sub("_", text)[:limit] or "workload"


@attrs.frozen
class Run:
    """One supervised run, as recorded in its directory.

    ``target`` is the workload's process group (processes) or container id
    (containers).
    """

    run_id: str
    workload_id: str
    fencing_token: int
    provider: str
    supervisor_pid: int
    supervisor_start: str | None
    target: str

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Run:
        """Build from a ``record.json`` mapping (``KeyError``/``ValueError`` if malformed)."""
        target = record.get("container_id", record.get("pgid"))
        if target is None:
            raise KeyError("pgid")
        start = record.get("supervisor_start")
        return cls(
            run_id=str(record["run_id"]),
            workload_id=str(record["workload_id"]),
            fencing_token=int(record["fencing_token"]),
            provider=str(record["provider"]),
            supervisor_pid=int(record["supervisor_pid"]),
            supervisor_start=None if start is None else str(start),
            target=str(target),
        )

    @classmethod
    def of_handle(cls, handle: RunHandle, provider: str, target: str) -> Run:
        """The run behind a runtime's ``handle`` (its ``target`` named by the caller)."""
        return cls(
            run_id=handle.run_id,
            workload_id=handle.workload_id,
            fencing_token=handle.fencing_token,
            provider=provider,
            supervisor_pid=handle.supervisor_pid,
            supervisor_start=handle.supervisor_start,
            target=target,
        )

    def handle_fields(self) -> dict[str, Any]:
        """What every runtime's handle keeps of this run, as keyword arguments."""
        return {
            "run_id": self.run_id,
            "workload_id": self.workload_id,
            "fencing_token": self.fencing_token,
            "supervisor_pid": self.supervisor_pid,
            "supervisor_start": self.supervisor_start,
        }


class RunHandle(Protocol):
    """What a runtime's handle of a supervised run carries (besides its target)."""

    @property
    def run_id(self) -> str: ...
    @property
    def workload_id(self) -> str: ...
    @property
    def fencing_token(self) -> int: ...
    @property
    def supervisor_pid(self) -> int: ...
    @property
    def supervisor_start(self) -> str | None: ...


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    with tmp.open("w", encoding="utf-8") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def _proc_state(pid: int) -> str | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split(" ", 1)[0]


def supervisor_alive(run: Run, run_dir: Path) -> bool:
    """Whether the supervisor of ``run`` still lives (and is really ours)."""
    if run.supervisor_pid <= 1:
        return False
    if Path("/proc").is_dir() and sys.platform.startswith("linux"):
        state = _proc_state(run.supervisor_pid)
        if state is None or state in ("Z", "X"):
            return False
        if (
            run.supervisor_start is not None
            and _supervisor.start_time(run.supervisor_pid) != run.supervisor_start
        ):
            return False
        try:
            cmdline = Path(f"/proc/{run.supervisor_pid}/cmdline").read_bytes()
        except OSError:
            return False
        return os.fsencode(str(run_dir)) in cmdline.split(b"\0")
    return _supervisor.exists(os.kill, run.supervisor_pid)


class Supervision:
    """The run directories of one ``state_dir`` and the supervisors behind them."""

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        provider: str,
        stop_grace: float,
        wall_clock: Callable[[], float],
        start_timeout: float,
        python: str,
    ) -> None:
        if not isinstance(provider, str) or not provider:
            raise ValueError(f"provider must be a non-empty string, got {provider!r}")
        if not (isinstance(stop_grace, int | float) and math.isfinite(stop_grace)) or (
            stop_grace <= 0
        ):
            raise ValueError(f"stop_grace must be a positive number of seconds, got {stop_grace!r}")
        self.state_dir = Path(state_dir).absolute()
        self.provider = provider
        self.stop_grace = float(stop_grace)
        self.wall_clock = wall_clock
        self.start_timeout = start_timeout
        self.python = python

    def run_dir(self, run_id: str) -> Path:
        return self.state_dir / run_id

    def lease_file(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "share" / "lease"

    # ------------------------------------------------------------------ spawn

    def check_lease_end(self, lease_end: float, workload_id: str) -> float:
        if not isinstance(lease_end, int | float) or not math.isfinite(lease_end):
            raise SpawnError(
                f"cannot start workload {workload_id!r}: lease_end must be a Unix time, "
                f"got {lease_end!r}",
                workload_id=workload_id,
            )
        now = self.wall_clock()
        if lease_end <= now:
            raise SpawnError(
                f"cannot start workload {workload_id!r}: its lease end {lease_end:.3f} is "
                f"already past (now {now:.3f})",
                workload_id=workload_id,
            )
        return float(lease_end)

    def new_run_id(self, workload_id: str, fencing_token: int) -> str:
        return f"{slug(workload_id)}-{fencing_token}-{secrets.token_hex(6)}"

    def _prepare(self, run_id: str, launch: dict[str, Any], lease_end: float) -> None:
        run_dir = self.run_dir(run_id)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "share").mkdir(parents=True)
        _write_text_atomic(self.lease_file(run_id), f"{lease_end!r}\n")
        _write_text_atomic(run_dir / "launch.json", json.dumps(launch))

    async def launch(
        self,
        *,
        mode: Literal["process", "container"],
        run_id: str,
        workload_id: str,
        fencing_token: int,
        lease_end: float,
        payload: Mapping[str, Any],
        cleanup: Callable[[], Awaitable[None]] | None = None,
    ) -> Run:
        """Start a supervisor for a new run; return once the workload runs.

        Raises :class:`SpawnError` with the supervisor's reason when the
        workload could not be started. Cancelled midway, it stops whatever
        already started before it re-raises; ``cleanup`` then removes what
        the supervisor may have left outside the run directory (a created
        container).
        """
        launch = {
            "version": 1,
            "mode": mode,
            "run_id": run_id,
            "provider": self.provider,
            "workload_id": workload_id,
            "fencing_token": fencing_token,
            "lease_end": lease_end,
            "kill_after": kill_after(self.stop_grace),
            **payload,
        }
        try:
            await anyio.to_thread.run_sync(self._prepare, run_id, launch, lease_end)
        except OSError as exc:
            await anyio.to_thread.run_sync(self._forget_sync, run_id)
            raise SpawnError(
                f"cannot start workload {workload_id!r}: state dir {str(self.state_dir)!r} "
                f"is not writable: {exc.strerror or exc}",
                workload_id=workload_id,
            ) from exc
        run_dir = self.run_dir(run_id)
        try:
            report = await self._start_supervisor(run_dir)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._abort(run_id, cleanup)
            raise
        if not report.get("ok"):
            with anyio.CancelScope(shield=True):
                await self._abort(run_id, cleanup)
            raise SpawnError(
                f"cannot start workload {workload_id!r}: {report.get('error', 'unknown error')}",
                workload_id=workload_id,
            )
        return Run.from_record(report)

    async def _start_supervisor(self, run_dir: Path) -> dict[str, Any]:
        with (run_dir / "supervisor.log").open("ab") as log:
            process = await anyio.open_process(
                [self.python, "-I", str(_SUPERVISOR), str(run_dir)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        try:
            with anyio.fail_after(self.start_timeout):
                assert process.stdout is not None
                chunks = [chunk async for chunk in process.stdout]
                await process.wait()
        except BaseException:
            with anyio.CancelScope(shield=True):
                # The launcher leads the process group its supervisor is in.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGTERM)
                with anyio.move_on_after(5.0):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                await process.aclose()
                # The supervisor finishes what it started (it stops it at
                # once: it got the SIGTERM too) before the run is dropped.
                with anyio.move_on_after(self.stop_grace + 35.0):
                    while _supervisor.exists(os.killpg, process.pid):  # noqa: ASYNC110 - polls the OS
                        await anyio.sleep(0.01)
            raise
        await process.aclose()
        text = b"".join(chunks).decode(errors="replace").strip()
        try:
            report = json.loads(text.splitlines()[-1])
        except (ValueError, IndexError):
            log_tail = (run_dir / "supervisor.log").read_text(errors="replace")[-2000:]
            return {"ok": False, "error": f"the supervisor failed to start: {log_tail.strip()}"}
        return report if isinstance(report, dict) else {"ok": False, "error": repr(report)}

    async def _abort(
        self, run_id: str, cleanup: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """A start that failed or was cancelled: stop what may run, drop the directory."""
        run = await anyio.to_thread.run_sync(self.read_run, run_id)
        if run is not None:
            await self.stop_supervisor(run)
        if cleanup is not None:
            await cleanup()
        await anyio.to_thread.run_sync(self._forget_sync, run_id)

    # ------------------------------------------------------------------ state

    def read_run(self, run_id: str) -> Run | None:
        record = _read_json(self.run_dir(run_id) / "record.json")
        if record is None:
            return None
        try:
            return Run.from_record(record)
        except (KeyError, ValueError, TypeError):
            return None

    def ended(self, run_id: str) -> dict[str, Any] | None:
        return _read_json(self.run_dir(run_id) / "exit.json")

    def alive(self, run: Run) -> bool:
        return supervisor_alive(run, self.run_dir(run.run_id))

    def read_lease(self, run_id: str) -> float | None:
        try:
            return float(self.lease_file(run_id).read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            return None

    def _state_sync(self, run: Run) -> Literal["running", "stopped", "absent"]:
        if not self.run_dir(run.run_id).is_dir():
            return "absent"
        if self.ended(run.run_id) is not None:
            return "stopped"
        return "running" if self.alive(run) else "stopped"

    async def state(self, run: Run) -> Literal["running", "stopped", "absent"]:
        return await anyio.to_thread.run_sync(self._state_sync, run)

    def _running_sync(self) -> list[tuple[Run, float]]:
        found: list[tuple[Run, float]] = []
        try:
            entries = sorted(self.state_dir.iterdir())
        except FileNotFoundError:
            return found
        except OSError as exc:
            raise RuntimeFailure(f"cannot read state dir {str(self.state_dir)!r}: {exc}") from exc
        for entry in entries:
            if not entry.is_dir():
                continue
            run = self.read_run(entry.name)
            if run is None or run.provider != self.provider or run.run_id != entry.name:
                continue
            if self.ended(run.run_id) is not None or not self.alive(run):
                continue
            lease = self.read_lease(run.run_id)
            if lease is None:
                continue
            found.append((run, lease))
        return found

    async def running(self) -> list[tuple[Run, float]]:
        """Every run of this provider whose supervisor lives, with its lease end."""
        return await anyio.to_thread.run_sync(self._running_sync)

    # ------------------------------------------------------------------ renew

    def _renew_sync(self, run_id: str, lease_end: float) -> None:
        if not self.run_dir(run_id).is_dir() or self.ended(run_id) is not None:
            return
        current = self.read_lease(run_id)
        if current is not None and (lease_end <= current or current <= self.wall_clock()):
            # Never shrink a lease, and never revive one that already ran out:
            # its supervisor is stopping the workload (or about to).
            return
        try:
            _write_text_atomic(self.lease_file(run_id), f"{float(lease_end)!r}\n")
        except OSError as exc:
            raise RuntimeFailure(
                f"cannot renew run {run_id!r}: {exc}; the old lease end still holds"
            ) from exc

    async def renew(self, run_id: str, lease_end: float) -> None:
        if not isinstance(lease_end, int | float) or not math.isfinite(lease_end):
            raise RuntimeFailure(f"lease_end must be a Unix time, got {lease_end!r}")
        await anyio.to_thread.run_sync(self._renew_sync, run_id, lease_end)

    # ------------------------------------------------------------------ stop

    async def stop_supervisor(self, run: Run) -> bool:
        """Ask the supervisor to stop its workload and wait until it is gone.

        Returns ``False`` when the supervisor was already gone (killed, or
        done). Escalates to ``SIGKILL`` of the supervisor when it does not
        finish within ``stop_grace`` plus a few seconds; raises
        :class:`RuntimeFailure` if even that does not end it.
        """
        if not await anyio.to_thread.run_sync(self.alive, run):
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(run.supervisor_pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace + 10.0
        delay = 0.005
        while await anyio.to_thread.run_sync(self.alive, run):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(run.supervisor_pid, signal.SIGKILL)
                await anyio.sleep(0.2)
                if await anyio.to_thread.run_sync(self.alive, run):
                    raise RuntimeFailure(
                        f"the supervisor {run.supervisor_pid} of run {run.run_id!r} does not stop"
                    )
                break
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.05)
        return True

    def _mark_ended_sync(self, run_id: str, reason: str) -> None:
        exit_file = self.run_dir(run_id) / "exit.json"
        if exit_file.exists() or not self.run_dir(run_id).is_dir():
            return
        record = {"reason": reason, "returncode": None, "ended_at": time.time()}
        with contextlib.suppress(OSError):
            _write_text_atomic(exit_file, json.dumps(record))

    async def mark_ended(self, run_id: str, reason: str) -> None:
        """Record that a run ended (when its supervisor could not: it was gone)."""
        await anyio.to_thread.run_sync(self._mark_ended_sync, run_id, reason)

    def _prune_sync(self, older_than: float) -> int:
        horizon = time.time() - older_than
        removed = 0
        try:
            entries = list(self.state_dir.iterdir())
        except OSError:
            return 0
        for entry in entries:
            run = self.read_run(entry.name)
            if run is None or run.provider != self.provider:
                continue
            ended = self.ended(run.run_id)
            if ended is None:
                if self.alive(run):
                    continue
                when = (entry / "record.json").stat().st_mtime
            else:
                when = float(ended.get("ended_at", 0.0))
            if when < horizon:
                self._forget_sync(run.run_id)
                removed += 1
        return removed

    async def prune(self, older_than: float) -> int:
        """Drop this provider's runs that ended before ``now - older_than``."""
        return await anyio.to_thread.run_sync(self._prune_sync, older_than)

    def _forget_sync(self, run_id: str) -> None:
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)

    async def forget(self, run_id: str) -> None:
        """Drop a finished run's directory (its status becomes ``absent``)."""
        await anyio.to_thread.run_sync(self._forget_sync, run_id)
