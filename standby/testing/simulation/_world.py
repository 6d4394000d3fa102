"""The simulated world: hosts, their node incarnations, and the adapters they run on.

A host is one provider's machine. It keeps what survives a process: its
durable store (:class:`SimulatedStore`), its containers (in the runtime) and
its clock skew. Each time the node process starts, the host gets a new
:class:`Incarnation`: a fresh :class:`~standby.node.StandbyNode` with a fresh
transport and a fresh runtime object over the same host, all tagged with the
incarnation's :class:`~standby.testing.simulation._loop.Process` so the loop can freeze
or kill exactly that process.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import attrs
import sniffio

from ...adapters.memory import MemoryRuntime, MemoryTransport, RuntimeRecord
from ...core._errors import RuntimeFailure, StoreError
from ...core._models import StandbySlot
from ...core._records import NodeState
from ...core._timing import Timing
from ...node import SpawnRequest, StandbyNode
from ...protocols._contracts import RunningWorkload
from ._loop import CURRENT_PROCESS, Process, VirtualLoop

if TYPE_CHECKING:
    from ._simulation import Simulation

__all__ = [
    "Host",
    "Incarnation",
    "Latencies",
    "RuntimeFactory",
    "SimulatedStore",
    "bury",
    "memory_runtime",
    "run_in",
    "teardown",
]

RuntimeFactory = Callable[[str, RuntimeRecord, Callable[[], float]], Any]
"""Builds one host's runtime object for one incarnation: ``(host, record, wall_clock)``."""

_QUIET = logging.Logger("standby.simulation")
_QUIET.setLevel(logging.CRITICAL + 1)


def _slots_of(state: Any) -> Sequence[Any]:
    slots = getattr(state, "slots", state)
    if isinstance(slots, dict):
        return list(slots.values())
    return list(slots)


def _no_latency() -> float:
    return 0.0


class SimulatedStore:
    """A host's durable store, shared by every incarnation of its node.

    A save takes a latency drawn by the simulation; only a save that finished
    before the process died is durable (a ``kill -9`` in the middle of a save
    leaves the previous state: an atomic write that never got its rename).
    With ``acknowledge_early=True`` the store answers a save at once and makes
    it durable only after the latency: the broken store of failure mode 15,
    whose acknowledged saves a crash can still lose.

    ``state`` is what was saved last and durably (``None`` before the first
    save); ``saves`` counts the durable saves.
    """

    def __init__(self, *, acknowledge_early: bool = False) -> None:
        self.acknowledge_early = acknowledge_early
        self.state: Any = None
        self.saves = 0
        self._on_commit: Callable[[Any], None] | None = None
        self._latency: Callable[[], float] = _no_latency
        self._loop: VirtualLoop | None = None

    def __repr__(self) -> str:
        kind = "acknowledges early" if self.acknowledge_early else "durable on acknowledgement"
        return f"SimulatedStore({kind}, {self.saves} saves)"

    def _attach(
        self, loop: VirtualLoop, latency: Callable[[], float], on_commit: Callable[[Any], None]
    ) -> None:
        self._loop = loop
        self._latency = latency
        self._on_commit = on_commit

    def _detach(self) -> None:
        """The world ended: drop its latency draw and commit hook (what is saved stays)."""
        self._loop = None
        self._latency = _no_latency
        self._on_commit = None

    def _commit(self, process: Process, state: Any) -> None:
        if not process.alive:
            return  # the process died before the write reached the disk
        self.state = state
        self.saves += 1
        if self._on_commit is not None:
            self._on_commit(state)

    def view(self, process: Process) -> _StoreView:
        """The store as the node of ``process`` sees it."""
        return _StoreView(self, process)


