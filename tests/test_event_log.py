"""``StandbyNode(event_log=PATH)``: every node event as one JSON line, and reading it back."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from _failover import Failover, anyio_backend, timing_for  # noqa: F401

from standby.core import LifecycleState
from standby.node import HeartbeatPublished, LifecycleChanged, QuorumMissed
from standby.node._eventlog import CLOSED, OPENED, event_record, read_event_log


@pytest.mark.anyio
async def test_each_node_writes_its_events_framed_by_opened_and_closed(
    tmp_path: Path,
    anyio_backend: Any,  # noqa: F811
) -> None:
    timing = timing_for(anyio_backend)
    run = Failover(timing, event_logs=tmp_path)
    await run.run()

    for name in ("prime", "sb0", "sb1"):
        records = read_event_log(tmp_path / f"{name}.events")
        # one line per event the host's hook saw, between the two frames
        assert [r["event"] for r in records[1:-1]] == [type(e).__name__ for e in run.events[name]]
        assert records[0]["event"] == OPENED
        assert records[0]["timing"]["silence"] == timing.silence
        assert records[0]["timing"]["lease"] == timing.lease
        assert {r["provider"] for r in records} == {name}
        times = [r["time"] for r in records]
        assert times == sorted(times)
        # a node that leaves its `async with` (cancelled here) closes its run
        assert records[-1]["event"] == CLOSED

    sb0 = read_event_log(tmp_path / "sb0.events")
    [promoted] = [r for r in sb0 if r["event"] == "PromotedHere"]
    assert (promoted["workload"], promoted["epoch"], promoted["fencing_token"]) == (
        "w1",
        1,
        1 << 20,
    )
    assert promoted["message"] == f"promoted: epoch 1, token {1 << 20}"
    [started] = [r for r in sb0 if r["event"] == "ContainerStarted" and r["ok"]]
    assert started["promotion"] is True
    assert started["lease_end"] > started["time"]
    renewed = [r for r in sb0 if r["event"] == "LeaseRenewed"]
    assert renewed, "the new primary's lease renewals are in its log"
    assert all(r["fencing_token"] == 1 << 20 for r in renewed)
    assert [r["lease_end"] for r in renewed] == sorted(r["lease_end"] for r in renewed)
    published = [
        r for r in read_event_log(tmp_path / "prime.events") if r["event"] == "HeartbeatPublished"
    ]
    assert published
    assert all(r["acked"] == sorted(r["acked"]) and r["workload"] is None for r in published)


@pytest.mark.anyio
async def test_an_event_log_that_cannot_be_written_is_counted_and_the_node_fails_over(
    tmp_path: Path,
    anyio_backend: Any,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    # every node's log path is a directory: no line can ever be written
    for name in ("prime", "sb0", "sb1"):
        (tmp_path / f"{name}.events").mkdir()
    run = Failover(timing_for(anyio_backend), event_logs=tmp_path)
    seen: dict[str, int] = {}

    def inspect(failover: Failover) -> None:
        seen.update(failover.nodes["sb0"].status().counters)
        seen["events so far"] = len(failover.events["sb0"])

    with caplog.at_level(logging.DEBUG, logger="standby.node"):
        await run.run(inspect=inspect)

    assert run.starts() == [("prime", 0), ("sb0", 1 << 20)]
    # LogOpened and one line per event so far, each counted
    assert seen["event_log_errors"] == 1 + seen["events so far"]
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and "event log" in r.message
    ]
    assert len({r.node for r in warnings}) == 3  # type: ignore[attr-defined]
    assert all(r.message.count("cannot write") == 1 for r in warnings)
    assert len(warnings) == 3  # the first failure of each node warns, later ones are debug


def test_the_record_names_time_provider_event_workload_epoch_and_message() -> None:
    event = LifecycleChanged(
        1_700_000_012.5, "w1", LifecycleState.LIVE, LifecycleState.FENCED, "lease lost"
    )
    record = event_record(event, "alice")
    assert list(record)[:5] == ["time", "provider", "event", "workload", "message"]
    assert record == {
        "time": 1_700_000_012.5,
        "provider": "alice",
        "event": "LifecycleChanged",
        "workload": "w1",
        "message": "lifecycle live -> fenced (lease lost)",
        "old": "live",
        "new": "fenced",
        "reason": "lease lost",
    }
    beat = event_record(HeartbeatPublished(5.0, 4.0, frozenset({"r2", "r1"}), 3), "p")
    assert beat["acked"] == ["r1", "r2"]
    assert beat["workload"] is None
    several = event_record(QuorumMissed(1.0, "preread", ("a", "b"), 1, 2), "s")
    assert several["workload"] == "a,b"
    assert several["workload_ids"] == ["a", "b"]
    json.dumps(event_record(QuorumMissed(1.0, "claim", (), 0, 2), "s"), allow_nan=False)


def _write(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


GOOD = json.dumps({"time": 1.0, "provider": "p", "event": "PromotedHere", "workload": "w"})


def test_a_torn_last_line_is_left_out(tmp_path: Path) -> None:
    log = tmp_path / "torn.events"
    log.write_text(GOOD + "\n" + GOOD[:17], encoding="utf-8")
    assert [r["event"] for r in read_event_log(log)] == ["PromotedHere"]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "not a JSON line"),
        ("[1, 2]", "not a JSON object"),
        (json.dumps({"provider": "p", "event": "E"}), "`time` must be a number"),
        (json.dumps({"time": "soon", "provider": "p", "event": "E"}), "`time` must be a number"),
        (json.dumps({"time": 1, "provider": "", "event": "E"}), "`provider` must be"),
        (json.dumps({"time": 1, "provider": "p"}), "`event` must be"),
        (
            json.dumps({"time": 1, "provider": "p", "event": OPENED, "version": 99}),
            "upgrade standby",
        ),
    ],
)
def test_a_line_that_is_not_an_event_record_is_refused_with_its_place(
    tmp_path: Path, line: str, problem: str
) -> None:
    log = _write(tmp_path / "bad.events", GOOD, line, GOOD)
    with pytest.raises(ValueError, match=problem) as caught:
        read_event_log(log)
    assert f"{log}:2:" in str(caught.value)
