"""The fault configurations a campaign covers, and the long campaign over all of them.

A :class:`Configuration` is one way of running random schedules (a timing
preset, relays, standbys, claims, one kind of fault every schedule also
gets); :data:`CONFIGURATIONS` lists every one the command line offers, and
both the CI campaign (``tests/test_campaign.py``) and ``python -m standby
campaign`` run them all. Adding a configuration here adds it to both.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Iterable, Sequence

import attrs

from ...core._timing import Timing
from ._campaign import (
    FOCUSES,
    CampaignSummary,
    Stop,
    _Outcome,
    _Plan,
    execute,
    percentile,
    schedule_for,
    summarize,
)
from ._report import Violation
from ._shrink import ShrunkSchedule, fault_flags, number_text, shrink

__all__ = [
    "CONFIGURATIONS",
    "PRESETS",
    "Configuration",
    "ConfigurationsSummary",
    "preset",
    "run_configurations",
    "shrink_run",
    "simulate_command",
]

PRESETS = ("default", "fast", "reference-unsafe")


def preset(name: str, relays: int = 3) -> Timing:
    """A named timing for ``relays`` relays with a majority write quorum.

    ``reference-unsafe`` is the reference provider's setting: the primary
    steps down only after 120 s + 300 s without quorum (lease 420 s) while
    standbys promote after 180 s of silence. ``Timing`` rejects it, so it is
    built with :meth:`Timing.unsafe_unchecked`.
    """
    write = relays // 2 + 1
    quorums = {"relay_count": relays, "write_quorum": write, "read_quorum": relays - write + 1}
    if name == "default":
        return attrs.evolve(Timing(), **quorums)
    if name == "fast":
        return attrs.evolve(Timing.fast(), **quorums)
    if name == "reference-unsafe":
        return Timing.unsafe_unchecked(lease=420.0, suspect_after=120.0, **quorums)
    raise ValueError(f"unknown timing preset {name!r}; choose from {', '.join(PRESETS)}")


def simulate_command(
    *,
    seed: int,
    until: float,
    timing: str = "default",
    relays: int = 3,
    standbys: int = 2,
    atomic_claims: bool = False,
    random_faults: bool = False,
    focus: str | None = None,
    extra: Sequence[str] = (),
) -> str:
    """The ``python -m standby simulate`` command line of one run, quoted for a shell."""
    argv = ["python", "-m", "standby", "simulate"]
    if random_faults:
        argv.append("--random-faults")
    argv += ["--seed", str(seed)]
    if timing != "default":
        argv += ["--timing", timing]
    if relays != 3:
        argv += ["--relays", str(relays)]
    if standbys != 2:
        argv += ["--standbys", str(standbys)]
    if atomic_claims:
        argv.append("--atomic-claims")
    if focus is not None:
        argv += ["--focus", focus]
    argv += ["--until", number_text(until)]
    argv += extra
    return shlex.join(argv)


@attrs.frozen
class Configuration:
    """One way of running random fault schedules.

    ``timing`` names a preset (see :func:`preset`), ``focus`` a kind of
    fault each schedule also gets (see :func:`~standby.testing.random_faults`),
    and each run lasts ``windows`` silence windows.
    """

    name: str
    timing: str = "default"
    relays: int = 3
    standbys: int = 2
    atomic_claims: bool = False
    focus: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.in_(FOCUSES))
    )
    windows: float = 6.0

    @property
    def timing_value(self) -> Timing:
        """The :class:`~standby.Timing` of the preset."""
        return preset(self.timing, self.relays)

    @property
    def horizon(self) -> float:
        """How long each run lasts, in virtual seconds."""
        return self.windows * self.timing_value.silence

    def plan(self) -> _Plan:
        """The campaign plan of this configuration."""
        return _Plan(
            self.timing_value,
            self.standbys,
            self.horizon,
            (),
            True,
            self.atomic_claims,
            self.focus,
        )

    def command(self, seed: int) -> str:
        """The command that reruns this configuration's run with ``seed`` on its own."""
        return simulate_command(
            seed=seed,
            until=self.horizon,
            timing=self.timing,
            relays=self.relays,
            standbys=self.standbys,
            atomic_claims=self.atomic_claims,
            random_faults=True,
            focus=self.focus,
        )


