"""What the network tells the election machine, slot by slot.

:class:`ElectionInputs` holds the rules for each authenticated message (a
heartbeat, a revocation, a peer's claim, an announcement) and for each
slot's share of a claims read: which inputs count, which are dropped (and
why), and which step they move a slot to. The public calls of
:class:`~standby.StandbyElection` feed them.
"""

from __future__ import annotations

from typing import Any, TypeVar

import attrs

from ._effects import DropReason, ElectionEffect
from ._election_steps import ElectionSteps
from ._helpers import primary_is_silent, silence_baseline
from ._models import Envelope, Heartbeat, LeaseRevocation, PromotionAnnouncement, PromotionClaim
from ._phase import Phase
from ._slot_entry import PRE_SPAWN, Entry

__all__ = ["CLAIMS_READ", "HEARTBEAT_READ", "MESSAGES", "ElectionInputs"]

SpecT = TypeVar("SpecT")

#: Every kind of message a subscription may deliver.
MESSAGES: tuple[type[Any], ...] = (
    Heartbeat,
    LeaseRevocation,
    PromotionClaim,
    PromotionAnnouncement,
)
#: The messages a heartbeat read (confirming a silence) takes into account.
HEARTBEAT_READ: tuple[type[Any], ...] = (Heartbeat, LeaseRevocation)
#: The messages a claims read takes into account.
CLAIMS_READ: tuple[type[Any], ...] = (PromotionAnnouncement, PromotionClaim)


