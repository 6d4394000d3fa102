"""Pure helper functions whose semantics are fixed by the public contract."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._roles import NotAddressed, Primary, Role, Standby

if TYPE_CHECKING:
    from ._models import StandbySlot

__all__ = [
    "primary_is_silent",
    "promotion_delay",
    "role_of",
    "select_expired",
    "silence_baseline",
]


def primary_is_silent(now: float, baseline: float, threshold: float) -> bool:
    """Whether a primary last heard of at ``baseline`` counts as silent at ``now``.

    An unknown baseline (``<= 0``) is never silence, and neither is a baseline
    in the future (a clock that went backwards, or a future-dated stamp).
    Otherwise the primary is silent once ``now - baseline >= threshold``.
    """
    if baseline <= 0 or baseline > now:
        return False
    return now - baseline >= threshold


def silence_baseline(created_at: float, last_heartbeat: float | None) -> float:
    """The instant silence is measured from.

    ``max(created_at, last_heartbeat)``: a fresh slot gets a full silence
    window of grace, and a heartbeat older than the reservation does not
    shorten it.
    """
    if last_heartbeat is None or not last_heartbeat > created_at:
        return created_at  # max(created_at, last_heartbeat), without the builtin's cost
    return last_heartbeat


def promotion_delay(index: int, delay: float) -> float:
    """Backoff of standby ``index``: ``index * delay`` (index 0 goes at once)."""
    if index < 0:
        raise ValueError(f"standby index must be >= 0, got {index}")
    if delay < 0:
        raise ValueError(f"promotion delay must be >= 0, got {delay}")
    return index * delay


def role_of(
    me: str,
    primary: str,
    standbys: Sequence[str],
    *,
    same: Callable[[str, str], bool] = operator.eq,
) -> Role:
    """This provider's role in a topology.

    ``same`` compares two identities; pass the transport's canonical
    comparison so that different encodings of one key match.
    """
    if same(me, primary):
        return Primary()
    for index, candidate in enumerate(standbys):
        if same(me, candidate):
            return Standby(index=index, count=len(standbys))
    return NotAddressed()


def select_expired(slots: Mapping[str, StandbySlot[Any]], now: float) -> list[str]:
    """Workload ids of the slots whose reservation has ended (``expires_at <= now``)."""
    return [workload_id for workload_id, slot in slots.items() if slot.expires_at <= now]
