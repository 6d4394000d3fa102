"""Exhaustive exploration of the shipped machines (``python -m standby explore``).

:func:`explore` searches breadth-first over the interleavings of each
standby's :class:`~standby.StandbyElection` and the primary's
:class:`~standby.core.WorkloadLifecycle`, stepped directly (no event loop),
over a small relay model with a bounded number of faults (:class:`Budget`),
and returns an :class:`ExploreResult`: the unique states explored, the depth
reached, the rate, and the shortest :class:`Counterexample` if a safety
property (or, with ``mode="liveness"``, the liveness property) fails. A
counterexample prints as a schedule and runs on the real node through
:meth:`Counterexample.simulation`.

:data:`BROKEN_RULES` holds one timing per rule of ``Timing`` that breaks
that rule alone; :func:`rule_table` explores each (the table in
``docs/safety.md``).
"""

from ._rules import BROKEN_RULES, BrokenRule, RuleRow, render_rule_table, rule_table
from ._search import Counterexample, ExploreResult, Mode, Step, explore, liveness_bound
from ._world import Budget

__all__ = [
    "BROKEN_RULES",
    "BrokenRule",
    "Budget",
    "Counterexample",
    "ExploreResult",
    "Mode",
    "RuleRow",
    "Step",
    "explore",
    "liveness_bound",
    "render_rule_table",
    "rule_table",
]
