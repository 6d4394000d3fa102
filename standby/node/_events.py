"""Typed events a :class:`~standby.node.StandbyNode` hands to its host's event hook.

Every event has ``at``: the node's wall-clock time (Unix seconds) when it
happened. They are small frozen values meant for metrics, audit logs and the
demo's timeline; the node never waits for the hook and survives a hook that
raises.

Each event also describes itself (:class:`Reported`): the level of its log
line, the counters it adds to, the role its line is tagged with and its
:meth:`~Reported.message`. The node's observer reports every event the same
way from that description (count, log, hand to the hook) and the simulator's
timeline prints the same message, so adding an event is adding its class here
(and to :data:`NodeEvent`).
"""

from __future__ import annotations

import logging
from typing import ClassVar, TypeAlias

import attrs

from ..core._effects import DropReason, LifecycleState
from ..core._election import Phase
from ._types import TERMINAL

__all__ = [
    "AnnouncementPublished",
    "ClaimCompared",
    "ClaimPublished",
    "ClockJumped",
    "ContainerExited",
    "ContainerStarted",
    "ContainerStarting",
    "ContainerStopped",
    "HeartbeatPublished",
    "InputDropped",
    "LeaseAtRisk",
    "LeaseRenewed",
    "LifecycleChanged",
    "NodeEvent",
    "OperationFailed",
    "PrimaryFollowed",
    "PromotedHere",
    "QuorumMissed",
    "Reconciled",
    "RevocationPublished",
    "SlotPhaseChanged",
    "SlotsNotPersisted",
    "StandbyGivenUp",
    "SteppedDown",
    "SubscriptionLost",
    "WorkloadCannotStart",
]

#: A log line: a ``%``-format and its arguments (formatted only when emitted).
Line: TypeAlias = tuple[str, tuple[object, ...]]


class Reported:
    """What a node event says about itself: how it is logged, counted and shown.

    The class attributes are the defaults; an event whose level, counters or
    role depend on its fields overrides :meth:`log_level`, :meth:`counts` or
    :meth:`log_role`.
    """

    __slots__ = ()

    #: The level of its log line (``None``: not logged).
    level: ClassVar[int | None] = logging.INFO
    #: The node counter it adds one to (``None``: none).
    counter: ClassVar[str | None] = None
    #: The role its log line is tagged with (the reporter may say otherwise).
    role: ClassVar[str] = "node"
    #: Whether the simulator's timeline shows it.
    on_timeline: ClassVar[bool] = True

    def message(self, base: float = 0.0) -> Line:
        """Its one line (times on the wall clock minus ``base``)."""
        raise NotImplementedError

    def log_level(self) -> int | None:
        """The level of its log line (``None``: not logged)."""
        return self.level

    def counts(self) -> tuple[tuple[str, int], ...]:
        """The counters it adds to, and by how much."""
        return () if self.counter is None else ((self.counter, 1),)

    def log_role(self) -> str:
        """The role its log line is tagged with."""
        return self.role

    def subject(self) -> str | None:
        """The workload its log line is tagged with."""
        workload_id: str | None = getattr(self, "workload_id", None)
        return workload_id

    def timeline(self, base: float) -> Line | None:
        """Its line on the simulator's timeline (``None``: not worth one)."""
        return self.message(base) if self.on_timeline else None


@attrs.frozen
class SlotPhaseChanged(Reported):
    """A reserved slot moved between election phases (``None``: added or removed).

    ``revoked`` tells whether the primary revoked its lease (graceful path);
    a move from ``CONFIRMING`` to ``BACKOFF`` without it means the silence was
    confirmed.
    """

    at: float
    workload_id: str
    old: Phase | None
    new: Phase | None
    revoked: bool

    role = "standby"

    def message(self, base: float = 0.0) -> Line:
        old = "-" if self.old is None else self.old.value
        new = "-" if self.new is None else self.new.value
        return ("slot phase %s -> %s%s", (old, new, " (lease revoked)" if self.revoked else ""))


