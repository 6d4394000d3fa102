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
    why: str
    """What the rule protects (the safety page of the docs prints it)."""
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
        why="There is at least one relay to publish to and read from.",
    ),
    _Rule(
        "1 <= write_quorum <= relay_count",
        lambda t: 1 <= t.write_quorum <= t.relay_count,
        lambda t: f"write_quorum={t.write_quorum}, relay_count={t.relay_count}",
        on_durations=False,
        why=(
            "A heartbeat or claim counts only once some relay stored it, and a quorum larger than "
            "the relays could never be reached."
        ),
    ),
    _Rule(
        "1 <= read_quorum <= relay_count",
        lambda t: 1 <= t.read_quorum <= t.relay_count,
        lambda t: f"read_quorum={t.read_quorum}, relay_count={t.relay_count}",
        on_durations=False,
        why="A query is judged on at least one answer and never waits for more relays than exist.",
    ),
    _Rule(
        "write_quorum + read_quorum > relay_count",
        lambda t: t.write_quorum + t.read_quorum > t.relay_count,
        lambda t: (
            f"write_quorum={t.write_quorum} + read_quorum={t.read_quorum} = "
            f"{t.write_quorum + t.read_quorum} <= relay_count={t.relay_count}"
        ),
        on_durations=False,
        why=(
            "Every read quorum meets every write quorum, so a query answered by a read quorum sees"
            " the newest acknowledged heartbeat or claim (guarantee 1)."
        ),
    ),
    _Rule(
        "max_spawn_attempts >= 1",
        lambda t: t.max_spawn_attempts >= 1,
        lambda t: f"max_spawn_attempts={t.max_spawn_attempts}",
        on_durations=False,
        why="A standby that won its claim tries to spawn at least once.",
    ),
    _Rule(
        "claim_timeout > 2 * query_timeout",
        lambda t: t.claim_timeout > 2 * t.query_timeout,
        lambda t: (
            f"claim_timeout={t.claim_timeout} <= 2 * query_timeout={t.query_timeout} = "
            f"{2 * t.query_timeout}"
        ),
        repair="claim_timeout",
        why=(
            "A pre-read and a publish that each wait out an unreachable relay still fit in the "
            "claim window."
        ),
    ),
    _Rule(
        "claim_settle > claim_timeout",
        lambda t: t.claim_settle > t.claim_timeout,
        lambda t: f"claim_settle={t.claim_settle} <= claim_timeout={t.claim_timeout}",
        repair="claim_settle",
        why=(
            "Two rival claims always see each other: each reached its quorum before the other's "
            "settle re-read began (guarantee 2)."
        ),
    ),
    _Rule(
        _SUSPECT,
        lambda t: t.heartbeat_interval < t.suspect_after,
        _suspect_detail,
        repair="suspect_after",
        why="A primary is not suspect between two punctual heartbeats.",
    ),
    _Rule(
        _SUSPECT,
        lambda t: t.suspect_after <= t.lease,
        _suspect_detail,
        repair="lease",
        why="A primary turns suspect no later than its lease ends.",
    ),
    _Rule(
        "lease > heartbeat_interval",
        lambda t: t.lease > t.heartbeat_interval,
        lambda t: f"lease={t.lease} <= heartbeat_interval={t.heartbeat_interval}",
        repair="lease",
        why="One heartbeat period never ends a lease, so a live primary with a quorum keeps it.",
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
        why=(
            "A promotion that succeeds starts its workload inside the lease that began with its "
            "claim."
        ),
    ),
    _Rule(
        "silence >= lease + fence_grace + max_clock_skew",
        lambda t: t.silence >= _floor(t),
        lambda t: (
            f"silence={t.silence} < lease={t.lease} + fence_grace={t.fence_grace} + "
            f"max_clock_skew={t.max_clock_skew} = {_floor(t)}"
        ),
        repair="silence",
        why=(
            "A primary that lost its write quorum has stopped its container before any standby may"
            " call it silent, whatever the skew between their clocks (guarantee 1)."
        ),
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

#: How the rule on durations reads in the docs' rule list.
_POSITIVE = "every duration > 0 (promotion_delay, fence_grace, max_clock_skew may be 0)"


def _duration_violations(t: Timing) -> list[tuple[str, str]]:
    """A line for each duration that is not a number or is out of range."""
    out: list[tuple[str, str]] = []
    for name in _DURATIONS:
        value = getattr(t, name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
            out.append((f"{name} is a number", f"{name}={value!r}"))
            continue
        zero_ok = name in _ZERO_OK
        if (value < 0) if zero_ok else (value <= 0):
            bound = ">= 0" if zero_ok else "> 0"
            out.append((f"{name} {bound}", f"{name}={value}"))
    return out


def _rule_violations(t: Timing, *, durations_ok: bool) -> list[tuple[str, str]]:
    """Each broken rule of :data:`_RULES` once, in :data:`_REPORT_ORDER`.

    With ``durations_ok`` false the rules that compare durations are skipped.
    """
    broken: dict[str, str] = {}
    for rule in _RULES:
        if rule.on_durations and not durations_ok:
            continue
        if not rule.holds(t) and rule.name not in broken:
            broken[rule.name] = rule.detail(t)
    return sorted(broken.items(), key=lambda item: _REPORT_ORDER.index(item[0]))


def rule_descriptions() -> tuple[tuple[str, str], ...]:
    """Every rule :class:`Timing` enforces, as ``(rule, why)``, in report order.

    The rule on durations comes first; a rule that the table checks in two
    halves (``heartbeat_interval < suspect_after <= lease``) is listed once,
    its reasons joined. The docs' safety page is generated from this.
    """
    why: dict[str, list[str]] = {}
    for rule in _RULES:
        why.setdefault(rule.name, []).append(rule.why)
    rows = [(_POSITIVE, "A duration that is not a positive number makes every comparison moot.")]
    rows.extend((name, " ".join(why[name])) for name in _REPORT_ORDER)
    return tuple(rows)


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


#: Ratios :meth:`Timing.for_target` derives the claim knobs with; each is the
#: one the defaults use, and each keeps its rule with room to spare.
_QUERY_PER_LATENCY = 4.0
_CLAIM_PER_QUERY = 2.5  # claim_timeout > 2 * query_timeout
_SETTLE_PER_CLAIM = 1.5  # claim_settle > claim_timeout
_RETRIES_PER_SPAWN = 12.0  # spawn_retry_backoff = spawn_timeout / 12


def _target_number(name: str, value: object, *, zero_ok: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or (value < 0 if zero_ok else value <= 0):
        bound = ">= 0" if zero_ok else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


def _derive_for_target(
    *,
    silence: float,
    heartbeat_interval: float,
    relay_latency: float,
    max_clock_skew: float,
    relay_count: int,
    write_quorum: int | None,
    spawn_timeout: float | None,
    fence_grace: float | None,
    promotion_delay: float | None,
) -> dict[str, Any]:
    """Every field of the :class:`Timing` that :meth:`Timing.for_target` builds.

    Not checked against the rules: :meth:`Timing.for_target` does that.
    """
    silence = _target_number("silence", silence)
    heartbeat_interval = _target_number("heartbeat_interval", heartbeat_interval)
    relay_latency = _target_number("relay_latency", relay_latency)
    max_clock_skew = _target_number("max_clock_skew", max_clock_skew, zero_ok=True)
    for name, count in (("relay_count", relay_count), ("write_quorum", write_quorum)):
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
            raise TypeError(f"{name} must be an int, got {count!r}")
    spawn = silence / 3 if spawn_timeout is None else _target_number("spawn_timeout", spawn_timeout)
    fence = (
        silence / 6
        if fence_grace is None
        else _target_number("fence_grace", fence_grace, zero_ok=True)
    )
    query_timeout = _QUERY_PER_LATENCY * relay_latency
    claim_timeout = _CLAIM_PER_QUERY * query_timeout
    claim_settle = _SETTLE_PER_CLAIM * claim_timeout
    # The longest lease the silence rule allows, moved down a few floats when
    # rounding put lease + fence_grace + max_clock_skew above the silence.
    lease = silence - fence - max_clock_skew
    for _ in range(_MAX_NUDGES):
        if lease + fence + max_clock_skew <= silence:
            break
        lease = math.nextafter(lease, -math.inf)
    quorum = relay_count // 2 + 1 if write_quorum is None else write_quorum
    delay = claim_timeout + claim_settle + query_timeout
    return {
        "heartbeat_interval": heartbeat_interval,
        "lease": lease,
        "fence_grace": fence,
        "max_clock_skew": max_clock_skew,
        "silence": silence,
        "promotion_delay": (
            delay
            if promotion_delay is None
            else _target_number("promotion_delay", promotion_delay, zero_ok=True)
        ),
        "suspect_after": (heartbeat_interval + lease) / 2,
        "claim_timeout": claim_timeout,
        "claim_settle": claim_settle,
        "query_timeout": query_timeout,
        "retry_interval": claim_timeout,
        "spawn_timeout": spawn,
        "spawn_retry_backoff": spawn / _RETRIES_PER_SPAWN,
        "max_spawn_attempts": 3,
        "relay_count": relay_count,
        "write_quorum": quorum,
        "read_quorum": relay_count - quorum + 1,
    }


#: Why each derived knob has the value it has, added to a broken rule's numbers.
_DERIVED = {
    "lease": "lease = silence - fence_grace - max_clock_skew",
    "suspect_after": "suspect_after = (heartbeat_interval + lease) / 2",
}


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
        out = _duration_violations(self)
        out.extend(_rule_violations(self, durations_ok=not out))
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
        values = _derive_for_target(
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
        broken = _duration_violations(candidate) + _rule_violations(candidate, durations_ok=True)
        if broken:
            raise UnsafeTiming(*_explain(broken[0]), *map(_explain, broken[1:]))
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


def _explain(violation: tuple[str, str]) -> tuple[str, str]:
    """``violation`` with how :meth:`Timing.for_target` derived the knobs it names."""
    rule, detail = violation
    notes = [how for knob, how in _DERIVED.items() if knob in rule]
    if not notes:
        return violation
    return rule, f"{detail} (derived: {'; '.join(notes)})"
