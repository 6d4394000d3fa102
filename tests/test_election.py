"""StandbyElection, step by step: the test plays the relays and the runtime."""

from __future__ import annotations

import math
from typing import Any

import attrs
import pytest
from _driver import (
    CREATED,
    ME,
    PEER,
    PRIMARY,
    STRANGER,
    Driver,
    announcement,
    claim,
    heartbeat,
    make_slot,
    one,
    only,
    revocation,
)

import standby as sb
import standby.core as sbc
from standby.core._election import _STEPS, MAX_REREADS, TRANSITIONS, IllegalTransition
from standby.core._transitions import ON_DEADLINE, ON_INPUT, STEP_LEADS_TO, Input, Step

SILENCE = sb.Timing().silence


def confirmed(driver: Driver, *, last: float | None = None) -> float:
    """Reserve, (optionally) heartbeat, and confirm the silence; returns the time."""
    driver.reserve(CREATED)
    if last is not None:
        driver.feed(last, heartbeat(last))
    deadline = driver.machine.next_deadline()
    assert deadline is not None
    one(driver.tick(deadline), sbc.QueryHeartbeats)
    driver.answer_heartbeats(deadline + 1)
    assert driver.phase() is sbc.Phase.BACKOFF
    return deadline + 1


def prereading(driver: Driver) -> float:
    """Confirm the silence and let the backoff end: the pre-read is out."""
    at = confirmed(driver)
    driver.tick(at)
    return at


def claiming(driver: Driver) -> float:
    """Answer the pre-read too: the claim is out (returns the confirmation time)."""
    at = prereading(driver)
    driver.answer_claims(at + 1)
    return at


def rereading(driver: Driver) -> float:
    """Acknowledge the claim and wait out the settle: the re-read is out."""
    at = claiming(driver)
    driver.ack_claim(at + 2)
    driver.tick(at + 2 + driver.timing.claim_settle)
    return at


class TestSilenceDeadline:
    def test_deadline_is_created_at_plus_silence_without_heartbeat(self) -> None:
        driver = Driver()
        driver.reserve(CREATED)
        assert driver.machine.next_deadline() == CREATED + SILENCE

    def test_heartbeat_moves_the_deadline_exactly(self) -> None:
        driver = Driver()
        driver.reserve(CREATED)
        driver.feed(CREATED + 37.25, heartbeat(CREATED + 37.25))
        assert driver.machine.next_deadline() == CREATED + 37.25 + SILENCE
        assert driver.tick(CREATED + 37.25 + SILENCE - 0.001) == []
        one(driver.tick(CREATED + 37.25 + SILENCE), sbc.QueryHeartbeats)

    def test_heartbeat_older_than_the_slot_does_not_shorten_grace(self) -> None:
        driver = Driver()
        driver.reserve(CREATED)
        driver.feed(CREATED, heartbeat(CREATED - 500))
        assert driver.machine.next_deadline() == CREATED + SILENCE

    def test_older_heartbeat_after_newer_is_ignored(self) -> None:
        driver = Driver()
        driver.reserve(CREATED)
        driver.feed(CREATED + 60, heartbeat(CREATED + 60))
        driver.feed(CREATED + 61, heartbeat(CREATED + 30))
        assert driver.machine.last_heartbeat(PRIMARY) == CREATED + 60

    def test_heartbeat_of_an_unrelated_provider_is_ignored(self) -> None:
        driver = Driver()
        driver.reserve(CREATED)
        assert driver.feed(CREATED + 1, heartbeat(CREATED + 1, signer=STRANGER)) == []
        assert driver.machine.last_heartbeat(STRANGER) is None

    def test_next_deadline_is_the_earliest_over_all_slots(self) -> None:
        driver = Driver()
        driver.reserve(CREATED, make_slot(workload_id="a", created_at=CREATED + 50))
        driver.reserve(CREATED, make_slot(workload_id="b", primary="Q", created_at=CREATED + 20))
        driver.reserve(CREATED, make_slot(workload_id="c", created_at=CREATED + 70))
        assert driver.machine.next_deadline() == CREATED + 20 + SILENCE
        driver.feed(CREATED + 100, heartbeat(CREATED + 100, signer="Q"))
        assert driver.machine.next_deadline() == CREATED + 50 + SILENCE

    def test_one_heartbeat_rearms_every_slot_of_its_primary(self) -> None:
        driver = Driver()
        for i in range(1_000):
            driver.reserve(CREATED, make_slot(workload_id=f"w{i}", created_at=CREATED + i % 7))
        driver.feed(CREATED + 100, heartbeat(CREATED + 100))
        assert driver.machine.next_deadline() == CREATED + 100 + SILENCE
        effects = driver.tick(CREATED + 100 + SILENCE)
        query = one(effects, sbc.QueryHeartbeats)
        assert len(query.workload_ids) == 1_000  # one query for the whole primary

    def test_slots_created_later_get_their_own_grace(self) -> None:
        driver = Driver()
        driver.reserve(CREATED, make_slot(workload_id="old"))
        driver.reserve(CREATED, make_slot(workload_id="new", created_at=CREATED + 100))
        query = one(driver.tick(CREATED + SILENCE), sbc.QueryHeartbeats)
        assert query.workload_ids == ("old",)
        assert driver.machine.status("new").deadline == CREATED + 100 + SILENCE
        driver.answer_heartbeats(CREATED + SILENCE + 1)
        assert driver.machine.next_deadline() == CREATED + SILENCE + 1  # "old" backs off
        assert driver.tick(CREATED + 100 + SILENCE - 1) != []
        one(driver.tick(CREATED + 100 + SILENCE), sbc.QueryHeartbeats)

    def test_deadline_and_silence_check_agree_on_float_rounding(self) -> None:
        # With Unix-time floats, baseline + silence can round to an instant at
        # which now - baseline is still a hair short of silence.
        timing = sb.Timing().scaled(0.01)
        driver = Driver(timing)
        driver.reserve(CREATED, make_slot(created_at=1_700_000_000.0, expires_at=1_800_000_000.0))
        stamp = 1_700_000_013.4364245
        assert (stamp + timing.silence) - stamp < timing.silence
        driver.feed(stamp, heartbeat(stamp))
        deadline = driver.machine.next_deadline()
        assert deadline is not None
        assert deadline - stamp >= timing.silence
        assert driver.tick(math.nextafter(deadline, -math.inf)) == []
        one(driver.tick(deadline), sbc.QueryHeartbeats)
        driver.answer_heartbeats(deadline)
        assert driver.phase() is sbc.Phase.BACKOFF  # confirmed, no re-query loop


