"""``python -m standby campaign``: a long campaign over every fault configuration.

It prints its seed first, then runs ``--schedules`` random schedules spread
evenly over the configurations (:data:`CONFIGURATIONS`) until done, until
``--max-seconds`` have passed or until Ctrl-C, and prints what ran: the
schedules, the rate, the violations by checker and by configuration, and
each failing run's seed with the command that reruns it on its own.

Exit status: 0 when no run found a violation, 1 when one did, 2 for bad
arguments (one line on stderr).
"""

from __future__ import annotations

import argparse
import math
import random
import signal
import sys
import time

from ...cli._argtypes import integer_at_least
from ._configurations import CONFIGURATIONS, by_name, run_configurations, shrink_run

__all__ = ["add_arguments", "run"]

#: How many failing runs per checker are shrunk with ``--shrink``.
SHRUNK_PER_CHECKER = 1


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``campaign`` options to ``parser``."""
    parser.description = (
        "Run a long safety campaign: random fault schedules of the shipped node, spread "
        "evenly over every fault configuration, from a fresh random seed (printed first). "
        "Prints the rate, the violations by checker and configuration, and a command that "
        "reruns each failing run. Exit status 1 means a violation was found."
    )
    parser.add_argument(
        "--schedules",
        type=integer_at_least(1),
        default=100_000,
        metavar="N",
        help="how many schedules to run (default 100000)",
    )
    parser.add_argument(
        "--workers",
        type=integer_at_least(1),
        default=1,
        metavar="N",
        help="spread the runs over N processes (default 1)",
    )
    parser.add_argument(
        "--max-seconds",
        type=_seconds,
        default=None,
        metavar="S",
        help="stop handing out runs after S seconds of wall-clock time and report what ran "
        "(Ctrl-C does the same)",
    )
    parser.add_argument(
        "--seed",
        type=integer_at_least(0),
        default=None,
        metavar="N",
        help="the first seed (default: a fresh random one); schedule n runs with seed N+n",
    )
    parser.add_argument(
        "--config",
        action="append",
        choices=[c.name for c in CONFIGURATIONS],
        default=None,
        metavar="NAME",
        help="run only this configuration (repeatable; default: all of "
        + ", ".join(c.name for c in CONFIGURATIONS)
        + ")",
    )
    parser.add_argument(
        "--shrink",
        action="store_true",
        help="shrink the first failing run of each checker to the fewest faults and the "
        "shortest run that still fail, and print it",
    )


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _stop_on_signals() -> None:
    """Stop the campaign with its report on Ctrl-C and on ``kill`` (SIGTERM).

    A job started in the background of a non-interactive shell inherits
    SIGINT ignored, so the handler is installed explicitly, and SIGTERM (what
    ``kill`` and a CI timeout send) gets the same treatment: the schedules
    already run are reported, with the rerun command of each failing one.
    """
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)


def run(args: argparse.Namespace) -> int:
    """Run the campaign ``args`` asks for and print its summary; returns the exit status."""
    configurations = CONFIGURATIONS if args.config is None else by_name(args.config)
    seed = random.SystemRandom().randrange(2**31) if args.seed is None else args.seed
    limit = "" if args.max_seconds is None else f", at most {args.max_seconds:g} s"
    print(
        f"campaign seed {seed} (rerun with --seed {seed}): {args.schedules} schedules over "
        f"{len(configurations)} configurations on {args.workers} workers{limit}",
        flush=True,
    )
    last = [time.monotonic()]

    def progress(done: int, failing: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 30:
            last[0] = now
            print(f"... {done} schedules, {failing} failing", file=sys.stderr, flush=True)

    _stop_on_signals()
    summary = run_configurations(
        args.schedules,
        seed=seed,
        configurations=configurations,
        workers=args.workers,
        max_seconds=args.max_seconds,
        on_progress=progress,
    )
    print(summary.format(), flush=True)
    if args.shrink:
        done: dict[str, int] = {}
        for config, run_seed, found in summary.failures():
            for kind in sorted({v.kind for v in found}):
                if done.get(kind, 0) >= SHRUNK_PER_CHECKER:
                    continue
                done[kind] = done.get(kind, 0) + 1
                print(f"\n[{kind}] {config.name} seed {run_seed}, shrunk:")
                shrunk, command = shrink_run(config, run_seed, kinds=[kind])
                print(shrunk.format(command=command), flush=True)
    if summary.stopped == "interrupted" and summary.ok:
        return 130
    return 0 if summary.ok else 1
