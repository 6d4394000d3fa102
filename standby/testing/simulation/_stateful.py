"""A hypothesis state machine over the simulation, for users to subclass."""

from __future__ import annotations

from typing import Any

try:
    from hypothesis import strategies as st
    from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "standby.testing.StandbyStateMachine needs hypothesis: pip install 'standby[testing]'"
    ) from exc

from ...core._timing import Timing
from ._faults import (
    CURRENT_PRIMARY,
    FORGE_KINDS,
    Crash,
    Delay,
    Drop,
    Duplicate,
    FailSpawn,
    Fault,
    Forge,
    Handover,
    Heal,
    Partition,
    Replay,
    Restart,
    SkewClock,
    SlowSpawn,
)
from ._names import STRANGER
from ._report import (
    EPOCH_REGRESSED,
    EPOCH_REUSED,
    FORGED_INPUT,
    LIVENESS,
    TOKEN_ORDER,
    TWO_LIVE,
    SimulationReport,
)
from ._simulation import Simulation

__all__ = ["StandbyStateMachine"]

_fraction = st.floats(min_value=0.0, max_value=1.0)


class StandbyStateMachine(RuleBasedStateMachine):
    """Rules inject events and faults into a :class:`Simulation`; invariants check the guarantees.

    Subclass it and expose ``TestCase``::

        class MyElection(StandbyStateMachine):
            timing = Timing(silence=240.0, relay_count=5, write_quorum=3)

        TestMyElection = MyElection.TestCase

    Class attributes to override: ``timing`` (or the :meth:`make_timing`
    method), ``standbys``, ``atomic_claims``, ``max_advance`` (the longest
    single time step, default two silence windows) and ``settle`` (how far
    :meth:`teardown` runs the simulation past the last step, default four
    silence windows, so every pending liveness bound is decided). Override
    :meth:`make_simulation` for anything else (latencies, write interval).

    The rules only inject faults inside the safety model (no relay that loses
    events, clocks within ``max_clock_skew`` of each other), so any invariant
    failure is a real bug in the timing or the node.
    """

    timing: Timing = Timing()
    standbys: int = 2
    atomic_claims: bool = False
    max_advance: float | None = None
    settle: float | None = None

    def __init__(self) -> None:
        super().__init__()
        self.sim: Simulation | None = None
        self._report: SimulationReport | None = None

    # -- hooks ---------------------------------------------------------

    def make_timing(self) -> Timing:
        """The timing under test (default: the ``timing`` class attribute)."""
        return self.timing

    def make_simulation(self, seed: int) -> Simulation:
        """Build the simulation for one example."""
        return Simulation(
            timing=self.make_timing(),
            standbys=self.standbys,
            seed=seed,
            atomic_claims=self.atomic_claims,
        )

    # -- plumbing ------------------------------------------------------

    @property
    def _sim(self) -> Simulation:
        assert self.sim is not None, "the simulation starts in the initialize rule"
        return self.sim

    def _inject(self, fault: Fault) -> None:
        sim = self._sim
        sim.schedule(fault)
        sim.run(until=sim.now)
        self._report = None

    def _provider(self, data: st.DataObject) -> str:
        return data.draw(st.sampled_from(self._sim.providers), label="who")

    def _target(self, data: st.DataObject) -> str:
        return data.draw(st.sampled_from([CURRENT_PRIMARY, *self._sim.providers]), label="who")

    def _span(self, fraction: float) -> float:
        return round(max(0.1, fraction * 2 * self._sim.timing.silence), 3)

    def current_report(self) -> SimulationReport:
        """The simulation's report at the current step (computed once per step)."""
        if self._report is None:
            self._report = self._sim.report()
        return self._report

    # -- rules ---------------------------------------------------------

    @initialize(seed=st.integers(min_value=0, max_value=2**32 - 1))
    def start(self, seed: int) -> None:
        """Boot a simulation: the primary starts, the standbys reserve their slots."""
        self.sim = self.make_simulation(seed)
        self.sim.run(until=0.0)

    @rule(fraction=_fraction)
    def advance(self, fraction: float) -> None:
        """Let virtual time pass (up to ``max_advance``)."""
        sim = self._sim
        step = self.max_advance if self.max_advance is not None else 2 * sim.timing.silence
        sim.run(until=sim.now + round(fraction * step, 3))
        self._report = None

    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        """Crash a provider (by default the current primary)."""
        self._inject(Crash(self._sim.now, self._target(data)))

    @rule(data=st.data())
    def restart(self, data: st.DataObject) -> None:
        """Restart a provider from its persisted slots."""
        self._inject(Restart(self._sim.now, self._provider(data)))

    @rule(data=st.data(), fraction=_fraction, heals=st.booleans())
    def partition(self, data: st.DataObject, fraction: float, heals: bool) -> None:
        """Cut a provider off from some relays, for a while or until a heal."""
        relays = data.draw(
            st.lists(st.sampled_from(self._sim.relays), min_size=1, unique=True), label="relays"
        )
        duration = self._span(fraction) if heals else None
        self._inject(Partition(self._sim.now, self._target(data), tuple(sorted(relays)), duration))

    @rule()
    def heal(self) -> None:
        """Restore every link."""
        self._inject(Heal(self._sim.now))

    @rule(data=st.data(), fraction=_fraction, probability=_fraction)
    def drop(self, data: st.DataObject, fraction: float, probability: float) -> None:
        """Lose messages of one provider (or everyone) for a while."""
        who = data.draw(st.none() | st.sampled_from(self._sim.providers), label="who")
        self._inject(Drop(self._sim.now, self._span(fraction), round(probability, 3), who))

    @rule(data=st.data(), fraction=_fraction, extra=_fraction)
    def delay(self, data: st.DataObject, fraction: float, extra: float) -> None:
        """Slow down the messages of one provider (or everyone)."""
        who = data.draw(st.none() | st.sampled_from(self._sim.providers), label="who")
        most = max(2 * self._sim.timing.query_timeout * extra, 0.001)
        self._inject(Delay(self._sim.now, self._span(fraction), round(most, 3), who))

    @rule(data=st.data(), fraction=_fraction)
    def duplicate(self, data: st.DataObject, fraction: float) -> None:
        """Deliver messages twice for a while."""
        who = data.draw(st.none() | st.sampled_from(self._sim.providers), label="who")
        self._inject(Duplicate(self._sim.now, self._span(fraction), 1.0, who))

    @rule(count=st.integers(min_value=1, max_value=5))
    def replay(self, count: int) -> None:
        """Have a relay re-send old genuine messages."""
        self._inject(Replay(self._sim.now, count))

    @rule(kind=st.sampled_from(FORGE_KINDS))
    def forge(self, kind: Any) -> None:
        """Publish a message signed by a stranger."""
        self._inject(Forge(self._sim.now, kind, STRANGER))

    @rule(data=st.data(), fraction=st.floats(min_value=-1.0, max_value=1.0))
    def skew_clock(self, data: st.DataObject, fraction: float) -> None:
        """Move a provider's clock, within half the bound of true time."""
        offset = round(fraction * self._sim.timing.max_clock_skew / 2, 6)
        self._inject(SkewClock(self._sim.now, self._provider(data), offset))

    @rule(data=st.data(), fraction=_fraction)
    def slow_spawn(self, data: st.DataObject, fraction: float) -> None:
        """Make a provider's next container start slow (up to twice ``spawn_timeout``)."""
        extra = max(0.01, round(fraction * 2 * self._sim.timing.spawn_timeout, 3))
        self._inject(SlowSpawn(self._sim.now, self._provider(data), extra))

    @rule(data=st.data(), count=st.integers(min_value=1, max_value=3))
    def fail_spawn(self, data: st.DataObject, count: int) -> None:
        """Make a provider's next container starts fail."""
        self._inject(FailSpawn(self._sim.now, self._provider(data), count))

    @rule()
    def handover(self) -> None:
        """The current primary hands the workload over on purpose."""
        self._inject(Handover(self._sim.now))

    # -- invariants (the guarantees of docs/safety.md) ------------------------

    def _assert_none(self, *kinds: str) -> None:
        if self.sim is None:
            return
        found = [v for v in self.current_report().violations if v.kind in kinds]
        assert not found, "\n\n".join(str(v) for v in found)

    @invariant()
    def single_writer(self) -> None:
        """At most one container of the workload runs at any instant."""
        self._assert_none(TWO_LIVE)

    @invariant()
    def epochs_and_tokens_only_go_up(self) -> None:
        """One winner per epoch; fencing tokens strictly increase; slots never go back."""
        self._assert_none(EPOCH_REUSED, TOKEN_ORDER, EPOCH_REGRESSED)

    @invariant()
    def forged_input_never_promotes(self) -> None:
        """No revocation or change of primary rests on a message nobody genuine sent."""
        self._assert_none(FORGED_INPUT)

    @invariant()
    def failover_within_bound(self) -> None:
        """After a crash with a standby and the relays reachable, failover meets the bound."""
        self._assert_none(LIVENESS)

    def teardown(self) -> None:
        """Run past the last step so pending liveness bounds get decided, then check."""
        if self.sim is None:
            return
        settle = self.settle if self.settle is not None else 4 * self.sim.timing.silence
        report = self.sim.run(until=self.sim.now + settle)
        assert report.ok, "\n\n".join(str(v) for v in report.violations)
