"""The shipped state machine, subclassed the way a user would."""

from __future__ import annotations

import pytest
from hypothesis import settings

from standby import Timing
from standby.testing import (
    CURRENT_PRIMARY,
    Crash,
    Partition,
    StandbyStateMachine,
)


class MyMachine(StandbyStateMachine):
    """Our own election settings: five relays, a write quorum of three."""

    timing = Timing(relay_count=5, write_quorum=3)
    standbys = 2


TestStandby = MyMachine.TestCase
TestStandby.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


class FastAtomicMachine(StandbyStateMachine):
    """The fast preset with compare-and-set claims and three standbys."""

    timing = Timing.fast()
    standbys = 3
    atomic_claims = True


TestFastAtomic = FastAtomicMachine.TestCase
TestFastAtomic.settings = settings(max_examples=30, stateful_step_count=30, deadline=None)


class ReferenceUnsafeMachine(StandbyStateMachine):
    """The reference provider's timing, which Timing rejects."""

    def make_timing(self) -> Timing:
        return Timing.unsafe_unchecked(lease=420.0, suspect_after=120.0)


def test_invariants_fail_for_the_unsafe_reference_timing() -> None:
    machine = ReferenceUnsafeMachine()
    machine.start(seed=0)
    machine._inject(Partition(machine._sim.now + 600, CURRENT_PRIMARY))
    machine.advance(1.0)  # two silence windows: up to t=360
    machine.single_writer()
    machine.advance(1.0)  # up to t=720: the partition started at t=600
    machine.single_writer()
    machine.advance(1.0)  # t=1080: a standby promoted while the primary still holds its lease
    with pytest.raises(AssertionError, match="two containers of 'workload' ran at once"):
        machine.single_writer()
    machine.epochs_and_tokens_only_go_up()  # this guarantee still holds


def test_teardown_runs_on_and_checks_everything() -> None:
    machine = StandbyStateMachine()
    machine.start(seed=1)
    machine._inject(Crash(machine._sim.now))
    machine.teardown()  # runs four silence windows further and checks everything
    report = machine._sim.report()
    assert [p.provider for p in report.promotions] == ["standby-0"]
    assert report.ok


def test_machine_defaults() -> None:
    machine = MyMachine()
    machine.start(seed=5)
    assert machine._sim.timing.relay_count == 5
    assert machine._sim.providers == ("primary", "standby-0", "standby-1")
    assert machine.current_report().ok
