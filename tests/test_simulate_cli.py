"""``python -m standby simulate``."""

from __future__ import annotations

import argparse
import importlib.util

import pytest

from standby import Timing
from standby.testing.simulation import _cli


def simulate(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="python -m standby simulate")
    _cli.add_arguments(parser)
    status = _cli.run(parser.parse_args(list(argv)))
    return status, capsys.readouterr().out


def test_crash_scenario_prints_the_failover(capsys: pytest.CaptureFixture[str]) -> None:
    status, out = simulate(capsys, "--seed", "3", "--crash-primary-at", "600")
    assert status == 0
    assert "simulation: seed 3, 2 standbys, 3 relays, until t=3600.0 s, timing safe" in out
    assert "promotions: 1" in out
    assert "standby-0  epoch 1  token 1048576" in out
    assert "double-live: 0.000 s" in out
    assert "violations: none" in out


def test_output_is_deterministic(capsys: pytest.CaptureFixture[str]) -> None:
    args = (
        "--seed",
        "9",
        "--crash-primary-at",
        "700",
        "--partition-primary",
        "100:30",
        "--timeline",
    )
    first = simulate(capsys, *args)
    second = simulate(capsys, *args)
    assert first == second
    assert "timeline:" in first[1]
    assert "Partition(at=100.0, who='@primary', relays=None, duration=30.0)" in first[1]