class _StoreView:
    """One incarnation's handle on its host's :class:`SimulatedStore`."""

    def __init__(self, store: SimulatedStore, process: Process) -> None:
        self._store = store
        self._process = process

    def __repr__(self) -> str:
        return f"<store of {self._process.name}>"

    async def load(self) -> list[StandbySlot[Any]]:
        return list((await self.load_state()).slots)

    async def save(self, slots: Sequence[StandbySlot[Any]]) -> list[str]:
        current = self._store.state
        base = NodeState() if current is None else current
        return await self.save_state(base.replace_slots(slots))

    async def load_state(self) -> NodeState[Any]:
        await anyio.lowlevel.checkpoint()
        if not self._process.alive:
            raise StoreError("the process is gone")
        state = self._store.state
        return NodeState() if state is None else state

    async def save_state(self, state: NodeState[Any]) -> list[str]:
        store = self._store
        process = self._process
        if not process.alive:
            raise StoreError("the process is gone")
        latency = store._latency()
        if store.acknowledge_early:
            loop = store._loop
            assert loop is not None
            run_in(None, loop.call_later, latency, store._commit, process, state)
            await anyio.lowlevel.checkpoint()
            return []
        await anyio.sleep(latency)
        store._commit(process, state)
        return []


_EMPTY_CONTEXT = contextvars.Context()


def run_in(process: Process | None, call: Callable[..., Any], *args: Any) -> Any:
    """Call ``call(*args)`` in the context of ``process`` (``None``: the world's own)."""
    context = contextvars.copy_context() if process is None else _EMPTY_CONTEXT.copy()
    context.run(CURRENT_PROCESS.set, process)
    return context.run(call, *args)


class HostRuntime:
    """The runtime one incarnation's node sees: its host's runtime, behind a fuse.

    Delegates to the runtime built by the simulation's runtime factory
    (a :class:`~standby.adapters.memory.MemoryRuntime` by default), draws
    each start's and stop's latency, applies injected slow and failing starts,
    and refuses every call once the process is dead (a dead process starts
    nothing). What the host's runtime does on its own (containers that keep
    running, a lease it enforces) is untouched.
    """

    def __init__(self, host: Host, process: Process, inner: Any) -> None:
        self._host = host
        self._process = process
        self.inner = inner

    def __repr__(self) -> str:
        return f"<runtime of {self._process.name}>"

    def _alive(self) -> None:
        if not self._process.alive:
            raise RuntimeFailure(f"{self._process.name} is gone")

    @property
    def stop_grace(self) -> float:
        grace: float = self.inner.stop_grace
        return grace

    async def spawn(self, spec: Any, **kwargs: Any) -> Any:
        self._alive()
        host = self._host
        world = host.world
        world.note_spawn(host, self._process, kwargs["workload_id"], kwargs["fencing_token"])
        inner = self.inner
        if isinstance(inner, MemoryRuntime):
            inner.spawn_latency = world.spawn_latency(host)
            if host.failing:
                host.failing.pop(0).end = world.loop.time() + inner.spawn_latency
                inner.fail_spawns(1, error="injected start failure")
        return await inner.spawn(spec, **kwargs)

    async def status(self, handle: Any) -> Any:
        self._alive()
        return await self.inner.status(handle)

    async def stop(self, handle: Any) -> None:
        self._alive()
        inner = self.inner
        if isinstance(inner, MemoryRuntime):
            inner.stop_latency = self._host.world.stop_latency()
        await inner.stop(handle)

    async def renew(self, handle: Any, lease_end: float) -> None:
        self._alive()
        await self.inner.renew(handle, lease_end)

    async def list(self) -> Sequence[RunningWorkload]:
        self._alive()
        found: Sequence[RunningWorkload] = await self.inner.list()
        return found


class Incarnation:
    """One run of a host's node process."""

    __slots__ = ("context", "node", "number", "process", "runtime", "transport")

    def __init__(
        self,
        number: int,
        process: Process,
        node: StandbyNode[Any],
        transport: MemoryTransport,
        runtime: HostRuntime,
        context: contextvars.Context,
    ) -> None:
        self.number = number
        self.process = process
        self.node = node
        self.transport = transport
        self.runtime = runtime
        self.context = context

    def let_go(self) -> None:
        """The world ended: the incarnation's adapters let go of what they shared with it.

        Its node may still be referenced (in cycles of its own parts, which
        the cyclic collector frees): through them, the network, the host's
        runtime record and the world would be kept as long. An incarnation
        started during the teardown (a scheduled restart) was never killed:
        it is left as it is.
        """
        if self.process.alive:
            return
        self.transport.close()
        self.runtime.inner = None


