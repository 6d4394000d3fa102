"""What the simulation learns as it runs: stored messages and the nodes' own events.

The :class:`Observer` sits between the simulated world and the checkers: it
notes which stored messages are genuine (a heartbeat of its own signer, a
claim, a revocation by the primary it names), turns each node event into a
timeline line, and records promotions with their failover latency, claims,
follows, revocations and the inputs the cores dropped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ...core._models import (
    TOKEN_EPOCH_STRIDE,
    Heartbeat,
    LeaseRevocation,
    Message,
    PromotionAnnouncement,
    PromotionClaim,
)
from ._loop import Process
from ._names import PRIMARY
from ._report import Promotion

if TYPE_CHECKING:
    from ._simulation import Simulation
    from ._world import Host

__all__ = ["Observer"]

_INF = math.inf


class Observer:
    """Feeds a simulation's checkers from its relays and its nodes.

    ``holder`` and ``epoch`` are the provider promoted into the newest epoch
    so far (the primary at boot); ``published`` holds the first genuine
    messages stored, for replays; ``drops`` counts the inputs the cores
    dropped, by reason; ``listeners`` are called with ``(provider, event)``
    after each node event has been recorded.
    """

    def __init__(self, sim: Simulation, hosts: Mapping[str, Host]) -> None:
        self.sim = sim
        #: ``sim.now``, read straight from the loop (on every store and event).
        self._now = sim.loop.time
        self.hosts = hosts
        self.drops: dict[str, int] = {}
        self.epoch = 0
        self.holder = PRIMARY
        self.published: list[tuple[Message, str]] = []
        self.listeners: list[Callable[[str, Any], None]] = []

    def on_store(self, relay: str, signer: str, message: Message) -> None:
        """A relay stored ``message`` of ``signer``: note what is genuine."""
        sim = self.sim
        if signer not in self.hosts:
            return
        checks = sim.checks
        now = self._now()
        kind = type(message)
        if kind is Heartbeat:
            if message.provider == signer:  # type: ignore[union-attr]
                checks.hb_stored[signer] = now
                stamped = message.timestamp  # type: ignore[union-attr]
                sim.faults_seen.heartbeat(signer, stamped, now)
        elif kind is LeaseRevocation:
            assert isinstance(message, LeaseRevocation)
            if message.primary == signer:
                checks.genuine_revocations.setdefault(
                    (message.workload_id, message.epoch, signer), now
                )
        elif kind is PromotionClaim:
            assert isinstance(message, PromotionClaim)
            checks.genuine_promoters.setdefault((message.workload_id, message.epoch, signer), now)
        elif kind is PromotionAnnouncement:
            assert isinstance(message, PromotionAnnouncement)
            if message.epoch is not None:
                checks.genuine_promoters.setdefault(
                    (message.workload_id, message.epoch, signer), now
                )
        if len(self.published) < 4096:
            self.published.append((message, signer))

    def on_event(self, host: Host, process: Process, event: Any) -> None:
        """``host``'s node reported ``event``: put it on the timeline, feed the checkers."""
        sim = self.sim
        line = event.timeline(sim.base)
        if line is not None:
            sim.record_line(host.name, line)
        check = _CHECKS.get(type(event).__name__)
        if check is not None:  # most events are only lines on the timeline
            check(self, host, event)
        if self.listeners:
            for listener in tuple(self.listeners):
                listener(host.name, event)

    # What the checkers hear of each kind of node event (see _CHECKS).

    def _promoted_here(self, host: Host, event: Any) -> None:
        if event.workload_id == self.sim.workload_id:
            self._promoted(host, event.epoch, event.fencing_token)

    def _claim_published(self, host: Host, event: Any) -> None:
        if not event.withdrawn and event.workload_id == self.sim.workload_id:
            index = event.fencing_token % TOKEN_EPOCH_STRIDE
            self.sim.checks.claims.append((self._now(), host.name, event.epoch, index))

    def _claim_compared(self, host: Host, event: Any) -> None:
        wid = event.workload_id
        if wid == self.sim.workload_id:
            checks = self.sim.checks
            now = self._now()
            index = event.fencing_token % TOKEN_EPOCH_STRIDE
            checks.claims.append((now, host.name, event.epoch, index))
            if event.won:
                checks.genuine_promoters.setdefault((wid, event.epoch, host.name), now)

    def _primary_followed(self, host: Host, event: Any) -> None:
        wid = event.workload_id
        if wid is not None:
            self.sim.checks.follows.append(
                (self._now(), host.name, wid, event.epoch, event.new_primary)
            )

    def _slot_phase_changed(self, host: Host, event: Any) -> None:
        wid = event.workload_id
        if event.revoked and wid is not None:
            node = host.node
            slot = None if node is None else node.election.slots.get(wid)
            if slot is not None:
                self.sim.checks.revoked.append(
                    (self._now(), host.name, wid, slot.epoch, slot.primary)
                )

    def _input_dropped(self, host: Host, event: Any) -> None:
        reason = event.reason.value
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def _promoted(self, host: Host, epoch: int, token: int) -> None:
        now = self._now()
        previous = self.holder
        checks = self.sim.checks
        anchor = checks.hb_stored.get(previous, -_INF)
        before = self.hosts.get(previous)
        if before is not None:
            anchor = max(anchor, before.promoted_at)
        latency = None if anchor == -_INF else now - anchor
        host.promoted_at = now
        if epoch > self.epoch:
            self.epoch = epoch
            self.holder = host.name
        checks.promoted(now, Promotion(now, host.name, epoch, token, previous, latency))


#: The node events the checkers hear of, by the name of their type.
_CHECKS: dict[str, Callable[[Observer, Host, Any], None]] = {
    "PromotedHere": Observer._promoted_here,
    "ClaimPublished": Observer._claim_published,
    "ClaimCompared": Observer._claim_compared,
    "PrimaryFollowed": Observer._primary_followed,
    "SlotPhaseChanged": Observer._slot_phase_changed,
    "InputDropped": Observer._input_dropped,
}