class TestConfirmation:
    def test_silence_confirmed_by_a_read_quorum_starts_backoff(self) -> None:
        driver = Driver()
        at = confirmed(driver)
        assert driver.machine.next_deadline() == at  # index 0: no backoff
        assert driver.machine.counters["silence_confirmed"] == 1

    def test_fewer_answers_than_read_quorum_is_not_silence(self) -> None:
        driver = Driver()
        driver.reserve(CREATED)
        driver.tick(CREATED + SILENCE)
        effects = driver.answer_heartbeats(CREATED + SILENCE + 1, answered=("r1",))
        shortfall = one(effects, sbc.QuorumShortfall)
        assert (shortfall.answered, shortfall.needed) == (1, 2)
        assert driver.phase() is sbc.Phase.RETRY_WATCH
        assert driver.machine.counters["quorum_shortfall"] == 1
        retry = CREATED + SILENCE + 1 + driver.timing.retry_interval
        assert driver.machine.next_deadline() == retry
        one(driver.tick(retry), sbc.QueryHeartbeats)

    def test_duplicate_relay_names_do_not_make_a_quorum(self) -> None:
        driver = Driver()
        driver.reserve(CREATED)
        driver.tick(CREATED + SILENCE)
        driver.answer_heartbeats(CREATED + SILENCE + 1, answered=("r1", "r1", "r1"))
        assert driver.phase() is sbc.Phase.RETRY_WATCH

    def test_newer_heartbeat_in_the_query_rearms(self) -> None:
        driver = Driver()
        driver.reserve(CREATED)
        driver.tick(CREATED + SILENCE)
        fresh = CREATED + SILENCE - 5
        driver.answer_heartbeats(CREATED + SILENCE + 1, results=[heartbeat(fresh)])
        assert driver.phase() is sbc.Phase.WATCHING
        assert driver.machine.next_deadline() == fresh + SILENCE

    def test_unanswered_query_times_out_as_a_shortfall(self) -> None:
        driver = Driver()
        driver.reserve(CREATED)
        driver.tick(CREATED + SILENCE)
        timeout = CREATED + SILENCE + 2 * driver.timing.query_timeout
        effects = driver.tick(timeout)
        one(effects, sbc.QuorumShortfall)
        assert driver.phase() is sbc.Phase.RETRY_WATCH
        late = driver.answer_heartbeats(timeout + 1)
        assert one(late, sbc.Dropped).reason is sbc.DropReason.LATE_RESULT

    def test_backoff_is_index_times_delay(self) -> None:
        driver = Driver()
        driver.reserve(CREATED, make_slot(index=2, peers=("B", "C")))
        driver.tick(CREATED + SILENCE)
        driver.answer_heartbeats(CREATED + SILENCE + 1)
        assert driver.machine.next_deadline() == CREATED + SILENCE + 1 + 2 * 30.0
        assert driver.tick(CREATED + SILENCE + 60.9) == []
        one(driver.tick(CREATED + SILENCE + 61), sbc.QueryClaims)


