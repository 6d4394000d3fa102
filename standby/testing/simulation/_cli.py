"""``python -m standby simulate``: one scenario or a seeded campaign.

Exit status: 0 when the checkers found no violation, 1 when they found one,
whatever the timing preset (so ``--timing reference-unsafe`` exits 1: the
checker caught the unsafe timing, which is the point of the demonstration),
2 for bad arguments (one line on stderr).

``--svg FILE`` writes a single run's timeline as an SVG picture (see
:meth:`SimulationReport.to_svg`).

``--random-faults`` runs the random schedule a campaign gives its seed
(how a campaign's failing run is rerun alone), ``--fault`` adds any fault
written as its ``repr``, and ``--shrink`` prints a failing run cut down to
the fewest faults and the shortest ``--until`` that still fail.

A single run without a scenario flag (``--crash-primary-at``,
``--partition-primary``) runs the default scenario, a primary crash (see
:func:`default_crash_at`), and says so; ``--no-faults`` runs without any.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from ...cli._argtypes import integer_at_least, seconds
from ...core._timing import Timing
from ._campaign import FOCUSES, _Plan, run_campaign, schedule_for
from ._configurations import PRESETS, preset, simulate_command
from ._faults import (
    CURRENT_PRIMARY,
    PAUSE_WORKLOADS,
    REACCEPT_MODES,
    Crash,
    Fault,
    Kill,
    Partition,
    Pause,
    Restart,
    StepClock,
)
from ._shrink import fault_flags, parse_fault, shrink
from ._simulation import Simulation, memory_runtime
from ._world import SimulatedStore

__all__ = ["add_arguments", "default_crash_at", "preset", "run"]

T = TypeVar("T")

#: The longest run ``--until`` may ask for, in heartbeat intervals.
MAX_HEARTBEATS = 100_000


def default_crash_at(timing: Timing, until: float) -> float:
    """When the default scenario crashes the primary.

    After 10 heartbeat intervals (t=600 s at the default timing), or at a
    quarter of the run when that comes first, so the crash always happens
    inside the run.
    """
    return min(10 * timing.heartbeat_interval, until / 4)


def _time(text: str) -> float:
    return seconds(text)


def _duration(text: str) -> float:
    return seconds(text, positive=True)


def _partition_spec(text: str) -> tuple[float, float | None]:
    at, _, duration = text.partition(":")
    try:
        start = _time(at)
        length = _duration(duration) if duration else None
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(
            f"expected T or T:DURATION in seconds with T >= 0 and DURATION > 0, "
            f"got {text!r} ({exc})"
        ) from None
    return start, length


def _readable(parse: Callable[[str], T]) -> Callable[[str], T]:
    """``parse`` with any ``ValueError`` of the fault it builds as a one-line argument error.

    (argparse would otherwise answer ``invalid _crash_spec value``.)
    """

    @functools.wraps(parse)
    def wrapper(text: str) -> T:
        try:
            return parse(text)
        except argparse.ArgumentTypeError:
            raise
        except (TypeError, ValueError) as exc:
            raise argparse.ArgumentTypeError(f"{exc} in {text!r}") from None

    return wrapper


def _split_target(text: str) -> tuple[str, str]:
    name, at, rest = text.partition("@")
    if not at or not name or not rest:
        raise argparse.ArgumentTypeError(f"expected NAME@T..., got {text!r}")
    if name == "primary-now":
        name = CURRENT_PRIMARY
    return name, rest


def _seconds(text: str, whole: str, *, positive: bool = False) -> float:
    try:
        return seconds(text, positive=positive)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{exc} in {whole!r}") from None


@_readable
def _kill_spec(text: str) -> Kill:
    """``NAME@T[:STEPS]``: kill -9 of NAME's node at T (after STEPS more steps)."""
    name, rest = _split_target(text)
    at, _, steps = rest.partition(":")
    count = None
    if steps:
        try:
            count = int(steps)
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad step count in {text!r}") from None
        if count < 1:
            raise argparse.ArgumentTypeError(f"the step count must be >= 1 in {text!r}")
    return Kill(_seconds(at, text), name, count)


@_readable
def _crash_spec(text: str) -> Crash:
    """``NAME@T``: NAME's host dies at T (containers too)."""
    name, rest = _split_target(text)
    return Crash(_seconds(rest, text), name)


