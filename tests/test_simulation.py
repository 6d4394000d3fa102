"""The deterministic failover simulator: scenarios, faults, checkers, determinism."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import weakref
from functools import partial
from typing import Any

import attrs
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from standby import Envelope, LeaseRevocation, StandbyElection, Timing, UnsafeTiming
from standby.core import Promoted
from standby.node import _node as node_module
from standby.testing import (
    BASE_TIME,
    CURRENT_PRIMARY,
    Crash,
    Drop,
    FencedStorage,
    Forge,
    Latencies,
    Partition,
    Simulation,
    SimulationReport,
    memory_runtime,
)

T = Timing()


def bound_after(report: SimulationReport, index: int = 0, timing: Timing = T) -> float:
    """SAFETY.md's liveness bound with the simulator's default latencies."""
    lat = Latencies.for_timing(timing)
    return (
        timing.silence
        + index * timing.promotion_delay
        + timing.claim_settle
        + lat.spawn[1]
        + timing.max_clock_skew
        + 5 * timing.query_timeout
        + 2 * lat.network[1]
    )


# ----------------------------------------------------------------------
# Plain failover paths
# ----------------------------------------------------------------------


def test_quiet_run_keeps_one_primary_and_no_promotion() -> None:
    report = Simulation(seed=1).run(until=3600)
    assert report.ok
    assert report.promotions == ()
    assert report.double_live_seconds == 0
    assert report.failover_latency is None
    assert report.storage_writes_accepted >= 59  # one write a minute for an hour
    assert report.stale_writes == ()


def test_crash_of_the_primary_promotes_standby_zero_within_the_bound() -> None:
    report = Simulation(seed=3).crash(1200, "primary").run(until=3600)
    assert report.ok, report.format()
    (promotion,) = report.promotions
    assert promotion.provider == "standby-0"
    assert promotion.epoch == 1
    assert promotion.fencing_token == 1 << 20
    assert promotion.previous_primary == "primary"
    assert promotion.failover_latency is not None
    assert T.silence <= promotion.failover_latency <= bound_after(report)
    assert report.failover_latency == promotion.failover_latency
    assert report.double_live_seconds == 0


def test_a_closed_simulation_keeps_its_report_and_leaves_no_world_to_the_collector() -> None:
    sim = Simulation(seed=3).crash(1200, "primary")
    before = sim.run(until=3600)
    sim.close()
    sim.close()  # idempotent
    after = sim.report()
    assert after.ok, after.format()
    assert after.promotions == before.promotions
    assert [h.alive for h in map(sim.host, sim.providers)] == [False, False, False]
    # Closed, the world has no cycle through it: the relays' network and the
    # runtime record go with the last reference to the simulation.
    network, record = weakref.ref(sim.network), weakref.ref(sim.record)
    del sim
    assert network() is None
    assert record() is None


def test_standby_one_takes_over_when_standby_zero_is_gone() -> None:
    sim = Simulation(seed=4).crash(100, "standby-0").crash(1200, "primary")
    report = sim.run(until=3600)
    assert report.ok, report.format()
    (promotion,) = report.promotions
    assert promotion.provider == "standby-1"
    assert promotion.fencing_token == (1 << 20) + 1
    latency = promotion.failover_latency
    assert latency is not None
    # index 1 waits one promotion delay more than index 0 would
    assert T.silence + T.promotion_delay <= latency <= bound_after(report, index=1)


def test_two_failovers_in_a_row_climb_epochs_and_tokens() -> None:
    sim = Simulation(seed=5).crash(600, CURRENT_PRIMARY).crash(1800, CURRENT_PRIMARY)
    report = sim.run(until=3600)
    assert report.ok, report.format()
    assert [(p.provider, p.epoch, p.previous_primary) for p in report.promotions] == [
        ("standby-0", 1, "primary"),
        ("standby-1", 2, "standby-0"),
    ]
    assert [p.fencing_token for p in report.promotions] == [1 << 20, 2 << 20]
    assert sim.current_primary() == "standby-1"
    assert sim.running() == [("standby-1", 2 << 20)]


def test_graceful_handover_skips_the_silence_wait() -> None:
    report = Simulation(seed=6).handover(1000).run(until=2000)
    assert report.ok, report.format()
    (promotion,) = report.promotions
    assert promotion.provider == "standby-0"
    assert promotion.at - 1000 < T.claim_settle + T.spawn_timeout
    assert promotion.at - 1000 < T.silence


def test_partitioned_primary_fences_before_the_standby_runs() -> None:
    sim = Simulation(seed=7).partition(600, "primary")
    report = sim.run(until=3600)
    assert report.ok, report.format()
    assert report.double_live_seconds == 0
    (promotion,) = report.promotions
    assert promotion.provider == "standby-0"
    lines = report.timeline.lines()
    fenced = next(i for i, line in enumerate(lines) if "-> fenced (lease expired)" in line)
    running = next(i for i, line in enumerate(lines) if "container running (epoch 1" in line)
    assert fenced < running


def test_no_standbys_means_no_failover_and_no_liveness_claim() -> None:
    report = Simulation(seed=8, standbys=0).crash(600).run(until=3600)
    assert report.ok
    assert report.promotions == ()
    assert Simulation(seed=8, standbys=0).running() == []


def test_atomic_claims_promote_once() -> None:
    report = Simulation(seed=9, atomic_claims=True).crash(600).run(until=2400)
    assert report.ok, report.format()
    assert [p.epoch for p in report.promotions] == [1]
    assert "compare-and-set claim on epoch 1" in str(report.timeline)


def test_five_relays_with_one_down_still_fail_over() -> None:
    timing = Timing(relay_count=5, write_quorum=3)
    sim = Simulation(seed=10, timing=timing).partition(0, "*", ["relay-4"]).crash(900)
    report = sim.run(until=2400)
    assert report.ok, report.format()
    assert len(report.promotions) == 1


# ----------------------------------------------------------------------
# Faults
# ----------------------------------------------------------------------


def test_restarted_standby_restores_its_slot_and_still_promotes() -> None:
    sim = Simulation(seed=11).crash(300, "standby-0").restart(500, "standby-0").crash(1200)
    report = sim.run(until=3600)
    assert report.ok, report.format()
    assert [p.provider for p in report.promotions] == ["standby-0"]


def test_restart_of_a_running_provider_is_a_crash_and_a_restart() -> None:
    report = Simulation(seed=12).restart(900, "primary").run(until=2400)
    assert report.ok, report.format()
    # the primary's container died with the crash; a standby took over
    assert [p.provider for p in report.promotions] == ["standby-0"]


@pytest.mark.parametrize("kind", ["revocation", "claim", "announcement", "heartbeat"])
def test_forged_messages_never_promote(kind: Any) -> None:
    report = Simulation(seed=13).forge(500, kind).run(until=2000)
    assert report.ok, report.format()
    assert report.promotions == ()
    assert f"Forge(at=500, kind='{kind}'" in str(report.timeline)
    # A stranger is no author the nodes subscribe to: the relays never pass it on.
    assert "follow " not in str(report.timeline)


def test_forged_revocation_signed_by_a_peer_is_dropped_as_wrong_signer() -> None:
    report = Simulation(seed=14).forge(500, "revocation", signer="standby-1").run(until=1500)
    assert report.ok
    assert report.promotions == ()
    assert dict(report.drops)["wrong signer"] >= 1


def test_forged_heartbeats_do_not_delay_the_failover() -> None:
    plain = Simulation(seed=15).crash(600).run(until=2400)
    forged = Simulation(seed=15).crash(600)
    for at in range(620, 900, 20):
        forged.forge(at, "heartbeat")
    report = forged.run(until=2400)
    assert report.ok
    assert plain.failover_latency is not None
    assert report.failover_latency is not None
    assert abs(report.failover_latency - plain.failover_latency) < 2 * T.query_timeout


def test_replays_duplicates_drops_and_delays_stay_safe() -> None:
    # Losing half the messages, then delays longer than the publish timeout,
    # may cost each primary its lease in turn (a failover each time). Safety
    # must hold throughout; the final crash can only be taken over while a
    # standby is left, and the checker demands liveness only then.
    sim = Simulation(seed=16, standbys=3)
    sim.duplicate(100, 500).replay(700, count=5).drop(800, 200, 0.5).delay(1000, 300, 3.0)
    sim.crash(1500)
    report = sim.run(until=3600)
    assert report.ok, report.format()
    # the loss may cost the primary its lease (an extra failover); epochs still climb
    epochs = [p.epoch for p in report.promotions]
    assert epochs == list(range(1, len(epochs) + 1))
    assert len(sim.running()) <= 1
    assert dict(report.drops).get("duplicate", 0) > 0


def test_clock_skew_within_the_bound_is_safe_and_beyond_it_is_reported() -> None:
    half = T.max_clock_skew / 2
    sim = Simulation(seed=17).skew_clock(0, "primary", -half).skew_clock(0, "standby-0", half)
    report = sim.crash(900).run(until=2400)
    assert report.ok, report.format()
    assert report.outside_model == ()
    beyond = Simulation(seed=17).skew_clock(10, "standby-0", 3 * T.max_clock_skew).run(until=60)
    assert any("max_clock_skew" in note for note in beyond.outside_model)


@pytest.mark.parametrize("enforced", [True, False], ids=["supervisor", "node-alone"])
def test_fm31_a_primary_clock_stepped_back_leaves_no_two_live(enforced: bool) -> None:
    """Failure mode 31: ten minutes back on the primary's clock extend no lease.

    The standbys ignore the primary's heartbeats, now stamped in their past,
    and one takes over a silence later. The runtime holds the lease on the
    monotonic clock; the node itself (alone, with a runtime that enforces
    nothing) stops at the lease's end in true time, not ten minutes later.
    """
    factory = {} if enforced else {"runtime_factory": partial(memory_runtime, enforce_leases=False)}
    report = Simulation(seed=3, **factory).step_clock(300, "primary", -600).run(until=1800)
    assert "primary's clock stepped -600 s > max_clock_skew=20 s at t=300.000" in (
        report.outside_model
    )
    assert [p.provider for p in report.promotions] == ["standby-0"]
    assert report.double_live_seconds == 0, report.format()
    assert report.ok, report.format()
    assert "fenced (lease expired)" in str(report.timeline)


def test_slow_spawn_beyond_the_timeout_is_cancelled_then_retried() -> None:
    sim = Simulation(seed=18).slow_spawn(0, "standby-0", 2 * T.spawn_timeout).crash(600)
    report = sim.run(until=3600)
    assert report.ok, report.format()
    text = str(report.timeline)
    assert "spawn failed (token 1048576): TimeoutError" in text
    assert len(report.promotions) == 1


def test_failed_spawn_releases_the_claim_and_someone_runs_the_workload() -> None:
    sim = Simulation(seed=19).fail_spawn(0, "standby-0", count=3).crash(600)
    report = sim.run(until=3600)
    assert report.ok, report.format()
    assert "withdraw claim on epoch 1" in str(report.timeline)
    assert len(report.promotions) == 1


def test_a_primary_frozen_with_its_host_is_stopped_at_its_lease_end() -> None:
    report = Simulation(seed=20).pause(600, "primary", duration=900).run(until=3600)
    assert report.ok, report.format()
    (promotion,) = report.promotions
    assert promotion.provider == "standby-0"
    # the supervisor stopped the frozen container at its lease end, before the new
    # primary ran: it never wrote again, and on thaw the node fenced at once
    gone = next(line for line in report.timeline.lines() if "container gone (token 0)" in line)
    assert "lease end" in gone
    assert float(gone.split()[0]) < promotion.at
    assert report.stale_writes == ()
    thawed = report.timeline.between(1500, 1500 + T.fence_grace)
    assert any("live -> fenced (lease expired)" in line for line in thawed)


def test_unknown_names_and_past_times_are_refused() -> None:
    sim = Simulation(seed=21)
    with pytest.raises(ValueError, match="unknown provider 'nobody'"):
        sim.crash(10, "nobody")
    with pytest.raises(ValueError, match="unknown relay 'relay-9'"):
        sim.partition(10, "primary", ["relay-9"])
    with pytest.raises(ValueError, match="genuine, not forged"):
        sim.forge(10, "claim", signer="standby-0")
    sim.run(until=100)
    with pytest.raises(ValueError, match="before now=100"):
        sim.crash(50)
    with pytest.raises(ValueError, match="cannot run until"):
        sim.run(until=10)
    with pytest.raises(ValueError, match="cannot run until"):
        sim.run(until=float("inf"))
    with pytest.raises(ValueError, match="relay_count=3"):
        Simulation(timing=T, relays=5)
    with pytest.raises(ValueError, match="finite number >= 0"):
        Crash(-1.0)
    with pytest.raises(ValueError, match="probability"):
        Drop(0, 10, 1.5)


def test_relays_argument_builds_a_majority_timing() -> None:
    sim = Simulation(relays=5)
    assert sim.timing.relay_count == 5
    assert sim.timing.write_quorum == 3
    assert sim.relays == tuple(f"relay-{i}" for i in range(5))
    assert sim.providers == ("primary", "standby-0", "standby-1")


# ----------------------------------------------------------------------
# Regressions the simulator found in the core (notes/core-bugs.md)
# ----------------------------------------------------------------------


def test_a_primary_cut_off_at_start_never_starts_late() -> None:
    """B4: a primary that cannot read a quorum refuses the request; the standby runs it."""
    report = Simulation(seed=0).partition(0, "primary", duration=400).run(until=1200)
    assert report.ok, report.format()
    assert [p.provider for p in report.promotions] == ["standby-0"]
    timeline = str(report.timeline)
    assert "container running (epoch 0" not in timeline
    assert "primary     request refused: QuorumUnavailable" in timeline


def test_a_spawn_slower_than_the_rules_allow_still_gives_one_primary() -> None:
    """B3: with a spawn_timeout the rules refuse, one container of epoch 1 runs."""
    timing = Timing.unsafe_unchecked(spawn_timeout=120.0)
    sim = Simulation(seed=0, timing=timing).slow_spawn(0, "standby-0", 100).crash(300)
    report = sim.run(until=1500)
    assert report.ok, report.format()
    assert [p.epoch for p in report.promotions] == [1]
    assert len(sim.running()) == 1


# ----------------------------------------------------------------------
# Determinism
# ----------------------------------------------------------------------


def busy(seed: int) -> Simulation:
    sim = Simulation(seed=seed)
    sim.drop(200, 300, 0.3).duplicate(100, 400).forge(300, "revocation")
    sim.skew_clock(50, "standby-1", 4.0).replay(700, count=3)
    sim.partition(900, "standby-0", ["relay-1"], duration=200).crash(1200)
    sim.kill(1500, "standby-1", steps=40).restart(1600, "standby-1")
    sim.pause(2000, "@primary", duration=100).kill(2500, "@primary", host=True)
    return sim


def test_same_seed_same_timeline() -> None:
    first = str(busy(42).run(until=3600).timeline)
    second = str(busy(42).run(until=3600).timeline)
    assert first == second
    assert len(first.splitlines()) > 50
    assert str(busy(43).run(until=3600).timeline) != first


def test_running_in_steps_gives_the_same_timeline() -> None:
    whole = busy(44).run(until=3600)
    sim = busy(44)
    for until in (100.0, 650.5, 1200.0, 1201.0, 3600.0):
        stepped = sim.run(until=until)
    assert stepped.timeline == whole.timeline
    assert stepped.promotions == whole.promotions


_PROGRAM = """
import hashlib
from tests.test_simulation import busy
print(hashlib.sha256(str(busy(42).run(until=3600).timeline).encode()).hexdigest())
"""


def test_timeline_does_not_depend_on_hash_randomisation() -> None:
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", _PROGRAM],
            check=True,
            capture_output=True,
            text=True,
            env=env,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        digests.add(out.stdout.strip())
    here = hashlib.sha256(str(busy(42).run(until=3600).timeline).encode()).hexdigest()
    assert digests == {here}


# ----------------------------------------------------------------------
# The checkers can fail
# ----------------------------------------------------------------------


class _TrustsTheBody(StandbyElection[Any]):
    """A broken election that takes a revocation's body for its signer."""

    def on_message(self, now: float, envelope: Envelope[Any]) -> list[Any]:
        message = envelope.message
        if isinstance(message, LeaseRevocation):
            envelope = attrs.evolve(envelope, signer=message.primary)
        return super().on_message(now, envelope)


