"""The election's claim window: how many slots run the claim protocol at once (FM26).

The test plays the relays for one ``StandbyElection`` with many slots of one
dead primary, as ``test_election.py`` does for one slot.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from _driver import CREATED, ME, PEER, QUORUM, heartbeat, make_slot, only

import standby as sb
import standby.core as sbc

TIMING = sb.Timing()
IN_FLIGHT = (sbc.Phase.PREREAD, sbc.Phase.CLAIMING)


def machine_with(slots: int, claim_window: int = 100) -> sb.StandbyElection[Any]:
    machine: sb.StandbyElection[Any] = sb.StandbyElection(
        me=ME, timing=TIMING, claim_window=claim_window
    )
    for i in range(slots):
        machine.reserve(CREATED, make_slot(workload_id=f"w{i:04d}"))
    return machine


def silence_confirmed(machine: sb.StandbyElection[Any]) -> tuple[float, list[Any]]:
    """Let the primary go silent and confirm it; returns the time and the tick's effects."""
    now = CREATED + TIMING.silence
    (confirm,) = only(machine.tick(now), sbc.QueryHeartbeats)
    effects = machine.heartbeats_queried(now, confirm.request_id, [], QUORUM)
    return now, effects + machine.tick(now)


def phases(machine: sb.StandbyElection[Any]) -> dict[sbc.Phase, int]:
    counts: dict[sbc.Phase, int] = {}
    for workload_id in machine.slots:
        phase = machine.status(workload_id).phase
        counts[phase] = counts.get(phase, 0) + 1
    return counts


def in_flight(machine: sb.StandbyElection[Any]) -> int:
    counts = phases(machine)
    return sum(counts.get(p, 0) for p in IN_FLIGHT)


def test_fm26_slots_beyond_the_claim_window_wait_paced_in_the_order_they_became_ready() -> None:
    machine = machine_with(250)
    _, effects = silence_confirmed(machine)
    (preread,) = only(effects, sbc.QueryClaims)
    assert preread.workload_ids == tuple(f"w{i:04d}" for i in range(100))
    assert phases(machine) == {sbc.Phase.PREREAD: 100, sbc.Phase.PACED: 150}
    assert machine.status("w0100").deadline is None  # let in by room, not by time


def test_fm26_every_slot_of_a_large_failover_is_claimed_with_few_reads_and_the_window_kept() -> (
    None
):
    # The relays answer every read and acknowledge every claim in time: the
    # window widens by one per claim, the paced slots are let in a chunk at
    # a time (one batched pre-read each), and every slot settles exactly once.
    machine = machine_with(1_000)
    now, effects = silence_confirmed(machine)
    reads = only(effects, sbc.QueryClaims)
    settled: set[str] = set()
    read_count = 0
    while reads:
        read_count += 1
        read = reads.pop(0)
        assert len(read.workload_ids) >= 25, "slots let in together share one pre-read"
        now += 0.1
        publishes = only(machine.claims_queried(now, read.request_id, [], QUORUM), sbc.PublishClaim)
        assert len(publishes) == len(read.workload_ids)
        for publish in publishes:
            now += 0.001
            window = machine.claim_window
            effects = machine.claim_published(now, publish.request_id, QUORUM)
            assert machine.claim_window == window + 1
            assert in_flight(machine) <= machine.claim_window
            settled.add(publish.claim.workload_id)
            reads.extend(only(effects, sbc.QueryClaims))
    assert len(settled) == 1_000
    assert phases(machine) == {sbc.Phase.SETTLING: 1_000}
    assert read_count <= 20
    assert machine.counters.get("claim_window_cut", 0) == 0


def claims_out(slots: int) -> tuple[sb.StandbyElection[Any], float, list[Any]]:
    """A machine of ``slots`` slots whose first pre-read was answered: its claims are out."""
    machine = machine_with(slots)
    now, effects = silence_confirmed(machine)
    (preread,) = only(effects, sbc.QueryClaims)
    effects = machine.claims_queried(now + 0.1, preread.request_id, [], QUORUM)
    return machine, now, only(effects, sbc.PublishClaim)


