"""The timeline pictures of ``docs/timeline.md``, drawn from simulations at docs build time.

:func:`timelines` runs the three scenarios of the page (a crash, a handover
and a partition) and returns their SVG documents by file name;
:func:`write_timelines` writes them to a directory. The page refers to
them as ``timelines/<name>.svg``, so a docs build that writes them under
``<docs or site dir>/timelines/`` (an mkdocs hook can add them as generated
files) shows the pictures of the code it builds. Run as a script to write
them to a directory: ``python docs/_timelines.py DIR``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: The page's scenarios: file name -> what it shows.
SCENARIOS = {
    "crash.svg": "the primary's host crashes at t=600 s",
    "handover.svg": "the primary hands the workload over at t=600 s",
    "partition.svg": "the primary is cut off from every relay at t=600 s for 900 s",
}


def _standby() -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def timelines() -> dict[str, str]:
    """Every picture of the page, ``{file name: SVG text}``; the same bytes each time."""
    _standby()
    from standby.testing import Simulation, SimulationReport

    def crash() -> SimulationReport:
        return Simulation(seed=3).crash(600, "primary").run(until=1200)

    def handover() -> SimulationReport:
        return Simulation(seed=6).handover(600, "primary").run(until=1200)

    def partition() -> SimulationReport:
        return Simulation(seed=4).partition(600, "primary", duration=900).run(until=1800)

    runs: dict[str, Callable[[], SimulationReport]] = {
        "crash.svg": crash,
        "handover.svg": handover,
        "partition.svg": partition,
    }
    return {name: run().to_svg() for name, run in runs.items()}


def write_timelines(directory: str | Path) -> list[Path]:
    """Write every picture of the page into ``directory`` (created if need be)."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, svg in timelines().items():
        path = target / name
        path.write_text(svg, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_timelines(sys.argv[1] if len(sys.argv) > 1 else "site/timelines"):
        print(path)
