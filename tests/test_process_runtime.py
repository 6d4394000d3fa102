"""ProcessRuntime with real OS processes: the conformance suite, and the lease bound.

Every test starts real supervisors and workloads (``sleep``, ``sh``) on real
time with short leases, reads back what the workload received from
``/proc/<pid>/environ``, and leaves nothing running (each state directory is
swept at the end). Failure mode 14 gets its own test: the process that owns
the runtime is killed with ``SIGKILL`` and the workload still ends by
``lease_end + stop_grace``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from _real import REAL_MAX_BLOCKING

from standby import SpawnError
from standby.adapters.process import ProcessHandle, ProcessRuntime
from standby.adapters.supervised._supervisor import TEST_CLOCK_OFFSET_ENV
from standby.protocols import ContainerRuntime
from standby.testing import RUNTIME_CHECKS, RuntimeHarness, check_container_runtime

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)"),
]

ROOT = Path(__file__).resolve().parent.parent
GRACE = 0.4
LEASE = 0.6


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


def environ_of(pid: int) -> dict[str, str] | None:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(): v.decode() for k, v in pairs}


def marked(mark: str) -> list[int]:
    """Pids of live (non-zombie) processes whose environment carries ``MARK=mark``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            raw = (entry / "environ").read_bytes()
        except OSError:
            continue
        if stat[stat.rfind(")") + 2] in "ZX":
            continue
        if f"MARK={mark}".encode() in raw.split(b"\0"):
            found.append(int(entry.name))
    return found


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return any(
        p for p in Path("/proc").iterdir() if p.name.isdigit() and _pgid(int(p.name)) == pgid
    )


def _pgid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return None if fields[0] in "ZX" else int(fields[2])


