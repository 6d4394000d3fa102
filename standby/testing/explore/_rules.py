"""Every rule of :class:`~standby.Timing` shown necessary, one exploration each.

:data:`BROKEN_RULES` holds, for each entry of the rule table
(:data:`standby.core._timing_rules.RULES`), a timing that breaks that rule
and no other (built with :meth:`Timing.unsafe_unchecked`; every other knob
at its default, or moved only as far as keeping the other rules needs), the
mode whose property it breaks and the faults its exploration may use.
:func:`rule_table` explores each and :func:`render_rule_table` writes the
table the safety page shows; :func:`update_page` puts it between the
page's markers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from ...core._timing import Timing
from ...core._timing_rules import RULES
from ._search import ExploreResult, Mode, explore
from ._world import Budget

__all__ = [
    "BROKEN_RULES",
    "TABLE_DEPTH",
    "TABLE_STATES",
    "BrokenRule",
    "RuleRow",
    "render_rule_table",
    "rule_table",
    "update_page",
]

START = "<!-- generated: explore-rules (python -m standby explore --rule-table docs/safety.md) -->"
END = "<!-- end: explore-rules -->"

#: The bounds of each rule's exploration in the docs' table.
TABLE_STATES = 30_000
TABLE_DEPTH = 80

_NOTHING = Budget(losses=0, duplicates=0, crashes=0, partitions=0, pauses=0)


@attrs.frozen
class BrokenRule:
    """A timing that breaks one rule of the table, and how to explore it."""

    rule: str
    """The rule's name (two entries of the table share ``heartbeat_interval < ...``)."""
    why: str
    """The rule's reason, which tells the two halves of a shared name apart."""
    fields: dict[str, Any] | None
    """What differs from the defaults (``None``: no timing breaks this rule alone)."""
    mode: Mode = "safety"
    budget: Budget = _NOTHING
    skew: bool = False
    note: str = ""
    max_states: int | None = None
    """A larger state budget than the table's, for a counterexample that lies deep."""

    def timing(self) -> Timing | None:
        """The broken timing (``None`` when the rule cannot be broken alone)."""
        return None if self.fields is None else Timing.unsafe_unchecked(**self.fields)


def _rule(index: int, fields: dict[str, Any] | None, **kwargs: Any) -> BrokenRule:
    rule = RULES[index]
    return BrokenRule(rule.name, rule.why, fields, **kwargs)


def _by_name(name: str, half: int = 0) -> int:
    return [i for i, r in enumerate(RULES) if r.name == name][half]


_SUSPECT = "heartbeat_interval < suspect_after <= lease"
_REPORT_ONLY = (
    "no safety or liveness property depends on it: SUSPECT and LIVE take the same decisions "
    "(the node and the metrics count both as running); the rule keeps the state the host "
    "and the operator see meaningful"
)
#: A crash to fail over from, and spawns that fail on the way.
_SPAWNS_FAIL = attrs.evolve(_NOTHING, crashes=1, spawn_failures=2)

