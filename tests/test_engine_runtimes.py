"""PodmanRuntime and DockerRuntime against real engines (local busybox, no network, no pulls).

Each test that needs an engine runs once per engine: ``tests/_podman.py``
sets up a private podman (own config and storage, runc), ``tests/_docker.py``
a child ``dockerd`` (own data root and socket). The tests run the
conformance suite through each, then failure mode 14 for containers: the
process that owns the runtime is killed with ``SIGKILL`` and the container
still ends by ``lease_end + stop_grace``. Every container carries a
provider label unique to its test, and each test removes what it started.
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
import attrs
import pytest
from _docker import docker_fixture  # noqa: F401
from _engines import Engine
from _podman import podman_fixture  # noqa: F401
from _real import REAL_MAX_BLOCKING

from standby import RuntimeFailure, SpawnError
from standby.adapters.docker import DockerHandle, DockerRuntime
from standby.adapters.podman import PodmanHandle, PodmanRuntime
from standby.adapters.supervised._engine import ContainerHandle, EngineRuntime, parse_inspect
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


@pytest.fixture(params=["podman", "docker"])
def engine(request: pytest.FixtureRequest) -> Engine:
    """Each engine in turn (its session fixture starts it the first time)."""
    found: Engine = request.getfixturevalue(request.param)
    return found


@pytest.fixture
def provider(engine: Engine) -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    leftovers = engine.containers(f"io.standby.provider={name}")
    engine.remove(*leftovers)
    assert leftovers == [], "a test left containers behind"


def runtime_for(engine: Engine, state_dir: Path, provider: str, **options: Any) -> Any:
    options.setdefault("stop_grace", GRACE)
    return engine.runtime(state_dir, provider=provider, **options)


async def exec_in(engine: Engine, handle: ContainerHandle, *command: str) -> str:
    done = await anyio.to_thread.run_sync(lambda: engine.run("exec", handle.container, *command))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@contextlib.asynccontextmanager
async def engine_harness(
    engine: Engine, state_dir: Path, provider: str
) -> AsyncIterator[RuntimeHarness]:
    runtime = runtime_for(engine, state_dir, provider)
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
        return (await exec_in(engine, handle, "sh", "-c", f'echo "${{{name}-}}"')) or None

    async def token_of(handle: Any) -> int | None:
        value = await env_var(handle, "STANDBY_FENCING_TOKEN")
        return None if value is None else int(value)

    async def workload_id_of(handle: Any) -> str | None:
        return await env_var(handle, "STANDBY_WORKLOAD_ID")

    async def restore_of(handle: Any) -> str | None:
        return await env_var(handle, "STANDBY_RESTORE_FROM")

    async def lease_end_of(handle: Any) -> float:
        return float(await exec_in(engine, handle, "sh", "-c", 'cat "$STANDBY_LEASE_FILE"'))

    async def running_count() -> int:
        return len(
            await anyio.to_thread.run_sync(engine.running, f"io.standby.provider={provider}")
        )

    async def reopen() -> ContainerRuntime:
        return runtime_for(engine, state_dir, provider)

    async def abandon() -> None:
        # The owner holds nothing but this object (the kill -9 of a real
        # owner process is test_fm14_...).
        nonlocal runtime
        del runtime

    spec = {"image": engine.image, "command": SLEEPER}
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
            max_blocking=REAL_MAX_BLOCKING,
            slow_spec=lambda: spec,
            bad_specs=[
                ("busybox", "mapping"),
                ({"command": ["sleep", "1"]}, "image"),
                ({"image": engine.image, "command": "sleep 1"}, "command"),
                ({"image": "localhost/standby-absent:0"}, "not present locally"),
                ({"image": engine.image, "command": ["no-such-program"]}, "not found"),
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


# The whole suite takes about 30 s of real containers per engine: it runs on
# trio; the asyncio paths of the runtimes are the same calls (see the labels test).
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_engine_runtime_passes_the_runtime_suite(
    engine: Engine, tmp_path: Path, provider: str
) -> None:
    report = await check_container_runtime(
        lambda: engine_harness(engine, tmp_path / "runs", provider)
    )
    assert report.passed == RUNTIME_CHECKS
    assert report.skipped == ()


async def test_the_container_sees_its_labels_and_no_network(
    engine: Engine, tmp_path: Path, provider: str
) -> None:
    runtime = runtime_for(engine, tmp_path / "runs", provider)
    handle = await runtime.spawn(
        {"image": engine.image, "command": SLEEPER, "env": {"APP": "1"}},
        workload_id="labelled",
        fencing_token=9,
        lease_end=time.time() + 60,
    )
    try:
        done = engine.run("inspect", "--format", "{{json .Config.Labels}}", handle.container)
        labels = json.loads(done.stdout)
        assert {k: v for k, v in labels.items() if k != "io.standby.lease-end"} == {
            "io.standby.provider": provider,
            "io.standby.workload": "labelled",
            "io.standby.token": "9",
            "io.standby.run": handle.run_id,
        }
        interfaces = await exec_in(engine, handle, "ls", "/sys/class/net")
        assert interfaces.split() == ["lo"]
        assert await exec_in(engine, handle, "sh", "-c", 'echo "$APP"') == "1"
    finally:
        await runtime.stop(handle)
    assert await runtime.status(handle) == "absent"


async def test_fm24_check_spec_finds_a_missing_image_without_starting_anything(
    engine: Engine, tmp_path: Path, provider: str
) -> None:
    runtime = runtime_for(engine, tmp_path / "runs", provider)
    assert isinstance(runtime, ChecksSpecs)
    await runtime.check_spec({"image": engine.image, "command": SLEEPER}, workload_id="ok")
    with pytest.raises(SpawnError, match="not present locally"):
        await runtime.check_spec({"image": "no-such-image:1"}, workload_id="missing")
    with pytest.raises(SpawnError, match="image"):
        await runtime.check_spec({"command": ["true"]}, workload_id="no-image")
    assert engine.containers(f"io.standby.provider={provider}") == []


# --------------------------------------------------------------------------- failure mode 14


def start_owner(engine: Engine, state_dir: Path) -> subprocess.Popen[bytes]:
    """A real Python process owning the engine's runtime with one container, lease 2 s."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    args = [engine.name, str(state_dir), "2.0", str(GRACE), *engine.owner_args()]
    return subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "_runtime_owner.py"), *args],
        stdout=subprocess.PIPE,
        env=env,
    )


