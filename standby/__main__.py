"""Command line: ``python -m standby demo`` and ``python -m standby simulate``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``standby`` command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m standby", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    from . import _demo
    from .testing import _cli as simulate_cli

    _demo.add_arguments(
        commands.add_parser("demo", help="live failover demo on embedded in-memory relays")
    )
    simulate_cli.add_arguments(
        commands.add_parser("simulate", help="deterministic failover simulation and campaigns")
    )
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo.run(args)
    return simulate_cli.run(args)


if __name__ == "__main__":
    sys.exit(main())