@attrs.frozen
class LifecycleChanged(Reported):
    """A workload this node runs as primary changed state."""

    at: float
    workload_id: str
    old: LifecycleState
    new: LifecycleState
    reason: str

    role = "primary"

    def log_level(self) -> int | None:
        return logging.WARNING if self.new in TERMINAL else logging.INFO

    def counts(self) -> tuple[tuple[str, int], ...]:
        return ((f"lifecycle_{self.new.value}", 1),)

    def message(self, base: float = 0.0) -> Line:
        return ("lifecycle %s -> %s (%s)", (self.old.value, self.new.value, self.reason))


@attrs.frozen
class LeaseAtRisk(Reported):
    """The lease of a workload this node runs as primary may be lost before it is renewed.

    Reported once per lease, before the lease ends at ``lease_end``
    (``remaining`` seconds after ``at``): the last heartbeat missed its write
    quorum, or the lease remaining fell below the node's ``lease_at_risk``
    threshold (``reason`` says which). Unless a heartbeat renews it in time,
    the workload fences at ``lease_end`` and a standby takes it over: a
    cooperative workload can checkpoint now, and the host can look at its
    relays.
    """

    at: float
    workload_id: str
    epoch: int
    lease_end: float
    remaining: float
    reason: str

    level = logging.WARNING
    counter = "leases_at_risk"
    role = "primary"

    def message(self, base: float = 0.0) -> Line:
        return (
            "lease of epoch %d at risk, %.3f s left: %s",
            (self.epoch, self.remaining, self.reason),
        )


@attrs.frozen
class HeartbeatPublished(Reported):
    """A heartbeat went out; ``acked`` are the relays that stored it."""

    at: float
    timestamp: float
    acked: frozenset[str]
    workloads: int

    level = logging.DEBUG
    counter = "heartbeats"
    role = "primary"

    def message(self, base: float = 0.0) -> Line:
        return (
            "heartbeat stamped %.3f: %d relays acknowledged",
            (self.timestamp - base, len(self.acked)),
        )


@attrs.frozen
class ClaimPublished(Reported):
    """A promotion claim (or its withdrawal) was published."""

    at: float
    workload_id: str
    epoch: int
    fencing_token: int
    withdrawn: bool
    acked: frozenset[str]

    role = "standby"

    def message(self, base: float = 0.0) -> Line:
        if self.withdrawn:
            return (
                "withdraw claim on epoch %d: %d relays acknowledged",
                (self.epoch, len(self.acked)),
            )
        return (
            "publish claim on epoch %d (token %d): %d relays acknowledged",
            (self.epoch, self.fencing_token, len(self.acked)),
        )


@attrs.frozen
class ClaimCompared(Reported):
    """An atomic compare-and-set of a claim finished (``won`` or lost to ``holder``)."""

    at: float
    workload_id: str
    epoch: int
    fencing_token: int
    won: bool
    holder: str | None

    role = "standby"

    def message(self, base: float = 0.0) -> Line:
        outcome = "won" if self.won else f"lost to {self.holder}"
        return (
            "compare-and-set claim on epoch %d (token %d): %s",
            (self.epoch, self.fencing_token, outcome),
        )


@attrs.frozen
class ContainerStarting(Reported):
    """The node asked the runtime to start the workload (``promotion``: as a new primary)."""

    at: float
    workload_id: str
    fencing_token: int
    promotion: bool

    def log_role(self) -> str:
        return "standby" if self.promotion else "primary"

    def message(self, base: float = 0.0) -> Line:
        verb = "spawn as new primary" if self.promotion else "start container"
        return ("%s with token %d", (verb, self.fencing_token))


