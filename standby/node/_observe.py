"""What the node tells its host: log lines, events and counters, made in one place.

Every part of the node reports through one :class:`Observer`. An event
(:data:`~standby.node.NodeEvent`) describes itself, so :meth:`Observer.report`
turns any of them into its counters, its log line (stdlib logger
``standby.node``, with ``workload_id``, ``role`` and ``node`` in ``extra``)
and the host's hook, in that order. The few facts that are no event (the
node started, a slot reserved) have a method each. The hook never stops the
node: an exception it raises is counted and logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from ..core._effects import (
    DropReason,
    ElectionEffect,
    SlotRemoved,
)
from ..protocols._contracts import TransportDrop
from ._eventlog import EventLog
from ._events import (
    InputDropped,
    NodeEvent,
    OperationFailed,
)

__all__ = ["LOGGER_NAME", "Observer"]

LOGGER_NAME = "standby.node"

_FORGED = (DropReason.BAD_SIGNATURE, DropReason.UNEXPECTED_AUTHOR)


class Observer:
    """Counters, log lines and events of one node (see the module docstring)."""

    def __init__(
        self,
        me: str,
        *,
        clock: Callable[[], float],
        logger: logging.Logger | None,
        on_event: Callable[[NodeEvent], object] | None,
    ) -> None:
        self.me = me
        self.clock = clock
        self.logger = logger if logger is not None else logging.getLogger(LOGGER_NAME)
        self.on_event = on_event
        self.counters: dict[str, int] = {}
        #: Where every event is also written as a JSON line (``StandbyNode(event_log=...)``).
        self.event_log: EventLog | None = None

    # -- the three outlets -------------------------------------------------

    def count(self, name: str, amount: int = 1) -> None:
        """Add ``amount`` to counter ``name``."""
        self.counters[name] = self.counters.get(name, 0) + amount

    def log(
        self,
        level: int,
        message: str,
        *args: object,
        workload_id: str | None = None,
        role: str = "node",
        exc_info: BaseException | None = None,
    ) -> None:
        """One log line, tagged with the workload, the role and this node."""
        if not self.logger.isEnabledFor(level):  # nothing to build for a line nobody keeps
            return
        self.logger.log(
            level,
            message,
            *args,
            extra={"workload_id": workload_id or "-", "role": role, "node": self.me},
            exc_info=exc_info,
        )

    def emit(self, event: NodeEvent) -> None:
        """Write ``event`` to the event log and hand it to the host's hook.

        A hook that raises is counted and logged, and so is a line the event
        log cannot write (:meth:`event_log_failed`).
        """
        if self.event_log is not None:
            self.event_log.write(event)
        hook = self.on_event
        if hook is None:
            return
        try:
            hook(event)
        except Exception as exc:
            self.count("event_hook_errors")
            self.log(logging.WARNING, "event hook raised on %r", event, exc_info=exc)

    def event_log_failed(self, exc: BaseException) -> None:
        """A line of the event log could not be written: counted, logged, never fatal.

        The first failure is a warning, later ones debug lines (a full disk
        would otherwise log once per event).
        """
        self.count("event_log_errors")
        first = self.counters["event_log_errors"] == 1
        self.log(
            logging.WARNING if first else logging.DEBUG,
            "event log %s: cannot write (%s: %s)%s",
            self.event_log,
            type(exc).__name__,
            exc,
            "; counting further failures in event_log_errors" if first else "",
        )

    # -- events ------------------------------------------------------------

    def report(
        self,
        event: NodeEvent,
        *,
        role: str | None = None,
        exc_info: BaseException | None = None,
    ) -> None:
        """Count ``event``, log it and hand it to the host, as the event describes itself."""
        for name, amount in event.counts():
            self.count(name, amount)
        level = event.log_level()
        if level is not None and self.logger.isEnabledFor(level):
            fmt, args = event.message()
            self.log(
                level,
                fmt,
                *args,
                workload_id=event.subject(),
                role=event.log_role() if role is None else role,
                exc_info=exc_info,
            )
        self.emit(event)

    def failed(
        self,
        operation: str,
        exc: BaseException | str,
        *,
        workload_id: str | None = None,
        role: str = "node",
    ) -> None:
        """An adapter call or a step of the node failed (it is retried or given up)."""
        text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        self.report(OperationFailed(self.clock(), operation, workload_id, text), role=role)

    def transport_dropped(self, drop: TransportDrop) -> None:
        """The transport dropped an incoming message (``ReportsDrops``)."""
        detail = f"{drop.detail} (dropped by the transport, relay {drop.relay})"
        self.report(
            InputDropped(
                self.clock(), drop.workload_id, drop.signer, drop.reason, detail, drop.relay
            )
        )

    # -- the node as a whole ------------------------------------------------

    def machine_refused(
        self, machine: str, exc: BaseException, workload_id: str | None = None
    ) -> None:
        """The election or a lifecycle raised on an input (a bug; the input is dropped)."""
        self.count("machine_errors")
        self.log(
            logging.ERROR,
            "%s machine refused an input",
            machine,
            workload_id=workload_id,
            role="node" if workload_id is None else "primary",
            exc_info=exc,
        )

    def started(self, slots: int) -> None:
        self.log(logging.INFO, "node started with %d slots", slots)

    def stopped(self) -> None:
        self.log(logging.INFO, "node stopped")

    def restored(self, slots: int, effects: Sequence[ElectionEffect]) -> None:
        """The slots were restored from the store; some may have been dropped."""
        self.count("slots_restored", slots)
        for effect in effects:
            if isinstance(effect, SlotRemoved):
                self.log(
                    logging.INFO,
                    "dropped %s slot on restore",
                    effect.reason,
                    workload_id=effect.workload_id,
                    role="standby",
                )

    def reaccepted(self, workload_id: str, role: str, what: str, *args: object) -> None:
        """The host sent a request again for a workload this node already holds."""
        self.log(logging.INFO, "re-accepted: " + what, *args, workload_id=workload_id, role=role)

    def reserved(self, workload_id: str, index: int, count: int, primary: str) -> None:
        self.log(
            logging.INFO,
            "reserved standby slot %d of %d for primary %s",
            index,
            count,
            primary,
            workload_id=workload_id,
            role="standby",
        )

    def accepted_primary(self, workload_id: str, standbys: int) -> None:
        self.log(
            logging.INFO,
            "accepted as primary with %d standbys",
            standbys,
            workload_id=workload_id,
            role="primary",
        )

    def handing_over(self, workload_id: str, reason: str) -> None:
        self.log(logging.INFO, "handing over (%s)", reason, workload_id=workload_id, role="primary")

    def stopping(self, workload_id: str, reason: str) -> None:
        self.log(
            logging.INFO, "stopping for good (%s)", reason, workload_id=workload_id, role="primary"
        )

    def drained(self, taken_over: int, not_handed_over: int) -> None:
        level = logging.WARNING if not_handed_over else logging.INFO
        self.log(
            level,
            "drain finished: %d taken over by a standby, %d not handed over",
            taken_over,
            not_handed_over,
        )

    # -- the standby side ----------------------------------------------------

    def slot_removed(self, effect: SlotRemoved) -> None:
        self.log(
            logging.INFO,
            "slot removed (%s)",
            effect.reason,
            workload_id=effect.workload_id,
            role="standby",
        )

    def orphan(self, workload_id: str, token: int, reason: str) -> None:
        self.count("orphans")
        self.log(
            logging.WARNING,
            "stopping orphan container (token %d): %s",
            token,
            reason,
            workload_id=workload_id,
            role="standby",
        )

    # -- the primary side ----------------------------------------------------

    def takeover_ignored(self, workload_id: str, epoch: int, by: str, kind: str) -> None:
        """A claim or announcement that does not supersede the primary (not later, a stranger)."""
        self.count("takeovers_ignored")
        self.log(
            logging.DEBUG,
            "ignored a %s of epoch %d by %s: not a later epoch by one of the standbys",
            kind,
            epoch,
            by,
            workload_id=workload_id,
            role="primary",
        )

    def retired(self, workload_id: str, state: str) -> None:
        self.log(
            logging.INFO,
            "finished as primary (%s)",
            state,
            workload_id=workload_id,
            role="primary",
        )
