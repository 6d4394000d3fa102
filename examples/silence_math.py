"""The pure helpers, on one standby slot's timeline.

Run: python examples/silence_math.py
"""

from __future__ import annotations

import standby

TIMING = standby.Timing()
CREATED = 1_700_000_000.0


def main() -> None:
    topology = standby.Topology("provider-p", ("provider-a", "provider-b", "provider-c"))
    for me in ("provider-p", "provider-b", "provider-z"):
        print(f"{me:>11}: {topology.role_of(me)}")

    slot = standby.StandbySlot.reserve(
        me="provider-b",
        workload_id="job-1",
        topology=topology,
        spec={"image": "app:1"},
        owner="consumer",
        created_at=CREATED,
        expires_at=CREATED + 3_600,
    )
    print("peers of provider-b:", slot.peers)

    # No heartbeat yet: the slot's creation is the baseline (fresh-slot grace).
    for last in (None, CREATED - 600, CREATED + 45):
        baseline = standby.silence_baseline(slot.created_at, last)
        deadline = baseline + TIMING.silence
        print(f"last heartbeat {last!s:>14}: silent from t+{deadline - CREATED:.0f}s")

    baseline = standby.silence_baseline(slot.created_at, CREATED + 45)
    for offset in (224, 225):
        silent = standby.primary_is_silent(CREATED + offset, baseline, TIMING.silence)
        print(f"t+{offset}s silent? {silent}")

    delay = standby.promotion_delay(slot.standby_index, TIMING.promotion_delay)
    print(f"standby {slot.standby_index} backs off {delay:.0f}s after confirming silence")
    print("expired at t+3600?", standby.select_expired({"job-1": slot}, CREATED + 3_600))


if __name__ == "__main__":
    main()
