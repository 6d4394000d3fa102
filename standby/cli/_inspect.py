"""``python -m standby inspect``: one workload as a read quorum of relays sees it now.

It reads the workload's claims, announcements and revocations, then the
heartbeat of whoever holds it, and prints the epoch, the holder, each claim
and announcement, the revocations and the holder's last heartbeat (``--json``
for a machine). Exit status 0; 1 when no read quorum answered or the
transport failed; 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import anyio
import attrs

from ..core._errors import StandbyError
from ..core._models import (
    Heartbeat,
    LeaseRevocation,
    PromotionAnnouncement,
    PromotionClaim,
)
from ..core._relay_messages import Query, takeover_epoch
from ..core._timing import Timing
from ..protocols._contracts import RelayTransport
from ._transports import BadArguments, add_transport_arguments, open_transport, timing_for

__all__ = ["Inspection", "add_arguments", "inspect_workload", "run"]

PROG = "python -m standby inspect"


@attrs.frozen
class Inspection:
    """What a read of the relays shows of one workload."""

    workload_id: str
    answered: tuple[str, ...]
    read_quorum: int
    epoch: int
    holder: str | None
    claims: tuple[dict[str, Any], ...]
    announcements: tuple[dict[str, Any], ...]
    revocations: tuple[dict[str, Any], ...]
    last_heartbeat: float | None

    @property
    def reached(self) -> bool:
        """Whether a read quorum answered (otherwise the picture may be missing something)."""
        return len(self.answered) >= self.read_quorum


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``inspect`` command's arguments."""
    parser.description = __doc__
    add_transport_arguments(parser)
    parser.add_argument("workload", help="the workload id")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


async def inspect_workload(
    transport: RelayTransport, workload_id: str, *, timing: Timing, now: float
) -> Inspection:
    """Read ``workload_id``'s messages and its holder's last heartbeat through ``transport``.

    ``timing`` gives the read quorum, the query timeout and the clock skew.
    """
    timeout, read_quorum = timing.query_timeout, timing.read_quorum
    until = now + timing.max_clock_skew  # a future-dated message never hides genuine ones (FM 18)
    found = await transport.query(
        Query(
            kinds=("claim", "announcement", "revocation"),
            workload_ids={workload_id},
            until=until,
        ),
        timeout=timeout,
    )
    answered = set(found.answered)
    claims: list[dict[str, Any]] = []
    announcements: list[dict[str, Any]] = []
    revocations: list[dict[str, Any]] = []
    epoch, holder = 0, None
    for envelope in found.envelopes:
        message = envelope.message
        row: dict[str, Any] = {"signer": envelope.signer, "relay": envelope.relay}
        if isinstance(message, PromotionClaim):
            row.update(
                epoch=message.epoch,
                fencing_token=message.fencing_token,
                standby_index=message.standby_index,
                at=message.claimed_at,
                withdrawn=message.withdrawn,
            )
            claims.append(row)
            if message.epoch == 0 and not message.withdrawn and holder is None:
                holder = envelope.signer  # the primary's own claim on epoch 0
        elif isinstance(message, PromotionAnnouncement):
            row.update(
                epoch=takeover_epoch(message),
                fencing_token=message.fencing_token,
                at=message.promoted_at,
            )
            announcements.append(row)
        elif isinstance(message, LeaseRevocation):
            row.update(epoch=message.epoch, reason=message.reason, at=message.revoked_at)
            revocations.append(row)
    for row in announcements:
        if row["epoch"] >= epoch:
            epoch, holder = row["epoch"], row["signer"]
    claimed = [row["epoch"] for row in claims if not row["withdrawn"]]
    epoch = max([epoch, *claimed])
    last = None
    if holder is not None:
        beats = await transport.query(
            Query(kinds=("heartbeat",), authors={holder}, until=until), timeout=timeout
        )
        answered &= set(beats.answered)
        stamps = [e.message.timestamp for e in beats.envelopes if isinstance(e.message, Heartbeat)]
        last = max(stamps, default=None)
    key = _order
    return Inspection(
        workload_id=workload_id,
        answered=tuple(sorted(answered)),
        read_quorum=read_quorum,
        epoch=epoch,
        holder=holder,
        claims=tuple(sorted(claims, key=key)),
        announcements=tuple(sorted(announcements, key=key)),
        revocations=tuple(sorted(revocations, key=key)),
        last_heartbeat=last,
    )


def _order(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["epoch"] or 0, row["at"], row["signer"], row["relay"])


def _text(found: Inspection, now: float) -> str:
    lines = [
        f"workload {found.workload_id}: epoch {found.epoch}, held by {found.holder or 'nobody'}",
        f"read from {len(found.answered)} relays (read quorum {found.read_quorum}): "
        + (", ".join(found.answered) or "none"),
    ]
    if found.last_heartbeat is None:
        lines.append("last heartbeat: none seen")
    else:
        lines.append(
            f"last heartbeat: {found.last_heartbeat:.3f} ({now - found.last_heartbeat:.1f} s ago)"
        )
    for title, rows in (
        ("claims", found.claims),
        ("announcements", found.announcements),
        ("revocations", found.revocations),
    ):
        lines.append(f"{title}: {len(rows)}")
        for row in rows:
            details = ", ".join(f"{k} {row[k]}" for k in row if k not in ("signer", "relay"))
            lines.append(f"  {row['signer']} on {row['relay']}: {details}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Carry out ``inspect``; returns the exit status."""
    try:
        transport = open_transport(args, act=False)
        timing = timing_for(args, transport.relay_count)
    except BadArguments as exc:
        print(f"{PROG}: error: {exc} (see --help)", file=sys.stderr)
        return 2

    async def main() -> Inspection:
        async with transport:
            return await inspect_workload(
                transport,
                args.workload,
                timing=timing,
                now=time.time(),
            )

    try:
        found = anyio.run(main)
    except (StandbyError, OSError) as exc:
        print(f"{PROG}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(attrs.asdict(found) | {"reached": found.reached}, sort_keys=True))
    else:
        print(_text(found, time.time()))
    if not found.reached:
        print(
            f"{PROG}: error: only {len(found.answered)} relays answered, the read quorum is "
            f"{found.read_quorum}: this picture may be missing something",
            file=sys.stderr,
        )
        return 1
    return 0