# The owner is its own process (on asyncio); this test's loop only waits.
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_fm14_container_stops_at_lease_end_after_owner_is_killed(
    engine: Engine, tmp_path: Path
) -> None:
    """Failure mode 14: kill -9 of the process owning the runtime leaves no unbounded container."""
    state_dir = tmp_path / "runs"
    owner = start_owner(engine, state_dir)
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
        (container,) = engine.running(label)
        await anyio.sleep(max(0.0, lease_end + GRACE - time.time()))
        assert engine.running(label) == []
        # The supervisor records why, once it removed the container.
        (run_dir,) = state_dir.iterdir()
        with anyio.fail_after(10):
            while not (run_dir / "exit.json").exists():  # noqa: ASYNC110 - polls the file
                await anyio.sleep(0.05)
        ended = json.loads((run_dir / "exit.json").read_text())
        assert ended["reason"] == "lease-expired"
        assert await runtime_for(engine, state_dir, "owner").list() == []
        assert container not in engine.run("ps", "--all", "--quiet", "--no-trunc").stdout
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        if owner.stdout is not None:
            owner.stdout.close()
        engine.remove(*engine.containers(label))


async def test_a_container_dies_with_its_killed_supervisor(
    engine: Engine, tmp_path: Path, provider: str
) -> None:
    state_dir = tmp_path / "runs"
    runtime = runtime_for(engine, state_dir, provider)
    handle = await runtime.spawn(
        {"image": engine.image, "command": SLEEPER},
        workload_id="orphan",
        fencing_token=2,
        lease_end=time.time() + 60,
    )
    label = f"io.standby.provider={provider}"
    assert engine.running(label) == [handle.container]
    os.kill(handle.supervisor_pid, signal.SIGKILL)
    # Its guard got the parent death signal and kills the container.
    exit_file = state_dir / handle.run_id / "exit.json"
    with anyio.fail_after(10):
        while engine.running(label) or not exit_file.exists():  # noqa: ASYNC110 - polls
            await anyio.sleep(0.05)
    ended = json.loads(exit_file.read_text())
    assert ended["reason"] == "supervisor-died"
    fresh = runtime_for(engine, state_dir, provider)
    assert await fresh.list() == []
    await fresh.stop(handle)
    assert await fresh.status(handle) == "absent"


