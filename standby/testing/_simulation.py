"""A deterministic discrete-event simulation of one replicated workload.

The simulation drives the real :class:`~standby.StandbyElection` and
:class:`~standby.WorkloadLifecycle` machines, exactly as a node would: it
carries out their effects on simulated relays and container runtimes, feeds
the results back, and wakes each machine at its ``next_deadline``. Time is
virtual (an event queue ordered by ``(time, sequence)``) and every random
choice comes from one ``random.Random(seed)``, so a seed and a schedule of
faults always give the same timeline.

How the simulated world behaves (the driver semantics of ``standby.node``):

* A provider publishes a heartbeat to every relay it can reach once per
  ``heartbeat_interval`` while it runs at least one workload as primary
  (fenced or not started yet counts as not running); each relay that stores
  it acknowledges it, and each acknowledgement renews the leases of the
  provider's workloads.
* Relays keep the newest event per (kind, signer[, workload]). They filter
  subscriptions and queries by what the *body* says (the weakest filter a
  transport may apply), so the core's own signer checks are what stop forged
  input.
* A query or a publish goes to every reachable relay and completes when all
  relays answered or ``query_timeout`` passed, reporting the union of the
  results and the relays that answered.
* A container start takes a time drawn from ``Latencies.spawn``; one slower
  than ``spawn_timeout`` is cancelled and reported as failed. A stop takes a
  time drawn from ``Latencies.stop`` (within ``fence_grace`` by default).
* A crash kills the host's process and containers; only the slot table
  survives (kept as the ``SlotSaved``/``SlotRemoved`` effects dictate) and is
  restored into a fresh election machine on restart. A workload the provider
  ran as primary is gone with its container, so its heartbeats stop and the
  standbys see silence.
* Each provider's wall clock is virtual time plus its skew.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import attrs

from .._effects import (
    Announce,
    CheckContainer,
    CompareAndSetClaim,
    Dropped,
    ElectionEffect,
    LifecycleEffect,
    LifecycleState,
    PrimaryChanged,
    Promoted,
    PublishClaim,
    PublishRevocation,
    QueryClaims,
    QueryHeartbeats,
    QuorumShortfall,
    ReclaimContainer,
    SlotRemoved,
    SlotSaved,
    Spawn,
    StartContainer,
    StateChanged,
    StopContainer,
    StopOrphan,
    WithdrawClaim,
)
from .._election import StandbyElection
from .._lifecycle import WorkloadLifecycle
from .._models import (
    Envelope,
    Heartbeat,
    LeaseRevocation,
    Message,
    PromotionAnnouncement,
    PromotionClaim,
    StandbySlot,
    Topology,
    fencing_token,
)
from .._timing import Timing
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
    Partition,
    Pause,
    RelayAmnesia,
    Replay,
    Restart,
    SkewClock,
    SlowSpawn,
)
from ._report import (
    BASE_TIME,
    EPOCH_REGRESSED,
    EPOCH_REUSED,
    FORGED_INPUT,
    LIVENESS,
    TOKEN_ORDER,
    TWO_LIVE,
    FencedStorage,
    Promotion,
    SimulationReport,
    Timeline,
    Violation,
)

__all__ = ["PRIMARY", "STRANGER", "Latencies", "Simulation", "relay_name", "standby_name"]

PRIMARY = "primary"
"""Name of the provider that runs the workload at virtual time 0."""
STRANGER = "mallory"
"""Default signer of forged messages: not a participant of the workload."""

_INF = math.inf
_EPS = 1e-6

# Message tags (how a delivery came about).
_GENUINE = 0
_FORGED = 1
_REPLAYED = 2
_DUPLICATE = 3
_TAG_NAMES = ("genuine", "forged", "replayed", "duplicate")

# Relay storage kinds (heartbeats are kept apart).
_K_CLAIM = 0
_K_ANNOUNCEMENT = 1
_K_REVOCATION = 2

# Relay operations.
_OP_HEARTBEATS = 0
_OP_CLAIMS = 1
_OP_PUBLISH_CLAIM = 2
_OP_PUBLISH_REVOCATION = 3

# Link rules.
_DROP = 0
_DELAY = 1
_DUP = 2

_TERMINAL = frozenset({LifecycleState.FENCED, LifecycleState.FAILED, LifecycleState.EXPIRED})


def standby_name(index: int) -> str:
    """Name of standby ``index`` in a simulation (``"standby-0"``, ...)."""
    return f"standby-{index}"


def relay_name(index: int) -> str:
    """Name of relay ``index`` in a simulation (``"relay-0"``, ...)."""
    return f"relay-{index}"


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
    }


_DEFAULT_RANGES = _ranges(Timing())


@attrs.frozen(kw_only=True)
class Latencies:
    """Uniform latency ranges ``(low, high)`` in seconds for the simulated world.

    ``network`` is one hop between a provider and a relay, ``spawn`` a
    container start and ``stop`` a container stop. :meth:`for_timing` gives
    ranges proportionate to a :class:`~standby.Timing` that respect the
    model's assumptions (a stop finishes within ``fence_grace``, a hop is much
    shorter than ``query_timeout``).
    """

    network: tuple[float, float] = attrs.field(
        default=_DEFAULT_RANGES["network"], validator=_interval
    )
    spawn: tuple[float, float] = attrs.field(default=_DEFAULT_RANGES["spawn"], validator=_interval)
    stop: tuple[float, float] = attrs.field(default=_DEFAULT_RANGES["stop"], validator=_interval)

    @classmethod
    def for_timing(cls, timing: Timing) -> Latencies:
        """Ranges scaled to ``timing`` (the defaults are those of ``Timing()``).

        A hop takes up to ``min(heartbeat_interval / 250, query_timeout / 4)``,
        a start 1 % to 8 % of ``spawn_timeout``, a stop 2 % to 20 % of
        ``fence_grace``.
        """
        return cls(**_ranges(timing))


class _Disruption:
    __slots__ = ("end", "start", "what")

    def __init__(self, start: float, end: float, what: str) -> None:
        self.start = start
        self.end = end
        self.what = what


class _Provider:
    __slots__ = (
        "alive",
        "backlog",
        "containers",
        "election",
        "epochs",
        "failing",
        "inc",
        "lifecycles",
        "name",
        "paused",
        "promoted_at",
        "skew",
        "slots",
        "slow",
        "starting",
        "wake_at",
        "watched",
        "workloads",
    )

    def __init__(self, name: str, election: StandbyElection[str]) -> None:
        self.name = name
        self.skew = 0.0
        self.alive = True
        self.paused = False
        self.inc = 0
        self.election = election
        self.lifecycles: dict[str, WorkloadLifecycle] = {}
        self.slots: dict[str, StandbySlot[str]] = {}
        self.epochs: dict[str, int] = {}
        self.watched: tuple[str, ...] = ()
        self.workloads: tuple[str, ...] = ()
        self.wake_at = _INF
        self.backlog: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        self.containers: dict[str, _Container] = {}
        self.starting: dict[str, int] = {}
        self.slow: list[tuple[float, _Disruption]] = []
        self.failing: list[_Disruption] = []
        self.promoted_at = -_INF


class _Container:
    __slots__ = ("cid", "epoch", "owner", "started", "token", "workload_id", "write_pending")

    def __init__(
        self, cid: int, owner: _Provider, workload_id: str, epoch: int, token: int, started: float
    ) -> None:
        self.cid = cid
        self.owner = owner
        self.workload_id = workload_id
        self.epoch = epoch
        self.token = token
        self.started = started
        self.write_pending = False

    def describe(self) -> str:
        return (
            f"{self.owner.name} (epoch {self.epoch}, token {self.token}, "
            f"running since t={self.started:.3f})"
        )


class _Relay:
    __slots__ = ("heartbeats", "items", "lossy_until", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.lossy_until = -_INF
        self.heartbeats: dict[str, tuple[Heartbeat, str]] = {}
        self.items: dict[str, dict[tuple[int, str], tuple[Message, str]]] = {}

    def store(self, msg: Message, signer: str, now: float) -> bool:
        """Keep ``msg`` unless a newer event of the same key is stored; ``True`` if new."""
        if now < self.lossy_until:
            return False
        if type(msg) is Heartbeat:
            held = self.heartbeats.get(signer)
            if held is not None and (held[0].timestamp > msg.timestamp or held[0] == msg):
                return False
            self.heartbeats[signer] = (msg, signer)
            return True
        kind, stamp = _kind_and_stamp(msg)
        bucket = self.items.setdefault(msg.workload_id, {})  # type: ignore[union-attr]
        key = (kind, signer)
        old = bucket.get(key)
        if old is not None:
            old_stamp = _kind_and_stamp(old[0])[1]
            if old_stamp > stamp or old[0] == msg:
                return False
        bucket[key] = (msg, signer)
        return True

    def heartbeat_items(
        self, primary: str, workload_ids: Sequence[str]
    ) -> list[tuple[Message, str, str]]:
        out: list[tuple[Message, str, str]] = [
            (m, s, self.name) for m, s in self.heartbeats.values() if m.provider == primary
        ]
        for wid in workload_ids:
            bucket = self.items.get(wid)
            if bucket:
                out.extend(
                    (m, s, self.name) for (k, _), (m, s) in bucket.items() if k == _K_REVOCATION
                )
        return out

    def claim_items(self, workload_id: str) -> list[tuple[Message, str, str]]:
        bucket = self.items.get(workload_id)
        if not bucket:
            return []
        return [(m, s, self.name) for (k, _), (m, s) in bucket.items() if k != _K_REVOCATION]

    def forget(self) -> None:
        self.heartbeats.clear()
        self.items.clear()


def _kind_and_stamp(msg: Message) -> tuple[int, float]:
    if isinstance(msg, PromotionClaim):
        return _K_CLAIM, msg.claimed_at
    if isinstance(msg, PromotionAnnouncement):
        return _K_ANNOUNCEMENT, msg.promoted_at
    if isinstance(msg, LeaseRevocation):
        return _K_REVOCATION, msg.revoked_at
    raise TypeError(f"not a workload message: {msg!r}")


class _Op:
    """A query or publish in flight to every relay."""

    __slots__ = (
        "answered",
        "done",
        "inc",
        "kind",
        "lifecycle",
        "payload",
        "provider",
        "request",
        "results",
    )

    def __init__(
        self,
        kind: int,
        provider: _Provider,
        request: int,
        payload: Any,
        lifecycle: WorkloadLifecycle | None = None,
    ) -> None:
        self.kind = kind
        self.provider = provider
        self.inc = provider.inc
        self.request = request
        self.payload = payload
        self.lifecycle = lifecycle
        self.results: list[tuple[Message, str, str]] = []
        self.answered: list[str] = []
        self.done = False


class _Rule:
    __slots__ = ("kind", "param", "who")

    def __init__(self, kind: int, who: str | None, param: float) -> None:
        self.kind = kind
        self.who = who
        self.param = param


class _LivenessCheck:
    __slots__ = ("anchor", "bound", "candidate", "crashed", "crashed_at", "index", "spawn_hi")

    def __init__(
        self,
        crashed: str,
        crashed_at: float,
        anchor: float,
        bound: float,
        index: int,
        candidate: str,
    ) -> None:
        self.crashed = crashed
        self.crashed_at = crashed_at
        self.anchor = anchor
        self.bound = bound
        self.index = index
        self.candidate = candidate


class Simulation:
    """Deterministic simulation of one workload: a primary, ``standbys`` standbys, relays.

    ``timing`` defaults to :class:`~standby.Timing` with ``relays`` relays and
    a majority write quorum; when both are given, ``relays`` must equal
    ``timing.relay_count``. Faults come from ``faults`` or from the verbs
    (:meth:`crash`, :meth:`partition`, ...), which return the simulation so
    calls can be chained. :meth:`run` advances virtual time and returns a
    cumulative :class:`SimulationReport`; it may be called again with a later
    ``until``.

    ``atomic_claims=True`` gives the standbys a compare-and-set claim register
    (as a transport implementing :class:`~standby.protocols.AtomicClaims`
    would) instead of publish-and-settle claims. Every running container
    writes to :attr:`storage` every ``write_interval`` seconds (default: the
    heartbeat interval; ``0`` disables the writes).
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
        self.timing = timing
        self.seed = seed
        self.atomic_claims = atomic_claims
        self.workload_id = workload_id
        self.latencies = Latencies.for_timing(timing) if latencies is None else latencies
        self.storage = FencedStorage()
        interval = timing.heartbeat_interval if write_interval is None else write_interval
        self._write_interval = float(interval)
        self._rng = random.Random(seed)
        self._t = 0.0
        self._seq = 0
        self._queue: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._log: list[tuple[float, str, Any]] = []
        self._net = self.latencies.network
        self._hop_lo = self._net[0]
        self._hop_span = self._net[1] - self._net[0]
        self._blocked: set[tuple[str, str]] = set()
        self._rules: list[_Rule] = []
        self._dup_rules = 0
        self._relays = [_Relay(relay_name(i)) for i in range(timing.relay_count)]
        self._relay_by_name = {r.name: r for r in self._relays}
        self._n_relays = len(self._relays)
        names = [PRIMARY, *(standby_name(i) for i in range(standbys))]
        self._providers = [_Provider(name, self._new_election(name)) for name in names]
        self._by_name = {p.name: p for p in self._providers}
        self.topology = Topology(primary=PRIMARY, standbys=tuple(names[1:]))
        self._live: dict[int, _Container] = {}
        self._next_cid = 0
        self._start_seq = 0
        self._overlap_start: float | None = None
        self._overlap_members: list[_Container] = []
        self._double_live = 0.0
        self._violations: list[tuple[str, float, str]] = []
        self._promotions: list[Promotion] = []
        self._max_token = 0
        self._epoch = 0
        self._holder = PRIMARY
        self._hb_stored: dict[str, float] = {}
        self._hb_sent: dict[str, float] = {}
        self._genuine_revocations: set[tuple[str, int, str]] = set()
        self._genuine_promoters: set[tuple[str, int, str]] = set()
        self._published: list[tuple[Message, str]] = []
        self._cas: dict[tuple[str, int], PromotionClaim] = {}
        self._drops: dict[str, int] = {}
        self._outside: list[str] = []
        self._disruptions: list[_Disruption] = []
        self._open_partitions: list[tuple[_Disruption, frozenset[tuple[str, str]]]] = []
        self._liveness: list[_LivenessCheck] = []
        self._lookback = (
            timing.silence + timing.peer_claim_grace + timing.retry_interval
        ) + timing.heartbeat_interval
        for rule, detail in timing.violations():
            self._outside.append(f"timing breaks `{rule}`: {detail}")
        if self.latencies.stop[1] > timing.fence_grace:
            self._outside.append(
                f"a container stop may take {self.latencies.stop[1]} s > fence_grace="
                f"{timing.fence_grace} s"
            )
        self._boot()
        for fault in faults:
            self.schedule(fault)

    # ------------------------------------------------------------------
    # Public surface
    # ------------------------------------------------------------------

    @property
    def now(self) -> float:
        """Current virtual time (seconds since the start of the simulation)."""
        return self._t

    @property
    def providers(self) -> tuple[str, ...]:
        """Names of the providers: the primary first, then the standbys in order."""
        return tuple(p.name for p in self._providers)

    @property
    def relays(self) -> tuple[str, ...]:
        """Names of the relays."""
        return tuple(r.name for r in self._relays)

    def running(self) -> list[tuple[str, int]]:
        """Containers of the workload running now, as ``(provider, fencing_token)``."""
        return [(c.owner.name, c.token) for c in self._live.values()]

    def current_primary(self) -> str | None:
        """The provider running the workload as primary (its newest live epoch), if any."""
        p = self._current_primary()
        return None if p is None else p.name

    @property
    def violation_count(self) -> int:
        """Violations recorded so far (cheap; see :meth:`report` for details)."""
        return len(self._violations) + (1 if self._overlap_start is not None else 0)

    def schedule(self, fault: Fault) -> Simulation:
        """Inject ``fault`` at ``fault.at`` (which must not be in the past)."""
        self._validate(fault)
        if fault.at < self._t:
            raise ValueError(f"{fault!r} is scheduled at t={fault.at}, before now={self._t}")
        self._push(float(fault.at), self._ev_fault, (fault,))
        return self

    def crash(self, at: float, who: str = CURRENT_PRIMARY) -> Simulation:
        """Schedule a :class:`~standby.testing.Crash`."""
        return self.schedule(Crash(at, who))

    def restart(self, at: float, who: str) -> Simulation:
        """Schedule a :class:`~standby.testing.Restart`."""
        return self.schedule(Restart(at, who))

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

    def pause(self, at: float, who: str = CURRENT_PRIMARY, duration: float = 600.0) -> Simulation:
        """Schedule a :class:`~standby.testing.Pause`."""
        return self.schedule(Pause(at, who, duration))

    def relay_amnesia(self, at: float, relay: str, *, duration: float | None = None) -> Simulation:
        """Schedule a :class:`~standby.testing.RelayAmnesia`."""
        return self.schedule(RelayAmnesia(at, relay, duration))

    def handover(self, at: float, who: str = CURRENT_PRIMARY) -> Simulation:
        """Schedule a :class:`~standby.testing.Handover`."""
        return self.schedule(Handover(at, who))

    def run(self, until: float) -> SimulationReport:
        """Process every event up to virtual time ``until``; return the report so far."""
        if not (until >= self._t and math.isfinite(until)):
            raise ValueError(f"cannot run until t={until}: the simulation is at t={self._t}")
        queue = self._queue
        pop = heapq.heappop
        while queue and queue[0][0] <= until:
            at, _, fn, args = pop(queue)
            self._t = at
            fn(*args)
        self._t = float(until)
        return self.report()

    def report(self) -> SimulationReport:
        """The cumulative report at the current virtual time."""
        now = self._t
        self._decide_liveness(now)
        raw = list(self._violations)
        double_live = self._double_live
        if self._overlap_start is not None:
            ongoing = now - self._overlap_start
            double_live += ongoing
            if ongoing > _EPS:
                raw.append(self._two_live_violation(self._overlap_start, now, ongoing=True))
        raw.sort(key=lambda v: v[1])
        timeline = Timeline(self._log)
        violations = tuple(
            Violation(kind, at, text, timeline.excerpt(at)) for kind, at, text in raw
        )
        first = self._promotions[0].failover_latency if self._promotions else None
        return SimulationReport(
            seed=self.seed,
            until=now,
            timing=self.timing,
            standbys=len(self._providers) - 1,
            relays=self._n_relays,
            violations=violations,
            double_live_seconds=double_live,
            failover_latency=first,
            promotions=tuple(self._promotions),
            stale_writes=tuple(self.storage.rejected),
            storage_writes_accepted=self.storage.accepted,
            outside_model=tuple(self._outside),
            drops=tuple(sorted(self._drops.items())),
            timeline=timeline,
        )

    # ------------------------------------------------------------------
    # Set-up
    # ------------------------------------------------------------------

    def _new_election(self, name: str) -> StandbyElection[str]:
        return StandbyElection(me=name, timing=self.timing, atomic_claims=self.atomic_claims)

    def _boot(self) -> None:
        timing = self.timing
        wid = self.workload_id
        expires_at = BASE_TIME + 30 * 86400.0
        self._record("sim", f"boot: {len(self._providers) - 1} standbys, {self._n_relays} relays")
        for standby in self._providers[1:]:
            slot = StandbySlot.reserve(
                me=standby.name,
                workload_id=wid,
                topology=self.topology,
                spec="workload-spec",
                owner="consumer",
                created_at=BASE_TIME,
                expires_at=expires_at,
            )
            self._on_election(standby, standby.election.reserve(self._wall(standby), slot))
        primary = self._providers[0]
        lifecycle = WorkloadLifecycle(
            workload_id=wid,
            me=PRIMARY,
            timing=timing,
            standbys=self.topology.standbys,
            epoch=0,
            fencing_token=0,
            expires_at=expires_at,
            created_at=BASE_TIME,  # the same instant the slots were created
        )
        primary.lifecycles[wid] = lifecycle
        primary.promoted_at = 0.0
        self._on_lifecycle(primary, lifecycle, lifecycle.start(self._wall(primary)))
        self._ev_heartbeat_timer(primary, primary.inc)
        for standby in self._providers[1:]:
            phase = self._rng.random() * timing.heartbeat_interval
            self._push(phase, self._ev_heartbeat_timer, (standby, standby.inc))
        for p in self._providers:
            self._rearm(p)

    def _validate(self, fault: Fault) -> None:
        def provider(who: str | None, *, wildcard: bool = False) -> None:
            if who is None or who == CURRENT_PRIMARY or (wildcard and who == "*"):
                return
            if who not in self._by_name:
                raise ValueError(
                    f"{fault!r}: unknown provider {who!r}; known: {sorted(self._by_name)}"
                )

        def relays(names: Sequence[str] | None) -> None:
            for name in names or ():
                if name not in self._relay_by_name:
                    raise ValueError(
                        f"{fault!r}: unknown relay {name!r}; known: {sorted(self._relay_by_name)}"
                    )

        if isinstance(fault, (Partition, Heal)):
            provider(fault.who, wildcard=True)
            relays(fault.relays)
        elif isinstance(fault, RelayAmnesia):
            relays((fault.relay,))
        elif isinstance(fault, Forge):
            if fault.kind in ("claim", "announcement") and fault.signer in self._by_name:
                raise ValueError(
                    f"{fault!r}: a {fault.kind} signed by a participant is genuine, not forged; "
                    "use a signer that is not a provider of the simulation"
                )
        else:
            provider(fault.who)

    # ------------------------------------------------------------------
    # Small helpers
    # ------------------------------------------------------------------

    def _push(self, at: float, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, fn, args))

    def _wall(self, p: _Provider) -> float:
        return BASE_TIME + self._t + p.skew

    def _record(self, actor: str, payload: Any) -> None:
        self._log.append((self._t, actor, payload))

    def _violation(self, kind: str, at: float, text: str) -> None:
        self._violations.append((kind, at, text))
        self._record("CHECK", f"VIOLATION [{kind}]: {text}")

    def _hop(self, who: str) -> float:
        """Latency of one hop to or from ``who``; negative when the message is lost."""
        latency = self._hop_lo + self._hop_span * self._rng.random()
        if self._rules:
            for rule in self._rules:
                if rule.who is None or rule.who == who:
                    if rule.kind == _DROP:
                        if self._rng.random() < rule.param:
                            return -1.0
                    elif rule.kind == _DELAY:
                        latency += rule.param * self._rng.random()
        return latency

    def _duplicates(self, who: str) -> bool:
        for rule in self._rules:
            if (
                rule.kind == _DUP
                and (rule.who is None or rule.who == who)
                and self._rng.random() < rule.param
            ):
                return True
        return False

    def _current_primary(self) -> _Provider | None:
        best: _Provider | None = None
        best_epoch = -1
        for p in self._providers:
            if not p.alive:
                continue
            lifecycle = p.lifecycles.get(self.workload_id)
            if lifecycle is None or lifecycle.state in _TERMINAL:
                continue
            if lifecycle.epoch > best_epoch:
                best, best_epoch = p, lifecycle.epoch
        return best

    def _resolve(self, who: str) -> _Provider | None:
        if who == CURRENT_PRIMARY:
            return self._current_primary()
        return self._by_name[who]

    def _gate(self, p: _Provider, inc: int, fn: Callable[..., None], args: tuple[Any, ...]) -> bool:
        """Whether an event for ``p`` may run now (a paused process queues it)."""
        if p.inc != inc or not p.alive:
            return False
        if p.paused:
            p.backlog.append((fn, args))
            return False
        return True

    def _rearm(self, p: _Provider) -> None:
        """Make sure ``p`` is woken no later than its machines' next deadline."""
        if not p.alive:
            return
        best = p.election.next_deadline()
        for lifecycle in p.lifecycles.values():
            deadline = lifecycle.next_deadline()
            if deadline is not None and (best is None or deadline < best):
                best = deadline
        if best is None:
            return
        at = best - BASE_TIME - p.skew
        if at <= self._t:
            at = self._t + _EPS
        if at < p.wake_at:
            p.wake_at = at
            self._push(at, self._ev_wake, (p, p.inc, at))

    def _resubscribe(self, p: _Provider) -> None:
        slots = p.election.slots
        p.watched = tuple(sorted({slot.primary for slot in slots.values()}))
        p.workloads = tuple(sorted(slots))

    # ------------------------------------------------------------------
    # Events: time
    # ------------------------------------------------------------------

    def _ev_wake(self, p: _Provider, inc: int, at: float) -> None:
        if p.wake_at != at or not self._gate(p, inc, self._ev_wake, (p, inc, at)):
            return
        p.wake_at = _INF
        now = self._wall(p)
        for lifecycle in list(p.lifecycles.values()):
            effects = lifecycle.tick(now)
            if effects:
                self._on_lifecycle(p, lifecycle, effects)
        effects_e = p.election.tick(now)
        if effects_e:
            self._on_election(p, effects_e)
        self._rearm(p)

    def _ev_heartbeat_timer(self, p: _Provider, inc: int) -> None:
        if not self._gate(p, inc, self._ev_heartbeat_timer, (p, inc)):
            return
        self._push(self._t + self.timing.heartbeat_interval, self._ev_heartbeat_timer, (p, inc))
        self._publish_heartbeat(p)

    # ------------------------------------------------------------------
    # Heartbeats
    # ------------------------------------------------------------------

    def _publish_heartbeat(self, p: _Provider) -> None:
        active = 0
        for lifecycle in p.lifecycles.values():
            if lifecycle.state not in _TERMINAL:
                active += 1
        if not active:
            return  # like standby.node: no workload as primary, no heartbeat
        now = self._wall(p)
        heartbeat = Heartbeat(provider=p.name, timestamp=now, active_workloads=active)
        self._published.append((heartbeat, p.name))
        name = p.name
        t = self._t
        self._record(name, ("heartbeat stamped %.3f", (now - BASE_TIME,)))
        for relay in self._relays:
            if (name, relay.name) in self._blocked:
                continue
            latency = self._hop(name)
            if latency < 0:
                continue
            self._hb_sent[name] = t
            self._push(t + latency, self._ev_store, (relay, heartbeat, name, _GENUINE, p, p.inc, t))

    def _ev_store(
        self,
        relay: _Relay,
        msg: Message,
        signer: str,
        tag: int,
        ack: _Provider | None,
        inc: int,
        sent: float,
    ) -> None:
        if relay.store(msg, signer, self._t):
            if (
                tag == _GENUINE
                and type(msg) is Heartbeat
                and sent > self._hb_stored.get(signer, -_INF)
            ):
                self._hb_stored[signer] = sent
            self._fanout(relay, msg, signer, tag)
        if (
            ack is not None
            and type(msg) is Heartbeat
            and (ack.name, relay.name) not in self._blocked
        ):
            latency = self._hop(ack.name)
            if latency >= 0:
                self._push(
                    self._t + latency, self._ev_heartbeat_ack, (ack, inc, relay.name, msg.timestamp)
                )

    def _ev_heartbeat_ack(self, p: _Provider, inc: int, relay: str, stamp: float) -> None:
        if not self._gate(p, inc, self._ev_heartbeat_ack, (p, inc, relay, stamp)):
            return
        now = self._wall(p)
        changed = False
        for lifecycle in list(p.lifecycles.values()):
            if lifecycle.state in _TERMINAL:
                continue
            effects = lifecycle.heartbeat_acked(now, relay, stamp)
            if effects:
                changed = True
                self._on_lifecycle(p, lifecycle, effects)
        if changed:
            self._rearm(p)

    # ------------------------------------------------------------------
    # Relay fan-out and delivery
    # ------------------------------------------------------------------

    def _fanout(self, relay: _Relay, msg: Message, signer: str, tag: int) -> None:
        t = self._t
        if type(msg) is Heartbeat:
            key = msg.provider
            subscribers = [q for q in self._providers if key in q.watched]
        else:
            wid = msg.workload_id  # type: ignore[union-attr]
            subscribers = [q for q in self._providers if wid in q.workloads]
        for q in subscribers:
            name = q.name
            if name == signer or (name, relay.name) in self._blocked:
                continue
            latency = self._hop(name)
            if latency < 0:
                continue
            self._push(t + latency, self._ev_deliver, (q, q.inc, msg, signer, relay.name, tag))
            if self._dup_rules and self._duplicates(name):
                again = latency + self._hop_lo + self._hop_span * self._rng.random()
                dup_tag = _DUPLICATE if tag == _GENUINE else tag
                self._push(
                    t + again, self._ev_deliver, (q, q.inc, msg, signer, relay.name, dup_tag)
                )

    def _ev_deliver(
        self, q: _Provider, inc: int, msg: Message, signer: str, relay: str, tag: int
    ) -> None:
        if not self._gate(q, inc, self._ev_deliver, (q, inc, msg, signer, relay, tag)):
            return
        now = self._wall(q)
        election = q.election
        envelope = Envelope(msg, signer, relay, now)
        if type(msg) is LeaseRevocation:
            before = election.counters.get("revoked", 0)
            effects = election.on_message(now, envelope)
            if election.counters.get("revoked", 0) > before:
                self._check_revocation(q, msg.workload_id, _TAG_NAMES[tag])
        else:
            effects = election.on_message(now, envelope)
        if effects:
            self._on_election(q, effects)
            self._rearm(q)
        elif type(msg) is not Heartbeat:
            self._rearm(q)

    def _broadcast(self, p: _Provider, msg: Message) -> None:
        """Fire-and-forget publish of ``msg`` by ``p`` to every relay it reaches."""
        self._published.append((msg, p.name))
        t = self._t
        for relay in self._relays:
            if (p.name, relay.name) in self._blocked:
                continue
            latency = self._hop(p.name)
            if latency >= 0:
                self._push(t + latency, self._ev_store, (relay, msg, p.name, _GENUINE, None, 0, t))

    # ------------------------------------------------------------------
    # Queries and acknowledged publishes
    # ------------------------------------------------------------------

    def _start_op(self, op: _Op) -> None:
        p = op.provider
        t = self._t
        for relay in self._relays:
            if (p.name, relay.name) in self._blocked:
                continue
            latency = self._hop(p.name)
            if latency >= 0:
                self._push(t + latency, self._ev_op_at_relay, (op, relay))
        self._push(t + self.timing.query_timeout, self._ev_op_timeout, (op,))

    def _ev_op_at_relay(self, op: _Op, relay: _Relay) -> None:
        items: list[tuple[Message, str, str]] | None = None
        kind = op.kind
        p = op.provider
        if kind == _OP_HEARTBEATS:
            query: QueryHeartbeats = op.payload
            items = relay.heartbeat_items(query.primary, query.workload_ids)
        elif kind == _OP_CLAIMS:
            items = [item for workload in op.payload for item in relay.claim_items(workload)]
        else:
            msg: Message = op.payload
            if relay.store(msg, p.name, self._t):
                self._fanout(relay, msg, p.name, _GENUINE)
        if (p.name, relay.name) in self._blocked:
            return
        latency = self._hop(p.name)
        if latency >= 0:
            self._push(self._t + latency, self._ev_op_reply, (op, relay.name, items))

    def _ev_op_reply(
        self, op: _Op, relay: str, items: list[tuple[Message, str, str]] | None
    ) -> None:
        if op.done:
            return
        op.answered.append(relay)
        if items:
            op.results.extend(items)
        if len(op.answered) == self._n_relays:
            op.done = True
            self._finish_op(op)

    def _ev_op_timeout(self, op: _Op) -> None:
        if not op.done:
            op.done = True
            self._finish_op(op)

    def _finish_op(self, op: _Op) -> None:
        p = op.provider
        if not self._gate(p, op.inc, self._finish_op, (op,)):
            return
        now = self._wall(p)
        kind = op.kind
        if kind in (_OP_HEARTBEATS, _OP_CLAIMS):
            envelopes = [Envelope(m, s, r, now) for m, s, r in op.results]
            if kind == _OP_HEARTBEATS:
                before = p.election.counters.get("revoked", 0)
                effects = p.election.heartbeats_queried(now, op.request, envelopes, op.answered)
                if p.election.counters.get("revoked", 0) > before:
                    self._check_revocation(p, self.workload_id, "query result")
            else:
                effects = p.election.claims_queried(now, op.request, envelopes, op.answered)
            self._on_election(p, effects)
        elif kind == _OP_PUBLISH_CLAIM:
            self._on_election(p, p.election.claim_published(now, op.request, op.answered))
        else:
            lifecycle = op.lifecycle
            assert lifecycle is not None
            if p.lifecycles.get(lifecycle.workload_id) is lifecycle:
                self._on_lifecycle(p, lifecycle, lifecycle.revocation_published(now, op.answered))
        self._rearm(p)

    # ------------------------------------------------------------------
    # Atomic claims (compare-and-set register)
    # ------------------------------------------------------------------

    def _compare_and_set(self, p: _Provider, effect: CompareAndSetClaim) -> None:
        reachable = sum(1 for r in self._relays if (p.name, r.name) not in self._blocked)
        if reachable < self.timing.write_quorum:
            return  # no answer: the election's own deadline handles it
        latency = self._hop(p.name)
        if latency >= 0:
            self._push(self._t + latency, self._ev_cas, (p, p.inc, effect.request_id, effect.claim))

    def _ev_cas(self, p: _Provider, inc: int, request: int, claim: PromotionClaim) -> None:
        key = (claim.workload_id, claim.epoch)
        holder = self._cas.get(key)
        won = holder is None or holder.claimant == claim.claimant
        if won:
            self._cas[key] = claim
        latency = self._hop(p.name)
        if latency >= 0:
            self._push(
                self._t + latency,
                self._ev_cas_reply,
                (p, inc, request, won, None if won else holder),
            )

    def _ev_cas_reply(
        self, p: _Provider, inc: int, request: int, won: bool, holder: PromotionClaim | None
    ) -> None:
        if not self._gate(p, inc, self._ev_cas_reply, (p, inc, request, won, holder)):
            return
        self._on_election(p, p.election.claim_compared(self._wall(p), request, won, holder))
        self._rearm(p)

    # ------------------------------------------------------------------
    # Runtimes and containers
    # ------------------------------------------------------------------

    def _attempt(self, p: _Provider) -> tuple[float, bool, str]:
        lo, hi = self.latencies.spawn
        latency = lo + (hi - lo) * self._rng.random()
        if p.slow:
            extra, disruption = p.slow.pop(0)
            latency += extra
            disruption.end = self._t + min(latency, self.timing.spawn_timeout)
        if p.failing:
            disruption = p.failing.pop(0)
            disruption.end = self._t + latency
            return latency, False, "injected start failure"
        limit = self.timing.spawn_timeout
        if latency > limit:
            return limit, False, f"start cancelled after spawn_timeout={limit}"
        return latency, True, ""

    def _spawn(self, p: _Provider, effect: Spawn[Any]) -> None:
        latency, ok, error = self._attempt(p)
        self._push(
            self._t + latency,
            self._ev_spawned,
            (
                p,
                p.inc,
                effect.request_id,
                effect.workload_id,
                effect.epoch,
                effect.fencing_token,
                ok,
                error,
            ),
        )

    def _ev_spawned(
        self,
        p: _Provider,
        inc: int,
        request: int,
        workload_id: str,
        epoch: int,
        token: int,
        ok: bool,
        error: str,
    ) -> None:
        args = (p, inc, request, workload_id, epoch, token, ok, error)
        if not self._gate(p, inc, self._ev_spawned, args):
            return
        now = self._wall(p)
        if ok:
            container = self._new_container(p, workload_id, epoch, token)
            effects = p.election.spawn_finished(now, request, True)
            self._on_election(p, effects, fresh=container)
        else:
            self._record(p.name, ("spawn failed: %s", (error,)))
            self._on_election(p, p.election.spawn_finished(now, request, False, error))
        self._rearm(p)

    def _start_container(self, p: _Provider, lifecycle: WorkloadLifecycle, token: int) -> None:
        latency, ok, error = self._attempt(p)
        self._start_seq += 1
        p.starting[lifecycle.workload_id] = self._start_seq
        self._push(
            self._t + latency,
            self._ev_started,
            (p, p.inc, lifecycle, token, self._start_seq, ok, error),
        )

    def _ev_started(
        self,
        p: _Provider,
        inc: int,
        lifecycle: WorkloadLifecycle,
        token: int,
        attempt: int,
        ok: bool,
        error: str,
    ) -> None:
        args = (p, inc, lifecycle, token, attempt, ok, error)
        if not self._gate(p, inc, self._ev_started, args):
            return
        wid = lifecycle.workload_id
        if p.starting.get(wid) != attempt:
            return  # cancelled by a stop
        del p.starting[wid]
        if p.lifecycles.get(wid) is not lifecycle:
            return
        now = self._wall(p)
        if ok:
            p.containers[wid] = self._new_container(p, wid, lifecycle.epoch, token)
            effects = lifecycle.container_started(now)
        else:
            self._record(p.name, ("container start failed: %s", (error,)))
            effects = lifecycle.container_failed(now, error)
        self._on_lifecycle(p, lifecycle, effects)
        self._rearm(p)

    def _stop_container(self, p: _Provider, workload_id: str) -> None:
        p.starting.pop(workload_id, None)
        container = p.containers.get(workload_id)
        lo, hi = self.latencies.stop
        latency = lo + (hi - lo) * self._rng.random()
        self._push(self._t + latency, self._ev_stopped, (p, p.inc, workload_id, container))

    def _ev_stopped(
        self, p: _Provider, inc: int, workload_id: str, container: _Container | None
    ) -> None:
        if not self._gate(p, inc, self._ev_stopped, (p, inc, workload_id, container)):
            return
        if container is not None:
            self._remove_container(container)
            if p.containers.get(workload_id) is container:
                del p.containers[workload_id]
        lifecycle = p.lifecycles.get(workload_id)
        if lifecycle is not None:
            self._on_lifecycle(p, lifecycle, lifecycle.container_stopped(self._wall(p)))
            self._rearm(p)

    def _ev_orphan_stopped(self, p: _Provider, inc: int, container: _Container) -> None:
        if not self._gate(p, inc, self._ev_orphan_stopped, (p, inc, container)):
            return
        self._remove_container(container)

    def _ev_status(self, p: _Provider, inc: int, lifecycle: WorkloadLifecycle) -> None:
        if not self._gate(p, inc, self._ev_status, (p, inc, lifecycle)):
            return
        wid = lifecycle.workload_id
        running = wid in p.containers or wid in p.starting
        status: Literal["running", "stopped"] = "running" if running else "stopped"
        self._on_lifecycle(p, lifecycle, lifecycle.container_status(self._wall(p), status))
        self._rearm(p)

    def _new_container(self, p: _Provider, workload_id: str, epoch: int, token: int) -> _Container:
        self._next_cid += 1
        container = _Container(self._next_cid, p, workload_id, epoch, token, self._t)
        live = self._live
        live[container.cid] = container
        self._record(p.name, ("container running (epoch %d, token %d)", (epoch, token)))
        if len(live) == 2 and self._overlap_start is None:
            self._overlap_start = self._t
            self._overlap_members = list(live.values())
        if self._write_interval > 0:
            self._push(self._t, self._ev_write, (container,))
        return container

    def _remove_container(self, container: _Container) -> None:
        live = self._live
        if container.cid not in live:
            return
        del live[container.cid]
        self._record(container.owner.name, ("container gone (token %d)", (container.token,)))
        if len(live) < 2 and self._overlap_start is not None:
            start = self._overlap_start
            duration = self._t - start
            self._double_live += duration
            if duration > _EPS:
                kind, at, text = self._two_live_violation(start, self._t, ongoing=False)
                self._violation(kind, at, text)
            self._overlap_start = None
            self._overlap_members = []

    def _two_live_violation(
        self, start: float, end: float, *, ongoing: bool
    ) -> tuple[str, float, str]:
        members = " and ".join(c.describe() for c in self._overlap_members)
        until = "still running at the end of the run" if ongoing else f"until t={end:.3f}"
        return (
            TWO_LIVE,
            start,
            f"two containers of {self.workload_id!r} ran at once for {end - start:.3f} s "
            f"({until}): {members}",
        )

    def _ev_write(self, container: _Container) -> None:
        if container.cid not in self._live:
            return
        p = container.owner
        if p.paused:
            container.write_pending = True
            return
        self._write(container)
        self._push(self._t + self._write_interval, self._ev_write, (container,))

    def _write(self, container: _Container) -> None:
        storage = self.storage
        highest = storage.highest
        if not storage.write(self._t, container.owner.name, container.token):
            self._record(
                container.owner.name,
                (
                    "storage REJECTED a write with stale token %d (highest %d)",
                    (container.token, highest),
                ),
            )

    # ------------------------------------------------------------------
    # Effects
    # ------------------------------------------------------------------

    def _on_election(
        self, p: _Provider, effects: list[ElectionEffect], fresh: _Container | None = None
    ) -> None:
        resubscribe = False
        name = p.name
        for e in effects:
            if isinstance(e, QueryHeartbeats):
                self._record(name, e)
                self._start_op(_Op(_OP_HEARTBEATS, p, e.request_id, e))
            elif isinstance(e, QueryClaims):
                self._record(name, e)
                self._start_op(_Op(_OP_CLAIMS, p, e.request_id, e.workload_ids))
            elif isinstance(e, PublishClaim):
                self._record(name, e)
                claim = e.claim
                self._genuine_promoters.add((claim.workload_id, claim.epoch, name))
                self._published.append((claim, name))
                self._start_op(_Op(_OP_PUBLISH_CLAIM, p, e.request_id, claim))
            elif isinstance(e, CompareAndSetClaim):
                self._record(name, e)
                claim = e.claim
                self._genuine_promoters.add((claim.workload_id, claim.epoch, name))
                self._compare_and_set(p, e)
            elif isinstance(e, WithdrawClaim):
                self._record(name, e)
                claim = e.claim
                if self.atomic_claims:
                    key = (claim.workload_id, claim.epoch)
                    held = self._cas.get(key)
                    if held is not None and held.claimant == name:
                        del self._cas[key]
                self._broadcast(p, claim)
            elif isinstance(e, Spawn):
                self._record(name, e)
                self._spawn(p, e)
            elif isinstance(e, Announce):
                self._record(name, e)
                a = e.announcement
                if a.epoch is not None:
                    self._genuine_promoters.add((a.workload_id, a.epoch, name))
                self._broadcast(p, a)
            elif isinstance(e, Promoted):
                self._record(name, e)
                self._promoted(p, e, fresh)
            elif isinstance(e, StopOrphan):
                self._record(name, e)
                if fresh is not None:
                    lo, hi = self.latencies.stop
                    latency = lo + (hi - lo) * self._rng.random()
                    self._push(self._t + latency, self._ev_orphan_stopped, (p, p.inc, fresh))
            elif isinstance(e, SlotSaved):
                self._record(name, e)
                slot = e.slot
                wid = slot.workload_id
                p.slots[wid] = slot
                previous = p.epochs.get(wid, -1)
                if slot.epoch < previous:
                    self._violation(
                        EPOCH_REGRESSED,
                        self._t,
                        f"{name} saved its slot at epoch {slot.epoch} after epoch {previous}",
                    )
                else:
                    p.epochs[wid] = slot.epoch
                resubscribe = True
            elif isinstance(e, SlotRemoved):
                self._record(name, e)
                p.slots.pop(e.workload_id, None)
                resubscribe = True
            elif isinstance(e, PrimaryChanged):
                self._record(name, e)
                if (e.workload_id, e.epoch, e.new_primary) not in self._genuine_promoters:
                    self._violation(
                        FORGED_INPUT,
                        self._t,
                        f"{name} now follows {e.new_primary} as primary of epoch {e.epoch}, "
                        f"but {e.new_primary} never claimed or announced that epoch",
                    )
                resubscribe = True
            elif isinstance(e, Dropped):
                self._record(name, e)
                reason = e.reason.value
                self._drops[reason] = self._drops.get(reason, 0) + 1
            elif isinstance(e, QuorumShortfall):
                self._record(name, e)
        if resubscribe:
            self._resubscribe(p)

    def _on_lifecycle(
        self, p: _Provider, lifecycle: WorkloadLifecycle, effects: list[LifecycleEffect]
    ) -> None:
        name = p.name
        wid = lifecycle.workload_id
        for e in effects:
            self._record(name, e)
            if isinstance(e, StartContainer):
                self._start_container(p, lifecycle, e.fencing_token)
            elif isinstance(e, StopContainer):
                self._stop_container(p, wid)
            elif isinstance(e, PublishRevocation):
                revocation = e.revocation
                self._genuine_revocations.add((revocation.workload_id, revocation.epoch, name))
                self._published.append((revocation, name))
                self._start_op(_Op(_OP_PUBLISH_REVOCATION, p, 0, revocation, lifecycle))
            elif isinstance(e, CheckContainer):
                latency = self._hop_lo + self._hop_span * self._rng.random()
                self._push(self._t + latency, self._ev_status, (p, p.inc, lifecycle))
            elif isinstance(e, (StateChanged, ReclaimContainer)):
                pass  # recorded above

    def _promoted(self, p: _Provider, effect: Promoted[Any], fresh: _Container | None) -> None:
        slot = effect.slot
        wid = slot.workload_id
        now = self._wall(p)
        lifecycle = WorkloadLifecycle.promoted(
            workload_id=wid,
            me=p.name,
            timing=self.timing,
            now=now,
            standbys=effect.standbys,
            epoch=effect.epoch,
            fencing_token=effect.fencing_token,
            lease_from=effect.lease_from,
            expires_at=slot.expires_at,
        )
        p.lifecycles[wid] = lifecycle
        p.promoted_at = self._t
        if fresh is not None:
            p.containers[wid] = fresh
        previous = slot.primary
        anchor = self._hb_stored.get(previous, -_INF)
        before = self._by_name.get(previous)
        if before is not None:
            anchor = max(anchor, before.promoted_at)
        latency = None if anchor == -_INF else self._t - anchor
        token = effect.fencing_token
        for earlier in self._promotions:
            if earlier.epoch == effect.epoch:
                self._violation(
                    EPOCH_REUSED,
                    self._t,
                    f"{p.name} promoted into epoch {effect.epoch} (token {token}), which "
                    f"{earlier.provider} already won at t={earlier.at:.3f} "
                    f"(token {earlier.fencing_token})",
                )
        if token <= self._max_token:
            verb = "repeats" if token == self._max_token else "is lower than"
            self._violation(
                TOKEN_ORDER,
                self._t,
                f"{p.name}'s fencing token {token} {verb} the highest earlier token "
                f"{self._max_token}",
            )
        self._max_token = max(self._max_token, token)
        if effect.epoch > self._epoch:
            self._epoch = effect.epoch
            self._holder = p.name
        self._promotions.append(Promotion(self._t, p.name, effect.epoch, token, previous, latency))
        # A promoted machine hands over the effects of its first step on the next call
        # (a StopContainer when the lease already ended while the spawn ran).
        self._on_lifecycle(p, lifecycle, lifecycle.tick(now))
        self._publish_heartbeat(p)

    def _check_revocation(self, p: _Provider, workload_id: str, how: str) -> None:
        slot = p.election.slots.get(workload_id)
        if slot is None:
            return
        if (workload_id, slot.epoch, slot.primary) not in self._genuine_revocations:
            self._violation(
                FORGED_INPUT,
                self._t,
                f"{p.name} accepted a revocation of epoch {slot.epoch} ({how}) that its "
                f"primary {slot.primary} never published",
            )

    # ------------------------------------------------------------------
    # Faults
    # ------------------------------------------------------------------

    def _disrupt(self, what: str, end: float | None = None) -> _Disruption:
        disruption = _Disruption(self._t, self._t if end is None else end, what)
        self._disruptions.append(disruption)
        return disruption

    def _ev_fault(self, fault: Fault) -> None:
        self._record("FAULT", repr(fault))
        t = self._t
        if isinstance(fault, Crash):
            crashed = self._resolve(fault.who)
            if crashed is None or not crashed.alive:
                self._record("FAULT", "  (nobody to crash)")
                return
            self._register_liveness(crashed)
            self._crash(crashed)
            self._disrupt(f"crash of {crashed.name}")
        elif isinstance(fault, Restart):
            self._restart(self._by_name[fault.who])
        elif isinstance(fault, Partition):
            self._partition(fault)
        elif isinstance(fault, Heal):
            self._heal(fault.who, fault.relays)
        elif isinstance(fault, SkewClock):
            self._skew(fault)
        elif isinstance(fault, (Drop, Delay, Duplicate)):
            kind = (
                _DROP if isinstance(fault, Drop) else _DELAY if isinstance(fault, Delay) else _DUP
            )
            param = fault.extra if isinstance(fault, Delay) else fault.probability
            rule = _Rule(kind, fault.who, param)
            self._rules.append(rule)
            if kind == _DUP:
                self._dup_rules += 1
            self._push(t + fault.duration, self._ev_rule_end, (rule,))
            self._disrupt(type(fault).__name__.lower(), t + fault.duration)
        elif isinstance(fault, Replay):
            self._replay(fault)
            self._disrupt("replay")
        elif isinstance(fault, Forge):
            self._forge(fault)
        elif isinstance(fault, SlowSpawn):
            p = self._by_name[fault.who]
            for _ in range(fault.count):
                p.slow.append((fault.extra, self._disrupt("slow spawn", _INF)))
        elif isinstance(fault, FailSpawn):
            p = self._by_name[fault.who]
            for _ in range(fault.count):
                p.failing.append(self._disrupt("failing spawn", _INF))
        elif isinstance(fault, Pause):
            paused = self._resolve(fault.who)
            if paused is None or not paused.alive or paused.paused:
                self._record("FAULT", "  (nobody to pause)")
                return
            paused.paused = True
            self._outside.append(f"{paused.name} was paused for {fault.duration:g} s at t={t:.3f}")
            self._disrupt("pause", t + fault.duration)
            self._push(t + fault.duration, self._ev_resume, (paused, paused.inc))
        elif isinstance(fault, RelayAmnesia):
            relay = self._relay_by_name[fault.relay]
            relay.forget()
            note = f"{fault.relay} lost its stored events at t={t:.3f}"
            if fault.duration is not None:
                relay.lossy_until = t + fault.duration
                note += f" and every event acknowledged in the next {fault.duration:g} s"
            self._outside.append(note)
            self._disrupt("relay amnesia", _INF)
        elif isinstance(fault, Handover):
            self._disrupt("handover")
            target = self._resolve(fault.who)
            if target is None or not target.alive:
                self._record("FAULT", "  (nobody to hand over)")
                return
            now = self._wall(target)
            for lifecycle in list(target.lifecycles.values()):
                # Catch up first: a lease that ran out (say, during a pause) fences.
                self._on_lifecycle(target, lifecycle, lifecycle.tick(now))
                if lifecycle.state not in _TERMINAL and lifecycle.replicated:
                    self._on_lifecycle(target, lifecycle, lifecycle.handover(now))
            self._rearm(target)

    def _ev_rule_end(self, rule: _Rule) -> None:
        self._rules.remove(rule)
        if rule.kind == _DUP:
            self._dup_rules -= 1

    def _crash(self, p: _Provider) -> None:
        p.alive = False
        p.paused = False
        p.inc += 1
        p.backlog.clear()
        p.wake_at = _INF
        for container in [c for c in self._live.values() if c.owner is p]:
            self._remove_container(container)
        p.containers.clear()
        p.starting.clear()
        p.lifecycles.clear()
        p.watched = ()
        p.workloads = ()

    def _restart(self, p: _Provider) -> None:
        if p.alive:
            self._crash(p)
        self._disrupt(f"restart of {p.name}")
        p.alive = True
        p.election = self._new_election(p.name)
        now = self._wall(p)
        self._on_election(p, p.election.restore(now, list(p.slots.values())))
        self._resubscribe(p)
        self._ev_heartbeat_timer(p, p.inc)
        self._rearm(p)

    def _ev_resume(self, p: _Provider, inc: int) -> None:
        if p.inc != inc or not p.alive:
            return
        p.paused = False
        self._record(p.name, "resumed")
        for container in [c for c in self._live.values() if c.owner is p]:
            if container.write_pending:
                container.write_pending = False
                self._write(container)
                self._push(self._t + self._write_interval, self._ev_write, (container,))
        backlog, p.backlog = p.backlog, []
        for fn, args in backlog:
            fn(*args)
        self._rearm(p)

    def _links(self, who: str | None, relays: Sequence[str] | None) -> list[tuple[str, str]]:
        if who is None or who == "*":
            names = [p.name for p in self._providers]
        else:
            target = self._resolve(who)
            names = [] if target is None else [target.name]
        relay_names = [r.name for r in self._relays] if relays is None else list(relays)
        return [(n, r) for n in names for r in relay_names]

    def _partition(self, fault: Partition) -> None:
        links = self._links(fault.who, fault.relays)
        self._blocked.update(links)
        end = _INF if fault.duration is None else self._t + fault.duration
        disruption = self._disrupt("partition", end)
        if fault.duration is None:
            self._open_partitions.append((disruption, frozenset(links)))
        else:
            self._push(end, self._ev_heal_links, (links,))

    def _ev_heal_links(self, links: list[tuple[str, str]]) -> None:
        self._record("FAULT", ("partition of %d links healed", (len(links),)))
        self._blocked.difference_update(links)

    def _heal(self, who: str | None, relays: Sequence[str] | None) -> None:
        links = set(self._links(who, relays))
        self._blocked.difference_update(links)
        still_open = []
        for disruption, cut in self._open_partitions:
            if cut <= links:
                disruption.end = self._t
            else:
                still_open.append((disruption, cut))
        self._open_partitions = still_open

    def _skew(self, fault: SkewClock) -> None:
        p = self._by_name[fault.who]
        p.skew = float(fault.offset)
        skews = [q.skew for q in self._providers]
        spread = max(skews) - min(skews)
        if spread > self.timing.max_clock_skew:
            self._outside.append(
                f"clocks differ by {spread:g} s > max_clock_skew={self.timing.max_clock_skew:g} s "
                f"from t={self._t:.3f}"
            )
            self._disrupt("clock skew beyond the bound", _INF)
        self._rearm(p)

    def _replay(self, fault: Replay) -> None:
        if not self._published:
            return
        targets = (
            [p for p in self._providers if p.alive]
            if fault.who is None
            else [self._by_name[fault.who]]
        )
        for _ in range(fault.count):
            msg, signer = self._published[self._rng.randrange(len(self._published))]
            relay = self._relays[self._rng.randrange(self._n_relays)]
            for q in targets:
                if not q.alive or q.name == signer:
                    continue
                if type(msg) is Heartbeat:
                    subscribed = msg.provider in q.watched
                else:
                    subscribed = msg.workload_id in q.workloads  # type: ignore[union-attr]
                if not subscribed or (q.name, relay.name) in self._blocked:
                    continue
                latency = self._hop(q.name)
                if latency >= 0:
                    self._push(
                        self._t + latency,
                        self._ev_deliver,
                        (q, q.inc, msg, signer, relay.name, _REPLAYED),
                    )

    def _forge(self, fault: Forge) -> None:
        wid = self.workload_id
        now = BASE_TIME + self._t
        holder = self._holder
        epoch = self._epoch
        if fault.signer == holder and fault.kind in ("revocation", "heartbeat"):
            self._record("FAULT", "  (the signer is the primary itself: nothing forged)")
            return
        msg: Message
        if fault.kind == "revocation":
            msg = LeaseRevocation(
                workload_id=wid,
                primary=holder,
                standbys=self.topology.standbys,
                reason="forged",
                revoked_at=now,
                epoch=epoch,
            )
        elif fault.kind == "claim":
            claimant = self.topology.standbys[0] if self.topology.standbys else holder
            msg = PromotionClaim(
                workload_id=wid,
                epoch=epoch + 1,
                fencing_token=fencing_token(epoch + 1, 0),
                claimant=claimant,
                standby_index=0,
                claimed_at=now,
            )
        elif fault.kind == "announcement":
            new_primary = self.topology.standbys[0] if self.topology.standbys else holder
            msg = PromotionAnnouncement(
                workload_id=wid,
                new_primary=new_primary,
                promoted_at=now,
                epoch=epoch + 1,
                fencing_token=fencing_token(epoch + 1, 0),
            )
        else:
            msg = Heartbeat(provider=holder, timestamp=now)
        for relay in self._relays:
            latency = self._hop_lo + self._hop_span * self._rng.random()
            self._push(
                self._t + latency, self._ev_store, (relay, msg, fault.signer, _FORGED, None, 0, 0.0)
            )

    # ------------------------------------------------------------------
    # Liveness checker
    # ------------------------------------------------------------------

    def _register_liveness(self, crashed: _Provider) -> None:
        wid = self.workload_id
        lifecycle = crashed.lifecycles.get(wid)
        container = crashed.containers.get(wid)
        if (
            lifecycle is None
            or lifecycle.state in _TERMINAL
            or container is None
            or container.cid not in self._live
            or len(self._live) != 1
        ):
            return
        candidates: list[tuple[int, str]] = []
        for q in self._providers:
            if q is crashed or not q.alive or q.paused:
                continue
            slot = q.election.slots.get(wid)
            if slot is not None and slot.primary == crashed.name:
                candidates.append((slot.standby_index, q.name))
        if not candidates:
            return
        index, candidate = min(candidates)
        timing = self.timing
        # The last heartbeat that left before the crash (one still in flight
        # reaches the relays afterwards and moves the standbys' baseline).
        anchor = max(self._hb_sent.get(crashed.name, -_INF), crashed.promoted_at)
        slack = timing.max_clock_skew + 5 * timing.query_timeout + 2 * self._net[1]
        bound = (
            anchor
            + timing.silence
            + index * timing.promotion_delay
            + timing.claim_settle
            + self.latencies.spawn[1]
            + slack
        )
        self._liveness.append(
            _LivenessCheck(crashed.name, self._t, anchor, bound, index, candidate)
        )

    def _decide_liveness(self, now: float) -> None:
        pending = []
        for check in self._liveness:
            if check.bound > now:
                pending.append(check)
                continue
            start = check.crashed_at - self._lookback
            disturbed = any(
                d.start <= check.bound
                and d.end >= start
                and not (d.what == f"crash of {check.crashed}" and d.start == check.crashed_at)
                and d.what != f"restart of {check.crashed}"
                for d in self._disruptions
            )
            if disturbed:
                continue
            if any(check.crashed_at <= p.at <= check.bound for p in self._promotions):
                continue
            later = [p for p in self._promotions if p.at > check.bound]
            outcome = (
                f"the first ran at t={later[0].at:.3f} ({later[0].provider})"
                if later
                else "none ran"
            )
            self._violation(
                LIVENESS,
                check.bound,
                f"{check.crashed} crashed at t={check.crashed_at:.3f}, its last heartbeat left "
                f"at t={check.anchor:.3f}; {check.candidate} (index {check.index}) and the relays "
                f"stayed reachable, so a new primary was due by t={check.bound:.3f}, but "
                f"{outcome}",
            )
        self._liveness = pending
