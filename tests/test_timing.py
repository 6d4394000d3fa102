"""Timing rules from SAFETY.md: every rule rejects, naming the rule and the numbers."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from standby import Timing, UnsafeTiming
from standby.testing import strategies as sbst

DOCS = Path(__file__).resolve().parent.parent / "docs"


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


@pytest.mark.parametrize("factor", [float("nan"), float("inf"), -1.0])
def test_scaling_by_a_non_finite_or_negative_factor_raises(factor: float) -> None:
    with pytest.raises(ValueError, match="factor"):
        Timing().scaled(factor)


def test_scaling_that_overflows_or_underflows_a_duration_raises() -> None:
    with pytest.raises(ValueError, match="overflows"):
        Timing().scaled(1e307)
    with pytest.raises(ValueError, match="underflows fence_grace"):
        Timing.fast().scaled(5e-324)


def test_scaling_keeps_a_rule_that_holds_with_equality() -> None:
    # silence 1.7 == 1.2 + 0.3 + 0.2: multiplying each by 1/60 separately
    # rounds silence below the sum.
    tight = Timing(
        heartbeat_interval=0.5,
        lease=1.2,
        fence_grace=0.3,
        max_clock_skew=0.2,
        silence=1.7,
        suspect_after=0.9,
        claim_timeout=0.1,
        claim_settle=0.15,
        query_timeout=0.04,
        spawn_timeout=0.6,
    )
    factor = 1 / 60
    assert 1.7 * factor < 1.2 * factor + 0.3 * factor + 0.2 * factor  # the rounding trap
    fast = tight.scaled(factor)
    assert fast.is_safe
    assert fast.silence >= fast.lease + fast.fence_grace + fast.max_clock_skew
    assert fast.silence == pytest.approx(1.7 * factor, rel=1e-15)
    assert fast.lease == 1.2 * factor  # only the duration that needed it moved


def _testing_md_timing() -> Timing:
    """``MY_TIMING`` as docs/testing.md builds it, and its scaled copy."""
    text = (DOCS / "testing.md").read_text(encoding="utf-8")
    block = next(b for b in text.split("```python\n")[1:] if "MY_TIMING = " in b)
    namespace: dict[str, Any] = {}
    exec(compile(block.split("```")[0], "docs/testing.md", "exec"), namespace)
    assert namespace["FAST_TIMING"] == namespace["MY_TIMING"].scaled(1 / 60)
    timing: Timing = namespace["FAST_TIMING"]
    return timing


def test_the_testing_docs_example_scales_to_a_safe_timing() -> None:
    fast = _testing_md_timing()
    assert fast.is_safe
    assert fast.silence == pytest.approx(150.0 / 60)


@st.composite
def tight_timings(draw: st.DrawFn) -> Timing:
    """Safe timings, with some rules made to hold with (float) equality or by one ulp."""
    timing = draw(sbst.timings())
    changes: dict[str, float] = {}
    if draw(st.booleans()):
        changes["claim_settle"] = math.nextafter(timing.claim_timeout, math.inf)
    if draw(st.booleans()):
        settle = changes.get("claim_settle", timing.claim_settle)
        promotion = timing.claim_timeout + settle + 2 * timing.query_timeout + timing.spawn_timeout
        lease = math.nextafter(promotion, math.inf)
        if lease > timing.heartbeat_interval and lease >= timing.suspect_after:
            changes["lease"] = lease
    if draw(st.booleans()):
        lease = changes.get("lease", timing.lease)
        changes["silence"] = lease + timing.fence_grace + timing.max_clock_skew
    assume(Timing.unsafe_unchecked(**{**attrs.asdict(timing), **changes}).is_safe)
    return attrs.evolve(timing, **changes)


@given(
    tight_timings(),
    st.one_of(
        st.just(1 / 60),
        st.just(1 / 600),
        st.floats(min_value=1e-6, max_value=1e6, allow_subnormal=False),
    ),
)
def test_scaling_keeps_every_safe_timing_safe(timing: Timing, factor: float) -> None:
    scaled = timing.scaled(factor)
    assert scaled.violations() == []
    for field in attrs.fields(Timing):
        before, after = getattr(timing, field.name), getattr(scaled, field.name)
        if isinstance(before, float):
            # repaired durations move up by a few units in the last place, never down
            exact = before * factor
            assert after >= exact
            assert math.isclose(after, exact, rel_tol=1e-13)
        else:
            assert after == before


def test_an_unsafe_timing_is_not_repaired_by_scaling() -> None:
    with pytest.raises(UnsafeTiming, match="silence"):
        Timing.unsafe_unchecked(lease=420.0, suspect_after=120.0).scaled(0.5)


def test_every_broken_rule_is_reported_at_once() -> None:
    with pytest.raises(UnsafeTiming) as caught:
        Timing(lease=170.0, claim_settle=5.0, relay_count=3, write_quorum=1, read_quorum=1)
    error = caught.value
    assert error.rules == (
        "silence >= lease + fence_grace + max_clock_skew",
        "write_quorum + read_quorum > relay_count",
        "claim_settle > claim_timeout",
    )
    assert error.rule == error.rules[0]
    assert [rule for rule, _ in error.violations] == list(error.rules)
    message = str(error)
    assert message.startswith("unsafe timing: 3 rules are broken: ")
    for rule, detail in error.violations:
        assert f"rule `{rule}` is broken: {detail}" in message
    assert "silence=180.0 < lease=170.0" in message
    assert "write_quorum=1 + read_quorum=1 = 2 <= relay_count=3" in message
    assert "claim_settle=5.0 <= claim_timeout=10.0" in message


@pytest.mark.parametrize("value", [math.inf, -math.inf])
def test_an_infinite_duration_is_refused_naming_the_knob(value: float) -> None:
    with pytest.raises(UnsafeTiming) as caught:
        Timing(lease=value, silence=value)
    assert caught.value.rules == ("lease is a finite number", "silence is a finite number")
    assert "lease=" in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_a_non_number_duration_is_reported_with_the_quorum_rules() -> None:
    with pytest.raises(UnsafeTiming) as caught:
        Timing(silence=float("nan"), query_timeout=-1.0, relay_count=3, write_quorum=4)
    assert caught.value.rules == (
        "silence is a finite number",
        "query_timeout > 0",
        "1 <= write_quorum <= relay_count",
        "1 <= read_quorum <= relay_count",
    )
    # one broken rule keeps the message it always had
    with pytest.raises(UnsafeTiming) as single:
        Timing(lease=170.0)
    assert str(single.value).startswith("unsafe timing: rule `silence >= lease")
    assert single.value.rules == ("silence >= lease + fence_grace + max_clock_skew",)


def test_unsafe_escape_hatch_builds_but_reports() -> None:
    unsafe = Timing.unsafe_unchecked(lease=420.0, suspect_after=120.0)
    assert unsafe.lease == 420.0
    assert not unsafe.is_safe
    rules = [rule for rule, _ in unsafe.violations()]
    assert "silence >= lease + fence_grace + max_clock_skew" in rules


def test_unsafe_escape_hatch_rejects_unknown_fields() -> None:
    with pytest.raises(TypeError, match="bogus"):
        Timing.unsafe_unchecked(bogus=1)
