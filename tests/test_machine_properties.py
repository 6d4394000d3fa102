"""Hypothesis properties run on the machines directly, for any interleaving."""

from __future__ import annotations

from typing import Any

from _driver import CREATED, PEER, PRIMARY, STRANGER, make_slot
from hypothesis import given, settings
from hypothesis import strategies as st

import standby as sb
import standby.core as sbc

T = sb.Timing()
RELAYS = ("r1", "r2", "r3")

# ---------------------------------------------------------------------------
# Primary side
# ---------------------------------------------------------------------------

lifecycle_ops = st.lists(
    st.one_of(
        st.tuples(st.just("ack"), st.sampled_from(RELAYS), st.floats(0, 40)),
        st.tuples(st.just("tick"), st.floats(0, 90)),
        st.tuples(st.just("started")),
        st.tuples(st.just("stopped")),
        st.tuples(st.just("exited")),
        st.tuples(st.just("handover")),
        st.tuples(st.just("published"), st.integers(0, 3)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops=lifecycle_ops, replicated=st.booleans())
def test_lifecycle_never_live_past_lease_and_revokes_only_after_stop(
    ops: list[tuple[Any, ...]], replicated: bool
) -> None:
    standbys = ("a", "b") if replicated else ()
    machine = sb.WorkloadLifecycle(
        workload_id="w", me=PRIMARY, timing=T, standbys=standbys, restart=sb.OnFailure(2, 1.0)
    )
    now = CREATED
    machine.start(now)
    stop_emitted = False
    stop_done = False
    for op in ops:
        effects: list[Any] = []
        if op[0] == "ack":
            now += 1
            effects = machine.heartbeat_acked(now, op[1], now - op[2])
        elif op[0] == "tick":
            now += op[1]
            effects = machine.tick(now)
        elif op[0] == "started":
            effects = machine.container_started(now)
        elif op[0] == "stopped":
            effects = machine.container_stopped(now)
            stop_done = stop_done or stop_emitted
        elif op[0] == "exited":
            effects = machine.container_exited(now)
            stop_done = True
        elif op[0] == "handover":
            try:
                effects = machine.handover(now)
            except sb.StandbyError:
                assert not replicated or machine.state in (
                    sbc.LifecycleState.FENCED,
                    sbc.LifecycleState.FAILED,
                    sbc.LifecycleState.EXPIRED,
                )
        elif op[0] == "published":
            effects = machine.revocation_published(now, RELAYS[: op[1]])
        for effect in effects:
            if isinstance(effect, sbc.StopContainer):
                stop_emitted = True
            if isinstance(effect, sbc.PublishRevocation):
                assert replicated
                assert machine.state is not sbc.LifecycleState.LIVE
                assert stop_emitted, "revocation before any stop"
                # The first one follows a completed stop, or a stop in the same
                # batch for a container that never started; later ones are retries.
                assert stop_done or effects.index(effect) > 0
                stop_done = True
        if replicated and machine.state is sbc.LifecycleState.LIVE:
            end = machine.lease_end()
            assert end is not None
            assert now < end, "Live past the lease end"
        if not replicated:
            assert machine.state is not sbc.LifecycleState.FENCED


# ---------------------------------------------------------------------------
# Standby side
# ---------------------------------------------------------------------------


def _hb(at: float, ts: float, signer: str = PRIMARY) -> sb.Envelope[Any]:
    return sb.Envelope(sb.Heartbeat(provider=signer, timestamp=ts), signer, "r1", at)


def _revocation(
    at: float, signer: str, workload_id: str = "w1", epoch: int = 0
) -> sb.Envelope[Any]:
    body = sb.LeaseRevocation(
        workload_id=workload_id,
        primary=PRIMARY,
        standbys=("A", PEER),
        reason="x",
        revoked_at=at,
        epoch=epoch,
    )
    return sb.Envelope(body, signer, "r2", at)


election_ops = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.floats(0, 120)),
        st.tuples(st.just("heartbeat"), st.floats(-200, 25)),
        st.tuples(st.just("revoke"), st.sampled_from(["primary", "stranger", "peer", "other"])),
        st.tuples(st.just("answer"), st.booleans(), st.booleans()),
    ),
    max_size=80,
)


