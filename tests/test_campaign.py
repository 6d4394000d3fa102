"""The safety campaign and the demonstrations that the checkers can fail."""

from __future__ import annotations

import functools
import random
from typing import Any

import pytest

from standby import Timing, UnsafeTiming
from standby.testing import (
    CampaignSummary,
    Crash,
    RelayAmnesia,
    Simulation,
    SimulationReport,
    SkewClock,
    StepClock,
    random_faults,
    run_campaign,
)
from standby.testing.simulation._campaign import percentile
from standby.testing.simulation._configurations import CONFIGURATIONS, Configuration, shrink_run
from standby.testing.simulation._simulation import memory_runtime

# ----------------------------------------------------------------------
# The campaign: 1,600 random schedules over every configuration, zero violations
# ----------------------------------------------------------------------

#: Schedules per configuration: 1,600 in all (the CI budget), a fresh sample every run.
RUNS = 1600 // len(CONFIGURATIONS)
#: At most this many simulations go into shrinking a CI failure (a few seconds).
SHRINK_RUNS = 40


def campaign_failure(seed: int, config: Configuration, summary: CampaignSummary) -> str:
    """What a failing campaign says: the seed first, then how to rerun and read it."""
    lines = [
        f"campaign seed {seed} (replay: STANDBY_CAMPAIGN_SEED={seed}), "
        f"{config.name}: {len(summary.violations)} violations in "
        f"{len(summary.failing_seeds)} runs",
    ]
    for run_seed in summary.failing_seeds[:5]:
        kinds = sorted({v.kind for s, v in summary.violations if s == run_seed})
        lines.append(f"  seed {run_seed} ({', '.join(kinds)}): {config.command(run_seed)}")
    # printed before shrinking, so a timeout while shrinking still shows it
    print("\n".join(lines), flush=True)
    shrunk, command = shrink_run(config, summary.failing_seeds[0], max_runs=SHRINK_RUNS)
    lines.append(shrunk.format(command=command))
    return "\n".join(lines)


@pytest.mark.parametrize("config", CONFIGURATIONS, ids=lambda c: c.name)
def test_safety_campaign_finds_no_violation(config: Configuration, campaign_seed: int) -> None:
    # each configuration gets its own range of seeds
    seed = campaign_seed + CONFIGURATIONS.index(config) * RUNS
    print(f"campaign seed {campaign_seed}: {config.name} runs seeds {seed}..{seed + RUNS - 1}")
    timing = config.timing_value
    assert timing.is_safe
    summary = run_campaign(
        RUNS,
        seed=seed,
        timing=timing,
        standbys=config.standbys,
        atomic_claims=config.atomic_claims,
        horizon=config.horizon,
        focus=config.focus,
        workers=2,
    )
    assert summary.runs == RUNS
    if not summary.ok:
        pytest.fail(campaign_failure(campaign_seed, config, summary), pytrace=False)
    assert summary.double_live_seconds == 0
    # the schedules do cause failovers, and they stay within a sane range
    assert summary.promotions >= RUNS // 2, f"campaign seed {campaign_seed}"
    p50 = summary.percentile(50)
    assert p50 is not None
    # A primary whose clock steps back caps its lease, fences early and
    # revokes: its standbys take over without waiting out the silence.
    fastest = 0.0 if config.focus == "primary-clock-back" else timing.silence
    assert fastest <= p50 <= timing.silence + timing.peer_claim_grace, (
        f"campaign seed {campaign_seed}: p50 failover latency {p50}"
    )


