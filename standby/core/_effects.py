"""Effects: immutable instructions the machines hand to their driver.

A machine never performs I/O. It returns effects; the driver (the node, the
simulator, or a host's own loop) carries them out and reports each result
back through the matching method, quoting ``request_id`` where there is one.
A result whose ``request_id`` is no longer awaited is ignored, so a late
answer can never move a slot that has moved on.
"""

from __future__ import annotations

import enum
import math
from typing import Any, Generic, TypeAlias, TypeVar

import attrs

from ._models import LeaseRevocation, PromotionAnnouncement, PromotionClaim, StandbySlot
from ._phase import Phase

SpecT = TypeVar("SpecT")

__all__ = [
    "Announce",
    "AtRisk",
    "CannotStart",
    "CheckContainer",
    "CompareAndSetClaim",
    "DropReason",
    "Dropped",
    "ElectionEffect",
    "LifecycleEffect",
    "LifecycleState",
    "PhaseChanged",
    "PrimaryChanged",
    "Promoted",
    "PublishClaim",
    "PublishRevocation",
    "QueryClaims",
    "QueryHeartbeats",
    "QuorumShortfall",
    "ReclaimContainer",
    "SlotRemoved",
    "SlotSaved",
    "Spawn",
    "StartContainer",
    "StateChanged",
    "StopContainer",
    "StopOrphan",
    "WithdrawClaim",
]


# --------------------------------------------------------------------------
# Standby side (StandbyElection)
# --------------------------------------------------------------------------


@attrs.frozen
class QueryHeartbeats:
    """Read ``primary``'s latest heartbeat from the relays.

    Report with :meth:`StandbyElection.heartbeats_queried`, passing every
    heartbeat (and any revocation) found and the set of relays that answered.
    ``since`` is the newest timestamp already known; older results are useless.
    """

    request_id: int
    primary: str
    workload_ids: tuple[str, ...]
    since: float


def _one_workload(effect: QueryClaims) -> tuple[str, ...]:
    return (effect.workload_id,)


def _str_tuple(values: Any) -> tuple[str, ...]:
    return tuple(values)


@attrs.frozen
class QueryClaims:
    """Read every claim and announcement for ``workload_ids`` by ``authors`` from the relays.

    One read covers the slots of one primary that reached the same step at
    the same time (a correlated failover reads once, not once per slot);
    ``workload_id`` is the first of them. ``authors`` are the slots' peers,
    the only signers whose claims and announcements can move them (``None``:
    anyone): this standby's own claims are not asked for, which keeps the
    answers of a correlated failover's re-reads small. Report with
    :meth:`StandbyElection.claims_queried`; every relay counted as answering
    must have returned every matching message for every workload named.
    """

    request_id: int
    workload_id: str
    workload_ids: tuple[str, ...] = attrs.field(
        default=attrs.Factory(_one_workload, takes_self=True), converter=_str_tuple
    )
    authors: tuple[str, ...] | None = None


@attrs.frozen
class PublishClaim:
    """Publish ``claim``; report the relays that acknowledged it with
    :meth:`StandbyElection.claim_published`."""

    request_id: int
    claim: PromotionClaim


@attrs.frozen
class CompareAndSetClaim:
    """Atomically claim ``claim.epoch`` (only with ``atomic_claims=True``).

    Report with :meth:`StandbyElection.claim_compared`: whether this claim won,
    and the claim that holds the epoch when it did not.
    """

    request_id: int
    claim: PromotionClaim


@attrs.frozen
class WithdrawClaim:
    """Publish ``claim`` (a withdrawn copy of an earlier claim), best effort."""

    claim: PromotionClaim


@attrs.frozen
class Spawn(Generic[SpecT]):
    """Start the workload as the new primary.

    Report with :meth:`StandbyElection.spawn_finished`. The runtime must hand
    ``fencing_token`` to the workload; ``restore_from`` is the ``state_uri``
    of the revocation that triggered the promotion, if any.
    """

    request_id: int
    workload_id: str
    spec: SpecT
    epoch: int
    fencing_token: int
    restore_from: str | None
    lease_end: float = math.inf
    """Wall-clock instant the promotion lease ends (hand it to the runtime)."""


@attrs.frozen
class Announce:
    """Publish the announcement of a successful promotion."""

    announcement: PromotionAnnouncement


@attrs.frozen
class Promoted(Generic[SpecT]):
    """The workload now runs here as primary of ``epoch``.

    The slot has left the table. Hand the workload to a
    :class:`~standby.WorkloadLifecycle` built with
    :meth:`~standby.WorkloadLifecycle.promoted`, using ``lease_from``.
    """

    slot: StandbySlot[SpecT]
    epoch: int
    fencing_token: int
    standbys: tuple[str, ...]
    lease_from: float


@attrs.frozen
class StopOrphan:
    """A spawn reported success after the machine had given it up: stop it."""

    workload_id: str
    fencing_token: int
    reason: str


@attrs.frozen
class SlotSaved(Generic[SpecT]):
    """A slot was added or changed: persist the table."""

    slot: StandbySlot[SpecT]


