"""``Timing.for_target``: from a target silence, heartbeat and relay latency to a safe timing."""

from __future__ import annotations

import math
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from standby import Timing, UnsafeTiming
from standby.core._timing_rules import RULES
from standby.core._timing_target import derive_for_target
from standby.testing import Simulation

REFERENCE = {
    "silence": 180.0,
    "heartbeat_interval": 60.0,
    "relay_latency": 1.0,
    "max_clock_skew": 20.0,
}


def seconds(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False, allow_infinity=False)


@st.composite
def targets(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {
        "silence": draw(seconds(1e-3, 1e6)),
        "heartbeat_interval": draw(seconds(1e-3, 1e5)),
        "relay_latency": draw(seconds(1e-4, 1e3)),
        "max_clock_skew": draw(st.one_of(st.just(0.0), seconds(1e-4, 1e4))),
        "relay_count": draw(st.integers(1, 9)),
    }
    if draw(st.booleans()):
        out["write_quorum"] = draw(st.integers(0, 10))
    if draw(st.booleans()):
        out["spawn_timeout"] = draw(seconds(1e-3, 1e5))
    if draw(st.booleans()):
        out["fence_grace"] = draw(st.one_of(st.just(0.0), seconds(1e-3, 1e5)))
    if draw(st.booleans()):
        out["promotion_delay"] = draw(st.one_of(st.just(0.0), seconds(1e-3, 1e4)))
    return out


def derived(target: dict[str, Any]) -> dict[str, Any]:
    arguments = {
        "relay_count": 3,
        "write_quorum": None,
        "spawn_timeout": None,
        "fence_grace": None,
        "promotion_delay": None,
        **target,
    }
    return derive_for_target(**arguments)


def broken_rules(values: dict[str, Any]) -> set[str]:
    """The table's rules the derived values break, checked here rule by rule."""
    candidate = Timing.unsafe_unchecked(**values)
    broken = {rule.name for rule in RULES if not rule.holds(candidate)}
    # of the derived durations only these two can come out negative
    broken |= {f"{knob} > 0" for knob in ("lease", "suspect_after") if values[knob] <= 0}
    return broken


@given(targets())
def test_for_target_validates_with_the_targets_or_lists_every_broken_rule(
    target: dict[str, Any],
) -> None:
    expected = broken_rules(derived(target))
    if expected:
        # every broken rule at once, each exactly once, none that holds
        with pytest.raises(UnsafeTiming) as caught:
            Timing.for_target(**target)
        assert set(caught.value.rules) == expected
        assert len(caught.value.rules) == len(expected)
        for rule in caught.value.rules:
            assert f"`{rule}`" in str(caught.value)
        return
    timing = Timing.for_target(**target)
    assert timing.is_safe
    assert Timing(**attrs.asdict(timing)) == timing
    assert timing.silence == target["silence"]
    assert timing.heartbeat_interval == target["heartbeat_interval"]
    assert timing.max_clock_skew == target["max_clock_skew"]
    assert timing.relay_count == target["relay_count"]
    for knob in ("write_quorum", "spawn_timeout", "fence_grace", "promotion_delay"):
        if knob in target:
            assert getattr(timing, knob) == target[knob]
    # the silence rule is met with the longest lease it allows
    assert timing.silence >= timing.lease + timing.fence_grace + timing.max_clock_skew
    longest = timing.silence - timing.fence_grace - timing.max_clock_skew
    assert abs(timing.lease - longest) <= 4 * math.ulp(timing.silence)


@given(
    silence=seconds(1e-2, 1e6),
    heartbeat_share=st.floats(0.01, 0.99),
    latency_share=st.floats(0.01, 0.99),
    skew_share=st.floats(0, 0.99),
    relay_count=st.integers(1, 9),
)
def test_targets_that_leave_room_always_succeed(
    silence: float,
    heartbeat_share: float,
    latency_share: float,
    skew_share: float,
    relay_count: int,
) -> None:
    # With the derived spawn_timeout (silence / 3) and fence_grace
    # (silence / 6) the rules come down to two: lease = 5/6 silence - skew
    # must exceed the heartbeat interval, and silence / 2 - skew must exceed
    # the claim knobs, 33 * relay_latency. Targets inside both always work.
    skew = skew_share * silence / 4
    room = silence / 2 - skew
    heartbeat = heartbeat_share * room
    latency = latency_share * room / 33
    timing = Timing.for_target(
        silence=silence,
        heartbeat_interval=heartbeat,
        relay_latency=latency,
        max_clock_skew=skew,
        relay_count=relay_count,
    )
    assert timing.is_safe
    assert timing.write_quorum == relay_count // 2 + 1
    assert timing.write_quorum + timing.read_quorum > relay_count


def test_reference_targets_come_close_to_the_defaults() -> None:
    timing = Timing.for_target(**REFERENCE)
    defaults = Timing()
    assert timing.silence == defaults.silence
    assert timing.heartbeat_interval == defaults.heartbeat_interval
    assert (timing.query_timeout, timing.claim_timeout, timing.claim_settle) == (4.0, 10.0, 15.0)
    assert (timing.spawn_timeout, timing.fence_grace, timing.spawn_retry_backoff) == (60, 30, 5)
    assert timing.lease == 130.0
    assert timing.suspect_after == 95.0
    assert timing.promotion_delay == 29.0
    assert (timing.relay_count, timing.write_quorum, timing.read_quorum) == (3, 2, 2)


def test_impossible_targets_report_every_broken_rule_in_one_error() -> None:
    # A heartbeat as long as the silence, slow relays and a write quorum
    # larger than the relays: five rules in one error, where one rule per
    # error would have taken five tries.
    with pytest.raises(UnsafeTiming) as caught:
        Timing.for_target(
            silence=60, heartbeat_interval=60, relay_latency=5, max_clock_skew=20, write_quorum=4
        )
    assert caught.value.rules == (
        "1 <= write_quorum <= relay_count",
        "1 <= read_quorum <= relay_count",
        "lease > heartbeat_interval",
        "lease > claim_timeout + claim_settle + 2 * query_timeout + spawn_timeout",
        "heartbeat_interval < suspect_after <= lease",
    )
    message = str(caught.value)
    assert "5 rules are broken" in message
    assert "lease=30.0 <= heartbeat_interval=60.0" in message
    assert "derived: lease = silence - fence_grace - max_clock_skew" in message


def test_a_skew_larger_than_the_silence_is_reported_with_the_lease_rules() -> None:
    with pytest.raises(UnsafeTiming) as caught:
        Timing.for_target(silence=10, heartbeat_interval=1, relay_latency=0.01, max_clock_skew=30)
    assert caught.value.rules[0] == "lease > 0"
    assert "lease > heartbeat_interval" in caught.value.rules


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("silence", 0, ValueError),
        ("silence", math.inf, ValueError),
        ("heartbeat_interval", -1, ValueError),
        ("relay_latency", math.nan, ValueError),
        ("max_clock_skew", -0.5, ValueError),
        ("silence", "180", TypeError),
        ("heartbeat_interval", True, TypeError),
        ("relay_count", 3.0, TypeError),
    ],
)
def test_targets_that_are_not_durations_are_refused(field: str, value: Any, error: type) -> None:
    with pytest.raises(error, match=field):
        Timing.for_target(**{**REFERENCE, field: value})


def test_a_built_timing_fails_over_in_the_simulator() -> None:
    timing = Timing.for_target(
        silence=30, heartbeat_interval=10, relay_latency=0.2, max_clock_skew=2, spawn_timeout=5
    )
    report = Simulation(timing=timing, seed=11).crash(300, "primary").run(until=900)
    assert report.ok, report.format()
    (promotion,) = report.promotions
    assert promotion.provider == "standby-0"
    assert report.double_live_seconds == 0
