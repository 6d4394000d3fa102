"""Safety campaigns: many seeded simulations with random fault schedules."""

from __future__ import annotations

import math
import random
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import TypeAlias

import attrs

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
    Kill,
    Partition,
    Pause,
    Reaccept,
    Replay,
    Restart,
    SkewClock,
    SlowSpawn,
    StepClock,
)
from ._names import provider_names, relay_names
from ._report import SimulationReport, Violation
from ._simulation import Simulation

__all__ = ["FOCUSES", "CampaignSummary", "percentile", "random_faults", "run_campaign"]


def random_faults(
    rng: random.Random,
    *,
    timing: Timing,
    standbys: int,
    horizon: float,
    count: int | None = None,
    focus: str | None = None,
) -> list[Fault]:
    """A random schedule of faults that stay within the safety model.

    Host crashes, node processes killed after a random number of steps (their
    containers surviving or not), restarts (the request sent again with or
    without ``created_at``, or not at all), pauses (the workload frozen with
    the node or running on), partitions (healing by themselves), message
    loss, delay and duplication, replays, forgeries, clocks set or stepped
    (forward or back) within ``max_clock_skew`` (every clock stays within
    half the bound of true time, so any two differ by at most the bound and
    no step exceeds it) and slow or failing container starts. Never a relay
    that loses events or an unsafe timing. Sorted by time.

    ``focus`` (one of :data:`FOCUSES`) adds one more fault of that kind,
    drawn after the others from the same ``rng``: ``"kill-at-step"`` (a
    ``kill -9`` a random number of loop steps after its time, usually
    followed by a restart), ``"freeze-running"`` (the node frozen while its
    containers run on), ``"restart-with-created-at"`` and
    ``"restart-without-created-at"`` (a node killed, then restarted and sent
    the request again that way).
    """
    if focus is not None and focus not in _FOCUS:
        raise ValueError(f"unknown focus {focus!r}; choose from {', '.join(FOCUSES)}")
    providers = provider_names(standbys)
    relays = relay_names(timing.relay_count)
    silence = timing.silence
    n = rng.randint(1, 6) if count is None else count
    faults: list[Fault] = []

    def at() -> float:
        return round(rng.uniform(0.0, 0.85) * horizon, 3)

    def who() -> str:
        return rng.choice([CURRENT_PRIMARY, CURRENT_PRIMARY, *providers])

    def chance(kind: type[Drop | Duplicate], when: float) -> Drop | Duplicate:
        # For up to a silence window, each hop of one provider (or everyone's).
        duration = round(rng.uniform(1, silence), 3)
        probability = round(rng.uniform(0.1, 1.0), 3)
        return kind(when, duration, probability, rng.choice([None, *providers]))

    for _ in range(n):
        roll = rng.random()
        when = at()
        if roll < 0.16:
            target = who()
            faults.append(Kill(when, target, rng.randint(1, 400), rng.random() < 0.3))
            if rng.random() < 0.7:
                back = target if target != CURRENT_PRIMARY else rng.choice(providers)
                mode = rng.choice([None, *REACCEPT_MODES])
                later = round(when + rng.uniform(0.5, 2 * silence), 3)
                faults.append(Restart(later, back, mode))
            continue
        if roll < 0.24:
            span = round(rng.uniform(1, 3 * silence), 3)
            faults.append(Pause(when, who(), span, rng.choice(PAUSE_WORKLOADS)))
            continue
        roll = rng.random()
        if roll < 0.22:
            faults.append(Crash(when, CURRENT_PRIMARY))
            if rng.random() < 0.4:
                target = rng.choice(providers)
                faults.append(Restart(round(when + rng.uniform(1, 3 * silence), 3), target))
        elif roll < 0.30:
            target = rng.choice(providers)
            faults.append(Crash(when, target))
            if rng.random() < 0.6:
                faults.append(Restart(round(when + rng.uniform(1, 2 * silence), 3), target))
        elif roll < 0.45:
            cut = rng.sample(relays, rng.randint(1, len(relays)))
            duration = round(rng.uniform(1, 3 * silence), 3)
            faults.append(Partition(when, who(), tuple(sorted(cut)), duration))
        elif roll < 0.53:
            faults.append(chance(Drop, when))
        elif roll < 0.59:
            duration = round(rng.uniform(1, silence), 3)
            extra = round(rng.uniform(0.01, 2 * timing.query_timeout), 3)
            faults.append(Delay(when, duration, extra, rng.choice([None, *providers])))
        elif roll < 0.65:
            faults.append(chance(Duplicate, when))
        elif roll < 0.71:
            faults.append(Replay(when, rng.randint(1, 5), rng.choice([None, *providers])))
        elif roll < 0.79:
            faults.append(Forge(when, rng.choice(FORGE_KINDS), "mallory"))
        elif roll < 0.825:
            half = timing.max_clock_skew / 2
            faults.append(
                SkewClock(when, rng.choice(providers), round(rng.uniform(-half, half), 3))
            )
        elif roll < 0.86:
            # Kept within the bound below, once the schedule is in order.
            bound = timing.max_clock_skew
            faults.append(
                StepClock(when, rng.choice(providers), round(rng.uniform(-bound, bound), 3))
            )
        elif roll < 0.91:
            extra = round(rng.uniform(0.1, 1.5 * timing.spawn_timeout), 3)
            faults.append(SlowSpawn(when, rng.choice(providers), extra, rng.randint(1, 2)))
        elif roll < 0.96:
            faults.append(FailSpawn(when, rng.choice(providers), rng.randint(1, 3)))
        else:
            faults.append(Handover(when, CURRENT_PRIMARY))
    focused = [] if focus is None else _FOCUS[focus](rng, timing, providers, horizon)
    if focus in _BEYOND_THE_BOUND:
        faults = _clocks_within(sorted(faults, key=lambda f: f.at), timing.max_clock_skew / 2)
        return sorted(faults + focused, key=lambda f: f.at)
    faults += focused
    faults.sort(key=lambda f: f.at)
    return _clocks_within(faults, timing.max_clock_skew / 2)


