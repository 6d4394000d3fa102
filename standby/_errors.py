"""Exception hierarchy of the core, the node, the protocols' contracts and the adapters.

Every error the library raises on purpose derives from :class:`StandbyError`.
Errors that mean "the host passed something invalid" also derive from
:class:`ValueError`, so generic input-validation code keeps working.
"""

from __future__ import annotations

__all__ = [
    "AdapterError",
    "IdentityError",
    "InvalidSlot",
    "NodeError",
    "NotAddressedError",
    "RuntimeFailure",
    "SpawnError",
    "StandbyError",
    "StoreError",
    "StoreQuarantined",
    "TopologyError",
    "TransportError",
    "UnsafeTiming",
    "WireError",
]


class StandbyError(Exception):
    """Base class of every error raised by ``standby``."""


class UnsafeTiming(StandbyError, ValueError):
    """A :class:`~standby.Timing` breaks one or more of the safety rules.

    Every broken rule is reported at once: ``violations`` holds ``(rule,
    detail)`` for each, ``rules`` their names (for example ``"silence >= lease
    + fence_grace + max_clock_skew"``), and the message names each rule with
    its numbers. ``rule`` and ``detail`` are those of the first one.
    """

    def __init__(self, rule: str, detail: str, *more: tuple[str, str]) -> None:
        broken = ((rule, detail), *more)
        parts = [f"rule `{name}` is broken: {numbers}" for name, numbers in broken]
        if len(parts) == 1:
            message = f"unsafe timing: {parts[0]}"
        else:
            message = f"unsafe timing: {len(parts)} rules are broken: " + "; ".join(parts)
        super().__init__(message)
        self.rule = rule
        self.detail = detail
        self.violations: tuple[tuple[str, str], ...] = broken
        self.rules: tuple[str, ...] = tuple(name for name, _ in broken)


class TopologyError(StandbyError, ValueError):
    """A primary/standby topology is malformed (duplicates, empty identity, ...)."""


class InvalidSlot(StandbyError, ValueError):
    """A :class:`~standby.StandbySlot` failed its construction-time validation."""


class WireError(StandbyError, ValueError):
    """A message body could not be decoded (or encoded).

    ``path`` is the JSON path of the offending field (``"$"`` for the body as
    a whole); it is also part of the message.
    """

    def __init__(self, message: str, *, path: str = "$") -> None:
        super().__init__(f"{message} @ {path}")
        self.path = path
        self.reason = message


class StoreError(StandbyError):
    """The slot store could not be read or written."""


class StoreQuarantined(StoreError):
    """The store moved unreadable data aside and refuses to start until the loss is accepted.

    Raised by every load (and save) of a :class:`~standby.JsonFileStore` whose
    file was quarantined, on every start, until the host accepts the loss with
    :meth:`~standby.JsonFileStore.accept_loss` or ``python -m standby store
    accept-loss PATH`` (failure mode 23). ``path`` is the store's file,
    ``quarantined`` where its content was moved, ``marker`` the file that
    records the quarantine, and ``lost`` a one-line account of what the
    quarantined data held as far as it could be read.
    """

    def __init__(
        self, message: str, *, path: str, quarantined: str, marker: str, lost: str
    ) -> None:
        super().__init__(message)
        self.path = path
        self.quarantined = quarantined
        self.marker = marker
        self.lost = lost


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