class TestClaimProtocol:
    def test_claims_reads_ask_only_for_the_peers_messages(self) -> None:
        # This standby's own claims cannot move it: the pre-read and the
        # settle re-read name the slot's peers as the authors to read.
        driver = Driver()
        at = confirmed(driver)
        assert one(driver.tick(at), sbc.QueryClaims).authors == (PEER,)
        one(driver.answer_claims(at + 1), sbc.PublishClaim)
        driver.ack_claim(at + 2)
        reread = one(driver.tick(at + 2 + driver.timing.claim_settle), sbc.QueryClaims)
        assert reread.authors == (PEER,)

    def test_a_slot_without_peers_reads_every_author(self) -> None:
        driver = Driver()
        driver.reserve(CREATED, slot=make_slot(peers=()))
        at = CREATED + SILENCE
        one(driver.tick(at), sbc.QueryHeartbeats)
        driver.answer_heartbeats(at + 1)
        deadline = driver.machine.next_deadline()
        assert deadline is not None
        assert one(driver.tick(deadline), sbc.QueryClaims).authors is None

    def test_happy_path_claims_settles_and_spawns_with_the_token(self) -> None:
        driver = Driver()
        at = confirmed(driver)
        one(driver.tick(at), sbc.QueryClaims)
        publish = one(driver.answer_claims(at + 1), sbc.PublishClaim)
        assert publish.claim.epoch == 1
        assert publish.claim.claimant == ME
        assert publish.claim.fencing_token == sb.fencing_token(1, 0)
        assert driver.ack_claim(at + 2) == []
        assert driver.phase() is sbc.Phase.SETTLING
        assert driver.machine.next_deadline() == at + 2 + driver.timing.claim_settle
        one(driver.tick(at + 2 + driver.timing.claim_settle), sbc.QueryClaims)
        spawn = one(driver.answer_claims(at + 18), sbc.Spawn)
        assert (spawn.workload_id, spawn.epoch) == ("w1", 1)
        assert spawn.fencing_token == sb.fencing_token(1, 0)
        assert spawn.spec == {"image": "app:1"}
        effects = driver.finish_spawn(at + 30)
        announced = one(effects, sbc.Announce).announcement
        assert (announced.new_primary, announced.epoch) == (ME, 1)
        promoted = one(effects, sbc.Promoted)
        assert promoted.lease_from == at + 1
        assert promoted.standbys == (PEER,)
        assert one(effects, sbc.SlotRemoved).reason == "promoted"
        assert "w1" not in driver.machine.slots

    def test_claim_is_never_published_before_the_preread(self) -> None:
        driver = Driver()
        at = confirmed(driver)
        effects = driver.tick(at)
        assert only(effects, sbc.PublishClaim) == []
        one(effects, sbc.QueryClaims)

    @pytest.mark.parametrize(
        "rival", [{"index": 1}, {"epoch": 2}], ids=["the-same-epoch", "a-later-epoch"]
    )
    def test_peer_holding_the_epoch_makes_us_stand_down(self, rival: dict[str, int]) -> None:
        driver = Driver()
        at = prereading(driver)
        effects = driver.answer_claims(at + 1, results=[claim(at, **rival)])
        assert only(effects, sbc.PublishClaim) == []
        status = driver.machine.status("w1")
        assert status.phase is sbc.Phase.DEFERRED
        assert status.deferred_to == PEER

    def test_withdrawn_or_older_epoch_claims_do_not_block(self) -> None:
        driver = Driver()
        at = prereading(driver)
        results = [claim(at - 5, withdrawn=False), claim(at - 1, withdrawn=True)]
        one(driver.answer_claims(at + 1, results=results), sbc.PublishClaim)

    def test_claim_from_a_stranger_is_dropped_not_obeyed(self) -> None:
        driver = Driver()
        at = prereading(driver)
        effects = driver.answer_claims(at + 1, results=[claim(at, signer=STRANGER)])
        assert one(effects, sbc.Dropped).reason is sbc.DropReason.NOT_A_PEER
        one(effects, sbc.PublishClaim)

    def test_fm32_a_claim_on_an_epoch_the_slot_is_past_is_no_news(self) -> None:
        # The first primary claims epoch 0 when it starts the workload; the
        # slot is at epoch 0, so neither that claim nor a stranger's on it
        # is a rival or worth a drop report.
        driver = Driver()
        at = prereading(driver)
        results = [claim(at, signer=PRIMARY, epoch=0, index=0), claim(at, signer=STRANGER, epoch=0)]
        effects = driver.answer_claims(at + 1, results=results)
        assert not only(effects, sbc.Dropped)
        one(effects, sbc.PublishClaim)

    def test_preread_shortfall_retries_later(self) -> None:
        driver = Driver()
        at = prereading(driver)
        effects = driver.answer_claims(at + 1, answered=("r3",))
        assert one(effects, sbc.QuorumShortfall).stage == "preread"
        assert driver.phase() is sbc.Phase.RETRY_CLAIM
        one(driver.tick(at + 1 + driver.timing.retry_interval), sbc.QueryClaims)

    def test_claim_without_write_quorum_is_withdrawn_and_retried(self) -> None:
        driver = Driver()
        at = claiming(driver)
        effects = driver.ack_claim(at + 2, acked=("r1",))
        withdrawn = one(effects, sbc.WithdrawClaim).claim
        assert withdrawn.withdrawn
        assert withdrawn.epoch == 1
        assert driver.phase() is sbc.Phase.RETRY_CLAIM

    def test_claim_acknowledged_after_claim_timeout_is_withdrawn(self) -> None:
        driver = Driver()
        at = claiming(driver)
        late = at + driver.timing.claim_timeout + 0.5
        effects = driver.ack_claim(late)
        assert one(effects, sbc.WithdrawClaim).claim.withdrawn

    def test_claim_exactly_at_claim_timeout_counts(self) -> None:
        driver = Driver()
        at = claiming(driver)
        assert driver.ack_claim(at + driver.timing.claim_timeout) == []
        assert driver.phase() is sbc.Phase.SETTLING

    def test_unreported_claim_times_out_and_is_withdrawn(self) -> None:
        driver = Driver()
        at = claiming(driver)
        effects = driver.tick(at + driver.timing.claim_timeout)
        one(effects, sbc.WithdrawClaim)
        assert driver.phase() is sbc.Phase.RETRY_CLAIM

    def test_settle_reread_lower_index_rival_wins_the_tie(self) -> None:
        driver = Driver()
        driver.reserve(CREATED, make_slot(index=1, peers=("Z",)))
        driver.tick(CREATED + SILENCE)
        driver.answer_heartbeats(CREATED + SILENCE)
        at = CREATED + SILENCE + 30
        driver.tick(at)
        driver.answer_claims(at)
        driver.ack_claim(at + 1)
        driver.tick(at + 1 + driver.timing.claim_settle)
        rival = claim(at + 2, signer="Z", index=0)
        effects = driver.answer_claims(at + 17, results=[rival])
        assert only(effects, sbc.Spawn) == []
        one(effects, sbc.WithdrawClaim)
        assert driver.phase() is sbc.Phase.DEFERRED

    def test_settle_reread_higher_index_rival_loses_the_tie(self) -> None:
        driver = Driver()
        at = rereading(driver)
        effects = driver.answer_claims(at + 18, results=[claim(at + 3, index=1)])
        one(effects, sbc.Spawn)

    def test_settle_reread_shortfall_reads_again_keeping_the_claim(self) -> None:
        # The default timing leaves the lease room for two more re-reads: the
        # claim stays, and a re-read that reaches its quorum spawns.
        driver = Driver()
        at = rereading(driver)
        effects = driver.answer_claims(at + 18, answered=("r1",))
        one(effects, sbc.QuorumShortfall)
        again = one(effects, sbc.QueryClaims)
        assert only(effects, sbc.WithdrawClaim) == []
        assert driver.phase() is sbc.Phase.REREAD
        assert driver.machine.next_deadline() == at + 18 + 2 * driver.timing.query_timeout
        assert driver.machine.counters["reread_again"] == 1
        effects = driver.answer_claims(at + 19)
        spawn = one(effects, sbc.Spawn)
        published = one([e for _, e in driver.log], sbc.PublishClaim)
        assert spawn.fencing_token == published.claim.fencing_token
        assert again.workload_ids == ("w1",)

    def test_a_reread_that_misses_its_deadline_is_read_again_too(self) -> None:
        driver = Driver()
        at = rereading(driver)
        effects = driver.tick(at + 2 + driver.timing.claim_settle + 2 * driver.timing.query_timeout)
        one(effects, sbc.QueryClaims)
        assert only(effects, sbc.WithdrawClaim) == []
        assert driver.phase() is sbc.Phase.REREAD

    def test_settle_reread_shortfall_withdraws_after_the_last_repeat(self) -> None:
        driver = Driver()
        at = rereading(driver)
        for attempt in range(1, MAX_REREADS + 1):
            effects = driver.answer_claims(at + 17 + attempt, answered=("r1",))
            one(effects, sbc.QueryClaims)
            assert only(effects, sbc.WithdrawClaim) == []
        effects = driver.answer_claims(at + 20, answered=("r1",))
        one(effects, sbc.WithdrawClaim)
        assert only(effects, sbc.Spawn) == []
        assert driver.phase() is sbc.Phase.RETRY_CLAIM
        assert driver.machine.counters["reread_again"] == MAX_REREADS

    def test_settle_reread_shortfall_withdraws_when_the_lease_has_no_room(self) -> None:
        # Here the repeat and the spawn after it would end after the lease that
        # began with the claim: withdraw at once, as before.
        driver = Driver()
        rereading(driver)
        claimed_at = one([e for _, e in driver.log], sbc.PublishClaim).claim.claimed_at
        timing = driver.timing
        late = claimed_at + timing.lease - 2 * timing.query_timeout - timing.spawn_timeout
        effects = driver.answer_claims(late, answered=("r1",))
        one(effects, sbc.WithdrawClaim)
        assert only(effects, sbc.QueryClaims) == []
        assert "reread_again" not in driver.machine.counters

    def test_a_preread_shortfall_is_not_read_again(self) -> None:
        driver = Driver()
        at = prereading(driver)
        effects = driver.answer_claims(at + 1, answered=("r1",))
        one(effects, sbc.QuorumShortfall)
        assert only(effects, sbc.QueryClaims) == []
        assert driver.phase() is sbc.Phase.RETRY_CLAIM

    def test_atomic_claims_skip_the_settle_wait(self) -> None:
        driver = Driver(atomic=True)
        at = prereading(driver)
        cas = one(driver.answer_claims(at + 1), sbc.CompareAndSetClaim)
        assert only(driver.log, sbc.PublishClaim) == []
        effects = driver.machine.claim_compared(at + 2, cas.request_id, won=True)
        spawn = one(effects, sbc.Spawn)
        assert spawn.fencing_token == cas.claim.fencing_token

    def test_atomic_claim_lost_defers_to_the_holder(self) -> None:
        driver = Driver(atomic=True)
        at = prereading(driver)
        cas = one(driver.answer_claims(at + 1), sbc.CompareAndSetClaim)
        holder = claim(at, index=1).message
        effects = driver.machine.claim_compared(at + 2, cas.request_id, won=False, holder=holder)
        assert only(effects, sbc.Spawn) == []
        assert driver.machine.status("w1").deferred_to == PEER

    def test_fm28_a_compare_and_set_lost_to_an_old_claim_follows_the_holder(self) -> None:
        # The holder won the epoch long ago and never announced (its host died
        # right after): the slot follows it as the primary of that epoch, as a
        # claims read would, so that its silence leads to the next epoch.
        driver = Driver(atomic=True)
        at = prereading(driver)
        cas = one(driver.answer_claims(at + 1), sbc.CompareAndSetClaim)
        now = at + 2
        holder = claim(now - driver.timing.peer_claim_grace).message
        effects = driver.machine.claim_compared(now, cas.request_id, won=False, holder=holder)
        assert only(effects, sbc.WithdrawClaim) == []  # it never held the epoch
        changed = one(effects, sbc.PrimaryChanged)
        assert (changed.old_primary, changed.new_primary, changed.epoch) == (PRIMARY, PEER, 1)
        assert driver.phase() is sbc.Phase.WATCHING
        deadline = driver.machine.next_deadline()
        assert deadline == now + SILENCE
        driver.tick(deadline)
        driver.answer_heartbeats(deadline)
        driver.tick(deadline)
        retry = one(driver.answer_claims(deadline + 1), sbc.CompareAndSetClaim)
        assert retry.claim.epoch == 2

    def test_spawn_carries_the_revocation_state_uri(self) -> None:
        driver = Driver()
        driver.reserve(CREATED)
        driver.feed(CREATED + 5, revocation(CREATED + 5, state_uri="s3://bucket/ckpt"))
        driver.run_to_spawn(CREATED + 5)
        assert driver.spawns()[0].restore_from == "s3://bucket/ckpt"