class ElectionInputs(ElectionSteps[SpecT]):
    """The election machine's rules for what it hears."""

    def _receive(
        self,
        now: float,
        envelope: Envelope[Any],
        accepted: tuple[type[Any], ...],
        effects: list[ElectionEffect],
    ) -> bool:
        """Apply one message if its kind is in ``accepted``; whether it was."""
        message = envelope.message
        if not isinstance(message, accepted):
            return False
        signer = envelope.signer
        if isinstance(message, Heartbeat):
            self._heartbeat(now, signer, message.timestamp, effects)
        elif isinstance(message, LeaseRevocation):
            self._revocation(now, signer, message, effects)
        elif isinstance(message, PromotionClaim):
            self._peer_claim(now, signer, message, effects)
        elif isinstance(message, PromotionAnnouncement):
            self._announcement(now, signer, message, effects)
        return True

    def _claims_read(
        self,
        now: float,
        entry: Entry[SpecT],
        phase: Phase,
        count: int,
        effects: list[ElectionEffect],
    ) -> None:
        """One slot's share of a claims read: the per-workload rule of guarantee 2."""
        if self._index.entries.get(entry.slot.workload_id) is not entry or entry.phase is not phase:
            return  # an announcement moved the slot on
        rereading = phase is Phase.REREAD
        if count < self.timing.read_quorum:
            stage = "reread" if rereading else "preread"
            self._claims_read_failed(now, entry, stage, count, effects)
            return
        rival = self._strongest_rival(entry, rereading)
        if rival is not None:
            self._yield_to(now, entry, rival, effects)
            return
        if rereading:
            self._spawn(now, entry, effects)
        elif now >= entry.preread_at + self.timing.claim_timeout:
            self._retry_claim(now, entry, self.timing.retry_interval)
        else:
            self._claim(now, entry, effects)

    def _strongest_rival(self, entry: Entry[SpecT], rereading: bool) -> PromotionClaim | None:
        """The held peer claim this slot must yield to, if any.

        Before claiming (pre-read) any held claim on our target epoch or a later
        one wins. At the settle re-read, a later epoch wins, and on our own epoch
        the lower standby index wins (the tie rule).
        """
        seen = self._claims_seen.get(entry.slot.workload_id)
        if not seen:
            return None
        slot = entry.slot
        target = slot.epoch + 1
        best: tuple[int, int] | None = None
        winner: PromotionClaim | None = None
        for signer, claim in seen.items():
            if claim.withdrawn or claim.epoch < target:
                continue
            index = slot.peer_index(signer)
            if index is None:
                continue
            if rereading and claim.epoch == target and index > slot.standby_index:
                continue
            rank = (-claim.epoch, index)
            if best is None or rank < best:
                best, winner = rank, claim
        return winner

    # ------------------------------------------------------------------
    # Internals: messages
    # ------------------------------------------------------------------

    def _heartbeat(
        self, now: float, signer: str, timestamp: float, effects: list[ElectionEffect]
    ) -> None:
        last = self._index.last_hb.get(signer)
        if last is not None and timestamp <= last:
            return
        busy = self._index.busy.get(signer)
        if busy is None and signer not in self._index.watchers:
            return  # not the primary of any slot here
        if timestamp > now + self.timing.max_clock_skew:
            detail = (
                f"heartbeat stamped {timestamp} is beyond now={now} + "
                f"max_clock_skew={self.timing.max_clock_skew}"
            )
            self._drop("future_dated", DropReason.FUTURE_DATED, None, signer, detail, effects)
            return
        self._index.last_hb[signer] = timestamp
        if busy:
            silence = self.timing.silence
            for workload_id in list(busy):
                entry = self._index.entries[workload_id]
                if entry.revoked or entry.phase not in PRE_SPAWN:
                    continue
                baseline = silence_baseline(entry.origin, timestamp)
                if baseline > entry.confirmed_baseline and not primary_is_silent(
                    now, baseline, silence
                ):
                    self._withdraw(now, entry, effects)
                    self._rearm(entry)

    def _revocation(
        self, now: float, signer: str, revocation: LeaseRevocation, effects: list[ElectionEffect]
    ) -> None:
        workload_id = revocation.workload_id
        entry = self._index.entries.get(workload_id)

        def drop(reason: DropReason, detail: str) -> None:
            counter = f"revocation_{reason.name.lower()}"
            self._drop(counter, reason, workload_id, signer, detail, effects)

        if entry is None:
            drop(DropReason.UNKNOWN_WORKLOAD, "no slot for this workload")
            return
        slot = entry.slot
        if signer != slot.primary:
            drop(DropReason.WRONG_SIGNER, f"signed by {signer!r}, the primary is {slot.primary!r}")
            return
        if revocation.epoch != slot.epoch:
            drop(DropReason.WRONG_EPOCH, f"epoch {revocation.epoch}, the slot is at {slot.epoch}")
            return
        skew = self.timing.max_clock_skew
        if revocation.revoked_at > now + skew:
            drop(
                DropReason.FUTURE_DATED, f"revoked_at={revocation.revoked_at} > now={now} + {skew}"
            )
            return
        if revocation.revoked_at < entry.origin - skew:
            drop(DropReason.STALE, f"revoked_at={revocation.revoked_at} predates the slot")
            return
        if entry.revoked:
            drop(DropReason.DUPLICATE, "already revoked")
            return
        entry.revoked = True
        entry.state_uri = revocation.state_uri
        self._count("revoked")
        if entry.phase in (Phase.WATCHING, Phase.CONFIRMING, Phase.RETRY_WATCH):
            self._backoff(now, entry)

    def _peer_claim(
        self, now: float, signer: str, claim: PromotionClaim, effects: list[ElectionEffect]
    ) -> None:
        if signer == self.me:
            return
        entry = self._index.entries.get(claim.workload_id)
        if entry is None or signer == entry.slot.primary or claim.epoch <= entry.slot.epoch:
            # The current primary's own (old) claim, or one on an epoch the
            # slot is already past (the first primary's claim on epoch 0, say),
            # is no news.
            return
        if entry.slot.peer_index(signer) is None:
            reason, workload_id = DropReason.NOT_A_PEER, claim.workload_id
            detail = "claim from a stranger"
            self._drop("claim_not_a_peer", reason, workload_id, signer, detail, effects)
            return
        if claim.claimant != signer:
            claim = attrs.evolve(claim, claimant=signer)
        seen = self._claims_seen.setdefault(claim.workload_id, {})
        known = seen.get(signer)
        if known is not None and (
            claim.claimed_at < known.claimed_at
            or (claim.claimed_at == known.claimed_at and known.withdrawn)
        ):
            return
        seen[signer] = claim
        deferred = entry.deferred
        if (
            entry.phase is Phase.DEFERRED
            and deferred is not None
            and deferred.claimant == signer
            and claim.withdrawn
            and claim.epoch == deferred.epoch
        ):
            self._deferral_ended(now, entry, effects)

    def _announcement(
        self,
        now: float,
        signer: str,
        announcement: PromotionAnnouncement,
        effects: list[ElectionEffect],
    ) -> None:
        if signer == self.me:
            return
        entry = self._index.entries.get(announcement.workload_id)
        if entry is None:
            return
        slot = entry.slot

        def drop(counter: str | None, reason: DropReason, detail: str) -> None:
            self._drop(counter, reason, slot.workload_id, signer, detail, effects)

        if signer == slot.primary and (
            announcement.epoch is None or announcement.epoch <= slot.epoch
        ):
            # Another copy (one per relay) of the announcement we already followed.
            drop("announcement_duplicate", DropReason.DUPLICATE, "already following")
            return
        if slot.peer_index(signer) is None:
            drop("announcement_not_a_peer", DropReason.NOT_A_PEER, "announcement from a stranger")
            return
        epoch = slot.epoch + 1 if announcement.epoch is None else announcement.epoch
        if epoch <= slot.epoch:
            drop(None, DropReason.STALE, f"announces epoch {epoch}")
            return
        if entry.phase is Phase.SPAWNING:
            detail = f"peer announced epoch {epoch} while this standby is spawning"
            drop("conflict", DropReason.CONFLICT, detail)
            return
        skew = self.timing.max_clock_skew
        origin = min(announcement.promoted_at, now + skew)
        self._follow(now, entry, signer, epoch, origin, effects, announced=True)
