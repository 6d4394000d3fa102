"""Exception hierarchy of the core, the node, the protocols' contracts and the adapters.

Every error the library raises on purpose derives from :class:`StandbyError`.
Errors that mean "the host passed something invalid" also derive from
:class:`ValueError`, so generic input-validation code keeps working.

A node's host surface raises three kinds of :class:`NodeError`, one for each
thing the host can do about it: :class:`RetryLater` (try again later; its
:class:`QuorumUnavailable` says which relays did not answer and why),
:class:`RequestRefused` (refused for good: tell the consumer) and
:class:`NodeMisuse` (a bug in the host's code).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from types import MappingProxyType

if sys.version_info < (3, 11):  # pragma: no cover - the backport anyio depends on
    from exceptiongroup import BaseExceptionGroup

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
    "missing_extra",
    "raise_unwrapped",
    "sole_error",
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


class NodeError(StandbyError):
    """Base of the errors a :class:`~standby.node.StandbyNode`'s host surface raises.

    Catch one of its three kinds to act: :class:`RetryLater` (try again),
    :class:`RequestRefused` (refused for good) or :class:`NodeMisuse` (the
    host called the node wrongly).
    """


class NodeMisuse(NodeError):
    """The host misused the node: it is not running, or the call names nothing it holds.

    A bug in the host's code; retrying the same call will fail the same way.
    """


class RetryLater(NodeError):
    """The node cannot take the request now, but may later: nothing was done; try again."""


class QuorumUnavailable(RetryLater):
    """Too few relays answered for the node to decide safely: nothing was done; try again.

    ``answered`` relays answered out of the ``needed`` quorum; ``reasons``
    maps each relay that did not to why (as the transport reported it).
    """

    def __init__(
        self,
        message: str,
        *,
        answered: int,
        needed: int,
        reasons: Mapping[str, str] | None = None,
    ) -> None:
        reasons = MappingProxyType(dict(reasons or {}))
        detail = "; ".join(f"{relay}: {why}" for relay, why in sorted(reasons.items()))
        super().__init__(
            f"{message} ({answered} of the {needed} relays needed answered"
            + (f"; {detail})" if detail else ")")
        )
        self.answered = answered
        self.needed = needed
        self.reasons: Mapping[str, str] = reasons


class RequestRefused(NodeError):
    """The request is refused for good: the workload was taken over, ended or is not ours.

    Retrying will not help; the host tells the consumer (who may reserve
    another provider). ``workload_id`` names the workload.
    """

    def __init__(self, message: str, *, workload_id: str) -> None:
        super().__init__(message)
        self.workload_id = workload_id


class NotAddressedError(RequestRefused, ValueError):
    """A spawn request names this provider neither as primary nor as a standby."""

    def __init__(self, workload_id: str, me: str, primary: str, standbys: tuple[str, ...]) -> None:
        super().__init__(
            f"workload {workload_id!r} is not addressed to this provider {me!r}: "
            f"primary is {primary!r}, standbys are {list(standbys)!r}",
            workload_id=workload_id,
        )
        self.me = me


class InvalidRequest(StandbyError, ValueError):
    """A spawn request is malformed (a wrong type, a time that is not a number, ...).

    Raised before the node registers anything: a refused request leaves no
    trace in memory or on disk. ``field`` names the offending field.
    """

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(f"invalid spawn request: {message}")
        self.field = field


def missing_extra(module: str, extra: str, exc: ImportError) -> ImportError:
    """The error raised when ``module`` lacks the packages of its optional ``extra``."""
    return ImportError(
        f"{module} needs the optional dependencies of the '{extra}' extra "
        f"(missing: {exc.name}); install them with: pip install 'standby[{extra}]'"
    )


def sole_error(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception inside ``group`` (nested groups opened), or ``None`` for several.

    A task group wraps whatever its tasks raised in an exception group, even
    a single error; the node and the transports raise that single error as
    it is, so a host's ``except QuorumUnavailable`` works around ``async
    with``. Cancellations of sibling tasks count as nothing.
    """
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        else:
            leaves.append(exc)
    return leaves[0] if len(leaves) == 1 else None


def raise_unwrapped(
    group: BaseExceptionGroup[BaseException], current: BaseException | None
) -> None:
    """Raise what ``group`` holds the way a host expects it, from an ``__aexit__``.

    Several errors: the group itself. One error that is ``current`` (the
    exception that left the ``async with`` body): return, so the caller lets
    ``current`` go on as it was. Any other single error: that error, with
    its own cause and context kept.
    """
    sole = sole_error(group)
    if sole is None:
        raise group
    if sole is current:
        return
    context = sole.__context__
    try:
        raise sole
    finally:
        sole.__context__ = context


#: A topology as an error names it: the primary and the ordered standbys.
TopologyNames = tuple[str, tuple[str, ...]]


class WorkloadConflict(RequestRefused):
    """A workload id is already held under another topology (failure mode 32).

    ``requested`` is the topology of the refused request; ``held`` the one
    this node holds the id under (``None`` when it only saw, on the relays,
    ``holders`` outside the request's topology publish about it). Each is
    ``(primary, standbys)``. A consumer must give a new workload a new id.
    """

    def __init__(
        self,
        workload_id: str,
        requested: TopologyNames,
        *,
        held: TopologyNames | None = None,
        holders: tuple[str, ...] = (),
        detail: str = "",
    ) -> None:
        if held is not None:
            what = f"is held here under another topology: {_names(held)}"
        else:
            what = (
                f"is held by another topology: {', '.join(holders)} published claims, "
                "announcements or revocations of it"
            )
        super().__init__(
            f"workload {workload_id!r} {what}{detail}; refused the request with "
            f"{_names(requested)}. The same id names another reservation: give the new "
            "workload a new id (or remove the old reservation first)",
            workload_id=workload_id,
        )
        self.requested = requested
        self.held = held
        self.holders = holders


def _names(topology: TopologyNames) -> str:
    primary, standbys = topology
    return f"primary {primary!r}, standbys {list(standbys)!r}"
