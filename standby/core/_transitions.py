"""The legal phase moves of a slot, the step each deadline takes, and the checked move.

:data:`TRANSITIONS` is the table the docs draw their state diagram from;
:data:`ON_DEADLINE` decides which :class:`Step` the election machine takes
when a slot's deadline is reached, and :data:`ON_INPUT` which one it takes
when an accepted message reaches it (the machine runs the step; the step's
rules pick among the phases :data:`STEP_LEADS_TO` lists); :func:`checked_move`
is how the machine reports a move it makes, refusing any move
:data:`TRANSITIONS` does not list.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType

from ._effects import PhaseChanged
from ._phase import Phase

__all__ = [
    "ON_DEADLINE",
    "ON_INPUT",
    "STEP_LEADS_TO",
    "TRANSITIONS",
    "IllegalTransition",
    "Input",
    "Step",
    "checked_move",
]

_W, _C, _RW, _B = Phase.WATCHING, Phase.CONFIRMING, Phase.RETRY_WATCH, Phase.BACKOFF
_PR, _CL, _SE, _RR = Phase.PREREAD, Phase.CLAIMING, Phase.SETTLING, Phase.REREAD
_SP, _RC, _DE = Phase.SPAWNING, Phase.RETRY_CLAIM, Phase.DEFERRED
_PA = Phase.PACED

#: Every legal move of a slot: from a phase to the phases it may enter next.
#: ``None`` stands for "not in the table": a slot enters from ``None`` when it
#: is reserved or restored, and goes to ``None`` from any phase when it is
#: removed, expires or is promoted. Re-entering the same phase (a new
#: deadline) is not a move. The docs' state diagram is drawn from this table.
TRANSITIONS: Mapping[Phase | None, frozenset[Phase | None]] = MappingProxyType(
    {
        None: frozenset({_W}),
        _W: frozenset({_C, _B, None}),
        _C: frozenset({_W, _B, _RW, None}),
        _RW: frozenset({_W, _B, None}),
        _B: frozenset({_PA, _PR, _RC, _W, None}),
        _PA: frozenset({_PR, _W, None}),
        _PR: frozenset({_CL, _DE, _RC, _W, None}),
        _CL: frozenset({_SE, _SP, _DE, _RC, _W, None}),
        _SE: frozenset({_RR, _W, None}),
        _RR: frozenset({_SP, _DE, _RC, _W, None}),
        _SP: frozenset({_RC, None}),
        _RC: frozenset({_PA, _PR, _W, None}),
        _DE: frozenset({_PA, _PR, _RC, _W, None}),
    }
)


class Step(enum.Enum):
    """A step the election machine takes on one slot; the value says what it does."""

    CONFIRM_TIMED_OUT = (
        "the heartbeat query got too few answers in time: a shortfall; wait to watch again"
    )
    WATCH_AGAIN = "watch the primary again (back off at once if the lease was revoked)"
    PREREAD = (
        "read the peers' claims (watch again instead if the primary spoke meanwhile "
        "and the lease was not revoked; wait a turn in RETRY_CLAIM while a lower "
        "standby claims the primary's other workloads; wait in PACED while the claim "
        "window is full)"
    )
    CLAIMS_READ_TIMED_OUT = (
        "the claims read got too few answers in time: withdraw any claim; wait to pre-read again"
    )
    REREAD_TIMED_OUT = (
        "the settle re-read got too few answers in time: read again, keeping the claim, "
        "while its lease leaves room (at most twice); otherwise withdraw it and wait to "
        "pre-read again"
    )
    CLAIM_TIMED_OUT = (
        "the claim missed its deadline: withdraw it; wait (doubling with each failure) "
        "to pre-read again"
    )
    SETTLED = (
        "re-read the claims, together with the slots of its batch (first waiting for "
        "those of its batch still settling)"
    )
    SPAWN_TIMED_OUT = (
        "the spawn timed out: withdraw the claim; wait to pre-read again, or give up "
        "after the last round (the slot leaves the table)"
    )
    REARM = "withdraw any claim and watch the primary again, the retry counts reset"
    BACK_OFF = "back off by standby index, then pre-read"
    DEFERRAL_ENDED = (
        "pre-read once the standbys between the releaser and this one had their turn "
        "(at once for the next one after it)"
    )
    FOLLOW = "withdraw any claim and watch the announcer as the primary of its epoch"


class Input(enum.Enum):
    """A message that may move a slot, once the rules for its kind accepted it."""

    ALIVE = "a heartbeat shows the primary alive (a slot whose lease was revoked ignores it)"
    REVOKED = "the slot's primary revoked its lease"
    RELEASED = "the peer this slot deferred to withdrew its claim"
    ANNOUNCED = "a peer announced its promotion to a later epoch"


#: What the machine does when a slot's own deadline is reached, by phase.
#: A ``WATCHING`` slot has no deadline of its own: its primary's silence
#: deadline sends its due slots to ``CONFIRMING`` together. Nor has a
#: ``PACED`` one: it pre-reads when the slots ahead of it leave room in the
#: claim window.
ON_DEADLINE: Mapping[Phase, Step] = MappingProxyType(
    {
        _C: Step.CONFIRM_TIMED_OUT,
        _RW: Step.WATCH_AGAIN,
        _B: Step.PREREAD,
        _PR: Step.CLAIMS_READ_TIMED_OUT,
        _CL: Step.CLAIM_TIMED_OUT,
        _SE: Step.SETTLED,
        _RR: Step.REREAD_TIMED_OUT,
        _SP: Step.SPAWN_TIMED_OUT,
        _RC: Step.PREREAD,
        _DE: Step.PREREAD,
    }
)

#: What the machine does when an accepted input reaches a slot, by phase. In
#: a phase not listed nothing moves: the input is only recorded (a revoked
#: lease, say), and an announcement that reaches a spawning slot is dropped
#: as a conflict.
ON_INPUT: Mapping[Input, Mapping[Phase, Step]] = MappingProxyType(
    {
        Input.ALIVE: MappingProxyType(
            dict.fromkeys((_B, _PA, _PR, _CL, _SE, _RR, _RC), Step.REARM)
        ),
        Input.REVOKED: MappingProxyType(dict.fromkeys((_W, _C, _RW), Step.BACK_OFF)),
        Input.RELEASED: MappingProxyType({_DE: Step.DEFERRAL_ENDED}),
        Input.ANNOUNCED: MappingProxyType(
            {phase: Step.FOLLOW for phase in Phase if phase is not _SP}
        ),
    }
)

#: The phases each step may leave a slot in (``None``: it leaves the table).
#: Every one must be a legal move from the phase the step is taken in, or
#: that phase itself (a new deadline).
STEP_LEADS_TO: Mapping[Step, frozenset[Phase | None]] = MappingProxyType(
    {
        Step.CONFIRM_TIMED_OUT: frozenset({_RW}),
        Step.WATCH_AGAIN: frozenset({_W, _B}),
        Step.PREREAD: frozenset({_PA, _PR, _RC, _W}),
        Step.CLAIMS_READ_TIMED_OUT: frozenset({_RC}),
        Step.REREAD_TIMED_OUT: frozenset({_RC, _RR}),
        Step.CLAIM_TIMED_OUT: frozenset({_RC}),
        Step.SETTLED: frozenset({_SE, _RR}),
        Step.SPAWN_TIMED_OUT: frozenset({_RC, None}),
        Step.REARM: frozenset({_W}),
        Step.BACK_OFF: frozenset({_B}),
        Step.DEFERRAL_ENDED: frozenset({_PA, _PR, _RC, _DE, _W}),
        Step.FOLLOW: frozenset({_W}),
    }
)


class IllegalTransition(RuntimeError):
    """Internal error: a machine tried a move its table forbids.

    The election's slots move by :data:`TRANSITIONS`; a workload's lifecycle
    by ``LIFECYCLE_MOVES`` (:mod:`standby.core._lifecycle`).
    """


def _name(phase: Phase | None) -> str:
    return "(not in the table)" if phase is None else phase.name


def checked_move(
    workload_id: str, old: Phase | None, new: Phase | None, *, revoked: bool
) -> PhaseChanged:
    """The report of one move, once :data:`TRANSITIONS` allows it.

    Raises :class:`IllegalTransition` for a move the table does not list.
    """
    if new not in TRANSITIONS[old]:
        raise IllegalTransition(
            f"slot {workload_id!r}: no move from {_name(old)} to {_name(new)} "
            "in TRANSITIONS (a bug in the election machine)"
        )
    return PhaseChanged(workload_id, old, new, revoked)
