"""``python -m standby campaign``, rerunning one campaign run, and shrinking failures."""

from __future__ import annotations

import functools
import random
import re
import shlex

import pytest

from standby import Timing
from standby.__main__ import main
from standby.testing import (
    Fault,
    Kill,
    Simulation,
    SimulationReport,
    random_faults,
    run_campaign,
    shrink,
)
from standby.testing.simulation._configurations import (
    CONFIGURATIONS,
    Configuration,
    run_configurations,
    shrink_run,
)
from standby.testing.simulation._shrink import fault_expression, number_text, parse_fault
from standby.testing.simulation._simulation import memory_runtime


def command(capsys: pytest.CaptureFixture[str], line: str) -> tuple[int, str, str]:
    """Run a ``python -m standby ...`` command line; its status, stdout and stderr."""
    argv = shlex.split(line)
    assert argv[:3] == ["python", "-m", "standby"]
    try:
        status = main(argv[3:])
    except SystemExit as exc:
        status = int(exc.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


# ----------------------------------------------------------------------
# The campaign command
# ----------------------------------------------------------------------


def test_a_tiny_campaign_prints_its_seed_first_and_exits_zero(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = command(capsys, "python -m standby campaign --schedules 9 --seed 5")
    lines = out.splitlines()
    assert lines[0] == (
        "campaign seed 5 (rerun with --seed 5): 9 schedules over 9 configurations on 1 workers"
    )
    assert re.match(
        r"campaign: 9 of 9 schedules from seed 5 in [\d.]+ s \([\d.]+ schedules/s", lines[1]
    )
    for config in CONFIGURATIONS:
        assert re.search(rf"^{config.name} +1 ", out, flags=re.M), config.name
    assert lines[-1] == "violations: none"
    assert status == 0


def test_without_a_seed_the_campaign_draws_and_prints_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = command(
        capsys, "python -m standby campaign --schedules 1 --config fast-atomic-three-standbys"
    )
    first = out.splitlines()[0]
    found = re.fullmatch(
        r"campaign seed (\d+) \(rerun with --seed \1\): 1 schedules over 1 .*", first
    )
    assert found, first
    assert status == 0


def test_the_time_limit_stops_the_campaign_and_it_reports_what_ran(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = command(
        capsys, "python -m standby campaign --schedules 500 --seed 1 --max-seconds 0.000001"
    )
    assert "campaign: 0 of 500 schedules from seed 1" in out
    assert "stopped early (time limit)" in out
    assert status == 0


def test_over_several_workers_the_time_limit_keeps_the_chunks_that_ran() -> None:
    summary = run_configurations(400, seed=3, workers=2, max_seconds=0.2, chunk=5)
    assert summary.stopped == "time limit"
    assert 0 < summary.runs < 400
    assert summary.runs % 5 == 0  # whole chunks of five runs each


@pytest.mark.parametrize(
    "line",
    [
        "campaign --schedules 0",
        "campaign --schedules many",
        "campaign --workers 0",
        "campaign --max-seconds -3",
        "campaign --max-seconds nan",
        "campaign --seed -1",
        "campaign --config no-such-configuration",
        "campaign --no-such-flag",
        "simulate --fault 'Crash(at=-1)'",
        "simulate --fault 'os.system(1)'",
        "simulate --fault 'Crash(at=__import__(\"os\"))'",
        "simulate --focus kill-at-step",
        "simulate --focus no-such-focus --random-faults",
        "simulate --random-faults --no-faults",
    ],
)
def test_bad_arguments_exit_two_with_one_line(
    capsys: pytest.CaptureFixture[str], line: str
) -> None:
    status, out, err = command(capsys, f"python -m standby {line}")
    assert status == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert "error" in err


def test_a_failing_configuration_lists_each_checker_with_rerun_commands(
    capsys: pytest.CaptureFixture[str],
) -> None:
    unsafe = Configuration("unsafe", timing="reference-unsafe")
    summary = run_configurations(12, seed=40, configurations=[CONFIGURATIONS[0], unsafe])
    assert not summary.ok
    assert [c.name for c, _ in summary.results] == ["default", "unsafe"]
    assert [s.runs for _, s in summary.results] == [6, 6]
    text = summary.format()
    assert re.search(r"^violations: \d+ in \d+ runs; by checker: two-live \d+ runs$", text, re.M)
    assert "[two-live] failing runs:" in text
    # schedule n runs configuration n mod 2 with seed 40 + n: the unsafe runs are odd
    (config, seed, found) = summary.failures()[0]
    assert config is unsafe
    assert seed % 2 == 1
    line = f"  unsafe seed {seed}: {unsafe.command(seed)}"
    assert line in text.splitlines()
    assert unsafe.command(seed) == (
        f"python -m standby simulate --random-faults --seed {seed} --timing reference-unsafe "
        "--until 1080"
    )
    # the command reruns exactly that run
    status, out, _ = command(capsys, unsafe.command(seed))
    assert status == 1
    for violation in found:
        assert f"[{violation.kind}] t={violation.at:.3f}: {violation.explanation}" in out


# ----------------------------------------------------------------------
# Rerunning one run of a campaign
# ----------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGURATIONS, ids=lambda c: c.name)
def test_the_rerun_command_repeats_the_campaign_run(
    capsys: pytest.CaptureFixture[str], config: Configuration
) -> None:
    seed = 1000 + CONFIGURATIONS.index(config)
    reports: list[SimulationReport] = []
    run_campaign(
        1,
        seed=seed,
        timing=config.timing_value,
        standbys=config.standbys,
        horizon=config.horizon,
        atomic_claims=config.atomic_claims,
        focus=config.focus,
        on_report=lambda _seed, report: reports.append(report),
    )
    (report,) = reports
    status, out, _ = command(capsys, config.command(seed))
    assert out == report.format() + "\n"
    assert status == (0 if report.ok else 1)


def test_a_focus_adds_its_fault_to_every_schedule() -> None:
    timing = Timing()
    for seed in range(30):
        base = random_faults(random.Random(seed), timing=timing, standbys=2, horizon=1080)
        more = random_faults(
            random.Random(seed), timing=timing, standbys=2, horizon=1080, focus="freeze-running"
        )
        extra = list(more)
        for fault in base:
            extra.remove(fault)
        assert [type(f).__name__ for f in extra] == ["Pause"]
        assert extra[0].workload == "running"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="unknown focus 'x'; choose from kill-at-step, "):
        random_faults(random.Random(0), timing=timing, standbys=2, horizon=10, focus="x")


def test_a_fault_reads_back_from_its_expression() -> None:
    for fault in random_faults(
        random.Random(3), timing=Timing(), standbys=2, horizon=1e4, count=40
    ):
        assert parse_fault(fault_expression(fault)) == fault
        assert parse_fault(repr(fault)) == fault
        assert "'" not in fault_expression(fault)


# ----------------------------------------------------------------------
# Shrinking: a broken runtime (no lease enforcement) lets two primaries live
# ----------------------------------------------------------------------

BROKEN = functools.partial(memory_runtime, enforce_leases=False)


def broken_schedule() -> list[Fault]:
    noise = random_faults(random.Random(11), timing=Timing(), standbys=2, horizon=2400, count=6)
    return sorted([*noise, Kill(600, "primary")], key=lambda f: f.at)


def fails(faults: list[Fault], until: float) -> bool:
    sim = Simulation(seed=3, runtime_factory=BROKEN, faults=faults)
    report = sim.run(until=until)
    sim.close()
    return bool(report.violations_of("two-live"))


def test_shrinking_finds_a_shorter_failing_schedule_that_is_minimal() -> None:
    faults = broken_schedule()
    assert fails(faults, 2400)
    shrunk = shrink(faults, 2400, seed=3, runtime_factory=BROKEN)
    assert shrunk.kinds == ("two-live",)
    assert len(shrunk.faults) < len(faults)
    assert shrunk.until < 2400
    assert shrunk.minimal
    assert fails(list(shrunk.faults), shrunk.until)
    for index in range(len(shrunk.faults)):
        assert not fails([*shrunk.faults[:index], *shrunk.faults[index + 1 :]], shrunk.until)
    assert shrunk.faults == (Kill(600, "primary"),)
    # the run ends just after the second container started
    (violation,) = shrunk.report.violations_of("two-live")
    assert violation.at < shrunk.until < violation.at + 1


def test_a_shrunk_failure_reads_in_a_screen() -> None:
    faults = broken_schedule()
    shrunk = shrink(faults, 2400, seed=3, runtime_factory=BROKEN)
    text = shrunk.format(command="python -m standby simulate ...")
    lines = text.splitlines()
    assert lines[0] == (
        f"shrunk: {len(faults)} faults until t=2400 s -> 1 fault until "
        f"t={number_text(shrunk.until)} s "
        f"({shrunk.runs} simulations; leaving out any one fault makes it pass)"
    )
    assert lines[1:3] == [
        "shrunk schedule:",
        "  1. Kill(at=600, who='primary', steps=None, host=False)",
    ]
    assert lines[3] == "still fails (two-live):"
    assert "promoted: epoch 1" in text  # the timeline around the violation
    assert "reproduce: python -m standby simulate ..." in text
    assert len(lines) < 40
    python = shrunk.python()
    assert python.startswith(
        "Simulation(seed=3, runtime_factory=functools.partial(memory_runtime, "
        "enforce_leases=False), faults=["
    )
    namespace = {"Simulation": Simulation, "Kill": Kill, "functools": functools}
    namespace["memory_runtime"] = memory_runtime
    report = eval(python, namespace)
    assert report.violations_of("two-live")


def test_shrinking_a_passing_schedule_says_so() -> None:
    with pytest.raises(ValueError, match="does not fail"):
        shrink([Kill(600, "primary")], 2400, seed=3)


def test_simulate_shrink_prints_a_command_that_still_fails(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = command(
        capsys,
        "python -m standby simulate --kill primary@600 --crash standby-1@100 "
        "--no-lease-enforcement --until 2400 --shrink",
    )
    assert status == 1
    assert "shrunk: 2 faults until t=2400 s -> 1 fault until t=" in out
    (rerun,) = [line for line in out.splitlines() if line.startswith("reproduce: ")]
    rerun = rerun.removeprefix("reproduce: ")
    assert rerun.startswith("python -m standby simulate --seed 0 --until ")
    assert rerun.endswith(
        "--fault 'Kill(at=600.0, who=\"primary\", steps=None, host=False)' --no-lease-enforcement"
    )
    status, out, _ = command(capsys, rerun)
    assert status == 1
    assert "[two-live]" in out


def test_a_random_run_shrinks_to_a_command_with_its_faults_spelled_out(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = command(
        capsys,
        "python -m standby simulate --random-faults --focus freeze-running --seed 45 "
        "--timing reference-unsafe --until 1080 --shrink",
    )
    assert status == 1
    (rerun,) = [line for line in out.splitlines() if line.startswith("reproduce: ")]
    rerun = rerun.removeprefix("reproduce: ")
    assert rerun.startswith("python -m standby simulate --seed 45 --timing reference-unsafe ")
    assert "--random-faults" not in rerun
    assert "--focus" not in rerun
    assert "--fault " in rerun
    status, out, _ = command(capsys, rerun)
    assert status == 1


def test_a_campaign_failure_shrinks_to_a_command_that_still_fails(
    capsys: pytest.CaptureFixture[str],
) -> None:
    unsafe = Configuration("unsafe", timing="reference-unsafe")
    shrunk, rerun = shrink_run(unsafe, 45)
    assert len(shrunk.faults) < len(shrunk.original_faults)
    assert shrunk.minimal
    assert rerun.startswith("python -m standby simulate --seed 45 --timing reference-unsafe ")
    status, out, _ = command(capsys, rerun)
    assert status == 1
    assert "[two-live]" in out
