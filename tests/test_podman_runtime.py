"""PodmanRuntime against real podman (runc, a local busybox image, no network, no pulls).

The fixture in ``tests/_podman.py`` sets up a private podman (own config and
storage); these tests run the conformance suite through it, then failure
mode 14 for containers: the process that owns the runtime is killed with
``SIGKILL`` and the container still ends by ``lease_end + stop_grace``.
Every container carries a provider label unique to its test, and each test
removes what it started.
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
from _podman import Podman, podman_fixture  # noqa: F401

from standby import SpawnError
from standby.adapters.podman import PodmanHandle, PodmanRuntime
from standby.adapters.supervised._supervisor import TEST_CLOCK_OFFSET_ENV
from standby.protocols import ChecksSpecs, ContainerRuntime
from standby.testing import RUNTIME_CHECKS, RuntimeHarness, check_container_runtime

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
GRACE = 1.0
#: Longer than a spawn takes (podman run alone takes about 0.4 s here, more under load).
LEASE = 3.0
#: Stops at once on SIGTERM (a shell as PID 1 ignores signals it does not trap).
SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; sleep 300 & wait"]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


@pytest.fixture
def provider(podman: Podman) -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    leftovers = podman.containers(f"io.standby.provider={name}")
    if leftovers:
        podman.run("rm", "--force", "--time", "0", *leftovers)
    assert leftovers == [], "a test left containers behind"


def runtime_for(podman: Podman, state_dir: Path, provider: str, **options: Any) -> PodmanRuntime:
    return PodmanRuntime(
        state_dir,
        provider=provider,
        stop_grace=options.pop("stop_grace", GRACE),
        cli=podman.cli,
        cli_args=podman.cli_args,
        env=podman.env,
        **options,
    )


async def exec_in(podman: Podman, handle: PodmanHandle, *command: str) -> str:
    done = await anyio.to_thread.run_sync(lambda: podman.run("exec", handle.container, *command))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@contextlib.asynccontextmanager
async def podman_harness(
    podman: Podman, state_dir: Path, provider: str
) -> AsyncIterator[RuntimeHarness]:
    runtime = runtime_for(podman, state_dir, provider)
    # The supervisors' wall clock, through their test hook (failure mode 31).
    clock_offset = state_dir.parent / f"clock-{uuid.uuid4().hex}"
    clock_offset.parent.mkdir(parents=True, exist_ok=True)
    clock_offset.write_text("0")
    hook_before = os.environ.get(TEST_CLOCK_OFFSET_ENV)
    os.environ[TEST_CLOCK_OFFSET_ENV] = str(clock_offset)

    async def step_clock(seconds: float) -> None:
        offset = float(clock_offset.read_text()) + seconds
        clock_offset.write_text(repr(offset))

    async def env_var(handle: Any, name: str) -> str | None:
        return (await exec_in(podman, handle, "sh", "-c", f'echo "${{{name}-}}"')) or None

    async def token_of(handle: Any) -> int | None:
        value = await env_var(handle, "STANDBY_FENCING_TOKEN")
        return None if value is None else int(value)

    async def workload_id_of(handle: Any) -> str | None:
        return await env_var(handle, "STANDBY_WORKLOAD_ID")

    async def restore_of(handle: Any) -> str | None:
        return await env_var(handle, "STANDBY_RESTORE_FROM")

    async def lease_end_of(handle: Any) -> float:
        return float(await exec_in(podman, handle, "sh", "-c", 'cat "$STANDBY_LEASE_FILE"'))

    async def running_count() -> int:
        return len(
            await anyio.to_thread.run_sync(podman.running, f"io.standby.provider={provider}")
        )

    async def reopen() -> ContainerRuntime:
        return runtime_for(podman, state_dir, provider)

    async def abandon() -> None:
        # The owner holds nothing but this object (the kill -9 of a real
        # owner process is test_fm14_...).
        nonlocal runtime
        del runtime

    spec = {"image": podman.image, "command": SLEEPER}
    try:
        yield RuntimeHarness(
            runtime=runtime,
            spec=spec,
            failing_spec=lambda: {"image": "localhost/standby-no-such-image:1"},
            token_of=token_of,
            restore_of=restore_of,
            workload_id_of=workload_id_of,
            lease_end_of=lease_end_of,
            running_count=running_count,
            slow_spec=lambda: spec,
            bad_specs=[
                ("busybox", "mapping"),
                ({"command": ["sleep", "1"]}, "image"),
                ({"image": podman.image, "command": "sleep 1"}, "command"),
                ({"image": "localhost/standby-absent:0"}, "not present locally"),
                ({"image": podman.image, "command": ["no-such-program"]}, "not found"),
            ],
            reopen=reopen,
            abandon=abandon,
            step_clock=step_clock,
            lease=LEASE,
            tolerance=0.3,
            timeout=60.0,
        )
    finally:
        if hook_before is None:
            os.environ.pop(TEST_CLOCK_OFFSET_ENV, None)
        else:
            os.environ[TEST_CLOCK_OFFSET_ENV] = hook_before


# The whole suite takes about 30 s of real containers: it runs on trio; the
# asyncio paths of PodmanRuntime are the same calls (see the labels test).
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_podman_runtime_passes_the_runtime_suite(
    podman: Podman, tmp_path: Path, provider: str
) -> None:
    report = await check_container_runtime(
        lambda: podman_harness(podman, tmp_path / "runs", provider)
    )
    assert report.passed == RUNTIME_CHECKS
    assert report.skipped == ()


async def test_the_container_sees_its_labels_and_no_network(
    podman: Podman, tmp_path: Path, provider: str
) -> None:
    runtime = runtime_for(podman, tmp_path / "runs", provider)
    handle = await runtime.spawn(
        {"image": podman.image, "command": SLEEPER, "env": {"APP": "1"}},
        workload_id="labelled",
        fencing_token=9,
        lease_end=time.time() + 60,
    )
    try:
        done = podman.run("inspect", "--format", "{{json .Config.Labels}}", handle.container)
        labels = json.loads(done.stdout)
        assert {k: v for k, v in labels.items() if k != "io.standby.lease-end"} == {
            "io.standby.provider": provider,
            "io.standby.workload": "labelled",
            "io.standby.token": "9",
            "io.standby.run": handle.run_id,
        }
        interfaces = await exec_in(podman, handle, "ls", "/sys/class/net")
        assert interfaces.split() == ["lo"]
        assert await exec_in(podman, handle, "sh", "-c", 'echo "$APP"') == "1"
    finally:
        await runtime.stop(handle)
    assert await runtime.status(handle) == "absent"


async def test_fm24_check_spec_finds_a_missing_image_without_starting_anything(
    podman: Podman, tmp_path: Path, provider: str
) -> None:
    runtime = runtime_for(podman, tmp_path / "runs", provider)
    assert isinstance(runtime, ChecksSpecs)
    await runtime.check_spec({"image": podman.image, "command": SLEEPER}, workload_id="ok")
    with pytest.raises(SpawnError, match="not present locally"):
        await runtime.check_spec({"image": "no-such-image:1"}, workload_id="missing")
    with pytest.raises(SpawnError, match="image"):
        await runtime.check_spec({"command": ["true"]}, workload_id="no-image")
    assert podman.containers(f"io.standby.provider={provider}") == []


# --------------------------------------------------------------------------- failure mode 14


def start_owner(podman: Podman, state_dir: Path) -> subprocess.Popen[bytes]:
    """A real Python process owning a PodmanRuntime with one container, lease 2 s."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    args = [str(state_dir), "2.0", str(GRACE), podman.image]
    args += [str(podman.conf), str(podman.root), str(podman.runroot)]
    return subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "_runtime_owner.py"), "podman", *args],
        stdout=subprocess.PIPE,
        env=env,
    )


