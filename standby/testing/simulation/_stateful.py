"""A hypothesis state machine over the simulation, for users to subclass."""

from __future__ import annotations

from collections.abc import Callable
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
    PAUSE_WORKLOADS,
    REACCEPT_MODES,
    Crash,
    Delay,
    Drop,
    Duplicate,
    FailSpawn,
    Fault,
    Forge,
    Handover,
    Heal,
    Kill,
    Partition,
    Pause,
    Replay,
    Restart,
    SkewClock,
    SlowSpawn,
    StepClock,
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

__all__ = ["TRIGGERS", "StandbyStateMachine"]

_fraction = st.floats(min_value=0.0, max_value=1.0)
_signed = st.floats(min_value=-1.0, max_value=1.0)
_steps = st.none() | st.integers(min_value=1, max_value=60)
_reaccept = st.sampled_from((None, *REACCEPT_MODES))
_workload = st.sampled_from(PAUSE_WORKLOADS)


def _promotion(event: Any) -> bool:
    return type(event).__name__ == "PromotedHere"


def _claim(event: Any) -> bool:
    name = type(event).__name__
    if name == "ClaimPublished":
        return not event.withdrawn
    return name == "ClaimCompared" and bool(event.won)


def _spawn(event: Any) -> bool:
    return type(event).__name__ == "ContainerStarting"


def _revocation(event: Any) -> bool:
    return type(event).__name__ == "RevocationPublished"


TRIGGERS: dict[str, Callable[[Any], bool]] = {
    "promotion": _promotion,
    "claim": _claim,
    "spawn": _spawn,
    "revocation": _revocation,
}
"""The node events :meth:`StandbyStateMachine.after_event` can time a fault from.

``"promotion"``: a node took the workload over (``PromotedHere``);
``"claim"``: a claim reached its quorum, or won its compare-and-set;
``"spawn"``: a node asked its runtime to start the workload;
``"revocation"``: a primary published the revocation of its lease (after
fencing, or on a handover).
"""

#: What :meth:`StandbyStateMachine.after_event` can do once its event happened.
TIMED_FAULTS = ("crash", "kill", "restart", "pause", "partition", "step_clock")

#: ``who`` of a timed fault: the provider whose event it was.
IT = "@it"

_MAX_ARMED = 4


