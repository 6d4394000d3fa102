"""The node's events as JSON lines: the file a :class:`StandbyNode` writes, and reading it back.

``StandbyNode(event_log=PATH)`` appends one JSON object per line to
``PATH`` for every public node event (:data:`~standby.node.NodeEvent`), so
that what a real node did can be read, searched and drawn afterwards
(``python -m standby timeline``). Each line has these fields first:

``time``
    the node's wall-clock time of the event (Unix seconds);
``provider``
    the node's canonical identity;
``event``
    the event's class name (``"ClaimPublished"``, ``"PromotedHere"``, ...);
``workload``
    the workload it is about (``null`` for an event about the whole node;
    a comma-separated list for one about several);
``epoch``
    the epoch it is about, when it has one;
``message``
    the event's own one-line description (the text of its log line);

followed by the event's other fields under their own names (``fencing_token``,
``acked``, ``lease_end``, ...). Sets become sorted lists, enumerations
their values, infinite numbers ``null``.

Two records frame each run of the node: ``LogOpened`` when it starts (with
``format``, ``version`` and the ``timing`` it runs with: ``silence``,
``lease``, ``heartbeat_interval``, ``write_quorum``, ``relay_count``) and
``LogClosed`` when it stops cleanly. A run that ends without ``LogClosed``
was killed. The file is opened for appending, so a restarted node adds its
next run after the last one.

Writing never stops the node: a line that cannot be written is counted
(``event_log_errors``) and logged, and the node goes on. Lines are written
and flushed one at a time, not fsynced: the log is for people, the store is
what the node relies on.
"""

from __future__ import annotations

import enum
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Final

import attrs

from ..core._timing import Timing
from ._events import NodeEvent

__all__ = [
    "CLOSED",
    "EVENT_LOG_FORMAT",
    "EVENT_LOG_VERSION",
    "OPENED",
    "EventLog",
    "event_record",
    "read_event_log",
]

#: The ``format`` of a ``LogOpened`` record.
EVENT_LOG_FORMAT: Final = "standby.events"
#: The record layout this module writes and reads.
EVENT_LOG_VERSION: Final = 1
#: The record written when the node starts, and when it stops cleanly.
OPENED: Final = "LogOpened"
CLOSED: Final = "LogClosed"

_COMMON: Final = ("time", "provider", "event", "workload", "epoch", "message")


def _plain(value: Any) -> Any:
    """``value`` as plain JSON: enums by value, sets sorted, infinities and NaN as ``None``."""
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, (frozenset, set)):
        return sorted(_plain(v) for v in value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def event_record(event: NodeEvent, provider: str) -> dict[str, Any]:
    """The JSON object that stands for ``event`` in an event log (see the module docstring)."""
    fmt, args = event.message()
    record: dict[str, Any] = {
        "time": event.at,
        "provider": provider,
        "event": type(event).__name__,
        "workload": event.subject(),
    }
    epoch = getattr(event, "epoch", None)
    if epoch is not None:
        record["epoch"] = epoch
    record["message"] = fmt % args
    for field in attrs.fields(type(event)):
        if field.name not in ("at", "workload_id", "epoch"):
            record[field.name] = _plain(getattr(event, field.name))
    return record


class EventLog:
    """Appends a node's events to ``path`` as JSON lines (see the module docstring).

    ``on_error`` is called with the exception when a line cannot be written;
    nothing here raises.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        provider: str,
        timing: Timing,
        *,
        clock: Callable[[], float],
        on_error: Callable[[BaseException], None],
    ) -> None:
        self.path = Path(path)
        self.provider = provider
        self.timing = timing
        self.clock = clock
        self.on_error = on_error
        self._file: IO[str] | None = None

    def __repr__(self) -> str:
        return f"EventLog({str(self.path)!r})"

    def open(self) -> None:
        """Start a run of the node: the ``LogOpened`` record."""
        timing = self.timing
        self._line(
            {
                "time": self.clock(),
                "provider": self.provider,
                "event": OPENED,
                "format": EVENT_LOG_FORMAT,
                "version": EVENT_LOG_VERSION,
                "timing": {
                    "silence": timing.silence,
                    "lease": timing.lease,
                    "heartbeat_interval": timing.heartbeat_interval,
                    "write_quorum": timing.write_quorum,
                    "relay_count": timing.relay_count,
                },
            }
        )

    def write(self, event: NodeEvent) -> None:
        """Append ``event``."""
        try:
            record = event_record(event, self.provider)
        except (TypeError, ValueError) as exc:  # an event whose message does not format
            self.on_error(exc)
            return
        self._line(record)

    def close(self) -> None:
        """End a clean run of the node: the ``LogClosed`` record; the file is closed."""
        self._line({"time": self.clock(), "provider": self.provider, "event": CLOSED})
        file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except OSError as exc:
                self.on_error(exc)

    def _line(self, record: dict[str, Any]) -> None:
        try:
            text = json.dumps(record, allow_nan=False, default=str)
            if self._file is None:
                self._file = self.path.open("a", encoding="utf-8")
            self._file.write(text + "\n")
            self._file.flush()
        except (OSError, TypeError, ValueError) as exc:
            self.on_error(exc)


def _records(path: Path, lines: Sequence[str]) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            if all(not rest.strip() for rest in lines[number:]):
                return  # a torn last line: the process died while writing it
            raise ValueError(f"{path}:{number}: not a JSON line ({exc})") from None
        problem = _problem(record)
        if problem is not None:
            raise ValueError(f"{path}:{number}: not a standby event record: {problem}")
        yield record


def _problem(record: Any) -> str | None:
    if not isinstance(record, dict):
        return "not a JSON object"
    time = record.get("time")
    if isinstance(time, bool) or not isinstance(time, (int, float)) or not math.isfinite(time):
        return f"`time` must be a number of seconds, got {time!r}"
    for key in ("provider", "event"):
        if not isinstance(record.get(key), str) or not record[key]:
            return f"`{key}` must be a non-empty string, got {record.get(key)!r}"
    if record["event"] == OPENED:
        version = record.get("version")
        if isinstance(version, int) and version > EVENT_LOG_VERSION:
            return (
                f"written in layout version {version}; this standby reads up to "
                f"{EVENT_LOG_VERSION}: upgrade standby"
            )
    return None


def read_event_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of the event log at ``path``, in file order.

    Raises :class:`OSError` when the file cannot be read and
    :class:`ValueError` naming the file and line for one that is not an
    event log. A torn last line (the node was killed while writing it) is
    left out.
    """
    where = Path(path)
    text = where.read_text(encoding="utf-8", errors="strict")
    return list(_records(where, text.splitlines()))