CONFIGURATIONS: tuple[Configuration, ...] = (
    Configuration("default"),
    Configuration("four-standbys", standbys=4),
    Configuration("five-relays", relays=5),
    Configuration("fast-atomic-three-standbys", timing="fast", standbys=3, atomic_claims=True),
    Configuration("kill-at-step", focus="kill-at-step"),
    Configuration("freeze-running", focus="freeze-running"),
    Configuration("restart-with-created-at", focus="restart-with-created-at"),
    Configuration("restart-without-created-at", focus="restart-without-created-at"),
    Configuration("primary-clock-back", focus="primary-clock-back"),
)
"""Every fault configuration the command line offers, as campaigns run them."""


def by_name(names: Iterable[str]) -> tuple[Configuration, ...]:
    """The configurations called ``names`` (``ValueError`` naming the choices otherwise)."""
    known = {c.name: c for c in CONFIGURATIONS}
    chosen = []
    for name in names:
        if name not in known:
            raise ValueError(f"unknown configuration {name!r}; choose from {', '.join(known)}")
        chosen.append(known[name])
    return tuple(chosen)


@attrs.frozen
class ConfigurationsSummary:
    """What a campaign over several configurations found.

    Schedule ``n`` ran configuration ``n mod len(configurations)`` with seed
    ``seed + n``. ``stopped`` says why it ended early (``"time limit"``,
    ``"interrupted"``) or is ``None``; ``elapsed`` is wall-clock seconds.
    """

    seed: int
    requested: int
    workers: int
    elapsed: float
    stopped: Stop
    results: tuple[tuple[Configuration, CampaignSummary], ...]

    @property
    def runs(self) -> int:
        """How many schedules ran to the end."""
        return sum(s.runs for _, s in self.results)

    @property
    def ok(self) -> bool:
        """``True`` when no run found a violation."""
        return all(s.ok for _, s in self.results)

    @property
    def rate(self) -> float:
        """Schedules per wall-clock second."""
        return self.runs / self.elapsed if self.elapsed > 0 else 0.0

    def failures(self) -> list[tuple[Configuration, int, tuple[Violation, ...]]]:
        """Each failing run: its configuration, its seed and its violations."""
        out = []
        for config, summary in self.results:
            for seed in summary.failing_seeds:
                found = tuple(v for s, v in summary.violations if s == seed)
                out.append((config, seed, found))
        return sorted(out, key=lambda f: f[1])

    def format(self, *, shown: int = 5) -> str:
        """A printable summary; at most ``shown`` failing runs per checker are listed."""
        lines = [
            f"campaign: {self.runs} of {self.requested} schedules from seed {self.seed} in "
            f"{self.elapsed:.1f} s ({self.rate:.1f} schedules/s, {self.workers} workers)"
            + ("" if self.stopped is None else f", stopped early ({self.stopped})"),
            f"{'configuration':<28} {'schedules':>9} {'promotions':>10} {'p50 failover':>12} "
            f"{'violations':>10}",
        ]
        for config, s in self.results:
            p50 = percentile(s.failover_latencies, 50)
            lines.append(
                f"{config.name:<28} {s.runs:>9} {s.promotions:>10} "
                f"{'n/a' if p50 is None else f'{p50:.1f} s':>12} {len(s.violations):>10}"
            )
        failures = self.failures()
        if not failures:
            lines.append("violations: none")
            return "\n".join(lines)
        kinds: dict[str, list[tuple[Configuration, int]]] = {}
        for config, seed, found in failures:
            for kind in sorted({v.kind for v in found}):
                kinds.setdefault(kind, []).append((config, seed))
        total = sum(len(found) for _, _, found in failures)
        lines.append(
            f"violations: {total} in {len(failures)} runs; by checker: "
            + ", ".join(f"{kind} {len(runs)} runs" for kind, runs in sorted(kinds.items()))
        )
        for kind, runs in sorted(kinds.items()):
            lines.append(f"[{kind}] failing runs:")
            for config, seed in runs[:shown]:
                lines.append(f"  {config.name} seed {seed}: {config.command(seed)}")
            if len(runs) > shown:
                lines.append(f"  ... and {len(runs) - shown} more")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def run_configurations(
    schedules: int,
    *,
    seed: int,
    configurations: Sequence[Configuration] = CONFIGURATIONS,
    workers: int = 1,
    max_seconds: float | None = None,
    chunk: int = 20,
    on_progress: Callable[[int, int], None] | None = None,
) -> ConfigurationsSummary:
    """Run ``schedules`` random schedules spread evenly over ``configurations``.

    Schedule ``n`` runs configuration ``n mod len(configurations)`` with seed
    ``seed + n``, so every run can be rerun on its own
    (:meth:`Configuration.command`). The runs go out in rounds of ``chunk``
    per configuration over ``workers`` processes; ``max_seconds`` (wall
    clock) or Ctrl-C stops handing out runs, and the summary covers the runs
    that finished. ``on_progress(done, violations)`` is told after each chunk.
    """
    if schedules < 1:
        raise ValueError(f"schedules must be >= 1, got {schedules}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if not configurations:
        raise ValueError("no configuration to run")
    count = len(configurations)
    plans = [c.plan() for c in configurations]
    chunks: list[tuple[_Plan, list[int]]] = []
    owner: list[int] = []
    for start in range(0, schedules, count * chunk):
        end = min(start + count * chunk, schedules)
        for k in range(count):
            seeds = [seed + n for n in range(start + k, end, count)]
            if seeds:
                chunks.append((plans[k], seeds))
                owner.append(k)
    began = time.monotonic()
    deadline = None if max_seconds is None else began + max_seconds
    tally = [0, 0]

    def progress(_index: int, outcomes: list[_Outcome]) -> None:
        tally[0] += len(outcomes)
        tally[1] += sum(1 for o in outcomes if o.violations)
        if on_progress is not None:
            on_progress(tally[0], tally[1])

    results, stopped = execute(chunks, workers=workers, deadline=deadline, on_chunk=progress)
    elapsed = time.monotonic() - began
    per_config: list[list[_Outcome]] = [[] for _ in configurations]
    for k, outcomes in zip(owner, results, strict=True):
        per_config[k].extend(outcomes)
    return ConfigurationsSummary(
        seed=seed,
        requested=schedules,
        workers=workers,
        elapsed=elapsed,
        stopped=stopped,
        results=tuple(
            (config, summarize(seed + k, per_config[k])) for k, config in enumerate(configurations)
        ),
    )


def shrink_run(
    config: Configuration,
    seed: int,
    *,
    kinds: Iterable[str] | None = None,
    max_runs: int = 400,
) -> tuple[ShrunkSchedule, str]:
    """Shrink the failing run ``seed`` of ``config``; the result and its command line."""
    shrunk = shrink(
        schedule_for(config.plan(), seed),
        config.horizon,
        kinds=kinds,
        max_runs=max_runs,
        seed=seed,
        timing=config.timing_value,
        standbys=config.standbys,
        atomic_claims=config.atomic_claims,
    )
    command = simulate_command(
        seed=seed,
        until=shrunk.until,
        timing=config.timing,
        relays=config.relays,
        standbys=config.standbys,
        atomic_claims=config.atomic_claims,
        extra=fault_flags(shrunk.faults),
    )
    return shrunk, command