def test_a_failing_campaign_names_its_seed_and_the_command_that_reruns_it() -> None:
    config = Configuration("broken", timing="reference-unsafe")
    summary = run_campaign(6, seed=44, timing=config.timing_value, horizon=config.horizon)
    assert summary.failing_seeds[0] == 45
    text = campaign_failure(1234, config, summary)
    first, second = text.splitlines()[:2]
    assert first.startswith("campaign seed 1234 (replay: STANDBY_CAMPAIGN_SEED=1234), broken: ")
    assert second == (
        "  seed 45 (two-live): python -m standby simulate --random-faults --seed 45 "
        "--timing reference-unsafe --until 1080"
    )
    assert "shrunk: " in text
    assert "reproduce: python -m standby simulate --seed 45 --timing reference-unsafe " in text
    assert "Simulation(seed=45, timing=Timing.unsafe_unchecked(" in text


def test_random_schedules_stay_within_the_model() -> None:
    timing = Timing()
    for seed in range(300):
        faults = random_faults(random.Random(seed), timing=timing, standbys=2, horizon=2000.0)
        assert faults == sorted(faults, key=lambda f: f.at)
        assert not any(isinstance(f, RelayAmnesia) for f in faults)
        report = Simulation(seed=seed, faults=faults).run(until=1.0)
        assert report.outside_model == ()


def test_random_clock_steps_keep_every_clock_within_half_the_bound() -> None:
    timing = Timing()
    half = timing.max_clock_skew / 2
    steps = 0
    for seed in range(300):
        faults = random_faults(random.Random(seed), timing=timing, standbys=2, horizon=2000.0)
        offsets: dict[str, float] = {}
        for fault in faults:
            if isinstance(fault, SkewClock):
                offsets[fault.who] = fault.offset
            elif isinstance(fault, StepClock):
                steps += 1
                assert fault.delta != 0
                assert abs(fault.delta) <= timing.max_clock_skew
                offsets[fault.who] = offsets.get(fault.who, 0.0) + fault.delta
                assert abs(offsets[fault.who]) < half, (seed, faults)
    assert steps > 10


def test_campaign_is_deterministic_and_reports_each_run() -> None:
    seen: list[int] = []
    first = run_campaign(5, seed=7, on_report=lambda seed, _report: seen.append(seed))
    second = run_campaign(5, seed=7)
    assert seen == [7, 8, 9, 10, 11]
    assert first == second


def test_percentiles() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([1.0, 2.0], 90) == pytest.approx(1.9)


# ----------------------------------------------------------------------
# The reference provider's timing: the checker must report two live primaries
# ----------------------------------------------------------------------

# The primary steps down after 120 s + 300 s without quorum: lease 420 s.
REFERENCE: dict[str, Any] = {"lease": 420.0, "suspect_after": 120.0}


def test_timing_refuses_the_reference_settings() -> None:
    with pytest.raises(UnsafeTiming, match="silence >= lease \\+ fence_grace \\+ max_clock_skew"):
        Timing(**REFERENCE)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reference_timing_gives_two_live_primaries_during_a_partition(seed: int) -> None:
    unsafe = Timing.unsafe_unchecked(**REFERENCE)
    assert unsafe.silence == 180.0
    assert not unsafe.is_safe
    report = Simulation(seed=seed, timing=unsafe).partition(600, "primary").run(until=1800)
    (violation,) = report.violations_of("two-live")
    # The primary holds its lease for 420 s after its last quorum heartbeat; standby-0
    # runs 180 s of silence after that same heartbeat, plus the claim protocol and the
    # spawn (up to ~40 s); the primary's stop adds up to a few seconds.
    window = report.double_live_seconds
    assert 420 - 180 - 45 <= window <= 420 - 180 + 10, report.format()
    assert f"{window:.3f} s" in violation.explanation
    (promotion,) = report.promotions
    assert promotion.provider == "standby-0"
    # storage fenced the stale primary once the new one had written
    assert report.stale_writes
    assert {w.fencing_token for w in report.stale_writes} == {0}


def test_the_same_scenario_is_safe_with_a_valid_timing() -> None:
    report = Simulation(seed=0).partition(600, "primary").run(until=1800)
    assert report.ok, report.format()
    assert report.double_live_seconds == 0
    assert report.stale_writes == ()


