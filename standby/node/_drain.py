"""Drain and stop: the host moves every workload off this node, or stops them for good.

:meth:`Drainer.drain` hands each workload this node runs as primary to its
standbys (fence, stop, signed revocation: the lifecycle's ``handover``),
then reads the relays until a read quorum shows each one announced by a
standby in a later epoch, or the deadline passes; the report says what was
taken over and, for the rest, why not. :meth:`Drainer.stop_workloads`
stops every workload this node runs for good (the lifecycle's ``stop``: a
replicated one is revoked too, so its standbys take over at once) and
waits until each container is known stopped.

Both wait on the node's clock (:func:`anyio.current_time`), so a test runs
them in virtual time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Generic, TypeVar

import anyio
import attrs

from ..core._errors import StandbyError
from ..core._lifecycle import Revocation
from ..core._timing import Timing
from ._epochs import EpochsRead
from ._observe import Observer
from ._primary import PrimarySide

__all__ = ["DrainReport", "Drainer", "StopReport", "TakenOver", "takeover_within"]

SpecT = TypeVar("SpecT")


def _frozen_map(value: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(value))


@attrs.frozen
class TakenOver:
    """A workload a standby took over from this node during a drain."""

    workload_id: str
    epoch: int
    """The epoch this node ran."""
    new_epoch: int
    """The later epoch announced by the standby."""
    by: str
    """The standby that announced it."""


@attrs.frozen
class DrainReport:
    """What :meth:`~standby.node.StandbyNode.drain` did.

    ``taken_over``: the workloads a standby announced in a later epoch, seen
    on a read quorum. ``not_handed_over``: every other workload that ran
    here, with why (no standbys, the revocation not acknowledged, no standby
    announced it before the deadline, no read quorum).
    """

    taken_over: tuple[TakenOver, ...]
    not_handed_over: Mapping[str, str] = attrs.field(converter=_frozen_map)

    @property
    def complete(self) -> bool:
        """Whether every workload was taken over by a standby."""
        return not self.not_handed_over


@attrs.frozen
class StopReport:
    """What :meth:`~standby.node.StandbyNode.stop_workloads` did.

    ``stopped``: the workloads whose container is known stopped (or never
    started). ``not_stopped``: those whose stop the runtime had not confirmed
    by the deadline, with why; the node keeps retrying them.
    """

    stopped: tuple[str, ...]
    not_stopped: Mapping[str, str] = attrs.field(converter=_frozen_map)


def takeover_within(timing: Timing, standbys: int) -> float:
    """How long a drain waits by default for a workload with ``standbys`` standbys.

    After a revocation the first standby reads, claims, settles and spawns;
    each standby after it waits ``promotion_delay`` more before it tries, so
    the last of them is given its turn too.
    """
    return (
        max(standbys - 1, 0) * timing.promotion_delay
        + timing.claim_timeout
        + timing.claim_settle
        + timing.spawn_timeout
        + 4 * timing.query_timeout
        + timing.retry_interval
    )


class Drainer(Generic[SpecT]):
    """Drains or stops the workloads of one node's primary side."""

    def __init__(
        self,
        timing: Timing,
        observer: Observer,
        primary: PrimarySide[SpecT],
        *,
        now: Callable[[], float],
        read_epochs: Callable[[set[str]], Awaitable[EpochsRead]],
    ) -> None:
        self.timing = timing
        self.observer = observer
        self.primary = primary
        self.now = now
        self.read_epochs = read_epochs

    async def drain(self, within: float | None = None) -> DrainReport:
        """Hand every workload run here as primary to its standbys; see the module docstring."""
        now = self.now()
        handed: dict[str, int] = {}
        why: dict[str, str] = {}
        most = 0
        for workload_id in sorted(self.primary.active()):
            lifecycle = self.primary.workloads[workload_id].lifecycle
            try:
                self.primary.handover(now, workload_id, None, "drain")
            except StandbyError as exc:
                why[workload_id] = str(exc)
                continue
            handed[workload_id] = lifecycle.epoch
            most = max(most, len(lifecycle.standbys))
        limit = takeover_within(self.timing, most) if within is None else within
        deadline = anyio.current_time() + limit
        taken: list[TakenOver] = []
        last: EpochsRead | None = None
        waiting = set(handed)
        while waiting:
            last = await self.read_epochs(set(waiting))
            if last.reached:
                for workload_id in sorted(waiting):
                    seen = last.taken_over.get(workload_id)
                    if seen is not None and seen[0] > handed[workload_id]:
                        waiting.discard(workload_id)
                        taken.append(TakenOver(workload_id, handed[workload_id], *seen))
            rest = deadline - anyio.current_time()
            if not waiting or rest <= 0:
                break
            await anyio.sleep(min(self.timing.retry_interval, rest))
        for workload_id in sorted(waiting):
            why[workload_id] = self._why_not(workload_id, handed[workload_id], last, limit)
        self.observer.drained(len(taken), len(why))
        return DrainReport(tuple(taken), dict(sorted(why.items())))

    def _why_not(self, workload_id: str, epoch: int, last: EpochsRead | None, limit: float) -> str:
        """Why ``workload_id`` was not seen taken over within ``limit`` seconds."""
        workload = self.primary.workloads.get(workload_id)
        if workload is not None and workload.container_up:
            return f"its container (epoch {epoch}) was not yet stopped after {limit:g} s"
        if workload is not None and workload.lifecycle.revocation_state is not (
            Revocation.ACKNOWLEDGED
        ):
            return (
                f"its revocation of epoch {epoch} was not acknowledged by a write quorum "
                f"within {limit:g} s (still retried)"
            )
        if last is None or not last.reached:
            answered = 0 if last is None else last.answered
            return (
                f"no read quorum answered ({answered} of {self.timing.read_quorum} relays): "
                "whether a standby took it over is unknown"
            )
        claimed = last.claimed.get(workload_id, -1)
        if claimed > epoch:
            return f"a standby claimed epoch {claimed} but announced no later epoch in {limit:g} s"
        return f"no standby claimed or announced a later epoch than {epoch} in {limit:g} s"

    async def stop_workloads(
        self, within: float | None = None, *, reason: str = "stopped by the host"
    ) -> StopReport:
        """Stop every workload run here as primary, for good; see the module docstring."""
        now = self.now()
        targets = sorted(self.primary.workloads)
        for workload_id in targets:
            self.primary.stop(now, workload_id, reason)
        limit = self.timing.spawn_timeout if within is None else within
        with anyio.move_on_after(limit):
            while not all(self._stopped(w) for w in targets):
                await self.primary.changed()
        stopped = tuple(w for w in targets if self._stopped(w))
        not_stopped = {
            w: f"the runtime had not confirmed its stop after {limit:g} s (still retried)"
            for w in targets
            if not self._stopped(w)
        }
        return StopReport(stopped, not_stopped)

    def _stopped(self, workload_id: str) -> bool:
        workload = self.primary.workloads.get(workload_id)
        return workload is None or (
            workload.ended and not workload.container_up and workload.starting is None
        )