async def test_a_container_whose_run_state_is_lost_is_listed_and_stopped_by_the_engine(
    engine: Engine, tmp_path: Path, provider: str
) -> None:
    """A runtime without the run's directory (a lost state dir) finds the container by its
    labels and stops it through the engine (``stop -t``), with no supervisor to ask."""
    runtime = runtime_for(engine, tmp_path / "runs", provider)
    lease_end = time.time() + 60
    handle = await runtime.spawn(
        {"image": engine.image, "command": SLEEPER},
        workload_id="stray",
        fencing_token=4,
        lease_end=lease_end,
    )
    stranger = runtime_for(engine, tmp_path / "other-runs", provider)
    (found,) = await stranger.list()
    assert (found.workload_id, found.fencing_token) == ("stray", 4)
    assert found.lease_end == pytest.approx(lease_end)
    assert (found.handle.container, found.handle.supervisor_pid) == (handle.container, 0)
    await stranger.stop(found.handle)
    assert await stranger.status(found.handle) == "absent"
    assert engine.containers(f"io.standby.provider={provider}") == []
    await stranger.stop(found.handle)  # idempotent
    # The first runtime's supervisor saw its container go and ended the run.
    exit_file = tmp_path / "runs" / handle.run_id / "exit.json"
    with anyio.fail_after(15):
        while not exit_file.exists():  # noqa: ASYNC110 - polls the file
            await anyio.sleep(0.05)
    assert json.loads(exit_file.read_text())["reason"] == "exited"
    await runtime.stop(handle)


# --------------------------------------------------------------------------- no engine needed


@pytest.mark.parametrize(
    ("module_name", "runtime_class", "handle_class"),
    [
        ("standby.adapters.podman", PodmanRuntime, PodmanHandle),
        ("standby.adapters.docker", DockerRuntime, DockerHandle),
    ],
)
def test_it_is_a_container_runtime_with_a_pinned_surface(
    tmp_path: Path, module_name: str, runtime_class: type[Any], handle_class: type[Any]
) -> None:
    import importlib

    module = importlib.import_module(module_name)
    assert isinstance(runtime_class(tmp_path), ContainerRuntime)
    assert isinstance(runtime_class(tmp_path), ChecksSpecs)
    assert issubclass(runtime_class, EngineRuntime)
    assert [name for name in module.__all__ if not hasattr(module, name)] == []
    assert {runtime_class.__name__, handle_class.__name__} <= set(module.__all__)


async def test_one_engines_runtime_refuses_the_others_handles(tmp_path: Path) -> None:
    fields: dict[str, Any] = {"run_id": "r", "workload_id": "w", "fencing_token": 1}
    podman_handle = PodmanHandle(container="c", **fields)
    docker_handle = DockerHandle(container="c", **fields)
    assert podman_handle != docker_handle
    with pytest.raises(RuntimeFailure, match="not a handle of a DockerRuntime"):
        await DockerRuntime(tmp_path, cli="true").status(podman_handle)
    with pytest.raises(RuntimeFailure, match="not a handle of a PodmanRuntime"):
        await PodmanRuntime(tmp_path, cli="true").stop(docker_handle)


def test_docker_runtime_passes_its_host_to_every_command(tmp_path: Path) -> None:
    runtime = DockerRuntime(tmp_path, host="unix:///tmp/d.sock", cli_args=["--log-level", "warn"])
    assert runtime.cli == "docker"
    assert runtime.cli_args == ("--host", "unix:///tmp/d.sock", "--log-level", "warn")
    assert DockerRuntime(tmp_path).cli_args == ()
    assert DockerRuntime(tmp_path, host="tcp://10.0.0.1:2376").cli_args[1] == "tcp://10.0.0.1:2376"
    assert repr(runtime) == f"DockerRuntime({str(tmp_path)!r}, provider='default')"


