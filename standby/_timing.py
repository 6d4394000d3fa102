"""Timing knobs and the safety rules they must satisfy (see SAFETY.md)."""

from __future__ import annotations

import math
from typing import Any

import attrs

from ._errors import UnsafeTiming

__all__ = ["Timing"]

# Fields measured in seconds: these are the ones ``Timing.scaled`` multiplies.
_DURATIONS = (
    "heartbeat_interval",
    "lease",
    "fence_grace",
    "max_clock_skew",
    "silence",
    "promotion_delay",
    "suspect_after",
    "claim_timeout",
    "claim_settle",
    "query_timeout",
    "retry_interval",
    "spawn_timeout",
    "spawn_retry_backoff",
)


def _default_read_quorum(self: Timing) -> int:
    return self.relay_count - self.write_quorum + 1


@attrs.frozen(kw_only=True)
class Timing:
    """Every timing and quorum knob, validated against the safety rules.

    The defaults keep the reference cadence (heartbeat every 60 s, silence
    after 180 s, 30 s of backoff per standby index) and satisfy every rule.
    Constructing a ``Timing`` that breaks a rule raises :class:`UnsafeTiming`
    naming the rule and the numbers. All durations are seconds.

    The rules:

    * ``silence >= lease + fence_grace + max_clock_skew`` -- a primary that lost
      its write quorum has stopped its container before any standby may
      declare it silent.
    * ``write_quorum + read_quorum > relay_count`` -- every read quorum meets
      every write quorum.
    * ``1 <= write_quorum <= relay_count`` and ``1 <= read_quorum <= relay_count``.
    * ``claim_settle > claim_timeout`` -- two rival claims always see each other.
    * ``claim_timeout > 2 * query_timeout`` -- a pre-read and a publish that each
      wait out an unreachable relay still fit in the claim window.
    * ``lease > heartbeat_interval`` -- one heartbeat period never ends a lease.
    * ``lease > claim_timeout + claim_settle + 2 * query_timeout + spawn_timeout``
      -- a promotion that succeeds always starts inside the lease that began
      with its claim.
    * ``heartbeat_interval < suspect_after <= lease``.
    * every duration is positive (``promotion_delay``, ``fence_grace`` and
      ``max_clock_skew`` may be zero), ``max_spawn_attempts >= 1``.
    """

    heartbeat_interval: float = 60.0
    """How often the primary publishes a heartbeat."""
    lease: float = 120.0
    """How long a heartbeat acknowledged by a write quorum keeps the primary's lease."""
    fence_grace: float = 30.0
    """Time allowed for stopping the container once the lease has ended."""
    max_clock_skew: float = 20.0
    """Largest difference between two hosts' wall clocks that the rules tolerate."""
    silence: float = 180.0
    """How long a standby must hear nothing before it may declare the primary silent."""
    promotion_delay: float = 30.0
    """Backoff per standby index: standby ``i`` waits ``i * promotion_delay``."""
    suspect_after: float = 90.0
    """A primary without a write quorum for this long is ``Suspect``."""
    claim_timeout: float = 10.0
    """A claim must reach a write quorum within this long of its pre-read."""
    claim_settle: float = 15.0
    """Wait between a claim reaching its quorum and the settle re-read."""
    query_timeout: float = 4.0
    """How long a query waits for relays to answer."""
    retry_interval: float = 10.0
    """Wait before retrying a query that did not reach its quorum."""
    spawn_timeout: float = 60.0
    """Longest a spawn may take before it is treated as failed."""
    spawn_retry_backoff: float = 5.0
    """First backoff after a failed spawn; it doubles on each further failure."""
    max_spawn_attempts: int = 3
    """Spawn attempts in a row before the slot falls back to a full silence wait."""
    relay_count: int = 3
    """Number of relays ``N``."""
    write_quorum: int = 2
    """Acknowledgements ``M`` a heartbeat or claim needs to count."""
    read_quorum: int = attrs.field(default=attrs.Factory(_default_read_quorum, takes_self=True))
    """Relays that must answer a query; defaults to ``relay_count - write_quorum + 1``."""

    def __attrs_post_init__(self) -> None:
        broken = self.violations()
        if broken:
            rule, detail = broken[0]
            raise UnsafeTiming(rule, detail)

    def violations(self) -> list[tuple[str, str]]:
        """Every broken rule as ``(rule, detail)``; empty for a safe timing."""
        out: list[tuple[str, str]] = []
        for name in _DURATIONS:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
                out.append((f"{name} is a number", f"{name}={value!r}"))
                continue
            zero_ok = name in ("promotion_delay", "fence_grace", "max_clock_skew")
            if (value < 0) if zero_ok else (value <= 0):
                bound = ">= 0" if zero_ok else "> 0"
                out.append((f"{name} {bound}", f"{name}={value}"))
        if out:
            return out
        floor = self.lease + self.fence_grace + self.max_clock_skew
        if self.silence < floor:
            out.append(
                (
                    "silence >= lease + fence_grace + max_clock_skew",
                    f"silence={self.silence} < lease={self.lease} + fence_grace="
                    f"{self.fence_grace} + max_clock_skew={self.max_clock_skew} = {floor}",
                )
            )
        n, w, r = self.relay_count, self.write_quorum, self.read_quorum
        if n < 1:
            out.append(("relay_count >= 1", f"relay_count={n}"))
        if not 1 <= w <= n:
            out.append(("1 <= write_quorum <= relay_count", f"write_quorum={w}, relay_count={n}"))
        if not 1 <= r <= n:
            out.append(("1 <= read_quorum <= relay_count", f"read_quorum={r}, relay_count={n}"))
        if w + r <= n:
            out.append(
                (
                    "write_quorum + read_quorum > relay_count",
                    f"write_quorum={w} + read_quorum={r} = {w + r} <= relay_count={n}",
                )
            )
        if self.claim_settle <= self.claim_timeout:
            out.append(
                (
                    "claim_settle > claim_timeout",
                    f"claim_settle={self.claim_settle} <= claim_timeout={self.claim_timeout}",
                )
            )
        if self.claim_timeout <= 2 * self.query_timeout:
            out.append(
                (
                    "claim_timeout > 2 * query_timeout",
                    f"claim_timeout={self.claim_timeout} <= 2 * query_timeout="
                    f"{self.query_timeout} = {2 * self.query_timeout}",
                )
            )
        if self.lease <= self.heartbeat_interval:
            out.append(
                (
                    "lease > heartbeat_interval",
                    f"lease={self.lease} <= heartbeat_interval={self.heartbeat_interval}",
                )
            )
        promotion = (
            self.claim_timeout + self.claim_settle + 2 * self.query_timeout + self.spawn_timeout
        )
        if self.lease <= promotion:
            out.append(
                (
                    "lease > claim_timeout + claim_settle + 2 * query_timeout + spawn_timeout",
                    f"lease={self.lease} <= claim_timeout={self.claim_timeout} + claim_settle="
                    f"{self.claim_settle} + 2 * query_timeout={self.query_timeout} + "
                    f"spawn_timeout={self.spawn_timeout} = {promotion}",
                )
            )
        if not self.heartbeat_interval < self.suspect_after <= self.lease:
            out.append(
                (
                    "heartbeat_interval < suspect_after <= lease",
                    f"heartbeat_interval={self.heartbeat_interval}, "
                    f"suspect_after={self.suspect_after}, lease={self.lease}",
                )
            )
        if self.max_spawn_attempts < 1:
            out.append(("max_spawn_attempts >= 1", f"max_spawn_attempts={self.max_spawn_attempts}"))
        return out

    @property
    def is_safe(self) -> bool:
        """``True`` when every rule holds (always, unless built by :meth:`unsafe_unchecked`)."""
        return not self.violations()

    @property
    def peer_claim_grace(self) -> float:
        """How long a standby defers to a peer's claim before treating the peer as primary.

        Long enough for the peer to settle and spawn: ``claim_settle +
        spawn_timeout + query_timeout``.
        """
        return self.claim_settle + self.spawn_timeout + self.query_timeout

    def scaled(self, factor: float) -> Timing:
        """The same timing with every duration multiplied by ``factor``.

        Every rule is linear in the durations, so a safe timing stays safe.
        Quorums and attempt counts are unchanged.
        """
        if not factor > 0:
            raise ValueError(f"scale factor must be > 0, got {factor}")
        changes: dict[str, Any] = {name: getattr(self, name) * factor for name in _DURATIONS}
        return attrs.evolve(self, **changes)

    @classmethod
    def fast(cls) -> Timing:
        """Demo and test settings: the defaults sped up 60 times (silence 3 s)."""
        return cls().scaled(1 / 60)

    @classmethod
    def unsafe_unchecked(cls, **fields: Any) -> Timing:
        """Build a ``Timing`` **without** checking the safety rules.

        Only for demonstrating what goes wrong (the simulator's unsafe
        scenarios). Never use it in a provider: :attr:`is_safe` and
        :meth:`violations` still tell what is broken.
        """
        base = {a.name: a.default for a in attrs.fields(cls) if a.name != "read_quorum"}
        base.update(fields)
        if "read_quorum" not in base:
            base["read_quorum"] = base["relay_count"] - base["write_quorum"] + 1
        unknown = set(base) - {a.name for a in attrs.fields(cls)}
        if unknown:
            raise TypeError(f"unknown Timing fields: {sorted(unknown)}")
        instance = object.__new__(cls)
        for name, value in base.items():
            object.__setattr__(instance, name, value)
        return instance
