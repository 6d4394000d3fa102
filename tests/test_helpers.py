"""The pure helpers, each rule checked at its boundary."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from standby import (
    NotAddressed,
    Primary,
    Standby,
    StandbySlot,
    primary_is_silent,
    promotion_delay,
    role_of,
    select_expired,
    silence_baseline,
)


class TestPrimaryIsSilent:
    def test_exactly_at_threshold_is_silent(self) -> None:
        assert primary_is_silent(now=280.0, baseline=100.0, threshold=180.0)

    def test_one_second_before_threshold_is_not_silent(self) -> None:
        assert not primary_is_silent(now=279.0, baseline=100.0, threshold=180.0)

    def test_baseline_zero_is_never_silence(self) -> None:
        assert not primary_is_silent(now=1e9, baseline=0.0, threshold=180.0)

    def test_negative_baseline_is_never_silence(self) -> None:
        assert not primary_is_silent(now=1e9, baseline=-5.0, threshold=0.0)

    def test_baseline_in_the_future_is_not_silence(self) -> None:
        assert not primary_is_silent(now=100.0, baseline=100.5, threshold=0.0)

    def test_zero_threshold_is_silent_at_the_baseline(self) -> None:
        assert primary_is_silent(now=100.0, baseline=100.0, threshold=0.0)

    @given(
        now=st.floats(0, 1e10),
        baseline=st.floats(-1e10, 1e10),
        threshold=st.floats(0, 1e6),
    )
    def test_matches_the_contract(self, now: float, baseline: float, threshold: float) -> None:
        expected = baseline > 0 and baseline <= now and now - baseline >= threshold
        assert primary_is_silent(now, baseline, threshold) is expected


class TestSilenceBaseline:
    def test_no_heartbeat_uses_created_at(self) -> None:
        assert silence_baseline(1000.0, None) == 1000.0

    def test_heartbeat_after_reservation_moves_the_baseline(self) -> None:
        assert silence_baseline(1000.0, 1060.0) == 1060.0

    def test_heartbeat_older_than_reservation_does_not_shorten_grace(self) -> None:
        assert silence_baseline(1000.0, 400.0) == 1000.0

    def test_zero_heartbeat_keeps_created_at(self) -> None:
        assert silence_baseline(1000.0, 0.0) == 1000.0

    @given(st.floats(1, 1e10), st.one_of(st.none(), st.floats(0, 1e10)))
    def test_is_the_maximum(self, created_at: float, last: float | None) -> None:
        result = silence_baseline(created_at, last)
        assert result >= created_at
        assert result == (created_at if last is None else max(created_at, last))


class TestPromotionDelay:
    def test_index_zero_promotes_at_once(self) -> None:
        assert promotion_delay(0, 30.0) == 0.0

    def test_index_scales_the_delay(self) -> None:
        assert promotion_delay(1, 30.0) == 30.0
        assert promotion_delay(3, 30.0) == 90.0

    def test_negative_index_raises(self) -> None:
        with pytest.raises(ValueError, match="index"):
            promotion_delay(-1, 30.0)

    def test_negative_delay_raises(self) -> None:
        with pytest.raises(ValueError, match="delay"):
            promotion_delay(1, -0.5)

    def test_zero_delay_is_allowed(self) -> None:
        assert promotion_delay(4, 0.0) == 0.0


class TestRoleOf:
    def test_primary(self) -> None:
        assert role_of("p", "p", ["a", "b"]) == Primary()

    def test_first_standby_has_index_zero(self) -> None:
        assert role_of("a", "p", ["a", "b"]) == Standby(index=0, count=2)

    def test_later_standby(self) -> None:
        assert role_of("b", "p", ["a", "b", "c"]) == Standby(index=1, count=3)

    def test_not_addressed(self) -> None:
        assert role_of("z", "p", ["a", "b"]) == NotAddressed()

    def test_no_standbys(self) -> None:
        assert role_of("a", "p", []) == NotAddressed()

    def test_first_match_wins(self) -> None:
        # role_of does not validate: a duplicated identity gets its first index.
        assert role_of("a", "p", ["x", "a", "a"]) == Standby(index=1, count=3)

    def test_primary_wins_over_standby_listing(self) -> None:
        assert role_of("p", "p", ["p"]) == Primary()

    def test_same_compares_canonical_forms(self) -> None:
        def same(x: str, y: str) -> bool:
            return x.lower().removeprefix("0x") == y.lower().removeprefix("0x")

        assert role_of("0xABC", "p", ["abc"], same=same) == Standby(index=0, count=1)
        assert role_of("0xABC", "p", ["abc"]) == NotAddressed()

    def test_standby_index_must_be_in_range(self) -> None:
        with pytest.raises(ValueError, match="index"):
            Standby(index=2, count=2)


def _slot(workload_id: str, expires_at: float) -> StandbySlot[None]:
    return StandbySlot(
        workload_id=workload_id,
        primary="p",
        standby_index=0,
        standby_count=1,
        spec=None,
        expires_at=expires_at,
        owner="c",
        created_at=10.0,
    )


class TestSelectExpired:
    def test_expires_at_equal_to_now_is_expired(self) -> None:
        slots = {"w": _slot("w", 100.0)}
        assert select_expired(slots, 100.0) == ["w"]

    def test_one_second_before_is_not_expired(self) -> None:
        assert select_expired({"w": _slot("w", 100.0)}, 99.0) == []

    def test_selects_only_expired(self) -> None:
        slots = {"a": _slot("a", 50.0), "b": _slot("b", 150.0), "c": _slot("c", 1e12)}
        assert select_expired(slots, 100.0) == ["a"]

    def test_empty(self) -> None:
        assert select_expired({}, 100.0) == []