def test_forged_input_checker_catches_an_election_that_trusts_the_body(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(node_module, "StandbyElection", _TrustsTheBody)
    # a peer's forgery reaches standby-0 (a stranger's never passes the author filter)
    report = Simulation(seed=22).forge(500, "revocation", signer="standby-1").run(until=1500)
    violations = report.violations_of("forged-input")
    assert {v.explanation.split()[0] for v in violations} == {"standby-0"}
    violation = violations[0]
    assert "primary primary never published" in violation.explanation
    assert "Forge(at=500, kind='revocation'" in violation.excerpt
    assert report.promotions  # the broken core did promote on the forgery


class _SlowToNotice(StandbyElection[Any]):
    """A broken election that waits twice the configured silence."""

    def __init__(
        self, *, me: str, timing: Timing, atomic_claims: bool = False, claim_window: int = 100
    ) -> None:
        super().__init__(
            me=me,
            timing=attrs.evolve(timing, silence=2 * timing.silence),
            atomic_claims=atomic_claims,
            claim_window=claim_window,
        )


def test_liveness_checker_catches_a_late_failover(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_module, "StandbyElection", _SlowToNotice)
    report = Simulation(seed=23).crash(600).run(until=2400)
    (violation,) = report.violations_of("liveness")
    assert "a new primary was due by" in violation.explanation
    assert "the first ran at" in violation.explanation


def test_liveness_is_demanded_only_while_a_standby_can_take_over() -> None:
    # One standby: it takes over once; when its host dies too, nobody is left.
    sim = Simulation(seed=3, standbys=1).crash(600, "primary").crash(1500, "standby-0")
    report = sim.run(until=3600)
    assert [p.provider for p in report.promotions] == ["standby-0"]
    assert report.ok, report.format()
    # Two standbys: the same faults leave standby-1, which must take over.
    sim = Simulation(seed=3, standbys=2).crash(600, "primary").crash(1500, "standby-0")
    report = sim.run(until=3600)
    assert [p.provider for p in report.promotions] == ["standby-0", "standby-1"]
    assert report.ok, report.format()


def test_liveness_is_not_claimed_when_the_standby_was_cut_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(node_module, "StandbyElection", _SlowToNotice)
    sim = Simulation(seed=23).partition(500, "standby-0", duration=50).crash(600)
    assert sim.run(until=2400).violations_of("liveness") == []


class _ReusesTokens(StandbyElection[Any]):
    """A broken election that promotes with the original primary's token."""

    def spawn_finished(
        self, now: float, request_id: int, ok: bool, error: str | None = None
    ) -> list[Any]:
        effects = super().spawn_finished(now, request_id, ok, error)
        return [attrs.evolve(e, fencing_token=0) if isinstance(e, Promoted) else e for e in effects]


def test_token_checker_catches_a_repeated_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_module, "StandbyElection", _ReusesTokens)
    report = Simulation(seed=24).crash(600).run(until=1500)
    (violation,) = report.violations_of("token-order")
    assert "repeats the highest earlier token 0" in violation.explanation


