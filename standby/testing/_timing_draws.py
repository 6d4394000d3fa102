"""How :func:`standby.testing.strategies.timings` draws a timing, safe or not.

A safe timing is drawn knob by knob from the relations of ``SAFETY.md``
(the lease after the heartbeat, the silence after the lease and its graces,
the claim protocol and the spawn inside the lease), then checked against
every rule the core knows; an unsafe one draws each knob freely as a
multiple of the heartbeat interval. Needs ``hypothesis``, like the public
strategies module that imports this one.
"""

from __future__ import annotations

from typing import Any

from hypothesis import assume
from hypothesis import strategies as st

from .._timing import Timing

__all__ = ["any_timing", "safe_timing"]


@st.composite
def safe_timing(
    draw: st.DrawFn,
    min_heartbeat: float,
    max_heartbeat: float,
    min_relays: int,
    max_relays: int,
) -> Timing:
    """A timing that keeps every safety rule, heartbeat interval and relays in the bounds."""

    def fraction(low: float, high: float) -> float:
        return draw(st.floats(min_value=low, max_value=high, allow_subnormal=False))

    h = draw(st.floats(min_value=min_heartbeat, max_value=max_heartbeat, allow_subnormal=False))
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
    n = draw(st.integers(min_value=min_relays, max_value=max_relays))
    w = draw(st.integers(min_value=1, max_value=n))
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


@st.composite
def any_timing(
    draw: st.DrawFn,
    min_heartbeat: float,
    max_heartbeat: float,
    min_relays: int,
    max_relays: int,
) -> Timing:
    """A well-formed timing whose knobs ignore the relations between them."""
    h = draw(st.floats(min_value=min_heartbeat, max_value=max_heartbeat, allow_subnormal=False))

    def duration(low: float, high: float) -> float:
        return h * draw(st.floats(min_value=low, max_value=high, allow_subnormal=False))

    n = draw(st.integers(min_value=min_relays, max_value=max_relays))
    w = draw(st.integers(min_value=1, max_value=n))
    return Timing.unsafe_unchecked(
        heartbeat_interval=h,
        lease=duration(0.5, 8.0),
        suspect_after=duration(0.5, 8.0),
        fence_grace=duration(0.0, 1.0),
        max_clock_skew=duration(0.0, 1.0),
        silence=duration(0.5, 8.0),
        promotion_delay=duration(0.0, 1.0),
        query_timeout=duration(0.005, 0.2),
        claim_timeout=duration(0.005, 0.4),
        claim_settle=duration(0.005, 0.4),
        retry_interval=duration(0.05, 0.5),
        spawn_timeout=duration(0.1, 2.0),
        spawn_retry_backoff=duration(0.01, 0.2),
        max_spawn_attempts=draw(st.integers(min_value=1, max_value=5)),
        relay_count=n,
        write_quorum=w,
        read_quorum=draw(st.integers(min_value=1, max_value=n)),
    )