def sweep(state_dir: Path) -> None:
    """Kill whatever a test left under ``state_dir``: only processes proven to be ours.

    A supervisor counts when its recorded start time still matches; workload
    processes when they carry the run's id in their environment (a recorded
    pid or group id alone may have been reused by now).
    """
    from standby.adapters.process import _kill_leftovers
    from standby.adapters.supervised._runs import Run, supervisor_alive

    if not state_dir.is_dir():
        return
    for record in state_dir.glob("*/record.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            run = Run.from_record(json.loads(record.read_text()))
            if supervisor_alive(run, record.parent):
                os.kill(run.supervisor_pid, signal.SIGKILL)
            _kill_leftovers(run.run_id, int(run.target))


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "runs"
    yield path
    sweep(path)


@contextlib.asynccontextmanager
async def process_harness(state_dir: Path) -> AsyncIterator[RuntimeHarness]:
    mark = uuid.uuid4().hex
    slow_flag = state_dir.parent / f"slow-{mark}"
    # The supervisor's interpreter, started through a wrapper that can be
    # made slow: a spawn that takes long enough to be cancelled midway.
    wrapper = state_dir.parent / f"python-{mark}"
    wrapper.write_text(
        f'#!/bin/sh\nif [ -e "{slow_flag}" ]; then sleep 0.5; fi\nexec {sys.executable} "$@"\n'
    )
    wrapper.chmod(0o755)
    # The supervisors' wall clock, through their test hook (failure mode 31).
    clock_offset = state_dir.parent / f"clock-{mark}"
    clock_offset.write_text("0")
    hook_before = os.environ.get(TEST_CLOCK_OFFSET_ENV)
    os.environ[TEST_CLOCK_OFFSET_ENV] = str(clock_offset)

    def make() -> ProcessRuntime:
        return ProcessRuntime(
            state_dir, provider="conformance", stop_grace=GRACE, python=str(wrapper)
        )

    runtime = make()
    spec = {"argv": ["sleep", "300"], "env": {"MARK": mark}}

    def env(handle: ProcessHandle) -> dict[str, str]:
        found = environ_of(handle.pgid)
        assert found is not None, f"the workload of {handle} does not run"
        return found

    async def token_of(handle: Any) -> int:
        return int(env(handle)["STANDBY_FENCING_TOKEN"])

    async def workload_id_of(handle: Any) -> str:
        return env(handle)["STANDBY_WORKLOAD_ID"]

    async def restore_of(handle: Any) -> str | None:
        return env(handle).get("STANDBY_RESTORE_FROM")

    async def lease_end_of(handle: Any) -> float:
        return float(await anyio.Path(env(handle)["STANDBY_LEASE_FILE"]).read_text())

    async def running_count() -> int:
        return len(marked(mark))

    def slow_spec() -> Any:
        slow_flag.touch()
        return spec

    async def reopen() -> ContainerRuntime:
        return make()

    async def abandon() -> None:
        # The owner holds nothing but this object: forgetting it is all a
        # crash of this process would do to the supervisors (the kill -9 of
        # a real owner process is test_fm14_...).
        nonlocal runtime
        del runtime

    async def step_clock(seconds: float) -> None:
        offset = float(clock_offset.read_text()) + seconds
        clock_offset.write_text(repr(offset))

    try:
        yield RuntimeHarness(
            runtime=runtime,
            spec=spec,
            failing_spec=lambda: {"argv": [str(state_dir.parent / "no-such-program")]},
            token_of=token_of,
            restore_of=restore_of,
            workload_id_of=workload_id_of,
            lease_end_of=lease_end_of,
            running_count=running_count,
            max_blocking=REAL_MAX_BLOCKING,
            slow_spec=slow_spec,
            bad_specs=[
                ("sleep 300", "mapping"),
                ({"argv": []}, "argv"),
                ({"argv": "sleep 300"}, "argv"),
                ({"argv": ["no-such-program-for-standby"]}, "not found"),
                ({"argv": ["sleep", "300"], "cwd": "/no/such/dir"}, "cwd"),
                ({"argv": ["sleep", "300"], "env": {"A": 1}}, "env"),
                ({"argv": ["sleep", "300"], "image": "x"}, "unknown spec keys"),
            ],
            reopen=reopen,
            abandon=abandon,
            step_clock=step_clock,
            lease=LEASE,
            tolerance=0.15,
            timeout=10.0,
        )
    finally:
        if hook_before is None:
            os.environ.pop(TEST_CLOCK_OFFSET_ENV, None)
        else:
            os.environ[TEST_CLOCK_OFFSET_ENV] = hook_before
        slow_flag.unlink(missing_ok=True)
        sweep(state_dir)
        assert marked(mark) == [], "a conformance check left a workload running"


#: The suite's checks that wait for no lease, run on the second backend.
QUICK = ("lifecycle", "two_spawns", "bad_spec", "cancelled_spawn", "list", "stop_idempotent")


async def test_process_runtime_passes_the_runtime_suite(
    state_dir: Path, anyio_backend: Any
) -> None:
    # The whole suite on trio; on asyncio the checks that wait for no lease
    # (the lease waits are the supervisor's, whatever loop the node runs).
    only = None if anyio_backend == "trio" else QUICK
    report = await check_container_runtime(lambda: process_harness(state_dir), only=only)
    assert set(report.passed) == set(RUNTIME_CHECKS if only is None else QUICK)
    assert report.skipped == ()


# --------------------------------------------------------------------------- failure mode 14


def start_owner(state_dir: Path, *args: str) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    owner = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "_runtime_owner.py"), *args],
        stdout=subprocess.PIPE,
        env=env,
    )
    assert owner.stdout is not None
    line = owner.stdout.readline()
    assert line, f"the owner process exited with {owner.wait()}"
    return owner, json.loads(line)


def kill_owner(owner: subprocess.Popen[bytes]) -> None:
    """``kill -9`` the owner process (by the pid this test started) and reap it."""
    owner.send_signal(signal.SIGKILL)
    owner.wait(timeout=5)
    assert owner.stdout is not None
    owner.stdout.close()