def test_two_live_violation_carries_an_excerpt_and_the_overlap() -> None:
    unsafe = Timing.unsafe_unchecked(lease=420.0, suspect_after=120.0)
    report = Simulation(seed=25, timing=unsafe).partition(600, "primary").run(until=1800)
    (violation,) = report.violations_of("two-live")
    assert "primary (epoch 0, token 0" in violation.explanation
    assert "standby-0 (epoch 1" in violation.explanation
    assert "container running (epoch 1" in violation.excerpt
    assert str(violation).startswith("[two-live] at t=")
    assert "timing breaks `silence >= lease + fence_grace + max_clock_skew`" in "\n".join(
        report.outside_model
    )


# ----------------------------------------------------------------------
# Small pieces
# ----------------------------------------------------------------------


def test_fenced_storage_rejects_lower_tokens_only() -> None:
    storage = FencedStorage()
    assert storage.write(1.0, "a", 5)
    assert storage.write(2.0, "a", 5)
    assert storage.write(3.0, "b", 9)
    assert not storage.write(4.0, "a", 5)
    assert storage.highest == 9
    assert storage.accepted == 3
    (stale,) = storage.rejected
    assert (stale.writer, stale.fencing_token, stale.highest_before) == ("a", 5, 9)


def test_latencies_follow_the_timing_and_validate() -> None:
    fast = Latencies.for_timing(Timing.fast())
    assert fast.stop[1] <= Timing.fast().fence_grace
    assert fast.network[1] <= Timing.fast().query_timeout / 4
    assert Latencies.for_timing(T) == Latencies()
    with pytest.raises(ValueError, match="low <= high"):
        Latencies(network=(1.0, 0.5))


