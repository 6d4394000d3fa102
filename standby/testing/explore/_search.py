"""Breadth-first search over the worlds of :mod:`._world`, and what it reports.

:func:`explore` starts from every initial clock skew, expands each state
once (states are deduplicated by :func:`~._canon.canonical`), stops at the
first violation (so the path to it is a shortest one) or when the state
budget or the depth bound is reached, and returns an :class:`ExploreResult`.
"""

from __future__ import annotations

import collections
import functools
import pickle
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

import attrs

from ...core._timing import Timing
from ..simulation._faults import (
    Crash,
    Drop,
    FailSpawn,
    Fault,
    Heal,
    Partition,
    Pause,
    Restart,
    SkewClock,
)
from ._canon import canonical
from ._world import BASE, Budget, Violation, World

__all__ = ["Counterexample", "ExploreResult", "Mode", "Step", "explore", "liveness_bound"]

Mode = Literal["safety", "liveness"]
"""What :func:`explore` checks: the safety properties, or that one primary runs again."""

_DUMP = pickle.HIGHEST_PROTOCOL


def liveness_bound(timing: Timing, standbys: int) -> float:
    """How long after the faults stop exactly one primary must run (liveness mode).

    The old primary's lease runs out and its fence completes; then the
    standbys' silence with the clocks apart, the backoff of the last standby,
    one deferral to a peer whose promotion never came, and one full claim
    round with its reads and its spawn; and a retry interval for a read that
    missed its quorum just before.
    """
    return (
        timing.lease
        + timing.fence_grace
        + 2 * timing.max_clock_skew
        + timing.silence
        + standbys * timing.promotion_delay
        + timing.peer_claim_grace
        + timing.claim_timeout
        + timing.claim_settle
        + 4 * timing.query_timeout
        + timing.spawn_timeout
        + timing.retry_interval
    )


@attrs.frozen
class Step:
    """One move of a path: what happened, and when (seconds after the start)."""

    at: float
    what: str
    move: tuple[Any, ...] = attrs.field(repr=False, eq=False)

    def __str__(self) -> str:
        return f"t={self.at:>9.3f}s  {self.what}"


@attrs.frozen
class Counterexample:
    """A shortest path from the start to a violation."""

    violation: str
    skew: tuple[str, float] | None
    """The provider whose clock runs apart from the others' and by how much, if any."""
    steps: tuple[Step, ...]
    timing: Timing = attrs.field(repr=False)
    standbys: int = 2
    late_answers: bool = False
    """The violation shows when every answer after the faults comes at its deadline."""

    def __len__(self) -> int:
        return len(self.steps)

    def format(self) -> str:
        """The path as a readable schedule, one move a line, and the violation."""
        lines = ["counterexample: " + self.violation]
        if self.skew is not None:
            lines.append(f"  clocks: {self.skew[0]} runs {self.skew[1]:+g} s from the others")
        lines.extend(f"  {step}" for step in self.steps)
        return "\n".join(lines)

    def faults(self, start: float = 0.0) -> list[Fault]:
        """The path's faults as a :class:`~standby.testing.Simulation` schedule.

        ``start`` shifts every fault but the clock skew: a simulated primary
        needs a moment to start, where the explorer's starts at once.

        A loss becomes a short :class:`Drop` of the provider's messages; a
        pause a :class:`Pause` (its workload keeps running) until it resumes;
        a cut a :class:`Partition` until it heals. What the simulator's own
        latencies and seed then do between the faults is its own choice, so
        the run shows the same violation when the violation does not hang on
        one exact interleaving of answers.
        """
        out: list[Fault] = []
        if self.skew is not None:
            out.append(SkewClock(at=0.0, who=self.skew[0], offset=self.skew[1]))
        paused: dict[str, float] = {}
        failed: dict[str, int] = {}
        for step in self.steps:
            kind, at = step.move[0], step.at + start
            if kind == "crash":
                out.append(Crash(at=at, who=step.move[1]))
            elif kind == "restart":
                out.append(Restart(at=at, who=step.move[1]))
            elif kind == "cut":
                out.append(Partition(at=at, who=step.move[1], relays=tuple(step.move[2])))
            elif kind == "heal":
                out.append(Heal(at=at, who=step.move[1]))
            elif kind == "pause":
                paused[step.move[1]] = at
            elif kind == "resume":
                since = paused.pop(step.move[1])
                out.append(Pause(at=since, who=step.move[1], duration=max(at - since, 1e-3)))
            elif kind == "fail":
                failed[step.move[2]] = failed.get(step.move[2], 0) + 1
            elif (kind == "op" and step.move[2]) or kind == "drop":
                out.append(Drop(at=at, duration=self.timing.query_timeout))
        for who, since in paused.items():
            out.append(Pause(at=since, who=who, duration=3600.0))
        # A standby starts no container before its promotion: armed from the
        # start, its next starts fail, as the path's spawns did.
        out.extend(FailSpawn(at=0.0, who=who, count=n) for who, n in failed.items())
        return out

    def simulation(self, start: float = 0.0, seed: int = 0) -> Any:
        """A :class:`~standby.testing.Simulation` of the real node with :meth:`faults`.

        Its containers take the whole ``fence_grace`` to stop, as the
        explorer assumes (the simulator's default is quicker). When the
        violation needs late answers (:attr:`late_answers`), each hop
        between a provider and a relay takes nearly half of
        ``query_timeout``, so that every call answers just inside it.
        """
        from ..simulation._simulation import Simulation
        from ..simulation._world import Latencies, memory_runtime

        grace = self.timing.fence_grace
        latencies = attrs.evolve(Latencies.for_timing(self.timing), stop=(grace, grace))
        if self.late_answers:
            half = self.timing.query_timeout / 2
            latencies = attrs.evolve(latencies, network=(0.9 * half, 0.98 * half))
        return Simulation(
            timing=self.timing,
            standbys=self.standbys,
            seed=seed,
            faults=self.faults(start),
            latencies=latencies,
            runtime_factory=functools.partial(memory_runtime, stop_grace=grace),
        )

    @property
    def end(self) -> float:
        """When the violation happens (seconds after the start)."""
        return self.steps[-1].at if self.steps else 0.0


