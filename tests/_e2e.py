"""What the end-to-end tests (and the benchmarks) share: polling, examples, providers.

* :func:`eventually` and :func:`wait_until` poll state that other tasks
  change, on real time;
* :func:`load_example` imports a script of ``examples/`` as a module;
* :class:`Providers` runs a primary and two standbys, each a
  :class:`StandbyNode` with its own transport to real relays or a real
  store and a :class:`MemoryRuntime`; the runtimes share one
  :class:`RuntimeRecord`, which is what the assertions read.

No pytest in here: the benchmarks import it too.
"""

from __future__ import annotations

import contextlib
import importlib.util
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import anyio.abc

from standby import Timing, Topology
from standby.adapters.memory import MemoryRuntime, RuntimeRecord
from standby.errors import QuorumUnavailable
from standby.node import NodeEvent, SpawnRequest, StandbyNode

__all__ = ["NAMES", "Providers", "eventually", "load_example", "wait_until"]

ROOT = Path(__file__).resolve().parent.parent
NAMES = ("primary", "sb0", "sb1")

Connect = Callable[[str], AbstractAsyncContextManager[Any]]


async def eventually(predicate: Callable[[], bool], within: float, step: float = 0.02) -> bool:
    """Poll ``predicate`` every ``step`` s for at most ``within`` s; whether it holds."""
    with anyio.move_on_after(within):
        while not predicate():  # noqa: ASYNC110 - polls state that other tasks change
            await anyio.sleep(step)
    return predicate()


async def wait_until(predicate: Callable[[], bool], *, within: float, what: str) -> None:
    """Fail (``AssertionError``) unless ``predicate`` holds within ``within`` s."""
    if not await eventually(predicate, within):
        raise AssertionError(f"timed out after {within}s waiting for {what}")


def load_example(name: str) -> ModuleType:
    """``examples/<name>.py``, imported as the module ``name``."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Providers:
    """Three providers (:data:`NAMES`) sharing one runtime record.

    ``connect(name)`` opens provider ``name``'s transport (connected when
    entered); ``identities`` are the names the consumer puts in the
    topology. ``check`` looks at each node once it runs; ``stamp_created``
    sets the request's ``created_at`` (else each node stamps its acceptance).
    """

    def __init__(
        self,
        connect: Connect,
        identities: Mapping[str, str],
        timing: Timing,
        *,
        check: Callable[[StandbyNode[Any]], None] | None = None,
        stamp_created: bool = False,
    ) -> None:
        self.connect = connect
        self.identities = dict(identities)
        self.timing = timing
        self.check = check
        self.stamp_created = stamp_created
        self.record = RuntimeRecord()
        self.runtimes = {name: MemoryRuntime(name, record=self.record) for name in NAMES}
        self.events: dict[str, list[NodeEvent]] = {name: [] for name in NAMES}
        self.nodes: dict[str, StandbyNode[Any]] = {}
        self.scopes: dict[str, anyio.CancelScope] = {}
        self.workload_id = f"e2e-{uuid.uuid4().hex[:10]}"

    async def launch(self, group: anyio.abc.TaskGroup, name: str) -> None:
        """Start provider ``name``'s node in ``group``; return once it runs."""
        scope = self.scopes[name] = anyio.CancelScope()

        async def run(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            with scope:
                async with (
                    self.connect(name) as transport,
                    StandbyNode(
                        transport=transport,
                        runtime=self.runtimes[name],
                        timing=self.timing,
                        on_event=self.events[name].append,
                    ) as node,
                ):
                    if self.check is not None:
                        self.check(node)
                    self.nodes[name] = node
                    task_status.started()
                    await anyio.sleep_forever()

        await group.start(run)

    def request(self) -> SpawnRequest[Any]:
        """The consumer's request: the workload, the primary and both standbys."""
        return SpawnRequest(
            workload_id=self.workload_id,
            topology=Topology(
                primary=self.identities["primary"],
                standbys=(self.identities["sb0"], self.identities["sb1"]),
            ),
            spec={"image": "app:1"},
            owner="consumer",
            expires_at=time.time() + 3600,
            created_at=time.time() if self.stamp_created else None,
        )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[anyio.abc.TaskGroup]:
        """All three nodes up, the workload accepted and running on the primary."""
        async with anyio.create_task_group() as group:
            for name in NAMES:
                await self.launch(group, name)
            request = self.request()
            for name in NAMES:
                await self.accept(name, request)
            await wait_until(
                lambda: self.hosts_started() == ["primary"],
                within=5.0,
                what="the primary to start the workload",
            )
            yield group
            group.cancel_scope.cancel()

    async def accept(self, name: str, request: SpawnRequest[Any], attempts: int = 3) -> None:
        """``name`` accepts ``request``, asked again (as a consumer would) while no quorum answers.

        The primary reads the relays before it starts epoch 0; on a loaded
        machine that read can miss its quorum, and the node then says to try
        again. A read that keeps failing still fails the test.
        """
        for _ in range(attempts - 1):
            with contextlib.suppress(QuorumUnavailable):
                await self.nodes[name].accept(request)
                return
            await anyio.sleep(0.2)
        await self.nodes[name].accept(request)

    def crash(self, name: str) -> None:
        """The host dies: its containers end and its node stops."""
        self.runtimes[name].crash()
        self.scopes[name].cancel()

    async def fail_over(self, *, within: float, what: str, settle: float) -> None:
        """The primary crashes; wait until a standby took over, then ``settle`` s more."""
        self.crash("primary")
        await self.taken_over(within=within, what=what)
        await anyio.sleep(settle)

    async def taken_over(self, *, within: float, what: str) -> None:
        """Wait until a second host has started the workload."""
        await wait_until(lambda: len(self.hosts_started()) >= 2, within=within, what=what)

    def assert_standby_0_took_over(self) -> None:
        """Standby 0 started the workload after the primary, never beside it."""
        assert self.hosts_started() == ["primary", "sb0"]
        assert self.record.max_concurrent(self.workload_id) == 1

    def assert_standby_0_alone_was_promoted(self) -> None:
        """As :meth:`assert_standby_0_took_over`, nobody else spawned it, with a higher token."""
        self.assert_standby_0_took_over()
        assert self.spawn_calls() == ["primary", "sb0"]
        tokens = [e.fencing_token for e in self.record.of_kind("started", self.workload_id)]
        assert tokens[1] > tokens[0]

    def hosts_started(self) -> list[str]:
        """The hosts that started the workload, in order."""
        return [e.host for e in self.record.of_kind("started", self.workload_id)]

    def spawn_calls(self) -> list[str]:
        """The hosts that were asked to spawn the workload, in order."""
        return [e.host for e in self.record.of_kind("spawn", self.workload_id)]

    def started_at(self, host: str) -> float:
        """When ``host`` started the workload (it did so once)."""
        (event,) = [e for e in self.record.of_kind("started", self.workload_id) if e.host == host]
        return event.at