def test_report_format_and_timeline_helpers() -> None:
    report = Simulation(seed=26).crash(600).run(until=1200)
    text = report.format(timeline=True)
    assert "promotions: 1" in text
    assert "violations: none" in text
    assert "timeline:" in text
    assert str(report) == report.format()
    window = report.timeline.between(600, 600)
    assert window
    assert all(line.split()[0] == "600.000" for line in window)
    assert "Crash(at=600" in report.timeline.excerpt(600)
    assert len(report.timeline) == len(report.timeline.lines())
    assert repr(report.timeline).startswith("<Timeline of ")


def test_timeline_reads_in_virtual_seconds() -> None:
    report = Simulation(seed=27).run(until=61)
    assert report.timeline.lines()[0].split()[:2] == ["0.000", "sim"]
    assert re.search(r"heartbeat stamped 60\.\d{3}: 3 relays acknowledged", str(report.timeline))
    assert BASE_TIME > 1e9


def test_partition_fault_value_is_readable() -> None:
    fault = Partition(10, "primary", ["relay-0"], 30)
    assert repr(fault) == "Partition(at=10, who='primary', relays=('relay-0',), duration=30)"
    assert Forge(5).signer == "mallory"


# ----------------------------------------------------------------------
# The worked example of docs/testing.md
# ----------------------------------------------------------------------

