"""Every guarantee and failure mode of SAFETY.md, pinned on the machines.

Failure mode 11 (secrets on disk) belongs to the slot store and is pinned in
``tests/test_store.py``; failure mode 2 is pinned here on the core's
comparison hook and again on each transport's ``canonical``.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from _claimboard import Board, race, racers_for
from _driver import (
    CREATED,
    PEER,
    PRIMARY,
    STRANGER,
    Driver,
    announcement,
    heartbeat,
    make_slot,
    one,
    only,
    revocation,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import standby as sb
import standby.core as sbc

T = sb.Timing()


# ---------------------------------------------------------------------------
# Guarantees
# ---------------------------------------------------------------------------


def first_claim_vs_fence(
    timing: sb.Timing, *, primary_skew: float, standby_skew: float, delivery: float
) -> tuple[float, float]:
    """True times of the standby's first claim and of the primary's fence + grace.

    The primary heartbeats at true time 0 (stamped with its clock), a write
    quorum acknowledges, then it is partitioned from every relay.
    """
    base = 50_000.0
    lifecycle = sb.WorkloadLifecycle(workload_id="w1", me=PRIMARY, timing=timing, standbys=("A",))
    stamp = base + primary_skew
    lifecycle.start(stamp)
    for relay in ("r1", "r2"):
        lifecycle.heartbeat_acked(stamp, relay, stamp)
    lifecycle.container_started(stamp)
    fence_local = lifecycle.next_deadline()
    while lifecycle.state is not sbc.LifecycleState.FENCED:
        assert fence_local is not None
        lifecycle.tick(fence_local)
        fence_local = (
            lifecycle.next_deadline()
            if lifecycle.state is not sbc.LifecycleState.FENCED
            else fence_local
        )
    assert fence_local is not None
    fence_true = fence_local - base - primary_skew

    driver = Driver(timing)
    created = base - 1_000.0 + standby_skew
    driver.reserve(created, make_slot(created_at=created))
    arrival = base + delivery + standby_skew
    driver.feed(arrival, heartbeat(stamp))
    deadline = driver.machine.next_deadline()
    assert deadline is not None
    driver.tick(deadline)
    driver.answer_heartbeats(deadline)
    assert driver.phase() is sbc.Phase.BACKOFF
    claim_local = driver.machine.next_deadline()
    assert claim_local is not None
    return claim_local - base - standby_skew, fence_true + timing.fence_grace


@settings(max_examples=200, deadline=None)
@given(
    primary_skew=st.floats(-10, 10),
    standby_skew=st.floats(-10, 10),
    delivery=st.floats(0, 5),
)
def test_guarantee1_standby_claims_only_after_the_fenced_primary_stopped(
    primary_skew: float, standby_skew: float, delivery: float
) -> None:
    # The two clocks differ by at most 20 s = max_clock_skew.
    claim, stopped = first_claim_vs_fence(
        T, primary_skew=primary_skew, standby_skew=standby_skew, delivery=delivery
    )
    assert claim >= stopped


def test_guarantee1_reference_timing_would_overlap() -> None:
    # The same computation on the reference provider's settings shows why Timing
    # rejects them: the standby claims minutes before the primary has stopped.
    unsafe = sb.Timing.unsafe_unchecked(lease=420.0, suspect_after=120.0)
    claim, stopped = first_claim_vs_fence(unsafe, primary_skew=0, standby_skew=0, delivery=0)
    assert stopped - claim >= 240.0


def race_timing(claim_settle: float = 15.0) -> sb.Timing:
    return sb.Timing.unsafe_unchecked(promotion_delay=0.0, claim_settle=claim_settle)


rival_delays = st.lists(
    st.tuples(st.floats(0, 10), st.floats(0, 1), st.floats(0, 4.9)), min_size=2, max_size=3
)


def double_spawn(
    timing: sb.Timing, delays: list[tuple[float, float, float]], spawn_delay: float = 1.0
) -> int:
    racers = racers_for(
        timing,
        len(delays),
        created_at=CREATED,
        ack_delays=[[d[0]] for d in delays],
        early=[[d[1]] for d in delays],
        query_delays=[d[2] for d in delays],
        spawn_delay=spawn_delay,
    )
    # Until just before a follower could find the (silent) winner silent in turn.
    race(racers, Board(), until=CREATED + 2 * timing.silence)
    spawned = [spawn.epoch for r in racers for _, spawn in r.spawned]
    assert set(spawned) <= {1}
    if any(ack + query < timing.claim_timeout for ack, _, query in delays):
        # Liveness: someone's claim can reach its quorum in time.
        assert spawned, "somebody must take over"
    return len(spawned)


@settings(max_examples=300, deadline=None)
@given(rival_delays)
def test_guarantee2_rival_claims_never_both_spawn(delays: list[tuple[float, float, float]]) -> None:
    # promotion_delay 0 makes every standby claim at once: only the claim
    # protocol stands between them.
    timing = race_timing()
    assert timing.is_safe
    assert double_spawn(timing, delays) <= 1


def test_guarantee2_settle_shorter_than_claim_timeout_can_double_spawn() -> None:
    # The rule claim_settle > claim_timeout is what the protocol needs: break
    # it and a late-acknowledged claim slips past a rival's settle read.
    timing = race_timing(claim_settle=2.0)
    assert not timing.is_safe
    # S0's claim reaches its quorum 9.5 s after its pre-read; S1's at once, and
    # S1's spawn is slow enough that its announcement cannot save S0.
    delays = [(9.5, 1.0, 0.0), (0.0, 1.0, 0.0)]
    assert double_spawn(timing, delays, spawn_delay=20.0) == 2
    assert double_spawn(race_timing(), delays, spawn_delay=20.0) == 1


def test_guarantee3_fencing_tokens_increase_across_successive_promotions() -> None:
    tokens = []
    # Epoch 1: standby A (index 0) takes over from P.
    first = Driver(me="A")
    first.reserve(CREATED, make_slot(index=0, peers=("B", "C")))
    first.feed(CREATED + 1, revocation(CREATED + 1))
    first.run_to_spawn(CREATED + 1)
    done = first.finish_spawn(CREATED + 30)
    tokens.append(one(done, sbc.Promoted).fencing_token)
    announced = one(done, sbc.Announce).announcement
    # C (index 2) follows A, then A goes silent and C (now index 1 of 2) takes epoch 2.
    second = Driver(me="C")
    second.reserve(CREATED, make_slot(index=2, peers=("A", "B")))
    changed = one(
        second.feed(CREATED + 31, sb.Envelope(announced, "A", "r1", CREATED + 31)),
        sbc.PrimaryChanged,
    )
    assert changed.epoch == 1
    assert second.machine.slots["w1"].standby_index == 1
    second.feed(CREATED + 40, revocation(CREATED + 40, signer="A", epoch=1))
    spawned_at = second.run_to_spawn(CREATED + 40)
    done = second.finish_spawn(spawned_at + 20)
    tokens.append(one(done, sbc.Promoted).fencing_token)
    assert tokens[0] < tokens[1]
    assert tokens == [sb.fencing_token(1, 0), sb.fencing_token(2, 1)]


# ---------------------------------------------------------------------------
# Failure modes
# ---------------------------------------------------------------------------


def test_fm01_fresh_slot_waits_a_full_silence_from_created_at() -> None:
    driver = Driver()
    driver.reserve(CREATED)
    # "last seen = 0" must not read as silence: nothing happens for a full window.
    for now in (CREATED, CREATED + 1, CREATED + 60, CREATED + T.silence - 0.001):
        assert driver.tick(now) == []
    assert driver.phase() is sbc.Phase.WATCHING
    one(driver.tick(CREATED + T.silence), sbc.QueryHeartbeats)


def test_fm02_identities_are_compared_in_canonical_form() -> None:
    # An adapter canonicalises both encodings of one key to the same string.
    def canonical(identity: str) -> str:
        return identity.removeprefix("npub:").lower()

    def same(x: str, y: str) -> bool:
        return canonical(x) == canonical(y)

    topology = sb.Topology("p" * 8, ("npub:ABCD", "ef01"))
    assert sb.role_of("abcd", topology.primary, topology.standbys) == sb.NotAddressed()
    assert topology.role_of("abcd", same=same) == sb.Standby(index=0, count=2)
    slot = sb.StandbySlot.reserve(
        me="abcd",
        workload_id="w",
        topology=topology,
        spec=None,
        owner="c",
        created_at=1.0,
        expires_at=2.0,
        same=same,
    )
    assert slot.peers == ("ef01",)


def test_fm03_peer_routine_heartbeats_do_not_mean_a_peer_promoted() -> None:
    driver = Driver()
    driver.reserve(CREATED)
    for i in range(1, 10):
        driver.feed(CREATED + 20 * i, heartbeat(CREATED + 20 * i, signer=PEER))
    assert driver.machine.slots["w1"].primary == PRIMARY
    driver.tick(CREATED + T.silence)
    driver.answer_heartbeats(CREATED + T.silence, results=[heartbeat(CREATED + 170, signer=PEER)])
    assert driver.phase() is sbc.Phase.BACKOFF  # still promotes: only claims stop it
    driver.run_to_spawn(CREATED + T.silence)
    assert len(driver.spawns()) == 1


def test_fm04_slow_spawn_does_not_let_the_next_standby_spawn_too() -> None:
    timing = sb.Timing()
    racers = racers_for(
        timing,
        2,
        created_at=CREATED,
        ack_delays=[[1.0], [1.0]],
        early=[[1.0], [1.0]],
        spawn_delay=2 * timing.promotion_delay,
    )
    board = Board()
    # Stop before the follower could find the new primary silent in its turn.
    race(racers, board, until=CREATED + 2 * timing.silence + 60)
    spawned = [(r.name, at) for r in racers for at, _ in r.spawned]
    assert [name for name, _ in spawned] == ["S0"]
    # The second standby stood down on the claim and then followed the winner.
    follower = racers[1].machine
    assert follower.slots["w"].primary == "S0"
    assert follower.slots["w"].epoch == 1


def test_fm05_expired_slots_are_dropped_on_every_call_and_on_restore() -> None:
    driver = Driver()
    driver.reserve(CREATED, make_slot(workload_id="short", expires_at=CREATED + 50))
    driver.reserve(CREATED, make_slot(workload_id="long"))
    assert driver.machine.next_deadline() == CREATED + 50
    # Any call after expiry drops it: here a heartbeat, not a tick.
    effects = driver.feed(CREATED + 50, heartbeat(CREATED + 50))
    assert one(effects, sbc.SlotRemoved) == sbc.SlotRemoved("short", "expired")
    assert set(driver.machine.slots) == {"long"}
    # A restart restores only what has not expired.
    fresh = Driver()
    restored = fresh.machine.restore(
        CREATED + 60,
        [make_slot(workload_id="gone", expires_at=CREATED + 60), make_slot(workload_id="kept")],
    )
    assert restored == [
        sbc.SlotRemoved("gone", "expired"),
        sbc.PhaseChanged("kept", None, sbc.Phase.WATCHING, False),
    ]
    assert set(fresh.machine.slots) == {"kept"}


def test_fm05_expired_slot_is_never_promoted() -> None:
    driver = Driver()
    driver.reserve(CREATED, make_slot(index=1, peers=(PEER,), expires_at=CREATED + 20))
    driver.feed(CREATED + 1, revocation(CREATED + 1))  # backoff ends at CREATED + 31
    effects = driver.tick(CREATED + 31)
    assert only(effects, sbc.QueryClaims) == []
    assert driver.machine.slots == {}
    assert driver.machine.next_deadline() is None


def lifecycle(standbys: tuple[str, ...]) -> sb.WorkloadLifecycle:
    machine = sb.WorkloadLifecycle(workload_id="w", me=PRIMARY, timing=T, standbys=standbys)
    machine.start(CREATED)
    for relay in ("r1", "r2", "r3"):
        machine.heartbeat_acked(CREATED, relay, CREATED)
    machine.container_started(CREATED)
    return machine


def test_fm06_quorum_loss_never_fences_a_workload_without_standbys() -> None:
    alone = lifecycle(())
    effects: list[Any] = []
    for hour in range(1, 49):
        effects += alone.tick(CREATED + 3_600 * hour)
    assert alone.state is sbc.LifecycleState.SUSPECT
    assert only(effects, sbc.StopContainer) == []
    assert only(effects, sbc.PublishRevocation) == []
    replicated = lifecycle(("a",))
    replicated.tick(CREATED + T.lease)
    assert replicated.state is sbc.LifecycleState.FENCED


def test_fm07_quorum_is_judged_over_a_window_per_relay_not_the_last_tick() -> None:
    machine = lifecycle(("a", "b"))
    states = set()
    # Heartbeats every 60 s; each relay acknowledges at a different moment;
    # the driver ticks every 10 s, so most ticks see no acknowledgement at all.
    for second in range(0, 3_600, 10):
        now = CREATED + second
        published = CREATED + (second // 60) * 60
        offset = second % 60
        if offset in (0, 20, 40):
            relay = {0: "r1", 20: "r2", 40: "r3"}[offset]
            machine.heartbeat_acked(now, relay, published)
        machine.tick(now)
        states.add(machine.state)
    assert states == {sbc.LifecycleState.LIVE}


def test_fm08_revocation_needs_primary_signature() -> None:
    driver = Driver()
    driver.reserve(CREATED)
    # The body names the right primary; the signer is somebody else.
    forged = revocation(CREATED + 5, signer=STRANGER, body_primary=PRIMARY)
    effects = driver.feed(CREATED + 5, forged)
    assert one(effects, sbc.Dropped).reason is sbc.DropReason.WRONG_SIGNER
    assert driver.phase() is sbc.Phase.WATCHING
    assert driver.machine.next_deadline() == CREATED + T.silence
    # A peer's signature is not the primary's either.
    driver.feed(CREATED + 6, revocation(CREATED + 6, signer=PEER))
    assert driver.phase() is sbc.Phase.WATCHING


def test_fm08_replayed_revocation_after_the_slot_moved_on_is_rejected() -> None:
    driver = Driver()
    driver.reserve(CREATED)
    driver.feed(CREATED + 30, announcement(CREATED + 30))  # PEER took over: epoch 1
    old = driver.feed(CREATED + 31, revocation(CREATED + 10))  # old primary's, replayed
    assert one(old, sbc.Dropped).reason is sbc.DropReason.WRONG_SIGNER
    epoch0 = driver.feed(CREATED + 32, revocation(CREATED + 32, signer=PEER, epoch=0))
    assert one(epoch0, sbc.Dropped).reason is sbc.DropReason.WRONG_EPOCH
    assert driver.phase() is sbc.Phase.WATCHING


def test_fm09_reference_timing_is_rejected_and_defaults_are_safe() -> None:
    with pytest.raises(sb.UnsafeTiming, match=r"silence=180.0 < lease=420.0"):
        sb.Timing(lease=420.0, suspect_after=120.0, silence=180.0)
    assert sb.Timing().is_safe


def test_fm10_future_dated_heartbeat_is_rejected_and_reported() -> None:
    driver = Driver()
    driver.reserve(CREATED)
    now = CREATED + 10
    effects = driver.feed(now, heartbeat(now + T.max_clock_skew + 1))
    dropped = one(effects, sbc.Dropped)
    assert dropped.reason is sbc.DropReason.FUTURE_DATED
    assert driver.machine.counters["future_dated"] == 1
    assert driver.machine.last_heartbeat(PRIMARY) is None
    assert driver.machine.next_deadline() == CREATED + T.silence
    # Exactly at the bound it is accepted.
    assert driver.feed(now, heartbeat(now + T.max_clock_skew)) == []
    assert driver.machine.last_heartbeat(PRIMARY) == now + T.max_clock_skew


def test_fm12_duplicate_revocations_and_the_watchdog_promote_once() -> None:
    driver = Driver()
    driver.reserve(CREATED)
    at = CREATED + T.silence - 1
    copies = [attrs.evolve(revocation(at), relay=relay) for relay in ("r1", "r2", "r3")]
    for envelope in copies:
        driver.feed(at, envelope)
    now = CREATED + T.silence  # the watchdog's deadline passes as well
    effects = driver.tick(now)
    assert only(effects, sbc.QueryHeartbeats) == []
    one(effects, sbc.QueryClaims)
    for envelope in copies:
        assert only(driver.feed(now, envelope), sbc.QueryClaims) == []
    one(driver.answer_claims(now + 1), sbc.PublishClaim)
    driver.ack_claim(now + 2)
    for envelope in copies:
        driver.feed(now + 3, envelope)
    one(driver.tick(now + 2 + T.claim_settle), sbc.QueryClaims)
    one(driver.answer_claims(now + 18), sbc.Spawn)
    spawn_at = now + 18
    for envelope in copies:
        driver.feed(spawn_at, envelope)
    driver.tick(spawn_at + 30)
    driver.finish_spawn(spawn_at + 35)
    driver.feed(spawn_at + 6, revocation(spawn_at + 6))
    driver.tick(spawn_at + 10 * T.silence)
    assert len(driver.spawns()) == 1
    assert driver.machine.counters["revocation_duplicate"] >= 5


def test_fm13_failed_spawn_releases_the_claim_and_rearms() -> None:
    driver = Driver()
    driver.reserve(CREATED)
    driver.feed(CREATED + 1, revocation(CREATED + 1))
    spawn_at = driver.run_to_spawn(CREATED + 1)
    effects = driver.finish_spawn(spawn_at + 2, ok=False)
    released = one(effects, sbc.WithdrawClaim).claim
    assert released.withdrawn
    assert released.epoch == 1
    assert "w1" in driver.machine.slots
    status = driver.machine.status("w1")
    assert (status.phase, status.spawn_attempts) == (sbc.Phase.RETRY_CLAIM, 1)
    # It retries after the backoff, and a later attempt can succeed.
    retry = spawn_at + 2 + T.spawn_retry_backoff
    assert driver.machine.next_deadline() == retry
    driver.run_to_spawn(retry)
    done = driver.finish_spawn(retry + 40)
    one(done, sbc.Promoted)
    assert len(driver.spawns()) == 2


def test_fm13_repeated_spawn_failures_fall_back_to_a_silence_wait() -> None:
    driver = Driver()
    driver.reserve(CREATED)
    driver.feed(CREATED + 1, revocation(CREATED + 1))
    start = CREATED + 1
    for _ in range(T.max_spawn_attempts):
        start = driver.run_to_spawn(start)
        driver.finish_spawn(start + 1, ok=False)
        start += 1
    assert "w1" in driver.machine.slots
    assert driver.machine.next_deadline() == start + T.silence


def test_fm24_spawns_that_always_fail_end_in_a_final_state_with_growing_waits() -> None:
    driver = Driver()
    driver.reserve(CREATED)
    driver.feed(CREATED + 1, revocation(CREATED + 1))
    start = CREATED + 1
    waits: list[float] = []
    effects: list[Any] = []
    total = T.max_spawn_rounds * T.max_spawn_attempts
    for attempt in range(total):
        start = driver.run_to_spawn(start)
        effects = driver.finish_spawn(start + 1, ok=False, error=f"exec failed #{attempt}")
        start += 1
        deadline = driver.machine.next_deadline()
        if deadline is not None:
            waits.append(deadline - start)
    # The slot is given up for good: a final state the host is told of.
    gave_up = one(effects, sbc.CannotStart)
    assert (gave_up.workload_id, gave_up.attempts) == ("w1", total)
    assert gave_up.error == f"exec failed #{total - 1}"
    assert one(effects, sbc.SlotRemoved).reason == "cannot start"
    assert one(effects, sbc.WithdrawClaim).claim.withdrawn
    assert "w1" not in driver.machine.slots
    assert driver.machine.next_deadline() is None
    assert len(driver.spawns()) == total
    # Quick retries double within a round; the waits between rounds double too.
    backoff = T.spawn_retry_backoff
    assert waits == [
        backoff,
        2 * backoff,
        T.silence,
        backoff,
        2 * backoff,
        2 * T.silence,
        backoff,
        2 * backoff,
    ]