@_readable
def _restart_spec(text: str) -> Restart:
    """``NAME@T[:with-created-at|:without-created-at]``."""
    name, rest = _split_target(text)
    at, _, mode = rest.partition(":")
    if mode and mode not in REACCEPT_MODES:
        raise argparse.ArgumentTypeError(
            f"expected :with-created-at or :without-created-at after the time, got {text!r}"
        )
    return Restart(_seconds(at, text), name, mode or None)


@_readable
def _freeze_spec(text: str) -> Pause:
    """``NAME@T+D[:running]``: freeze NAME's node at T for D seconds."""
    name, rest = _split_target(text)
    span, _, mode = rest.partition(":")
    at, plus, duration = span.partition("+")
    if not plus:
        raise argparse.ArgumentTypeError(f"expected NAME@T+DURATION, got {text!r}")
    if mode and mode not in PAUSE_WORKLOADS:
        raise argparse.ArgumentTypeError(f"expected :running or :frozen at the end of {text!r}")
    length = _seconds(duration, text, positive=True)
    return Pause(_seconds(at, text), name, length, mode or "frozen")


def _step_clock_spec(text: str) -> StepClock:
    """``NAME@T:DELTA``: step NAME's wall clock by DELTA seconds at T (negative: back)."""
    name, rest = _split_target(text)
    at, colon, delta = rest.partition(":")
    if not colon or not delta:
        raise argparse.ArgumentTypeError(f"expected NAME@T:DELTA, got {text!r}")
    try:
        step = float(delta)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad clock step {delta!r} in {text!r}") from None
    if not math.isfinite(step) or step == 0:
        raise argparse.ArgumentTypeError(
            f"the clock step must be a finite number of seconds other than 0 in {text!r}"
        )
    return StepClock(_seconds(at, text), name, step)