class Host:
    """One provider's machine: what outlives its node process."""

    def __init__(self, world: Simulation, name: str, index: int, store: SimulatedStore) -> None:
        self.world = world
        #: The world's base and clock, for :meth:`wall` (read on every node clock read).
        self._base = world.base
        self._time = world.loop.time
        self.name = name
        self.index = index  # -1 for the original primary, else the standby index
        self.store = store
        self.skew = 0.0
        self.incarnation: Incarnation | None = None
        self.count = 0
        self.runtimes: list[Any] = []
        self.slow: list[tuple[float, Any]] = []
        self.failing: list[Any] = []
        self.frozen_since: float | None = None
        self.workload_frozen = False
        self.freezes: list[tuple[float, float | None]] = []  # workload frozen with the host
        self.promoted_at = -float("inf")
        self.accepting = False  # the host is handing the node the consumer's request
        #: Where the host reports its node's events (``None`` once the world ended).
        self._on_event: Callable[[Host, Process, Any], None] | None = None

    def __repr__(self) -> str:
        return f"<Host {self.name}, incarnation {self.count}>"

    def let_go(self) -> None:
        """The world ended: cut the host's links back to it (its nodes keep the host)."""
        del self.world
        self.runtimes.clear()
        self.store._detach()
        self._on_event = None

    @property
    def process(self) -> Process | None:
        """The current incarnation's process (``None`` before the first start)."""
        return None if self.incarnation is None else self.incarnation.process

    @property
    def alive(self) -> bool:
        """Whether a node process runs on this host now (frozen or not)."""
        process = self.process
        return process is not None and process.alive

    @property
    def node(self) -> StandbyNode[Any] | None:
        """The node of a live incarnation."""
        inc = self.incarnation
        return inc.node if inc is not None and inc.process.alive else None

    def wall(self) -> float:
        """This host's wall clock."""
        return self._base + self._time() + self.skew

    def start(
        self, request: SpawnRequest[Any] | None, on_event: Callable[[Host, Process, Any], None]
    ) -> Incarnation:
        """Start a new incarnation of the node (the host's supervisor restarts it)."""
        world = self.world
        self.count += 1
        process = Process(f"{self.name}#{self.count}")
        transport = world.network.transport(self.name)
        inner = world.runtime_factory(self.name, world.record, self.wall)
        self.runtimes.append(inner)
        runtime = HostRuntime(self, process, inner)

        self._on_event = on_event

        def hook(event: Any) -> None:
            if process.alive and self._on_event is not None:
                self._on_event(self, process, event)

        node: StandbyNode[Any] = StandbyNode(
            transport=transport,
            runtime=runtime,
            store=self.store.view(process),
            timing=world.timing,
            wall_clock=self.wall,
            on_event=hook,
            logger=_QUIET,
        )
        context = _EMPTY_CONTEXT.copy()
        context.run(CURRENT_PROCESS.set, process)
        context.run(sniffio.current_async_library_cvar.set, "asyncio")
        inc = Incarnation(self.count, process, node, transport, runtime, context)
        self.incarnation = inc

        def killed(_process: Process) -> None:
            transport.sever()
            world.injector.killed(self, process)

        process.on_kill = killed
        process.root = context.run(world.loop.create_task, self._life(inc, request))
        return inc

    async def _life(self, inc: Incarnation, request: SpawnRequest[Any] | None) -> None:
        world = self.world
        self.accepting = request is not None
        try:
            async with inc.node:
                if request is not None:
                    try:
                        await inc.node.accept(request)
                    except Exception as exc:  # the host hears why and carries on
                        world.record_line(
                            self.name, f"request refused: {type(exc).__name__}: {exc}"
                        )
                    finally:
                        self.accepting = False
                await anyio.sleep_forever()
        except BaseException as exc:
            if inc.process.alive:
                world.node_failed(self, exc)


def slots_saved(state: Any) -> list[StandbySlot[Any]]:
    """The slots in a saved node state (a slot table or an object with ``slots``)."""
    return [s for s in _slots_of(state) if isinstance(s, StandbySlot)]


