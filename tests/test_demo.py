"""The failover demo: its core runs on the virtual clock, its CLI on a real loop."""

from __future__ import annotations

import argparse
import importlib.util

import anyio
import pytest

from standby import Timing
from standby.cli._demo import DemoOptions, DemoResult, add_arguments, run, run_demo

EPOCH = 1_700_000_000.0


def wall() -> float:
    return EPOCH + anyio.current_time()


async def demo(**options: object) -> tuple[DemoResult, list[str]]:
    lines: list[str] = []
    result = await run_demo(DemoOptions(**options), out=lines.append, wall_clock=wall)  # type: ignore[arg-type]
    return result, lines


def text(lines: list[str]) -> str:
    return "\n".join(lines)


@pytest.mark.anyio
async def test_crash_timeline_and_failover_time() -> None:
    result, lines = await demo()
    timing = DemoOptions().timing
    assert result.exit_status == 0
    assert result.takeovers == ("standby-0",)
    assert result.max_concurrent == 1
    assert result.failover is not None
    spawn = timing.spawn_timeout / 20
    assert timing.silence <= result.failover <= timing.silence + timing.claim_settle + spawn + 0.1
    out = text(lines)
    for expected in (
        "primary    heartbeat #1 acknowledged by 3/3 relays",
        "primary    CRASHED",
        "standby-0  primary SILENT for 1.80s (read quorum agrees); backoff 0 x 0.30s",
        "standby-1  primary SILENT for 1.80s (read quorum agrees); backoff 1 x 0.30s",
        "standby-0  claimed epoch 1 (fencing token 1048576): 3/3 relays acknowledged",
        "standby-0  SPAWN with fencing token 1048576",
        "standby-0  announced itself as primary of epoch 1",
        "standby-1  standby-0 took over (epoch 1): now standing by for it",
        f"failover took {result.failover:.2f}s after the last heartbeat; "
        "configured silence is 1.80s",
        "result: OK: 1 standby took over, at most 1 container(s) ran at once",
    ):
        assert expected in out
    assert "standby-1  SPAWN" not in out
    # the timeline is in time order
    stamps = [float(line[1:8]) for line in lines if line.startswith("[")]
    assert stamps == sorted(stamps)


@pytest.mark.anyio
async def test_handover_skips_the_silence() -> None:
    result, lines = await demo(handover=True)
    timing = DemoOptions().timing
    assert result.exit_status == 0
    assert result.takeovers == ("standby-0",)
    assert result.failover is not None
    assert result.failover < timing.silence / 4
    out = text(lines)
    assert "operator asks for a HANDOVER" in out
    assert "workload live -> fenced (handover)" in out
    assert "standby-0  lease REVOKED by the primary: no silence wait" in out
    assert "SILENT" not in out
    assert "after the handover request" in out


@pytest.mark.anyio
async def test_three_standbys_and_the_reference_timing() -> None:
    result, lines = await demo(standbys=3, scale=1.0, seed=5)
    assert result.exit_status == 0
    assert result.takeovers == ("standby-0",)
    assert result.failover is not None
    assert Timing().silence <= result.failover <= Timing().silence + 20
    out = text(lines)
    assert "standby-2  primary SILENT for 180.00s (read quorum agrees); backoff 2 x 30.00s" in out
    assert "standby-2  standby-0 took over (epoch 1)" in out


@pytest.mark.anyio
async def test_a_failed_spawn_is_retried() -> None:
    result, lines = await demo(spawn_failures=1)
    assert result.exit_status == 0
    assert len(result.takeovers) == 1
    assert "spawn FAILED" in text(lines)
    assert "withdrew claim" in text(lines)


@pytest.mark.anyio
async def test_exit_status_is_1_when_nobody_takes_over() -> None:
    result, lines = await demo(spawn_failures=1000)
    assert result.exit_status == 1
    assert result.takeovers == ()
    assert "no standby took over" in text(lines)
    assert "result: FAILED: 0 standby took over" in text(lines)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_arguments_and_defaults() -> None:
    args = parse()
    assert (args.standbys, args.seed, args.handover, args.backend) == (2, 0, False, "asyncio")
    args = parse("--standbys", "3", "--seed", "7", "--handover", "--backend", "trio")
    assert (args.standbys, args.seed, args.handover, args.backend) == (3, 7, True, "trio")


def test_options_the_demo_cannot_run_with_go_to_stderr_with_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # past the parser (a host calling run() itself), and a scale that parses
    # but overflows the timing
    for args, fragment in (
        (dict(vars(parse()), standbys=0), "at least one standby"),
        (dict(vars(parse()), scale=1e300), "scale must be between 0.001"),
        (dict(vars(parse()), log_level="LOUD"), "unknown log level 'LOUD'"),
    ):
        assert run(argparse.Namespace(**args)) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.startswith("demo: error: ")
        assert fragment in captured.err
        assert captured.err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--log-level", "LOUD"], "unknown log level 'LOUD'"),
        (["--scale", "nan"], "finite number between 0.001 and 1"),
        (["--scale", "inf"], "finite number between 0.001 and 1"),
        (["--scale", "-0.5"], "finite number between 0.001 and 1"),
        # 1e300 used to run (and hang: a silence of 5e302 s on the real clock)
        (["--scale", "1e300"], "finite number between 0.001 and 1, got '1e300'"),
        (["--scale", "1e-9"], "finite number between 0.001 and 1"),
        (["--standbys", "0"], "integer >= 1"),
        (["--relays", "-2"], "integer >= 1"),
        (["--spawn-failures", "-1"], "integer >= 0"),
    ],
)
def test_bad_demo_arguments_are_one_line_on_stderr(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from standby.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["demo", *argv])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("python -m standby demo: error: argument ")
    assert fragment in captured.err
    assert captured.err.count("\n") == 1


def test_a_lowercase_log_level_is_accepted() -> None:
    assert parse("--log-level", "info").log_level == "INFO"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_cli_runs_on_a_real_loop(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    # 1/500 of the reference timing: the whole demo takes about a second
    assert run(parse("--scale", "0.002", "--backend", backend)) == 0
    out = capsys.readouterr().out
    assert "SPAWN with fencing token" in out
    assert "result: OK" in out


@pytest.mark.skipif(
    importlib.util.find_spec("standby.testing.simulation._cli") is None,
    reason="`python -m standby` also needs the simulate subcommand",
)
def test_python_dash_m_standby_demo(capsys: pytest.CaptureFixture[str]) -> None:
    from standby.__main__ import main

    assert main(["demo", "--scale", "0.002", "--handover"]) == 0
    assert "lease REVOKED" in capsys.readouterr().out
