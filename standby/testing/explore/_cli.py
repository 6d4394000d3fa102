"""``python -m standby explore``: search every interleaving of the shipped machines.

Prints the unique states explored, the depth reached and the states per
second, then either "no violation" or the shortest counterexample as a
schedule (with ``--schedule``, also as a ``Simulation`` fault list).
``--rule-table PAGE`` explores one broken timing per rule of ``Timing``
and writes the table between the page's markers.

Exit status: 0 when no violation was found, 1 with a counterexample, 2 for
bad arguments (one line on stderr).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import attrs

from ...cli._argtypes import integer_at_least, seconds
from ...core._errors import UnsafeTiming
from ...core._timing import Timing
from ..simulation._configurations import PRESETS, preset
from ._rules import (
    BROKEN_RULES,
    TABLE_DEPTH,
    TABLE_STATES,
    RuleRow,
    render_rule_table,
    rule_table,
    update_page,
)
from ._search import explore
from ._world import Budget

__all__ = ["add_arguments", "run"]

#: The default bounds of one exploration.
MAX_STATES = 100_000
DEPTH = 60

_TARGETS = ("silence", "heartbeat_interval", "relay_latency", "max_clock_skew")
_FIELDS = {a.name for a in attrs.fields(Timing)}
#: The fault kinds a path may use, each with its ``--NAME N`` option.
_FAULTS = tuple(a.name for a in attrs.fields(Budget))


def _target(text: str) -> dict[str, float]:
    parts = text.split(",")
    if len(parts) != len(_TARGETS):
        raise argparse.ArgumentTypeError(
            f"expected {','.join(t.upper() for t in _TARGETS)} (four numbers), got {text!r}"
        )
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected four numbers, got {text!r}") from None
    return dict(zip(_TARGETS, values, strict=True))


def _positive_seconds(text: str) -> float:
    return seconds(text, positive=True)


def _setting(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep or name not in _FIELDS:
        raise argparse.ArgumentTypeError(
            f"expected FIELD=VALUE with a Timing field ({', '.join(sorted(_FIELDS))}), got {text!r}"
        )
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number for {name}, got {value!r}") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"expected a finite number for {name}, got {value!r}")
    return name, int(number) if number.is_integer() and "." not in value else number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``explore`` options to ``parser``."""
    parser.description = (
        "Search the interleavings of the shipped election and lifecycle machines breadth-first "
        "over a small relay model with bounded faults, and print the unique states, the depth "
        "reached, the rate and the shortest counterexample if there is one. Exit status 1 "
        "means a counterexample was found."
    )
    parser.add_argument(
        "--max-states",
        type=integer_at_least(1),
        default=None,
        metavar="N",
        help=f"stop after N unique states (default {MAX_STATES}; {TABLE_STATES} per rule "
        "for --rule-table)",
    )
    parser.add_argument(
        "--depth",
        type=integer_at_least(0),
        default=None,
        metavar="D",
        help=f"explore paths of at most D moves (default {DEPTH}; {TABLE_DEPTH} for --rule-table)",
    )
    parser.add_argument(
        "--max-seconds",
        type=_positive_seconds,
        default=None,
        metavar="S",
        help="stop after S seconds and report what was explored",
    )
    parser.add_argument("--mode", choices=("safety", "liveness"), default="safety")
    parser.add_argument("--standbys", type=integer_at_least(1), default=2, metavar="K")
    parser.add_argument("--relays", type=integer_at_least(1), default=3, metavar="N")
    parser.add_argument("--timing", choices=PRESETS, default="default", help="timing preset")
    parser.add_argument(
        "--target",
        type=_target,
        metavar="SILENCE,HEARTBEAT,LATENCY,SKEW",
        help="use Timing.for_target with these targets (and --relays relays)",
    )
    parser.add_argument(
        "--set",
        type=_setting,
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="change one Timing field, unchecked (to see what a broken rule allows)",
    )
    parser.add_argument(
        "--break-rule",
        type=integer_at_least(1),
        metavar="N",
        help=f"explore the N-th broken timing of the rule table (1 to {len(BROKEN_RULES)}), "
        "with its mode and faults",
    )
    budget = Budget()
    for name in _FAULTS:
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=integer_at_least(0),
            default=None,
            metavar="N",
            help=f"faults of this kind on one path (default {getattr(budget, name)})",
        )
    parser.add_argument(
        "--no-skew", action="store_true", help="keep every clock together (no skewed start)"
    )
    parser.add_argument(
        "--schedule",
        action="store_true",
        help="also print the counterexample as a Simulation fault schedule",
    )
    parser.add_argument(
        "--rule-table",
        type=Path,
        metavar="PAGE",
        help="explore every broken rule and write the table into PAGE between its markers",
    )


