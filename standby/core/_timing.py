"""Timing knobs and the safety rules they must satisfy (see ``docs/safety.md``).

The rules themselves are in ``_timing_rules`` (one table, which the
docs' list of rules is drawn from); how :meth:`Timing.for_target` derives
the knobs is in ``_timing_target``.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

from ._errors import UnsafeTiming
from ._timing_rules import (
    DURATIONS,
    default_read_quorum,
    duration_violations,
    rule_descriptions,
    rule_violations,
)
from ._timing_rules import RULES as _RULES
from ._timing_target import MAX_NUDGES, derive_for_target, explain

__all__ = ["Timing", "rule_descriptions"]


def _default_read_quorum(self: Timing) -> int:
    return default_read_quorum(self.relay_count, self.write_quorum)


def _repair_rounding(timing: Timing, changes: dict[str, Any]) -> dict[str, Any]:
    """``changes`` with each rule's repair duration raised until the rule holds.

    Only for a timing that was safe before scaling: whatever breaks then is
    float rounding, mended by moving one duration up a few floats. Rules are
    repaired in :data:`_RULES` order, which visits a duration's own rules
    before the rules that use it on the right-hand side, so one pass suffices.
    """
    values = {a.name: getattr(timing, a.name) for a in attrs.fields(Timing)}
    values.update(changes)
    candidate = Timing._unchecked(values)
    for rule in _RULES:
        if rule.repair is None:
            continue
        steps = 0
        while not rule.holds(candidate):
            steps += 1
            if steps > MAX_NUDGES:
                raise ArithmeticError(f"scaling cannot restore rule `{rule.name}`")
            values[rule.repair] = math.nextafter(values[rule.repair], math.inf)
            candidate = Timing._unchecked(values)
    return {name: values[name] for name in DURATIONS}


@attrs.frozen(kw_only=True)
class Timing:
    """Every timing and quorum knob, validated against the safety rules.

    The defaults keep the reference cadence (heartbeat every 60 s, silence
    after 180 s, 30 s of backoff per standby index) and satisfy every rule.
    Constructing a ``Timing`` that breaks a rule raises :class:`UnsafeTiming`
    naming every broken rule and its numbers. All durations are seconds.
    :meth:`for_target` derives a safe timing from a target silence,
    heartbeat interval and relay latency.

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
    * every duration is finite and positive (``promotion_delay``, ``fence_grace``
      and ``max_clock_skew`` may be zero), ``max_spawn_attempts >= 1``,
      ``max_spawn_rounds >= 1``.
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
    max_spawn_rounds: int = 3
    """Rounds of ``max_spawn_attempts`` failed spawns before a standby gives the slot up.

    Between rounds the standby waits a silence window, doubled after each
    round. When the last round fails too, the workload cannot start here: the
    standby withdraws its claim, drops the slot and its node reports
    ``WorkloadCannotStart`` (failure mode 24).
    """
    relay_count: int = 3
    """Number of relays ``N``."""
    write_quorum: int = 2
    """Acknowledgements ``M`` a heartbeat or claim needs to count."""
    read_quorum: int = attrs.field(default=attrs.Factory(_default_read_quorum, takes_self=True))
    """Relays that must answer a query; defaults to ``relay_count - write_quorum + 1``."""

    def __attrs_post_init__(self) -> None:
        broken = self.violations()
        if broken:
            raise UnsafeTiming(*broken[0], *broken[1:])

    def violations(self) -> list[tuple[str, str]]:
        """Every broken rule as ``(rule, detail)``; empty for a safe timing.

        A duration that is not a number (or out of range) is reported on its
        own line and the rules that compare durations are then skipped (their
        numbers would mean nothing); the quorum rules are still checked.
        """
        out = duration_violations(self)
        out.extend(rule_violations(self, durations_ok=not out))
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

        Every rule is linear in the durations, so a safe timing stays safe in
        exact arithmetic; float rounding can still break a rule that held
        with equality (``silence == lease + fence_grace + max_clock_skew``).
        So after multiplying, each rule's left-hand duration (``silence``,
        ``lease``, ``claim_settle``, ``claim_timeout``, ``suspect_after``) is
        raised to the smallest float that satisfies it again: a change of a
        few units in the last place, always in the safe direction. Quorums
        and attempt counts are unchanged.

        Raises :class:`ValueError` for a factor that is not a finite number
        ``> 0`` or that overflows or underflows a duration, and
        :class:`UnsafeTiming` when this timing was unsafe already (built with
        :meth:`unsafe_unchecked`).
        """
        if isinstance(factor, bool) or not (factor > 0 and math.isfinite(factor)):
            raise ValueError(f"scale factor must be a finite number > 0, got {factor}")
        changes: dict[str, Any] = {}
        for name in DURATIONS:
            value = getattr(self, name)
            product = value * factor
            if not math.isfinite(product):
                raise ValueError(f"scale factor {factor} overflows {name}={value}")
            if product == 0 and value != 0:
                raise ValueError(f"scale factor {factor} underflows {name}={value} to zero")
            changes[name] = product
        if self.is_safe:
            changes = _repair_rounding(self, changes)
        return attrs.evolve(self, **changes)

    @classmethod
    def fast(cls) -> Timing:
        """Demo and test settings: the defaults sped up 60 times (silence 3 s)."""
        return cls().scaled(1 / 60)

    @classmethod
    def for_target(
        cls,
        *,
        silence: float,
        heartbeat_interval: float,
        relay_latency: float,
        max_clock_skew: float,
        relay_count: int = 3,
        write_quorum: int | None = None,
        spawn_timeout: float | None = None,
        fence_grace: float | None = None,
        promotion_delay: float | None = None,
    ) -> Timing:
        """A safe ``Timing`` built from what a provider knows and wants.

        ``silence`` (how long a standby waits before it takes over),
        ``heartbeat_interval``, ``relay_count`` and ``max_clock_skew`` are kept
        as given. ``relay_latency`` is how long a relay usually takes to answer
        a query or acknowledge a publish. Every other knob is derived:

        * ``write_quorum``: a majority, ``relay_count // 2 + 1`` (or as
          given), and ``read_quorum = relay_count - write_quorum + 1``;
        * ``query_timeout = 4 * relay_latency``, ``claim_timeout = 2.5 *
          query_timeout``, ``claim_settle = 1.5 * claim_timeout``,
          ``retry_interval = claim_timeout``;
        * ``spawn_timeout = silence / 3`` and ``fence_grace = silence / 6``
          unless given (both depend on the workload: pass them when you
          know them), ``spawn_retry_backoff = spawn_timeout / 12``;
        * ``lease = silence - fence_grace - max_clock_skew``, the longest
          lease the silence rule allows, and ``suspect_after`` halfway
          between the heartbeat interval and the lease;
        * ``promotion_delay = claim_timeout + claim_settle + query_timeout``
          (or as given): standby ``i`` has claimed and settled before
          standby ``i + 1`` reads the claims.

        With the reference targets (``silence=180``, ``heartbeat_interval=60``,
        ``relay_latency=1``, ``max_clock_skew=20``) this gives settings close
        to the defaults.

        Raises :class:`UnsafeTiming` listing **every** rule the targets break
        (a broken rule on a derived knob names how it was derived), so one
        error says everything to change; :class:`ValueError` or
        :class:`TypeError` for a target that is not a finite number in range.
        """
        values = derive_for_target(
            silence=silence,
            heartbeat_interval=heartbeat_interval,
            relay_latency=relay_latency,
            max_clock_skew=max_clock_skew,
            relay_count=relay_count,
            write_quorum=write_quorum,
            spawn_timeout=spawn_timeout,
            fence_grace=fence_grace,
            promotion_delay=promotion_delay,
        )
        candidate = cls._unchecked(values)
        # Every target is a finite number, so every rule's comparison means
        # something even when a derived duration came out negative: check all.
        broken = duration_violations(candidate) + rule_violations(candidate, durations_ok=True)
        if broken:
            raise UnsafeTiming(*explain(broken[0]), *map(explain, broken[1:]))
        return cls(**values)

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
            base["read_quorum"] = default_read_quorum(base["relay_count"], base["write_quorum"])
        unknown = set(base) - {a.name for a in attrs.fields(cls)}
        if unknown:
            raise TypeError(f"unknown Timing fields: {sorted(unknown)}")
        return cls._unchecked(base)

    @classmethod
    def _unchecked(cls, values: dict[str, Any]) -> Timing:
        instance = object.__new__(cls)
        for name, value in values.items():
            object.__setattr__(instance, name, value)
        return instance
