"""Typed events a :class:`~standby.node.StandbyNode` hands to its host's event hook.

Every event has ``at``: the node's wall-clock time (Unix seconds) when it
happened. They are small frozen values meant for metrics, audit logs and the
demo's timeline; the node never waits for the hook and survives a hook that
raises.
"""

from __future__ import annotations

from typing import TypeAlias

import attrs

from ..core._effects import DropReason, LifecycleState
from ..core._election import Phase

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


@attrs.frozen
class SlotPhaseChanged:
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


@attrs.frozen
class LifecycleChanged:
    """A workload this node runs as primary changed state."""

    at: float
    workload_id: str
    old: LifecycleState
    new: LifecycleState
    reason: str


@attrs.frozen
class HeartbeatPublished:
    """A heartbeat went out; ``acked`` are the relays that stored it."""

    at: float
    timestamp: float
    acked: frozenset[str]
    workloads: int


@attrs.frozen
class ClaimPublished:
    """A promotion claim (or its withdrawal) was published."""

    at: float
    workload_id: str
    epoch: int
    fencing_token: int
    withdrawn: bool
    acked: frozenset[str]


@attrs.frozen
class ClaimCompared:
    """An atomic compare-and-set of a claim finished (``won`` or lost to ``holder``)."""

    at: float
    workload_id: str
    epoch: int
    fencing_token: int
    won: bool
    holder: str | None


@attrs.frozen
class ContainerStarting:
    """The node asked the runtime to start the workload (``promotion``: as a new primary)."""

    at: float
    workload_id: str
    fencing_token: int
    promotion: bool


@attrs.frozen
class ContainerStarted:
    """A start finished: ``ok``, or failed with ``error``; ``elapsed`` seconds."""

    at: float
    workload_id: str
    fencing_token: int
    promotion: bool
    ok: bool
    error: str | None
    elapsed: float


@attrs.frozen
class ContainerStopped:
    """The node stopped a container (fencing, expiry, orphan, reclaim)."""

    at: float
    workload_id: str
    fencing_token: int
    reason: str


@attrs.frozen
class ContainerExited:
    """The runtime reports a container no longer runs although nobody stopped it."""

    at: float
    workload_id: str
    status: str


@attrs.frozen
class PromotedHere:
    """This node took the workload over as primary of ``epoch``."""

    at: float
    workload_id: str
    epoch: int
    fencing_token: int


@attrs.frozen
class AnnouncementPublished:
    """The announcement of a promotion was published (after retries)."""

    at: float
    workload_id: str
    epoch: int | None
    fencing_token: int | None
    acked: frozenset[str]


@attrs.frozen
class RevocationPublished:
    """A lease revocation was published for a workload this node fenced."""

    at: float
    workload_id: str
    epoch: int
    acked: frozenset[str]


@attrs.frozen
class SteppedDown:
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


@attrs.frozen
class PrimaryFollowed:
    """A peer took over: the slot now stands by for ``new_primary``."""

    at: float
    workload_id: str
    old_primary: str
    new_primary: str
    epoch: int


@attrs.frozen
class InputDropped:
    """An input (message or late result) was rejected; nothing else happened."""

    at: float
    workload_id: str | None
    signer: str | None
    reason: DropReason
    detail: str


@attrs.frozen
class QuorumMissed:
    """A query or claim did not reach its quorum; the slot retries later."""

    at: float
    stage: str
    workload_ids: tuple[str, ...]
    answered: int
    needed: int


@attrs.frozen
class OperationFailed:
    """An adapter operation failed or timed out (``operation``: "query", "spawn", ...)."""

    at: float
    operation: str
    workload_id: str | None
    error: str


@attrs.frozen
class SlotsNotPersisted:
    """The store kept these slots in memory only (they hold secrets it cannot seal)."""

    at: float
    workload_ids: tuple[str, ...]


@attrs.frozen
class Reconciled:
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


@attrs.frozen
class StandbyGivenUp:
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


@attrs.frozen
class ClockJumped:
    """The wall clock moved unlike the monotonic clock (a paused process or VM, a clock step).

    The node treats it as a pause: every lease is checked before the node
    acts as primary again.
    """

    at: float
    wall_seconds: float
    monotonic_seconds: float


@attrs.frozen
class SubscriptionLost:
    """The live subscription failed or was refused; it is retried after ``retry_in`` seconds."""

    at: float
    error: str
    attempt: int
    retry_in: float


@attrs.frozen
class WorkloadCannotStart:
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


NodeEvent: TypeAlias = (
    SlotPhaseChanged
    | LifecycleChanged
    | HeartbeatPublished
    | ClaimPublished
    | ClaimCompared
    | ContainerStarting
    | ContainerStarted
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