def _interval(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    lo, hi = value
    if not (0 <= lo <= hi and math.isfinite(hi)):
        raise ValueError(
            f"`{attribute.name}` must be (low, high) with 0 <= low <= high, got {value}"
        )


def _ranges(timing: Timing) -> dict[str, tuple[float, float]]:
    net_hi = min(0.004 * timing.heartbeat_interval, timing.query_timeout / 4)
    return {
        "network": (net_hi / 20, net_hi),
        "spawn": (0.01 * timing.spawn_timeout, 0.08 * timing.spawn_timeout),
        "stop": (0.02 * timing.fence_grace, 0.2 * timing.fence_grace),
        "save": (net_hi / 20, net_hi),
    }


_DEFAULT_RANGES = _ranges(Timing())


@attrs.frozen(kw_only=True)
class Latencies:
    """Uniform latency ranges ``(low, high)`` in seconds for the simulated world.

    ``network`` is one hop between a provider and a relay, ``spawn`` a
    container start, ``stop`` a container stop and ``save`` a durable write
    of the node's store. :meth:`for_timing` gives ranges proportionate to a
    :class:`~standby.Timing` that respect the model's assumptions (a stop
    finishes within ``fence_grace``, a hop is much shorter than
    ``query_timeout``).
    """

    network: tuple[float, float] = attrs.field(
        default=_DEFAULT_RANGES["network"], validator=_interval
    )
    spawn: tuple[float, float] = attrs.field(default=_DEFAULT_RANGES["spawn"], validator=_interval)
    stop: tuple[float, float] = attrs.field(default=_DEFAULT_RANGES["stop"], validator=_interval)
    save: tuple[float, float] = attrs.field(default=_DEFAULT_RANGES["save"], validator=_interval)

    @classmethod
    def for_timing(cls, timing: Timing) -> Latencies:
        """Ranges scaled to ``timing`` (the defaults are those of ``Timing()``).

        A hop and a save take up to ``min(heartbeat_interval / 250,
        query_timeout / 4)``, a start 1 % to 8 % of ``spawn_timeout``, a stop
        2 % to 20 % of ``fence_grace``.
        """
        return cls(**_ranges(timing))


def memory_runtime(
    host: str,
    record: RuntimeRecord,
    wall_clock: Callable[[], float],
    *,
    stop_grace: float = 0.0,
    enforce_leases: bool = True,
) -> MemoryRuntime:
    """A simulated host's runtime: a :class:`MemoryRuntime` whose supervisor enforces leases.

    The simulation's default uses ``stop_grace = fence_grace / 10``: the
    supervisor stops a container that long after its lease end at the
    latest, whatever its node does. ``enforce_leases=False`` is the runtime
    of failure mode 14, whose containers outlive their lease.
    """
    return MemoryRuntime(
        host,
        record=record,
        wall_clock=wall_clock,
        stop_grace=stop_grace,
        enforce_leases=enforce_leases,
    )


def teardown(loop: VirtualLoop, incarnations: list[Incarnation]) -> None:
    """Unwind every simulated process, then close the loop (see Simulation.close).

    Each process goes as a ``kill -9`` does, its transport severed (its
    subscriptions end at once, not by cancellation), but nothing is recorded:
    the world is gone.
    """
    if loop.is_closed():
        return
    if loop.is_running() or _running_loop() is not None:
        _GRAVEYARD.append((loop, incarnations))
        return
    processes = [inc.process for inc in incarnations]
    for inc in incarnations:
        inc.process.on_kill = None
        inc.transport.sever()
        loop.kill(inc.process)
    roots = [p.root for p in processes if p.root is not None and not p.root.done()]
    for _ in range(10_000):
        if all(root.done() for root in roots):
            break
        loop.advance_to(loop.time() + 60.0)
    loop.close()
    for process in processes:
        process.root = None  # done: its context names the process (a cycle)


def _running_loop() -> Any:
    return asyncio._get_running_loop()


_GRAVEYARD: list[tuple[VirtualLoop, list[Incarnation]]] = []


def bury() -> None:
    while _GRAVEYARD and _running_loop() is None:
        loop, incarnations = _GRAVEYARD.pop()
        teardown(loop, incarnations)
