"""A deterministic simulation of the shipped node: one workload, its primary, standbys, relays.

:class:`Simulation` runs one real :class:`~standby.node.StandbyNode` per
provider, the class providers run, over the in-memory adapters that
implement the real protocols: a :class:`~standby.adapters.memory.MemoryRelayNetwork`
(every relay rule exists once, there), a runtime per host sharing one
:class:`~standby.adapters.memory.RuntimeRecord`, and a durable store per host
that outlives the node's incarnations. Everything runs on a virtual-time
asyncio loop (:mod:`standby.testing.simulation._loop`), so one seed and one schedule of
faults give the same timeline in any process.

How the simulated world behaves:

* Every provider-relay hop takes a latency drawn from ``Latencies.network``;
  faults (loss, delay, duplication, partitions) are those of the memory
  network. Relays keep every version of an addressable message and readers
  take the newest, as the relay contract says.
* A container start takes ``Latencies.spawn``, a stop ``Latencies.stop``,
  a save ``Latencies.save``; the node's own deadlines (``spawn_timeout``)
  apply as in production.
* A node process can crash with its host (containers stop) or alone
  (containers keep running: what outlives the process is whatever the
  runtime enforces), be frozen (its callbacks held, its containers frozen
  with it or not), and restart from what its store had made durable.
* Each provider's wall clock is virtual time plus its skew.
"""

from __future__ import annotations

import contextvars
import functools
import math
import random
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ...adapters.memory import MemoryRelayNetwork, RuntimeRecord
from ...core._models import (
    Message,
    Topology,
)
from ...core._timing import Timing
from ...node import SpawnRequest
from ._checkers import Checks, Disruption
from ._events import runtime_lines
from ._faults import (
    CURRENT_PRIMARY,
    Crash,
    Delay,
    Drop,
    Duplicate,
    FailSpawn,
    Fault,
    Forge,
    ForgeKind,
    Handover,
    Heal,
    Kill,
    Partition,
    Pause,
    RelayAmnesia,
    Replay,
    Restart,
    SkewClock,
    SlowSpawn,
    StepClock,
)
from ._history import FaultRecorder
from ._inject import Injector
from ._loop import Process, VirtualLoop
from ._names import PRIMARY, STRANGER, provider_names, relay_name, relay_names, standby_name
from ._observer import Observer
from ._report import (
    BASE_TIME,
    NODE_FAILED,
    FencedStorage,
    SimulationReport,
    Timeline,
    Violation,
)
from ._world import (
    Host,
    Incarnation,
    Latencies,
    RuntimeFactory,
    SimulatedStore,
    bury,
    memory_runtime,
    slots_saved,
    teardown,
)

__all__ = [
    "PRIMARY",
    "STRANGER",
    "Latencies",
    "Simulation",
    "memory_runtime",
    "relay_name",
    "standby_name",
]

_INF = math.inf