#: Margin under half the skew bound, so that float sums of steps stay inside it.
_CLOCK_MARGIN = 0.01


def _clocks_within(faults: list[Fault], half: float) -> list[Fault]:
    """``faults`` with each clock step shortened so every clock stays within ``half`` of true."""
    limit = max(half - _CLOCK_MARGIN, 0.0)
    offsets: dict[str, float] = {}
    kept: list[Fault] = []
    for fault in faults:
        if isinstance(fault, SkewClock):
            offsets[fault.who] = fault.offset
        elif isinstance(fault, StepClock):
            before = offsets.get(fault.who, 0.0)
            after = min(max(before + fault.delta, -limit), limit)
            delta = round(after - before, 3)
            if delta == 0:
                continue
            offsets[fault.who] = before + delta
            kept.append(StepClock(fault.at, fault.who, delta))
            continue
        kept.append(fault)
    return kept


def _focus_time(rng: random.Random, horizon: float) -> float:
    return round(rng.uniform(0.0, 0.85) * horizon, 3)


def _kill_at_step(
    rng: random.Random, timing: Timing, providers: Sequence[str], horizon: float
) -> list[Fault]:
    when = _focus_time(rng, horizon)
    target = rng.choice([CURRENT_PRIMARY, *providers])
    faults: list[Fault] = [Kill(when, target, rng.randint(1, 400), rng.random() < 0.3)]
    if rng.random() < 0.7:
        back = target if target != CURRENT_PRIMARY else rng.choice(providers)
        later = round(when + rng.uniform(0.5, 2 * timing.silence), 3)
        faults.append(Restart(later, back, rng.choice([None, *REACCEPT_MODES])))
    return faults


def _freeze_running(
    rng: random.Random, timing: Timing, providers: Sequence[str], horizon: float
) -> list[Fault]:
    when = _focus_time(rng, horizon)
    target = rng.choice([CURRENT_PRIMARY, CURRENT_PRIMARY, *providers])
    return [Pause(when, target, round(rng.uniform(1, 3 * timing.silence), 3), "running")]


def _restart_with(
    mode: Reaccept,
) -> Callable[[random.Random, Timing, Sequence[str], float], list[Fault]]:
    def draw(
        rng: random.Random, timing: Timing, providers: Sequence[str], horizon: float
    ) -> list[Fault]:
        when = _focus_time(rng, horizon)
        target = rng.choice(providers)
        steps = rng.choice([None, rng.randint(1, 400)])
        later = round(when + rng.uniform(0.5, 2 * timing.silence), 3)
        return [Kill(when, target, steps, rng.random() < 0.3), Restart(later, target, mode)]

    return draw


def _primary_clock_back(
    rng: random.Random, timing: Timing, providers: Sequence[str], horizon: float
) -> list[Fault]:
    """The current primary's wall clock steps back, by up to five silence windows.

    Mostly far beyond ``max_clock_skew``, so the run counts as outside the
    model; it must stay safe all the same (failure mode 31): the node caps
    its leases and the supervisor holds a monotonic deadline.
    """
    when = _focus_time(rng, horizon)
    back = round(rng.uniform(timing.max_clock_skew / 2, 5 * timing.silence), 3)
    return [StepClock(when, CURRENT_PRIMARY, -back)]


_FOCUS: dict[str, Callable[[random.Random, Timing, Sequence[str], float], list[Fault]]] = {
    "kill-at-step": _kill_at_step,
    "freeze-running": _freeze_running,
    "restart-with-created-at": _restart_with("with-created-at"),
    "restart-without-created-at": _restart_with("without-created-at"),
    "primary-clock-back": _primary_clock_back,
}

