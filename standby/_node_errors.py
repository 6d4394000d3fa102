"""Errors raised by the node, the protocols' contracts and the shipped adapters.

Each one derives from :class:`~standby.StandbyError`. Adapters map the
exceptions of their own client libraries to these at the boundary
(``raise TransportError(...) from exc``), so a host catches one family of
errors whatever transport or runtime it plugged in.
"""

from __future__ import annotations

from ._errors import StandbyError

__all__ = [
    "AdapterError",
    "IdentityError",
    "NodeError",
    "NotAddressedError",
    "RuntimeFailure",
    "SpawnError",
    "TransportError",
]


class AdapterError(StandbyError):
    """Base class of the errors an adapter (transport, runtime, store) reports."""


class TransportError(AdapterError):
    """A relay transport could not carry out a publish, query or subscription.

    Failures of single relays are not errors: they are reported per relay in
    the result. This is raised when the operation as a whole failed.
    """


class RuntimeFailure(AdapterError):
    """The container runtime failed (status or stop could not be carried out)."""


class SpawnError(RuntimeFailure):
    """A container could not be started; ``workload_id`` names the workload."""

    def __init__(self, message: str, *, workload_id: str | None = None) -> None:
        super().__init__(message)
        self.workload_id = workload_id


class IdentityError(StandbyError, ValueError):
    """An identity is malformed and cannot be canonicalised (the host's input)."""


class NotAddressedError(StandbyError, ValueError):
    """A spawn request names this provider neither as primary nor as a standby."""

    def __init__(self, workload_id: str, me: str, primary: str, standbys: tuple[str, ...]) -> None:
        super().__init__(
            f"workload {workload_id!r} is not addressed to this provider {me!r}: "
            f"primary is {primary!r}, standbys are {list(standbys)!r}"
        )
        self.workload_id = workload_id
        self.me = me


class NodeError(StandbyError):
    """The host misused a :class:`~standby.node.StandbyNode` (not running, unknown workload)."""
