"""The quarantine of a slot file that cannot be read (failure mode 23).

:class:`~standby.JsonFileStore` calls :func:`quarantine` when its file
cannot be parsed: a marker, ``<name>.quarantined``, is written first (so a
crash in between leaves a store that refuses to start, never one that
starts empty), then the file is moved aside to ``<name>.corrupt-<n>`` and its
journal to ``<name>.corrupt-<n>.journal``. While the marker exists,
:func:`refuse_if_quarantined` raises :class:`~standby.StoreQuarantined` on
every load and save; :func:`accept_loss` removes it. The marker records what
the quarantined data held as far as it could be read, so the error and the
acceptance can name what is lost.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Final

from ...core._errors import StoreError, StoreQuarantined
from ._durable import atomic_write, free_name

__all__ = ["QUARANTINE_FORMAT", "accept_loss", "quarantine", "refuse_if_quarantined"]

#: The ``format`` marker of a quarantine marker file.
QUARANTINE_FORMAT: Final = "standby.quarantine"

_TABLES: Final = ("slots", "intents", "primaries")

_log = logging.getLogger("standby.store")


def quarantine(path: Path, journal_path: Path, marker_path: Path, reason: str) -> StoreError:
    """Quarantine the unreadable ``path`` (and its journal); the error to raise."""
    aside = free_name(path)
    journal_aside = aside.with_name(aside.name + ".journal")
    marker = {
        "format": QUARANTINE_FORMAT,
        "file": str(aside),
        "journal": str(journal_aside) if journal_path.exists() else None,
        "reason": reason,
        "lost": _readable_counts(path, journal_path),
        "at": time.time(),
    }
    try:
        atomic_write(marker_path, json.dumps(marker, indent=1, sort_keys=True).encode())
        os.replace(path, aside)
        if marker["journal"] is not None:
            os.replace(journal_path, journal_aside)
    except (OSError, StoreError) as exc:
        return StoreError(
            f"slot file {path} is corrupt ({reason}) and could not be quarantined: "
            f"{exc}. Nothing was loaded; the store refuses to start until this is fixed"
        )
    _log.error("slot file %s is corrupt (%s); quarantined to %s", path, reason, aside)
    return _quarantined(path, marker_path, marker, f"slot file {path} is corrupt ({reason})")


def refuse_if_quarantined(path: Path, marker_path: Path) -> None:
    """Raise :class:`~standby.StoreQuarantined` while ``marker_path`` exists."""
    marker = _read_marker(marker_path)
    if marker is not None:
        raise _quarantined(
            path,
            marker_path,
            marker,
            f"slot file {path} was quarantined earlier "
            f"({marker.get('reason', 'reason unknown')}; marker {marker_path})",
        )


def accept_loss(path: Path, marker_path: Path) -> str | None:
    """Remove the marker; a one-line account of what was lost (``None``: nothing was)."""
    marker = _read_marker(marker_path)
    if marker is None:
        return None
    lost = _describe_loss(marker)
    try:
        os.unlink(marker_path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StoreError(f"cannot remove quarantine marker {marker_path}: {exc}") from exc
    _log.warning("loss of %s accepted (%s): it held %s", marker.get("file"), path, lost)
    return f"accepted the loss of {marker.get('file', '?')}: it held {lost}"


def _quarantined(
    path: Path, marker_path: Path, marker: dict[str, Any], what: str
) -> StoreQuarantined:
    aside = str(marker.get("file", "?"))
    lost = _describe_loss(marker)
    return StoreQuarantined(
        f"{what}; moved to {aside} and quarantined. Nothing was loaded: it held {lost}. The "
        f"store refuses to start until the loss is accepted: inspect or restore {aside}, then "
        f"run `python -m standby store accept-loss {path}` (or call "
        "JsonFileStore.accept_loss())",
        path=str(path),
        quarantined=aside,
        marker=str(marker_path),
        lost=lost,
    )


def _read_marker(marker_path: Path) -> dict[str, Any] | None:
    """The quarantine marker, ``None`` when there is none (an unreadable one still counts)."""
    try:
        data = marker_path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return {"file": "?", "reason": f"marker unreadable: {exc}"}
    try:
        marker = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        marker = None
    if not isinstance(marker, dict):
        return {"file": "?", "reason": "marker unreadable"}
    return marker


def _readable_counts(path: Path, journal: Path) -> dict[str, Any] | None:
    """What a corrupt file and its journal hold as far as they parse.

    Entries per table (the journal lines of the file's generation replayed
    by workload id), the latest ``expires_at`` among them, and how many
    journal lines could not be read. ``None`` when nothing could be read.
    """
    try:
        document = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        document = None
    try:
        raw_lines = [line for line in journal.read_bytes().split(b"\n") if line.strip()]
    except OSError:
        raw_lines = []
    if not isinstance(document, dict):
        return {"journal_lines": len(raw_lines)} if raw_lines else None
    tables: dict[str, dict[Any, Any]] = {}
    for table in _TABLES:
        entries = document.get(table)
        if isinstance(entries, list):
            tables[table] = {_entry_key(e, i): e for i, e in enumerate(entries)}
    unread = 0
    for line in raw_lines:
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            record = None
        if not isinstance(record, dict):
            unread += 1
            continue
        if record.get("g") != document.get("journal"):
            continue
        for table, entries in tables.items():
            change = record.get(table)
            if not isinstance(change, dict):
                continue
            for workload_id in change.get("del", []) if isinstance(change.get("del"), list) else []:
                entries.pop(workload_id, None)
            puts = change.get("put", [])
            for position, entry in enumerate(puts if isinstance(puts, list) else []):
                entries[_entry_key(entry, (line, position))] = entry
    counts: dict[str, Any] = {"journal_lines": unread}
    latest: float | None = None
    for table, entries in tables.items():
        counts[table] = len(entries)
        for entry in entries.values():
            expires = entry.get("expires_at") if isinstance(entry, dict) else None
            if isinstance(expires, (int, float)) and not isinstance(expires, bool):
                latest = expires if latest is None else max(latest, expires)
    if latest is not None:
        counts["latest_expiry"] = latest
    return counts


def _entry_key(entry: Any, fallback: Any) -> Any:
    """A record's workload id (a sealed slot has none in clear: its position)."""
    workload_id = entry.get("workload_id") if isinstance(entry, dict) else None
    return workload_id if isinstance(workload_id, str) else ("#", fallback)


def _describe_loss(marker: dict[str, Any]) -> str:
    """What a quarantine marker says was lost, in one line."""
    lost = marker.get("lost")
    if not isinstance(lost, dict) or not any(t in lost for t in _TABLES):
        text = "an unknown number of slots, promotion intents and primary records (unparseable)"
    else:
        names = {
            "slots": "slot(s)",
            "intents": "promotion intent(s)",
            "primaries": "primary record(s)",
        }
        text = ", ".join(
            f"{lost[t] if isinstance(lost.get(t), int) else 'unknown'} {names[t]}" for t in _TABLES
        )
        latest = lost.get("latest_expiry")
        if isinstance(latest, (int, float)):
            text += f" (the latest expiring at {latest:.3f})"
    lines = lost.get("journal_lines") if isinstance(lost, dict) else None
    if isinstance(lines, int) and lines:
        text += f", plus {lines} unreadable journal line(s)"
    return text
