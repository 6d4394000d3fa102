"""``python -m standby store accept-loss PATH``: accept the loss of quarantined store data."""

from __future__ import annotations

import argparse
import sys

from ..core._errors import StoreError

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``store`` command's arguments."""
    actions = parser.add_subparsers(dest="action", required=True)
    accept = actions.add_parser(
        "accept-loss",
        help="let a store whose unreadable file was quarantined start empty",
        description=(
            "A JsonFileStore that moved an unreadable file aside refuses to start until "
            "the loss is accepted (failure mode 23). This removes the quarantine marker, "
            "keeps the quarantined files, and says what they held."
        ),
    )
    accept.add_argument("path", help="the store's file (the path given to JsonFileStore)")


def run(args: argparse.Namespace) -> int:
    """Carry out the ``store`` command; returns the exit status."""
    from ..adapters.files._store import JsonFileStore

    store: JsonFileStore[object] = JsonFileStore(args.path, offload=False)
    try:
        accepted = store.accept_loss()
    except StoreError as exc:
        print(f"python -m standby store: error: {exc}", file=sys.stderr)
        return 1
    if accepted is None:
        print(
            f"python -m standby store: nothing is quarantined for {args.path}: nothing to accept",
            file=sys.stderr,
        )
        return 1
    print(f"{args.path}: {accepted}; the store will start empty")
    return 0
