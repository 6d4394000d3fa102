"""Command line: ``python -m standby`` ``demo``, ``simulate``, ``campaign``, ``explore``,
``store``, ``inspect``, ``drain``, ``stop``, ``status`` and ``timeline``.

Each command's options are in its own module.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn


class _Parser(argparse.ArgumentParser):
    """An argument parser that reports a bad argument in one line on stderr, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``standby`` command line; returns the exit status.

    Bad arguments print one line on stderr and exit with status 2 (argparse's
    :class:`SystemExit`).
    """
    parser = _Parser(prog="python -m standby", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    from .cli import _demo
    from .cli import _drain as _drain_cli
    from .cli import _inspect as _inspect_cli
    from .cli import _store as _store_cli
    from .testing.explore import _cli as explore_cli
    from .testing.simulation import _campaign_cli as campaign_cli
    from .testing.simulation import _cli as simulate_cli

    _demo.add_arguments(
        commands.add_parser("demo", help="live failover demo on embedded in-memory relays")
    )
    simulate_cli.add_arguments(
        commands.add_parser("simulate", help="deterministic failover simulation and campaigns")
    )
    campaign_cli.add_arguments(
        commands.add_parser("campaign", help="long safety campaign over every fault configuration")
    )
    explore_parser = commands.add_parser(
        "explore", help="exhaustive search of the shipped machines' interleavings"
    )
    explore_cli.add_arguments(explore_parser)
    _store_cli.add_arguments(
        commands.add_parser("store", help="manage a JsonFileStore (accept-loss PATH)")
    )
    _inspect_cli.add_arguments(
        commands.add_parser("inspect", help="one workload as a read quorum of relays sees it")
    )
    _drain_cli.add_drain_arguments(
        commands.add_parser("drain", help="hand a stopped node's workloads to their standbys")
    )
    _drain_cli.add_stop_arguments(
        commands.add_parser("stop", help="stop a stopped node's workloads for good")
    )
    # The operator's view (docs/operations.md): status of a store, timeline of event logs.
    from .cli import _status, _timeline

    observe: dict[str, Callable[[argparse.Namespace], int]] = {
        "status": _status.run,
        "timeline": _timeline.run,
    }
    _status.add_arguments(
        commands.add_parser("status", help="what a node's store holds, read-only (--json)")
    )
    _timeline.add_arguments(
        commands.add_parser("timeline", help="draw the event logs of real nodes (text or --svg)")
    )
    args = parser.parse_args(argv)
    if args.command in observe:
        return observe[args.command](args)
    if args.command == "inspect":
        return _inspect_cli.run(args)
    if args.command == "drain":
        return _drain_cli.run_drain(args)
    if args.command == "stop":
        return _drain_cli.run_stop(args)
    if args.command == "demo":
        return _demo.run(args)
    if args.command == "campaign":
        return campaign_cli.run(args)
    if args.command == "explore":
        return explore_cli.run(args, explore_parser)
    if args.command == "store":
        return _store_cli.run(args)
    return simulate_cli.run(args)


if __name__ == "__main__":
    sys.exit(main())