def _timing(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Timing:
    if args.target is not None:
        try:
            base = Timing.for_target(**args.target, relay_count=args.relays)
        except (UnsafeTiming, ValueError, TypeError) as exc:
            parser.error(f"--target: {str(exc).splitlines()[0]}")
    else:
        base = preset(args.timing, args.relays)
    if not args.set:
        return base
    values: dict[str, Any] = {a.name: getattr(base, a.name) for a in attrs.fields(Timing)}
    values.update(dict(args.set))
    if "read_quorum" not in dict(args.set) and {"relay_count", "write_quorum"} & set(
        dict(args.set)
    ):
        values["read_quorum"] = values["relay_count"] - values["write_quorum"] + 1
    return Timing.unsafe_unchecked(**values)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> int:
    """Run ``explore`` as parsed from the command line; returns the exit status."""
    parser = parser if parser is not None else argparse.ArgumentParser(prog="explore")
    if args.rule_table is not None:
        return _rule_table(args, parser)
    budget = Budget()
    skew = not args.no_skew
    mode = args.mode
    if args.break_rule is not None:
        if args.break_rule > len(BROKEN_RULES):
            parser.error(f"--break-rule: expected 1 to {len(BROKEN_RULES)}, got {args.break_rule}")
        broken = BROKEN_RULES[args.break_rule - 1]
        timing = broken.timing()
        if timing is None:
            parser.error(f"--break-rule {args.break_rule}: {broken.note}")
        budget, skew, mode = broken.budget, broken.skew and skew, broken.mode
        print(f"breaks `{broken.rule}`: {broken.note}")
    else:
        timing = _timing(args, parser)
    changes = {n: getattr(args, n) for n in _FAULTS if getattr(args, n) is not None}
    budget = attrs.evolve(budget, **changes)
    for rule, detail in timing.violations():
        print(f"timing breaks `{rule}`: {detail}")

    def progress(states: int, depth: int) -> None:
        print(f"  depth {depth}: {states} states", file=sys.stderr, flush=True)

    result = explore(
        timing,
        standbys=args.standbys,
        max_states=MAX_STATES if args.max_states is None else args.max_states,
        depth=DEPTH if args.depth is None else args.depth,
        budget=budget,
        skew=skew,
        mode=mode,
        progress=progress,
        max_seconds=args.max_seconds,
    )
    print(result.format())
    example = result.counterexample
    if example is not None and args.schedule:
        print("as a Simulation schedule (standby.testing.Simulation(faults=...)):")
        for fault in example.faults():
            print(f"  {fault!r}")
    return 0 if example is None else 1


def _rule_table(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    page: Path = args.rule_table
    if not page.is_file():
        parser.error(f"--rule-table: no such page {str(page)!r}")

    def progress(row: RuleRow) -> None:
        r = row.result
        took = "" if r is None else f" in {r.seconds:.1f} s"
        print(f"  {' | '.join(row.cells())}{took}", file=sys.stderr, flush=True)

    rows = rule_table(
        max_states=TABLE_STATES if args.max_states is None else args.max_states,
        depth=TABLE_DEPTH if args.depth is None else args.depth,
        progress=progress,
    )
    try:
        update_page(page, rows)
    except ValueError:
        parser.error(f"--rule-table: {str(page)!r} has no explore-rules markers")
    print(render_rule_table(rows))
    return 0
