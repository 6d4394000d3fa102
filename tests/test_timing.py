"""Timing rules from SAFETY.md: every rule rejects, naming the rule and the numbers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from standby import Timing, UnsafeTiming


def test_defaults_keep_the_reference_cadence() -> None:
    timing = Timing()
    assert timing.heartbeat_interval == 60
    assert timing.silence == 180
    assert timing.promotion_delay == 30


def test_defaults_satisfy_every_rule() -> None:
    timing = Timing()
    assert timing.violations() == []
    assert timing.is_safe
    assert timing.silence >= timing.lease + timing.fence_grace + timing.max_clock_skew
    assert timing.write_quorum + timing.read_quorum > timing.relay_count
    assert timing.claim_settle > timing.claim_timeout


def test_read_quorum_defaults_to_intersecting_value() -> None:
    assert Timing(relay_count=5, write_quorum=3).read_quorum == 3
    assert Timing(relay_count=3, write_quorum=3).read_quorum == 1


def test_lease_longer_than_silence_allows_is_rejected_with_both_numbers() -> None:
    with pytest.raises(UnsafeTiming) as caught:
        Timing(lease=170.0)
    message = str(caught.value)
    assert "silence >= lease + fence_grace + max_clock_skew" in message
    assert "170.0" in message
    assert "180.0" in message
    assert caught.value.rule == "silence >= lease + fence_grace + max_clock_skew"


def test_silence_exactly_at_the_floor_is_accepted() -> None:
    timing = Timing(lease=120.0, fence_grace=30.0, max_clock_skew=30.0, silence=180.0)
    assert timing.is_safe


def test_silence_one_second_below_the_floor_is_rejected() -> None:
    with pytest.raises(UnsafeTiming, match="silence=179"):
        Timing(lease=120.0, fence_grace=30.0, max_clock_skew=30.0, silence=179.0)


def test_fm09_reference_step_down_after_silence_is_rejected() -> None:
    # The reference provider stepped down after 120 s + 300 s of lost quorum
    # while standbys promoted after 180 s of silence.
    with pytest.raises(UnsafeTiming, match=r"lease=420"):
        Timing(lease=420.0, silence=180.0, suspect_after=120.0)


def test_overlapping_quorums_are_required() -> None:
    with pytest.raises(UnsafeTiming) as caught:
        Timing(relay_count=3, write_quorum=2, read_quorum=1)
    assert caught.value.rule == "write_quorum + read_quorum > relay_count"
    assert "3 <= relay_count=3" in str(caught.value)


def test_quorum_exactly_intersecting_is_accepted() -> None:
    assert Timing(relay_count=4, write_quorum=2, read_quorum=3).is_safe


def test_write_quorum_above_relay_count_is_rejected() -> None:
    with pytest.raises(UnsafeTiming, match="write_quorum"):
        Timing(relay_count=3, write_quorum=4, read_quorum=1)


def test_claim_settle_must_exceed_claim_timeout() -> None:
    with pytest.raises(UnsafeTiming) as caught:
        Timing(claim_timeout=10.0, claim_settle=10.0)
    assert caught.value.rule == "claim_settle > claim_timeout"


def test_claim_window_fits_a_preread_and_a_publish() -> None:
    with pytest.raises(UnsafeTiming, match=r"claim_timeout > 2 \* query_timeout") as caught:
        Timing(query_timeout=5.0, claim_timeout=10.0)
    assert "claim_timeout=10.0 <= 2 * query_timeout=5.0 = 10.0" in str(caught.value)
    assert Timing(query_timeout=4.9, claim_timeout=10.0).is_safe


def test_a_successful_promotion_starts_inside_its_lease() -> None:
    with pytest.raises(UnsafeTiming) as caught:
        Timing(spawn_timeout=90.0)
    assert caught.value.rule == (
        "lease > claim_timeout + claim_settle + 2 * query_timeout + spawn_timeout"
    )
    assert "= 123.0" in str(caught.value)
    assert Timing(spawn_timeout=86.9).is_safe


def test_lease_must_outlast_one_heartbeat_period() -> None:
    with pytest.raises(UnsafeTiming, match="lease > heartbeat_interval"):
        Timing(heartbeat_interval=120.0, lease=120.0, suspect_after=120.0)


def test_suspect_after_between_heartbeat_and_lease() -> None:
    with pytest.raises(UnsafeTiming, match="suspect_after"):
        Timing(suspect_after=30.0)
    with pytest.raises(UnsafeTiming, match="suspect_after"):
        Timing(suspect_after=121.0)


@pytest.mark.parametrize(
    "field", ["heartbeat_interval", "lease", "silence", "claim_timeout", "query_timeout"]
)
def test_durations_must_be_positive(field: str) -> None:
    with pytest.raises(UnsafeTiming, match=f"{field} > 0"):
        Timing(**{field: 0.0})


def test_nan_is_rejected() -> None:
    with pytest.raises(UnsafeTiming, match="silence"):
        Timing(silence=float("nan"))


def test_zero_promotion_delay_is_allowed() -> None:
    assert Timing(promotion_delay=0.0).promotion_delay == 0.0


def test_max_spawn_attempts_at_least_one() -> None:
    with pytest.raises(UnsafeTiming, match="max_spawn_attempts"):
        Timing(max_spawn_attempts=0)


def test_fast_settings_validate_and_are_fast() -> None:
    fast = Timing.fast()
    assert fast.is_safe
    assert fast.silence == pytest.approx(3.0)
    assert fast.relay_count == Timing().relay_count


@given(st.floats(min_value=1e-3, max_value=1e3))
def test_scaling_keeps_a_safe_timing_safe(factor: float) -> None:
    scaled = Timing().scaled(factor)
    assert scaled.silence == pytest.approx(180.0 * factor)
    assert scaled.is_safe


def test_scaling_by_nonpositive_factor_raises() -> None:
    with pytest.raises(ValueError, match="factor"):
        Timing().scaled(0)


def test_unsafe_escape_hatch_builds_but_reports() -> None:
    unsafe = Timing.unsafe_unchecked(lease=420.0, suspect_after=120.0)
    assert unsafe.lease == 420.0
    assert not unsafe.is_safe
    rules = [rule for rule, _ in unsafe.violations()]
    assert "silence >= lease + fence_grace + max_clock_skew" in rules


def test_unsafe_escape_hatch_rejects_unknown_fields() -> None:
    with pytest.raises(TypeError, match="bogus"):
        Timing.unsafe_unchecked(bogus=1)