def test_reference_unsafe_preset_exits_one_with_the_two_live_window(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out = simulate(capsys, "--timing", "reference-unsafe", "--partition-primary", "600")
    assert status == 1
    assert "timing UNSAFE" in out
    assert "silence >= lease + fence_grace + max_clock_skew" in out
    assert "[two-live]" in out
    assert "stale writes rejected" in out


def test_fast_preset_and_more_relays(capsys: pytest.CaptureFixture[str]) -> None:
    status, out = simulate(
        capsys, "--timing", "fast", "--relays", "5", "--standbys", "3", "--crash-primary-at", "10"
    )
    assert status == 0
    assert "3 standbys, 5 relays, until t=60.0 s" in out
    assert "promotions: 1" in out


def test_campaign_summary(capsys: pytest.CaptureFixture[str]) -> None:
    status, out = simulate(capsys, "--runs", "30", "--seed", "100", "--until", "2000")
    lines = out.splitlines()
    assert lines[0] == "campaign: 30 runs from seed 100"
    assert lines[2].startswith("failover latency: p50 ")
    assert " / p90 " in lines[2]
    assert " / p99 " in lines[2]
    assert lines[3].startswith("double-live: ")
    assert status == (0 if "violations: none" in out else 1)


def test_unsafe_campaign_fails(capsys: pytest.CaptureFixture[str]) -> None:
    status, out = simulate(
        capsys, "--runs", "5", "--timing", "reference-unsafe", "--partition-primary", "600"
    )
    assert status == 1
    assert "violations: " in out
    assert "two-live" in out
    assert "outside the safety model: timing breaks" in out


def test_process_faults_and_broken_adapters(capsys: pytest.CaptureFixture[str]) -> None:
    status, out = simulate(
        capsys, "--kill", "primary@600", "--restart", "primary@620:without-created-at"
    )
    assert status == 0, out
    assert "promotions: 0" in out
    status, out = simulate(capsys, "--kill", "primary@600", "--no-lease-enforcement")
    assert status == 1
    assert "[two-live]" in out
    status, out = simulate(
        capsys,
        "--crash",
        "primary@1200",
        "--kill",
        "standby-0@1335:17",
        "--restart",
        "standby-0@1345",
        "--early-ack-store",
        "--until",
        "2400",
    )
    assert status == 1
    assert "[token-shared]" in out
    status, out = simulate(capsys, "--freeze", "primary-now@600+400:running", "--timeline")
    assert status == 0, out
    assert "Pause(at=600.0, who='@primary', duration=400.0, workload='running')" in out


def test_fm31_step_clock_steps_the_primary_clock_back(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Ten minutes back on the primary's clock, on hosts whose runtime enforces
    # no lease: the node alone must stop the workload before the takeover.
    status, out = simulate(
        capsys,
        "--step-clock",
        "primary@300:-600",
        "--no-lease-enforcement",
        "--until",
        "1800",
        "--timeline",
    )
    assert status == 0, out
    assert "StepClock(at=300.0, who='primary', delta=-600.0)" in out
    assert "primary's clock stepped -600 s > max_clock_skew=20 s at t=300.000" in out
    assert "promotions: 1" in out
    assert "double-live: 0.000 s" in out
    status, out = simulate(capsys, "--step-clock", "standby-0@100:5", "--crash-primary-at", "600")
    assert status == 0, out
    assert "outside the safety model" not in out


def test_campaign_over_two_workers_matches_one(capsys: pytest.CaptureFixture[str]) -> None:
    one = simulate(capsys, "--runs", "6", "--seed", "5", "--until", "1200")
    two = simulate(capsys, "--runs", "6", "--seed", "5", "--until", "1200", "--workers", "2")
    assert one == two


@pytest.mark.parametrize(
    "argv",
    [
        ["--kill", "primary"],
        ["--kill", "primary@10:0"],
        ["--restart", "standby-0@5:maybe"],
        ["--freeze", "primary@10"],
        ["--freeze", "primary@10+0"],
        ["--crash", "@10"],
        ["--partition-primary", "soon"],
        ["--partition-primary", "10:-1"],
        ["--runs", "0"],
        ["--relays", "0"],
        ["--standbys", "-1"],
        ["--timing", "slow"],
    ],
)
def test_bad_arguments_exit_two(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    _cli.add_arguments(parser)
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(argv)
    assert exit_info.value.code == 2
    capsys.readouterr()


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--until", "-5"], "argument --until: expected a duration > 0"),
        (["--until", "nan"], "argument --until: expected a finite number"),
        (["--until", "inf"], "argument --until: expected a finite number"),
        (["--until", "0"], "argument --until: expected a duration > 0"),
        (["--crash-primary-at", "-1"], "argument --crash-primary-at: expected a time >= 0"),
        (["--crash-primary-at", "nan"], "argument --crash-primary-at: expected a finite"),
        (["--partition-primary", "nan"], "argument --partition-primary: expected T or T:DURATION"),
        (["--partition-primary", "5:inf"], "argument --partition-primary: expected T or T:"),
        (["--partition-primary=-1:5"], "T >= 0 and DURATION > 0"),
        (["--seed", "x"], "argument --seed: invalid int value"),
        (["--step-clock", "primary@10"], "argument --step-clock: expected NAME@T:DELTA"),
        (["--step-clock", "@10:5"], "argument --step-clock: expected NAME@T..."),
        (["--step-clock", "primary@10:soon"], "bad clock step 'soon'"),
        (["--step-clock", "primary@10:nan"], "finite number of seconds other than 0"),
        (["--step-clock", "primary@10:0"], "finite number of seconds other than 0"),
        (["--step-clock", "primary@later:5"], "expected a number of seconds, got 'later'"),
        (["--step-clock=primary@-1:5"], "expected a time >= 0 in seconds"),
    ],
)
def test_bad_numbers_are_one_line_on_stderr_and_exit_two(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from standby.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", *argv])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("python -m standby simulate: error: ")
    assert fragment in captured.err
    assert captured.err.count("\n") == 1


TIME_OPTIONS = [
    ("--until", "{}"),
    ("--crash-primary-at", "{}"),
    ("--partition-primary", "{}"),
    ("--partition-primary", "10:{}"),
    ("--kill", "primary@{}"),
    ("--crash", "primary@{}"),
    ("--restart", "sb0@{}"),
    ("--freeze", "sb0@{}+5"),
    ("--freeze", "sb0@10+{}"),
]


@pytest.mark.parametrize("bad", ["inf", "nan", "-1", "-inf", "soon"])
@pytest.mark.parametrize(("option", "form"), TIME_OPTIONS)
def test_every_bad_time_in_every_time_option_is_one_readable_line(
    option: str, form: str, bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # `--crash primary@inf` answered "invalid _crash_spec value"
    from standby.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", f"{option}={form.format(bad)}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"python -m standby simulate: error: argument {option}: expected ")
    assert err.count("\n") == 1
    assert "invalid" not in err
    assert repr(bad) in err


def test_a_run_too_long_for_the_timing_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    _cli.add_arguments(parser)
    assert _cli.run(parser.parse_args(["--timing", "fast", "--until", "1e9"])) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "more than 100000 heartbeat intervals" in captured.err


def test_without_a_scenario_flag_a_primary_crash_runs_and_says_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out = simulate(capsys, "--seed", "3")
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == (
        "scenario: no fault flag given, so the default scenario runs: the primary crashes "
        "at t=600 s (--no-faults for a run without faults)"
    )
    assert "promotions: 1" in out
    assert "failover latency: n/a" not in out
    # the same run as asking for the crash explicitly
    explicit = simulate(capsys, "--seed", "3", "--crash-primary-at", "600")
    assert out.split("\n", 1)[1] == explicit[1]
    assert _cli.default_crash_at(Timing.fast(), until=60.0) == 10.0
    assert _cli.default_crash_at(Timing(), until=100.0) == 25.0


def test_no_faults_runs_without_a_fault(capsys: pytest.CaptureFixture[str]) -> None:
    status, out = simulate(capsys, "--seed", "3", "--no-faults")
    assert status == 0
    assert "scenario:" not in out
    assert "promotions: 0" in out
    parser = argparse.ArgumentParser()
    _cli.add_arguments(parser)
    assert _cli.run(parser.parse_args(["--no-faults", "--crash-primary-at", "5"])) == 2
    assert "contradicts" in capsys.readouterr().err


def test_presets() -> None:
    assert _cli.preset("default") == Timing()
    assert _cli.preset("fast") == Timing.fast()
    five = _cli.preset("default", relays=5)
    assert (five.relay_count, five.write_quorum, five.read_quorum) == (5, 3, 3)
    unsafe = _cli.preset("reference-unsafe")
    assert (unsafe.lease, unsafe.silence, unsafe.is_safe) == (420.0, 180.0, False)
    with pytest.raises(ValueError, match="unknown timing preset"):
        _cli.preset("slow")


@pytest.mark.skipif(
    importlib.util.find_spec("standby.cli._demo") is None,
    reason="python -m standby also needs the demo command (standby.cli._demo)",
)
def test_through_python_dash_m_standby(capsys: pytest.CaptureFixture[str]) -> None:
    from standby.__main__ import main

    assert main(["simulate", "--seed", "3", "--crash-primary-at", "600"]) == 0
    assert "promotions: 1" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["simulate", "--until", "nan"],
        ["simulate", "--partition-primary", "nan"],
        ["simulate", "--step-clock", "primary@10:-x"],
        ["demo", "--log-level", "LOUD"],
    ],
)
def test_the_real_command_line_prints_no_traceback(argv: list[str]) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(root))
    done = subprocess.run(
        [sys.executable, "-m", "standby", *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith(f"python -m standby {argv[0]}: error: argument {argv[1]}")
