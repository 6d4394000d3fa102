"""``python -m standby timeline EVENTS... [--svg FILE] [--workload W]``: what real nodes did.

Reads the event logs that nodes wrote (``StandbyNode(event_log=PATH)``, one
per node; a restarted node appends to its own) and prints their events
merged in time order, or, with ``--svg``, draws the same picture the
simulator draws (:func:`~standby.testing.simulation._svg.draw_timeline`):
one lane per provider, named after the stem of its log file
(``primary.events`` -> ``primary``; by its identity when one file holds the
events of several providers), with the workload's runs and their
fencing tokens, the last lease end each run was handed, heartbeats,
claims, restarts and the end of a log that stopped without a clean close
(a killed node), the silence after a silenced primary's last heartbeat,
and a red band where two runs overlapped.

What a picture can only infer from the logs: a run whose node's log ended
(or that was still running when the log closed) is drawn up to its last
lease end, where the runtime stops it by itself (guarantee 4), or to the
end of the picture when that lease end lies beyond it.

Exit status: 0, or 2 for bad arguments, a log that cannot be read or is not
an event log, or a workload that is not in the logs (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..adapters.memory import RunInterval, RuntimeEvent
from ..core._models import TOKEN_EPOCH_STRIDE
from ..node._eventlog import CLOSED, OPENED, read_event_log
from ..testing.simulation._history import Claim, FaultMark, RunHistory
from ..testing.simulation._svg import draw_timeline

__all__ = ["add_arguments", "history_of", "run", "text_lines"]

_PROG = "python -m standby timeline"
_ENDED = frozenset({"ContainerStopped", "ContainerExited"})
#: What a restarted node did with a workload whose container is then gone.
_GONE = ("stopped", "fenced")


class _Bad(Exception):
    """Bad input: one line, exit status 2."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``timeline`` command's arguments."""
    parser.add_argument("events", nargs="+", help="event logs written by nodes (event_log=PATH)")
    parser.add_argument("--svg", metavar="FILE", help="draw the picture into FILE")
    parser.add_argument(
        "--workload", metavar="W", help="the workload to show (needed when the logs hold several)"
    )


def run(args: argparse.Namespace) -> int:
    """Carry out the ``timeline`` command; returns the exit status."""
    try:
        logs = _read(args.events)
        workload = _chosen(logs, args.workload, drawing=args.svg is not None)
        if args.svg is None:
            print("\n".join(text_lines(logs, workload)))
            return 0
        assert workload is not None
        history, silence, captions = history_of(logs, workload)
        title, summary = _headline(logs, history, workload)
        svg = draw_timeline(
            history, title=title, summary=summary, silence=silence, captions=captions
        )
        _write(args.svg, svg)
    except _Bad as exc:
        print(f"{_PROG}: error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.svg}: {len(history.providers)} lanes, {len(history.runs)} runs of {workload}")
    return 0


def _chosen(logs: Sequence[Log], workload: str | None, *, drawing: bool) -> str | None:
    """The workload to show: the one asked for, or the only one when drawing."""
    workloads = _workloads(logs)
    found = ", ".join(sorted(workloads)) or "none"
    if workload is not None and workload not in workloads:
        raise _Bad(f"no event of workload {workload!r} in these logs (found: {found})")
    if workload is None and drawing:
        if len(workloads) != 1:
            raise _Bad(f"choose the workload to draw with --workload (found: {found})")
        [workload] = workloads
    return workload


def _write(path: str, svg: str) -> None:
    try:
        Path(path).write_text(svg, encoding="utf-8")
    except OSError as exc:
        raise _Bad(f"cannot write {path}: {exc}") from None


#: One log: its lane name (the file's stem) and its records.
Log = tuple[str, list[dict[str, Any]]]