class TestDeferredAndFollow:
    def test_peer_release_lets_us_go_at_once(self) -> None:
        driver = Driver()
        at = prereading(driver)
        driver.answer_claims(at + 1, results=[claim(at, index=1)])
        effects = driver.feed(at + 3, claim(at + 3, index=1, withdrawn=True))
        one(effects, sbc.QueryClaims)
        assert driver.phase() is sbc.Phase.PREREAD

    def test_fm21_deferred_slots_leave_deferred_in_index_order(self) -> None:
        # Standbys 1 and 2 both defer to standby 0 ("H"), whose spawn then
        # fails: released by the same withdrawal, the next standby (1) goes
        # at once (guarantee 2) and standby 2 waits one promotion delay more,
        # so standby 1 pre-reads first (and standby 2 then sees its claim).
        delay = sb.Timing().promotion_delay
        drivers: dict[int, Driver] = {}
        for me, index, peers in (("B", 1, ("H", "C")), ("C", 2, ("H", "B"))):
            driver = Driver(me=me)
            driver.reserve(CREATED, make_slot(index=index, peers=peers))
            driver.tick(CREATED + SILENCE)
            driver.answer_heartbeats(CREATED + SILENCE)
            backoff_end = driver.machine.next_deadline()
            assert backoff_end == CREATED + SILENCE + index * delay
            one(driver.tick(backoff_end), sbc.QueryClaims)
            driver.answer_claims(
                backoff_end + 1, results=[claim(CREATED + SILENCE, signer="H", index=0)]
            )
            assert driver.phase() is sbc.Phase.DEFERRED
            drivers[index] = driver
        released = CREATED + SILENCE + 2 * delay + 10
        withdrawal = claim(released, signer="H", index=0, withdrawn=True)
        one(drivers[1].feed(released, withdrawal), sbc.QueryClaims)
        assert drivers[1].phase() is sbc.Phase.PREREAD
        assert only(drivers[2].feed(released, withdrawal), sbc.QueryClaims) == []
        assert drivers[2].phase() is sbc.Phase.DEFERRED
        assert drivers[2].machine.next_deadline() == released + delay
        one(drivers[2].tick(released + delay), sbc.QueryClaims)
        assert drivers[2].phase() is sbc.Phase.PREREAD

    def test_fm21_a_deferral_that_runs_out_adds_the_index_backoff(self) -> None:
        # Standbys 1 and 2 defer to one claim stamped ahead of their clocks
        # (within max_clock_skew): the grace is counted from that stamp for
        # both, and only the index backoff keeps them apart when it ends.
        timing = sb.Timing(promotion_delay=5.0)
        stamp = CREATED + SILENCE + 15
        ends = []
        for index in (1, 2):
            driver = Driver(timing)
            driver.reserve(CREATED, make_slot(index=index, peers=("B", "C")))
            driver.tick(CREATED + SILENCE)
            driver.answer_heartbeats(CREATED + SILENCE)
            backoff_end = driver.machine.next_deadline()
            assert backoff_end == CREATED + SILENCE + index * 5.0
            driver.tick(backoff_end)
            driver.answer_claims(backoff_end, results=[claim(stamp, signer="B", index=0)])
            assert driver.phase() is sbc.Phase.DEFERRED
            ends.append(driver.machine.next_deadline())
        grace_end = stamp + timing.peer_claim_grace
        assert ends == [grace_end + 5.0, grace_end + 10.0]

    def test_peer_announcement_makes_us_follow_the_new_primary(self) -> None:
        driver = Driver()
        driver.reserve(CREATED, make_slot(index=1, peers=("B", "C")))
        effects = driver.feed(CREATED + 50, announcement(CREATED + 50, signer="B"))
        changed = one(effects, sbc.PrimaryChanged)
        assert (changed.old_primary, changed.new_primary, changed.epoch) == (PRIMARY, "B", 1)
        slot = one(effects, sbc.SlotSaved).slot
        assert (slot.primary, slot.epoch, slot.standby_index, slot.standby_count) == ("B", 1, 0, 2)
        assert slot.peers == ("C",)
        assert driver.machine.next_deadline() == CREATED + 50 + SILENCE

    def test_further_copies_of_a_followed_announcement_are_duplicates(self) -> None:
        driver = Driver()
        driver.reserve(CREATED)
        driver.feed(CREATED + 50, announcement(CREATED + 50))
        for relay in ("r2", "r3"):
            copy = attrs.evolve(announcement(CREATED + 50), relay=relay)
            dropped = one(driver.feed(CREATED + 51, copy), sbc.Dropped)
            assert dropped.reason is sbc.DropReason.DUPLICATE
        assert "announcement_not_a_peer" not in driver.machine.counters

    def test_announcement_from_a_stranger_is_dropped(self) -> None:
        driver = Driver()
        driver.reserve(CREATED)
        effects = driver.feed(CREATED + 1, announcement(CREATED + 1, signer=STRANGER))
        assert one(effects, sbc.Dropped).reason is sbc.DropReason.NOT_A_PEER
        assert driver.machine.slots["w1"].primary == PRIMARY

    def test_announcement_of_an_old_epoch_is_stale(self) -> None:
        driver = Driver()
        driver.reserve(CREATED, make_slot(epoch=2))
        effects = driver.feed(CREATED + 1, announcement(CREATED + 1, epoch=2))
        assert one(effects, sbc.Dropped).reason is sbc.DropReason.STALE

    def test_claim_held_past_the_grace_is_treated_as_the_new_primary(self) -> None:
        driver = Driver()
        at = prereading(driver)
        driver.answer_claims(at + 1, results=[claim(at, index=1)])
        later = at + 1 + driver.timing.peer_claim_grace
        assert driver.machine.next_deadline() == later
        one(driver.tick(later), sbc.QueryClaims)
        effects = driver.answer_claims(later + 1, results=[claim(at, index=1)])
        changed = one(effects, sbc.PrimaryChanged)
        assert (changed.new_primary, changed.epoch) == (PEER, 1)
        # Now it watches the claimant: its silence leads to epoch 2.
        deadline = driver.machine.next_deadline()
        assert deadline == later + 1 + SILENCE
        driver.tick(deadline)
        driver.answer_heartbeats(deadline)
        driver.tick(deadline)
        publish = one(driver.answer_claims(deadline + 1), sbc.PublishClaim)
        assert publish.claim.epoch == 2
        assert publish.claim.fencing_token > sb.fencing_token(1, 1)