#: One broken timing per entry of the rule table, in the table's order.
BROKEN_RULES: tuple[BrokenRule, ...] = (
    _rule(
        _by_name("relay_count >= 1"),
        None,
        note="cannot be broken alone: with no relay, 1 <= write_quorum <= relay_count breaks too",
    ),
    _rule(
        _by_name("1 <= write_quorum <= relay_count"),
        {"write_quorum": 4, "read_quorum": 1},
        mode="liveness",
        note="no heartbeat ever reaches its quorum: the primary never starts",
    ),
    _rule(
        _by_name("1 <= read_quorum <= relay_count"),
        {"read_quorum": 4},
        mode="liveness",
        budget=attrs.evolve(_NOTHING, crashes=1),
        note="no read ever reaches its quorum: nobody takes over from a crashed primary",
    ),
    _rule(
        _by_name("write_quorum + read_quorum > relay_count"),
        {"read_quorum": 1},
        budget=attrs.evolve(_NOTHING, partitions=2),
        max_states=400_000,
        note="a standby that reads only a relay the primary cannot reach finds it silent",
    ),
    _rule(
        _by_name("max_spawn_attempts >= 1"),
        {"max_spawn_attempts": 0},
        budget=_SPAWNS_FAIL,
        note="no run differs from max_spawn_attempts=1: the election counts a failed spawn "
        "before comparing, and never gates the first; the rule keeps the count of failed "
        "spawns that CannotStart reports to the host true (0 attempts would report 0)",
    ),
    _rule(
        _by_name("max_spawn_rounds >= 1"),
        {"max_spawn_rounds": 0, "max_spawn_attempts": 1},
        budget=_SPAWNS_FAIL,
        note="no run differs from max_spawn_rounds=1 (one attempt a round, so that a failed "
        "spawn ends a round): a round ends before the rounds are compared; the rule keeps "
        "the count of failed spawns that CannotStart reports to the host true (0 rounds "
        "would report 0)",
    ),
    _rule(
        _by_name("claim_timeout > 2 * query_timeout"),
        {"claim_timeout": 7.0},
        mode="liveness",
        budget=attrs.evolve(_NOTHING, crashes=1),
        note="with every relay answering just inside query_timeout, a pre-read and a publish "
        "outlast the claim window: every claim fails and nobody takes over",
    ),
    _rule(
        _by_name("claim_settle > claim_timeout"),
        {"claim_settle": 1.0, "promotion_delay": 0.0},
        budget=attrs.evolve(_NOTHING, crashes=1),
        note="promotion_delay 0 (which the rules allow) lets both standbys claim at once",
    ),
    _rule(
        _by_name(_SUSPECT, 0),
        {"suspect_after": 60.0},
        note=_REPORT_ONLY + "; broken, a primary with punctual heartbeats shows SUSPECT "
        "between two of them",
    ),
    _rule(
        _by_name(_SUSPECT, 1),
        {"suspect_after": 130.0},
        note=_REPORT_ONLY + "; broken, a primary that lost its lease shows LIVE until it fences",
    ),
    _rule(
        _by_name("lease > heartbeat_interval"),
        None,
        note="cannot be broken alone: heartbeat_interval < suspect_after <= lease implies it",
    ),
    _rule(
        _by_name("lease > claim_timeout + claim_settle + 2 * query_timeout + spawn_timeout"),
        {"spawn_timeout": 100.0},
        budget=attrs.evolve(_NOTHING, crashes=1),
        note="a spawn slower than the claim's lease allows: two standbys' containers overlap",
    ),
    _rule(
        _by_name("silence >= lease + fence_grace + max_clock_skew"),
        {"silence": 150.0},
        budget=attrs.evolve(_NOTHING, partitions=1),
        skew=True,
        note="a primary cut off from the relays still holds its lease when a standby "
        "finds it silent",
    ),
)


@attrs.frozen
class RuleRow:
    """One rule's exploration."""

    broken: BrokenRule
    result: ExploreResult | None
    """``None``: the rule cannot be broken alone, so nothing was explored."""

    def cells(self) -> tuple[str, ...]:
        """The row of the docs' table (the time apart: it is the only cell that varies)."""
        b, r = self.broken, self.result
        if r is None:
            return (b.rule, "-", "-", "-")
        example = r.counterexample
        found = "none within the bound" if example is None else f"{len(example)} moves"
        return (b.rule, b.mode, found, str(r.states))


def rule_table(
    max_states: int = TABLE_STATES,
    depth: int = TABLE_DEPTH,
    progress: Callable[[RuleRow], None] | None = None,
) -> list[RuleRow]:
    """Explore every broken timing of :data:`BROKEN_RULES`."""
    rows = []
    for broken in BROKEN_RULES:
        timing = broken.timing()
        result = None
        if timing is not None:
            result = explore(
                timing,
                max_states=max_states if broken.max_states is None else broken.max_states,
                depth=depth,
                budget=broken.budget,
                skew=broken.skew,
                mode=broken.mode,
            )
        row = RuleRow(broken, result)
        if progress is not None:
            progress(row)
        rows.append(row)
    return rows


def render_rule_table(rows: list[RuleRow]) -> str:
    """The Markdown table of ``rows`` with the time each took."""
    lines = [
        "| rule broken | timing | mode | counterexample | states explored | time | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        rule, mode, found, states = row.cells()
        fields = row.broken.fields
        timing = "-" if fields is None else ", ".join(f"{k}={v}" for k, v in fields.items())
        seconds = "-" if row.result is None else f"{row.result.seconds:.1f} s"
        cells = (f"`{rule}`", timing, mode, found, states, seconds, row.broken.note)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def table_cells(markdown: str) -> list[tuple[str, ...]]:
    """The rows of a rendered table without the time column (what a test compares)."""
    rows: list[tuple[str, ...]] = []
    for line in markdown.splitlines()[2:]:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        rule = cells[0].strip("`").replace("\\|", "|")
        rows.append((rule, cells[2], cells[3], cells[4]))
    return rows


def generated_table(page: str) -> str:
    """The table between the markers of ``page``'s text."""
    start = page.index(START) + len(START)
    return page[start : page.index(END, start)].strip()


def update_page(path: Path, rows: list[RuleRow]) -> None:
    """Write the table of ``rows`` between the markers of the page at ``path``."""
    page = path.read_text(encoding="utf-8")
    start = page.index(START) + len(START)
    end = page.index(END, start)
    path.write_text(
        page[:start] + "\n\n" + render_rule_table(rows) + "\n\n" + page[end:], encoding="utf-8"
    )