def _read(paths: Sequence[str]) -> list[Log]:
    logs = []
    for path in paths:
        try:
            records = read_event_log(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise _Bad(f"cannot read {path}: {exc}") from None
        except ValueError as exc:
            raise _Bad(str(exc)) from None
        if not records:
            raise _Bad(f"{path} holds no event")
        providers = list(dict.fromkeys(r["provider"] for r in records))
        stem = Path(path).name.split(".")[0] or path
        for provider in providers:
            lane = stem if len(providers) == 1 else provider
            logs.append((lane, [r for r in records if r["provider"] == provider]))
    return logs


def _workloads(logs: Sequence[Log]) -> set[str]:
    return {
        r["workload"]
        for _, records in logs
        for r in records
        if isinstance(r.get("workload"), str) and "," not in r["workload"]
    }


def text_lines(logs: Sequence[Log], workload: str | None = None) -> list[str]:
    """Every record of every log, merged in time order (only ``workload``'s and the nodes')."""
    start = min(r["time"] for _, records in logs for r in records)
    rows = []
    width = max(len(name) for name, _ in logs)
    for name, records in logs:
        for r in records:
            subject = r.get("workload")
            if workload is not None and subject is not None and workload not in subject.split(","):
                continue
            message = r.get("message") or _frame(r)
            rows.append(
                (r["time"], f"{name:<{width}}  {r['event']:<22} {subject or '-':<12} {message}")
            )
        if records[-1]["event"] != CLOSED:
            rows.append((records[-1]["time"], f"{name:<{width}}  (log ends without a clean stop)"))
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(start))
    lines = [f"t=0 is {stamp}"]
    lines += [f"{at - start:+10.3f}s  {text}" for at, text in sorted(rows, key=lambda x: x[0])]
    return lines


def _frame(record: dict[str, Any]) -> str:
    if record["event"] == OPENED:
        return "node started"
    if record["event"] == CLOSED:
        return "node stopped"
    return ""


class _Runs:
    """The runs of one workload on one provider, as its log tells them."""

    def __init__(self, name: str, base: float, out: list[tuple[RunInterval, float | None]]):
        self.name = name
        self.base = base
        self.out = out
        self.open: dict[int, tuple[float, float | None]] = {}  # token -> (start, lease end)

    def start(self, at: float, token: int, lease_end: float | None) -> None:
        self.open[token] = (at, lease_end)

    def renew(self, token: int, lease_end: float) -> None:
        if token in self.open:
            self.open[token] = (self.open[token][0], lease_end)

    def end(self, at: float, token: int | None, workload: str) -> None:
        for held in [t for t in self.open if token is None or t == token]:
            start, lease_end = self.open.pop(held)
            self._keep(workload, held, start, at, lease_end)

    def close(self, until: float, workload: str) -> None:
        """The log is over: what still runs ends at its lease end (the runtime stops it)."""
        for held, (start, lease_end) in sorted(self.open.items()):
            end = None if lease_end is None or lease_end - self.base > until else lease_end
            self._keep(workload, held, start, None if end is None else end - self.base, lease_end)
        self.open.clear()

    def _keep(
        self, workload: str, token: int, start: float, end: float | None, lease: float | None
    ) -> None:
        handle = len(self.out) + 1
        self.out.append((RunInterval(self.name, workload, token, handle, start, end), lease))