@attrs.frozen
class SlotRemoved:
    """A slot left the table (``reason``: expired, promoted, removed): persist."""

    workload_id: str
    reason: str


@attrs.frozen
class CannotStart:
    """The workload failed to spawn here every time it was allowed to: the slot is given up.

    ``attempts`` spawns failed in all (``max_spawn_rounds`` rounds of
    ``max_spawn_attempts``); ``error`` is the last one's reason. The claim is
    withdrawn and a :class:`SlotRemoved` follows: a final state the host is
    told of (failure mode 24).
    """

    workload_id: str
    attempts: int
    error: str | None


@attrs.frozen
class PrimaryChanged:
    """A peer took over: the slot now stands by for ``new_primary`` in ``epoch``."""

    workload_id: str
    old_primary: str
    new_primary: str
    epoch: int


class DropReason(enum.Enum):
    """Why an input was rejected. Every drop is reported, none is fatal.

    The core's own checks give the first group; a transport reports the last
    three (:class:`~standby.protocols.TransportDrop`) for messages it dropped
    before they became envelopes.
    """

    FUTURE_DATED = "future-dated"
    WRONG_SIGNER = "wrong signer"
    UNKNOWN_WORKLOAD = "unknown workload"
    WRONG_EPOCH = "wrong epoch"
    STALE = "stale or replayed"
    DUPLICATE = "duplicate"
    NOT_A_PEER = "signer is not a peer"
    CONFLICT = "conflicting promotion"
    LATE_RESULT = "late result"
    BAD_SIGNATURE = "bad signature"
    UNEXPECTED_AUTHOR = "unexpected author"
    MALFORMED = "malformed"


@attrs.frozen
class Dropped:
    """An input was rejected or ignored; for logs and metrics."""

    reason: DropReason
    workload_id: str | None
    signer: str | None
    detail: str


@attrs.frozen
class QuorumShortfall:
    """A query was answered by fewer relays than the read quorum; retried later."""

    stage: str
    workload_ids: tuple[str, ...]
    answered: int
    needed: int


@attrs.frozen
class PhaseChanged:
    """A slot moved from one phase to another (``None``: not in the table).

    The machine reports every move, in the order it made them, after the
    other effects of the same call. Purely informational: nothing to carry
    out, nothing to report back. ``revoked`` tells whether the primary's
    lease was revoked at the time of the move.
    """

    workload_id: str
    old: Phase | None
    new: Phase | None
    revoked: bool = False


ElectionEffect: TypeAlias = (
    QueryHeartbeats
    | QueryClaims
    | PublishClaim
    | CompareAndSetClaim
    | WithdrawClaim
    | Spawn[Any]
    | Announce
    | Promoted[Any]
    | StopOrphan
    | SlotSaved[Any]
    | SlotRemoved
    | CannotStart
    | PrimaryChanged
    | PhaseChanged
    | Dropped
    | QuorumShortfall
)


# --------------------------------------------------------------------------
# Primary side (WorkloadLifecycle)
# --------------------------------------------------------------------------


class LifecycleState(enum.Enum):
    """States of a workload on its primary."""

    PROVISIONING = "provisioning"
    LIVE = "live"
    SUSPECT = "suspect"
    RESTARTING = "restarting"
    FENCED = "fenced"
    FAILED = "failed"
    EXPIRED = "expired"


@attrs.frozen
class StartContainer:
    """Start (or restart) the workload's container with ``fencing_token``.

    Report with :meth:`WorkloadLifecycle.container_started` or
    :meth:`WorkloadLifecycle.container_failed`.
    """

    workload_id: str
    fencing_token: int
    attempt: int


@attrs.frozen
class StopContainer:
    """Stop the workload's container; report :meth:`WorkloadLifecycle.container_stopped`."""

    workload_id: str
    reason: str


@attrs.frozen
class PublishRevocation:
    """Publish ``revocation``; report :meth:`WorkloadLifecycle.revocation_published`."""

    revocation: LeaseRevocation


@attrs.frozen
class CheckContainer:
    """Ask the runtime for the container's status; report
    :meth:`WorkloadLifecycle.container_status`."""

    workload_id: str


@attrs.frozen
class ReclaimContainer:
    """Remove a *stopped* container and free its resources."""

    workload_id: str


@attrs.frozen
class StateChanged:
    """The lifecycle moved from ``old`` to ``new``."""

    workload_id: str
    old: LifecycleState
    new: LifecycleState
    reason: str


@attrs.frozen
class AtRisk:
    """The lease of a replicated workload is at risk: it may be lost before it is renewed.

    Reported once per lease, before the lease ends (then the workload fences):
    ``reason`` says whether the last heartbeat missed its write quorum or the
    lease remaining fell below the host's threshold. Nothing to carry out and
    nothing to report back: a cooperative workload or the host can act on it
    (checkpoint, shed load) before the fence. ``remaining`` is
    ``lease_end - now`` at the time it was found.
    """

    workload_id: str
    epoch: int
    lease_end: float
    remaining: float
    reason: str


LifecycleEffect: TypeAlias = (
    StartContainer
    | StopContainer
    | PublishRevocation
    | CheckContainer
    | ReclaimContainer
    | StateChanged
    | AtRisk
)
