"""The shipped state machine, subclassed the way a user would."""

from __future__ import annotations

import functools

import pytest
from hypothesis import Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from standby import Timing
from standby.testing import (
    CURRENT_PRIMARY,
    Crash,
    Partition,
    Simulation,
    StandbyStateMachine,
    memory_runtime,
)
from standby.testing.simulation._stateful import IT


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


class NoLeaseEnforcementMachine(StandbyStateMachine):
    """A runtime that lets a container outlive its lease: outside the node's contract."""

    timing = Timing.fast()

    def make_simulation(self, seed: int) -> Simulation:
        timing = self.make_timing()
        runtime = functools.partial(
            memory_runtime, stop_grace=timing.fence_grace / 10, enforce_leases=False
        )
        return Simulation(timing=timing, standbys=self.standbys, seed=seed, runtime_factory=runtime)


def test_the_rules_find_a_runtime_that_does_not_enforce_leases() -> None:
    # A node process killed or frozen while its container runs on is safe only
    # because the runtime stops the container at the end of its lease. The new
    # kill and pause rules must find that this runtime does not.
    search = settings(
        max_examples=300,  # found within about 100; the margin keeps it found
        stateful_step_count=20,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
    )
    with pytest.raises(AssertionError, match="two containers of 'workload' ran at once"):
        run_state_machine_as_test(NoLeaseEnforcementMachine, settings=search)


class _Draws:
    """Stands in for hypothesis's ``data`` with the values to draw, in order."""

    def __init__(self, *values: object) -> None:
        self._values = iter(values)

    def draw(self, strategy: object, label: str | None = None) -> object:
        return next(self._values)


def test_a_fault_armed_after_an_event_lands_that_long_after_it() -> None:
    # Window A: the compare-and-set winner's host crashes 72 ms after it won.
    machine = FastAtomicMachine()
    machine.start(seed=3)
    machine.after_event(_Draws(IT), trigger="claim", delay_ms=72, fault="crash")  # type: ignore[arg-type]
    machine.crash(_Draws(CURRENT_PRIMARY))  # type: ignore[arg-type]
    machine.advance(1.0)
    history = machine._sim.report().history
    won = history.claims[0]
    crashes = [f for f in history.faults if f.kind == "crash" and f.who != ("primary",)]
    assert [(f.who, f.start) for f in crashes] == [((won.provider,), pytest.approx(won.at + 0.072))]
    machine.teardown()  # the next standby takes over
    assert [p.provider for p in machine._sim.report().promotions][-1] != won.provider


def test_fm29_a_restart_armed_after_the_revocation_never_restarts_the_epoch() -> None:
    # Window C of the fresh-seed campaign, reached through the rules: before
    # failure mode 29 was fixed this failed with token 0 handed to two
    # incarnations of the primary and two containers running at once.
    # The primary is frozen (workload running) past its lease, fences on waking
    # and revokes; one second later its host restarts it and re-sends the request
    # without created_at, while standby-1 is still backing off.
    machine = StandbyStateMachine()
    machine.start(seed=0)
    machine.crash(_Draws("standby-0"))  # type: ignore[arg-type]
    machine._sim.run(until=600.0)
    machine.after_event(
        _Draws(IT, "without-created-at"),  # type: ignore[arg-type]
        trigger="revocation",
        delay_ms=1000,
        fault="restart",
    )
    machine.pause(_Draws(CURRENT_PRIMARY), fraction=70 / 360, workload="running")  # type: ignore[arg-type]
    machine.teardown()


def test_clock_steps_stay_within_the_bound_unless_told() -> None:
    machine = MyMachine()
    machine.start(seed=2)
    machine.step_clock(_Draws("primary"), fraction=-1.0)  # type: ignore[arg-type]
    machine.step_clock(_Draws("standby-0"), fraction=1.0)  # type: ignore[arg-type]
    skews = [machine._sim.host(name).skew for name in machine._sim.providers]
    assert skews == [-20.0, 0.0, 0.0]  # standby-0 may not go ahead of primary by > 20 s
    assert machine.current_report().outside_model == ()

    class BigSteps(MyMachine):
        max_clock_step = 600.0

    beyond = BigSteps()
    beyond.start(seed=2)
    beyond.step_clock(_Draws(CURRENT_PRIMARY), fraction=-1.0)  # type: ignore[arg-type]
    assert beyond._sim.host("primary").skew == -600.0
    assert beyond.current_report().outside_model
