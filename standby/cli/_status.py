"""``python -m standby status STORE [--json]``: what a node's durable state holds.

Reads a :class:`~standby.JsonFileStore` file read-only (no node is started,
no lock is taken, nothing on disk changes, even for a corrupt file) and
prints its slots, promotion intents and primary records: epochs, fencing
tokens, lease ends and reservation ends. With ``--json`` it prints one JSON
document instead (intents and primaries in the store's own record form).

Exit status: 0 when the store was read; 2 for bad arguments, a path with no
store file (nor journal) or a directory; 1 when the store cannot be read (a
corrupt or quarantined file, one from a newer version, sealed slots).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core._errors import StoreError
from ..core._models import StandbySlot
from ..core._records import NodeState, intent_to_json, primary_to_json

__all__ = ["add_arguments", "run"]

_PROG = "python -m standby status"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``status`` command's arguments."""
    parser.add_argument("store", help="the node's store file (the path given to JsonFileStore)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def run(args: argparse.Namespace) -> int:
    """Carry out the ``status`` command; returns the exit status."""
    from ..adapters.files._store import JsonFileStore

    path = Path(args.store)
    store: JsonFileStore[Any] = JsonFileStore(path, offload=False, read_only=True)
    if path.is_dir():
        return _fail(2, f"{path} is a directory, not a store file")
    if not (path.exists() or store.journal_path.exists() or store.quarantine_path.exists()):
        return _fail(2, f"no store at {path} (neither the file nor its journal exists)")
    try:
        state: NodeState[Any] = store.load_state_sync()
    except StoreError as exc:
        return _fail(1, str(exc))
    except OSError as exc:
        return _fail(1, f"cannot read {path}: {exc}")
    if args.json:
        print(json.dumps(as_json(state, str(path), store.codec), indent=1, sort_keys=True))
    else:
        print("\n".join(as_text(state, str(path))))
    return 0


def _fail(status: int, message: str) -> int:
    print(f"{_PROG}: error: {message}", file=sys.stderr)
    return status


def _slot_json(slot: StandbySlot[Any], codec: Any) -> dict[str, Any]:
    body: dict[str, Any] = codec.to_dict(slot)
    body.pop("spec", None)  # the consumer's spec: not the operator's business here
    return body


def as_json(state: NodeState[Any], path: str, codec: Any) -> dict[str, Any]:
    """The ``--json`` document: the store's path and its three tables."""
    return {
        "store": path,
        "slots": [_slot_json(s, codec) for s in sorted(state.slots, key=_key)],
        "intents": [intent_to_json(i) for i in sorted(state.intents, key=_key)],
        "primaries": [primary_to_json(p) for p in sorted(state.primaries, key=_key)],
    }


def _key(record: Any) -> str:
    return str(record.workload_id)


def _when(at: float) -> str:
    if at == float("inf"):
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1000):03d}Z"


def _rows(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    return [
        "  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]


def as_text(state: NodeState[Any], path: str) -> list[str]:
    """The readable form: a summary line, then one table per kind of record."""
    slots = sorted(state.slots, key=_key)
    intents = sorted(state.intents, key=_key)
    primaries = sorted(state.primaries, key=_key)
    lines = [
        f"{path}: {len(slots)} standby slots, {len(intents)} promotion intents, "
        f"{len(primaries)} primary records (times in UTC)"
    ]
    if slots:
        lines.append("standby slots:")
        lines += _rows(
            ("workload", "primary", "index", "epoch", "reserved", "expires"),
            [
                (
                    s.workload_id,
                    s.primary,
                    f"{s.standby_index} of {s.standby_count}",
                    str(s.epoch),
                    _when(s.created_at),
                    _when(s.expires_at),
                )
                for s in slots
            ],
        )
    if intents:
        lines.append("promotion intents (decided before the spawn; a spent one is given up):")
        lines += _rows(
            ("workload", "epoch", "token", "lease end", "recorded", "expires", "spent"),
            [
                (
                    i.workload_id,
                    str(i.epoch),
                    str(i.fencing_token),
                    _when(i.lease_end),
                    _when(i.recorded_at),
                    _when(i.expires_at),
                    "yes" if i.spent else "no",
                )
                for i in intents
            ],
        )
    if primaries:
        lines.append("primary records:")
        lines += _rows(
            ("workload", "epoch", "token", "standbys", "started", "ended", "expires"),
            [
                (
                    p.workload_id,
                    str(p.epoch),
                    str(p.fencing_token),
                    ",".join(p.standbys) or "-",
                    "yes" if p.started else "no",
                    p.ended or "-",
                    _when(p.expires_at),
                )
                for p in primaries
            ],
        )
    return lines