class ElectionRun:
    """Answers every request of one machine, as the ops dictate."""

    def __init__(self, timing: sb.Timing) -> None:
        self.machine: sb.StandbyElection[Any] = sb.StandbyElection(me="A", timing=timing)
        self.pending: list[Any] = []
        self.spawns: list[tuple[float, sbc.Spawn[Any]]] = []
        self.claims: list[tuple[float, sb.PromotionClaim]] = []
        self.in_flight: set[int] = set()
        self.promoted = 0
        self.last_accepted = 0.0

    def take(self, now: float, effects: list[Any]) -> None:
        for effect in effects:
            if isinstance(effect, sbc.Spawn):
                assert not self.in_flight, "a second spawn while one is running"
                assert self.promoted == 0, "a spawn after the promotion"
                self.in_flight.add(effect.request_id)
                self.spawns.append((now, effect))
            if isinstance(effect, sbc.PublishClaim):
                self.claims.append((now, effect.claim))
            if isinstance(effect, sbc.Promoted):
                self.promoted += 1
            if isinstance(
                effect, sbc.QueryHeartbeats | sbc.QueryClaims | sbc.PublishClaim | sbc.Spawn
            ):
                self.pending.append(effect)

    def answer(self, now: float, quorum: bool, ok: bool) -> None:
        if not self.pending:
            return
        effect = self.pending.pop(0)
        answered = ("r1", "r2") if quorum else ("r1",)
        m = self.machine
        if isinstance(effect, sbc.QueryHeartbeats):
            self.take(now, m.heartbeats_queried(now, effect.request_id, [], answered))
        elif isinstance(effect, sbc.QueryClaims):
            self.take(now, m.claims_queried(now, effect.request_id, [], answered))
        elif isinstance(effect, sbc.PublishClaim):
            self.take(now, m.claim_published(now, effect.request_id, answered))
        else:
            self.in_flight.discard(effect.request_id)
            self.take(now, m.spawn_finished(now, effect.request_id, ok))


@settings(max_examples=300, deadline=None)
@given(ops=election_ops)
def test_at_most_one_spawn_and_never_before_silence_on_the_crash_path(
    ops: list[tuple[Any, ...]],
) -> None:
    run = ElectionRun(T)
    now = CREATED
    run.take(now, run.machine.reserve(now, make_slot()))
    revoked_at: float | None = None
    baseline = CREATED
    checked = 0
    for op in ops:
        if op[0] == "advance":
            now += op[1]
            run.take(now, run.machine.tick(now))
        elif op[0] == "heartbeat":
            ts = now + op[1]
            run.take(now, run.machine.on_message(now, _hb(now, ts)))
            if ts <= now + T.max_clock_skew:
                baseline = max(baseline, ts)
        elif op[0] == "revoke":
            signer = {"primary": PRIMARY, "stranger": STRANGER, "peer": PEER, "other": PRIMARY}
            workload = "other" if op[1] == "other" else "w1"
            envelope = _revocation(now, signer[op[1]], workload)
            run.take(now, run.machine.on_message(now, envelope))
            if op[1] == "primary" and revoked_at is None and "w1" in run.machine.slots:
                revoked_at = now
        else:
            run.answer(now, op[1], op[2])
        for at, _ in run.claims[checked:]:
            if revoked_at is None or at < revoked_at:
                # Crash path: a claim only after a full silence since everything
                # heard from the primary so far.
                assert at - baseline >= T.silence
        checked = len(run.claims)
    assert run.promoted <= 1
    assert len([s for s in run.spawns if s[1].epoch == 1]) <= T.max_spawn_attempts * len(ops)


@settings(max_examples=200, deadline=None)
@given(
    forged=st.lists(
        st.tuples(
            st.sampled_from([STRANGER, PEER, "Y"]),
            st.sampled_from(["w1", "w2"]),
            st.integers(0, 2),
            st.floats(0, 170),
        ),
        max_size=20,
    )
)
def test_forged_or_replayed_revocations_never_promote(
    forged: list[tuple[str, str, int, float]],
) -> None:
    run = ElectionRun(T)
    run.take(CREATED, run.machine.reserve(CREATED, make_slot()))
    # The real primary heartbeats every 60 s, so silence never comes.
    for signer, workload, epoch, offset in sorted(forged, key=lambda f: f[3]):
        now = CREATED + offset
        run.take(now, run.machine.on_message(now, _revocation(now, signer, workload, epoch)))
        # The real primary's own revocation for a wrong epoch is a replay too.
        if epoch:
            replay = _revocation(now, PRIMARY, "w1", epoch)
            run.take(now, run.machine.on_message(now, replay))
    for minute in range(0, 600, 60):
        now = CREATED + minute
        run.take(now, run.machine.on_message(now, _hb(now, now)))
        run.take(now, run.machine.tick(now))
        while run.pending:
            run.answer(now, True, True)
    assert run.claims == []
    assert run.spawns == []
    assert run.machine.status("w1").phase is sbc.Phase.WATCHING