#: Focuses whose fault goes beyond ``max_clock_skew`` on purpose (not shortened).
_BEYOND_THE_BOUND = frozenset({"primary-clock-back"})

FOCUSES: tuple[str, ...] = tuple(_FOCUS)
"""The kinds of fault :func:`random_faults` can add one more of (its ``focus``)."""


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) by linear interpolation; ``None`` when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    lo = math.floor(rank)
    hi = math.ceil(rank)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


@attrs.frozen
class CampaignSummary:
    """What a campaign of simulations found.

    ``violations`` pairs each violation with the seed of the run that found
    it (rerun ``Simulation(seed=...)`` with the same schedule to see it);
    ``failover_latencies`` holds every promotion's latency.
    """

    runs: int
    seed: int
    violations: tuple[tuple[int, Violation], ...]
    failing_seeds: tuple[int, ...]
    failover_latencies: tuple[float, ...]
    double_live_seconds: float
    promotions: int
    outside_model: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """``True`` when no run found a violation."""
        return not self.violations

    def percentile(self, q: float) -> float | None:
        """Percentile ``q`` (0-100) of the failover latencies."""
        return percentile(self.failover_latencies, q)

    def format(self) -> str:
        """A printable summary."""

        def seconds(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.1f} s"

        kinds: dict[str, int] = {}
        for _, v in self.violations:
            kinds[v.kind] = kinds.get(v.kind, 0) + 1
        lines = [
            f"campaign: {self.runs} runs from seed {self.seed}",
            f"promotions: {self.promotions}",
            f"failover latency: p50 {seconds(self.percentile(50))} / "
            f"p90 {seconds(self.percentile(90))} / p99 {seconds(self.percentile(99))}",
            f"double-live: {self.double_live_seconds:.3f} s in total",
        ]
        if self.outside_model:
            lines.append("outside the safety model: " + "; ".join(self.outside_model))
        if not self.violations:
            lines.append("violations: none")
        else:
            detail = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
            lines.append(
                f"violations: {len(self.violations)} ({detail}) in {len(self.failing_seeds)} runs"
            )
            shown = sorted(set(self.failing_seeds))[:10]
            lines.append("failing seeds: " + ", ".join(str(s) for s in shown))
            seed, first = self.violations[0]
            lines.append(
                f"first, seed {seed}: [{first.kind}] t={first.at:.3f}: {first.explanation}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


@attrs.frozen
class _Outcome:
    """What one run of a campaign contributes to the summary (cheap to pickle)."""

    seed: int
    violations: tuple[Violation, ...]
    latencies: tuple[float, ...]
    double_live: float
    promotions: int
    notes: tuple[str, ...]


@attrs.frozen
class _Plan:
    """What every run of one campaign shares; a run adds its seed."""

    timing: Timing
    standbys: int
    horizon: float
    faults: tuple[Fault, ...]
    random_schedule: bool
    atomic_claims: bool
    focus: str | None = None


def schedule_for(plan: _Plan, run_seed: int) -> list[Fault]:
    """The faults of the run with ``run_seed``: the fixed ones, then its random draw."""
    schedule = list(plan.faults)
    if plan.random_schedule:
        rng = random.Random(run_seed)
        schedule += random_faults(
            rng,
            timing=plan.timing,
            standbys=plan.standbys,
            horizon=plan.horizon,
            focus=plan.focus,
        )
    return schedule


def _one(plan: _Plan, run_seed: int) -> tuple[_Outcome, SimulationReport]:
    sim = Simulation(
        timing=plan.timing,
        standbys=plan.standbys,
        seed=run_seed,
        faults=schedule_for(plan, run_seed),
        atomic_claims=plan.atomic_claims,
    )
    report = sim.run(until=plan.horizon)
    sim.close()
    outcome = _Outcome(
        seed=run_seed,
        violations=report.violations,
        latencies=tuple(
            p.failover_latency for p in report.promotions if p.failover_latency is not None
        ),
        double_live=report.double_live_seconds,
        promotions=len(report.promotions),
        notes=tuple(n for n in report.outside_model if n.startswith("timing breaks")),
    )
    return outcome, report


def _chunk(plan: _Plan, seeds: Sequence[int]) -> list[_Outcome]:
    return [_one(plan, seed)[0] for seed in seeds]


def _ignore_interrupts() -> None:
    # Workers leave Ctrl-C to the parent, which stops handing out work and
    # reports what the finished runs found.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


#: Why a campaign stopped before its last run: ``None`` (it did not),
#: ``"time limit"`` or ``"interrupted"``.
Stop: TypeAlias = "str | None"


def execute(
    chunks: Sequence[tuple[_Plan, Sequence[int]]],
    *,
    workers: int = 1,
    deadline: float | None = None,
    on_report: Callable[[int, SimulationReport], None] | None = None,
    on_chunk: Callable[[int, list[_Outcome]], None] | None = None,
) -> tuple[list[list[_Outcome]], Stop]:
    """Run each chunk's seeds under its plan; the outcomes per chunk, and why it stopped.

    ``deadline`` (a :func:`time.monotonic` value) stops handing out runs once
    passed, and Ctrl-C stops the same way: the outcomes then hold only the
    runs that finished (with several workers, whole chunks). ``on_report``
    sees every report of a single-process run; ``on_chunk`` is told of each
    finished chunk.
    """
    results: list[list[_Outcome]] = [[] for _ in chunks]
    stop: Stop = None
    if workers == 1:
        try:
            for index, (plan, seeds) in enumerate(chunks):
                for run_seed in seeds:
                    if deadline is not None and time.monotonic() >= deadline:
                        return results, "time limit"
                    outcome, report = _one(plan, run_seed)
                    if on_report is not None:
                        on_report(run_seed, report)
                    results[index].append(outcome)
                if on_chunk is not None:
                    on_chunk(index, results[index])
        except KeyboardInterrupt:
            stop = "interrupted"
        return results, stop
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_ignore_interrupts)
    futures: dict[Future[list[_Outcome]], int] = {}
    try:
        for index, (plan, seeds) in enumerate(chunks):
            futures[pool.submit(_chunk, plan, seeds)] = index
        pending = set(futures)
        while pending:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            done, pending = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
            if not done:
                stop = "time limit"
                break
            for future in done:
                index = futures[future]
                results[index] = future.result()
                if on_chunk is not None:
                    on_chunk(index, results[index])
    except KeyboardInterrupt:
        stop = "interrupted"
    finally:
        for future in futures:
            future.cancel()
        # chunks already running finish (they are short) and count
        pool.shutdown(wait=True)
    for future, index in futures.items():
        if future.done() and not future.cancelled() and not results[index]:
            results[index] = future.result()
    return results, stop