class StandbyStateMachine(RuleBasedStateMachine):
    """Rules inject events and faults into a :class:`Simulation`; invariants check the guarantees.

    Subclass it and expose ``TestCase``::

        class MyElection(StandbyStateMachine):
            timing = Timing(silence=240.0, relay_count=5, write_quorum=3)

        TestMyElection = MyElection.TestCase

    Class attributes to override: ``timing`` (or the :meth:`make_timing`
    method), ``standbys``, ``atomic_claims``, ``max_advance`` (the longest
    single time step, default two silence windows), ``settle`` (how far
    :meth:`teardown` runs the simulation past the last step, default four
    silence windows, so every pending liveness bound is decided) and
    ``max_clock_step`` (the largest wall-clock step, default
    ``max_clock_skew``; a larger one applies only to the current primary's
    clock stepping back, which leaves the model, so the report notes it and
    liveness is no longer owed, while safety still is). Override
    :meth:`make_simulation` for anything else (latencies, write interval).

    The rules only inject faults inside the safety model (no relay that loses
    events, clocks within ``max_clock_skew`` of each other, unless
    ``max_clock_step`` says otherwise), so any invariant failure is a real
    bug in the timing or the node.

    Most rules inject their fault at the current step. :meth:`after_event`
    instead arms a fault for later: it fires a chosen number of
    milliseconds after the next promotion, won claim, container start or
    revocation (:data:`TRIGGERS`), on the provider whose event it was or another one.
    That is how faults land inside the short windows a schedule fixed in
    advance rarely hits: a crash 72 ms after winning a claim, a kill between
    two steps of a container start, a freeze just after a promotion.
    """

    timing: Timing = Timing()
    standbys: int = 2
    atomic_claims: bool = False
    max_advance: float | None = None
    settle: float | None = None
    max_clock_step: float | None = None

    def __init__(self) -> None:
        super().__init__()
        self.sim: Simulation | None = None
        self._report: SimulationReport | None = None
        self._armed: list[tuple[str, float, str, Callable[[str, float], Fault | None]]] = []

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

    def _concrete(self, who: str) -> str | None:
        return self._sim.current_primary() if who == CURRENT_PRIMARY else who

    def _clock_step(self, at: float, who: str, fraction: float) -> Fault | None:
        """Step ``who``'s wall clock by ``fraction`` of the largest step (negative: back).

        The largest step is ``max_clock_step``, by default ``max_clock_skew``.
        Only a step back of the current primary's clock may go beyond
        ``max_clock_skew`` (failure mode 31: the primary caps its leases and
        the runtime holds a monotonic deadline, so that stays safe); every
        other step is cut so that every clock stays within ``max_clock_skew``
        of the others, inside the safety model. Beyond it, one winner per
        epoch without atomic claims is not promised (docs/safety.md): a standby
        whose clock is far behind rejects the winner's claim as future-dated.
        """
        sim = self._sim
        bound = sim.timing.max_clock_skew
        largest = bound if self.max_clock_step is None else self.max_clock_step
        if largest > bound and who == CURRENT_PRIMARY and fraction < 0:
            return StepClock(at, CURRENT_PRIMARY, round(fraction * largest, 6))
        name = self._concrete(who)
        if name is None:
            return None
        others = [h.skew for h in sim.hosts() if h.name != name]
        lo = max(others, default=0.0) - bound
        hi = min(others, default=0.0) + bound
        skew = sim.host(name).skew
        offset = min(max(skew + fraction * min(largest, bound), lo), hi)
        return StepClock(at, name, round(offset - skew, 6))

    def _on_node_event(self, provider: str, event: Any) -> None:
        sim = self._sim
        if getattr(event, "workload_id", None) != sim.workload_id:
            return
        fired = [a for a in self._armed if TRIGGERS[a[0]](event)]
        if not fired:
            return
        self._armed = [a for a in self._armed if a not in fired]
        for _trigger, delay, who, make in fired:
            target = provider if who == IT else who
            fault = make(target, sim.now + delay)
            if fault is not None:
                sim.record_line("FAULT", f"armed after {provider}'s {type(event).__name__}")
                sim.schedule(fault)

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
        self.sim.on_node_event(self._on_node_event)
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

    @rule(data=st.data(), steps=_steps, host=st.booleans())
    def kill(self, data: st.DataObject, steps: int | None, host: bool) -> None:
        """``kill -9`` a node process (its host too with ``host``), maybe ``steps`` steps later."""
        self._inject(Kill(self._sim.now, self._target(data), steps, host))

    @rule(data=st.data(), reaccept=_reaccept)
    def restart(self, data: st.DataObject, reaccept: Any) -> None:
        """Restart a provider from its persisted slots (the host may send the request again)."""
        self._inject(Restart(self._sim.now, self._provider(data), reaccept))

    @rule(data=st.data(), fraction=_fraction, workload=_workload)
    def pause(self, data: st.DataObject, fraction: float, workload: Any) -> None:
        """Freeze a node process for a while, its containers frozen with it or running."""
        self._inject(Pause(self._sim.now, self._target(data), self._span(fraction), workload))

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

    @rule(data=st.data(), fraction=_signed)
    def step_clock(self, data: st.DataObject, fraction: float) -> None:
        """Step a provider's wall clock (back when negative), up to ``max_clock_step``."""
        fault = self._clock_step(self._sim.now, self._target(data), fraction)
        if fault is not None:
            self._inject(fault)

    @rule(
        data=st.data(),
        trigger=st.sampled_from(tuple(TRIGGERS)),
        delay_ms=st.integers(min_value=0, max_value=5000),
        fault=st.sampled_from(TIMED_FAULTS),
    )
    def after_event(self, data: st.DataObject, trigger: str, delay_ms: int, fault: str) -> None:
        """Arm ``fault`` to fire ``delay_ms`` ms after the next ``trigger`` event of the workload.

        Its target is the provider whose event it was (``"@it"``), the
        primary of the moment, or a named provider; its parameters are drawn
        now. A fault that never fires costs nothing; at most four wait.
        """
        sim = self._sim
        who = data.draw(st.sampled_from([IT, CURRENT_PRIMARY, *sim.providers]), label="who")
        make: Callable[[str, float], Fault | None]
        if fault == "crash":

            def make(name: str, at: float) -> Fault | None:
                return Crash(at, name)

        elif fault == "kill":
            steps = data.draw(_steps, label="steps")
            host = data.draw(st.booleans(), label="host")

            def make(name: str, at: float) -> Fault | None:
                return Kill(at, name, steps, host)

        elif fault == "restart":
            reaccept = data.draw(_reaccept, label="reaccept")

            def make(name: str, at: float) -> Fault | None:
                concrete = self._concrete(name)
                return None if concrete is None else Restart(at, concrete, reaccept)

        elif fault == "pause":
            span = self._span(data.draw(_fraction, label="fraction"))
            workload = data.draw(_workload, label="workload")

            def make(name: str, at: float) -> Fault | None:
                return Pause(at, name, span, workload)

        elif fault == "partition":
            span = self._span(data.draw(_fraction, label="fraction"))

            def make(name: str, at: float) -> Fault | None:
                return Partition(at, name, None, span)

        else:
            step = data.draw(_signed, label="step")

            def make(name: str, at: float) -> Fault | None:
                return self._clock_step(at, name, step)

        self._armed.append((trigger, delay_ms / 1000, who, make))
        del self._armed[:-_MAX_ARMED]

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
        """After a fault, a container of the workload runs again within the bound.

        Demanded only while some standby can still take over: one that has
        a durably saved reservation, whose node runs, and that never handed
        a token of the workload to its runtime (see the checker's
        ``can_take_over``). That keeps the invariant sound, each condition
        excusing exactly the runs in which nobody is left who could act:

        * *a durable reservation*: a standby that dies before its slot
          reached its store comes back knowing nothing of the workload
          (unless the host sends the request again). Nothing it could do
          would restore the workload, so no bound is owed on its account.
        * *its node runs*: a killed or crashed process takes no decision;
          while every standby's node is down, a failover is impossible by
          construction, not late. (A freeze is a fault like any other: the
          bound counts from its end.)
        * *no token handed out before*: a provider promotes at most once per
          workload (guarantee 5). A standby that ran the workload (as
          primary, or in a start it gave up or that was fenced) no longer
          stands by; demanding that it promote again would demand a second
          use of its claim, which is what the safety guarantees forbid.

        Drop any condition and the invariant fails runs in which the node
        did everything right (a false alarm a shrinker happily minimises);
        with all three, a gap that outlives the bound while a standby could
        have ended it is a real liveness bug. The bound itself counts from
        the end of the last fault, so the faults the rules inject (kills,
        restarts, pauses, clock steps) excuse only their own span.
        """
        self._assert_none(LIVENESS)

    def teardown(self) -> None:
        """Run past the last step so pending liveness bounds get decided, then check."""
        if self.sim is None:
            return
        settle = self.settle if self.settle is not None else 4 * self.sim.timing.silence
        report = self.sim.run(until=self.sim.now + settle)
        assert report.ok, "\n\n".join(str(v) for v in report.violations)