MY_TIMING = Timing(heartbeat_interval=30.0, lease=100.0, suspect_after=60.0, silence=150.0)


RELAYS = ["relay-0", "relay-1", "relay-2"]


def partition_search(timing: Timing) -> Any:
    """A hypothesis test: no partition of one provider breaks a guarantee under ``timing``."""

    @settings(max_examples=40, deadline=None, database=None)
    # The worst case first: the primary cut off from every relay (relays=None)
    # for longer than the silence wait and the lease.
    @example(start=600.0, length=6 * timing.silence, relays=None, who="@primary", seed=0)
    @given(
        start=st.floats(min_value=30.0, max_value=3000.0),
        length=st.floats(min_value=1.0, max_value=6 * timing.silence),
        relays=st.none() | st.lists(st.sampled_from(RELAYS), min_size=1, unique=True),
        who=st.sampled_from(["@primary", "standby-0", "standby-1"]),
        seed=st.integers(min_value=0, max_value=2**16),
    )
    def search(start: float, length: float, relays: list[str] | None, who: str, seed: int) -> None:
        sim = Simulation(timing=timing, seed=seed)
        sim.partition(start, who, relays, duration=length)
        report = sim.run(until=start + length + 4 * timing.silence)
        assert report.violations == (), report.format()

    return search