def summarize(runs_seed: int, outcomes: Iterable[_Outcome]) -> CampaignSummary:
    """The summary of ``outcomes``, a campaign whose first seed was ``runs_seed``."""
    done = list(outcomes)
    violations: list[tuple[int, Violation]] = []
    failing: list[int] = []
    latencies: list[float] = []
    notes: dict[str, None] = {}
    for outcome in done:
        if outcome.violations:
            failing.append(outcome.seed)
            violations.extend((outcome.seed, v) for v in outcome.violations)
        latencies.extend(outcome.latencies)
        for note in outcome.notes:
            notes[note] = None
    return CampaignSummary(
        runs=len(done),
        seed=runs_seed,
        violations=tuple(violations),
        failing_seeds=tuple(failing),
        failover_latencies=tuple(latencies),
        double_live_seconds=sum(o.double_live for o in done),
        promotions=sum(o.promotions for o in done),
        outside_model=tuple(notes),
    )


def run_campaign(
    runs: int,
    *,
    seed: int = 0,
    timing: Timing | None = None,
    standbys: int = 2,
    horizon: float | None = None,
    faults: Iterable[Fault] = (),
    random_schedule: bool = True,
    atomic_claims: bool = False,
    on_report: Callable[[int, SimulationReport], None] | None = None,
    workers: int = 1,
    focus: str | None = None,
) -> CampaignSummary:
    """Run ``runs`` simulations with seeds ``seed, seed + 1, ...``.

    Each run gets ``faults`` plus (with ``random_schedule``) a schedule from
    :func:`random_faults` drawn from its own seed (with ``focus``), and runs
    for ``horizon`` seconds (default: twelve silence windows). ``on_report``
    sees every report, e.g. to keep the failing ones. ``workers > 1``
    spreads the runs over that many processes (the summary is the same:
    every run depends on its seed alone); ``on_report`` then sees nothing,
    the reports stay in the workers.
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if focus is not None and focus not in _FOCUS:
        raise ValueError(f"unknown focus {focus!r}; choose from {', '.join(FOCUSES)}")
    timing = Timing() if timing is None else timing
    horizon = 12 * timing.silence if horizon is None else horizon
    plan = _Plan(timing, standbys, horizon, tuple(faults), random_schedule, atomic_claims, focus)
    seeds = list(range(seed, seed + runs))
    size = runs if workers == 1 else max(1, math.ceil(runs / (workers * 8)))
    chunks = [(plan, seeds[i : i + size]) for i in range(0, runs, size)]
    results, stop = execute(chunks, workers=workers, on_report=on_report)
    if stop == "interrupted":
        raise KeyboardInterrupt
    return summarize(seed, (o for part in results for o in part))