class TestFollowedClaimant:
    """Failure mode 30: a peer followed on its claim alone may still stand by."""

    def followed(self, driver: Driver) -> float:
        """Follow PEER (index 1) on its claim alone; returns the time."""
        at = prereading(driver)
        driver.answer_claims(at + 1, results=[claim(at, index=1)])
        later = at + 1 + driver.timing.peer_claim_grace
        driver.tick(later)
        effects = driver.answer_claims(later + 1, results=[claim(at, index=1)])
        assert one(effects, sbc.PrimaryChanged).new_primary == PEER
        return later + 1

    def test_fm30_a_claimant_followed_on_its_claim_alone_keeps_its_place(self) -> None:
        driver = Driver()
        self.followed(driver)
        slot = driver.machine.slots["w1"]
        assert (slot.primary, slot.epoch) == (PEER, 1)
        assert (slot.standby_index, slot.standby_count, slot.peers) == (0, 2, (PEER,))

    def test_fm30_the_standby_taking_over_from_a_claimant_lists_it_among_its_standbys(
        self,
    ) -> None:
        driver = Driver()
        at = self.followed(driver)
        deadline = driver.machine.next_deadline()
        assert deadline == at + SILENCE
        one(driver.tick(deadline), sbc.QueryHeartbeats)
        driver.answer_heartbeats(deadline + 1)
        assert driver.phase() is sbc.Phase.BACKOFF
        driver.run_to_spawn(deadline + 1)
        promoted = one(driver.finish_spawn(deadline + 100), sbc.Promoted)
        assert (promoted.epoch, promoted.fencing_token) == (2, sb.fencing_token(2, 0))
        assert promoted.standbys == (PEER,)  # PEER never promoted: it may watch us

    def test_an_announced_primary_leaves_the_lineup_after_a_claim_follow(self) -> None:
        driver = Driver(me="C")
        driver.reserve(CREATED, make_slot(index=2, peers=(ME, PEER)))
        deadline = CREATED + SILENCE
        one(driver.tick(deadline), sbc.QueryHeartbeats)
        driver.answer_heartbeats(deadline)
        backoff = driver.machine.next_deadline()
        assert backoff == deadline + 2 * driver.timing.promotion_delay
        driver.tick(backoff)
        driver.answer_claims(backoff + 1, results=[claim(backoff, signer=ME, index=0)])
        # The deferral ends at the claim's grace plus C's index backoff (FM 21).
        timing = driver.timing
        later = backoff + 1 + timing.peer_claim_grace + 2 * timing.promotion_delay
        driver.tick(later)
        driver.answer_claims(later + 1, results=[claim(backoff, signer=ME, index=0)])
        # A is followed on its claim alone: it keeps its place before B and C.
        slot = driver.machine.slots["w1"]
        assert (slot.primary, slot.epoch, slot.peers, slot.standby_index) == (ME, 1, (ME, PEER), 2)
        # B announces epoch 2: B promoted, so it leaves the order; A stays.
        driver.feed(later + 50, announcement(later + 50, signer=PEER, epoch=2))
        slot = driver.machine.slots["w1"]
        assert (slot.primary, slot.epoch, slot.peers, slot.standby_index) == (PEER, 2, (ME,), 1)
        assert slot.primary_since == later + 50


