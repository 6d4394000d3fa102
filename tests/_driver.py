"""A hand-driven harness for one StandbyElection: the test plays the relays."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import standby as sb
import standby.core as sbc

T = TypeVar("T")

PRIMARY = "P"
ME = "A"
PEER = "B"
STRANGER = "X"
RELAYS = ("r1", "r2", "r3")
QUORUM = ("r1", "r2")
CREATED = 1_000.0


def make_slot(
    *,
    workload_id: str = "w1",
    primary: str = PRIMARY,
    index: int = 0,
    peers: Sequence[str] = (PEER,),
    created_at: float = CREATED,
    expires_at: float = CREATED + 100_000.0,
    spec: Any = None,
    epoch: int = 0,
) -> sb.StandbySlot[Any]:
    return sb.StandbySlot(
        workload_id=workload_id,
        primary=primary,
        standby_index=index,
        standby_count=len(peers) + 1,
        spec={"image": "app:1"} if spec is None else spec,
        expires_at=expires_at,
        owner="consumer",
        created_at=created_at,
        peers=tuple(peers),
        epoch=epoch,
    )


def env(message: Any, signer: str, at: float, relay: str = "r1") -> sb.Envelope[Any]:
    return sb.Envelope(message, signer, relay, at)


def heartbeat(ts: float, signer: str = PRIMARY) -> sb.Envelope[Any]:
    return env(sb.Heartbeat(provider=signer, timestamp=ts), signer, ts)


def revocation(
    at: float,
    *,
    signer: str = PRIMARY,
    workload_id: str = "w1",
    body_primary: str = PRIMARY,
    epoch: int = 0,
    state_uri: str | None = None,
) -> sb.Envelope[Any]:
    message = sb.LeaseRevocation(
        workload_id=workload_id,
        primary=body_primary,
        standbys=(ME, PEER),
        reason="handover",
        revoked_at=at,
        state_uri=state_uri,
        epoch=epoch,
    )
    return env(message, signer, at)


def claim(
    at: float, *, signer: str = PEER, epoch: int = 1, index: int = 1, withdrawn: bool = False
) -> sb.Envelope[Any]:
    message = sb.PromotionClaim(
        workload_id="w1",
        epoch=epoch,
        fencing_token=sb.fencing_token(epoch, index),
        claimant=signer,
        standby_index=index,
        claimed_at=at,
        withdrawn=withdrawn,
    )
    return env(message, signer, at)


def announcement(at: float, *, signer: str = PEER, epoch: int | None = 1) -> sb.Envelope[Any]:
    message = sb.PromotionAnnouncement(
        workload_id="w1", new_primary=signer, promoted_at=at, epoch=epoch
    )
    return env(message, signer, at)


def only(effects: Iterable[Any], kind: type[T]) -> list[T]:
    return [e for e in effects if isinstance(e, kind)]


def one(effects: Iterable[Any], kind: type[T]) -> T:
    found = only(effects, kind)
    assert len(found) == 1, f"expected one {kind.__name__} in {list(effects)!r}"
    return found[0]


class Driver:
    """Keeps the outstanding requests of one machine and answers them."""

    def __init__(
        self,
        timing: sb.Timing | None = None,
        *,
        me: str = ME,
        atomic: bool = False,
    ) -> None:
        self.timing = timing or sb.Timing()
        self.machine: sb.StandbyElection[Any] = sb.StandbyElection(
            me=me, timing=self.timing, atomic_claims=atomic
        )
        self.log: list[tuple[float, Any]] = []
        self.pending: dict[type[Any], Any] = {}
        #: Every phase move the machine reported, in order.
        self.moves: list[sbc.PhaseChanged] = []

    def _keep(self, now: float, effects: list[Any]) -> list[Any]:
        """Log the effects and return them without the phase reports."""
        self.moves.extend(e for e in effects if isinstance(e, sbc.PhaseChanged))
        effects = [e for e in effects if not isinstance(e, sbc.PhaseChanged)]
        for effect in effects:
            self.log.append((now, effect))
            if isinstance(
                effect,
                sbc.QueryHeartbeats | sbc.QueryClaims | sbc.PublishClaim | sbc.CompareAndSetClaim,
            ):
                self.pending[type(effect)] = effect
            elif isinstance(effect, sbc.Spawn):
                self.pending[sbc.Spawn] = effect
        # The machine works its next deadline out once between two inputs: after
        # every input (each was asked for it before) it is what the slots say.
        assert self.machine.next_deadline() == self.machine._index.next_deadline()
        return effects

    def reserve(self, now: float, slot: sb.StandbySlot[Any] | None = None) -> list[Any]:
        return self._keep(now, self.machine.reserve(now, slot or make_slot()))

    def tick(self, now: float) -> list[Any]:
        return self._keep(now, self.machine.tick(now))

    def feed(self, now: float, envelope: sb.Envelope[Any]) -> list[Any]:
        return self._keep(now, self.machine.on_message(now, envelope))

    def answer_heartbeats(
        self, now: float, results: Sequence[Any] = (), answered: Sequence[str] = QUORUM
    ) -> list[Any]:
        query = self.pending.pop(sbc.QueryHeartbeats)
        return self._keep(
            now, self.machine.heartbeats_queried(now, query.request_id, results, answered)
        )

    def answer_claims(
        self, now: float, results: Sequence[Any] = (), answered: Sequence[str] = QUORUM
    ) -> list[Any]:
        query = self.pending.pop(sbc.QueryClaims)
        return self._keep(
            now, self.machine.claims_queried(now, query.request_id, results, answered)
        )

    def ack_claim(self, now: float, acked: Sequence[str] = QUORUM) -> list[Any]:
        publish = self.pending.pop(sbc.PublishClaim)
        return self._keep(now, self.machine.claim_published(now, publish.request_id, acked))

    def finish_spawn(self, now: float, ok: bool = True, error: str | None = None) -> list[Any]:
        spawn = self.pending.pop(sbc.Spawn)
        return self._keep(now, self.machine.spawn_finished(now, spawn.request_id, ok, error))

    def phase(self, workload_id: str = "w1") -> sbc.Phase:
        return self.machine.status(workload_id).phase

    def run_to_spawn(self, start: float) -> float:
        """From a confirmed BACKOFF, walk the claim protocol to a Spawn; returns its time."""
        now = self.machine.next_deadline()
        assert now is not None
        now = max(now, start)
        one(self.tick(now), sbc.QueryClaims)
        one(self.answer_claims(now + 1), sbc.PublishClaim)
        self.ack_claim(now + 2)
        settle = self.machine.next_deadline()
        assert settle == now + 2 + self.timing.claim_settle
        one(self.tick(settle), sbc.QueryClaims)
        one(self.answer_claims(settle + 1), sbc.Spawn)
        return settle + 1

    def spawns(self) -> list[sbc.Spawn[Any]]:
        return [e for _, e in self.log if isinstance(e, sbc.Spawn)]
