"""Node events describe themselves; the observer reports any of them the same way."""

from __future__ import annotations

import logging
import typing

import pytest

import standby.node
from standby.core._effects import DropReason, LifecycleState
from standby.node import (
    ClockJumped,
    ContainerStarted,
    InputDropped,
    LifecycleChanged,
    NodeEvent,
    OperationFailed,
    PromotedHere,
    Reconciled,
)
from standby.node._events import Reported
from standby.node._observe import Observer

EVENTS: tuple[type[Reported], ...] = typing.get_args(NodeEvent)


def test_every_event_of_the_union_describes_itself_and_is_public() -> None:
    assert EVENTS
    for event in EVENTS:
        assert issubclass(event, Reported), event
        assert event.message is not Reported.message, f"{event.__name__} has no message"
        assert event.__name__ in standby.node.__all__
        assert getattr(standby.node, event.__name__) is event
    assert {name for name in standby.node._events.__all__ if name != "NodeEvent"} == {
        event.__name__ for event in EVENTS
    }


def _observer(seen: list[NodeEvent]) -> tuple[Observer, logging.Logger]:
    logger = logging.Logger("test.events")
    return Observer("me", clock=lambda: 7.0, logger=logger, on_event=seen.append), logger


def test_report_counts_logs_and_hands_the_event_to_the_host(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[NodeEvent] = []
    observer, logger = _observer(seen)
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.DEBUG)
    event = PromotedHere(5.0, "w1", 3, 3 << 20)
    observer.report(event)
    assert seen == [event]
    assert observer.counters == {"promotions": 1}
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == f"promoted: epoch 3, token {3 << 20}"
    assert (record.workload_id, record.role, record.node) == ("w1", "primary", "me")  # type: ignore[attr-defined]


def test_an_event_whose_level_and_counters_follow_its_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[NodeEvent] = []
    observer, logger = _observer(seen)
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.DEBUG)
    failed = LifecycleChanged(1.0, "w1", LifecycleState.LIVE, LifecycleState.FENCED, "lost")
    adopted = Reconciled(1.0, "w2", "adopted", 2, 2 << 20, "lease still valid")
    forged = InputDropped(1.0, "w3", "eve", DropReason.BAD_SIGNATURE, "x", relay="r1")
    for event in (failed, adopted, forged):
        observer.report(event)
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.INFO, logging.WARNING]
    assert observer.counters == {
        "lifecycle_fenced": 1,
        "adopted": 1,
        "reconcile_adopted": 1,
        "transport_drops": 1,
        "transport_drops.bad_signature": 1,
    }
    assert seen == [failed, adopted, forged]


def test_the_reporter_may_name_the_role_and_an_unlogged_event_still_reaches_the_host(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[NodeEvent] = []
    observer, logger = _observer(seen)
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.DEBUG)
    started = ContainerStarted(1.0, "w1", 1 << 20, False, True, None, 0.5)
    observer.report(started)
    observer.report(OperationFailed(2.0, "stop", "w1", "boom"), role="standby")
    [record] = caplog.records
    assert record.getMessage() == "stop failed: boom"
    assert record.role == "standby"  # type: ignore[attr-defined]
    assert observer.counters == {"stop_errors": 1}
    assert seen[0] is started


def test_the_timeline_line_is_the_events_message_unless_not_worth_one() -> None:
    promoted = PromotedHere(5.0, "w1", 3, 3 << 20)
    assert promoted.timeline(0.0) == promoted.message()
    assert ClockJumped(1.0, 5.0, 0.0).timeline(0.0) is None
    assert ContainerStarted(1.0, "w1", 1, True, True, None, 0.5).timeline(0.0) is None
    failed = ContainerStarted(1.0, "w1", 1, True, False, "no image", 0.5)
    assert failed.timeline(0.0) == ("%s failed (token %d): %s", ("spawn", 1, "no image"))
