"""WorkloadLifecycle: lease from per-relay acknowledgements, fencing, restarts."""

from __future__ import annotations

from typing import Any

import pytest
from _driver import one, only

import standby as sb
import standby.core as sbc

T = sb.Timing()
START = 10_000.0


def primary(standbys: tuple[str, ...] = ("a", "b"), **kwargs: Any) -> sb.WorkloadLifecycle:
    return sb.WorkloadLifecycle(workload_id="w", me="P", timing=T, standbys=standbys, **kwargs)


def ack_all(machine: sb.WorkloadLifecycle, now: float, ts: float, relays: str = "r1 r2 r3") -> None:
    for relay in relays.split():
        machine.heartbeat_acked(now, relay, ts)


def live(machine: sb.WorkloadLifecycle, at: float = START) -> sb.WorkloadLifecycle:
    machine.start(at)
    ack_all(machine, at, at)
    machine.container_started(at)
    assert machine.state is sbc.LifecycleState.LIVE
    return machine


class TestProvisioning:
    def test_replicated_workload_starts_only_with_a_lease(self) -> None:
        machine = primary()
        assert machine.start(START) == []
        assert machine.heartbeat_acked(START, "r1", START) == []  # one relay is no quorum
        effects = machine.heartbeat_acked(START + 0.5, "r2", START)
        start = one(effects, sbc.StartContainer)
        assert (start.fencing_token, start.attempt) == (0, 1)
        assert machine.state is sbc.LifecycleState.PROVISIONING
        one(machine.container_started(START + 2), sbc.StateChanged)
        assert machine.state is sbc.LifecycleState.LIVE

    def test_unreplicated_workload_starts_at_once(self) -> None:
        machine = primary(standbys=())
        one(machine.start(START), sbc.StartContainer)

    def test_promoted_workload_is_live_with_a_lease_from_its_claim(self) -> None:
        machine = sb.WorkloadLifecycle.promoted(
            workload_id="w",
            me="A",
            timing=T,
            now=START + 20,
            standbys=("b",),
            epoch=1,
            fencing_token=sb.fencing_token(1, 0),
            lease_from=START,
        )
        assert machine.state is sbc.LifecycleState.LIVE
        assert machine.lease_end() == START + T.lease
        assert machine.next_deadline() == START + 20 + T.suspect_after

    def test_promotion_that_outlived_its_lease_stops_at_the_first_call(self) -> None:
        machine = sb.WorkloadLifecycle.promoted(
            workload_id="w",
            me="A",
            timing=T,
            now=START + T.lease + 5,
            standbys=("b",),
            epoch=1,
            fencing_token=sb.fencing_token(1, 0),
            lease_from=START,
        )
        assert machine.state is sbc.LifecycleState.FENCED
        assert machine.next_deadline() == START + T.lease + 5  # call me now
        effects = machine.tick(START + T.lease + 5)
        assert one(effects, sbc.StopContainer).reason == "lease expired"
        one(machine.container_stopped(START + T.lease + 6), sbc.PublishRevocation)

    def test_replicated_workload_without_lease_by_the_grace_end_gives_up(self) -> None:
        machine = primary(created_at=START)
        machine.start(START)
        give_up = START + T.silence - T.max_clock_skew
        assert machine.next_deadline() == give_up
        machine.heartbeat_acked(give_up - 1, "r1", give_up - 1)  # one relay: no lease
        effects = machine.tick(give_up)
        assert machine.state is sbc.LifecycleState.FENCED
        assert only(effects, sbc.StartContainer) == []
        one(effects, sbc.PublishRevocation)  # never started: stopped already
        ack_all(machine, give_up + 1, give_up + 1)
        assert only(machine.tick(give_up + 2), sbc.StartContainer) == []

    def test_lease_just_before_the_grace_end_still_starts(self) -> None:
        machine = primary(created_at=START)
        machine.start(START)
        at = START + T.silence - T.max_clock_skew - 1
        assert machine.heartbeat_acked(at, "r1", at) == []
        start = one(machine.heartbeat_acked(at, "r2", at), sbc.StartContainer)
        assert start.attempt == 1
        machine.container_started(at + 0.5)
        assert machine.state is sbc.LifecycleState.LIVE
        machine.tick(START + T.silence)  # past the grace end, but it did start in time
        assert machine.state is sbc.LifecycleState.LIVE