@settings(max_examples=100, deadline=None)
@given(indices=st.permutations(range(4)), failures=st.integers(0, 2))
def test_fencing_tokens_strictly_increase_across_promotions(
    indices: list[int], failures: int
) -> None:
    """Each successive takeover is by a follower of the previous winner."""
    lineup = ["S0", "S1", "S2", "S3"]
    tokens: list[int] = []
    epoch = 0
    primary = PRIMARY
    for round_, winner in enumerate(indices):
        name = lineup[winner]
        if name == primary:
            continue
        standbys = [s for s in lineup if s != primary]
        index = standbys.index(name)
        machine: sb.StandbyElection[Any] = sb.StandbyElection(me=name, timing=T)
        start = CREATED + 10_000 * round_
        slot = sb.StandbySlot(
            workload_id="w",
            primary=primary,
            standby_index=index,
            standby_count=len(standbys),
            spec=None,
            expires_at=start + 1e6,
            owner="c",
            created_at=start,
            peers=tuple(s for s in standbys if s != name),
            epoch=epoch,
        )
        run = ElectionRun(T)
        run.machine = machine
        machine.reserve(start, slot)
        revocation = sb.LeaseRevocation(
            workload_id="w",
            primary=primary,
            standbys=tuple(standbys),
            reason="handover",
            revoked_at=start + 1,
            epoch=epoch,
        )
        run.take(
            start + 1, machine.on_message(start + 1, sb.Envelope(revocation, primary, "r1", 0))
        )
        now = start + 1
        fails = failures
        while run.promoted == 0:
            deadline = machine.next_deadline()
            if run.pending:
                ok = fails == 0 or not isinstance(run.pending[0], sbc.Spawn)
                if isinstance(run.pending[0], sbc.Spawn) and fails:
                    fails -= 1
                run.answer(now, True, ok)
            else:
                assert deadline is not None
                now = max(now, deadline)
                run.take(now, machine.tick(now))
        token = run.spawns[-1][1].fencing_token
        tokens.append(token)
        epoch += 1
        primary = name
        assert run.spawns[-1][1].epoch == epoch
    assert tokens == sorted(set(tokens))


heartbeat_ops = st.lists(
    st.one_of(
        st.tuples(st.just("beat"), st.floats(1, 90), st.sets(st.sampled_from(RELAYS))),
        st.tuples(st.just("wait")),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(ops=heartbeat_ops, threshold=st.sampled_from([None, 10.0, 45.0]))
def test_a_lease_is_reported_at_risk_once_per_lease_and_before_it_is_lost(
    ops: list[tuple[Any, ...]], threshold: float | None
) -> None:
    """Driven at every deadline it names, the lifecycle reports ``AtRisk`` at most once
    between two renewals, and with a threshold always before a lease runs out."""
    machine = sb.WorkloadLifecycle(
        workload_id="w", me=PRIMARY, timing=T, standbys=("a", "b"), at_risk=threshold
    )
    now = CREATED
    machine.start(now)
    machine.heartbeat_published(now, now, RELAYS)
    machine.container_started(now)
    reported_since_renewal = 0
    for op in ops:
        due = machine.next_deadline()
        end_before = machine.lease_end()
        renewed = False
        if op[0] == "wait":
            if due is None:
                break
            now = max(now, due)  # the driver wakes at the deadline the machine named
            effects = machine.tick(now)
        else:
            later = now + op[1]
            if due is not None and due < later:
                now = max(now, due)
                effects = machine.tick(now)
            else:
                now = later
                effects = machine.heartbeat_published(now, now, sorted(op[2]))
                # Renewed: this heartbeat reached a write quorum, far enough from
                # the lease end. One that missed it may still move the lease end
                # (an older heartbeat completing a quorum), but the lease stays at
                # risk: its warning stands, no second one is owed.
                stamp = machine.quorum_timestamp()
                end = machine.lease_end()
                renewed = (
                    stamp is not None
                    and stamp >= now
                    and (threshold is None or (end is not None and end - now > threshold))
                )
        after = machine.next_deadline()
        assert after is None or after > now, "a deadline that does not go away spins the driver"
        risks = [e for e in effects if isinstance(e, sbc.AtRisk)]
        reported_since_renewal += len(risks)
        assert reported_since_renewal <= 1
        for risk in risks:
            assert risk.remaining >= 0
            # A heartbeat first catches up with its instant: a warning due then is
            # about the lease before this heartbeat renewed it.
            assert risk.lease_end in (end_before, machine.lease_end())
        if renewed:
            reported_since_renewal = 0
        lost = [
            e for e in effects if isinstance(e, sbc.StateChanged) and e.reason == "lease expired"
        ]
        if lost and threshold is not None:
            assert reported_since_renewal == 1, "the lease ran out without a warning"
        if machine.state is not sbc.LifecycleState.LIVE and (
            machine.state is not sbc.LifecycleState.SUSPECT
        ):
            break
