"""How :meth:`Timing.for_target` derives every knob from a provider's targets."""

from __future__ import annotations

import math
from typing import Any

from ._timing_rules import bound, default_read_quorum, is_number, out_of_range

__all__ = ["MAX_NUDGES", "derive_for_target", "explain"]

#: Most steps of one ulp a repair may take (rounding errors are a few ulps).
MAX_NUDGES = 64

#: Ratios :meth:`Timing.for_target` derives the claim knobs with; each is the
#: one the defaults use, and each keeps its rule with room to spare.
_QUERY_PER_LATENCY = 4.0
_CLAIM_PER_QUERY = 2.5  # claim_timeout > 2 * query_timeout
_SETTLE_PER_CLAIM = 1.5  # claim_settle > claim_timeout
_RETRIES_PER_SPAWN = 12.0  # spawn_retry_backoff = spawn_timeout / 12


def _target_number(name: str, value: object, *, zero_ok: bool = False) -> float:
    if not is_number(value):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or out_of_range(value, zero_ok):
        raise ValueError(f"{name} must be a finite number {bound(zero_ok)}, got {value!r}")
    return float(value)


def derive_for_target(
    *,
    silence: float,
    heartbeat_interval: float,
    relay_latency: float,
    max_clock_skew: float,
    relay_count: int,
    write_quorum: int | None,
    spawn_timeout: float | None,
    fence_grace: float | None,
    promotion_delay: float | None,
) -> dict[str, Any]:
    """Every field of the :class:`Timing` that :meth:`Timing.for_target` builds.

    Not checked against the rules: :meth:`Timing.for_target` does that.
    """
    silence = _target_number("silence", silence)
    heartbeat_interval = _target_number("heartbeat_interval", heartbeat_interval)
    relay_latency = _target_number("relay_latency", relay_latency)
    max_clock_skew = _target_number("max_clock_skew", max_clock_skew, zero_ok=True)
    for name, count in (("relay_count", relay_count), ("write_quorum", write_quorum)):
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
            raise TypeError(f"{name} must be an int, got {count!r}")
    spawn = silence / 3 if spawn_timeout is None else _target_number("spawn_timeout", spawn_timeout)
    fence = (
        silence / 6
        if fence_grace is None
        else _target_number("fence_grace", fence_grace, zero_ok=True)
    )
    query_timeout = _QUERY_PER_LATENCY * relay_latency
    claim_timeout = _CLAIM_PER_QUERY * query_timeout
    claim_settle = _SETTLE_PER_CLAIM * claim_timeout
    # The longest lease the silence rule allows, moved down a few floats when
    # rounding put lease + fence_grace + max_clock_skew above the silence.
    lease = silence - fence - max_clock_skew
    for _ in range(MAX_NUDGES):
        if lease + fence + max_clock_skew <= silence:
            break
        lease = math.nextafter(lease, -math.inf)
    quorum = relay_count // 2 + 1 if write_quorum is None else write_quorum
    delay = claim_timeout + claim_settle + query_timeout
    return {
        "heartbeat_interval": heartbeat_interval,
        "lease": lease,
        "fence_grace": fence,
        "max_clock_skew": max_clock_skew,
        "silence": silence,
        "promotion_delay": (
            delay
            if promotion_delay is None
            else _target_number("promotion_delay", promotion_delay, zero_ok=True)
        ),
        "suspect_after": (heartbeat_interval + lease) / 2,
        "claim_timeout": claim_timeout,
        "claim_settle": claim_settle,
        "query_timeout": query_timeout,
        "retry_interval": claim_timeout,
        "spawn_timeout": spawn,
        "spawn_retry_backoff": spawn / _RETRIES_PER_SPAWN,
        "max_spawn_attempts": 3,
        "max_spawn_rounds": 3,
        "relay_count": relay_count,
        "write_quorum": quorum,
        "read_quorum": default_read_quorum(relay_count, quorum),
    }


#: Why each derived knob has the value it has, added to a broken rule's numbers.
_DERIVED = {
    "lease": "lease = silence - fence_grace - max_clock_skew",
    "suspect_after": "suspect_after = (heartbeat_interval + lease) / 2",
}


def explain(violation: tuple[str, str]) -> tuple[str, str]:
    """``violation`` with how :meth:`Timing.for_target` derived the knobs it names."""
    rule, detail = violation
    notes = [how for knob, how in _DERIVED.items() if knob in rule]
    if not notes:
        return violation
    return rule, f"{detail} (derived: {'; '.join(notes)})"
