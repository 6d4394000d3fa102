"""Every exception ``standby`` raises, under one base, :class:`StandbyError`.

Misuse by the host and bad settings raise at once, naming the rule and the
values (:class:`UnsafeTiming`, :class:`TopologyError`, :class:`InvalidSlot`,
:class:`NotAddressedError`, :class:`IdentityError`). Bad input from the
network is a :class:`WireError`. Adapters map their client library's
exceptions to :class:`TransportError`, :class:`SpawnError`,
:class:`RuntimeFailure` or :class:`StoreError` (``raise ... from exc``); a
store that quarantined unreadable data raises :class:`StoreQuarantined`
until the host accepts the loss.
Every name here is also importable from :mod:`standby`.
"""

from __future__ import annotations

from .core._errors import (
    AdapterError,
    IdentityError,
    InvalidRequest,
    InvalidSlot,
    NodeError,
    NodeMisuse,
    NotAddressedError,
    QuorumUnavailable,
    RequestRefused,
    RetryLater,
    RuntimeFailure,
    SpawnError,
    StandbyError,
    StoreError,
    StoreQuarantined,
    TopologyError,
    TransportError,
    UnsafeTiming,
    WireError,
    WorkloadConflict,
)
from .core._public import publish

__all__ = [
    "AdapterError",
    "IdentityError",
    "InvalidRequest",
    "InvalidSlot",
    "NodeError",
    "NodeMisuse",
    "NotAddressedError",
    "QuorumUnavailable",
    "RequestRefused",
    "RetryLater",
    "RuntimeFailure",
    "SpawnError",
    "StandbyError",
    "StoreError",
    "StoreQuarantined",
    "TopologyError",
    "TransportError",
    "UnsafeTiming",
    "WireError",
    "WorkloadConflict",
]

publish(__name__, globals(), __all__)