def only_run(state_dir: Path) -> dict[str, Any]:
    (record,) = state_dir.glob("*/record.json")
    return dict(json.loads(record.read_text()))


async def sleep_until(instant: float) -> None:
    await anyio.sleep(max(0.0, instant - time.time()))


async def test_fm14_workload_stops_at_lease_end_after_owner_is_killed(state_dir: Path) -> None:
    """Failure mode 14: kill -9 of the process owning the runtime leaves no unbounded workload."""
    owner, started = start_owner(state_dir, "process", str(state_dir), "1.0", str(GRACE))
    run = only_run(state_dir)
    pgid = int(run["pgid"])
    kill_owner(owner)
    assert owner.returncode == -signal.SIGKILL
    # The owner is gone; the workload is not (its lease still runs).
    assert group_alive(pgid)
    lease_end = started["lease_end"]
    await sleep_until(lease_end + GRACE)
    assert not group_alive(pgid)
    ended = json.loads((state_dir / run["run_id"] / "exit.json").read_text())
    assert ended["reason"] == "lease-expired"
    assert lease_end <= ended["ended_at"] <= lease_end + GRACE
    assert await ProcessRuntime(state_dir, provider="owner").list() == []


async def test_a_workload_dies_with_its_killed_supervisor(state_dir: Path) -> None:
    runtime = ProcessRuntime(state_dir, stop_grace=GRACE)
    handle = await runtime.spawn(
        {"argv": ["sleep", "300"]}, workload_id="w", fencing_token=1, lease_end=time.time() + 60
    )
    assert group_alive(handle.pgid)
    os.kill(handle.supervisor_pid, signal.SIGKILL)
    with anyio.fail_after(5):
        while group_alive(handle.pgid):  # noqa: ASYNC110 - polls the OS
            await anyio.sleep(0.01)
    assert await runtime.status(handle) == "stopped"
    assert await runtime.list() == []
    await runtime.stop(handle)
    assert await runtime.status(handle) == "stopped"
    assert await runtime.prune(older_than=0) == 1
    assert await runtime.status(handle) == "absent"


async def test_a_workload_ignoring_sigterm_is_killed_within_the_grace(state_dir: Path) -> None:
    runtime = ProcessRuntime(state_dir, stop_grace=GRACE)
    script = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: print('got-term', flush=True))\n"
        "print('ready', flush=True)\n"
        "while True: time.sleep(0.05)\n"
    )
    lease_end = time.time() + LEASE + 0.5
    handle = await runtime.spawn(
        {"argv": [sys.executable, "-I", "-c", script]},
        workload_id="w",
        fencing_token=1,
        lease_end=lease_end,
    )
    await sleep_until(lease_end + GRACE)
    assert not group_alive(handle.pgid)
    assert await runtime.status(handle) == "stopped"
    assert runtime.output_file(handle).read_text().split() == ["ready", "got-term"]
    ended = json.loads((runtime.state_dir / handle.run_id / "exit.json").read_text())
    assert (ended["reason"], ended["returncode"]) == ("lease-expired", -signal.SIGKILL)
    await runtime.stop(handle)


async def test_a_cooperative_workload_reads_its_renewed_lease(state_dir: Path) -> None:
    runtime = ProcessRuntime(state_dir, stop_grace=GRACE)
    # Prints the lease end it sees whenever it changes; exits once it passed.
    script = (
        'last=""; while :; do now=$(cat "$STANDBY_LEASE_FILE");'
        ' if [ "$now" != "$last" ]; then echo "$now"; last=$now; fi; sleep 0.02; done'
    )
    first = time.time() + 30
    handle = await runtime.spawn(
        {"argv": ["sh", "-c", script]}, workload_id="w", fencing_token=1, lease_end=first
    )
    for end in (first + 10, first + 5, first + 20):  # the middle one is earlier: ignored
        await runtime.renew(handle, end)
        await anyio.sleep(0.15)
    seen = [float(v) for v in runtime.output_file(handle).read_text().split()]
    await runtime.stop(handle)
    assert seen == [first, first + 10, first + 20]


