"""Several StandbyElections racing over one claim board (the relays, abstracted).

Each published claim becomes visible to reads from some instant between its
publication and its acknowledgement (it may reach some relays early); once
acknowledged by a write quorum it is visible to every read-quorum read.
Heartbeat queries always confirm silence: the primary is gone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

import standby as sb
import standby.core as sbc

PRIMARY = "P"
QUORUM = ("r1", "r2")


@attrs.define
class Racer:
    name: str
    machine: sb.StandbyElection[Any]
    #: ack delays for successive claims (cycled), and how early each becomes visible (0..1)
    ack_delays: Sequence[float]
    early: Sequence[float]
    query_delay: float = 0.0
    spawn_delay: float = 1.0
    spawn_ok: bool = True
    pending: list[tuple[float, int, Any]] = attrs.field(factory=list)
    spawned: list[tuple[float, sbc.Spawn[Any]]] = attrs.field(factory=list)
    claims: int = 0


@attrs.define
class Board:
    entries: list[tuple[float, sb.Envelope[Any]]] = attrs.field(factory=list)

    def publish(self, visible_from: float, signer: str, claim: Any) -> None:
        self.entries.append((visible_from, sb.Envelope(claim, signer, "r1", visible_from)))

    def read(self, at: float) -> list[sb.Envelope[Any]]:
        return [envelope for visible, envelope in self.entries if visible <= at]


def race(racers: Sequence[Racer], board: Board, *, until: float) -> None:
    """Run every racer's machine until ``until``, answering its effects."""
    seq = 0
    for racer in racers:
        racer.pending.clear()

    def broadcast(sender: Racer, at: float, message: Any) -> None:
        """Subscriptions: every other racer receives the message at ``at``."""
        nonlocal seq
        for other in racers:
            if other is not sender:
                seq += 1
                other.pending.append((at, seq, sb.Envelope(message, sender.name, "r1", at)))

    def handle(racer: Racer, now: float, effects: list[Any]) -> None:
        nonlocal seq
        for effect in effects:
            seq += 1
            if isinstance(effect, sbc.QueryHeartbeats | sbc.QueryClaims):
                racer.pending.append((now + racer.query_delay, seq, effect))
            elif isinstance(effect, sbc.PublishClaim):
                delay = racer.ack_delays[racer.claims % len(racer.ack_delays)]
                early = racer.early[racer.claims % len(racer.early)]
                racer.claims += 1
                board.publish(now + delay * early, racer.name, effect.claim)
                racer.pending.append((now + delay, seq, effect))
                broadcast(racer, now + delay, effect.claim)
            elif isinstance(effect, sbc.WithdrawClaim):
                board.publish(now, racer.name, effect.claim)
                broadcast(racer, now, effect.claim)
            elif isinstance(effect, sbc.Spawn):
                racer.spawned.append((now, effect))
                racer.pending.append((now + racer.spawn_delay, seq, effect))
            elif isinstance(effect, sbc.Announce):
                announcement = effect.announcement
                for other in racers:
                    if other is not racer:
                        envelope = sb.Envelope(announcement, racer.name, "r1", now)
                        handle(other, now, other.machine.on_message(now, envelope))

    while True:
        best: tuple[float, int, Racer] | None = None
        for order, racer in enumerate(racers):
            times = [at for at, _, _ in racer.pending]
            deadline = racer.machine.next_deadline()
            if deadline is not None:
                times.append(deadline)
            if times and (best is None or min(times) < best[0]):
                best = (min(times), order, racer)
        if best is None or best[0] > until:
            return
        now, _, racer = best
        due = [p for p in racer.pending if p[0] <= now]
        if not due:
            handle(racer, now, racer.machine.tick(now))
            continue
        item = min(due)
        racer.pending.remove(item)
        _, _, effect = item
        machine = racer.machine
        if isinstance(effect, sbc.QueryHeartbeats):
            handle(racer, now, machine.heartbeats_queried(now, effect.request_id, [], QUORUM))
        elif isinstance(effect, sbc.QueryClaims):
            reply = machine.claims_queried(now, effect.request_id, board.read(now), QUORUM)
            handle(racer, now, reply)
        elif isinstance(effect, sbc.PublishClaim):
            handle(racer, now, machine.claim_published(now, effect.request_id, QUORUM))
        elif isinstance(effect, sbc.Spawn):
            handle(racer, now, machine.spawn_finished(now, effect.request_id, racer.spawn_ok))
        elif isinstance(effect, sb.Envelope):
            handle(racer, now, machine.on_message(now, effect))


def racers_for(
    timing: sb.Timing,
    count: int,
    *,
    created_at: float,
    ack_delays: Sequence[Sequence[float]],
    early: Sequence[Sequence[float]],
    query_delays: Sequence[float] | None = None,
    spawn_delay: float = 1.0,
) -> list[Racer]:
    names = [f"S{i}" for i in range(count)]
    racers = []
    for index, name in enumerate(names):
        machine: sb.StandbyElection[Any] = sb.StandbyElection(me=name, timing=timing)
        slot = sb.StandbySlot(
            workload_id="w",
            primary=PRIMARY,
            standby_index=index,
            standby_count=count,
            spec=None,
            expires_at=created_at + 1e7,
            owner="consumer",
            created_at=created_at,
            peers=tuple(n for n in names if n != name),
        )
        machine.reserve(created_at, slot)
        racers.append(
            Racer(
                name=name,
                machine=machine,
                ack_delays=ack_delays[index],
                early=early[index],
                query_delay=0.0 if query_delays is None else query_delays[index],
                spawn_delay=spawn_delay,
            )
        )
    return racers