@pytest.mark.parametrize(
    ("host", "problem"),
    [
        ("/run/docker.sock", "the daemon's address"),
        ("unix://run/docker.sock", "absolute path"),
        ("tcp://", "no address"),
        (" unix:///run/docker.sock", "the daemon's address"),
        ("http://localhost:2375", "the daemon's address"),
    ],
)
def test_docker_runtime_refuses_a_host_that_is_no_daemon_address(
    tmp_path: Path, host: str, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        DockerRuntime(tmp_path, host=host)


def test_engine_runtimes_refuse_cli_args_given_as_one_string(tmp_path: Path) -> None:
    for runtime_class in (PodmanRuntime, DockerRuntime):
        with pytest.raises(TypeError, match="list of strings"):
            runtime_class(tmp_path, cli_args="--root /x")


def test_inspect_output_keeps_only_this_providers_running_labelled_containers() -> None:
    def row(name: str, provider: str, *, running: bool = True, **labels: str) -> dict[str, Any]:
        given = {
            "io.standby.provider": provider,
            "io.standby.run": f"run-{name}",
            "io.standby.workload": name,
            "io.standby.token": "3",
            "io.standby.lease-end": "100.5",
            **{f"io.standby.{key.replace('_', '-')}": value for key, value in labels.items()},
        }
        return {"Id": f"id-{name}", "Config": {"Labels": given}, "State": {"Running": running}}

    rows = [
        row("a", "p"),
        row("b", "other"),
        row("c", "p", running=False),
        row("d", "p", token="three"),
        row("e", "p", lease_end="soon"),
        {"Id": "bare", "Config": {"Labels": None}, "State": {}},
        "not a container",
    ]
    out, err = json.dumps(rows), "Error: no such container x"
    found = parse_inspect(1, out, err, prefix="io.standby", provider="p")
    assert [attrs.astuple(labelled) for labelled in found] == [("id-a", "run-a", "a", 3, 100.5)]
    assert parse_inspect(0, "", "", prefix="io.standby", provider="p") == []
    with pytest.raises(RuntimeFailure, match="not JSON"):
        parse_inspect(0, "{oops", "", prefix="io.standby", provider="p")
    with pytest.raises(RuntimeFailure, match="cannot inspect containers: daemon gone"):
        parse_inspect(1, "garbage", "daemon gone", prefix="io.standby", provider="p")
    with pytest.raises(RuntimeFailure, match="not a list"):
        parse_inspect(0, "{}", "", prefix="io.standby", provider="p")


async def test_a_removal_already_under_way_is_waited_out_not_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # docker refuses a second removal while one is under way (the container's
    # supervisor removing it as it exits): the runtime waits until it is gone.
    runtime = DockerRuntime(tmp_path, cli="true")
    answers = [
        (1, "", "Error response from daemon: removal of container c1 is already in progress"),
        (0, "[{}]", ""),  # still there
        (1, "", "Error: No such container: c1"),
    ]
    asked: list[tuple[str, ...]] = []

    async def cli(*args: str) -> tuple[int, str, str]:
        asked.append(args)
        return answers.pop(0)

    runtime._cli = cli  # type: ignore[method-assign]
    await runtime._unless_gone("remove container c1", "rm", "--force", "c1")
    assert asked == [
        ("rm", "--force", "c1"),
        ("container", "inspect", "c1"),
        ("container", "inspect", "c1"),
    ]

    never_gone = [
        (1, "", "Error response from daemon: removal of container c2 is already in progress")
    ]

    async def stuck(*args: str) -> tuple[int, str, str]:
        return never_gone[0] if args[0] == "rm" else (0, "[{}]", "")

    runtime._cli = stuck  # type: ignore[method-assign]
    monkeypatch.setattr("standby.adapters.supervised._engine._REMOVAL_WAIT", 0.3)
    with pytest.raises(RuntimeFailure, match="a removal under way did not end"):
        await runtime._unless_gone("remove container c2", "rm", "--force", "c2")