async def test_fm31_a_wall_clock_step_back_never_extends_a_lease(
    state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Failure mode 31: the supervisor holds the lease on the monotonic clock.

    The supervisor's wall clock (shifted through its test hook) steps back
    ten minutes once it holds the lease; the workload still stops at the
    lease end, not ten minutes later.
    """
    offset = tmp_path / "clock-offset"
    offset.write_text("0")
    monkeypatch.setenv(TEST_CLOCK_OFFSET_ENV, str(offset))
    runtime = ProcessRuntime(state_dir, stop_grace=GRACE)
    handle = await runtime.spawn(
        {"argv": ["sleep", "300"]},
        workload_id="w",
        fencing_token=1,
        lease_end=time.time() + LEASE,
    )
    assert group_alive(handle.pgid)
    offset.write_text("-600")
    exit_file = runtime.state_dir / handle.run_id / "exit.json"
    # Bounded wait: with the lease read against the wall clock it would take 600 s.
    with anyio.fail_after(LEASE + GRACE + 10):
        while not exit_file.exists():  # noqa: ASYNC110 - polls the OS
            await anyio.sleep(0.02)
    assert json.loads(exit_file.read_text())["reason"] == "lease-expired"
    assert not group_alive(handle.pgid)
    assert await runtime.status(handle) == "stopped"


async def test_list_reports_only_this_providers_live_workloads(state_dir: Path) -> None:
    mine = ProcessRuntime(state_dir, provider="me", stop_grace=GRACE)
    theirs = ProcessRuntime(state_dir, provider="them", stop_grace=GRACE)
    lease_end = time.time() + 60
    a = await mine.spawn(
        {"argv": ["sleep", "300"]}, workload_id="a", fencing_token=3, lease_end=lease_end
    )
    b = await theirs.spawn(
        {"argv": ["sleep", "300"]}, workload_id="b", fencing_token=4, lease_end=lease_end
    )
    try:
        listed = await ProcessRuntime(state_dir, provider="me").list()
        assert [(w.workload_id, w.fencing_token, w.handle) for w in listed] == [("a", 3, a)]
        # A record whose supervisor pid now names some other process (pid
        # reuse) is not taken for a live supervisor.
        record_path = state_dir / a.run_id / "record.json"
        record = json.loads(record_path.read_text())
        record["supervisor_pid"] = os.getpid()
        record_path.write_text(json.dumps(record))
        assert await ProcessRuntime(state_dir, provider="me").list() == []
        record_path.write_text(json.dumps({**record, "supervisor_pid": a.supervisor_pid}))
    finally:
        await mine.stop(a)
        await theirs.stop(b)
    assert not group_alive(a.pgid)
    assert not group_alive(b.pgid)


async def test_an_unwritable_state_dir_is_a_spawn_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    runtime = ProcessRuntime(blocker / "runs")
    with pytest.raises(SpawnError, match=r"state dir .* is not writable") as caught:
        await runtime.spawn(
            {"argv": ["sleep", "1"]}, workload_id="w", fencing_token=1, lease_end=time.time() + 5
        )
    assert caught.value.workload_id == "w"


def test_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="stop_grace"):
        ProcessRuntime(tmp_path, stop_grace=0)
    with pytest.raises(ValueError, match="provider"):
        ProcessRuntime(tmp_path, provider="")


def test_it_is_a_container_runtime_with_a_pinned_surface(tmp_path: Path) -> None:
    import standby.adapters.process as module

    assert isinstance(ProcessRuntime(tmp_path), ContainerRuntime)
    assert [name for name in module.__all__ if not hasattr(module, name)] == []
    assert {"ProcessRuntime", "ProcessHandle"} <= set(module.__all__)
