"""The safety rules a :class:`~standby.Timing` must satisfy (see ``docs/safety.md``).

:data:`RULES` lists every rule but "durations are positive numbers" as a
test, the numbers to show when it breaks, why it exists, and the duration
that :meth:`Timing.scaled` raises when float rounding broke it. The error
:class:`~standby.UnsafeTiming` and the docs' list of rules are both drawn
from this table.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs
from typing_extensions import TypeIs

if TYPE_CHECKING:
    from ._timing import Timing

__all__ = [
    "DURATIONS",
    "RULES",
    "Rule",
    "bound",
    "default_read_quorum",
    "duration_violations",
    "is_number",
    "out_of_range",
    "rule_descriptions",
    "rule_violations",
]

#: Fields measured in seconds: these are the ones ``Timing.scaled`` multiplies.
DURATIONS = (
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


def default_read_quorum(relay_count: int, write_quorum: int) -> int:
    """The smallest read quorum that meets every write quorum."""
    return relay_count - write_quorum + 1


def is_number(value: object) -> TypeIs[int | float]:
    """Whether ``value`` is an ``int`` or a ``float`` (a ``bool`` is not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def bound(zero_ok: bool) -> str:
    """The range a duration must be in, as the rules and errors write it."""
    return ">= 0" if zero_ok else "> 0"


def out_of_range(value: float, zero_ok: bool) -> bool:
    """Whether ``value`` is outside :func:`bound`."""
    return value < 0 if zero_ok else value <= 0


@attrs.frozen
class Rule:
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


def _at_least_one(count: str, why: str) -> Rule:
    """The rule ``<count> >= 1`` on one of the count fields."""
    return Rule(
        f"{count} >= 1",
        lambda t: bool(getattr(t, count) >= 1),
        lambda t: f"{count}={getattr(t, count)}",
        on_durations=False,
        why=why,
    )


def _quorum_fits(quorum: str, why: str) -> Rule:
    """The rule ``1 <= <quorum> <= relay_count`` on one of the quorums."""
    return Rule(
        f"1 <= {quorum} <= relay_count",
        lambda t: bool(1 <= getattr(t, quorum) <= t.relay_count),
        lambda t: f"{quorum}={getattr(t, quorum)}, relay_count={t.relay_count}",
        on_durations=False,
        why=why,
    )


def _suspect_detail(t: Timing) -> str:
    return (
        f"heartbeat_interval={t.heartbeat_interval}, suspect_after={t.suspect_after}, "
        f"lease={t.lease}"
    )


#: Every rule but "durations are positive numbers", in the order
#: ``Timing.scaled`` repairs them: a rule whose repair raises a duration comes
#: before the rules where that duration is on the right-hand side (``lease``
#: before ``silence``).
RULES: tuple[Rule, ...] = (
    _at_least_one("relay_count", "There is at least one relay to publish to and read from."),
    _quorum_fits(
        "write_quorum",
        "A heartbeat or claim counts only once some relay stored it, and a quorum larger than "
        "the relays could never be reached.",
    ),
    _quorum_fits(
        "read_quorum",
        "A query is judged on at least one answer and never waits for more relays than exist.",
    ),
    Rule(
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
    _at_least_one(
        "max_spawn_attempts", "A standby that won its claim tries to spawn at least once."
    ),
    _at_least_one(
        "max_spawn_rounds", "A standby gives a slot up only after at least one round of spawns."
    ),
    Rule(
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
    Rule(
        "claim_settle > claim_timeout",
        lambda t: t.claim_settle > t.claim_timeout,
        lambda t: f"claim_settle={t.claim_settle} <= claim_timeout={t.claim_timeout}",
        repair="claim_settle",
        why=(
            "Two rival claims always see each other: each reached its quorum before the other's "
            "settle re-read began (guarantee 2)."
        ),
    ),
    Rule(
        _SUSPECT,
        lambda t: t.heartbeat_interval < t.suspect_after,
        _suspect_detail,
        repair="suspect_after",
        why="A primary is not suspect between two punctual heartbeats.",
    ),
    Rule(
        _SUSPECT,
        lambda t: t.suspect_after <= t.lease,
        _suspect_detail,
        repair="lease",
        why="A primary turns suspect no later than its lease ends.",
    ),
    Rule(
        "lease > heartbeat_interval",
        lambda t: t.lease > t.heartbeat_interval,
        lambda t: f"lease={t.lease} <= heartbeat_interval={t.heartbeat_interval}",
        repair="lease",
        why="One heartbeat period never ends a lease, so a live primary with a quorum keeps it.",
    ),
    Rule(
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
    Rule(
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
    "max_spawn_rounds >= 1",
)

#: How the rule on durations reads in the docs' rule list.
_POSITIVE = "every duration finite and > 0 (promotion_delay, fence_grace, max_clock_skew may be 0)"


def duration_violations(t: Timing) -> list[tuple[str, str]]:
    """A line for each duration that is not a finite number or is out of range."""
    out: list[tuple[str, str]] = []
    for name in DURATIONS:
        value = getattr(t, name)
        if not is_number(value) or not math.isfinite(value):
            # inf would pass every rule (inf >= inf + 30) and break scaled().
            out.append((f"{name} is a finite number", f"{name}={value!r}"))
            continue
        zero_ok = name in _ZERO_OK
        if out_of_range(value, zero_ok):
            out.append((f"{name} {bound(zero_ok)}", f"{name}={value}"))
    return out


def rule_violations(t: Timing, *, durations_ok: bool) -> list[tuple[str, str]]:
    """Each broken rule of :data:`RULES` once, in :data:`_REPORT_ORDER`.

    With ``durations_ok`` false the rules that compare durations are skipped.
    """
    broken: dict[str, str] = {}
    for rule in RULES:
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
    for rule in RULES:
        why.setdefault(rule.name, []).append(rule.why)
    rows = [(_POSITIVE, "A duration that is not a positive number makes every comparison moot.")]
    rows.extend((name, " ".join(why[name])) for name in _REPORT_ORDER)
    return tuple(rows)
