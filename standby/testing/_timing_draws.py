"""How :func:`standby.testing.strategies.timings` draws a timing, safe or not.

A safe timing is drawn knob by knob from the relations of ``docs/safety.md``
(the lease after the heartbeat, the silence after the lease and its graces,
the claim protocol and the spawn inside the lease), then checked against
every rule the core knows; an unsafe one draws each knob freely as a
multiple of the heartbeat interval. Needs ``hypothesis``, like the public
strategies module that imports this one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import assume
from hypothesis import strategies as st

from ..core._timing import Timing

__all__ = ["drawn_timing"]


@st.composite
def drawn_timing(
    draw: st.DrawFn,
    min_heartbeat: float,
    max_heartbeat: float,
    min_relays: int,
    max_relays: int,
    *,
    safe: bool,
) -> Timing:
    """A timing with its heartbeat interval and relay count in the bounds.

    ``safe`` keeps every safety rule; otherwise the knobs ignore the
    relations between them (every value stays well-formed).
    """
    h = _uniform(draw, min_heartbeat, max_heartbeat)

    def relays() -> tuple[int, int]:
        n = draw(st.integers(min_value=min_relays, max_value=max_relays))
        return n, draw(st.integers(min_value=1, max_value=n))

    return _safe_timing(draw, h, relays) if safe else _any_timing(draw, h, relays)


def _uniform(draw: st.DrawFn, low: float, high: float) -> float:
    return draw(st.floats(min_value=low, max_value=high, allow_subnormal=False))


def _safe_timing(draw: st.DrawFn, h: float, relays: Callable[[], tuple[int, int]]) -> Timing:
    def fraction(low: float, high: float) -> float:
        return _uniform(draw, low, high)

    lease = h * fraction(1.1, 4.0)
    suspect_after = h + (lease - h) * fraction(0.05, 1.0)
    fence_grace = h * fraction(0.0, 1.0)
    max_clock_skew = h * fraction(0.0, 0.5)
    silence = (lease + fence_grace + max_clock_skew) * fraction(1.0, 2.0)
    # The claim protocol and the spawn must fit in the lease a promotion starts with.
    query_timeout = lease * fraction(0.002, 0.03)
    claim_timeout = 2 * query_timeout * fraction(1.05, 3.0)
    claim_settle = claim_timeout * fraction(1.05, 3.0)
    budget = lease - claim_timeout - claim_settle - 2 * query_timeout
    n, w = relays()
    r = draw(st.integers(min_value=n - w + 1, max_value=n))
    fields: dict[str, Any] = {
        "heartbeat_interval": h,
        "lease": lease,
        "suspect_after": suspect_after,
        "fence_grace": fence_grace,
        "max_clock_skew": max_clock_skew,
        "silence": silence,
        "promotion_delay": h * fraction(0.0, 1.0),
        "query_timeout": query_timeout,
        "claim_timeout": claim_timeout,
        "claim_settle": claim_settle,
        "retry_interval": h * fraction(0.05, 0.5),
        "spawn_timeout": budget * fraction(0.05, 0.95),
        "spawn_retry_backoff": h * fraction(0.01, 0.2),
        "max_spawn_attempts": draw(st.integers(min_value=1, max_value=5)),
        "relay_count": n,
        "write_quorum": w,
        "read_quorum": r,
    }
    # A rule the core adds later is honoured too: a draw that breaks one is
    # discarded, never returned.
    assume(Timing.unsafe_unchecked(**fields).is_safe)
    return Timing(**fields)


#: The free draw of each duration knob, as multiples of the heartbeat interval.
_FREE_MULTIPLES: tuple[tuple[str, float, float], ...] = (
    ("lease", 0.5, 8.0),
    ("suspect_after", 0.5, 8.0),
    ("fence_grace", 0.0, 1.0),
    ("max_clock_skew", 0.0, 1.0),
    ("silence", 0.5, 8.0),
    ("promotion_delay", 0.0, 1.0),
    ("query_timeout", 0.005, 0.2),
    ("claim_timeout", 0.005, 0.4),
    ("claim_settle", 0.005, 0.4),
    ("retry_interval", 0.05, 0.5),
    ("spawn_timeout", 0.1, 2.0),
    ("spawn_retry_backoff", 0.01, 0.2),
)


def _any_timing(draw: st.DrawFn, h: float, relays: Callable[[], tuple[int, int]]) -> Timing:
    n, w = relays()
    durations = {name: h * _uniform(draw, low, high) for name, low, high in _FREE_MULTIPLES}
    return Timing.unsafe_unchecked(
        heartbeat_interval=h,
        **durations,
        max_spawn_attempts=draw(st.integers(min_value=1, max_value=5)),
        relay_count=n,
        write_quorum=w,
        read_quorum=draw(st.integers(min_value=1, max_value=n)),
    )