class TestRestartAfterAFollow:
    """Failure mode 27: a restarted follower times a fresh primary from its takeover."""

    def test_fm27_a_followed_slot_saved_and_restored_keeps_its_new_origin(self) -> None:
        driver = Driver()
        driver.reserve(CREATED)
        took_over = CREATED + 5_000
        saved = one(driver.feed(took_over + 1, announcement(took_over)), sbc.SlotSaved).slot
        assert (saved.primary, saved.epoch, saved.primary_since) == (PEER, 1, took_over)
        assert saved.origin == took_over
        # The follower restarts a little later, before any heartbeat of PEER.
        restarted = Driver()
        assert restarted.machine.restore(took_over + 20, [saved]) == [
            sbc.PhaseChanged("w1", None, sbc.Phase.WATCHING, revoked=False)
        ]
        assert restarted.machine.next_deadline() == took_over + SILENCE
        assert restarted.tick(took_over + 20) == []
        assert restarted.phase() is sbc.Phase.WATCHING

    def test_fm27_a_claimant_followed_after_the_grace_is_timed_from_the_follow(self) -> None:
        driver = Driver()
        at = prereading(driver)
        driver.answer_claims(at + 1, results=[claim(at, index=1)])
        later = at + 1 + driver.timing.peer_claim_grace
        driver.tick(later)
        effects = driver.answer_claims(later + 1, results=[claim(at, index=1)])
        saved = one(effects, sbc.SlotSaved).slot
        assert saved.primary_since == later + 1
        restarted = Driver()
        restarted.machine.restore(later + 2, [saved])
        assert restarted.machine.next_deadline() == later + 1 + SILENCE

    def test_fm27_a_slot_saved_before_the_field_existed_is_timed_from_its_reservation(
        self,
    ) -> None:
        slot = make_slot(primary=PEER, peers=(), epoch=1)
        assert slot.primary_since is None
        assert slot.origin == CREATED
        restarted = Driver()
        restarted.machine.restore(CREATED + 10, [slot])
        assert restarted.machine.next_deadline() == CREATED + SILENCE

    def test_the_takeover_never_moves_the_origin_before_the_reservation(self) -> None:
        slot = attrs.evolve(make_slot(), primary_since=CREATED - 500)
        assert slot.origin == CREATED


class TestPrimaryComesBack:
    def test_heartbeat_during_backoff_rearms(self) -> None:
        driver = Driver()
        driver.reserve(CREATED, make_slot(index=1, peers=("B",)))
        driver.tick(CREATED + SILENCE)
        driver.answer_heartbeats(CREATED + SILENCE)
        assert driver.phase() is sbc.Phase.BACKOFF
        driver.feed(CREATED + SILENCE + 3, heartbeat(CREATED + SILENCE + 2))
        assert driver.phase() is sbc.Phase.WATCHING
        assert driver.machine.counters["rearmed_by_heartbeat"] == 1

    def test_heartbeat_while_claiming_withdraws_the_claim(self) -> None:
        driver = Driver()
        at = claiming(driver)
        driver.ack_claim(at + 2)
        effects = driver.feed(at + 3, heartbeat(at + 3))
        one(effects, sbc.WithdrawClaim)
        assert driver.phase() is sbc.Phase.WATCHING

    def test_delayed_old_heartbeat_does_not_rearm(self) -> None:
        driver = Driver()
        at = confirmed(driver, last=CREATED + 10)
        driver.feed(at, heartbeat(CREATED + 10.5))  # newer, but still silent for long
        assert driver.phase() is sbc.Phase.BACKOFF

    def test_revoked_slot_ignores_later_heartbeats(self) -> None:
        driver = Driver()
        driver.reserve(CREATED, make_slot(index=1, peers=("B",)))
        driver.feed(CREATED + 5, revocation(CREATED + 5))
        driver.feed(CREATED + 6, heartbeat(CREATED + 6))
        assert driver.phase() is sbc.Phase.BACKOFF
        assert driver.machine.status("w1").revoked


class TestRevocation:
    def test_revocation_skips_the_silence_wait(self) -> None:
        driver = Driver()
        driver.reserve(CREATED)
        driver.feed(CREATED + 60, heartbeat(CREATED + 60))
        driver.feed(CREATED + 61, revocation(CREATED + 61))
        assert driver.phase() is sbc.Phase.BACKOFF
        one(driver.tick(CREATED + 61), sbc.QueryClaims)

    def test_revocation_for_another_epoch_is_dropped(self) -> None:
        driver = Driver()
        driver.reserve(CREATED)
        effects = driver.feed(CREATED + 5, revocation(CREATED + 5, epoch=1))
        assert one(effects, sbc.Dropped).reason is sbc.DropReason.WRONG_EPOCH
        assert driver.phase() is sbc.Phase.WATCHING

    def test_revocation_for_an_unknown_workload_is_dropped(self) -> None:
        driver = Driver()
        driver.reserve(CREATED)
        effects = driver.feed(CREATED + 5, revocation(CREATED + 5, workload_id="other"))
        assert one(effects, sbc.Dropped).reason is sbc.DropReason.UNKNOWN_WORKLOAD

    def test_future_dated_revocation_is_dropped(self) -> None:
        driver = Driver()
        driver.reserve(CREATED)
        skew = driver.timing.max_clock_skew
        effects = driver.feed(CREATED + 5, revocation(CREATED + 5 + skew + 1))
        assert one(effects, sbc.Dropped).reason is sbc.DropReason.FUTURE_DATED
        assert driver.phase() is sbc.Phase.WATCHING

    def test_revocation_older_than_the_slot_is_a_replay(self) -> None:
        driver = Driver()
        driver.reserve(CREATED)
        effects = driver.feed(CREATED + 5, revocation(CREATED - 500))
        assert one(effects, sbc.Dropped).reason is sbc.DropReason.STALE