@attrs.frozen
class ExploreResult:
    """What one exploration saw."""

    mode: Mode
    states: int
    """Unique states explored."""
    depth: int
    """The deepest level of the search reached."""
    transitions: int
    seconds: float
    exhausted: bool
    """Every state within the depth bound was explored (no state budget left over)."""
    counterexample: Counterexample | None
    promoted: int = 0
    """Unique states explored in which a standby had promoted (a failover happened)."""

    @property
    def states_per_second(self) -> float:
        return self.states / self.seconds if self.seconds > 0 else float(self.states)

    @property
    def ok(self) -> bool:
        return self.counterexample is None

    def format(self) -> str:
        """The figures, and the counterexample's schedule if one was found."""
        head = (
            f"explore ({self.mode}): {self.states} unique states, depth {self.depth}, "
            f"{self.transitions} transitions, {self.seconds:.1f} s, "
            f"{self.states_per_second:.0f} states/s, {self.promoted} after a promotion"
            + (", every state within the bounds" if self.exhausted else "")
        )
        if self.counterexample is None:
            return head + "\nno violation"
        return head + "\n" + self.counterexample.format()


def initial_worlds(
    timing: Timing, standbys: int, budget: Budget, skew: bool
) -> Iterator[tuple[tuple[str, float] | None, World]]:
    """The start states: the clocks together, or one provider's apart by the bound."""
    choices: list[tuple[str, float] | None] = [None]
    if skew and timing.max_clock_skew > 0:
        names = World(timing, standbys, Budget()).providers
        choices.extend((n, sign * timing.max_clock_skew) for n in names for sign in (1, -1))
    for choice in choices:
        world = World(timing, standbys, attrs.evolve(budget))
        if choice is not None:
            world.providers[choice[0]].offset = choice[1]
        world.boot()
        yield choice, world