class TestLease:
    def test_lease_runs_from_the_quorum_heartbeat_timestamp(self) -> None:
        machine = live(primary())
        ack_all(machine, START + 61, START + 60, "r1 r3")
        assert machine.lease_end() == START + 60 + T.lease

    def test_quorum_timestamp_is_the_write_quorum_th_newest_relay(self) -> None:
        machine = live(primary())
        machine.heartbeat_acked(START + 100, "r1", START + 100)
        machine.heartbeat_acked(START + 100, "r2", START + 50)
        assert machine.quorum_timestamp() == START + 50

    def test_future_acknowledgement_is_ignored(self) -> None:
        machine = live(primary())
        ack_all(machine, START + 1, START + 500)
        assert machine.quorum_timestamp() == START

    def test_no_quorum_for_suspect_after_makes_it_suspect(self) -> None:
        machine = live(primary())
        assert machine.tick(START + T.suspect_after - 1) == []
        changed = one(machine.tick(START + T.suspect_after), sbc.StateChanged)
        assert changed.new is sbc.LifecycleState.SUSPECT

    def test_quorum_back_before_the_lease_ends_is_live_again(self) -> None:
        machine = live(primary())
        machine.tick(START + T.suspect_after)
        ack_all(machine, START + 100, START + 100)
        assert machine.state is sbc.LifecycleState.LIVE

    def test_lease_end_fences_stop_first_then_revoke(self) -> None:
        machine = live(primary())
        effects = machine.tick(START + T.lease)
        assert machine.state is sbc.LifecycleState.FENCED
        stop = one(effects, sbc.StopContainer)
        assert stop.reason == "lease expired"
        assert only(effects, sbc.PublishRevocation) == []
        revoked = one(machine.container_stopped(START + T.lease + 3), sbc.PublishRevocation)
        assert revoked.revocation.primary == "P"
        assert revoked.revocation.standbys == ("a", "b")
        assert revoked.revocation.revoked_at == START + T.lease + 3

    def test_one_second_before_lease_end_still_not_fenced(self) -> None:
        machine = live(primary())
        machine.tick(START + T.lease - 1)
        assert machine.state is sbc.LifecycleState.SUSPECT

    def test_fenced_is_terminal_even_when_heartbeats_come_back(self) -> None:
        machine = live(primary())
        machine.tick(START + T.lease)
        ack_all(machine, START + T.lease + 1, START + T.lease + 1)
        assert machine.state is sbc.LifecycleState.FENCED
        late = machine.container_started(START + T.lease + 2)
        one(late, sbc.StopContainer)  # a start that raced the fence is stopped again

    def test_revocation_is_retried_until_a_write_quorum_acknowledges(self) -> None:
        machine = live(primary())
        machine.tick(START + T.lease)
        machine.container_stopped(START + T.lease)
        machine.revocation_published(START + T.lease + 1, ["r1"])
        retry = START + T.lease + 1 + T.heartbeat_interval
        assert machine.next_deadline() == retry
        one(machine.tick(retry), sbc.PublishRevocation)
        machine.revocation_published(retry + 1, ["r1", "r2"])
        assert machine.next_deadline() is None

    def test_the_revocation_table_covers_every_state_and_acknowledged_is_final(self) -> None:
        from standby.core._lifecycle import REVOCATION_MOVES, Revocation

        assert set(REVOCATION_MOVES) == set(Revocation)
        assert not REVOCATION_MOVES[Revocation.ACKNOWLEDGED]
        assert not REVOCATION_MOVES[Revocation.ABANDONED]
        reachable = {new for moves in REVOCATION_MOVES.values() for new in moves.values()}
        assert reachable == set(Revocation) - {Revocation.NOT_SENT}

    def test_a_revocation_short_of_its_quorum_after_the_reservation_ended_is_not_retried(
        self,
    ) -> None:
        # A publish in flight when the reservation expired reported a shortfall
        # afterwards: it scheduled a retry that no tick ever cleared, so
        # next_deadline() stayed in the past and a driver could spin on it.
        machine = live(primary(expires_at=START + 10 * T.lease))
        machine.tick(START + T.lease)  # the lease ran out: fenced
        one(machine.container_stopped(START + T.lease), sbc.PublishRevocation)
        expires = machine.expires_at
        machine.tick(expires)
        assert machine.state is sbc.LifecycleState.EXPIRED
        assert machine.revocation_published(expires + 1, ["r1"]) == []
        assert machine.next_deadline() is None
        assert machine.tick(expires + 10 * T.heartbeat_interval) == []

    def test_a_lifecycle_move_outside_its_table_is_an_internal_error(self) -> None:
        from standby.core._election import IllegalTransition
        from standby.core._lifecycle import LIFECYCLE_MOVES

        assert set(LIFECYCLE_MOVES) == set(sbc.LifecycleState)
        machine = live(primary())
        machine.tick(START + T.lease)
        assert machine.state is sbc.LifecycleState.FENCED
        with pytest.raises(IllegalTransition, match="FENCED to LIVE"):
            machine._become(START + T.lease + 1, sbc.LifecycleState.LIVE, "bug", [])
        assert machine.state is sbc.LifecycleState.FENCED

    def test_the_container_table_keeps_what_was_asked_and_what_is_known(self) -> None:
        from standby.core._lifecycle import (
            _KNOWN_DOWN,
            _START_ASKED,
            CONTAINER_MOVES,
            Container,
            ContainerEvent,
        )

        assert set(CONTAINER_MOVES) == set(Container)
        for state, moves in CONTAINER_MOVES.items():
            for event, new in moves.items():
                assert new is not state, (state, event)
                # A start asked for stays asked for; a down container stays
                # down until it comes up; nothing else changes either.
                asked = state in _START_ASKED or event is ContainerEvent.ASK_START
                assert (new in _START_ASKED) == asked, (state, event)
                down = (state in _KNOWN_DOWN or event is ContainerEvent.DOWN) and (
                    event is not ContainerEvent.UP
                )
                assert (new in _KNOWN_DOWN) == down, (state, event)

    def test_fm31_a_clock_step_back_ends_the_lease_when_it_would_have_ended(self) -> None:
        machine = live(primary())
        ack_all(machine, START + 60, START + 60)
        held = START + 60 + T.lease
        # 10 s later in true time the clock reads 600 s earlier.
        stepped = START + 70 - 600
        assert machine.clock_stepped_back(stepped, 610.0) == []
        assert machine.lease_end() == held - 610
        # A heartbeat stamped on the stepped clock renews nothing.
        ack_all(machine, stepped + 60, stepped + 60)
        assert machine.lease_end() == held - 610
        assert machine.next_deadline() == held - 610
        assert one(machine.tick(held - 610), sbc.StopContainer).reason == "lease expired"
        assert machine.state is sbc.LifecycleState.FENCED
        # Nor does one stamped past the old acknowledgements, ten minutes on.
        ack_all(machine, START + 200, START + 200)
        assert machine.state is sbc.LifecycleState.FENCED

    def test_fm31_no_step_back_leaves_the_lease_alone(self) -> None:
        machine = live(primary())
        machine.clock_stepped_back(START + 1, 0.0)
        assert machine.lease_end() == START + T.lease