class TestExpiryAndTable:
    def test_reserving_an_expired_slot_raises(self) -> None:
        driver = Driver()
        with pytest.raises(sb.InvalidSlot, match="expired"):
            driver.machine.reserve(CREATED + 10, make_slot(expires_at=CREATED + 10))

    def test_renewal_while_watching_replaces_the_slot(self) -> None:
        driver = Driver()
        driver.reserve(CREATED)
        driver.reserve(CREATED + 5, make_slot(expires_at=CREATED + 999_999))
        assert driver.machine.slots["w1"].expires_at == CREATED + 999_999

    def test_cannot_replace_a_slot_whose_promotion_is_under_way(self) -> None:
        driver = Driver()
        at = confirmed(driver)
        with pytest.raises(sb.InvalidSlot, match="backoff"):
            driver.machine.reserve(at, make_slot())

    def test_cannot_reserve_again_after_promoting(self) -> None:
        driver = Driver()
        driver.reserve(CREATED)
        driver.feed(CREATED + 1, revocation(CREATED + 1))
        driver.finish_spawn(driver.run_to_spawn(CREATED + 1) + 1)
        with pytest.raises(sb.InvalidSlot, match="already promoted"):
            driver.machine.reserve(CREATED + 100, make_slot())

    def test_remove_withdraws_a_published_claim(self) -> None:
        driver = Driver()
        at = claiming(driver)
        effects = driver.machine.remove(at + 2, "w1")
        one(effects, sbc.WithdrawClaim)
        assert one(effects, sbc.SlotRemoved).reason == "removed"
        assert driver.machine.slots == {}

    def test_status_of_unknown_slot_raises_key_error(self) -> None:
        with pytest.raises(KeyError):
            Driver().machine.status("nope")

    def test_late_results_after_removal_are_ignored(self) -> None:
        driver = Driver()
        at = prereading(driver)
        driver.machine.remove(at, "w1")
        effects: list[Any] = driver.answer_claims(at + 1)
        assert one(effects, sbc.Dropped).reason is sbc.DropReason.LATE_RESULT

    def test_spawn_reported_after_timeout_is_stopped_as_an_orphan(self) -> None:
        driver = Driver()
        driver.reserve(CREATED)
        driver.feed(CREATED + 1, revocation(CREATED + 1))
        at = driver.run_to_spawn(CREATED + 1)
        timeout = at + driver.timing.spawn_timeout + driver.timing.query_timeout
        assert driver.machine.next_deadline() == timeout
        effects = driver.tick(timeout)
        one(effects, sbc.WithdrawClaim)
        late = driver.finish_spawn(timeout + 1, ok=True)
        orphan = one(late, sbc.StopOrphan)
        assert orphan.fencing_token == sb.fencing_token(1, 0)
        assert only(late, sbc.Promoted) == []

    def test_spawn_finishing_after_the_claims_lease_is_stopped_and_retried(self) -> None:
        driver = Driver()
        driver.reserve(CREATED)
        driver.feed(CREATED + 1, revocation(CREATED + 1))
        driver.run_to_spawn(CREATED + 1)
        claim = next(e for _, e in driver.log if isinstance(e, sbc.PublishClaim)).claim
        late = claim.claimed_at + driver.timing.lease
        effects = driver.finish_spawn(late, ok=True)
        assert one(effects, sbc.StopOrphan).fencing_token == claim.fencing_token
        assert only(effects, sbc.Announce) == []
        one(effects, sbc.WithdrawClaim)
        assert driver.phase() is sbc.Phase.RETRY_CLAIM
        assert driver.machine.counters["spawn_outlived_lease"] == 1

    def test_slot_expiring_mid_spawn_is_stopped_not_promoted(self) -> None:
        driver = Driver()
        driver.reserve(CREATED, make_slot(expires_at=CREATED + 40))
        driver.feed(CREATED + 1, revocation(CREATED + 1))
        at = driver.run_to_spawn(CREATED + 1)
        assert at < CREATED + 40
        assert driver.machine.next_deadline() != CREATED + 40  # no busy loop on it
        effects = driver.finish_spawn(CREATED + 41, ok=True)
        one(effects, sbc.StopOrphan)
        assert one(effects, sbc.SlotRemoved).reason == "expired"
        assert only(effects, sbc.Announce) == []


def test_removing_oldest_first_keeps_the_primary_deadline_exact() -> None:
    # Slots of one primary removed oldest-first (the churn case): the origin
    # heap drops them lazily and the deadline always follows the oldest left.
    timing = sb.Timing()
    machine: sb.StandbyElection[Any] = sb.StandbyElection(me="me", timing=timing)
    now = CREATED + 50
    for i in range(40):
        machine.reserve(now, make_slot(workload_id=f"w{i:02d}", created_at=CREATED + i))
    for i in range(39):
        machine.remove(now, f"w{i:02d}")
        assert machine.next_deadline() == CREATED + i + 1 + timing.silence
    # Re-reserving and removing many times does not let stale entries pile up.
    for k in range(200):
        machine.reserve(now, make_slot(workload_id=f"x{k}", created_at=CREATED + 100 + k))
        machine.remove(now, f"x{k}")
    assert machine.next_deadline() == CREATED + 39 + timing.silence
    assert len(machine._index.origins[PRIMARY]) <= 2 * len(machine.slots) + 16


def test_primary_deadline_confirms_only_the_due_prefix() -> None:
    timing = sb.Timing()
    machine: sb.StandbyElection[Any] = sb.StandbyElection(me="me", timing=timing)
    for i in range(3):
        machine.reserve(CREATED, make_slot(workload_id=f"w{i}", created_at=CREATED + 10 * i))
    effects = machine.tick(CREATED + 10 + timing.silence)
    (query,) = [e for e in effects if isinstance(e, sbc.QueryHeartbeats)]
    assert query.workload_ids == ("w0", "w1")
    assert machine.status("w2").phase is sbc.Phase.WATCHING
    assert machine.status("w2").deadline == CREATED + 20 + timing.silence


