"""The legal phase moves of a slot, and the one checked step every move takes.

:data:`TRANSITIONS` is the table the docs draw their state diagram from;
:func:`checked_move` is how the election machine reports a move it makes,
refusing any move the table does not list.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from ._effects import PhaseChanged
from ._phase import Phase

__all__ = ["TRANSITIONS", "IllegalTransition", "checked_move"]

_W, _C, _RW, _B = Phase.WATCHING, Phase.CONFIRMING, Phase.RETRY_WATCH, Phase.BACKOFF
_PR, _CL, _SE, _RR = Phase.PREREAD, Phase.CLAIMING, Phase.SETTLING, Phase.REREAD
_SP, _RC, _DE = Phase.SPAWNING, Phase.RETRY_CLAIM, Phase.DEFERRED

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
        _B: frozenset({_PR, _W, None}),
        _PR: frozenset({_CL, _DE, _RC, _W, None}),
        _CL: frozenset({_SE, _SP, _DE, _RC, _W, None}),
        _SE: frozenset({_RR, _W, None}),
        _RR: frozenset({_SP, _DE, _RC, _W, None}),
        _SP: frozenset({_RC, None}),
        _RC: frozenset({_PR, _W, None}),
        _DE: frozenset({_PR, _W, None}),
    }
)


class IllegalTransition(RuntimeError):
    """Internal error: the machine tried a phase move that :data:`TRANSITIONS` forbids."""


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