def test_fm26_the_window_halves_once_for_a_round_of_late_claims() -> None:
    machine, now, publishes = claims_out(300)
    late = now + TIMING.claim_timeout + 0.5
    for publish in publishes:
        machine.claim_published(late, publish.request_id, QUORUM)
    # A hundred claims of one round came back late: one cut, not a hundred.
    assert machine.claim_window == 50
    assert machine.counters["claim_window_cut"] == 1
    assert machine.counters["claim_failed"] == 100
    # The room freed lets the next slots in: at most the new window of them.
    counts = phases(machine)
    assert counts[sbc.Phase.PREREAD] == 50
    assert counts[sbc.Phase.RETRY_CLAIM] == 100
    assert counts[sbc.Phase.PACED] == 150


def test_fm26_a_preread_short_of_its_quorum_cuts_the_window() -> None:
    machine = machine_with(200)
    now, effects = silence_confirmed(machine)
    (preread,) = only(effects, sbc.QueryClaims)
    machine.claims_queried(now + 0.5, preread.request_id, [], ["r1"])
    assert machine.claim_window == 50
    assert phases(machine)[sbc.Phase.PREREAD] == 50  # the next 50 were let in


def test_fm26_a_paced_slot_watches_again_when_its_primary_speaks() -> None:
    machine = machine_with(3, claim_window=1)
    now, effects = silence_confirmed(machine)
    assert phases(machine) == {sbc.Phase.PREREAD: 1, sbc.Phase.PACED: 2}
    machine.on_message(now + 1, heartbeat(now + 1))
    assert phases(machine) == {sbc.Phase.WATCHING: 3}
    # Nothing is left waiting for room: the next silence starts afresh.
    _, effects = silence_confirmed_at(machine, now + 1 + TIMING.silence)
    (preread,) = only(effects, sbc.QueryClaims)
    assert preread.workload_ids == ("w0000",)


def silence_confirmed_at(machine: sb.StandbyElection[Any], now: float) -> tuple[float, list[Any]]:
    (confirm,) = only(machine.tick(now), sbc.QueryHeartbeats)
    effects = machine.heartbeats_queried(now, confirm.request_id, [], QUORUM)
    return now, effects + machine.tick(now)


def test_fm26_a_paced_slot_that_expires_leaves_the_queue() -> None:
    machine: sb.StandbyElection[Any] = sb.StandbyElection(me=ME, timing=TIMING, claim_window=1)
    machine.reserve(CREATED, make_slot(workload_id="a"))
    end = CREATED + TIMING.silence + 5
    machine.reserve(CREATED, make_slot(workload_id="b", expires_at=end))
    silence_confirmed(machine)
    assert machine.status("b").phase is sbc.Phase.PACED
    effects = machine.tick(end)
    assert [e.workload_id for e in only(effects, sbc.SlotRemoved)] == ["b"]
    assert "b" not in machine.slots
    assert machine._admission.waiting == {}


def test_the_window_never_holds_back_a_lone_slot() -> None:
    # One slot of a failed round, with the window at its floor: it still gets in.
    machine = machine_with(1, claim_window=1)
    now, effects = silence_confirmed(machine)
    for _ in range(4):
        (preread,) = only(effects, sbc.QueryClaims)
        machine.claims_queried(now + 0.1, preread.request_id, [], [])
        assert machine.claim_window == 1
        deadline = machine.next_deadline()
        assert deadline is not None
        now = deadline
        effects = machine.tick(now)
    assert machine.status("w0000").phase is sbc.Phase.PREREAD


@pytest.mark.parametrize("bad", [0, -3, 1.5, True, "100"])
def test_a_claim_window_that_is_not_a_positive_int_is_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="claim window"):
        sb.StandbyElection(me=ME, timing=TIMING, claim_window=bad)


@pytest.mark.parametrize(
    ("claim_timeout", "window"), [(10.0, 100), (2.5, 100), (0.7, 28), (0.1, 4), (0.01, 1)]
)
def test_the_first_claim_window_follows_claim_timeout(claim_timeout: float, window: int) -> None:
    # Without a window given, the machine starts with what a relay storing
    # 80 events a second acknowledges in half of claim_timeout (at most 100):
    # a fast timing's first round must not be more than the relays answer in time.
    timing = attrs.evolve(
        sb.Timing(), claim_timeout=claim_timeout, query_timeout=min(4.0, claim_timeout / 3)
    )
    assert sb.StandbyElection(me=ME, timing=timing).claim_window == window
    assert sb.StandbyElection(me=ME, timing=timing, claim_window=7).claim_window == 7