test_my_timing_survives_partitions = partition_search(MY_TIMING)


def test_my_timing_is_valid_and_the_reference_one_is_not() -> None:
    assert MY_TIMING.is_safe
    with pytest.raises(UnsafeTiming, match="silence >= lease"):
        Timing(lease=420.0, suspect_after=120.0)


# ----------------------------------------------------------------------
# Public surface
# ----------------------------------------------------------------------

PUBLIC = {
    "DEFAULT_MALFORMED_IDENTITIES",
    "RELAY_CHECKS",
    "RUNTIME_CHECKS",
    "ConformanceReport",
    "RelayHarness",
    "RelayHarnessFactory",
    "RuntimeHarness",
    "RuntimeHarnessFactory",
    "check_container_runtime",
    "check_relay_transport",
    "CLAIM_CHECKS",
    "ClaimsHarness",
    "ClaimsHarnessFactory",
    "check_atomic_claims",
    "BASE_TIME",
    "CURRENT_PRIMARY",
    "PRIMARY",
    "STRANGER",
    "VIOLATION_KINDS",
    "CampaignSummary",
    "Crash",
    "Delay",
    "Drop",
    "Duplicate",
    "FailSpawn",
    "Fault",
    "FencedStorage",
    "Forge",
    "Handover",
    "Heal",
    "Kill",
    "Latencies",
    "Partition",
    "Pause",
    "Promotion",
    "RelayAmnesia",
    "Replay",
    "Restart",
    "SimulatedStore",
    "Simulation",
    "ShrunkSchedule",
    "SimulationReport",
    "SkewClock",
    "SlowSpawn",
    "StandbyStateMachine",
    "StepClock",
    "StorageWrite",
    "Timeline",
    "Violation",
    "memory_runtime",
    "random_faults",
    "relay_name",
    "run_campaign",
    "shrink",
    # local relay processes, for examples and tests (examples/process_failover.py)
    "RelayCluster",
    "RelaySettings",
    "RelayUnavailable",
    "local_relay_timing",
    "running_relays",
    "standby_name",
    "strategies",
    "timeline_svg",
}


def test_public_names_are_pinned_and_resolve() -> None:
    import standby.testing as kit

    assert set(kit.__all__) == PUBLIC
    for name in kit.__all__:
        assert getattr(kit, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = kit.nothing


def test_the_simulator_does_not_import_hypothesis() -> None:
    program = (
        "import sys, standby.testing as kit\n"
        "from standby.testing.simulation import _cli\n"
        "assert 'hypothesis' not in sys.modules, 'imported too early'\n"
        "kit.StandbyStateMachine\n"
        "assert 'hypothesis' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", program], check=True)


def test_the_python_examples_of_docs_testing_md_run() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "testing.md").read_text("utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 6
    namespace: dict[str, Any] = {"__name__": "docs_testing"}
    for block in blocks:
        exec(compile(block, "docs/testing.md", "exec"), namespace)
    namespace["test_my_timing_survives_partitions"]()  # the worked example, run by hypothesis
    assert namespace["summary"].runs == 20
    assert namespace["report"].violations_of("token-shared")
    assert namespace["replayed"].violations_of("two-live")  # the explorer's path, on the node
    assert namespace["late"].promotions == ()  # the broken claim window, on the node
