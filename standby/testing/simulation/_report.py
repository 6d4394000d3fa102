"""What a simulation run produced: violations, promotions, storage, the timeline."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from ...core._effects import (
    Announce,
    CheckContainer,
    CompareAndSetClaim,
    Dropped,
    PrimaryChanged,
    Promoted,
    PublishClaim,
    PublishRevocation,
    QueryClaims,
    QueryHeartbeats,
    QuorumShortfall,
    ReclaimContainer,
    SlotRemoved,
    SlotSaved,
    Spawn,
    StartContainer,
    StateChanged,
    StopContainer,
    StopOrphan,
    WithdrawClaim,
)
from ...core._timing import Timing

if TYPE_CHECKING:
    from ._history import RunHistory

__all__ = [
    "BASE_TIME",
    "FencedStorage",
    "Promotion",
    "SimulationReport",
    "StorageWrite",
    "Timeline",
    "Violation",
]

BASE_TIME = 1_700_000_000.0
"""Wall-clock reading (Unix seconds) of virtual time 0 on a clock without skew."""

# Violation kinds.
TWO_LIVE = "two-live"
EPOCH_REUSED = "epoch-reused"
TOKEN_ORDER = "token-order"
EPOCH_REGRESSED = "epoch-regressed"
LIVENESS = "liveness"
FORGED_INPUT = "forged-input"
TOKEN_SHARED = "token-shared"
RETRY_ORDER = "retry-order"
NODE_FAILED = "node-failed"

VIOLATION_KINDS = (
    TWO_LIVE,
    EPOCH_REUSED,
    TOKEN_ORDER,
    EPOCH_REGRESSED,
    LIVENESS,
    FORGED_INPUT,
    TOKEN_SHARED,
    RETRY_ORDER,
    NODE_FAILED,
)


@attrs.frozen
class Violation:
    """A broken guarantee, found by one of the simulation's checkers.

    ``kind`` is one of ``"two-live"`` (two containers of the workload ran at
    once), ``"epoch-reused"`` (two standbys promoted into one epoch),
    ``"token-order"`` (a fencing token did not exceed every earlier one),
    ``"epoch-regressed"`` (a standby's slot went back to an older epoch),
    ``"liveness"`` (no new primary within the bound after a crash),
    ``"forged-input"`` (a revocation or a change of primary not backed by a
    genuine message), ``"token-shared"`` (one fencing token handed to two
    incarnations of the node, on one host or two), ``"retry-order"`` (a
    standby claimed an epoch before a lower-indexed one that nothing set
    back) and ``"node-failed"`` (a node process died of an exception).
    ``at`` is virtual time; ``excerpt`` is the part of the timeline around
    it.
    """

    kind: str
    at: float
    explanation: str
    excerpt: str = attrs.field(repr=False, default="")

    def __str__(self) -> str:
        text = f"[{self.kind}] at t={self.at:.3f}: {self.explanation}"
        if self.excerpt:
            text += "\n" + self.excerpt
        return text


@attrs.frozen
class Promotion:
    """A standby that ran the workload as the new primary.

    ``at`` is the virtual time its container was running; ``failover_latency``
    is measured from the previous primary's last heartbeat that reached a relay
    (or from that primary's own promotion when none did).
    """

    at: float
    provider: str
    epoch: int
    fencing_token: int
    previous_primary: str
    failover_latency: float | None


@attrs.frozen
class StorageWrite:
    """One write attempt against :class:`FencedStorage`."""

    at: float
    writer: str
    fencing_token: int
    accepted: bool
    highest_before: int


class FencedStorage:
    """Storage that accepts a write only with a fencing token >= the highest seen.

    Every container of the workload writes to it periodically with the token
    it was started with, so a stale writer (a primary that was paused past its
    lease) is rejected once the new primary has written.
    """

    def __init__(self) -> None:
        self.highest = -1
        self.accepted = 0
        self.rejected: list[StorageWrite] = []

    def write(self, at: float, writer: str, token: int) -> bool:
        """Attempt a write; returns whether it was accepted."""
        highest = self.highest
        if token >= highest:
            self.highest = token
            self.accepted += 1
            return True
        self.rejected.append(StorageWrite(at, writer, token, False, highest))
        return False


def _w(value: float) -> str:
    """A wall-clock value as seconds since the simulation's base time."""
    return f"{value - BASE_TIME:.3f}"


def _claim_line(e: PublishClaim | CompareAndSetClaim) -> str:
    verb = "publish" if isinstance(e, PublishClaim) else "compare-and-set"
    c = e.claim
    return (
        f"{verb} claim on epoch {c.epoch} (token {c.fencing_token}, "
        f"claimed at {_w(c.claimed_at)}) [request {e.request_id}]"
    )


#: How each effect reads on the timeline: a template (``{e.field}``) or a function.
_EFFECT_LINES: tuple[tuple[type[Any] | tuple[type[Any], ...], str | Callable[[Any], str]], ...] = (
    (
        QueryHeartbeats,
        lambda e: f"query heartbeats of {e.primary} since {_w(e.since)} [request {e.request_id}]",
    ),
    (
        QueryClaims,
        lambda e: f"query claims of {', '.join(e.workload_ids)} [request {e.request_id}]",
    ),
    ((PublishClaim, CompareAndSetClaim), _claim_line),
    (WithdrawClaim, "withdraw claim on epoch {e.claim.epoch}"),
    (Spawn, "spawn epoch {e.epoch} with token {e.fencing_token} [request {e.request_id}]"),
    (Announce, "announce new primary {e.announcement.new_primary} of epoch {e.announcement.epoch}"),
    (
        Promoted,
        lambda e: (
            f"promoted: epoch {e.epoch}, token {e.fencing_token}, standbys {list(e.standbys)}"
        ),
    ),
    (StopOrphan, "stop orphan container (token {e.fencing_token}): {e.reason}"),
    (
        SlotSaved,
        "slot saved: primary {e.slot.primary}, epoch {e.slot.epoch}, index {e.slot.standby_index}",
    ),
    (SlotRemoved, "slot removed ({e.reason})"),
    (PrimaryChanged, "follow {e.new_primary} as primary of epoch {e.epoch} (was {e.old_primary})"),
    (Dropped, "dropped ({e.reason.value}) from {e.signer}: {e.detail}"),
    (QuorumShortfall, "quorum shortfall at {e.stage}: {e.answered} of {e.needed} relays"),
    (StateChanged, "lifecycle {e.old.value} -> {e.new.value} ({e.reason})"),
    (StartContainer, "start container with token {e.fencing_token} (attempt {e.attempt})"),
    (StopContainer, "stop container ({e.reason})"),
    (PublishRevocation, "publish revocation of epoch {e.revocation.epoch} ({e.revocation.reason})"),
    (CheckContainer, "check container status"),
    (ReclaimContainer, "reclaim stopped container"),
)


def describe(payload: Any) -> str:
    """One readable line for a timeline payload (a string, a format pair or an effect)."""
    if isinstance(payload, str):
        return payload
    if isinstance(payload, tuple):
        fmt, args = payload
        return str(fmt % args)
    for kinds, line in _EFFECT_LINES:
        if isinstance(payload, kinds):
            return line(payload) if callable(line) else line.format(e=payload)
    return repr(payload)


Entry = tuple[float, str, Any]


class Timeline:
    """The recorded events of a run, formatted on demand.

    Entries are recorded as cheap tuples and only turned into text when the
    timeline is printed, so recording costs little when nobody reads it. The
    text depends only on the seed and the schedule, never on the process.
    """

    def __init__(self, entries: Sequence[Entry], end: int | None = None) -> None:
        self._entries = entries
        self._end = len(entries) if end is None else end

    def __len__(self) -> int:
        return self._end

    def __iter__(self) -> Iterator[str]:
        for i in range(self._end):
            yield self._line(self._entries[i])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Timeline):
            return NotImplemented
        return self.lines() == other.lines()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<Timeline of {self._end} events>"

    def __str__(self) -> str:
        return "\n".join(self)

    @staticmethod
    def _line(entry: Entry) -> str:
        at, actor, payload = entry
        return f"{at:11.3f}  {actor:<10}  {describe(payload)}"

    def lines(self) -> list[str]:
        """Every line of the timeline."""
        return list(self)

    def between(self, start: float, end: float) -> list[str]:
        """Lines recorded at virtual times in ``[start, end]``."""
        return [self._line(e) for e in self._slice(start, end)]

    def excerpt(self, at: float, *, before: int = 14, after: int = 8) -> str:
        """Up to ``before`` lines up to ``at`` and ``after`` lines after it."""
        times = [self._entries[i][0] for i in range(self._end)]
        pivot = bisect.bisect_right(times, at)
        lo = max(0, pivot - before)
        hi = min(self._end, pivot + after)
        return "\n".join(self._line(self._entries[i]) for i in range(lo, hi))

    def _slice(self, start: float, end: float) -> list[Entry]:
        return [e for e in (self._entries[i] for i in range(self._end)) if start <= e[0] <= end]


@attrs.frozen(eq=False)
class SimulationReport:
    """Everything one :meth:`Simulation.run` found, cumulative since virtual time 0.

    ``double_live_seconds`` is the total virtual time during which two or
    more containers of the workload ran at once; ``failover_latency`` is the
    first promotion's latency from the previous primary's last heartbeat;
    ``outside_model`` lists what the run did that the safety model does not
    cover (an unsafe timing, a pause, clock skew beyond the bound, a relay
    that lost events), which is where violations are expected.
    """

    seed: int
    until: float
    timing: Timing
    standbys: int
    relays: int
    violations: tuple[Violation, ...]
    double_live_seconds: float
    failover_latency: float | None
    promotions: tuple[Promotion, ...]
    stale_writes: tuple[StorageWrite, ...]
    storage_writes_accepted: int
    outside_model: tuple[str, ...]
    drops: tuple[tuple[str, int], ...]
    timeline: Timeline
    history: RunHistory | None = None
    """The course of the run for drawing it (see :meth:`to_svg`)."""

    @property
    def ok(self) -> bool:
        """``True`` when no checker found a violation."""
        return not self.violations

    def violations_of(self, kind: str) -> list[Violation]:
        """The violations of one ``kind``."""
        return [v for v in self.violations if v.kind == kind]

    def format(self, *, timeline: bool = False) -> str:
        """A printable summary (with the whole timeline when asked)."""
        out = [
            f"simulation: seed {self.seed}, {self.standbys} standbys, {self.relays} relays, "
            f"until t={self.until:.1f} s, timing "
            + ("safe" if self.timing.is_safe else "UNSAFE (built with unsafe_unchecked)"),
        ]
        if self.outside_model:
            out.append("outside the safety model:")
            out.extend(f"  - {note}" for note in self.outside_model)
        out.append(f"promotions: {len(self.promotions)}")
        for p in self.promotions:
            latency = (
                ""
                if p.failover_latency is None
                else f", {p.failover_latency:.1f} s after the "
                f"last heartbeat of {p.previous_primary}"
            )
            out.append(
                f"  t={p.at:10.3f}  {p.provider:<10} epoch {p.epoch}  token {p.fencing_token}"
                f"{latency}"
            )
        latency_text = "n/a" if self.failover_latency is None else f"{self.failover_latency:.3f} s"
        out.append(f"failover latency: {latency_text}")
        out.append(f"double-live: {self.double_live_seconds:.3f} s")
        out.append(
            f"storage: {self.storage_writes_accepted} writes accepted, "
            f"{len(self.stale_writes)} stale writes rejected"
        )
        shown = 5
        out.extend(
            f"  t={w.at:10.3f}  {w.writer} wrote with token {w.fencing_token} < highest "
            f"{w.highest_before}: rejected"
            for w in self.stale_writes[:shown]
        )
        if len(self.stale_writes) > shown:
            out.append(f"  ... and {len(self.stale_writes) - shown} more")
        if self.drops:
            out.append(
                "inputs dropped by the core: " + ", ".join(f"{k} {n}" for k, n in self.drops)
            )
        if not self.violations:
            out.append("violations: none")
        else:
            out.append(f"violations: {len(self.violations)}")
            for v in self.violations:
                out.append(f"  [{v.kind}] t={v.at:.3f}: {v.explanation}")
                if v.excerpt:
                    out.extend("      " + line for line in v.excerpt.splitlines())
        if timeline:
            out.append("timeline:")
            out.append(str(self.timeline))
        return "\n".join(out)

    def __str__(self) -> str:
        return self.format()

    def to_svg(self) -> str:
        """The run drawn as an SVG timeline (see :func:`standby.testing.timeline_svg`)."""
        from ._svg import timeline_svg

        return timeline_svg(self)
