"""The world the explorer searches: the shipped machines, a few relays, a clock, faults.

One :class:`World` is one global state: each provider's
:class:`~standby.core.StandbyElection` (a standby) or
:class:`~standby.core.WorkloadLifecycle` (the workload's primary), what each
relay stores, the operations in flight (a publish, a query or a spawn that
has not answered yet), the messages a subscription has yet to deliver, the
containers that run, and what is left of the fault budget. The explorer
never models the protocol: every decision is the machines' own, fed the
same inputs the node feeds them; this module only does what the node's
parts do with the effects (publish, query, spawn, stop) and what relays do
with messages (keep the newest version per key, by :func:`is_newer`).

Time: each operation answers at any instant between its start and its
deadline (``query_timeout`` for relay calls, ``spawn_timeout`` for a spawn);
the clock advances only to the next instant something is due (a machine's
:meth:`next_deadline`, a heartbeat, a runtime's lease end, an operation's
deadline), and never past an operation or delivery that is due. A spawn
may also fail, as a budgeted fault (:attr:`Budget.spawn_failures`).

The search copies a world for every move by pickling it, so the classes
here keep a plain ``__dict__`` (``slots=False``): that is the quickest kind
of object to pickle.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Iterator, Sequence
from typing import Any

import attrs

from ...core._effects import (
    Announce,
    AtRisk,
    CannotStart,
    CheckContainer,
    CompareAndSetClaim,
    Dropped,
    ElectionEffect,
    LifecycleEffect,
    PhaseChanged,
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
from ...core._election import StandbyElection
from ...core._lifecycle import WorkloadLifecycle
from ...core._models import (
    Envelope,
    Heartbeat,
    Message,
    PromotionAnnouncement,
    PromotionClaim,
    StandbySlot,
    Topology,
)
from ...core._relay_messages import (
    Query,
    addressable_key,
    catch_up_read,
    claims_read,
    followed_read,
    heartbeats_read,
    is_newer,
    newest_per_key,
    step_down_read,
    takeover_epoch,
)
from ...core._timing import Timing
from ..simulation._names import PRIMARY, provider_names, relay_names

__all__ = ["Budget", "Container", "Op", "OpKind", "Provider", "World"]

#: The reservation's start (any value: the explorer's state is relative to now).
BASE = 1_000_000.0
#: The reservation lasts far longer than any exploration.
RESERVATION = 30 * 86400.0
WORKLOAD = "workload"


class OpKind(enum.Enum):
    """What an operation in flight is (the node part that would run it)."""

    HEARTBEAT = "heartbeat"
    CLAIM = "claim"
    WITHDRAW = "withdraw"
    ANNOUNCE = "announce"
    REVOCATION = "revocation"
    QUERY_HEARTBEATS = "query heartbeats"
    QUERY_CLAIMS = "query claims"
    CATCH_UP = "catch-up read"
    WATCH = "step-down read"
    SPAWN = "spawn"


_PUBLISHES = frozenset(
    {OpKind.HEARTBEAT, OpKind.CLAIM, OpKind.WITHDRAW, OpKind.ANNOUNCE, OpKind.REVOCATION}
)


@attrs.define(slots=False)
class Op:
    """An operation in flight: it answers at the latest at ``due`` (true time)."""

    kind: OpKind
    provider: str
    due: float
    effect: Any = None
    message: Message | None = None
    late: bool = False
    """Put off: it answers at ``due``."""


@attrs.define(slots=False)
class Delivery:
    """A stored message a subscription still has to hand to ``recipient``."""

    recipient: str
    signer: str
    message: Message
    relays: frozenset[str]
    due: float


@attrs.define(slots=False)
class Container:
    """A container that runs: its fencing token, its epoch and the lease end its runtime holds.

    A stop (asked for, or the runtime's own at the lease end) takes
    ``fence_grace``, the longest the rules allow: until then the container
    may still act.
    """

    token: int
    epoch: int
    lease_end: float
    """On its provider's clock: the runtime stops it then (guarantee 4)."""
    stop_at: float | None = None
    """When a stop was asked for (its provider's clock)."""

    def gone_at(self, fence_grace: float) -> float:
        """When it can no longer act, on its provider's clock."""
        start = self.lease_end if self.stop_at is None else min(self.stop_at, self.lease_end)
        return start + fence_grace


@attrs.define(slots=False)
class Budget:
    """Faults still allowed on this path."""

    losses: int = 1
    duplicates: int = 1
    crashes: int = 1
    partitions: int = 1
    pauses: int = 1
    spawn_failures: int = 0
    """Container starts that fail (the runtime's error): off unless asked for."""

    def key(self) -> tuple[int, ...]:
        return (
            self.losses,
            self.duplicates,
            self.crashes,
            self.partitions,
            self.pauses,
            self.spawn_failures,
        )


@attrs.define(slots=False)
class Provider:
    """One provider: its machines, its clock offset, its links, what its store keeps."""

    name: str
    offset: float = 0.0
    up: bool = True
    paused: bool = False
    cut: frozenset[str] = frozenset()
    election: StandbyElection[Any] | None = None
    lifecycle: WorkloadLifecycle | None = None
    container: Container | None = None
    heartbeat_due: float | None = None
    # What the store keeps across a crash:
    saved_slot: StandbySlot[Any] | None = None
    intent: tuple[int, int] | None = None
    ran_primary: bool = False

    def local(self, now: float) -> float:
        return now + self.offset


class Violation(Exception):
    """A safety property failed in the state being built (the message says which)."""


class World:
    """One global state and the moves out of it (see the module docstring)."""

    def __init__(self, timing: Timing, standbys: int, budget: Budget) -> None:
        self.timing = timing
        self.now = BASE
        self.relays: dict[str, dict[tuple[str, ...], tuple[str, Message]]] = {
            r: {} for r in relay_names(timing.relay_count)
        }
        names = provider_names(standbys)
        self.topology = Topology(primary=PRIMARY, standbys=tuple(names[1:]))
        self.providers: dict[str, Provider] = {n: Provider(n) for n in names}
        self.ops: list[Op] = []
        self.deliveries: list[Delivery] = []
        self.budget = budget
        #: Highest fencing token ever handed to a runtime.
        self.max_token = -1
        #: Highest epoch taken: the first primary's, then each promotion's.
        self.max_epoch = 0
        self.promotions = 0

    # ------------------------------------------------------------------ set-up

    def boot(self) -> None:
        """The consumer's request reaches every provider at ``BASE``."""
        expires = BASE + RESERVATION
        for name, p in self.providers.items():
            local = p.local(self.now)
            if name == PRIMARY:
                p.lifecycle = WorkloadLifecycle(
                    workload_id=WORKLOAD,
                    me=name,
                    timing=self.timing,
                    standbys=self.topology.standbys,
                    created_at=BASE,
                    expires_at=expires,
                )
                p.ran_primary = True
                p.heartbeat_due = local
                self._lifecycle(p, p.lifecycle.start(local))
            else:
                slot: StandbySlot[Any] = StandbySlot.reserve(
                    me=name,
                    workload_id=WORKLOAD,
                    topology=self.topology,
                    spec="spec",
                    owner="consumer",
                    created_at=BASE,
                    expires_at=expires,
                )
                p.election = StandbyElection(me=name, timing=self.timing)
                self._election(p, p.election.reserve(local, slot))
        self.settle()

    # ------------------------------------------------------------------ moves

    def moves(self) -> Iterator[tuple[str, Any]]:
        """Every move possible from here, as ``(description, move)``; see :meth:`apply`.

        Answers that may come now are taken one at a time, in the order they
        were asked for (a reduction: two answers of one instant do not also
        come in the other order): the first delivery is delivered, lost or
        duplicated; else the first operation not yet put off answers now
        (each relay it reaches may lose it) or is put off to its deadline;
        else the first operation due answers. Only when nothing is left to
        answer at this instant may a fault happen or the clock advance.
        """
        b = self.budget
        for i, d in enumerate(self.deliveries):
            if self.providers[d.recipient].paused:
                continue
            what = f"{_describe(d.message)} from {d.signer}"
            yield f"{d.recipient} receives {what}", ("deliver", i, False)
            if b.duplicates:
                yield f"{d.recipient} receives {what}, twice", ("deliver", i, True)
            if b.losses:
                yield f"{d.recipient} never receives {what}", ("drop", i)
            return
        first: tuple[int, Op] | None = None
        for i, op in enumerate(self.ops):
            if self.providers[op.provider].paused:
                continue
            if not op.late:
                first = (i, op)
                break
            if first is None and op.due <= self.now:
                first = (i, op)
        if first is not None:
            i, op = first
            yield from self._answers(i, op)
            if not op.late and op.due > self.now:
                yield f"{op.provider}: {op.kind.value} is slow", ("late", i)
            return
        later = self.next_instant()
        if later is not None:
            yield f"time advances {later - self.now:g} s", ("advance", later)
        relays = list(self.relays)
        for name, p in self.providers.items():
            if p.up and b.crashes:
                yield f"{name} crashes", ("crash", name)
            if not p.up:
                yield f"{name} restarts", ("restart", name)
            if p.up and not p.paused and b.pauses:
                yield f"{name} pauses", ("pause", name)
            if p.paused:
                yield f"{name} resumes", ("resume", name)
            if p.cut:
                yield f"{name} is reconnected", ("heal", name)
            elif b.partitions:
                for n in range(1, len(relays) + 1):
                    for cut in itertools.combinations(relays, n):
                        yield f"{name} is cut off from {', '.join(cut)}", ("cut", name, cut)

    def _answers(self, i: int, op: Op) -> Iterator[tuple[str, Any]]:
        yield f"{op.provider}: {op.kind.value} answers", ("op", i, ())
        if op.kind is OpKind.SPAWN:
            if self.budget.spawn_failures:
                yield f"{op.provider}: spawn fails", ("fail", i, op.provider)
            return
        if not self.budget.losses:
            return
        for r in self.relays:
            if r not in self.providers[op.provider].cut:
                yield f"{op.provider}: {op.kind.value} answers, lost on {r}", ("op", i, (r,))

    def apply(self, move: tuple[Any, ...]) -> None:
        """Make one move (from :meth:`moves`), then let everything due at once happen.

        Raises :class:`Violation` when a safety property fails on the way.
        """
        kind = move[0]
        if kind == "op":
            op = self.ops.pop(move[1])
            lost = frozenset(move[2])
            if lost:
                self.budget.losses -= 1
            self._complete(op, lost)
        elif kind == "fail":
            op = self.ops.pop(move[1])
            self.budget.spawn_failures -= 1
            self._spawn_failed(op)
        elif kind == "deliver":
            d = self.deliveries[move[1]]
            if move[2]:
                self.budget.duplicates -= 1
            else:
                del self.deliveries[move[1]]
            self._deliver(d)
        elif kind == "drop":
            del self.deliveries[move[1]]
            self.budget.losses -= 1
        elif kind == "late":
            self.ops[move[1]].late = True
        elif kind == "advance":
            self.now = move[1]
        elif kind == "crash":
            self.budget.crashes -= 1
            self._crash(self.providers[move[1]])
        elif kind == "restart":
            self._restart(self.providers[move[1]])
        elif kind == "pause":
            self.budget.pauses -= 1
            self.providers[move[1]].paused = True
        elif kind == "resume":
            self.providers[move[1]].paused = False
        elif kind == "cut":
            self.budget.partitions -= 1
            p = self.providers[move[1]]
            p.cut = frozenset(move[2])
            self.deliveries = [
                d for d in self.deliveries if d.recipient != p.name or not d.relays <= p.cut
            ]
        elif kind == "heal":
            self.providers[move[1]].cut = frozenset()
        else:  # pragma: no cover - moves() makes no other kind
            raise ValueError(f"unknown move {move!r}")
        self.settle()

    def next_instant(self) -> float | None:
        """The next instant the clock may advance to (``None``: it may not)."""
        now = self.now
        candidates: list[float] = []
        for op in self.ops:
            if self.providers[op.provider].paused:
                continue
            if op.due <= now or not op.late:
                return None
            candidates.append(op.due)
        for d in self.deliveries:
            if self.providers[d.recipient].paused:
                continue
            if d.due <= now:
                return None
            candidates.append(d.due)
        for p in self.providers.values():
            if p.container is not None:
                candidates.append(p.container.gone_at(self.timing.fence_grace) - p.offset)
            if not p.up or p.paused:
                continue
            candidates.extend(deadline - p.offset for deadline in self._deadlines(p))
        later = [t for t in candidates if t > now and t != math.inf]
        return min(later) if later else None

    # ------------------------------------------------------------------ the node's timer

    def _deadlines(self, p: Provider) -> list[float]:
        out = []
        if p.election is not None:
            d = p.election.next_deadline()
            if d is not None:
                out.append(d)
        if p.lifecycle is not None:
            d = p.lifecycle.next_deadline()
            if d is not None:
                out.append(d)
            if p.heartbeat_due is not None and not p.lifecycle.ended:
                out.append(p.heartbeat_due)
        return out

    def settle(self) -> None:
        """Run everything due now: runtimes' lease ends, machines' deadlines, heartbeats."""
        for _ in range(100):
            progressed = False
            for p in self.providers.values():
                local = p.local(self.now)
                c = p.container
                if c is not None and local >= c.gone_at(self.timing.fence_grace):
                    # Stopped: as asked, or by the runtime's own deadline (guarantee 4).
                    p.container = None
                    lc = p.lifecycle
                    if p.up and not p.paused and lc is not None and lc.epoch == c.epoch:
                        if c.stop_at is None:
                            self._lifecycle(p, lc.container_exited(local, "lease end"))
                        else:
                            self._lifecycle(p, lc.container_stopped(local))
                    progressed = True
                if not p.up or p.paused:
                    continue
                if p.election is not None:
                    d = p.election.next_deadline()
                    if d is not None and d <= local:
                        self._election(p, p.election.tick(local))
                        progressed = True
                lc = p.lifecycle
                if lc is not None:
                    d = lc.next_deadline()
                    if d is not None and d <= local:
                        self._lifecycle(p, lc.tick(local))
                        progressed = True
                    if p.heartbeat_due is not None and p.heartbeat_due <= local and not lc.ended:
                        self._heartbeat(p, local)
                        progressed = True
            if not progressed:
                return
        raise RuntimeError("the machines did not settle: a deadline that is never handled")

    def _heartbeat(self, p: Provider, local: float) -> None:
        """The node's heartbeat task: one heartbeat, and the step-down read once per interval."""
        assert p.heartbeat_due is not None
        p.heartbeat_due = local + self.timing.heartbeat_interval
        message = Heartbeat(provider=p.name, timestamp=local, active_workloads=1)
        self._start_op(p, OpKind.HEARTBEAT, message=message)
        self._start_op(p, OpKind.WATCH)

    # ------------------------------------------------------------------ effects

    def _start_op(
        self, p: Provider, kind: OpKind, effect: Any = None, message: Message | None = None
    ) -> None:
        wait = self.timing.spawn_timeout if kind is OpKind.SPAWN else self.timing.query_timeout
        self.ops.append(Op(kind, p.name, self.now + wait, effect, message))

    def _election(self, p: Provider, effects: Sequence[ElectionEffect]) -> None:
        """What the node's standby side does with each election effect."""
        for effect in effects:
            if isinstance(effect, QueryHeartbeats):
                self._start_op(p, OpKind.QUERY_HEARTBEATS, effect)
            elif isinstance(effect, QueryClaims):
                self._start_op(p, OpKind.QUERY_CLAIMS, effect)
            elif isinstance(effect, PublishClaim):
                self._start_op(p, OpKind.CLAIM, effect, effect.claim)
            elif isinstance(effect, WithdrawClaim):
                self._start_op(p, OpKind.WITHDRAW, effect, effect.claim)
            elif isinstance(effect, Spawn):
                p.intent = (effect.epoch, effect.fencing_token)  # durable before the spawn
                self._start_op(p, OpKind.SPAWN, effect)
            elif isinstance(effect, Announce):
                self._start_op(p, OpKind.ANNOUNCE, effect, effect.announcement)
            elif isinstance(effect, Promoted):
                self._promoted(p, effect)
            elif isinstance(effect, StopOrphan):
                c = p.container
                if c is not None and c.token == effect.fencing_token and c.stop_at is None:
                    c.stop_at = p.local(self.now)
            elif isinstance(effect, SlotSaved):
                p.saved_slot = effect.slot
            elif isinstance(effect, SlotRemoved):
                p.saved_slot = None
            elif isinstance(effect, PrimaryChanged):
                self._start_op(p, OpKind.CATCH_UP, effect)
            elif isinstance(effect, CompareAndSetClaim):  # pragma: no cover
                raise TypeError("the explorer publishes claims (no atomic claims)")
            else:
                assert isinstance(effect, (Dropped, QuorumShortfall, CannotStart, PhaseChanged)), (
                    effect
                )

    def _promoted(self, p: Provider, effect: Promoted[Any]) -> None:
        slot = effect.slot
        if effect.epoch <= self.max_epoch:
            raise Violation(
                f"{p.name} promoted into epoch {effect.epoch}, which was already taken "
                f"(epochs up to {self.max_epoch} were)"
            )
        self.max_epoch = effect.epoch
        self.promotions += 1
        p.lifecycle = WorkloadLifecycle.promoted(
            workload_id=slot.workload_id,
            me=p.name,
            timing=self.timing,
            now=p.local(self.now),
            standbys=effect.standbys,
            epoch=effect.epoch,
            fencing_token=effect.fencing_token,
            lease_from=effect.lease_from,
            expires_at=slot.expires_at,
        )
        p.ran_primary = True
        p.heartbeat_due = p.local(self.now)

    def _lifecycle(self, p: Provider, effects: Sequence[LifecycleEffect]) -> None:
        """What the node's primary side does with each lifecycle effect."""
        lc = p.lifecycle
        assert lc is not None
        local = p.local(self.now)
        for effect in effects:
            if isinstance(effect, StartContainer):
                self._run(p, lc.fencing_token, lc.epoch, lc.runtime_bound())
                self._lifecycle(p, lc.container_started(local))
            elif isinstance(effect, StopContainer):
                c = p.container
                if c is None:
                    self._lifecycle(p, lc.container_stopped(local))
                elif c.stop_at is None:
                    c.stop_at = local
            elif isinstance(effect, PublishRevocation):
                self._start_op(p, OpKind.REVOCATION, effect, effect.revocation)
            else:
                # Told to the host only: the lease at risk, a new state, a poll.
                assert isinstance(
                    effect, (AtRisk, StateChanged, CheckContainer, ReclaimContainer)
                ), effect

    def _run(self, p: Provider, token: int, epoch: int, lease_end: float) -> None:
        """A runtime starts a container: the fencing rules are checked here."""
        if token <= self.max_token:
            raise Violation(
                f"{p.name} started the workload with fencing token {token}, not above the "
                f"highest already handed out ({self.max_token})"
            )
        self.max_token = token
        p.container = Container(token, epoch, lease_end)
        self.check_one_writer()

    def check_one_writer(self) -> None:
        """Raise :class:`Violation` when two containers can act at this instant."""
        acting = [
            name
            for name, p in self.providers.items()
            if p.container is not None
            and p.local(self.now) < p.container.gone_at(self.timing.fence_grace)
        ]
        if len(acting) > 1:
            raise Violation(f"two workloads can act at once: {' and '.join(acting)}")

    # ------------------------------------------------------------------ I/O answers

    def _complete(self, op: Op, lost: frozenset[str]) -> None:
        p = self.providers[op.provider]
        local = p.local(self.now)
        answered = frozenset(r for r in self.relays if r not in p.cut and r not in lost)
        if op.kind is OpKind.SPAWN:
            effect = op.effect
            self._run(p, effect.fencing_token, effect.epoch, effect.lease_end)
            assert p.election is not None
            self._election(p, p.election.spawn_finished(local, effect.request_id, True))
            return
        if op.kind in _PUBLISHES:
            assert op.message is not None
            self._store(p.name, op.message, answered)
            acked = sorted(answered)
            if op.kind is OpKind.HEARTBEAT:
                self._acked(p, local, op.message, acked)
            elif op.kind is OpKind.CLAIM and p.election is not None:
                self._election(p, p.election.claim_published(local, op.effect.request_id, acked))
            elif op.kind is OpKind.REVOCATION and p.lifecycle is not None:
                self._lifecycle(p, p.lifecycle.revocation_published(local, acked))
            return
        results = self._read(self._query(op, local), answered, local)
        if op.kind is OpKind.QUERY_HEARTBEATS and p.election is not None:
            self._election(
                p, p.election.heartbeats_queried(local, op.effect.request_id, results, answered)
            )
        elif op.kind is OpKind.QUERY_CLAIMS and p.election is not None:
            self._election(
                p, p.election.claims_queried(local, op.effect.request_id, results, answered)
            )
        else:
            for envelope in results:
                self._on_envelope(p, envelope)

    def _spawn_failed(self, op: Op) -> None:
        """The runtime could not start the container: the election hears of it."""
        p = self.providers[op.provider]
        assert p.election is not None
        effects = p.election.spawn_finished(
            p.local(self.now), op.effect.request_id, False, "the runtime failed"
        )
        self._election(p, effects)

    def _acked(self, p: Provider, local: float, heartbeat: Message, acked: list[str]) -> None:
        """The heartbeat task feeds the acknowledgements, then renews the runtime's lease."""
        lc = p.lifecycle
        if lc is None:
            return
        assert isinstance(heartbeat, Heartbeat)
        self._lifecycle(p, lc.heartbeat_published(local, heartbeat.timestamp, acked))
        c = p.container
        if c is not None and c.stop_at is None and lc.renews(local):
            c.lease_end = max(c.lease_end, lc.runtime_bound())

    def _store(self, signer: str, message: Message, relays: frozenset[str]) -> None:
        """Each relay keeps the newest version per key; subscribers are told."""
        key = addressable_key(signer, message)
        stored: set[str] = set()
        for r in relays:
            held = self.relays[r].get(key)
            if held is None or is_newer(message, held[1]):
                self.relays[r][key] = (signer, message)
                stored.add(r)
        if not stored:
            return
        for name, q in self.providers.items():
            reach = frozenset(stored) - q.cut
            if name == signer or not q.up or not reach:
                continue
            self.deliveries.append(
                Delivery(name, signer, message, reach, self.now + self.timing.query_timeout)
            )

    def _query(self, op: Op, local: float) -> Query:
        """The query the node sends for ``op`` (the same functions build it)."""
        skew = self.timing.max_clock_skew
        if op.kind is OpKind.CATCH_UP:
            if isinstance(op.effect, PrimaryChanged):
                return followed_read((WORKLOAD,), (op.effect.new_primary,))
            return catch_up_read((WORKLOAD,))
        if op.kind is OpKind.QUERY_HEARTBEATS:
            return heartbeats_read(op.effect.primary, op.effect.workload_ids, local, skew)
        if op.kind is OpKind.QUERY_CLAIMS:
            return claims_read(op.effect.workload_ids, local, skew, op.effect.authors)
        lifecycle = self.providers[op.provider].lifecycle
        standbys = () if lifecycle is None else lifecycle.standbys
        return step_down_read((WORKLOAD,), standbys, op.provider, local, skew)

    def _read(
        self, query: Query, answered: frozenset[str], local: float
    ) -> list[Envelope[Message]]:
        """What the relays that answered return, as a transport must (the contract's functions).

        Each relay's matches (:meth:`Query.matches`), merged to the newest
        version per key (:func:`newest_per_key`).
        """
        found = [
            Envelope(message, signer, r, local)
            for r in sorted(answered)
            for signer, message in self.relays[r].values()
            if query.matches(signer, message)
        ]
        return newest_per_key(found, not_after=query.until)

    def _deliver(self, d: Delivery) -> None:
        p = self.providers[d.recipient]
        if p.up and not p.paused:
            relay = min(d.relays)
            self._on_envelope(p, Envelope(d.message, d.signer, relay, p.local(self.now)))

    def _on_envelope(self, p: Provider, envelope: Envelope[Message]) -> None:
        """The node's routing of one message: to the primary's step-down watch, or the election."""
        if envelope.signer == p.name:
            return
        message = envelope.message
        local = p.local(self.now)
        lc = p.lifecycle
        if isinstance(message, (PromotionClaim, PromotionAnnouncement)) and lc is not None:
            epoch = takeover_epoch(message)
            if epoch is not None and not lc.ended:
                self._lifecycle(p, lc.takeover_seen(local, epoch, envelope.signer))
            return
        e = p.election
        if e is None:
            return
        if not isinstance(message, Heartbeat) and message.workload_id not in e.slots:
            return
        self._election(p, e.on_message(local, envelope))

    # ------------------------------------------------------------------ crashes

    def _crash(self, p: Provider) -> None:
        """The host dies: its process, its containers and its messages in flight."""
        p.up = False
        p.paused = False
        p.container = None
        p.election = None
        p.lifecycle = None
        p.heartbeat_due = None
        self.ops = [op for op in self.ops if op.provider != p.name]
        self.deliveries = [d for d in self.deliveries if d.recipient != p.name]

    def _restart(self, p: Provider) -> None:
        """The node starts again from what its store kept.

        A slot whose promotion intent was recorded is not stood by again
        (guarantee 5); a provider that ran the workload as primary finds its
        container gone with the host and does not start it again (FM 29).
        """
        p.up = True
        local = p.local(self.now)
        slot = p.saved_slot
        if slot is None or p.ran_primary or p.intent is not None:
            return
        p.election = StandbyElection(me=p.name, timing=self.timing)
        self._election(p, p.election.restore(local, [slot]))
        self._start_op(p, OpKind.CATCH_UP)


def _describe(message: Message) -> str:
    if isinstance(message, Heartbeat):
        return "the heartbeat"
    if isinstance(message, PromotionClaim):
        word = "withdrawal of the claim" if message.withdrawn else "the claim"
        return f"{word} on epoch {message.epoch}"
    if isinstance(message, PromotionAnnouncement):
        return f"the announcement of epoch {message.epoch}"
    return f"the revocation of epoch {message.epoch}"