@attrs.frozen
class ContainerStarted(Reported):
    """A start finished: ``ok``, or failed with ``error``; ``elapsed`` seconds.

    ``lease_end`` is the lease end (Unix seconds) the runtime was handed with
    the start: it stops the container then unless a renewal moves it
    (:class:`LeaseRenewed`).
    """

    at: float
    workload_id: str
    fencing_token: int
    promotion: bool
    ok: bool
    error: str | None
    elapsed: float
    lease_end: float | None = None

    level = None  # a failure is reported as OperationFailed too

    def log_role(self) -> str:
        return "standby" if self.promotion else "primary"

    def message(self, base: float = 0.0) -> Line:
        verb = "spawn" if self.promotion else "container start"
        if self.ok:
            return ("%s finished (token %d) in %.3f s", (verb, self.fencing_token, self.elapsed))
        return ("%s failed (token %d): %s", (verb, self.fencing_token, self.error or "?"))

    def timeline(self, base: float) -> Line | None:
        return None if self.ok else self.message(base)


@attrs.frozen
class LeaseRenewed(Reported):
    """The runtime accepted a later lease end for a container this node runs as primary.

    The runtime stops the container at ``lease_end`` (Unix seconds) unless
    it is renewed again: the bound that outlives the node (guarantee 4).
    One per renewal, so it is neither logged nor drawn on the simulator's
    timeline; the event log keeps it, so a picture of a real incident shows
    the last lease end each run was given.
    """

    at: float
    workload_id: str
    fencing_token: int
    lease_end: float

    level = None
    counter = "lease_renewals"
    role = "primary"
    on_timeline = False

    def message(self, base: float = 0.0) -> Line:
        return (
            "lease of token %d renewed to %.3f",
            (self.fencing_token, self.lease_end - base),
        )


@attrs.frozen
class ContainerStopped(Reported):
    """The node stopped a container (fencing, expiry, orphan, reclaim)."""

    at: float
    workload_id: str
    fencing_token: int
    reason: str

    def message(self, base: float = 0.0) -> Line:
        return ("stopped container (token %d): %s", (self.fencing_token, self.reason))


@attrs.frozen
class ContainerExited(Reported):
    """The runtime reports a container no longer runs although nobody stopped it."""

    at: float
    workload_id: str
    status: str

    level = logging.WARNING
    counter = "container_exits"
    role = "primary"

    def message(self, base: float = 0.0) -> Line:
        return ("container %s although nobody stopped it", (self.status,))


@attrs.frozen
class PromotedHere(Reported):
    """This node took the workload over as primary of ``epoch``."""

    at: float
    workload_id: str
    epoch: int
    fencing_token: int

    level = logging.WARNING
    counter = "promotions"
    role = "primary"

    def message(self, base: float = 0.0) -> Line:
        return ("promoted: epoch %d, token %d", (self.epoch, self.fencing_token))


@attrs.frozen
class AnnouncementPublished(Reported):
    """The announcement of a promotion was published (after retries)."""

    at: float
    workload_id: str
    epoch: int | None
    fencing_token: int | None
    acked: frozenset[str]

    role = "primary"

    def message(self, base: float = 0.0) -> Line:
        return (
            "announced new primary of epoch %s: %d relays acknowledged",
            (self.epoch, len(self.acked)),
        )


@attrs.frozen
class RevocationPublished(Reported):
    """A lease revocation was published for a workload this node fenced."""

    at: float
    workload_id: str
    epoch: int
    acked: frozenset[str]

    role = "primary"

    def message(self, base: float = 0.0) -> Line:
        return (
            "published revocation of epoch %d: %d relays acknowledged",
            (self.epoch, len(self.acked)),
        )


@attrs.frozen
class SteppedDown(Reported):
    """A workload this node ran as primary of ``epoch`` fenced at once (failure mode 25).

    Its standby ``by`` had claimed or announced (``kind``: ``"claim"`` or
    ``"announcement"``) the later epoch ``later_epoch``: the workload is being
    or was taken over, so this primary stopped it whatever its lease said.
    Under a safe timing its lease has ended by then; seeing this event means
    a timing outside the safety model, a partition that healed, or a bug.
    """

    at: float
    workload_id: str
    epoch: int
    later_epoch: int
    by: str
    kind: str

    level = logging.WARNING
    counter = "stepped_down"
    role = "primary"

    def message(self, base: float = 0.0) -> Line:
        return (
            "stepping down from epoch %d: %s published a %s of epoch %d",
            (self.epoch, self.by, self.kind, self.later_epoch),
        )


