"""One slot's runtime state in the election machine, and its public snapshot."""

from __future__ import annotations

import enum
from typing import Generic, TypeVar

import attrs

from ._models import PromotionClaim, StandbySlot
from ._phase import Phase

__all__ = ["QUEUED", "Entry", "Request", "SlotStatus"]

SpecT = TypeVar("SpecT")

#: ``entry.request`` of a slot whose claims read is queued for the batch.
QUEUED = 0


class Request(enum.Enum):
    """The kinds of request a slot can have outstanding (one request id each).

    Reads (heartbeats, claims) are batched and tracked apart, per primary.
    """

    PUBLISH = "publish"
    COMPARE_AND_SET = "compare-and-set"
    SPAWN = "spawn"


@attrs.frozen
class SlotStatus:
    """A read-only snapshot of one slot's election state."""

    workload_id: str
    primary: str
    epoch: int
    phase: Phase
    deadline: float | None
    revoked: bool
    spawn_attempts: int
    deferred_to: str | None


class Entry(Generic[SpecT]):
    """Mutable per-slot runtime state (private to the election machine)."""

    __slots__ = (
        "attempts",
        "claim",
        "claim_failures",
        "confirmed_baseline",
        "deadline",
        "deferred",
        "joined",
        "last_error",
        "origin",
        "phase",
        "preread_at",
        "request",
        "rereads",
        "revoked",
        "rounds",
        "slot",
        "state_uri",
        "turn_waits",
    )

    def __init__(self, slot: StandbySlot[SpecT], origin: float) -> None:
        self.slot = slot
        self.origin = origin
        self.phase = Phase.WATCHING
        self.deadline: float | None = None
        self.request: int | None = None
        self.revoked = False
        self.state_uri: str | None = None
        self.claim: PromotionClaim | None = None
        self.attempts = 0
        self.rounds = 0
        self.last_error: str | None = None
        self.claim_failures = 0
        self.preread_at = 0.0
        self.deferred: PromotionClaim | None = None
        self.confirmed_baseline = 0.0
        self.joined = False
        #: Pre-reads that waited for a lower standby still at work (see
        #: ``lower_standby_at_work``), since the primary was last seen alive.
        self.turn_waits = 0
        #: Settle re-reads of the current claim that missed their quorum and
        #: were read again (see ``may_reread``).
        self.rereads = 0

    def waiting_on(self, phase: Phase, request: int) -> bool:
        """Whether this slot is in ``phase`` and still waits for ``request``."""
        return self.phase is phase and self.request == request