# ----------------------------------------------------------------------
# A primary frozen past its lease: frozen, it cannot act; thawed, it is fenced
# ----------------------------------------------------------------------


def paused_primary() -> SimulationReport:
    return Simulation(seed=3).pause(600, "primary", duration=900).run(until=2400)


def test_paused_primary_is_stopped_by_its_supervisor() -> None:
    report = paused_primary()
    assert report.violations == (), report.format()
    assert [p.provider for p in report.promotions] == ["standby-0"]
    assert report.stale_writes == ()
    timeline = str(report.timeline)
    assert "container gone (token 0) (lease end" in timeline
    assert "fenced (lease expired)" in timeline


def test_without_lease_enforcement_the_thawed_primary_is_fenced_by_storage() -> None:
    """Failure mode 14's runtime: storage still rejects the stale writer's token."""
    report = Simulation(
        seed=3, runtime_factory=functools.partial(memory_runtime, enforce_leases=False)
    )
    report.pause(600, "primary", duration=900)
    result = report.run(until=2400)
    (promotion,) = result.promotions
    (stale,) = result.stale_writes
    assert stale.writer == "primary"
    assert stale.at == pytest.approx(1500.0)
    assert stale.fencing_token == 0 < promotion.fencing_token == stale.highest_before
    assert "storage REJECTED a write with stale token 0" in str(result.timeline)


def test_a_short_pause_is_harmless() -> None:
    report = Simulation(seed=3).pause(600, "primary", duration=30).run(until=2400)
    assert report.violations == ()
    assert report.promotions == ()


# ----------------------------------------------------------------------
# Relay amnesia: publish-and-settle claims hold with honest relays only
# ----------------------------------------------------------------------

RACE = Timing(promotion_delay=0.0)  # both standbys go at once


def claim_race(*, amnesia: bool, atomic: bool = False) -> SimulationReport:
    """Both standbys race for epoch 1, each cut off from a different relay.

    standby-0's claim lands on relay-0 and relay-1, standby-1's on relay-1 and
    relay-2: relay-1 is the only one both read. With amnesia, relay-1
    acknowledges both claims and keeps neither.
    """
    sim = Simulation(seed=6, timing=RACE, atomic_claims=atomic)
    sim.partition(0, "standby-0", ["relay-2"]).partition(0, "standby-1", ["relay-0"])
    sim.schedule(Crash(600))
    if amnesia:
        sim.relay_amnesia(700, "relay-1", duration=100)
    return sim.run(until=2400)


def test_claims_hold_with_honest_relays() -> None:
    report = claim_race(amnesia=False)
    assert report.ok, report.format()
    assert [(p.provider, p.epoch) for p in report.promotions] == [("standby-0", 1)]
    # both did claim epoch 1; the settle re-read made standby-1 stand down
    timeline = str(report.timeline)
    assert "standby-1   publish claim on epoch 1" in timeline
    assert "standby-1   withdraw claim on epoch 1" in timeline


def test_claims_break_when_a_relay_loses_acknowledged_events() -> None:
    report = claim_race(amnesia=True)
    assert any("relay-1 lost its stored events" in n for n in report.outside_model)
    assert sorted((p.epoch, p.provider) for p in report.promotions) == [
        (1, "standby-0"),
        (1, "standby-1"),
    ]
    (reused,) = report.violations_of("epoch-reused")
    assert "promoted into epoch 1" in reused.explanation
    assert report.violations_of("two-live")
    # the tokens still differ (epoch first, then index), so storage keeps one writer
    tokens = sorted(p.fencing_token for p in report.promotions)
    assert tokens == [1 << 20, (1 << 20) + 1]
    assert {w.fencing_token for w in report.stale_writes} == {1 << 20}


def test_atomic_claims_hold_even_with_amnesia() -> None:
    report = claim_race(amnesia=True, atomic=True)
    assert report.violations == ()
    assert [p.epoch for p in report.promotions] == [1]
