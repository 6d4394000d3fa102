"""The simulation's safety and liveness checkers.

Some checks run as things happen (a promotion, a spawn, a durable save);
the others read the whole run when a report is asked for: which containers
were able to act when (the runtime's record minus the time their host was
frozen), what they wrote to the fenced storage, who claimed which epoch in
which order, and which revocations or changes of primary rest on a message
nobody genuine sent. Everything is a function of the recorded run, so a
report taken halfway and one taken at the end agree on the common part.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

from ...adapters.memory import RunInterval
from ...core._models import TOKEN_EPOCH_STRIDE
from ...core._timing import Timing
from ._report import (
    EPOCH_REGRESSED,
    EPOCH_REUSED,
    FORGED_INPUT,
    LIVENESS,
    RETRY_ORDER,
    TOKEN_ORDER,
    TOKEN_SHARED,
    TWO_LIVE,
    FencedStorage,
    Promotion,
)

__all__ = ["Checks", "Disruption", "Segment"]

_EPS = 1e-6

Raw = tuple[str, float, str]
Entry = tuple[float, str, Any]


#: Disruptions that change what a provider sees of the relays.
_NETWORK_FAULTS = frozenset({"partition", "drop", "delay"})


class Disruption:
    """A fault, for deciding whether a liveness or ordering bound applied.

    ``targets`` names the providers it set back (``None``: it could set back
    anyone, unevenly); ``even`` marks faults that hit everyone alike (a relay
    outage), which excuse no ordering.
    """

    __slots__ = ("end", "even", "start", "targets", "what")

    def __init__(
        self,
        start: float,
        end: float,
        what: str,
        targets: frozenset[str] | None = None,
        *,
        even: bool = False,
    ) -> None:
        self.start = start
        self.end = end
        self.what = what
        self.targets = targets
        self.even = even

    def sets_back(self, name: str) -> bool:
        return not self.even and (self.targets is None or name in self.targets)

    def blinds(self, name: str) -> bool:
        """Whether this fault could hide messages from ``name`` alone (not from everyone).

        A standby cut off from some relays, or whose messages are lost or
        late, may miss a heartbeat its peers saw (one that reached no write
        quorum, so it never renewed the lease) and find the primary silent
        sooner: its claim may then come before a lower-indexed peer's.
        """
        return self.what in _NETWORK_FAULTS and self.sets_back(name)


class _Liveness:
    __slots__ = ("anchor", "bound", "candidate", "crashed", "crashed_at", "index")

    def __init__(
        self,
        crashed: str,
        crashed_at: float,
        anchor: float,
        bound: float,
        index: int,
        candidate: str,
    ) -> None:
        self.crashed = crashed
        self.crashed_at = crashed_at
        self.anchor = anchor
        self.bound = bound
        self.index = index
        self.candidate = candidate


class Segment:
    """A stretch of time during which one container was able to act."""

    __slots__ = ("end", "run", "start", "thawed")

    def __init__(self, run: RunInterval, start: float, end: float, thawed: bool) -> None:
        self.run = run
        self.start = start
        self.end = end
        self.thawed = thawed

    def describe(self) -> str:
        run = self.run
        text = (
            f"{run.host} (epoch {run.fencing_token // TOKEN_EPOCH_STRIDE}, token "
            f"{run.fencing_token}, running since t={run.start:.3f}"
        )
        if self.thawed:
            text += f", thawed at t={self.start:.3f}"
        return text + ")"


class Checks:
    """What the checkers have seen so far, and the checks themselves."""

    def __init__(self, timing: Timing, workload_id: str, lookback: float) -> None:
        self.timing = timing
        self.workload_id = workload_id
        self.lookback = lookback
        self.violations: list[Raw] = []
        self.promotions: list[Promotion] = []
        self.max_token = 0
        self.hb_stored: dict[str, float] = {}
        self.genuine_revocations: dict[tuple[str, int, str], float] = {}
        self.genuine_promoters: dict[tuple[str, int, str], float] = {}
        self.revoked: list[tuple[float, str, str, int, str]] = []
        self.follows: list[tuple[float, str, str, int, str]] = []
        self.claims: list[tuple[float, str, int, int]] = []
        self.tokens: dict[int, list[tuple[str, float]]] = {}
        self.saved_epochs: dict[tuple[str, str], int] = {}
        self.disruptions: list[Disruption] = []
        #: Per host, when its node process started (True) or died (False).
        self.node_states: dict[str, list[tuple[float, bool]]] = {}
        #: Per host, when a slot of the workload was first durably saved.
        self.reserved_at: dict[str, float] = {}
        self.liveness: list[_Liveness] = []
        self.two_live_windows: list[tuple[float, float]] = []  # of the last two_live()

    def violation(self, kind: str, at: float, text: str) -> None:
        self.violations.append((kind, at, text))

    # -- live checks ------------------------------------------------------

    def promoted(self, at: float, promotion: Promotion) -> None:
        token = promotion.fencing_token
        for earlier in self.promotions:
            if earlier.epoch == promotion.epoch:
                self.violation(
                    EPOCH_REUSED,
                    at,
                    f"{promotion.provider} promoted into epoch {promotion.epoch} (token {token}), "
                    f"which {earlier.provider} already won at t={earlier.at:.3f} "
                    f"(token {earlier.fencing_token})",
                )
        if token <= self.max_token:
            verb = "repeats" if token == self.max_token else "is lower than"
            self.violation(
                TOKEN_ORDER,
                at,
                f"{promotion.provider}'s fencing token {token} {verb} the highest earlier token "
                f"{self.max_token}",
            )
        self.max_token = max(self.max_token, token)
        self.promotions.append(promotion)

    def spawned(self, at: float, process: str, token: int) -> None:
        """A runtime was asked to start a container with ``token`` by ``process``."""
        users = self.tokens.setdefault(token, [])
        if any(name == process for name, _ in users):
            return
        for name, first in users:
            self.violation(
                TOKEN_SHARED,
                at,
                f"fencing token {token} was handed to two incarnations: {name} at "
                f"t={first:.3f} and {process} at t={at:.3f}",
            )
        users.append((process, at))

    def saved(self, at: float, host: str, slots: Sequence[Any]) -> None:
        """A durable save of ``host``'s slot table."""
        for slot in slots:
            if slot.workload_id == self.workload_id:
                self.reserved_at.setdefault(host, at)
            key = (host, slot.workload_id)
            previous = self.saved_epochs.get(key, -1)
            if slot.epoch < previous:
                self.violation(
                    EPOCH_REGRESSED,
                    at,
                    f"{host} saved its slot at epoch {slot.epoch} after epoch {previous}",
                )
            else:
                self.saved_epochs[key] = slot.epoch

    # -- liveness -----------------------------------------------------------

    def expect_failover(
        self, crashed: str, at: float, anchor: float, index: int, candidate: str, bound: float
    ) -> None:
        """A new primary is due by ``bound`` unless something disturbed the failover."""
        self.liveness.append(_Liveness(crashed, at, anchor, bound, index, candidate))

    def decide_liveness(self, now: float) -> None:
        pending = []
        for check in self.liveness:
            if check.bound > now:
                pending.append(check)
                continue
            start = check.crashed_at - self.lookback
            disturbed = any(
                d.start <= check.bound
                and d.end >= start
                and not (d.what == f"crash of {check.crashed}" and d.start == check.crashed_at)
                for d in self.disruptions
            )
            if disturbed:
                continue
            if any(check.crashed_at <= p.at <= check.bound for p in self.promotions):
                continue
            later = [p for p in self.promotions if p.at > check.bound]
            outcome = (
                f"the first ran at t={later[0].at:.3f} ({later[0].provider})"
                if later
                else "none ran"
            )
            self.violation(
                LIVENESS,
                check.bound,
                f"{check.crashed} crashed at t={check.crashed_at:.3f}, its last heartbeat left "
                f"at t={check.anchor:.3f}; {check.candidate} (index {check.index}) and the relays "
                f"stayed reachable, so a new primary was due by t={check.bound:.3f}, but "
                f"{outcome}",
            )
        self.liveness = pending

    # -- checks over the whole run -----------------------------------------

    def forged(self) -> list[Raw]:
        out: list[Raw] = []
        for at, who, wid, epoch, primary in self.revoked:
            seen = self.genuine_revocations.get((wid, epoch, primary))
            if seen is None or seen > at:
                out.append(
                    (
                        FORGED_INPUT,
                        at,
                        f"{who} accepted a revocation of epoch {epoch} that its primary "
                        f"{primary} never published",
                    )
                )
        for at, who, wid, epoch, new in self.follows:
            if (wid, epoch, new) not in self.genuine_promoters:
                out.append(
                    (
                        FORGED_INPUT,
                        at,
                        f"{who} now follows {new} as primary of epoch {epoch}, but {new} never "
                        "claimed or announced that epoch",
                    )
                )
        return out

    def retry_order(self) -> list[Raw]:
        """Every claim of an epoch keeps the standby order, unless someone was set back."""
        first: dict[tuple[int, int], tuple[float, str]] = {}
        for at, who, epoch, index in self.claims:
            first.setdefault((epoch, index), (at, who))
        out: list[Raw] = []
        for (epoch, index), (at, who) in sorted(first.items()):
            for (other_epoch, lower), (other_at, other) in first.items():
                if other_epoch != epoch or lower >= index or other_at <= at:
                    continue
                window = at - self.lookback
                excused = (
                    self.was_down(other, window, at)
                    or any(
                        d.start <= at and d.end >= window and d.sets_back(other)
                        for d in self.disruptions
                    )
                    or any(
                        d.start <= at and d.end >= window and d.blinds(who)
                        for d in self.disruptions
                    )
                )
                if not excused:
                    out.append(
                        (
                            RETRY_ORDER,
                            at,
                            f"{who} (index {index}) claimed epoch {epoch} at t={at:.3f}, before "
                            f"{other} (index {lower}) did at t={other_at:.3f}, though nothing "
                            f"set {other} back",
                        )
                    )
        return out

    def acting(
        self,
        runs: Sequence[RunInterval],
        freezes: dict[str, list[tuple[float, float | None]]],
        now: float,
    ) -> list[Segment]:
        """Split each run into the stretches its host was not frozen."""
        segments: list[Segment] = []
        for run in runs:
            start = run.start
            end = now if run.end is None else min(run.end, now)
            thawed = False
            for f_start, f_end in freezes.get(run.host, ()):
                stop = now if f_end is None else f_end
                if stop <= start or f_start >= end:
                    continue
                if f_start > start:
                    segments.append(Segment(run, start, f_start, thawed))
                start, thawed = stop, True
            if end > start or (end == start and not thawed):
                segments.append(Segment(run, start, end, thawed))
        return segments

    def node_state(self, at: float, host: str, *, up: bool) -> None:
        """``host``'s node process started (``up``) or died at ``at``."""
        self.node_states.setdefault(host, []).append((at, up))

    def was_down(self, host: str, start: float, end: float) -> bool:
        """Whether ``host``'s node was down at some time in ``[start, end]``.

        A node that was not running (crashed, killed, not yet restarted) in
        the window before a rival's claim was set back: it could not claim.
        """
        up = False
        for when, state in self.node_states.get(host, ()):
            if when > end:
                break
            if when <= start:
                up = state
            elif not state:
                return True
        return not up

    def can_take_over(self, host: str, at: float) -> bool:
        """Whether standby ``host`` could still promote at ``at``.

        Its reservation must have been made durable (a standby whose node
        died before its slot was saved holds none, unless the host sends the
        request again), its node must run then, and it must never have handed
        a token of the workload to its runtime before: a provider promotes at
        most once per workload (guarantee 5), so a standby that was primary
        once, or that gave a promotion up, no longer stands by for it.
        """
        if self.reserved_at.get(host, math.inf) > at:
            return False
        up = False
        for when, state in self.node_states.get(host, ()):
            if when <= at:
                up = state
        if not up:
            return False
        return not any(
            process.rpartition("#")[0] == host and first <= at
            for users in self.tokens.values()
            for process, first in users
        )

    def availability(
        self, segments: Sequence[Segment], standbys: Sequence[str], now: float
    ) -> list[Raw]:
        """The workload runs again within a bound of the last fault that could stop it.

        A gap during which no container of the workload could act must end
        within ``bound`` of the later of its start and the end of the last
        disruption that began before it ended; a gap that stays open forever
        (a restarted primary heartbeating for a workload it no longer runs,
        say) is reported once the bound has passed. It is demanded only while
        some standby can still take over at the bound (:meth:`can_take_over`):
        once every standby is down or has been primary, nobody is left.
        """
        if not standbys:
            return []
        timing = self.timing
        bound = (
            timing.lease
            + timing.silence
            + len(standbys) * timing.promotion_delay
            + timing.claim_settle
            + timing.max_spawn_attempts * (timing.spawn_timeout + timing.spawn_retry_backoff)
            + 5 * timing.query_timeout
            + 4 * timing.retry_interval
            + timing.max_clock_skew
        )
        covered = sorted((s.start, s.end) for s in segments)
        if not covered:
            return []
        gaps: list[tuple[float, float]] = []
        reach = covered[0][1]
        for start, end in covered[1:]:
            if start > reach:
                gaps.append((reach, start))
            reach = max(reach, end)
        if reach < now:
            gaps.append((reach, now))
        out: list[Raw] = []
        for g0, g1 in gaps:
            anchor = max([g0, *(d.end for d in self.disruptions if d.start < g1)])
            due = anchor + bound
            if due >= g1 or not any(self.can_take_over(name, due) for name in standbys):
                continue
            until = "the end of the run" if g1 >= now else f"t={g1:.3f}"
            out.append(
                (
                    LIVENESS,
                    due,
                    f"no container of {self.workload_id!r} could act from t={g0:.3f} to "
                    f"{until}; the last fault before that ended at t={anchor:.3f}, so one was "
                    f"due by t={due:.3f}",
                )
            )
        return out

    def two_live(self, segments: Sequence[Segment], now: float) -> tuple[list[Raw], float]:
        """Windows in which two containers could act at once (see :meth:`excused`)."""
        points = sorted({s.start for s in segments} | {s.end for s in segments})
        self.two_live_windows = []
        out: list[Raw] = []
        total = 0.0
        open_start: float | None = None
        members: list[Segment] = []
        for lo, hi in itertools.pairwise(points):
            active = [s for s in segments if s.start <= lo and s.end >= hi and s.end > s.start]
            bad = len(active) >= 2 and not self.excused(active, lo, hi)
            if bad:
                if open_start is None:
                    open_start = lo
                members.extend(s for s in active if s not in members)
                continue
            if open_start is not None:
                total += self._close(out, open_start, lo, members, now)
                open_start, members = None, []
        if open_start is not None:
            total += self._close(out, open_start, points[-1], members, now)
        return out, total

    def excused(self, active: Sequence[Segment], lo: float, hi: float) -> bool:
        """A container thawed with its host may act for ``fence_grace`` with a lower token."""
        top = max(s.run.fencing_token for s in active)
        grace = self.timing.fence_grace
        return (
            all(s.run.fencing_token == top or (s.thawed and hi <= s.start + grace) for s in active)
            and sum(1 for s in active if s.run.fencing_token == top) == 1
        )

    def _close(
        self, out: list[Raw], start: float, end: float, members: list[Segment], now: float
    ) -> float:
        duration = end - start
        if duration <= _EPS:
            return duration
        ongoing = end >= now and any(s.run.end is None for s in members)
        until = "still running at the end of the run" if ongoing else f"until t={end:.3f}"
        who = " and ".join(s.describe() for s in members)
        self.two_live_windows.append((start, end))
        out.append(
            (
                TWO_LIVE,
                start,
                f"two containers of {self.workload_id!r} ran at once for {duration:.3f} s "
                f"({until}): {who}",
            )
        )
        return duration

    @staticmethod
    def writes(segments: Sequence[Segment], interval: float, storage: FencedStorage) -> list[Entry]:
        """Every acting container writes when it starts or thaws, then every ``interval``."""
        if interval <= 0:
            return []
        attempts: list[tuple[float, int, str, int]] = []
        for s in segments:
            at = s.start
            while True:
                attempts.append((at, s.run.handle, s.run.host, s.run.fencing_token))
                at += interval
                if at >= s.end:
                    break
        attempts.sort()
        lines: list[Entry] = []
        for at, _handle, host, token in attempts:
            highest = storage.highest
            if not storage.write(at, host, token):
                lines.append(
                    (
                        at,
                        host,
                        (
                            "storage REJECTED a write with stale token %d (highest %d)",
                            (token, highest),
                        ),
                    )
                )
        return lines
