"""What a run looked like, kept for drawing it: runs, leases, heartbeats, claims, faults.

:class:`RunHistory` is what :meth:`SimulationReport.to_svg` draws from. The
simulation fills it as the run goes (faults through :meth:`FaultRecorder.mark`,
heartbeats as the relays store them) and freezes it into the report.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import attrs

from ...adapters.memory import RunInterval, RuntimeEvent
from ._report import BASE_TIME

if TYPE_CHECKING:
    from ._checkers import Disruption

__all__ = ["Claim", "FaultMark", "FaultRecorder", "LeaseEnd", "RunHistory", "SilenceWindow"]

#: Faults after which the standbys wait out a silence (when they hit the primary).
SILENCING = frozenset({"crash", "kill", "partition", "freeze"})

_LEASE = re.compile(r"^lease end (-?\d+(?:\.\d+)?)$")


@attrs.frozen
class FaultMark:
    """A fault as it happened: ``kind`` on the providers ``who`` from ``start`` to ``end``.

    ``kind`` is ``"crash"`` (the host died, containers and all), ``"kill"``
    (the node process died, its containers kept running), ``"restart"``,
    ``"freeze"``, ``"partition"``, ``"handover"``, or the lower-case name of
    another fault class (``"drop"``, ``"skewclock"``, ``"relayamnesia"``,
    ...). ``who`` is empty for a fault on the network or a relay. ``end``
    equals ``start`` for an instant and is ``math.inf`` for a fault still
    in force when the run ended.
    """

    kind: str
    who: tuple[str, ...]
    start: float
    end: float
    detail: str = ""

    @property
    def instant(self) -> bool:
        """Whether the fault happened at one instant rather than over a span."""
        return self.end == self.start


@attrs.frozen
class Claim:
    """A standby's claim on an epoch, once a quorum of relays acknowledged it."""

    at: float
    provider: str
    epoch: int
    standby_index: int


@attrs.frozen
class LeaseEnd:
    """The lease end a run was last granted (virtual time, on its host's clock).

    ``expired`` is true when the runtime stopped the container at that end.
    """

    run: RunInterval
    at: float
    expired: bool


@attrs.frozen
class SilenceWindow:
    """The wait after a primary's last heartbeat: ``start`` to ``start + timing.silence``.

    ``fault`` is what silenced the primary (a crash, a partition, ...).
    """

    provider: str
    start: float
    end: float
    fault: FaultMark


@attrs.frozen
class RunHistory:
    """The course of a run, as a picture of it needs it.

    ``runs`` are the workload's container runs (see
    :class:`~standby.adapters.memory.RunInterval`), ``runtime_events`` the
    workload's events in the shared runtime record (started, renewed,
    stopped, exited, expired), ``heartbeats`` the ``(at, provider)`` instant
    each heartbeat first reached a relay, ``two_live`` the windows the
    two-live checker reported, ``(start, end)``.
    """

    until: float
    providers: tuple[str, ...]
    runs: tuple[RunInterval, ...]
    runtime_events: tuple[RuntimeEvent, ...]
    heartbeats: tuple[tuple[float, str], ...]
    claims: tuple[Claim, ...]
    faults: tuple[FaultMark, ...]
    two_live: tuple[tuple[float, float], ...]
    #: The wall-clock time (Unix seconds) of t=0: lease ends in the runtime
    #: events are wall-clock times, drawn at ``lease end - base``.
    base: float = BASE_TIME

    def runs_of(self, provider: str) -> list[RunInterval]:
        """The runs on ``provider``'s host, in start order."""
        return [r for r in self.runs if r.host == provider]

    def heartbeats_of(self, provider: str) -> list[float]:
        """When ``provider``'s heartbeats reached a relay."""
        return [at for at, who in self.heartbeats if who == provider]

    def lease_ends(self) -> list[LeaseEnd]:
        """The last lease end granted to each run before it ended, in run order."""
        granted: dict[int, float] = {}
        expired: set[int] = set()
        for event in self.runtime_events:
            if event.handle is None:
                continue
            if event.kind == "expired":
                expired.add(event.handle)
            match = _LEASE.match(event.detail) if event.kind in ("started", "renewed") else None
            if match is not None:
                granted[event.handle] = float(match.group(1)) - self.base
        return [
            LeaseEnd(run, granted[run.handle], run.handle in expired)
            for run in self.runs
            if run.handle in granted
        ]

    def silence_windows(self, silence: float) -> list[SilenceWindow]:
        """For each fault that silenced a running primary: its last heartbeat, plus ``silence``."""
        out: list[SilenceWindow] = []
        for fault in self.faults:
            if fault.kind not in SILENCING:
                continue
            for provider in fault.who:
                running = any(
                    r.start <= fault.start and (r.end is None or r.end >= fault.start)
                    for r in self.runs_of(provider)
                )
                beats = [at for at in self.heartbeats_of(provider) if at <= fault.start]
                if running and beats:
                    out.append(SilenceWindow(provider, beats[-1], beats[-1] + silence, fault))
        return out


class _Mark:
    """A fault being recorded; a span ends when its disruption does (a heal moves it)."""

    __slots__ = ("detail", "disruption", "end", "kind", "start", "who")

    def __init__(
        self,
        kind: str,
        who: tuple[str, ...],
        start: float,
        end: float,
        disruption: Disruption | None,
        detail: str,
    ) -> None:
        self.kind = kind
        self.who = who
        self.start = start
        self.end = end
        self.disruption = disruption
        self.detail = detail

    def frozen(self, now: float) -> FaultMark:
        end = self.end if self.disruption is None else self.disruption.end
        if end > now:
            end = math.inf
        return FaultMark(self.kind, self.who, self.start, end, self.detail)


class FaultRecorder:
    """The faults and heartbeats a simulation records for its :class:`RunHistory`."""

    def __init__(self) -> None:
        self._marks: list[_Mark] = []
        self._beats: dict[tuple[str, float], float] = {}

    def mark(
        self,
        kind: str,
        who: Iterable[str],
        at: float,
        *,
        end: float | None = None,
        disruption: Disruption | None = None,
        detail: str = "",
    ) -> None:
        """Record a fault at ``at``, until ``end`` or until ``disruption`` ends."""
        stop = at if end is None else end
        self._marks.append(_Mark(kind, tuple(who), at, stop, disruption, detail))

    def heartbeat(self, provider: str, stamped: float, at: float) -> None:
        """A relay stored ``provider``'s heartbeat stamped ``stamped`` (the first store counts)."""
        self._beats.setdefault((provider, stamped), at)

    def history(
        self,
        now: float,
        providers: Sequence[str],
        runs: Sequence[RunInterval],
        events: Iterable[RuntimeEvent],
        claims: Iterable[tuple[float, str, int, int]],
        two_live: Iterable[tuple[float, float]],
    ) -> RunHistory:
        """The history up to ``now``."""
        beats = sorted((at, who) for (who, _), at in self._beats.items() if at <= now)
        return RunHistory(
            until=now,
            providers=tuple(providers),
            runs=tuple(runs),
            runtime_events=tuple(e for e in events if e.at <= now),
            heartbeats=tuple(beats),
            claims=tuple(Claim(*c) for c in claims if c[0] <= now),
            faults=tuple(m.frozen(now) for m in self._marks),
            two_live=tuple(two_live),
        )