# The owner is its own process (on asyncio); this test's loop only waits.
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_fm14_container_stops_at_lease_end_after_owner_is_killed(
    podman: Podman, tmp_path: Path
) -> None:
    """Failure mode 14: kill -9 of the process owning the runtime leaves no unbounded container."""
    state_dir = tmp_path / "runs"
    owner = start_owner(podman, state_dir)
    label = "io.standby.provider=owner"
    try:
        assert owner.stdout is not None
        line = owner.stdout.readline()
        assert line, f"the owner process exited with {owner.wait()}"
        lease_end = json.loads(line)["lease_end"]
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=5)
        assert owner.returncode == -signal.SIGKILL
        # The owner is gone; the container is not (its lease still runs).
        (container,) = podman.running(label)
        await anyio.sleep(max(0.0, lease_end + GRACE - time.time()))
        assert podman.running(label) == []
        # The supervisor records why, once it removed the container.
        (run_dir,) = state_dir.iterdir()
        with anyio.fail_after(10):
            while not (run_dir / "exit.json").exists():  # noqa: ASYNC110 - polls the file
                await anyio.sleep(0.05)
        ended = json.loads((run_dir / "exit.json").read_text())
        assert ended["reason"] == "lease-expired"
        assert await runtime_for(podman, state_dir, "owner").list() == []
        assert container not in podman.run("ps", "--all", "--quiet", "--no-trunc").stdout
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        if owner.stdout is not None:
            owner.stdout.close()
        leftovers = podman.containers(label)
        if leftovers:
            podman.run("rm", "--force", "--time", "0", *leftovers)


async def test_a_container_dies_with_its_killed_supervisor(
    podman: Podman, tmp_path: Path, provider: str
) -> None:
    state_dir = tmp_path / "runs"
    runtime = runtime_for(podman, state_dir, provider)
    handle = await runtime.spawn(
        {"image": podman.image, "command": SLEEPER},
        workload_id="orphan",
        fencing_token=2,
        lease_end=time.time() + 60,
    )
    label = f"io.standby.provider={provider}"
    assert podman.running(label) == [handle.container]
    os.kill(handle.supervisor_pid, signal.SIGKILL)
    # Its guard got the parent death signal and kills the container.
    exit_file = state_dir / handle.run_id / "exit.json"
    with anyio.fail_after(10):
        while podman.running(label) or not exit_file.exists():  # noqa: ASYNC110 - polls
            await anyio.sleep(0.05)
    ended = json.loads(exit_file.read_text())
    assert ended["reason"] == "supervisor-died"
    fresh = runtime_for(podman, state_dir, provider)
    assert await fresh.list() == []
    await fresh.stop(handle)
    assert await fresh.status(handle) == "absent"


def test_it_is_a_container_runtime_with_a_pinned_surface(tmp_path: Path) -> None:
    import standby.adapters.podman as module

    assert isinstance(PodmanRuntime(tmp_path), ContainerRuntime)
    assert [name for name in module.__all__ if not hasattr(module, name)] == []
    assert {"PodmanRuntime", "PodmanHandle"} <= set(module.__all__)