class Simulation:
    """Deterministic simulation of one workload: a primary, ``standbys`` standbys, relays.

    ``timing`` defaults to :class:`~standby.Timing` with ``relays`` relays and
    a majority write quorum; when both are given, ``relays`` must equal
    ``timing.relay_count``. Faults come from ``faults`` or from the verbs
    (:meth:`crash`, :meth:`kill`, :meth:`pause`, ...), which return the
    simulation so calls can be chained. :meth:`run` advances virtual time and
    returns a cumulative :class:`SimulationReport`; it may be called again
    with a later ``until``.

    ``atomic_claims=True`` gives the nodes transports with
    :class:`~standby.protocols.AtomicClaims`. Every container able to act
    writes to :attr:`storage` every ``write_interval`` seconds (default: the
    heartbeat interval; ``0`` disables the writes). ``runtime_factory(host,
    record)`` builds each incarnation's runtime (default: a
    :class:`~standby.adapters.memory.MemoryRuntime` on the shared record) and
    ``store_factory(host)`` each host's :class:`SimulatedStore`: that is how
    a user simulates the semantics of their own adapters.
    """

    def __init__(
        self,
        *,
        timing: Timing | None = None,
        relays: int | None = None,
        standbys: int = 2,
        seed: int = 0,
        latencies: Latencies | None = None,
        faults: Iterable[Fault] = (),
        atomic_claims: bool = False,
        write_interval: float | None = None,
        workload_id: str = "workload",
        runtime_factory: RuntimeFactory | None = None,
        store_factory: Callable[[str], SimulatedStore] | None = None,
    ) -> None:
        if timing is None:
            n = 3 if relays is None else relays
            if n < 1:
                raise ValueError(f"relays must be >= 1, got {n}")
            timing = Timing(relay_count=n, write_quorum=n // 2 + 1)
        elif relays is not None and relays != timing.relay_count:
            raise ValueError(
                f"relays={relays} but timing.relay_count={timing.relay_count}: the quorums "
                "are defined for timing.relay_count relays"
            )
        if isinstance(standbys, bool) or not isinstance(standbys, int) or standbys < 0:
            raise ValueError(f"standbys must be an integer >= 0, got {standbys!r}")
        bury()
        self.timing = timing
        self.seed = seed
        self.atomic_claims = atomic_claims
        self.workload_id = workload_id
        self.latencies = Latencies.for_timing(timing) if latencies is None else latencies
        self.storage = FencedStorage()
        self.base = BASE_TIME
        interval = timing.heartbeat_interval if write_interval is None else write_interval
        self._write_interval = float(interval)
        self.rng = random.Random(seed * 7919 + 17)
        self.loop = VirtualLoop()
        self.record = RuntimeRecord()
        self.runtime_factory: RuntimeFactory = (
            functools.partial(memory_runtime, stop_grace=timing.fence_grace / 10)
            if runtime_factory is None
            else runtime_factory
        )
        self.network = MemoryRelayNetwork(
            relay_names(timing.relay_count),
            seed=seed,
            wall_clock=self._true_wall,
            atomic_claims=atomic_claims,
        )
        # The world runs on its own loop: the record and the network read
        # its clock straight (what anyio.current_time() gives inside it).
        self.record.clock = self.network.clock = self.loop.time
        self._log: list[tuple[float, str, Any]] = []
        self._notes: list[str] = []
        self.faults_seen = FaultRecorder()
        names = provider_names(standbys)
        self.topology = Topology(primary=PRIMARY, standbys=tuple(names[1:]))
        self._hosts: list[Host] = []
        for index, name in enumerate(names):
            store = SimulatedStore() if store_factory is None else store_factory(name)
            host = Host(self, name, index - 1, store)
            store._attach(self.loop, self._save_latency, self._committer(host))
            self._hosts.append(host)
        self._by_name = {h.name: h for h in self._hosts}
        self.observer = Observer(self, self._by_name)
        self.network.on_store = self.observer.on_store
        self._processes: list[Process] = []
        self._incarnations: list[Incarnation] = []
        lookback = timing.silence + timing.peer_claim_grace + timing.retry_interval
        self.checks = Checks(timing, workload_id, lookback + timing.heartbeat_interval)
        self.request: SpawnRequest[Any] = SpawnRequest(
            workload_id=workload_id,
            topology=self.topology,
            spec="workload-spec",
            owner="consumer",
            expires_at=BASE_TIME + 30 * 86400.0,
            created_at=BASE_TIME,
        )
        for rule, detail in timing.violations():
            self._notes.append(f"timing breaks `{rule}`: {detail}")
        if self.latencies.stop[1] > timing.fence_grace:
            self._notes.append(
                f"a container stop may take {self.latencies.stop[1]} s > fence_grace="
                f"{timing.fence_grace} s"
            )
        self.injector = Injector(self)
        self.injector.set_base_latency(self.latencies.network)
        self._finalizer = weakref.finalize(self, teardown, self.loop, self._incarnations)
        self._boot()
        for fault in faults:
            self.schedule(fault)

    # ------------------------------------------------------------------
    # Public surface
    # ------------------------------------------------------------------

    @property
    def now(self) -> float:
        """Current virtual time (seconds since the start of the simulation)."""
        return self.loop.time()

    @property
    def providers(self) -> tuple[str, ...]:
        """Names of the providers: the primary first, then the standbys in order."""
        return tuple(h.name for h in self._hosts)

    @property
    def relays(self) -> tuple[str, ...]:
        """Names of the relays."""
        return self.network.relays

    def host(self, name: str) -> Host:
        """The simulated host of provider ``name`` (its store, its incarnations)."""
        return self._by_name[name]

    def running(self) -> list[tuple[str, int]]:
        """Containers of the workload running now, as ``(provider, fencing_token)``."""
        return [
            (run.host, run.fencing_token)
            for run in self.record.intervals(self.workload_id)
            if run.end is None
        ]

    def current_primary(self) -> str | None:
        """The provider running the workload as primary (its newest live epoch), if any."""
        host = self.primary_host()
        return None if host is None else host.name

    @property
    def violation_count(self) -> int:
        """Violations recorded so far (the checks over the whole run need :meth:`report`)."""
        return len(self.checks.violations)

    def schedule(self, fault: Fault) -> Simulation:
        """Inject ``fault`` at ``fault.at`` (which must not be in the past)."""
        self.injector.validate(fault)
        if fault.at < self.now:
            raise ValueError(f"{fault!r} is scheduled at t={fault.at}, before now={self.now}")
        # A fault belongs to the world, not to a node process, even when it is
        # scheduled from a node's event (see :meth:`on_node_event`): an empty
        # context keeps it from being held or dropped with that process.
        self.loop.call_at(
            float(fault.at), self.injector.apply, fault, context=contextvars.Context()
        )
        return self

    def on_node_event(self, listener: Callable[[str, Any], None]) -> Simulation:
        """Call ``listener(provider, event)`` for every event a node reports, as it happens.

        The events are those of :mod:`standby.node` (``PromotedHere``,
        ``ClaimCompared``, ``ContainerStarting``, ...). A listener may call
        :meth:`schedule`: that is how a fault lands a given time after a
        promotion, a won claim or a container start, inside the windows a
        schedule fixed in advance rarely hits.
        """
        self.observer.listeners.append(listener)
        return self

    def crash(self, at: float, who: str = CURRENT_PRIMARY) -> Simulation:
        """Schedule a :class:`~standby.testing.Crash`."""
        return self.schedule(Crash(at, who))

    def kill(
        self, at: float, who: str = CURRENT_PRIMARY, *, steps: int | None = None, host: bool = False
    ) -> Simulation:
        """Schedule a :class:`~standby.testing.Kill`."""
        return self.schedule(Kill(at, who, steps, host))

    def restart(self, at: float, who: str, *, reaccept: Any = None) -> Simulation:
        """Schedule a :class:`~standby.testing.Restart`."""
        return self.schedule(Restart(at, who, reaccept))

    def partition(
        self,
        at: float,
        who: str = CURRENT_PRIMARY,
        relays: Sequence[str] | None = None,
        *,
        duration: float | None = None,
    ) -> Simulation:
        """Schedule a :class:`~standby.testing.Partition`."""
        return self.schedule(Partition(at, who, relays, duration))

    def heal(
        self, at: float, who: str | None = None, relays: Sequence[str] | None = None
    ) -> Simulation:
        """Schedule a :class:`~standby.testing.Heal`."""
        return self.schedule(Heal(at, who, relays))

    def skew_clock(self, at: float, who: str, offset: float) -> Simulation:
        """Schedule a :class:`~standby.testing.SkewClock`."""
        return self.schedule(SkewClock(at, who, offset))

    def step_clock(self, at: float, who: str, delta: float) -> Simulation:
        """Schedule a :class:`~standby.testing.StepClock` (negative ``delta``: back)."""
        return self.schedule(StepClock(at, who, delta))

    def drop(
        self, at: float, duration: float, probability: float = 1.0, who: str | None = None
    ) -> Simulation:
        """Schedule a :class:`~standby.testing.Drop`."""
        return self.schedule(Drop(at, duration, probability, who))

    def delay(self, at: float, duration: float, extra: float, who: str | None = None) -> Simulation:
        """Schedule a :class:`~standby.testing.Delay`."""
        return self.schedule(Delay(at, duration, extra, who))

    def duplicate(
        self, at: float, duration: float, probability: float = 1.0, who: str | None = None
    ) -> Simulation:
        """Schedule a :class:`~standby.testing.Duplicate`."""
        return self.schedule(Duplicate(at, duration, probability, who))

    def replay(self, at: float, count: int = 1, who: str | None = None) -> Simulation:
        """Schedule a :class:`~standby.testing.Replay`."""
        return self.schedule(Replay(at, count, who))

    def forge(
        self, at: float, kind: ForgeKind = "revocation", signer: str = STRANGER
    ) -> Simulation:
        """Schedule a :class:`~standby.testing.Forge`."""
        return self.schedule(Forge(at, kind, signer))

    def slow_spawn(self, at: float, who: str, extra: float, count: int = 1) -> Simulation:
        """Schedule a :class:`~standby.testing.SlowSpawn`."""
        return self.schedule(SlowSpawn(at, who, extra, count))

    def fail_spawn(self, at: float, who: str, count: int = 1) -> Simulation:
        """Schedule a :class:`~standby.testing.FailSpawn`."""
        return self.schedule(FailSpawn(at, who, count))

    def pause(
        self,
        at: float,
        who: str = CURRENT_PRIMARY,
        duration: float = 600.0,
        *,
        workload: Any = "frozen",
    ) -> Simulation:
        """Schedule a :class:`~standby.testing.Pause`."""
        return self.schedule(Pause(at, who, duration, workload))

    def relay_amnesia(self, at: float, relay: str, *, duration: float | None = None) -> Simulation:
        """Schedule a :class:`~standby.testing.RelayAmnesia`."""
        return self.schedule(RelayAmnesia(at, relay, duration))

    def handover(self, at: float, who: str = CURRENT_PRIMARY) -> Simulation:
        """Schedule a :class:`~standby.testing.Handover`."""
        return self.schedule(Handover(at, who))

    def run(self, until: float) -> SimulationReport:
        """Process every event up to virtual time ``until``; return the report so far."""
        if not (until >= self.now and math.isfinite(until)):
            raise ValueError(f"cannot run until t={until}: the simulation is at t={self.now}")
        if self.loop.is_closed():
            raise RuntimeError("this simulation was closed")
        self.loop.advance_to(float(until))
        return self.report()

    def close(self) -> None:
        """Unwind the simulated processes and release the loop (the reports stay valid)."""
        if not self._finalizer.alive:
            return
        self._finalizer()
        if self.loop.is_closed():  # not when the teardown waits for a running loop
            self._let_go()

    def _let_go(self) -> None:
        """The world ended: cut the references that tie it in cycles.

        Nothing of it runs any more and the reports need none of them: the
        world is then freed when its last reference goes, not left for the
        cyclic garbage collector to find (the nodes' parts stay in cycles of
        their own, small ones).
        """
        for inc in self._incarnations:
            inc.let_go()
        for host in self._hosts:
            host.let_go()
        self.network.on_store = None
        self.network.wall_clock = functools.partial(float, self._true_wall())  # time stopped
        del self.observer.sim, self.injector.sim

    def report(self) -> SimulationReport:
        """The cumulative report at the current virtual time."""
        now = self.now
        checks = self.checks
        checks.decide_liveness(now)
        raw = list(checks.violations)
        raw.extend((NODE_FAILED, now, f"the event loop reported: {m}") for m in self.loop.errors)
        # The memory runtime's supervisor stops a container at its lease end
        # lazily, when the runtime is next asked: the report asks at the
        # virtual now, not on the wall clock of whoever reads it afterwards,
        # so a lease that ran out with nobody asking still ended in time.
        self.record.reap(now)
        runs = self.record.intervals(self.workload_id)
        freezes = {h.name: h.freezes for h in self._hosts if h.freezes}
        segments = checks.acting(runs, freezes, now)
        two_live, double_live = checks.two_live(segments, now)
        raw.extend(two_live)
        raw.extend(checks.availability(segments, [h.name for h in self._hosts[1:]], now))
        raw.extend(checks.forged())
        raw.extend(checks.retry_order())
        raw.sort(key=lambda v: v[1])
        storage = FencedStorage()
        storage_lines = checks.writes(segments, self._write_interval, storage)
        self.storage = storage
        entries = self._merged(storage_lines)
        timeline = Timeline(entries)
        violations = tuple(
            Violation(kind, at, text, timeline.excerpt(at)) for kind, at, text in raw
        )
        promotions = tuple(checks.promotions)
        first = promotions[0].failover_latency if promotions else None
        return SimulationReport(
            seed=self.seed,
            until=now,
            timing=self.timing,
            standbys=len(self._hosts) - 1,
            relays=len(self.network.relays),
            violations=violations,
            double_live_seconds=double_live,
            failover_latency=first,
            promotions=promotions,
            stale_writes=tuple(storage.rejected),
            storage_writes_accepted=storage.accepted,
            outside_model=tuple(self._notes),
            drops=tuple(sorted(self.observer.drops.items())),
            timeline=timeline,
            history=self.faults_seen.history(
                now,
                self.providers,
                runs,
                (e for e in self.record.events if e.workload_id == self.workload_id),
                checks.claims,
                checks.two_live_windows,
            ),
        )

    # ------------------------------------------------------------------
    # The world, for the injector and the hosts
    # ------------------------------------------------------------------

    def _true_wall(self) -> float:
        return BASE_TIME + self.loop.time()

    def _save_latency(self) -> float:
        lo, hi = self.latencies.save
        return lo + (hi - lo) * self.rng.random()

    def spawn_latency(self, host: Host) -> float:
        """The latency of ``host``'s next container start (slow starts included)."""
        lo, hi = self.latencies.spawn
        latency = lo + (hi - lo) * self.rng.random()
        if host.slow:
            extra, disruption = host.slow.pop(0)
            latency += extra
            disruption.end = self.now + min(latency, self.timing.spawn_timeout)
        return latency

    def stop_latency(self) -> float:
        """The latency of a container stop."""
        lo, hi = self.latencies.stop
        return lo + (hi - lo) * self.rng.random()

    def hosts(self) -> list[Host]:
        """Every host, the primary first."""
        return self._hosts

    def primary_host(self) -> Host | None:
        """The host whose live node runs the workload as primary in the newest epoch."""
        best: Host | None = None
        best_epoch = -1
        for host in self._hosts:
            node = host.node
            if node is None:
                continue
            status = node.status().primary(self.workload_id)
            if status is None or status.state.value in ("fenced", "failed", "expired"):
                continue
            if status.epoch > best_epoch:
                best, best_epoch = host, status.epoch
        if best is None:
            # At boot the primary's node may still be reading the relays before
            # it takes the request: it is the primary all the same.
            first = self._hosts[0]
            if first.accepting and first.alive:
                return first
        return best

    def record_line(self, actor: str, payload: Any) -> None:
        """Add a line to the timeline."""
        self._log.append((self.now, actor, payload))

    def note(self, text: str) -> None:
        """Note something the run did that the safety model does not cover."""
        if text not in self._notes:
            self._notes.append(text)

    def disrupt(
        self,
        what: str,
        end: float | None = None,
        targets: Iterable[str] | None = None,
        *,
        even: bool = False,
    ) -> Disruption:
        """Record a disruption (for the liveness and ordering checks)."""
        now = self.now
        disruption = Disruption(
            now,
            now if end is None else end,
            what,
            None if targets is None else frozenset(targets),
            even=even,
        )
        self.checks.disruptions.append(disruption)
        return disruption

    def note_spawn(self, host: Host, process: Process, workload_id: str, token: int) -> None:
        """A node asked its runtime to start a container."""
        if workload_id == self.workload_id:
            self.checks.spawned(self.now, process.name, token)

    def node_failed(self, host: Host, exc: BaseException) -> None:
        """A live node's task ended with an exception."""
        text = f"{host.name}'s node died: {type(exc).__name__}: {exc}"
        self.checks.violation(NODE_FAILED, self.now, text)
        self.record_line(host.name, text)

    def start(self, host: Host, request: SpawnRequest[Any] | None) -> None:
        """Start a new incarnation of ``host``'s node."""
        inc = host.start(request, self.observer.on_event)
        self._processes.append(inc.process)
        self._incarnations.append(inc)
        self.record_line(host.name, ("node process %s started", (inc.process.name,)))
        self.checks.node_state(self.now, host.name, up=True)

    def published(self) -> list[tuple[Message, str]]:
        """Genuine messages stored so far, as ``(message, signer)``."""
        return self.observer.published

    # ------------------------------------------------------------------
    # Set-up and observation
    # ------------------------------------------------------------------

    def _boot(self) -> None:
        self.record_line(
            "sim", f"boot: {len(self._hosts) - 1} standbys, {len(self.network.relays)} relays"
        )
        for host in (*self._hosts[1:], self._hosts[0]):
            self.start(host, self.request)
        self._hosts[0].promoted_at = 0.0

    def _committer(self, host: Host) -> Callable[[Any], None]:
        def commit(state: Any) -> None:
            self.checks.saved(self.now, host.name, slots_saved(state))

        return commit

    def _merged(self, storage_lines: list[tuple[float, str, Any]]) -> list[tuple[float, str, Any]]:
        merged = self._log + runtime_lines(self.record, self.workload_id, self.now) + storage_lines
        merged.sort(key=lambda e: e[0])
        return merged
