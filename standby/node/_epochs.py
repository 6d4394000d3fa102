"""What the relays say about some workloads' epochs (a restart's and a start's read)."""

from __future__ import annotations

from collections.abc import Callable

import attrs

from ..core._models import LeaseRevocation, PromotionAnnouncement, PromotionClaim
from ..core._relay_messages import takeover_epoch
from ..core._timing import Timing
from ..protocols._contracts import Query
from ._io import NodeIO

__all__ = ["EpochReader", "EpochsRead"]


@attrs.define
class EpochsRead:
    """What a read of the relays found about some workloads, per workload id.

    ``claimed``: the highest epoch others claimed (not withdrawn) or
    announced; ``announced``: the highest this node announced; ``revoked``:
    the highest epoch anyone revoked; ``taken_over``: the highest epoch
    another node announced (it runs the workload in that epoch), and who;
    ``signers``: who other than this node
    published any of these; ``reached``: whether a read quorum answered;
    ``answered``: how many relays did, and ``errors`` why each other did not.
    """

    reached: bool
    answered: int = 0
    errors: dict[str, str] = attrs.Factory(dict)
    claimed: dict[str, int] = attrs.Factory(dict)
    announced: dict[str, int] = attrs.Factory(dict)
    revoked: dict[str, int] = attrs.Factory(dict)
    taken_over: dict[str, tuple[int, str]] = attrs.Factory(dict)
    signers: dict[str, set[str]] = attrs.Factory(dict)


def _raise(into: dict[str, int], workload_id: str, epoch: int) -> None:
    into[workload_id] = max(into.get(workload_id, -1), epoch)


class EpochReader:
    """Reads the claims, announcements and revocations of some workloads.

    Used by the restart (what may run on) and by a primary before it starts
    a replicated workload (has it moved on, is it ours?).
    """

    def __init__(self, me: str, timing: Timing, io: NodeIO, now: Callable[[], float]) -> None:
        self.me = me
        self.timing = timing
        self.io = io
        self.now = now

    async def read(self, workloads: set[str]) -> EpochsRead:
        """What the relays hold about ``workloads``' epochs: claims, announcements, revocations.

        Withdrawn claims do not count (nor this node's own claims: those it
        withdraws itself). Without a read quorum (``reached`` false) nothing
        may be adopted or started.
        """
        if not workloads:
            return EpochsRead(reached=True)
        query = Query(
            kinds=("claim", "announcement", "revocation"),
            workload_ids=workloads,
            until=self.now() + self.timing.max_clock_skew,
        )
        result = await self.io.query(query, operation="reconcile", workload_id=None)
        found = EpochsRead(
            reached=len(result.answered) >= self.timing.read_quorum,
            answered=len(result.answered),
            errors=dict(result.errors),
        )
        for envelope in result.envelopes:
            message = envelope.message
            mine = envelope.signer == self.me
            if isinstance(message, LeaseRevocation):
                _raise(found.revoked, message.workload_id, message.epoch)
            elif isinstance(message, (PromotionClaim, PromotionAnnouncement)):
                epoch = takeover_epoch(message)
                if epoch is None or (mine and isinstance(message, PromotionClaim)):
                    continue  # withdrawn, or a claim of ours (we withdraw those ourselves)
                _raise(found.announced if mine else found.claimed, message.workload_id, epoch)
                if not mine and isinstance(message, PromotionAnnouncement):
                    best = found.taken_over.get(message.workload_id)
                    if best is None or epoch > best[0]:
                        found.taken_over[message.workload_id] = (epoch, envelope.signer)
            else:
                continue
            if not mine:
                found.signers.setdefault(message.workload_id, set()).add(envelope.signer)
        return found
