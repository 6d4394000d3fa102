"""Timeline lines for the node's events (:data:`~standby.node.NodeEvent`)."""

from __future__ import annotations

from typing import Any

from ...adapters.memory import RuntimeRecord
from ...core._models import TOKEN_EPOCH_STRIDE
from ...node import (
    AnnouncementPublished,
    ClaimCompared,
    ClaimPublished,
    ContainerExited,
    ContainerStarted,
    ContainerStarting,
    ContainerStopped,
    HeartbeatPublished,
    InputDropped,
    LifecycleChanged,
    OperationFailed,
    PrimaryFollowed,
    PromotedHere,
    QuorumMissed,
    RevocationPublished,
    SlotPhaseChanged,
    StandbyGivenUp,
    SteppedDown,
    WorkloadCannotStart,
)

__all__ = ["describe_event", "runtime_lines"]

Payload = tuple[str, tuple[Any, ...]]


def describe_event(event: Any, base: float) -> Payload | None:
    """A cheap ``(format, args)`` line for ``event`` (``None``: not worth a line)."""
    kind = type(event)
    if kind is HeartbeatPublished:
        return (
            "heartbeat stamped %.3f: %d relays acknowledged",
            (event.timestamp - base, len(event.acked)),
        )
    if kind is SlotPhaseChanged:
        old = "-" if event.old is None else event.old.value
        new = "-" if event.new is None else event.new.value
        return ("slot phase %s -> %s%s", (old, new, " (lease revoked)" if event.revoked else ""))
    if kind is ClaimPublished:
        if event.withdrawn:
            return (
                "withdraw claim on epoch %d: %d relays acknowledged",
                (event.epoch, len(event.acked)),
            )
        return (
            "publish claim on epoch %d (token %d): %d relays acknowledged",
            (event.epoch, event.fencing_token, len(event.acked)),
        )
    if kind is ClaimCompared:
        outcome = "won" if event.won else f"lost to {event.holder}"
        return (
            "compare-and-set claim on epoch %d (token %d): %s",
            (event.epoch, event.fencing_token, outcome),
        )
    if kind is ContainerStarting:
        verb = "spawn as new primary" if event.promotion else "start container"
        return ("%s with token %d", (verb, event.fencing_token))
    if kind is ContainerStarted:
        if event.ok:
            return None
        verb = "spawn" if event.promotion else "container start"
        return ("%s failed (token %d): %s", (verb, event.fencing_token, event.error or "?"))
    if kind is ContainerStopped:
        return ("stopped container (token %d): %s", (event.fencing_token, event.reason))
    if kind is ContainerExited:
        return ("container %s although nobody stopped it", (event.status,))
    if kind is WorkloadCannotStart:
        return (
            "gave the workload up: %d spawns failed (last: %s)",
            (event.attempts, event.error or "?"),
        )
    if kind is StandbyGivenUp:
        return ("no longer stands by: %s", (event.reason,))
    if kind is PromotedHere:
        return ("promoted: epoch %d, token %d", (event.epoch, event.fencing_token))
    if kind is AnnouncementPublished:
        return (
            "announced new primary of epoch %s: %d relays acknowledged",
            (event.epoch, len(event.acked)),
        )
    if kind is RevocationPublished:
        return (
            "published revocation of epoch %d: %d relays acknowledged",
            (event.epoch, len(event.acked)),
        )
    if kind is PrimaryFollowed:
        return (
            "follow %s as primary of epoch %d (was %s)",
            (event.new_primary, event.epoch, event.old_primary),
        )
    if kind is InputDropped:
        return ("dropped (%s) from %s: %s", (event.reason.value, event.signer, event.detail))
    if kind is QuorumMissed:
        return (
            "quorum shortfall at %s: %d of %d relays",
            (event.stage, event.answered, event.needed),
        )
    if kind is SteppedDown:
        return (
            "stepping down from epoch %d: %s published a %s of epoch %d",
            (event.epoch, event.by, event.kind, event.later_epoch),
        )
    if kind is LifecycleChanged:
        return ("lifecycle %s -> %s (%s)", (event.old.value, event.new.value, event.reason))
    if kind is OperationFailed:
        if event.operation in ("spawn", "start"):
            return None  # ContainerStarted says it, with the token
        return ("%s failed: %s", (event.operation, event.error))
    return None


def runtime_lines(
    record: RuntimeRecord, workload_id: str, now: float
) -> list[tuple[float, str, Payload]]:
    """Timeline lines for the container runs of ``workload_id`` up to ``now``."""
    lines: list[tuple[float, str, Payload]] = []
    for event in record.events:
        if event.workload_id != workload_id or event.at > now:
            continue
        token = event.fencing_token
        if event.kind == "started":
            payload: Payload = (
                "container running (epoch %d, token %d)",
                (token // TOKEN_EPOCH_STRIDE, token),
            )
        elif event.kind in ("stopped", "exited", "expired"):
            detail = f" ({event.detail})" if event.detail else ""
            payload = ("container gone (token %d)%s", (token, detail))
        else:
            continue
        lines.append((event.at, event.host, payload))
    return lines
