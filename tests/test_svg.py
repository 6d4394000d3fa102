"""The timeline picture of a simulation run: ``SimulationReport.to_svg`` and ``--svg``."""

from __future__ import annotations

import argparse
import functools
import importlib.util
import xml.etree.ElementTree as ET
from pathlib import Path

import attrs
import pytest

from standby import Timing
from standby.testing import Simulation, SimulationReport, timeline_svg
from standby.testing.simulation import _cli

SVG = "{http://www.w3.org/2000/svg}"


@functools.cache
def crash_report() -> SimulationReport:
    return Simulation(seed=3).crash(600, "primary").run(until=1200)


@functools.cache
def unsafe_report() -> SimulationReport:
    unsafe = Timing.unsafe_unchecked(lease=420.0, suspect_after=120.0)
    return Simulation(seed=25, timing=unsafe).partition(600, "primary").run(until=1800)


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return root


def classes(element: ET.Element) -> set[str]:
    return set(element.get("class", "").split())


def find(root: ET.Element, cls: str) -> list[ET.Element]:
    return [e for e in root.iter() if cls in classes(e)]


def texts(element: ET.Element) -> list[str]:
    return [t.text or "" for t in element.iter(f"{SVG}text")]


def lanes(root: ET.Element) -> dict[str, ET.Element]:
    return {lane.get("data-provider", ""): lane for lane in find(root, "lane")}


def test_one_lane_per_provider_in_order() -> None:
    root = parse(crash_report().to_svg())
    found = find(root, "lane")
    assert [lane.get("data-provider") for lane in found] == ["primary", "standby-0", "standby-1"]
    assert [lane.get("id") for lane in found] == [
        "lane-primary",
        "lane-standby-0",
        "lane-standby-1",
    ]


def test_crash_draws_each_run_with_its_token() -> None:
    report = crash_report()
    by_lane = lanes(parse(report.to_svg()))
    primary = find(by_lane["primary"], "run")
    standby = find(by_lane["standby-0"], "run")
    assert [r.get("data-token") for r in primary] == ["0"]
    assert [r.get("data-token") for r in standby] == ["1048576"]
    assert find(by_lane["standby-1"], "run") == []
    assert primary[0].get("data-end") == "600.000"
    assert standby[0].get("data-end") == ""  # still running at the end
    assert float(standby[0].get("data-start", "")) == pytest.approx(report.promotions[0].at)
    assert primary[0].get("data-label") == "epoch 0, token 0"
    assert standby[0].get("data-label") == "epoch 1, token 1048576"
    assert "epoch 0, token 0" in texts(by_lane["primary"])
    assert "epoch 1, token 1048576" in texts(by_lane["standby-0"])


def test_crash_draws_the_fault_silence_claim_and_lease_end() -> None:
    report = crash_report()
    by_lane = lanes(parse(report.to_svg()))
    primary = by_lane["primary"]
    (crash,) = find(primary, "crash")
    assert crash.get("data-at") == "600.000"
    (silence,) = find(primary, "silence")
    start, end = float(silence.get("data-start", "")), float(silence.get("data-end", ""))
    assert end - start == pytest.approx(report.timing.silence)
    assert 600 - report.timing.heartbeat_interval <= start <= 600
    (lease,) = find(primary, "lease")
    assert float(lease.get("data-at", "")) > 600
    (claim,) = find(by_lane["standby-0"], "claim")
    assert claim.get("data-epoch") == "1"
    assert find(primary, "heartbeat")
    assert find(parse(report.to_svg()), "two-live") == []


def test_unsafe_timing_draws_the_two_live_window_in_red() -> None:
    report = unsafe_report()
    root = parse(report.to_svg())
    windows = [e for e in find(root, "two-live") if e.tag == f"{SVG}rect"]
    assert len(windows) == 1
    (violation,) = report.violations_of("two-live")
    (group,) = find(root, "two-live-window")
    start, end = float(group.get("data-start", "")), float(group.get("data-end", ""))
    assert start == pytest.approx(violation.at, abs=1e-3)
    assert end - start == pytest.approx(report.double_live_seconds, abs=1e-3)
    style = "".join(e.text or "" for e in root.iter(f"{SVG}style"))
    assert ".two-live { fill: #d62728;" in style  # red
    (partition,) = [f for f in find(lanes(root)["primary"], "fault") if f.get("data-kind")]
    assert partition.get("data-kind") == "partition"


def test_same_seed_same_bytes() -> None:
    def draw() -> SimulationReport:
        return Simulation(seed=11).crash(300).partition(100, "standby-1", duration=50).run(900)

    first, second = draw(), draw()
    assert first.to_svg() == second.to_svg()
    assert timeline_svg(first) == first.to_svg()


def test_a_report_without_history_cannot_be_drawn() -> None:
    report = crash_report()
    with pytest.raises(ValueError, match="no run history"):
        attrs.evolve(report, history=None).to_svg()


def test_cli_svg_flag_writes_the_picture(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="python -m standby simulate")
    _cli.add_arguments(parser)
    target = tmp_path / "run.svg"
    argv = ["--seed", "3", "--crash-primary-at", "600", "--until", "1200", "--svg", str(target)]
    assert _cli.run(parser.parse_args(argv)) == 0
    assert f"timeline picture written to {target}" in capsys.readouterr().out
    assert target.read_text(encoding="utf-8") == crash_report().to_svg()
    assert len(lanes(parse(target.read_text(encoding="utf-8")))) == 3


def test_cli_svg_refuses_a_campaign(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m standby simulate")
    _cli.add_arguments(parser)
    assert _cli.run(parser.parse_args(["--runs", "2", "--svg", "x.svg"])) == 2
    assert "--svg draws a single run" in capsys.readouterr().err


def test_docs_pictures_are_drawn_and_the_page_shows_each() -> None:
    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("_timelines", root / "docs" / "_timelines.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pictures = module.timelines()
    page = (root / "docs" / "timeline.md").read_text(encoding="utf-8")
    assert sorted(pictures) == sorted(module.SCENARIOS)
    for name, svg in pictures.items():
        assert f"(timelines/{name})" in page
        assert len(lanes(parse(svg))) == 3
        assert find(parse(svg), "two-live") == []
    assert pictures["crash.svg"] == crash_report().to_svg()
