"""standby: warm-standby failover without running a workload twice.

The pure core (models, timing rules, helpers and the wire codec) does no I/O
and reads no clock. See ``docs/`` for the guide.
"""

from __future__ import annotations

from ._errors import InvalidSlot, StandbyError, StoreError, TopologyError, UnsafeTiming, WireError
from ._helpers import primary_is_silent, promotion_delay, role_of, select_expired, silence_baseline
from ._models import (
    Envelope,
    Heartbeat,
    LeaseRevocation,
    Message,
    PromotionAnnouncement,
    PromotionClaim,
    StandbySlot,
    Topology,
    fencing_token,
)
from ._roles import NotAddressed, Primary, Role, Standby
from ._timing import Timing

__version__ = "0.1.0"

__all__ = [
    "Envelope",
    "Heartbeat",
    "InvalidSlot",
    "LeaseRevocation",
    "Message",
    "NotAddressed",
    "Primary",
    "PromotionAnnouncement",
    "PromotionClaim",
    "Role",
    "Standby",
    "StandbyError",
    "StandbySlot",
    "StoreError",
    "Timing",
    "Topology",
    "TopologyError",
    "UnsafeTiming",
    "WireError",
    "__version__",
    "fencing_token",
    "primary_is_silent",
    "promotion_delay",
    "role_of",
    "select_expired",
    "silence_baseline",
]
