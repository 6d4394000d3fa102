"""Walk one standby slot through a crash-path failover by hand.

Run: python examples/helpers.py

The script plays the relays and the container runtime itself, so you can see
every effect the election machine asks for and every answer it gets.
"""

from __future__ import annotations

from typing import Any

import standby
import standby.core

NOW = 1_700_000_000.0  # any Unix time
TIMING = standby.Timing()
QUORUM = ("relay-1", "relay-2")


def show(now: float, effects: list[Any]) -> None:
    for effect in effects:
        print(f"t+{now - NOW:6.1f}s  {type(effect).__name__}: {effect}")


def main() -> None:
    # The helpers on their own.
    print("role:", standby.role_of("b", "p", ["a", "b"]))
    print("baseline of a fresh slot:", standby.silence_baseline(NOW, None) - NOW)
    print("backoff of standby 1:", standby.promotion_delay(1, TIMING.promotion_delay))
    print("silent after 179 s?", standby.primary_is_silent(NOW + 179, NOW, TIMING.silence))
    print("silent after 180 s?", standby.primary_is_silent(NOW + 180, NOW, TIMING.silence))

    topology = standby.Topology("p", ("a", "b"))
    slot = standby.StandbySlot.reserve(
        me="a",
        workload_id="job-1",
        topology=topology,
        spec={"image": "app:1"},
        owner="consumer",
        created_at=NOW,
        expires_at=NOW + 86_400,
    )
    election: standby.StandbyElection[Any] = standby.StandbyElection(me="a", timing=TIMING)
    show(NOW, election.reserve(NOW, slot))

    # The primary heartbeats once, then crashes.
    beat = standby.Heartbeat(provider="p", timestamp=NOW + 60)
    show(NOW + 60, election.on_message(NOW + 60, standby.Envelope(beat, "p", "relay-1", NOW + 60)))

    now = election.next_deadline()
    assert now is not None
    while True:
        effects = election.tick(now)
        show(now, effects)
        replies: list[Any] = []
        for effect in effects:
            if isinstance(effect, standby.core.QueryHeartbeats):
                replies = election.heartbeats_queried(now, effect.request_id, [], QUORUM)
            elif isinstance(effect, standby.core.QueryClaims):
                replies = election.claims_queried(now, effect.request_id, [], QUORUM)
        show(now, replies)
        for effect in replies:
            if isinstance(effect, standby.core.PublishClaim):
                show(now, election.claim_published(now, effect.request_id, QUORUM))
            elif isinstance(effect, standby.core.Spawn):
                print(f"          spawning with fencing token {effect.fencing_token}")
                show(now + 5, election.spawn_finished(now + 5, effect.request_id, ok=True))
                return
        upcoming = election.next_deadline()
        assert upcoming is not None
        now = upcoming


if __name__ == "__main__":
    main()