def test_fm26_claims_acknowledged_late_in_their_deadline_narrow_the_window() -> None:
    # In time, but after half of claim_timeout: the relays' queues are
    # growing, so each such claim narrows the window by one (no cut).
    machine, now, publishes = claims_out(300)
    slow = now + 0.75 * TIMING.claim_timeout
    for publish in publishes[:40]:
        machine.claim_published(slow, publish.request_id, QUORUM)
    assert machine.claim_window == 60
    assert machine.counters.get("claim_window_cut", 0) == 0
    assert phases(machine)[sbc.Phase.SETTLING] == 40


def test_fm26_the_window_is_held_to_the_slots_the_relays_carried_through_lately() -> None:
    # The relays acknowledge a claim every 1/25 of the target (half of
    # claim_timeout) while 200 slots wait for room. Growing by one per
    # answer in time would keep widening the window (the answers come a
    # round trip late); once claims have been getting through for a
    # target's length, the window is held to how many got through in that
    # time: Little's law at the rate the relays show.
    machine, now, publishes = claims_out(300)
    target = TIMING.claim_timeout / 2
    acked: list[float] = []
    for i, publish in enumerate(publishes[:40]):
        at = now + 0.2 + i * target / 25
        machine.claim_published(at, publish.request_id, QUORUM)
        acked.append(at)
        if at - acked[0] < target:
            assert machine.claim_window > 100  # too short to tell a rate: it grows
    recent = [t for t in acked if t >= acked[-1] - target]
    assert machine.claim_window == len(recent) == 26
    assert machine.counters.get("claim_window_cut", 0) == 0


def test_fm26_a_failure_halves_the_window_but_not_below_the_rate_shown() -> None:
    machine, now, publishes = claims_out(300)
    target = TIMING.claim_timeout / 2
    acked = [now + 0.2 + i * target / 50 for i in range(80)]
    for at, publish in zip(acked, publishes, strict=False):
        machine.claim_published(at, publish.request_id, QUORUM)
    window = machine.claim_window
    late = now + TIMING.claim_timeout + 0.1
    machine.claim_published(late, publishes[80].request_id, QUORUM)
    shown = len([t for t in acked if t >= late - target])
    assert machine.counters["claim_window_cut"] == 1
    assert window / 2 < shown < window
    assert machine.claim_window == shown


def peer_claim(
    workload_id: str, at: float, *, signer: str = PEER, index: int = 0, **kw: Any
) -> Any:
    message = sb.PromotionClaim(
        workload_id=workload_id,
        epoch=1,
        fencing_token=sb.fencing_token(1, index),
        claimant=signer,
        standby_index=index,
        claimed_at=at,
        **kw,
    )
    return sb.Envelope(message, signer, "r1", at)


def second_standby(peers: tuple[str, ...] = (PEER,)) -> tuple[sb.StandbyElection[Any], float, Any]:
    """Standby index 1 of two workloads; its backoff is over and the pre-read is out."""
    machine: sb.StandbyElection[Any] = sb.StandbyElection(me=ME, timing=TIMING)
    for workload_id in ("w0", "w1"):
        machine.reserve(CREATED, make_slot(workload_id=workload_id, index=1, peers=peers))
    now, _ = silence_confirmed(machine)
    now += TIMING.promotion_delay
    (preread,) = only(machine.tick(now), sbc.QueryClaims)
    return machine, now, preread


def test_fm26_a_higher_standby_lets_a_lower_one_at_work_on_the_primary_go_first() -> None:
    machine, now, preread = second_standby()
    # The lower standby claimed w0 a moment ago, not yet w1.
    effects = machine.claims_queried(
        now + 0.1, preread.request_id, [peer_claim("w0", now - 1)], QUORUM
    )
    assert only(effects, sbc.PublishClaim) == []
    assert machine.status("w0").phase is sbc.Phase.DEFERRED
    assert machine.status("w1").phase is sbc.Phase.RETRY_CLAIM
    assert machine.status("w1").deadline == now + 0.1 + TIMING.promotion_delay
    assert machine.counters["waited_for_lower_standby"] == 1


