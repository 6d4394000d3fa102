"""What the node tells its host: log lines, events and counters, made in one place.

Every part of the node reports through one :class:`Observer`: each method
here turns one fact (a claim published, a container stopped, a save failed)
into its counter, its log line (stdlib logger ``standby.node``, with
``workload_id``, ``role`` and ``node`` in ``extra``) and its
:data:`~standby.node.NodeEvent`, in that fact's order. The hook never
stops the node: an exception it raises is counted and logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from ..core._effects import (
    CannotStart,
    Dropped,
    DropReason,
    ElectionEffect,
    PhaseChanged,
    PrimaryChanged,
    QuorumShortfall,
    SlotRemoved,
    StateChanged,
)
from ..core._models import PromotionAnnouncement, PromotionClaim
from ..protocols._contracts import TransportDrop
from ._events import (
    AnnouncementPublished,
    ClaimCompared,
    ClaimPublished,
    ClockJumped,
    ContainerExited,
    ContainerStarted,
    ContainerStarting,
    ContainerStopped,
    HeartbeatPublished,
    InputDropped,
    LifecycleChanged,
    NodeEvent,
    OperationFailed,
    PrimaryFollowed,
    PromotedHere,
    QuorumMissed,
    Reconciled,
    RevocationPublished,
    SlotPhaseChanged,
    SlotsNotPersisted,
    StandbyGivenUp,
    SteppedDown,
    SubscriptionLost,
    WorkloadCannotStart,
)
from ._types import TERMINAL

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
        self.logger.log(
            level,
            message,
            *args,
            extra={"workload_id": workload_id or "-", "role": role, "node": self.me},
            exc_info=exc_info,
        )

    def emit(self, event: NodeEvent) -> None:
        """Hand ``event`` to the host's hook (a hook that raises is counted and logged)."""
        hook = self.on_event
        if hook is None:
            return
        try:
            hook(event)
        except Exception as exc:
            self.count("event_hook_errors")
            self.log(logging.WARNING, "event hook raised on %r", event, exc_info=exc)

    # -- the node as a whole ------------------------------------------------

    def failed(
        self,
        operation: str,
        exc: BaseException | str,
        *,
        workload_id: str | None = None,
        role: str = "node",
    ) -> None:
        """An adapter call or a step of the node failed (it is retried or given up)."""
        self.count(f"{operation}_errors")
        text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        self.log(
            logging.WARNING, "%s failed: %s", operation, text, workload_id=workload_id, role=role
        )
        self.emit(OperationFailed(self.clock(), operation, workload_id, text))

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

    def reconciled(
        self, now: float, workload_id: str, action: str, epoch: int, token: int, reason: str
    ) -> None:
        """What a restart did with a workload it found (adopted, stopped, fenced, abandoned)."""
        if action == "adopted":
            self.count("adopted")
        self.count(f"reconcile_{action}")
        self.log(
            logging.WARNING if action != "adopted" else logging.INFO,
            "after restart: %s (epoch %d, token %d): %s",
            action,
            epoch,
            token,
            reason,
            workload_id=workload_id,
            role="node",
        )
        self.emit(Reconciled(now, workload_id, action, epoch, token, reason))

    def gave_up(
        self, now: float, workload_id: str, epoch: int, token: int, until: float, reason: str
    ) -> None:
        """This node no longer stands by for a workload (a promotion it gave up)."""
        self.count("standbys_given_up")
        self.log(
            logging.ERROR,
            "no longer stands by (until the reservation ends at %.3f): %s; "
            "the workload has one standby fewer, reserve another",
            until,
            reason,
            workload_id=workload_id,
            role="standby",
        )
        self.emit(StandbyGivenUp(now, workload_id, epoch, token, until, reason))

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

    # -- the standby side ----------------------------------------------------

    def slot_removed(self, effect: SlotRemoved) -> None:
        self.log(
            logging.INFO,
            "slot removed (%s)",
            effect.reason,
            workload_id=effect.workload_id,
            role="standby",
        )

    def primary_followed(self, now: float, effect: PrimaryChanged) -> None:
        self.count("primary_changed")
        self.log(
            logging.INFO,
            "%s took over from %s in epoch %d",
            effect.new_primary,
            effect.old_primary,
            effect.epoch,
            workload_id=effect.workload_id,
            role="standby",
        )
        self.emit(
            PrimaryFollowed(
                now, effect.workload_id, effect.old_primary, effect.new_primary, effect.epoch
            )
        )

    def input_dropped(self, now: float, effect: Dropped) -> None:
        self.count("dropped")
        self.log(
            logging.INFO,
            "dropped input from %s: %s (%s)",
            effect.signer,
            effect.reason.value,
            effect.detail,
            workload_id=effect.workload_id,
            role="standby",
        )
        self.emit(
            InputDropped(now, effect.workload_id, effect.signer, effect.reason, effect.detail)
        )

    def cannot_start(self, now: float, effect: CannotStart) -> None:
        self.count("workloads_cannot_start")
        self.log(
            logging.ERROR,
            "cannot start the workload: %d spawns failed (last: %s); slot given up",
            effect.attempts,
            effect.error or "no reason given",
            workload_id=effect.workload_id,
            role="standby",
        )
        self.emit(WorkloadCannotStart(now, effect.workload_id, effect.attempts, effect.error))

    def quorum_missed(self, now: float, effect: QuorumShortfall) -> None:
        self.count("quorum_shortfall")
        self.log(
            logging.WARNING,
            "%s reached %d of %d relays; retrying later",
            effect.stage,
            effect.answered,
            effect.needed,
            workload_id=",".join(effect.workload_ids) or None,
            role="standby",
        )
        self.emit(
            QuorumMissed(now, effect.stage, effect.workload_ids, effect.answered, effect.needed)
        )

    def phase_changed(self, now: float, effect: PhaseChanged) -> None:
        old, new = effect.old, effect.new
        self.log(
            logging.INFO,
            "slot phase %s -> %s%s",
            "-" if old is None else old.value,
            "-" if new is None else new.value,
            " (lease revoked)" if effect.revoked else "",
            workload_id=effect.workload_id,
            role="standby",
        )
        self.emit(SlotPhaseChanged(now, effect.workload_id, old, new, effect.revoked))

    def transport_dropped(self, drop: TransportDrop) -> None:
        """The transport dropped an incoming message (``ReportsDrops``)."""
        self.count("transport_drops")
        self.count(f"transport_drops.{drop.reason.name.lower()}")
        self.log(
            logging.WARNING if drop.reason in _FORGED else logging.INFO,
            "transport dropped a message from %s on %s: %s (%s)",
            drop.signer,
            drop.relay,
            drop.reason.value,
            drop.detail,
            workload_id=drop.workload_id,
            role="standby",
        )
        self.emit(
            InputDropped(
                self.clock(),
                drop.workload_id,
                drop.signer,
                drop.reason,
                f"{drop.detail} (dropped by the transport, relay {drop.relay})",
            )
        )

    def claim_published(
        self, now: float, claim: PromotionClaim, acked: frozenset[str], *, withdrawn: bool
    ) -> None:
        self.emit(
            ClaimPublished(
                now, claim.workload_id, claim.epoch, claim.fencing_token, withdrawn, acked
            )
        )
        if not withdrawn:
            self.log(
                logging.INFO,
                "claimed epoch %d (token %d): %d relays acknowledged",
                claim.epoch,
                claim.fencing_token,
                len(acked),
                workload_id=claim.workload_id,
                role="standby",
            )

    def claim_compared(
        self, now: float, claim: PromotionClaim, won: bool, holder: PromotionClaim | None
    ) -> None:
        self.emit(
            ClaimCompared(
                now,
                claim.workload_id,
                claim.epoch,
                claim.fencing_token,
                won,
                None if holder is None else holder.claimant,
            )
        )

    def spawning(self, now: float, workload_id: str, epoch: int, token: int) -> None:
        self.emit(ContainerStarting(now, workload_id, token, promotion=True))
        self.log(
            logging.INFO,
            "spawning as new primary of epoch %d with fencing token %d",
            epoch,
            token,
            workload_id=workload_id,
            role="standby",
        )

    def promoted(self, now: float, workload_id: str, epoch: int, token: int) -> None:
        self.count("promotions")
        self.log(
            logging.WARNING,
            "promoted: now primary of epoch %d with fencing token %d",
            epoch,
            token,
            workload_id=workload_id,
            role="primary",
        )
        self.emit(PromotedHere(now, workload_id, epoch, token))

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

    def announced(self, announcement: PromotionAnnouncement, acked: frozenset[str]) -> None:
        self.log(
            logging.INFO,
            "announced epoch %s: %d relays acknowledged",
            announcement.epoch,
            len(acked),
            workload_id=announcement.workload_id,
            role="primary",
        )
        self.emit(
            AnnouncementPublished(
                self.clock(),
                announcement.workload_id,
                announcement.epoch,
                announcement.fencing_token,
                acked,
            )
        )

    # -- containers (either side) -------------------------------------------

    def container_starting(self, now: float, workload_id: str, token: int, attempt: int) -> None:
        self.emit(ContainerStarting(now, workload_id, token, promotion=False))
        self.log(
            logging.INFO,
            "starting container (attempt %d, token %d)",
            attempt,
            token,
            workload_id=workload_id,
            role="primary",
        )

    def container_started(
        self,
        now: float,
        workload_id: str,
        token: int,
        *,
        promotion: bool,
        error: str | None,
        took: float,
    ) -> None:
        self.emit(ContainerStarted(now, workload_id, token, promotion, error is None, error, took))

    def container_stopped(self, workload_id: str, token: int, reason: str, role: str) -> None:
        self.log(logging.INFO, "container stopped: %s", reason, workload_id=workload_id, role=role)
        self.emit(ContainerStopped(self.clock(), workload_id, token, reason))

    def container_exited(self, now: float, workload_id: str, status: str) -> None:
        self.count("container_exits")
        self.log(
            logging.WARNING,
            "container is %s although nobody stopped it",
            status,
            workload_id=workload_id,
            role="primary",
        )
        self.emit(ContainerExited(now, workload_id, status))

    # -- the primary side ----------------------------------------------------

    def lifecycle_changed(self, now: float, workload_id: str, effect: StateChanged) -> None:
        self.count(f"lifecycle_{effect.new.value}")
        self.log(
            logging.WARNING if effect.new in TERMINAL else logging.INFO,
            "%s -> %s: %s",
            effect.old.value,
            effect.new.value,
            effect.reason,
            workload_id=workload_id,
            role="primary",
        )
        self.emit(LifecycleChanged(now, workload_id, effect.old, effect.new, effect.reason))

    def stepped_down(
        self, now: float, workload_id: str, epoch: int, later: int, by: str, kind: str
    ) -> None:
        """A primary saw its standby's later epoch and fences at once (FM25)."""
        self.count("stepped_down")
        self.log(
            logging.WARNING,
            "stepping down from epoch %d: standby %s published a %s of the later epoch %d",
            epoch,
            by,
            kind,
            later,
            workload_id=workload_id,
            role="primary",
        )
        self.emit(SteppedDown(now, workload_id, epoch, later, by, kind))

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

    def revocation_published(
        self, now: float, workload_id: str, epoch: int, acked: frozenset[str]
    ) -> None:
        self.log(
            logging.INFO,
            "revocation published: %d relays acknowledged",
            len(acked),
            workload_id=workload_id,
            role="primary",
        )
        self.emit(RevocationPublished(now, workload_id, epoch, acked))

    def clock_jumped(self, now: float, wall_step: float, mono_step: float) -> None:
        self.count("clock_jumps")
        self.log(
            logging.WARNING,
            "wall clock moved %.3f s while the monotonic clock moved %.3f s: "
            "treating it as a pause",
            wall_step,
            mono_step,
        )
        self.emit(ClockJumped(now, wall_step, mono_step))

    def heartbeat(
        self, now: float, timestamp: float, acked: frozenset[str], workloads: int
    ) -> None:
        self.count("heartbeats")
        self.emit(HeartbeatPublished(now, timestamp, acked, workloads))
        self.log(
            logging.DEBUG,
            "heartbeat %.3f acknowledged by %d relays",
            timestamp,
            len(acked),
            role="primary",
        )

    # -- subscriptions and the store -------------------------------------------

    def subscription_lost(
        self, operation: str, exc: BaseException, failures: int, retry_in: float
    ) -> None:
        """A failed or refused subscription (FM20): warned about, counted, reported."""
        self.failed(operation, exc)
        text = f"{type(exc).__name__}: {exc}"
        self.emit(SubscriptionLost(self.clock(), text, failures, retry_in))

    def save_failed(self, slots: int, exc: BaseException) -> None:
        self.count("store_errors")
        self.log(logging.ERROR, "saving %d slots failed: %s", slots, exc, exc_info=exc)
        self.emit(OperationFailed(self.clock(), "save", None, str(exc)))

    def withheld(self, workload_ids: tuple[str, ...]) -> None:
        """Slots that hold a secret and were newly kept out of the store."""
        self.count("slots_not_persisted", len(workload_ids))
        for workload_id in workload_ids:
            self.log(
                logging.WARNING,
                "slot holds a secret and is kept in memory only: it will not survive a restart",
                workload_id=workload_id,
                role="standby",
            )
        self.emit(SlotsNotPersisted(self.clock(), workload_ids))