def history_of(logs: Sequence[Log], workload: str) -> tuple[RunHistory, float, dict[str, str]]:
    """The :class:`RunHistory` of ``workload`` in ``logs``, the timing's silence, the captions."""
    base = min(r["time"] for _, records in logs for r in records)
    until = max(r["time"] for _, records in logs for r in records) - base
    names: list[str] = []
    for name, _ in logs:
        if name not in names:
            names.append(name)
    runs: list[tuple[RunInterval, float | None]] = []
    beats: list[tuple[float, str]] = []
    claims: list[Claim] = []
    faults: list[FaultMark] = []
    silence = 0.0
    first_start: dict[str, tuple[float, bool]] = {}
    for name, records in logs:
        lane = _Runs(name, base, runs)
        last = None
        for r in records:
            at = r["time"] - base
            kind = r["event"]
            if kind == OPENED:
                silence = silence or float(r.get("timing", {}).get("silence", 0.0))
                if last is not None:
                    if last["event"] != CLOSED:
                        faults.append(_killed(name, last["time"] - base))
                    faults.append(FaultMark("restart", (name,), at, at, "node started again"))
            elif kind == "HeartbeatPublished" and r.get("acked"):
                beats.append((at, name))
            last = r
            if r.get("workload") != workload:
                continue
            if kind == "ContainerStarting":
                first_start.setdefault(name, (at, bool(r.get("promotion"))))
            elif kind == "ContainerStarted" and r.get("ok"):
                lane.start(at, int(r["fencing_token"]), r.get("lease_end"))
            elif kind == "LeaseRenewed":
                lane.renew(int(r["fencing_token"]), float(r["lease_end"]))
            elif kind in _ENDED or (
                kind == "Reconciled" and r.get("action") in ("stopped", "fenced")
            ):
                lane.end(at, r.get("fencing_token"), workload)
            elif kind == "ClaimPublished" and not r.get("withdrawn") and r.get("acked"):
                token = int(r["fencing_token"])
                claims.append(Claim(at, name, int(r["epoch"]), token % TOKEN_EPOCH_STRIDE))
        if last is not None and last["event"] != CLOSED:
            faults.append(_killed(name, last["time"] - base))
        lane.close(until, workload)
    primaries = sorted((at, n) for n, (at, promoted) in first_start.items() if not promoted)
    order = [n for _, n in primaries] + [n for n in names if n not in dict(primaries).values()]
    captions = {
        n: "primary at start" if n in dict(primaries).values() else "standby" for n in order
    }
    intervals = sorted((r for r, _ in runs), key=lambda r: (r.start, r.host))
    events = []
    for interval, lease in runs:
        if lease is not None:
            detail = f"lease end {lease}"
            events.append(_event(interval, "renewed", interval.start, detail))
            if interval.end is not None and abs(lease - base - interval.end) < 1e-9:
                events.append(_event(interval, "expired", interval.end, ""))
    history = RunHistory(
        until=until,
        providers=tuple(order),
        runs=tuple(intervals),
        runtime_events=tuple(events),
        heartbeats=tuple(sorted(beats)),
        claims=tuple(claims),
        faults=tuple(faults),
        two_live=tuple(_overlaps(intervals, until)),
        base=base,
    )
    return history, silence, captions


def _killed(name: str, at: float) -> FaultMark:
    return FaultMark("kill", (name,), at, at, "the log ends without a clean stop")


def _event(run: RunInterval, kind: Any, at: float, detail: str) -> RuntimeEvent:
    return RuntimeEvent(at, run.host, kind, run.workload_id, run.fencing_token, run.handle, detail)


def _overlaps(runs: Sequence[RunInterval], until: float) -> list[tuple[float, float]]:
    """Where runs on two providers overlapped: ``(start, end)`` of each such window."""
    windows = []
    for i, one in enumerate(runs):
        for other in runs[i + 1 :]:
            if one.host != other.host and one.overlaps(other):
                end = min(until if r.end is None else r.end for r in (one, other))
                windows.append((max(one.start, other.start), end))
    return sorted(windows)


def _headline(logs: Sequence[Log], history: RunHistory, workload: str) -> tuple[str, str]:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(history.base))
    title = (
        f"Event logs of {len(history.providers)} nodes: workload {workload}, "
        f"t=0 at {stamp}, until t={history.until:.1f} s"
    )
    promotions = sum(
        1
        for _, records in logs
        for r in records
        if r["event"] == "PromotedHere" and r.get("workload") == workload
    )
    two_live = sum(end - start for start, end in history.two_live)
    summary = (
        f"runs {len(history.runs)}, promotions {promotions}, "
        f"two live for {two_live:.1f} s (as the logs tell it)"
    )
    return title, summary