class TestRuntimeBound:
    """What the node and the explorer hand a runtime after a heartbeat (one rule for both)."""

    def test_a_replicated_workload_is_bound_by_its_lease_and_renewed_while_it_holds(
        self,
    ) -> None:
        m = live(primary())
        assert m.runtime_bound() == START + T.lease
        assert m.renews(START + T.lease - 1)
        assert not m.renews(START + T.lease)
        assert not m.ended

    def test_a_workload_without_standbys_is_bound_by_its_reservation(self) -> None:
        m = live(primary(standbys=(), expires_at=START + 86_400))
        assert m.runtime_bound() == START + 86_400
        assert m.renews(START + 10 * T.lease)

    def test_before_a_lease_and_after_the_end_nothing_is_renewed(self) -> None:
        m = primary()
        m.start(START)
        assert m.runtime_bound() == float("-inf")
        assert not m.renews(START)
        m.tick(START + T.silence)
        assert m.ended
        assert not m.renews(START + T.silence)


class TestHandover:
    def test_handover_fences_now_then_revokes(self) -> None:
        machine = live(primary())
        effects = machine.handover(START + 5, state_uri="s3://ckpt")
        assert machine.state is sbc.LifecycleState.FENCED
        one(effects, sbc.StopContainer)
        assert only(effects, sbc.PublishRevocation) == []
        revoked = one(machine.container_stopped(START + 6), sbc.PublishRevocation).revocation
        assert (revoked.reason, revoked.state_uri) == ("handover", "s3://ckpt")

    def test_handover_without_standbys_raises(self) -> None:
        machine = live(primary(standbys=()))
        with pytest.raises(sb.StandbyError, match="no standbys"):
            machine.handover(START + 1)

    def test_handover_after_fencing_raises(self) -> None:
        machine = live(primary())
        machine.handover(START + 1)
        with pytest.raises(sb.StandbyError, match="already fenced"):
            machine.handover(START + 2)

    def test_revocation_carries_the_epoch(self) -> None:
        machine = sb.WorkloadLifecycle.promoted(
            workload_id="w",
            me="A",
            timing=T,
            now=START,
            standbys=("b",),
            epoch=3,
            fencing_token=sb.fencing_token(3, 0),
            lease_from=START,
        )
        machine.handover(START + 1)
        revoked = one(machine.container_stopped(START + 2), sbc.PublishRevocation)
        assert revoked.revocation.epoch == 3