def test_fm26_the_wait_for_a_lower_standby_is_bounded() -> None:
    machine, now, preread = second_standby()
    effects = machine.claims_queried(now, preread.request_id, [peer_claim("w0", now)], QUORUM)
    assert only(effects, sbc.PublishClaim) == []
    # The lower standby's claim is still fresh at the next turns: the slot
    # waits again without reading, until it has waited three turns.
    for _ in range(2):
        deadline = machine.status("w1").deadline
        assert deadline is not None
        now = deadline
        assert only(machine.tick(now), sbc.QueryClaims) == []
        assert machine.status("w1").phase is sbc.Phase.RETRY_CLAIM
    assert machine.counters["waited_for_lower_standby"] == 3
    deadline = machine.status("w1").deadline
    assert deadline is not None
    now = deadline
    (preread,) = only(machine.tick(now), sbc.QueryClaims)
    assert preread.workload_ids == ("w1",)
    effects = machine.claims_queried(now, preread.request_id, [], QUORUM)
    (publish,) = only(effects, sbc.PublishClaim)
    assert publish.claim.workload_id == "w1"


def test_fm26_a_lower_standby_claiming_seen_live_spares_the_pre_read() -> None:
    # The subscription brought the lower standby's fresh claim on w0 during
    # the backoff: at its end, w1 waits a turn without reading at all.
    machine: sb.StandbyElection[Any] = sb.StandbyElection(me=ME, timing=TIMING)
    for workload_id in ("w0", "w1"):
        machine.reserve(CREATED, make_slot(workload_id=workload_id, index=1))
    now, _ = silence_confirmed(machine)
    machine.on_message(now + 1, peer_claim("w0", now + 1))
    effects = machine.tick(now + TIMING.promotion_delay)
    (preread,) = only(effects, sbc.QueryClaims)
    assert preread.workload_ids == ("w0",)  # its own rival is read as ever
    assert machine.status("w1").phase is sbc.Phase.RETRY_CLAIM
    assert machine.counters["waited_for_lower_standby"] == 1


@pytest.mark.parametrize(
    "seen",
    [
        pytest.param(lambda now: peer_claim("w0", now - TIMING.peer_claim_grace), id="old"),
        pytest.param(lambda now: peer_claim("w0", now, withdrawn=True), id="withdrawn"),
        pytest.param(lambda now: peer_claim("w0", now, signer="C", index=2), id="higher"),
    ],
)
def test_fm26_only_a_lower_standbys_fresh_held_claims_make_a_slot_wait(seen: Any) -> None:
    machine, now, preread = second_standby(peers=(PEER, "C"))
    effects = machine.claims_queried(now, preread.request_id, [seen(now)], QUORUM)
    claimed = {p.claim.workload_id for p in only(effects, sbc.PublishClaim)}
    assert "w1" in claimed
    assert machine.counters.get("waited_for_lower_standby", 0) == 0


def test_the_claims_at_work_are_forgotten_with_the_slots() -> None:
    machine, now, preread = second_standby()
    machine.claims_queried(now, preread.request_id, [peer_claim("w0", now)], QUORUM)
    assert machine._at_work  # PEER is at work on the primary
    announced = sb.PromotionAnnouncement(
        workload_id="w0", new_primary=PEER, promoted_at=now + 1, epoch=1
    )
    machine.on_message(now + 1, sb.Envelope(announced, PEER, "r1", now + 1))
    assert machine.slots["w0"].primary == PEER  # followed: its claim no longer counts
    assert machine._at_work == {}
    machine.remove(now + 2, "w1")
    assert machine._at_work == {}


def test_the_machine_tells_a_settle_re_read_from_a_pre_read() -> None:
    machine = machine_with(2)
    now, effects = silence_confirmed(machine)
    (preread,) = only(effects, sbc.QueryClaims)
    assert not machine.rereading(preread.request_id)
    publishes = only(machine.claims_queried(now, preread.request_id, [], QUORUM), sbc.PublishClaim)
    for publish in publishes:
        machine.claim_published(now + 0.1, publish.request_id, QUORUM)
    (reread,) = only(machine.tick(now + 0.1 + TIMING.claim_settle), sbc.QueryClaims)
    assert machine.rereading(reread.request_id)
    machine.claims_queried(now + 20, reread.request_id, [], QUORUM)
    assert not machine.rereading(reread.request_id)  # answered: no longer a read in flight