@attrs.frozen
class PrimaryFollowed(Reported):
    """A peer took over: the slot now stands by for ``new_primary``."""

    at: float
    workload_id: str
    old_primary: str
    new_primary: str
    epoch: int

    counter = "primary_changed"
    role = "standby"

    def message(self, base: float = 0.0) -> Line:
        return (
            "follow %s as primary of epoch %d (was %s)",
            (self.new_primary, self.epoch, self.old_primary),
        )


@attrs.frozen
class InputDropped(Reported):
    """An input (message or late result) was rejected; nothing else happened."""

    at: float
    workload_id: str | None
    signer: str | None
    reason: DropReason
    detail: str
    #: The relay whose message the transport dropped (``ReportsDrops``);
    #: ``None``: the node itself dropped the input.
    relay: str | None = None

    role = "standby"

    def log_level(self) -> int | None:
        forged = self.reason in (DropReason.BAD_SIGNATURE, DropReason.UNEXPECTED_AUTHOR)
        return logging.WARNING if forged and self.relay is not None else logging.INFO

    def counts(self) -> tuple[tuple[str, int], ...]:
        if self.relay is None:
            return (("dropped", 1),)
        return (("transport_drops", 1), (f"transport_drops.{self.reason.name.lower()}", 1))

    def message(self, base: float = 0.0) -> Line:
        return ("dropped (%s) from %s: %s", (self.reason.value, self.signer, self.detail))


@attrs.frozen
class QuorumMissed(Reported):
    """A query or claim did not reach its quorum; the slot retries later."""

    at: float
    stage: str
    workload_ids: tuple[str, ...]
    answered: int
    needed: int

    level = logging.WARNING
    role = "standby"

    def counts(self) -> tuple[tuple[str, int], ...]:
        return (("quorum_shortfall", 1), (f"quorum_shortfall.{self.stage}", 1))

    def subject(self) -> str | None:
        return ",".join(self.workload_ids) or None

    def message(self, base: float = 0.0) -> Line:
        return (
            "quorum shortfall at %s: %d of %d relays",
            (self.stage, self.answered, self.needed),
        )


@attrs.frozen
class OperationFailed(Reported):
    """An adapter operation failed or timed out (``operation``: "query", "spawn", ...)."""

    at: float
    operation: str
    workload_id: str | None
    error: str

    level = logging.WARNING

    def log_level(self) -> int | None:
        return logging.ERROR if self.operation == "save" else logging.WARNING

    def counts(self) -> tuple[tuple[str, int], ...]:
        return (("store_errors" if self.operation == "save" else f"{self.operation}_errors", 1),)

    def message(self, base: float = 0.0) -> Line:
        return ("%s failed: %s", (self.operation, self.error))

    def timeline(self, base: float) -> Line | None:
        if self.operation in ("spawn", "start"):
            return None  # ContainerStarted says it, with the token
        return self.message(base)


@attrs.frozen
class SlotsNotPersisted(Reported):
    """The store kept these slots in memory only (they hold secrets it cannot seal)."""

    at: float
    workload_ids: tuple[str, ...]

    level = logging.WARNING
    role = "standby"
    on_timeline = False

    def counts(self) -> tuple[tuple[str, int], ...]:
        return (("slots_not_persisted", len(self.workload_ids)),)

    def subject(self) -> str | None:
        return ",".join(self.workload_ids) or None

    def message(self, base: float = 0.0) -> Line:
        return (
            "%d slots hold a secret and are kept in memory only: they will not survive a restart",
            (len(self.workload_ids),),
        )