class TestLaterEpoch:
    """Failure mode 25: a primary that sees a standby's later epoch steps down at once."""

    def test_fm25_a_later_epoch_from_a_standby_fences_at_once_whatever_the_lease(self) -> None:
        machine = live(primary())
        assert machine.holds_lease(START + 5)
        effects = machine.takeover_seen(START + 5, 1, "b")
        assert machine.state is sbc.LifecycleState.FENCED
        assert machine.superseded == (1, "b")
        changed = one(effects, sbc.StateChanged)
        assert (changed.old, changed.new) == (sbc.LifecycleState.LIVE, sbc.LifecycleState.FENCED)
        assert "epoch 1" in one(effects, sbc.StopContainer).reason
        assert only(effects, sbc.PublishRevocation) == []  # stop first, always
        # Then the revocation, as after every fence: the claim may yet be withdrawn,
        # and the other standbys must not wait for a silence that never comes.
        revoked = one(machine.container_stopped(START + 6), sbc.PublishRevocation).revocation
        assert (revoked.epoch, revoked.standbys) == (0, ("a", "b"))
        ack_all(machine, START + 7, START + 7)
        assert machine.state is sbc.LifecycleState.FENCED  # heartbeats never bring it back

    def test_a_primary_not_started_yet_gives_the_workload_up(self) -> None:
        machine = primary()
        machine.start(START)
        effects = machine.takeover_seen(START + 1, 2, "a")
        assert machine.state is sbc.LifecycleState.FENCED
        one(effects, sbc.StopContainer)
        one(effects, sbc.PublishRevocation)  # nothing was started: nothing to wait for
        ack_all(machine, START + 2, START + 2)
        assert machine.next_deadline() is None

    @pytest.mark.parametrize(("epoch", "by"), [(3, "b"), (2, "b"), (4, "P"), (4, "mallory")])
    def test_an_epoch_not_later_or_not_by_a_standby_is_ignored_and_counted(
        self, epoch: int, by: str
    ) -> None:
        machine = sb.WorkloadLifecycle.promoted(
            workload_id="w",
            me="A",
            timing=T,
            now=START,
            standbys=("b",),
            epoch=3,
            fencing_token=sb.fencing_token(3, 0),
            lease_from=START,
        )
        deadline = machine.next_deadline()
        assert machine.takeover_seen(START + 1, epoch, by) == []
        assert machine.state is sbc.LifecycleState.LIVE
        assert (machine.superseded, machine.ignored_takeovers) == (None, 1)
        assert machine.next_deadline() == deadline
        machine.takeover_seen(START + 2, 4, "b")
        assert machine.state is sbc.LifecycleState.FENCED

    def test_once_ended_a_later_epoch_changes_nothing(self) -> None:
        machine = live(primary())
        machine.tick(START + T.lease)
        assert machine.state is sbc.LifecycleState.FENCED
        assert machine.takeover_seen(START + T.lease + 1, 1, "a") == []
        assert (machine.superseded, machine.ignored_takeovers) == (None, 0)

    def test_a_workload_without_standbys_has_nobody_to_step_down_for(self) -> None:
        machine = live(primary(standbys=()))
        assert machine.takeover_seen(START + 1, 1, "a") == []
        assert machine.state is sbc.LifecycleState.LIVE