def explore(
    timing: Timing | None = None,
    *,
    standbys: int = 2,
    max_states: int = 100_000,
    depth: int = 60,
    budget: Budget | None = None,
    skew: bool = True,
    mode: Mode = "safety",
    horizon: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    max_seconds: float | None = None,
) -> ExploreResult:
    """Search the interleavings of the shipped machines breadth-first (see the module doc).

    ``budget`` bounds the faults of one path (default: one each of a lost
    message, a duplicated delivery, a crash, a partition and a pause);
    ``skew`` adds start states with one clock ``max_clock_skew`` apart.
    ``horizon`` (seconds; default four times the timing's longest wait)
    is how far back an instant still counts as itself in the canonical
    form. ``progress(states, depth)`` is called after each level. With
    ``max_seconds`` the search stops after that much time and reports what
    it saw.
    """
    timing = Timing() if timing is None else timing
    if standbys < 1:
        raise ValueError(f"standbys must be >= 1, got {standbys}")
    if max_states < 1:
        raise ValueError(f"max_states must be >= 1, got {max_states}")
    if depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    budget = Budget() if budget is None else budget
    if horizon is None:
        horizon = 4 * (timing.silence + timing.lease + timing.peer_claim_grace)
    started = time.perf_counter()
    parents: dict[int, tuple[int, Step] | None] = {}
    skews: dict[int, tuple[str, float] | None] = {}
    # A waiting state is its parent's pickle and the move that led to it:
    # one pickle serves all the children of a state, and a child is rebuilt
    # only when it is expanded (the frontier of a long search holds millions).
    frontier: collections.deque[tuple[int, int, bytes, tuple[Any, ...] | None]]
    frontier = collections.deque()
    transitions = 0
    reached = 0
    promoted = 0
    bound = liveness_bound(timing, standbys)

    def found(key: int, step: Step | None, violation: str, late: bool = False) -> ExploreResult:
        steps: list[Step] = [] if step is None else [step]
        at = parents.get(key)
        while at is not None:
            steps.append(at[1])
            at = parents.get(at[0])
        steps.reverse()
        root = key
        while parents.get(root) is not None:
            root = parents[root][0]  # type: ignore[index]
        example = Counterexample(violation, skews.get(root), tuple(steps), timing, standbys, late)
        return ExploreResult(
            mode,
            len(parents),
            reached,
            transitions,
            time.perf_counter() - started,
            False,
            example,
            promoted,
        )

    for choice, world in initial_worlds(timing, standbys, budget, skew):
        key = hash(canonical(world, horizon))
        if key in parents:
            continue
        parents[key] = None
        skews[key] = choice
        frontier.append((key, 0, pickle.dumps(world, _DUMP), None))
    level = 0
    while frontier:
        key, at_depth, blob, last = frontier.popleft()
        if at_depth > level:
            level = at_depth
            if progress is not None:
                progress(len(parents), level)
        if max_seconds is not None and time.perf_counter() - started > max_seconds:
            break
        reached = max(reached, at_depth)
        if at_depth >= depth:
            continue
        template = pickle.loads(blob)
        if last is not None:
            template.apply(last)  # as when it was found: the machines are deterministic
            blob = pickle.dumps(template, _DUMP)
        if mode == "liveness":
            failure = _liveness(blob, bound)
            if failure is not None:
                return found(key, None, *failure)
        moves = list(template.moves())
        for n, (what, move) in enumerate(moves, 1):
            # Each move on a fresh copy; the last one on the template itself.
            world = template if n == len(moves) else pickle.loads(blob)
            at = world.now - BASE
            transitions += 1
            try:
                world.apply(move)
            except Violation as exc:
                if mode == "safety":
                    return found(key, Step(at, what, move), str(exc))
                continue
            child = hash(canonical(world, horizon))
            if child in parents:
                continue
            parents[child] = (key, Step(at, what, move))
            if world.promotions:
                promoted += 1
            if len(parents) >= max_states:
                return ExploreResult(
                    mode, len(parents), reached, transitions,
                    time.perf_counter() - started, False, None, promoted,
                )  # fmt: skip
            frontier.append((child, at_depth + 1, blob, move))
    return ExploreResult(
        mode,
        len(parents),
        reached,
        transitions,
        time.perf_counter() - started,
        not frontier,
        None,
        promoted,
    )


def _liveness(blob: bytes, bound: float) -> tuple[str, bool] | None:
    """From a state with no fault in effect: do exactly one primary run within ``bound``?

    The faults stop: nothing is lost, no new fault happens, a crashed
    provider stays down. Two runs from the state pickled in ``blob`` must both hold: every
    answer coming at once, and every answer coming at its deadline (the
    slowest the relay model allows). Returns the failure and whether the
    answers were late, or ``None`` when the property holds (or the state
    still has a fault in effect).
    """
    world: World = pickle.loads(blob)
    if any(p.paused or p.cut for p in world.providers.values()):
        return None
    for late in (False, True):
        failure = _run_to_bound(pickle.loads(blob) if late else world, bound, late)
        if failure is not None:
            return failure, late
    return None


def _run_to_bound(world: World, bound: float, late: bool) -> str | None:
    """One run of :func:`_liveness` (``late``: each answer at its deadline)."""
    until = world.now + bound
    when = "with every answer at its deadline, " if late else ""
    try:
        for _ in range(10_000):
            move = _next_answer(world, late)
            if move is None:
                later = world.next_instant()
                if later is None or later > until:
                    break
                move = ("advance", later)
            world.apply(move)
    except Violation as exc:
        return f"after the faults stopped, {when}{exc}"
    running = [
        name
        for name, p in world.providers.items()
        if p.container is not None
        and p.container.stop_at is None
        and p.local(world.now) < p.container.lease_end
    ]
    if len(running) != 1:
        who = ", ".join(running) or "none"
        return f"{bound:g} s after the faults stopped, {when}{len(running)} primaries run ({who})"
    return None


def _next_answer(world: World, late: bool) -> tuple[Any, ...] | None:
    """The first answer due now: any at once, or (``late``) only those at their deadline."""
    if not late:
        if world.ops:
            return ("op", 0, ())
        return ("deliver", 0, False) if world.deliveries else None
    now = world.now
    for i, op in enumerate(world.ops):
        op.late = True
        if op.due <= now:
            return ("op", i, ())
    for i, d in enumerate(world.deliveries):
        if d.due <= now:
            return ("deliver", i, False)
    return None
