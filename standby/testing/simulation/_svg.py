"""A simulation run drawn as an SVG timeline, written by hand (no plotting library).

One lane per provider, the primary first. In each lane: the workload's
container runs as bars labelled with their epoch and fencing token, the time
the host was frozen hatched over them, the last lease end each run was
granted, the heartbeats that reached a relay as ticks, the silence after the
last heartbeat of a primary that a fault cut off, the claims, and the
faults (a cross for a crash or a kill, shaded spans for partitions and
freezes). A window in which two containers ran at once is a red band across
every lane. A time axis with ticks runs along the bottom.

One function draws: :func:`draw_timeline` takes a :class:`RunHistory`, a
title, a summary line and the timing's silence. :func:`timeline_svg` calls
it for a simulation report, and ``python -m standby timeline`` for the
event logs of real nodes.

The output depends only on its input: numbers are written with fixed
precision and everything is drawn in a fixed order, so one seed gives the
same bytes. Elements carry classes (``lane``, ``run``, ``two-live``, ...)
and ``data-*`` attributes so that tests and style sheets can find them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from xml.sax.saxutils import escape, quoteattr

from ...core._models import TOKEN_EPOCH_STRIDE
from ._history import FaultMark, RunHistory
from ._report import SimulationReport

__all__ = ["draw_timeline", "timeline_svg"]

WIDTH = 1200
LEFT = 120  # room for the lane names
RIGHT = 40
TOP = 62  # title and summary
LANE = 78
WORLD = 30  # the strip for faults of the network or a relay
AXIS = 40
LEGEND = 66

FONT = 12
SMALL = 11
CHAR = 0.58  # average advance of a character, in font sizes (for placing labels)

_STYLE = """
text { font-family: "DejaVu Sans", Verdana, Arial, sans-serif; fill: #1f2328; }
.title { font-size: 15px; font-weight: bold; }
.summary { font-size: 12px; fill: #3d444d; }
.name { font-size: 13px; font-weight: bold; }
.label { font-size: 11px; }
.small { font-size: 10px; fill: #3d444d; }
.lane-bg { fill: #eef1f4; fill-opacity: 0.55; }
.lane-bg.odd { fill: #dde3e9; fill-opacity: 0.55; }
.run rect { fill: #4c78a8; stroke: #2f4b6e; stroke-width: 1; }
.run.promoted rect { fill: #54a24b; stroke: #2f6b2a; }
.frozen { fill: url(#hatch-frozen); stroke: #5a6b7b; stroke-width: 0.8; }
.partition { fill: url(#hatch-partition); stroke: #9a6b00; stroke-width: 0.8; }
.fault-span { fill: #c9b8e6; fill-opacity: 0.45; stroke: #6f4ea8; stroke-width: 0.8; }
.lease line { stroke: #1f2328; stroke-width: 1.5; stroke-dasharray: 3 2; }
.heartbeat { stroke: #6e7781; stroke-width: 1; }
.silence rect { fill: #f2b233; fill-opacity: 0.55; stroke: #b07c0c; stroke-width: 0.8; }
.claim path { fill: #f58518; stroke: #8a4300; stroke-width: 1; }
.crash path { stroke: #c0392b; stroke-width: 3; stroke-linecap: round; }
.kill path { stroke: #8e44ad; stroke-width: 3; stroke-linecap: round; }
.instant path { stroke: #4b2a85; stroke-width: 3; fill: none; stroke-linecap: round; }
.two-live { fill: #d62728; fill-opacity: 0.22; stroke: #d62728; stroke-width: 1.5; }
.two-live-label { font-size: 12px; font-weight: bold; fill: #b01f1f; }
.axis line, .axis path { stroke: #57606a; stroke-width: 1; }
.grid { stroke: #d0d7de; stroke-width: 1; stroke-dasharray: 2 3; }
"""

_DEFS = (
    "<defs>"
    '<pattern id="hatch-frozen" width="6" height="6" patternUnits="userSpaceOnUse" '
    'patternTransform="rotate(45)"><rect width="6" height="6" fill="#dfe6ee"/>'
    '<line x1="0" y1="0" x2="0" y2="6" stroke="#5a6b7b" stroke-width="2"/></pattern>'
    '<pattern id="hatch-partition" width="8" height="8" patternUnits="userSpaceOnUse" '
    'patternTransform="rotate(-45)"><rect width="8" height="8" fill="#fff4d6"/>'
    '<line x1="0" y1="0" x2="0" y2="8" stroke="#d9a21b" stroke-width="2"/></pattern>'
    "</defs>"
)


def _n(value: float) -> str:
    """A coordinate with one decimal, without a trailing ``.0``."""
    text = f"{value:.1f}"
    if text.endswith(".0"):
        text = text[:-2]
    return "0" if text == "-0" else text


def _t(value: float) -> str:
    """A virtual time for people: seconds with one decimal."""
    return f"{value:.1f} s"


def _width(text: str, size: float) -> float:
    return len(text) * size * CHAR


def _tick_step(span: float, target: int = 10) -> float:
    """A round step (1, 2 or 5 times a power of ten) giving about ``target`` ticks."""
    raw = span / target
    power = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 5.0, 10.0):
        if raw <= factor * power:
            return factor * power
    return 10 * power  # pragma: no cover - the loop always returns


class _Labels:
    """One row of labels: collected, then placed left to right without overlapping."""

    def __init__(self, y: float, limit: float = WIDTH - RIGHT) -> None:
        self.y = y
        self.limit = limit
        self.wanted: list[tuple[float, int, str, str, float]] = []

    def add(self, x: float, text: str, cls: str = "small", size: float = 10) -> None:
        self.wanted.append((x, len(self.wanted), text, cls, size))

    def flush(self, canvas: _Canvas) -> None:
        reach = -math.inf
        for x, _, text, cls, size in sorted(self.wanted):
            width = _width(text, size)
            at = min(max(x, reach + 6), self.limit - width)
            reach = max(reach, at + width)
            canvas.text(at, self.y, text, cls)
        self.wanted = []


class _Canvas:
    def __init__(
        self, history: RunHistory, silence: float, captions: Mapping[str, str] | None
    ) -> None:
        self.history = history
        self.silence = silence
        self.captions = captions
        self.until = max(history.until, 1e-9)
        self.plot = WIDTH - LEFT - RIGHT
        self.out: list[str] = []

    def x(self, t: float) -> float:
        return LEFT + self.plot * min(max(t, 0.0), self.until) / self.until

    def add(self, text: str) -> None:
        self.out.append(text)

    def text(self, x: float, y: float, text: str, cls: str, anchor: str = "start") -> None:
        extra = "" if anchor == "start" else f' text-anchor="{anchor}"'
        self.add(f'<text x="{_n(x)}" y="{_n(y)}" class="{cls}"{extra}>{escape(text)}</text>')

    def rect(self, x0: float, x1: float, y: float, h: float, cls: str, tip: str = "") -> None:
        width = max(x1 - x0, 1.5)
        title = f"<title>{escape(tip)}</title>" if tip else ""
        self.add(
            f'<rect class="{cls}" x="{_n(x0)}" y="{_n(y)}" width="{_n(width)}" '
            f'height="{_n(h)}">{title}</rect>'
        )


def timeline_svg(report: SimulationReport) -> str:
    """The run of ``report`` as a standalone SVG document (a string).

    Raises :class:`ValueError` for a report without a history (one not made
    by :meth:`Simulation.run <standby.testing.Simulation.run>`).
    """
    history = report.history
    if history is None:
        raise ValueError("this report has no run history to draw")
    return draw_timeline(
        history, title=_title(report), summary=_summary(report), silence=report.timing.silence
    )


def draw_timeline(
    history: RunHistory,
    *,
    title: str,
    summary: str,
    silence: float,
    captions: Mapping[str, str] | None = None,
) -> str:
    """``history`` as a standalone SVG document (a string): the one drawing of a run.

    ``title`` and ``summary`` are the two lines above the lanes; ``silence``
    is the timing's silence (the amber band after a silenced primary's last
    heartbeat); ``captions`` name each provider's role under its name
    (default: the first lane is the primary at t=0, the others standbys in
    order).
    """
    canvas = _Canvas(history, silence, captions)
    lanes_top = TOP + WORLD
    height = lanes_top + LANE * len(history.providers) + AXIS + LEGEND
    canvas.add(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label={quoteattr(title)}>'
    )
    canvas.add(f"<title>{escape(title)}</title>")
    canvas.add(f"<style>{_STYLE}</style>")
    canvas.add(_DEFS)
    canvas.add(f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>')
    canvas.text(LEFT, 22, title, "title")
    canvas.text(LEFT, 42, summary, "summary")
    bottom = lanes_top + LANE * len(history.providers)
    _grid(canvas, TOP, bottom)
    _world(canvas, TOP)
    for index, provider in enumerate(history.providers):
        _Lane(canvas, provider).draw(index, lanes_top + index * LANE)
    _two_live(canvas, TOP, bottom)
    _axis(canvas, bottom)
    _legend(canvas, bottom + AXIS)
    canvas.add("</svg>")
    return "\n".join(canvas.out) + "\n"


def _title(report: SimulationReport) -> str:
    timing = "safe timing" if report.timing.is_safe else "UNSAFE timing"
    return (
        f"Simulation, seed {report.seed}: {report.standbys} standbys, {report.relays} relays, "
        f"{timing}, until t={report.until:g} s"
    )


def _summary(report: SimulationReport) -> str:
    latency = "n/a" if report.failover_latency is None else _t(report.failover_latency)
    found = (
        "no violations"
        if report.ok
        else "violations: " + ", ".join(sorted({v.kind for v in report.violations}))
    )
    return (
        f"promotions {len(report.promotions)}, failover latency {latency}, "
        f"two live for {report.double_live_seconds:.1f} s, {found}"
    )


def _grid(canvas: _Canvas, top: float, bottom: float) -> None:
    step = _tick_step(canvas.until)
    canvas.add('<g class="grid-lines">')
    t = step
    while t < canvas.until - step / 100:
        x = _n(canvas.x(t))
        canvas.add(f'<line class="grid" x1="{x}" y1="{_n(top)}" x2="{x}" y2="{_n(bottom)}"/>')
        t += step
    canvas.add("</g>")


def _world(canvas: _Canvas, top: float) -> None:
    """The strip above the lanes: faults on the network or the relays."""
    canvas.add(f'<g class="world" transform="translate(0 {_n(top)})">')
    if any(not fault.who for fault in canvas.history.faults):
        canvas.text(LEFT - 10, 19, "network", "small", "end")
    labels = _Labels(20)
    for fault in canvas.history.faults:
        if fault.who:
            continue
        x0 = canvas.x(fault.start)
        tip = f"{fault.detail or fault.kind} at t={_t(fault.start)}"
        if fault.instant:
            canvas.add(
                f'<g class="fault instant" data-kind="{escape(fault.kind)}"><title>'
                f"{escape(tip)}</title>"
                f'<path d="M{_n(x0)} 8 l0 16 M{_n(x0 - 4)} 12 l4 -4 l4 4"/></g>'
            )
        else:
            x1 = canvas.x(fault.end)
            canvas.add(f'<g class="fault" data-kind="{escape(fault.kind)}">')
            canvas.rect(x0, x1, 8, 16, "fault-span", tip)
            canvas.add("</g>")
        label = _fault_name(fault)
        labels.add(x0 + 6, label)
    labels.flush(canvas)
    canvas.add("</g>")


def _fault_name(fault: FaultMark) -> str:
    names = {
        "freeze": "frozen",
        "skewclock": "clock skew",
        "stepclock": "clock step",
        "relayamnesia": "relay amnesia",
        "slowspawn": "slow start",
        "failspawn": "failing start",
    }
    name = names.get(fault.kind, fault.kind)
    if fault.kind == "partition":
        name += f" from {fault.detail}"
    if fault.kind == "freeze" and fault.detail == "running":
        name += " (node only)"
    return name


BAR_Y = 24.0
BAR_H = 20.0


class _Lane:
    """One provider's lane; each method draws one layer, back to front."""

    def __init__(self, canvas: _Canvas, provider: str) -> None:
        self.canvas = canvas
        self.history = canvas.history
        self.provider = provider
        self.faults = [f for f in canvas.history.faults if provider in f.who]
        self.above = _Labels(BAR_Y - 7)  # the label row over the bars
        self.below = _Labels(BAR_Y + BAR_H + 21)  # the row under the heartbeats

    def draw(self, index: int, top: float) -> None:
        canvas = self.canvas
        provider = self.provider
        parity = " odd" if index % 2 else ""
        canvas.add(
            f'<g class="lane" id="lane-{escape(provider)}" data-provider={quoteattr(provider)} '
            f'transform="translate(0 {_n(top)})">'
        )
        canvas.add(
            f'<rect class="lane-bg{parity}" x="{LEFT}" y="2" width="{canvas.plot}" '
            f'height="{LANE - 4}"/>'
        )
        canvas.text(LEFT - 10, BAR_Y + 14, provider, "name", "end")
        role = "primary at t=0" if index == 0 else f"standby {index - 1}"
        if canvas.captions is not None:
            role = canvas.captions.get(provider, "")
        canvas.text(LEFT - 10, BAR_Y + 30, role, "small", "end")
        self.spans()
        self.runs()
        self.instants()
        self.leases()
        self.heartbeats()
        self.silences()
        self.claims()
        self.above.flush(canvas)
        self.below.flush(canvas)
        canvas.add("</g>")

    def spans(self) -> None:
        """Partitions, freezes and other faults that last, behind the runs."""
        canvas = self.canvas
        for fault in self.faults:
            if fault.instant:
                continue
            cls = {"partition": "partition", "freeze": "frozen"}.get(fault.kind, "fault-span")
            ends = "the end" if fault.end == math.inf else f"t={_t(fault.end)}"
            name = _fault_name(fault)
            tip = f"{name} from t={_t(fault.start)} to {ends}"
            x0 = canvas.x(fault.start)
            canvas.add(f'<g class="fault" data-kind="{escape(fault.kind)}">')
            canvas.rect(x0, canvas.x(fault.end), BAR_Y - 4, BAR_H + 8, cls, tip)
            canvas.add("</g>")
            self.above.add(x0 + 3, name, "small", 10)

    def runs(self) -> None:
        """The container runs, with their tokens; a host frozen with them hatches them."""
        canvas = self.canvas
        history = self.history
        for run in history.runs_of(self.provider):
            end = history.until if run.end is None else run.end
            epoch = run.fencing_token // TOKEN_EPOCH_STRIDE
            label = f"epoch {epoch}, token {run.fencing_token}"
            cls = "run promoted" if epoch > 0 else "run"
            until = "still running" if run.end is None else f"to t={_t(run.end)}"
            tip = (
                f"{self.provider}: container with token {run.fencing_token} "
                f"from t={_t(run.start)} {until}"
            )
            x0 = canvas.x(run.start)
            data_end = "" if run.end is None else f"{run.end:.3f}"
            canvas.add(
                f'<g class="{cls}" data-token="{run.fencing_token}" '
                f'data-start="{run.start:.3f}" data-end="{data_end}" data-label="{label}">'
            )
            canvas.rect(x0, canvas.x(end), BAR_Y, BAR_H, "bar", tip)
            self.above.add(x0, label, "label", SMALL)
            canvas.add("</g>")
        for fault in self.faults:
            if fault.kind == "freeze" and not fault.instant and fault.detail != "running":
                canvas.rect(canvas.x(fault.start), canvas.x(fault.end), BAR_Y, BAR_H, "frozen")

    def instants(self) -> None:
        """Faults at one instant: a cross for a crash or a kill, an arrow for the others."""
        canvas = self.canvas
        cy = BAR_Y + BAR_H / 2
        for fault in self.faults:
            if not fault.instant:
                continue
            x = canvas.x(fault.start)
            name = _fault_name(fault)
            if fault.kind in ("crash", "kill"):
                shape = f"M{_n(x - 6)} {_n(cy - 6)} l12 12 M{_n(x + 6)} {_n(cy - 6)} l-12 12"
                cls = f"fault {fault.kind}"
            else:
                shape = f"M{_n(x)} {_n(cy - 12)} l0 24 M{_n(x - 5)} {_n(cy + 7)} l5 5 l5 -5"
                cls = "fault instant"
            canvas.add(
                f'<g class="{cls}" data-kind="{escape(fault.kind)}" data-at="{fault.start:.3f}">'
                f'<title>{escape(name)} at t={_t(fault.start)}</title><path d="{shape}"/></g>'
            )
            self.above.add(x + 8, name, "small", 10)

    def leases(self) -> None:
        """The last lease end each run was granted (a dashed line)."""
        canvas = self.canvas
        for lease in self.history.lease_ends():
            if lease.run.host != self.provider or lease.at > self.history.until:
                continue
            x = canvas.x(lease.at)
            what = "the lease ran out and the runtime stopped it" if lease.expired else "lease end"
            canvas.add(
                f'<g class="lease" data-at="{lease.at:.3f}" data-token="{lease.run.fencing_token}">'
                f"<title>{what} at t={_t(lease.at)} (token {lease.run.fencing_token})</title>"
                f'<line x1="{_n(x)}" y1="{_n(BAR_Y - 5)}" x2="{_n(x)}" '
                f'y2="{_n(BAR_Y + BAR_H + 5)}"/></g>'
            )
            text = "lease ran out" if lease.expired else "lease end"
            self.above.add(x + 3, text, "small", 10)

    def heartbeats(self) -> None:
        """A tick for each heartbeat that reached a relay."""
        canvas = self.canvas
        beats = self.history.heartbeats_of(self.provider)
        if not beats:
            return
        y = _n(BAR_Y + BAR_H + 3)
        path = " ".join(f"M{_n(canvas.x(at))} {y} l0 5" for at in beats)
        canvas.add(
            f'<path class="heartbeat" d="{path}"><title>{len(beats)} heartbeats reached a '
            f"relay, the last at t={_t(beats[-1])}</title></path>"
        )

    def silences(self) -> None:
        """From the last heartbeat of a primary a fault cut off, for ``timing.silence``."""
        canvas = self.canvas
        silence = canvas.silence
        for window in self.history.silence_windows(silence):
            if window.provider != self.provider:
                continue
            x0, x1 = canvas.x(window.start), canvas.x(window.end)
            canvas.add(
                f'<g class="silence" data-start="{window.start:.3f}" data-end="{window.end:.3f}">'
            )
            tip = (
                f"silence: the last heartbeat reached a relay at t={_t(window.start)}; "
                f"the standbys may act from t={_t(window.end)} (silence {silence:g} s)"
            )
            canvas.rect(x0, x1, BAR_Y + BAR_H + 11, 12, "band", tip)
            text = f"silence {silence:g} s from the last heartbeat"
            self.below.add(x1 + 4, text, "small", 10)
            canvas.add("</g>")

    def claims(self) -> None:
        """A diamond where the standby's claim on an epoch was acknowledged."""
        canvas = self.canvas
        cy = BAR_Y + BAR_H / 2
        for claim in self.history.claims:
            if claim.provider != self.provider:
                continue
            x = canvas.x(claim.at)
            canvas.add(
                f'<g class="claim" data-epoch="{claim.epoch}" data-at="{claim.at:.3f}"><title>'
                f"claim on epoch {claim.epoch} (index {claim.standby_index}) at "
                f't={_t(claim.at)}</title><path d="M{_n(x)} {_n(cy - 7)} l6 7 l-6 7 l-6 -7 z"/>'
                "</g>"
            )
            text = f"claim epoch {claim.epoch}"
            self.below.add(x - 6, text, "small", 10)


def _two_live(canvas: _Canvas, top: float, bottom: float) -> None:
    for start, end in canvas.history.two_live:
        x0, x1 = canvas.x(start), canvas.x(end)
        canvas.add(
            f'<g class="two-live-window" data-start="{start:.3f}" data-end="{end:.3f}">'
            f'<rect class="two-live" x="{_n(x0)}" y="{_n(top)}" width="{_n(max(x1 - x0, 2))}" '
            f'height="{_n(bottom - top)}"><title>two containers ran at once from '
            f"t={_t(start)} to t={_t(end)} ({end - start:.1f} s)</title></rect>"
        )
        text = f"two live for {end - start:.1f} s"
        x = min(x0 + 4, WIDTH - RIGHT - _width(text, FONT))
        canvas.text(x, top + 12, text, "two-live-label")
        canvas.add("</g>")


def _axis(canvas: _Canvas, top: float) -> None:
    step = _tick_step(canvas.until)
    canvas.add(f'<g class="axis" transform="translate(0 {_n(top)})">')
    canvas.add(f'<line x1="{LEFT}" y1="0" x2="{WIDTH - RIGHT}" y2="0"/>')
    count = math.floor(canvas.until / step + 1e-9)
    for i in range(count + 1):
        t = i * step
        x = _n(canvas.x(t))
        canvas.add(f'<line x1="{x}" y1="0" x2="{x}" y2="6"/>')
        canvas.text(canvas.x(t), 19, f"{t:g}", "label", "middle")
    canvas.text(LEFT - 10, 19, "t (s)", "small", "end")
    canvas.add("</g>")


def _legend(canvas: _Canvas, top: float) -> None:
    canvas.add(f'<g class="legend" transform="translate({LEFT} {_n(top)})">')
    x = y = 0.0
    items = (
        ('<rect x="0" y="4" width="18" height="10" fill="#4c78a8"/>', "run of the first primary"),
        ('<rect x="0" y="4" width="18" height="10" fill="#54a24b"/>', "run after a promotion"),
        ('<path d="M9 1 l6 8 l-6 8 l-6 -8 z" fill="#f58518"/>', "claim"),
        (
            '<rect x="0" y="4" width="18" height="10" fill="#f2b233" fill-opacity="0.55"/>',
            "silence",
        ),
        (
            '<line x1="9" y1="1" x2="9" y2="17" stroke="#1f2328" stroke-width="1.5" '
            'stroke-dasharray="3 2"/>',
            "lease end",
        ),
        ('<path d="M3 3 l12 12 M15 3 l-12 12" stroke="#c0392b" stroke-width="3"/>', "crash"),
        (
            '<path d="M3 3 l12 12 M15 3 l-12 12" stroke="#8e44ad" stroke-width="3"/>',
            "kill (containers kept)",
        ),
        (
            '<path d="M9 0 l0 18 M5 13 l4 4 l4 -4" stroke="#4b2a85" stroke-width="2.5" '
            'fill="none"/>',
            "handover, restart",
        ),
        (
            '<path d="M3 6 l0 5 M9 6 l0 5 M15 6 l0 5" stroke="#6e7781" stroke-width="1"/>',
            "heartbeats",
        ),
        ('<rect x="0" y="4" width="18" height="10" fill="url(#hatch-partition)"/>', "partition"),
        ('<rect x="0" y="4" width="18" height="10" fill="url(#hatch-frozen)"/>', "frozen"),
        (
            '<rect x="0" y="4" width="18" height="10" fill="#d62728" fill-opacity="0.35"/>',
            "two live",
        ),
    )
    for swatch, text in items:
        width = 24 + _width(text, 10) + 18
        if x + width > WIDTH - LEFT - RIGHT:
            x, y = 0.0, y + 22
        canvas.add(f'<g transform="translate({_n(x)} {_n(y + 8)})">{swatch}</g>')
        canvas.text(x + 24, y + 21, text, "small")
        x += width
    canvas.add("</g>")