class TestRestartPolicy:
    def test_never_ends_in_failed_and_checks_before_reclaiming(self) -> None:
        machine = live(primary(standbys=(), restart=sb.Never()))
        effects = machine.container_exited(START + 10)
        assert machine.state is sbc.LifecycleState.FAILED
        one(effects, sbc.CheckContainer)
        assert machine.container_status(START + 11, "running") == []
        one(machine.container_status(START + 12, "stopped"), sbc.ReclaimContainer)
        assert machine.container_status(START + 13, "stopped") == []

    def test_on_failure_restarts_with_backoff_then_fails(self) -> None:
        machine = live(primary(standbys=(), restart=sb.OnFailure(max_attempts=2, backoff=4.0)))
        machine.container_exited(START + 10)
        assert machine.state is sbc.LifecycleState.RESTARTING
        assert machine.next_deadline() == START + 14
        restart = one(machine.tick(START + 14), sbc.StartContainer)
        assert restart.attempt == 2
        machine.container_started(START + 15)
        assert machine.state is sbc.LifecycleState.LIVE
        machine.container_exited(START + 20)
        assert machine.next_deadline() == START + 28
        machine.tick(START + 28)
        machine.container_failed(START + 29, "image pull failed")
        assert machine.state is sbc.LifecycleState.FAILED
        assert "image pull failed" in machine.reason

    def test_replicated_workload_hands_over_when_its_container_dies(self) -> None:
        machine = live(primary(restart=sb.OnFailure()))
        effects = machine.container_exited(START + 10)
        assert machine.state is sbc.LifecycleState.FENCED
        stop_at = next(i for i, e in enumerate(effects) if isinstance(e, sbc.StopContainer))
        revoke_at = next(i for i, e in enumerate(effects) if isinstance(e, sbc.PublishRevocation))
        assert stop_at < revoke_at

    def test_policy_validation(self) -> None:
        with pytest.raises(ValueError, match="max_attempts"):
            sb.OnFailure(max_attempts=0)
        with pytest.raises(ValueError, match="backoff"):
            sb.OnFailure(backoff=-1.0)


class TestExpiry:
    def test_expiry_stops_the_container(self) -> None:
        machine = live(primary(standbys=(), expires_at=START + 500))
        effects = machine.tick(START + 500)
        assert machine.state is sbc.LifecycleState.EXPIRED
        assert one(effects, sbc.StopContainer).reason == "reservation expired"
        assert machine.next_deadline() is None


