"""The explorer of the shipped machines: what it finds, what it prints, what it replays."""

from __future__ import annotations

import shlex
from pathlib import Path

import attrs
import pytest

from standby import Timing
from standby.__main__ import main
from standby.core._timing_rules import RULES
from standby.testing.explore import (
    BROKEN_RULES,
    Budget,
    Counterexample,
    Step,
    explore,
)
from standby.testing.explore._rules import (
    TABLE_DEPTH,
    TABLE_STATES,
    RuleRow,
    generated_table,
    table_cells,
)
from standby.testing.simulation._faults import Crash, FailSpawn, Partition, Pause

DOCS = Path(__file__).resolve().parent.parent / "docs"
NO_FAULTS = Budget(losses=0, duplicates=0, crashes=0, partitions=0, pauses=0)


def broken(rule: str, half: int = 0):  # type: ignore[no-untyped-def]
    return [b for b in BROKEN_RULES if b.rule == rule][half]


def command(capsys: pytest.CaptureFixture[str], line: str) -> tuple[int, str, str]:
    argv = shlex.split(line)
    try:
        status = main(argv[3:])
    except SystemExit as exc:
        status = int(exc.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


# ------------------------------------------------------------------ what it finds


def test_the_default_timing_shows_no_violation_within_the_bound() -> None:
    result = explore(Timing(), max_states=2_000, depth=60)
    assert result.ok
    assert result.states == 2_000


def test_the_default_timing_fails_over_safely_after_a_crash() -> None:
    budget = Budget(losses=0, duplicates=0, crashes=1, partitions=0, pauses=0)
    result = explore(Timing(), max_states=6_000, depth=200, budget=budget, skew=False)
    assert result.ok
    assert result.promoted > 0  # the bound reaches failovers, and every one was safe


def test_a_for_target_timing_shows_no_violation_within_the_bound() -> None:
    timing = Timing.for_target(
        silence=30, heartbeat_interval=10, relay_latency=0.25, max_clock_skew=2
    )
    result = explore(timing, max_states=3_000, depth=60)
    assert result.ok


def test_without_faults_the_search_ends_because_times_are_relative() -> None:
    # Heartbeats go on for ever; only a canonical form relative to now makes
    # the steady state one state, so the search runs out of new states.
    result = explore(Timing(), max_states=50_000, depth=10_000, budget=NO_FAULTS, skew=False)
    assert result.exhausted
    assert result.ok
    assert result.states < 5_000


def test_a_broken_claim_settle_gives_two_promotions_into_one_epoch() -> None:
    b = broken("claim_settle > claim_timeout")
    result = explore(b.timing(), max_states=20_000, depth=40, budget=b.budget, skew=False)
    example = result.counterexample
    assert example is not None
    assert "fencing token" in example.violation or "epoch 1" in example.violation
    text = example.format()
    assert text.splitlines()[0] == "counterexample: " + example.violation
    assert "standby-1: claim answers" in text
    assert "primary crashes" in text


def test_the_counterexample_is_a_shortest_path() -> None:
    timing = Timing.unsafe_unchecked(silence=110.0)
    budget = attrs.evolve(NO_FAULTS, partitions=1)
    found = explore(timing, max_states=20_000, depth=40, budget=budget, skew=False)
    assert found.counterexample is not None
    shortest = len(found.counterexample)
    shorter = explore(timing, max_states=20_000, depth=shortest - 1, budget=budget, skew=False)
    assert shorter.ok
    assert shorter.exhausted


# ------------------------------------------------------------------ replay on the real node


def test_a_counterexample_replays_as_a_simulation_of_the_real_node() -> None:
    timing = Timing.unsafe_unchecked(silence=110.0)
    result = explore(timing, max_states=20_000, depth=40, budget=Budget(0, 0, 0, 1, 0), skew=False)
    example = result.counterexample
    assert example is not None
    assert example.violation == "two workloads can act at once: primary and standby-0"
    faults = example.faults(start=600.0)
    assert faults == [Partition(at=600.0, who="primary", relays=("relay-0", "relay-1", "relay-2"))]
    report = example.simulation(start=600.0).run(until=600.0 + example.end + 600.0)
    assert [v.kind for v in report.violations][:1] == ["two-live"]
    # The same schedule under a safe timing: the real node keeps one writer.
    safe = type(example)(example.violation, None, example.steps, Timing(), 2)
    assert safe.simulation(start=600.0).run(until=600.0 + example.end + 600.0).ok


def test_faults_after_a_pause_keep_the_start_offset() -> None:
    steps = (
        Step(10.0, "standby-0 pauses", ("pause", "standby-0")),
        Step(40.0, "standby-0 resumes", ("resume", "standby-0")),
        Step(70.0, "primary crashes", ("crash", "primary")),
    )
    example = Counterexample("made up", None, steps, Timing())
    assert example.faults(start=600.0) == [
        Pause(at=610.0, who="standby-0", duration=30.0),
        Crash(at=670.0, who="primary"),
    ]


def test_a_broken_claim_timeout_replays_as_a_failover_that_never_completes() -> None:
    b = broken("claim_timeout > 2 * query_timeout")
    result = explore(b.timing(), max_states=500, depth=10, budget=b.budget, mode="liveness")
    example = result.counterexample
    assert example is not None
    assert example.late_answers
    assert "with every answer at its deadline, 0 primaries run" in example.violation
    assert example.faults(start=600.0) == [Crash(at=600.0, who="primary")]
    report = example.simulation(start=600.0).run(until=2_600.0)
    assert report.promotions == ()
    assert "liveness" in [v.kind for v in report.violations]
    # The same slow relays under a safe claim window: the real node fails over.
    safe = attrs.evolve(example, timing=Timing())
    report = safe.simulation(start=600.0).run(until=2_600.0)
    assert report.ok
    assert [p.provider for p in report.promotions] == ["standby-0"]


def test_fm24_a_standby_whose_spawns_all_fail_gives_up_in_the_explorer_and_the_node() -> None:
    timing = Timing(max_spawn_attempts=1, max_spawn_rounds=1)
    budget = attrs.evolve(NO_FAULTS, crashes=1, spawn_failures=1)
    result = explore(
        timing, standbys=1, max_states=2_000, depth=20, budget=budget, skew=False, mode="liveness"
    )
    example = result.counterexample
    assert example is not None
    assert "0 primaries run" in example.violation
    assert example.steps[-1].what == "standby-0: spawn fails"
    faults = example.faults(start=600.0)
    assert FailSpawn(at=0.0, who="standby-0", count=1) in faults
    report = example.simulation(start=600.0).run(until=2_600.0)
    assert report.promotions == ()
    assert "gave the workload up: 1 spawns failed" in report.format(timeline=True)


@pytest.mark.parametrize(
    ("field", "others"),
    [("max_spawn_attempts", {}), ("max_spawn_rounds", {"max_spawn_attempts": 1})],
)
def test_no_spawn_budget_explores_exactly_as_a_budget_of_one(
    field: str, others: dict[str, int]
) -> None:
    # The election counts a failed spawn before it compares: 0 cannot differ
    # from 1, which is why the rule table shows no counterexample for these.
    def run(n: int, failures: int) -> tuple[int, int, int]:
        budget = attrs.evolve(NO_FAULTS, crashes=1, spawn_failures=failures)
        timing = Timing.unsafe_unchecked(**{field: n}, **others)
        r = explore(timing, standbys=1, max_states=50_000, depth=16, budget=budget, skew=False)
        assert r.exhausted
        return r.states, r.transitions, r.promoted

    assert run(0, 1) == run(1, 1)
    assert run(1, 1) != run(1, 0)  # the bound reaches a failed spawn and what follows


# ------------------------------------------------------------------ liveness


def test_liveness_holds_for_the_default_timing_after_a_crash() -> None:
    budget = Budget(losses=0, duplicates=0, crashes=1, partitions=0, pauses=0)
    result = explore(Timing(), max_states=300, depth=20, budget=budget, skew=False, mode="liveness")
    assert result.ok


def test_liveness_fails_when_no_read_can_reach_its_quorum() -> None:
    b = broken("1 <= read_quorum <= relay_count")
    result = explore(b.timing(), max_states=2_000, depth=20, budget=b.budget, mode="liveness")
    example = result.counterexample
    assert example is not None
    assert "0 primaries run" in example.violation
    assert any(step.move == ("crash", "primary") for step in example.steps)


# ------------------------------------------------------------------ every rule


def test_each_rule_of_the_table_has_one_timing_that_breaks_it_alone() -> None:
    assert [(b.rule, b.why) for b in BROKEN_RULES] == [(r.name, r.why) for r in RULES]
    for b in BROKEN_RULES:
        timing = b.timing()
        if timing is None:
            assert "cannot be broken alone" in b.note
            continue
        assert [rule for rule, _ in timing.violations()] == [b.rule]


def test_the_safety_page_holds_the_current_rule_table() -> None:
    page = (DOCS / "safety.md").read_text(encoding="utf-8")
    rows = table_cells(generated_table(page))
    assert [r[0] for r in rows] == [b.rule for b in BROKEN_RULES]
    # Rerun every rule whose counterexample takes seconds to find (about 15 in
    # all). The others (the two that use the whole budget of 30,000 states, and
    # read_quorum=1 at about 390,000) are checked by regenerating the table:
    # `python -m standby explore --rule-table docs/safety.md` (about three
    # minutes), after which `git diff docs/safety.md` must show only the times.
    for b, cells in zip(BROKEN_RULES, rows, strict=True):
        if b.fields is None or cells[3] == "-" or int(cells[3]) > 25_000:
            continue
        result = explore(
            b.timing(),
            max_states=TABLE_STATES,
            depth=TABLE_DEPTH,
            budget=b.budget,
            skew=b.skew,
            mode=b.mode,
        )
        assert RuleRow(b, result).cells() == cells


# ------------------------------------------------------------------ the command


def test_the_command_prints_the_figures_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = command(capsys, "python -m standby explore --max-states 500 --no-skew")
    assert status == 0
    assert out.startswith("explore (safety): 500 unique states, depth ")
    assert "states/s" in out
    assert out.rstrip().endswith("no violation")


def test_the_command_fails_spawns_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = command(
        capsys,
        "python -m standby explore --standbys 1 --no-skew --losses 0 --duplicates 0 "
        "--partitions 0 --pauses 0 --spawn-failures 1 --mode liveness "
        "--set max_spawn_attempts=1 --set max_spawn_rounds=1 --max-states 2000 --schedule",
    )
    assert status == 1
    assert "standby-0: spawn fails" in out
    assert "FailSpawn(at=0.0, who='standby-0', count=1)" in out


def test_the_command_exits_1_with_a_schedule(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = command(
        capsys,
        "python -m standby explore --set silence=110 --no-skew --losses 0 --duplicates 0 "
        "--crashes 0 --pauses 0 --schedule --max-states 20000",
    )
    assert status == 1
    assert "timing breaks `silence >= lease + fence_grace + max_clock_skew`" in out
    assert "counterexample: two workloads can act at once" in out
    assert "Partition(at=0.0, who='primary'" in out


@pytest.mark.parametrize(
    "arguments",
    [
        "--depth -1",
        "--max-states 0",
        "--set nonsense=3",
        "--set silence=abc",
        "--target 30,10,0.25",
        "--target 1,10,0.25,2",
        "--break-rule 99",
        "--break-rule 1",
        "--mode sometimes",
        "--max-seconds 0",
        "--rule-table /no/such/page.md",
        "--spawn-failures -1",
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], arguments: str
) -> None:
    status, out, err = command(capsys, f"python -m standby explore {arguments}")
    assert status == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("python -m standby explore: error: ")


def test_the_explore_module_exports_are_pinned() -> None:
    import standby.testing.explore as module

    assert sorted(module.__all__) == [
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
    assert all(hasattr(module, name) for name in module.__all__)
