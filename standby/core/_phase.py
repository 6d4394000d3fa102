"""The phases of a reserved slot in the election (see :mod:`standby.core._election`)."""

from __future__ import annotations

import enum

__all__ = ["Phase"]


class Phase(enum.Enum):
    """Where a reserved slot stands in the election."""

    WATCHING = "watching"
    """Waiting for the primary's silence deadline."""
    CONFIRMING = "confirming"
    """A read-quorum heartbeat query is confirming the silence."""
    RETRY_WATCH = "retry-watch"
    """Waiting a retry interval before watching again (a confirmation missed its quorum)."""
    BACKOFF = "backoff"
    """Silence confirmed (or lease revoked): waiting ``index * promotion_delay``."""
    PACED = "paced"
    """Ready to pre-read, waiting for room: the election lets only as many slots
    run the claim protocol at once as the relays answer in time."""
    PREREAD = "preread"
    """Step 1: reading peer claims before claiming."""
    CLAIMING = "claiming"
    """Step 2: the claim is being published (or compared-and-set)."""
    SETTLING = "settling"
    """Step 3: waiting ``claim_settle`` after the claim reached its quorum."""
    REREAD = "reread"
    """Step 3: the settle re-read is in flight."""
    SPAWNING = "spawning"
    """Step 4: the spawn is in flight."""
    RETRY_CLAIM = "retry-claim"
    """Waiting before pre-reading again: a claims read or a claim missed its quorum or
    its deadline, a compare-and-set was lost to no known holder, or a spawn failed."""
    DEFERRED = "deferred"
    """A peer holds the claim; waiting for its announcement or its release."""