class TestLeaseAtRisk:
    """A running replicated workload reports its lease at risk once per lease."""

    def test_a_heartbeat_short_of_its_write_quorum_reports_the_lease_at_risk_once(self) -> None:
        machine = live(primary())
        end = machine.lease_end()
        assert end is not None
        later = START + T.heartbeat_interval
        risk = one(machine.heartbeat_published(later, later, ["r1"]), sbc.AtRisk)
        assert (risk.workload_id, risk.epoch, risk.lease_end) == ("w", 0, end)
        assert risk.remaining == end - later
        assert "below the write quorum of 2" in risk.reason
        # Once per lease: another short heartbeat says nothing more.
        again = later + T.heartbeat_interval / 2
        assert only(machine.heartbeat_published(again, again, []), sbc.AtRisk) == []

    def test_a_renewal_clears_the_risk_so_the_next_lease_may_report_again(self) -> None:
        machine = live(primary())
        at = START + 10
        one(machine.heartbeat_published(at, at, ["r2"]), sbc.AtRisk)
        renewed = at + 10
        assert only(machine.heartbeat_published(renewed, renewed, ["r1", "r3"]), sbc.AtRisk) == []
        short = renewed + 10
        one(machine.heartbeat_published(short, short, []), sbc.AtRisk)

    def test_the_lease_remaining_below_the_threshold_is_a_deadline(self) -> None:
        machine = live(primary(at_risk=30.0))
        end = machine.lease_end()
        assert end is not None
        assert machine.next_deadline() == end - 30.0
        assert only(machine.tick(end - 31.0), sbc.AtRisk) == []
        risk = one(machine.tick(end - 30.0), sbc.AtRisk)
        assert risk.remaining == 30.0
        assert risk.reason == "lease remaining below 30 s"
        assert only(machine.tick(end - 1.0), sbc.AtRisk) == []
        # The lease is then lost as before: the risk came first.
        one(machine.tick(end), sbc.StopContainer)
        assert machine.state is sbc.LifecycleState.FENCED

    def test_a_renewal_that_leaves_the_lease_below_the_threshold_does_not_clear_it(self) -> None:
        machine = live(primary(at_risk=50.0))
        end = machine.lease_end()
        assert end is not None
        one(machine.tick(end - 50.0), sbc.AtRisk)
        # Renewed with an old stamp: the lease still ends within the threshold.
        now = end - 40.0
        stamp = now - 75.0
        assert only(machine.heartbeat_published(now, stamp, ["r1", "r2"]), sbc.AtRisk) == []
        assert machine.risk.value == "at risk"

    def test_workloads_without_standbys_or_not_running_report_nothing(self) -> None:
        alone = live(primary(standbys=()))
        assert only(alone.heartbeat_published(START + 5, START + 5, []), sbc.AtRisk) == []
        provisioning = primary()
        provisioning.start(START)
        assert only(provisioning.heartbeat_published(START, START, ["r1"]), sbc.AtRisk) == []
        fenced = live(primary())
        fenced.handover(START + 1)
        assert only(fenced.heartbeat_published(START + 2, START + 2, []), sbc.AtRisk) == []

    @pytest.mark.parametrize(
        "bad", [0.0, -1.0, T.lease - T.heartbeat_interval, T.lease, float("nan"), float("inf")]
    )
    def test_a_threshold_that_is_no_lease_remaining_is_refused(self, bad: float) -> None:
        with pytest.raises(ValueError, match="at_risk must be"):
            primary(at_risk=bad)

    def test_the_risk_table_reports_only_on_entering_at_risk(self) -> None:
        from standby.core._lifecycle import RISK_MOVES, LeaseRisk, RiskEvent

        assert set(RISK_MOVES) == set(LeaseRisk)
        assert set(RISK_MOVES[LeaseRisk.SAFE].values()) == {LeaseRisk.AT_RISK}
        assert RISK_MOVES[LeaseRisk.AT_RISK] == {RiskEvent.RENEWED: LeaseRisk.SAFE}


class TestHostStop:
    def test_stop_fences_a_workload_without_standbys_and_revokes_nothing(self) -> None:
        machine = live(primary(standbys=()))
        effects = machine.stop(START + 1)
        assert one(effects, sbc.StopContainer).reason == "stopped by the host"
        assert machine.state is sbc.LifecycleState.FENCED
        assert only(machine.container_stopped(START + 2), sbc.PublishRevocation) == []
        assert machine.next_deadline() is None

    def test_stop_of_a_replicated_workload_revokes_after_the_stop(self) -> None:
        machine = live(primary())
        one(machine.stop(START + 1, "host shutdown"), sbc.StopContainer)
        revocation = one(machine.container_stopped(START + 2), sbc.PublishRevocation)
        assert revocation.revocation.reason == "host shutdown"

    def test_stop_of_an_ended_workload_changes_nothing(self) -> None:
        machine = live(primary())
        machine.handover(START + 1)
        assert machine.stop(START + 2) == []