def _fault_spec(text: str) -> Fault:
    """``Kind(at=..., ...)``: any fault, written as its ``repr``."""
    try:
        return parse_fault(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_positive_int = integer_at_least(1)
_count = integer_at_least(0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``simulate`` options to ``parser``."""
    parser.description = (
        "Run a deterministic failover simulation (or, with --runs, a campaign of random "
        "fault schedules) of the shipped node on simulated relays, runtimes and stores, "
        "and report what the safety checkers found. Times are virtual seconds. Exit "
        "status 1 means a violation was found (also with --timing reference-unsafe)."
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--standbys", type=_count, default=2, help="number of standbys (default 2)")
    parser.add_argument(
        "--relays", type=_positive_int, default=3, help="number of relays (default 3)"
    )
    parser.add_argument(
        "--timing",
        choices=PRESETS,
        default="default",
        help="timing preset: default, fast (60x faster) or reference-unsafe "
        "(lease 420 s vs silence 180 s, which Timing rejects)",
    )
    parser.add_argument(
        "--until",
        type=_duration,
        default=None,
        metavar="T",
        help="virtual seconds to simulate (default: 20 silence windows; "
        f"at most {MAX_HEARTBEATS} heartbeat intervals)",
    )
    parser.add_argument(
        "--crash-primary-at", type=_time, default=None, metavar="T", help="crash the primary at T"
    )
    parser.add_argument(
        "--partition-primary",
        type=_partition_spec,
        default=None,
        metavar="T[:DURATION]",
        help="cut the primary off from every relay at T (for DURATION seconds, or for good)",
    )
    parser.add_argument(
        "--kill",
        type=_kill_spec,
        action="append",
        default=[],
        metavar="NAME@T[:STEPS]",
        help="kill -9 of NAME's node process at T, or STEPS loop steps after T; its "
        "containers keep running (repeatable; NAME 'primary-now' is the current primary)",
    )
    parser.add_argument(
        "--crash",
        type=_crash_spec,
        action="append",
        default=[],
        metavar="NAME@T",
        help="NAME's host dies at T, containers and all (repeatable)",
    )
    parser.add_argument(
        "--restart",
        type=_restart_spec,
        action="append",
        default=[],
        metavar="NAME@T[:with-created-at|:without-created-at]",
        help="restart NAME's node from its store at T; with a suffix the host sends the "
        "request again, with or without created_at (repeatable)",
    )
    parser.add_argument(
        "--freeze",
        type=_freeze_spec,
        action="append",
        default=[],
        metavar="NAME@T+D[:running]",
        help="freeze NAME's node at T for D seconds with its containers (a paused VM), or "
        "with ':running' the node process only (repeatable)",
    )
    parser.add_argument(
        "--step-clock",
        type=_step_clock_spec,
        action="append",
        default=[],
        metavar="NAME@T:DELTA",
        help="step NAME's wall clock by DELTA seconds at T, negative DELTA back (repeatable); "
        "a step or a spread of the clocks beyond max_clock_skew is outside the safety model",
    )
    parser.add_argument(
        "--fault",
        type=_fault_spec,
        action="append",
        default=[],
        metavar="'Kind(at=T, ...)'",
        help="any fault, written as the Python repr a report prints, e.g. "
        '"Drop(at=600.0, duration=30.0, probability=0.5, who=None)" (repeatable; '
        "what a shrunk failure's command line uses)",
    )
    parser.add_argument(
        "--random-faults",
        action="store_true",
        help="a single run with the random fault schedule its seed draws, exactly the run "
        "of that seed in a campaign (--runs) with the same flags",
    )
    parser.add_argument(
        "--focus",
        choices=FOCUSES,
        default=None,
        help="each random schedule also gets one fault of this kind (with --random-faults "
        "or --runs)",
    )
    parser.add_argument(
        "--shrink",
        action="store_true",
        help="when the run fails (with --runs: the first failing run), also print the "
        "fewest faults and the shortest --until that still fail, and how to rerun them",
    )
    parser.add_argument(
        "--no-lease-enforcement",
        action="store_true",
        help="hosts whose runtime does not stop containers at their lease end (failure mode 14)",
    )
    parser.add_argument(
        "--early-ack-store",
        action="store_true",
        help="stores that acknowledge a save before it is durable (failure mode 15)",
    )
    parser.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        metavar="N",
        help="run a campaign over N processes (default 1)",
    )
    parser.add_argument(
        "--no-faults",
        action="store_true",
        help="a single run without any fault (without a scenario flag, a single run "
        "crashes the primary by default)",
    )
    parser.add_argument("--atomic-claims", action="store_true", help="use compare-and-set claims")
    parser.add_argument(
        "--runs",
        type=_positive_int,
        default=None,
        metavar="N",
        help="run a campaign of N seeded simulations with random fault schedules "
        "(plus the scenario flags) and print a summary",
    )
    parser.add_argument(
        "--timeline", action="store_true", help="print the whole timeline of a single run"
    )
    parser.add_argument(
        "--svg",
        default=None,
        metavar="FILE",
        help="write a single run's timeline to FILE as an SVG picture: a lane per provider "
        "with its container runs and fencing tokens, lease ends, the silence, the claims, "
        "the faults, and any two-live window in red",
    )


def _scenario(args: argparse.Namespace) -> list[Fault]:
    faults: list[Fault] = []
    if args.crash_primary_at is not None:
        faults.append(Crash(args.crash_primary_at, CURRENT_PRIMARY))
    if args.partition_primary is not None:
        at, duration = args.partition_primary
        faults.append(Partition(at, CURRENT_PRIMARY, None, duration))
    faults.extend(args.kill)
    faults.extend(args.crash)
    faults.extend(args.restart)
    faults.extend(args.freeze)
    faults.extend(args.step_clock)
    faults.extend(args.fault)
    return sorted(faults, key=lambda f: f.at)


def _adapters(args: argparse.Namespace, timing: Timing) -> dict[str, Any]:
    chosen: dict[str, Any] = {}
    if args.no_lease_enforcement:
        chosen["runtime_factory"] = functools.partial(
            memory_runtime, stop_grace=timing.fence_grace / 10, enforce_leases=False
        )
    if args.early_ack_store:
        chosen["store_factory"] = lambda _host: SimulatedStore(acknowledge_early=True)
    return chosen


def _error(text: str) -> int:
    print(f"error: {text}", file=sys.stderr)
    return 2


def _rerun(args: argparse.Namespace, seed: int, until: float, extra: list[str]) -> str:
    """The command line of a single run with these arguments (``extra`` for the faults)."""
    flags = ["--no-lease-enforcement"] * args.no_lease_enforcement
    flags += ["--early-ack-store"] * args.early_ack_store
    return simulate_command(
        seed=seed,
        until=until,
        timing=args.timing,
        relays=args.relays,
        standbys=args.standbys,
        atomic_claims=args.atomic_claims,
        random_faults=args.random_faults or args.runs is not None,
        focus=args.focus,
        extra=[*extra, *flags],
    )


def _shrunk(
    args: argparse.Namespace, timing: Timing, seed: int, faults: list[Fault], until: float
) -> str:
    """Shrink one failing run and say how to rerun the result."""
    settings: dict[str, Any] = {
        "seed": seed,
        "timing": timing,
        "standbys": args.standbys,
        "atomic_claims": args.atomic_claims,
        **_adapters(args, timing),
    }
    result = shrink(faults, until, **settings)
    rerun = argparse.Namespace(
        **{**vars(args), "random_faults": False, "runs": None, "focus": None}
    )
    command = _rerun(rerun, seed, result.until, fault_flags(result.faults))
    return result.format(command=command)


def run(args: argparse.Namespace) -> int:
    """Run what ``args`` asks for, print the report; returns the exit status."""
    try:
        timing = preset(args.timing, args.relays)
    except ValueError as exc:
        return _error(str(exc))
    until = args.until if args.until is not None else 20 * timing.silence
    if until > MAX_HEARTBEATS * timing.heartbeat_interval:
        return _error(
            f"--until {until:g} is more than {MAX_HEARTBEATS} heartbeat intervals "
            f"({MAX_HEARTBEATS * timing.heartbeat_interval:g} s at this timing)"
        )
    faults = _scenario(args)
    if faults and args.no_faults:
        return _error("--no-faults contradicts the scenario flags")
    if args.random_faults and args.no_faults:
        return _error("--no-faults contradicts --random-faults")
    if args.focus is not None and not (args.random_faults or args.runs is not None):
        return _error("--focus applies to random schedules: add --random-faults (or --runs N)")
    adapters = _adapters(args, timing)
    if args.runs is not None and adapters:
        return _error("the broken-adapter flags apply to a single run, not to --runs")
    if args.runs is not None and args.svg is not None:
        return _error("--svg draws a single run, not a campaign (--runs)")
    plan = _Plan(timing, args.standbys, until, tuple(faults), True, args.atomic_claims, args.focus)
    scenario_flags = fault_flags(faults) if faults else []
    if args.runs is not None:
        summary = run_campaign(
            args.runs,
            seed=args.seed,
            timing=timing,
            standbys=args.standbys,
            horizon=until,
            faults=faults,
            atomic_claims=args.atomic_claims,
            workers=args.workers,
            focus=args.focus,
        )
        print(summary.format())
        for seed in sorted(set(summary.failing_seeds))[:10]:
            print(f"rerun seed {seed}: {_rerun(args, seed, until, scenario_flags)}")
        if args.shrink and summary.failing_seeds:
            seed = summary.failing_seeds[0]
            print(f"seed {seed}, shrunk:")
            print(_shrunk(args, timing, seed, schedule_for(plan, seed), until))
        return 0 if summary.ok else 1
    if args.random_faults:
        faults = schedule_for(plan, args.seed)
    elif not faults and not args.no_faults:
        at = default_crash_at(timing, until)
        faults = [Crash(at, CURRENT_PRIMARY)]
        print(
            f"scenario: no fault flag given, so the default scenario runs: the primary "
            f"crashes at t={at:g} s (--no-faults for a run without faults)"
        )
    try:
        sim = Simulation(
            timing=timing,
            standbys=args.standbys,
            seed=args.seed,
            faults=faults,
            atomic_claims=args.atomic_claims,
            **adapters,
        )
    except ValueError as exc:
        return _error(str(exc))
    report = sim.run(until=until)
    sim.close()
    print(report.format(timeline=args.timeline))
    if args.svg is not None:
        try:
            with open(args.svg, "w", encoding="utf-8") as out:
                out.write(report.to_svg())
        except OSError as exc:
            return _error(f"cannot write {args.svg}: {exc}")
        print(f"timeline picture written to {args.svg}")
    if args.shrink and not report.ok:
        print(_shrunk(args, timing, args.seed, faults, until))
    return 0 if report.ok else 1