def test_correlated_failover_reads_claims_once_per_primary_and_step() -> None:
    # Five slots of one dead primary: one confirmation, one pre-read, one
    # claim per workload, and one re-read for the claims acknowledged at
    # different instants (each re-read starts after its own settle).
    timing = sb.Timing()
    machine: sb.StandbyElection[Any] = sb.StandbyElection(me=ME, timing=timing)
    ids = [f"w{i}" for i in range(5)]
    for wid in ids:
        machine.reserve(CREATED, make_slot(workload_id=wid))
    now = CREATED + timing.silence
    (confirm,) = only(machine.tick(now), sbc.QueryHeartbeats)
    machine.heartbeats_queried(now, confirm.request_id, [], ["r1", "r2"])
    (preread,) = only(machine.tick(now), sbc.QueryClaims)
    assert preread.workload_ids == tuple(ids)
    claims = only(
        machine.claims_queried(now + 1, preread.request_id, [], ["r1", "r2"]), sbc.PublishClaim
    )
    assert sorted(c.claim.workload_id for c in claims) == ids
    for k, publish in enumerate(claims):
        machine.claim_published(now + 2 + 0.1 * k, publish.request_id, ["r1", "r2"])
    first = machine.next_deadline()
    assert first == now + 2 + timing.claim_settle
    assert only(machine.tick(first), sbc.QueryClaims) == []  # waits for its batch
    last = now + 2 + 0.4 + timing.claim_settle
    assert machine.next_deadline() == last
    (reread,) = only(machine.tick(last), sbc.QueryClaims)
    assert sorted(reread.workload_ids) == ids
    spawns = only(machine.claims_queried(last + 1, reread.request_id, [], ["r1", "r2"]), sbc.Spawn)
    assert sorted(s.workload_id for s in spawns) == ids
    assert machine.counters["claims_reads"] == 2


def test_a_rival_claim_in_a_batched_reread_stops_only_its_workload() -> None:
    timing = sb.Timing()
    machine: sb.StandbyElection[Any] = sb.StandbyElection(me=ME, timing=timing)
    for wid in ("w1", "w2"):
        machine.reserve(CREATED, make_slot(workload_id=wid, index=1))
    now = CREATED + timing.silence
    (confirm,) = only(machine.tick(now), sbc.QueryHeartbeats)
    machine.heartbeats_queried(now, confirm.request_id, [], ["r1", "r2"])
    now += timing.promotion_delay
    (preread,) = only(machine.tick(now), sbc.QueryClaims)
    publishes = only(
        machine.claims_queried(now, preread.request_id, [], ["r1", "r2"]), sbc.PublishClaim
    )
    for publish in publishes:
        machine.claim_published(now + 1, publish.request_id, ["r1", "r2"])
    settle = now + 1 + timing.claim_settle
    (reread,) = only(machine.tick(settle), sbc.QueryClaims)
    rival_claim = sb.PromotionClaim(
        workload_id="w2",
        epoch=1,
        fencing_token=sb.fencing_token(1, 0),
        claimant=PEER,
        standby_index=0,
        claimed_at=now,
    )
    rival = sb.Envelope(rival_claim, PEER, "r1", settle)
    effects = machine.claims_queried(settle, reread.request_id, [rival], ["r1", "r2"])
    assert [s.workload_id for s in only(effects, sbc.Spawn)] == ["w1"]
    assert machine.status("w2").phase is sbc.Phase.DEFERRED


class TestTransitions:
    def test_the_happy_path_reports_every_move_in_order(self) -> None:
        driver = Driver()
        at = rereading(driver)
        driver.answer_claims(at + 3 + driver.timing.claim_settle)
        driver.finish_spawn(at + 30)
        ph = sbc.Phase
        assert [(m.old, m.new) for m in driver.moves] == [
            (None, ph.WATCHING),
            (ph.WATCHING, ph.CONFIRMING),
            (ph.CONFIRMING, ph.BACKOFF),
            (ph.BACKOFF, ph.PREREAD),
            (ph.PREREAD, ph.CLAIMING),
            (ph.CLAIMING, ph.SETTLING),
            (ph.SETTLING, ph.REREAD),
            (ph.REREAD, ph.SPAWNING),
            (ph.SPAWNING, None),
        ]
        assert {m.workload_id for m in driver.moves} == {"w1"}
        assert all(m.new in TRANSITIONS[m.old] for m in driver.moves)

    def test_phase_reports_come_after_the_other_effects_of_a_call(self) -> None:
        machine: sb.StandbyElection[Any] = sb.StandbyElection(me=ME, timing=sb.Timing())
        effects = machine.reserve(CREATED, make_slot())
        assert effects == [
            sbc.SlotSaved(make_slot()),
            sbc.PhaseChanged("w1", None, sbc.Phase.WATCHING, False),
        ]
        assert machine.tick(CREATED + 1) == []

    def test_a_revocation_is_reported_with_the_move(self) -> None:
        driver = Driver()
        driver.reserve(CREATED)
        driver.feed(CREATED + 5, revocation(CREATED + 5))
        last = driver.moves[-1]
        assert (last.old, last.new, last.revoked) == (sbc.Phase.WATCHING, sbc.Phase.BACKOFF, True)

    def test_a_move_outside_the_table_is_an_internal_error(self) -> None:
        driver = Driver()
        driver.reserve(CREATED)
        entry = driver.machine._index.entries["w1"]
        with pytest.raises(IllegalTransition, match="WATCHING to SPAWNING"):
            driver.machine._enter(entry, sbc.Phase.SPAWNING)
        assert driver.machine.phase("w1") is sbc.Phase.WATCHING

    def test_each_deadline_step_leads_only_to_legal_moves(self) -> None:
        # Every phase but WATCHING (whose deadline is its primary's) and PACED
        # (let in when the claim window has room) has a step.
        assert set(ON_DEADLINE) == set(sbc.Phase) - {sbc.Phase.WATCHING, sbc.Phase.PACED}
        for phase, step in ON_DEADLINE.items():
            assert STEP_LEADS_TO[step] <= TRANSITIONS[phase] | {phase}, (phase, step)
        # The machine knows how to take every step the tables name (the
        # announcement rule follows the announcer itself).
        assert set(_STEPS) == set(Step) - {Step.FOLLOW}
        assert set(STEP_LEADS_TO) == set(Step)

    def test_each_input_step_leads_only_to_legal_moves(self) -> None:
        assert set(ON_INPUT) == set(Input)
        for kind, steps in ON_INPUT.items():
            for phase, step in steps.items():
                assert STEP_LEADS_TO[step] <= TRANSITIONS[phase] | {phase}, (kind, phase)
        # A spawning slot never follows an announcement (the conflict is dropped).
        assert sbc.Phase.SPAWNING not in ON_INPUT[Input.ANNOUNCED]

    def test_a_failed_call_leaves_no_report_for_the_next(self) -> None:
        machine: sb.StandbyElection[Any] = sb.StandbyElection(me=ME, timing=sb.Timing())
        machine.reserve(CREATED, make_slot())
        with pytest.raises(sb.InvalidSlot):
            machine.reserve(CREATED + 1, make_slot(expires_at=CREATED))
        assert machine.tick(CREATED + 2) == []
