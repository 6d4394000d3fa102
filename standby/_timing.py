"""Timing knobs and the safety rules they must satisfy (see SAFETY.md)."""

from __future__ import annotations

import math
from collections.abc import Callable
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


#: Durations that may be zero.
_ZERO_OK = ("promotion_delay", "fence_grace", "max_clock_skew")


def _default_read_quorum(self: Timing) -> int:
    return self.relay_count - self.write_quorum + 1


@attrs.frozen
class _Rule:
    """One safety rule: its name, its test, its numbers, and how scaling repairs it."""

    name: str
    holds: Callable[[Timing], bool]
    detail: Callable[[Timing], str]
    repair: str | None = None
    """The duration that :meth:`Timing.scaled` raises when rounding broke the rule."""
    on_durations: bool = True
    """Whether the rule compares durations (skipped while one is not a number)."""


def _floor(t: Timing) -> float:
    return t.lease + t.fence_grace + t.max_clock_skew


def _promotion(t: Timing) -> float:
    return t.claim_timeout + t.claim_settle + 2 * t.query_timeout + t.spawn_timeout


_SUSPECT = "heartbeat_interval < suspect_after <= lease"


def _suspect_detail(t: Timing) -> str:
    return (
        f"heartbeat_interval={t.heartbeat_interval}, suspect_after={t.suspect_after}, "
        f"lease={t.lease}"
    )


#: Every rule but "durations are positive numbers", in the order
#: ``Timing.scaled`` repairs them: a rule whose repair raises a duration comes
#: before the rules where that duration is on the right-hand side (``lease``
#: before ``silence``).
_RULES: tuple[_Rule, ...] = (
    _Rule(
        "relay_count >= 1",
        lambda t: t.relay_count >= 1,
        lambda t: f"relay_count={t.relay_count}",
        on_durations=False,
    ),
    _Rule(
        "1 <= write_quorum <= relay_count",
        lambda t: 1 <= t.write_quorum <= t.relay_count,
        lambda t: f"write_quorum={t.write_quorum}, relay_count={t.relay_count}",
        on_durations=False,
    ),
    _Rule(
        "1 <= read_quorum <= relay_count",
        lambda t: 1 <= t.read_quorum <= t.relay_count,
        lambda t: f"read_quorum={t.read_quorum}, relay_count={t.relay_count}",
        on_durations=False,
    ),
    _Rule(
        "write_quorum + read_quorum > relay_count",
        lambda t: t.write_quorum + t.read_quorum > t.relay_count,
        lambda t: (
            f"write_quorum={t.write_quorum} + read_quorum={t.read_quorum} = "
            f"{t.write_quorum + t.read_quorum} <= relay_count={t.relay_count}"
        ),
        on_durations=False,
    ),
    _Rule(
        "max_spawn_attempts >= 1",
        lambda t: t.max_spawn_attempts >= 1,
        lambda t: f"max_spawn_attempts={t.max_spawn_attempts}",
        on_durations=False,
    ),
    _Rule(
        "claim_timeout > 2 * query_timeout",
        lambda t: t.claim_timeout > 2 * t.query_timeout,
        lambda t: (
            f"claim_timeout={t.claim_timeout} <= 2 * query_timeout={t.query_timeout} = "
            f"{2 * t.query_timeout}"
        ),
        repair="claim_timeout",
    ),
    _Rule(
        "claim_settle > claim_timeout",
        lambda t: t.claim_settle > t.claim_timeout,
        lambda t: f"claim_settle={t.claim_settle} <= claim_timeout={t.claim_timeout}",
        repair="claim_settle",
    ),
    _Rule(
        _SUSPECT,
        lambda t: t.heartbeat_interval < t.suspect_after,
        _suspect_detail,
        repair="suspect_after",
    ),
    _Rule(
        _SUSPECT,
        lambda t: t.suspect_after <= t.lease,
        _suspect_detail,
        repair="lease",
    ),
    _Rule(
        "lease > heartbeat_interval",
        lambda t: t.lease > t.heartbeat_interval,
        lambda t: f"lease={t.lease} <= heartbeat_interval={t.heartbeat_interval}",
        repair="lease",
    ),
    _Rule(
        "lease > claim_timeout + claim_settle + 2 * query_timeout + spawn_timeout",
        lambda t: t.lease > _promotion(t),
        lambda t: (
            f"lease={t.lease} <= claim_timeout={t.claim_timeout} + claim_settle="
            f"{t.claim_settle} + 2 * query_timeout={t.query_timeout} + "
            f"spawn_timeout={t.spawn_timeout} = {_promotion(t)}"
        ),
        repair="lease",
    ),
    _Rule(
        "silence >= lease + fence_grace + max_clock_skew",
        lambda t: t.silence >= _floor(t),
        lambda t: (
            f"silence={t.silence} < lease={t.lease} + fence_grace={t.fence_grace} + "
            f"max_clock_skew={t.max_clock_skew} = {_floor(t)}"
        ),
        repair="silence",
    ),
)

#: The order in which :meth:`Timing.violations` lists broken rules.
_REPORT_ORDER: tuple[str, ...] = (
    "silence >= lease + fence_grace + max_clock_skew",
    "relay_count >= 1",
    "1 <= write_quorum <= relay_count",
    "1 <= read_quorum <= relay_count",
    "write_quorum + read_quorum > relay_count",
    "claim_settle > claim_timeout",
    "claim_timeout > 2 * query_timeout",
    "lease > heartbeat_interval",
    "lease > claim_timeout + claim_settle + 2 * query_timeout + spawn_timeout",
    _SUSPECT,
    "max_spawn_attempts >= 1",
)

#: Most steps of one ulp a repair may take (rounding errors are a few ulps).
_MAX_NUDGES = 64


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
            if steps > _MAX_NUDGES:
                raise ArithmeticError(f"scaling cannot restore rule `{rule.name}`")
            values[rule.repair] = math.nextafter(values[rule.repair], math.inf)
            candidate = Timing._unchecked(values)
    return {name: values[name] for name in _DURATIONS}


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
            raise UnsafeTiming(*broken[0], *broken[1:])

    def violations(self) -> list[tuple[str, str]]:
        """Every broken rule as ``(rule, detail)``; empty for a safe timing.

        A duration that is not a number (or out of range) is reported on its
        own line and the rules that compare durations are then skipped (their
        numbers would mean nothing); the quorum rules are still checked.
        """
        out: list[tuple[str, str]] = []
        for name in _DURATIONS:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
                out.append((f"{name} is a number", f"{name}={value!r}"))
                continue
            zero_ok = name in _ZERO_OK
            if (value < 0) if zero_ok else (value <= 0):
                bound = ">= 0" if zero_ok else "> 0"
                out.append((f"{name} {bound}", f"{name}={value}"))
        durations_ok = not out
        broken: dict[str, str] = {}
        for rule in _RULES:
            if rule.on_durations and not durations_ok:
                continue
            if not rule.holds(self) and rule.name not in broken:
                broken[rule.name] = rule.detail(self)
        out.extend(sorted(broken.items(), key=lambda item: _REPORT_ORDER.index(item[0])))
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
        for name in _DURATIONS:
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
        return cls._unchecked(base)

    @classmethod
    def _unchecked(cls, values: dict[str, Any]) -> Timing:
        instance = object.__new__(cls)
        for name, value in values.items():
            object.__setattr__(instance, name, value)
        return instance