@attrs.frozen
class Reconciled(Reported):
    """What a restarted node did with a workload it found in its store or its runtime.

    ``action`` is ``"adopted"`` (its container still runs under a valid lease
    and no later epoch exists: the node runs it on), ``"stopped"`` (a
    container it must not run on: lease over, a later epoch, or unknown to
    the store), ``"fenced"`` (it ran the workload before the restart and the
    container is gone: the standbys take over) or ``"abandoned"`` (a
    promotion interrupted by the restart: the slot is given up so its epoch
    and token are never used twice).
    """

    at: float
    workload_id: str
    action: str
    epoch: int
    fencing_token: int
    reason: str

    on_timeline = False

    def log_level(self) -> int | None:
        return logging.INFO if self.action == "adopted" else logging.WARNING

    def counts(self) -> tuple[tuple[str, int], ...]:
        counts = ((f"reconcile_{self.action}", 1),)
        return (("adopted", 1), *counts) if self.action == "adopted" else counts

    def message(self, base: float = 0.0) -> Line:
        return (
            "after restart: %s (epoch %d, token %d): %s",
            (self.action, self.epoch, self.fencing_token, self.reason),
        )


@attrs.frozen
class StandbyGivenUp(Reported):
    """This node gave a promotion up and no longer stands by for the workload: alert on it.

    A restart interrupted its promotion into ``epoch`` with ``fencing_token``
    (failure mode 33). That epoch was revoked, so the other standbys take the
    workload over, and in their view this node was that epoch's primary: it
    is out of the workload's standby lineup until the reservation ends at
    ``until``. The workload has one standby fewer; the consumer should
    reserve another. ``reason`` says what happened.
    """

    at: float
    workload_id: str
    epoch: int
    fencing_token: int
    until: float
    reason: str

    level = logging.ERROR
    counter = "standbys_given_up"
    role = "standby"

    def message(self, base: float = 0.0) -> Line:
        return ("no longer stands by: %s", (self.reason,))


@attrs.frozen
class ClockJumped(Reported):
    """The wall clock moved unlike the monotonic clock (a paused process or VM, a clock step).

    The node treats it as a pause: every lease is checked before the node
    acts as primary again.
    """

    at: float
    wall_seconds: float
    monotonic_seconds: float

    level = logging.WARNING
    counter = "clock_jumps"
    on_timeline = False

    def message(self, base: float = 0.0) -> Line:
        return (
            "wall clock moved %.3f s while the monotonic clock moved %.3f s: "
            "treating it as a pause",
            (self.wall_seconds, self.monotonic_seconds),
        )


@attrs.frozen
class SubscriptionLost(Reported):
    """The live subscription failed or was refused; it is retried after ``retry_in`` seconds."""

    at: float
    error: str
    attempt: int
    retry_in: float

    level = None  # reported as OperationFailed too
    on_timeline = False

    def message(self, base: float = 0.0) -> Line:
        return (
            "subscription lost (failure %d): %s; retrying in %.3f s",
            (self.attempt, self.error, self.retry_in),
        )


@attrs.frozen
class WorkloadCannotStart(Reported):
    """This standby gave the workload up: every spawn it was allowed failed (failure mode 24).

    A final state: its claim is withdrawn and its slot dropped, so it will
    not try again. ``attempts`` spawns failed in all (``max_spawn_rounds``
    rounds of ``max_spawn_attempts``); ``error`` is the last reason. When
    every standby of a workload reports it, the workload runs nowhere: the
    host alerts on it and refunds the consumer.
    """

    at: float
    workload_id: str
    attempts: int
    error: str | None

    level = logging.ERROR
    counter = "workloads_cannot_start"
    role = "standby"

    def message(self, base: float = 0.0) -> Line:
        return (
            "gave the workload up: %d spawns failed (last: %s)",
            (self.attempts, self.error or "?"),
        )


NodeEvent: TypeAlias = (
    SlotPhaseChanged
    | LifecycleChanged
    | LeaseAtRisk
    | HeartbeatPublished
    | ClaimPublished
    | ClaimCompared
    | ContainerStarting
    | ContainerStarted
    | LeaseRenewed
    | ContainerStopped
    | ContainerExited
    | PromotedHere
    | AnnouncementPublished
    | RevocationPublished
    | PrimaryFollowed
    | InputDropped
    | QuorumMissed
    | OperationFailed
    | SlotsNotPersisted
    | Reconciled
    | StandbyGivenUp
    | ClockJumped
    | SubscriptionLost
    | WorkloadCannotStart
    | SteppedDown
)
