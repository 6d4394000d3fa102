"""The relay floor of a correlated failover: what the relays themselves need.

One standby takes ``n`` workloads over. Whatever the node does, the relays
must at least answer its claims reads (one before the claims, one after
the settle wait, :data:`~standby.core._claim_reads.MAX_BATCH` workloads a
read), store its ``n`` claims and store its ``n`` announcements. This
module makes exactly that load with the library's own signed events (a
fresh key, the reference Nostr profile and codec) and times it on each
relay: one websocket per relay, every event of a step sent at once
(pipelined) and the step over when the relay has answered all of them.

:func:`relay_floor` is the time until a write quorum of relays is through
(the failover moves on at a quorum); the per-relay times are kept too.
The workload ids are the caller's own (``floor-...``), so the measure
leaves the failover's events alone.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import anyio
import attrs
import httpx
import httpx_ws

from standby import Message, PromotionAnnouncement, PromotionClaim, fencing_token
from standby.adapters.memory import MemoryRelayNetwork
from standby.adapters.nostr import NostrKeys
from standby.adapters.nostr._events import Versions, sign_message
from standby.adapters.nostr._profile import NostrProfile, filters_for
from standby.core._claim_reads import MAX_BATCH
from standby.protocols import Query
from standby.wire import Codec

__all__ = ["Floor", "Takeover", "failover_load", "memory_floor", "relay_floor", "takeover"]

#: Longest a relay may take over one step before the measure gives up on it.
STEP_TIMEOUT = 300.0


@attrs.frozen
class Load:
    """The relay work of one standby's takeover of ``workload_ids``."""

    reads: tuple[list[dict[str, Any]], ...]  # the filters of each claims read
    claims: tuple[dict[str, Any], ...]  # signed events, as sent
    announcements: tuple[dict[str, Any], ...]


@attrs.frozen
class Floor:
    """How long each relay took over the whole load, and the quorum's time."""

    per_relay: dict[str, float]
    quorum: int
    events: int
    reads: int

    @property
    def seconds(self) -> float:
        """When ``quorum`` relays were through (the failover's own pace)."""
        times = sorted(self.per_relay.values())
        return times[self.quorum - 1] if len(times) >= self.quorum else math.inf


@attrs.frozen
class Takeover:
    """What one standby sends to take workloads over: claims reads, claims, announcements."""

    reads: tuple[Query, ...]
    claims: tuple[PromotionClaim, ...]
    announcements: tuple[PromotionAnnouncement, ...]


def takeover(workload_ids: Sequence[str], me: str, now: float) -> Takeover:
    """What standby 0 (``me``) reads and publishes to take ``workload_ids`` into epoch 1."""
    token = fencing_token(1, 0)
    claims = tuple(
        PromotionClaim(
            workload_id=workload_id,
            epoch=1,
            fencing_token=token,
            claimant=me,
            standby_index=0,
            claimed_at=now,
        )
        for workload_id in workload_ids
    )
    announcements = tuple(
        PromotionAnnouncement(
            workload_id=workload_id, new_primary=me, promoted_at=now, epoch=1, fencing_token=token
        )
        for workload_id in workload_ids
    )
    reads = tuple(
        Query(kinds={"claim", "announcement"}, workload_ids=set(workload_ids[i : i + MAX_BATCH]))
        for i in range(0, len(workload_ids), MAX_BATCH)
    )
    return Takeover(reads, claims, announcements)


def failover_load(workload_ids: Sequence[str], now: float) -> Load:
    """:func:`takeover` as Nostr filters and events signed with a fresh key."""
    keys = NostrKeys.generate()
    profile = NostrProfile.reference()
    codec = Codec()
    versions: Versions = Versions()
    me = keys.npub
    plan = takeover(workload_ids, me, now)

    def signed(messages: Sequence[Message]) -> tuple[dict[str, Any], ...]:
        return tuple(
            event.to_json()
            for message in messages
            for event in sign_message(
                message, keys=keys, profile=profile, codec=codec, versions=versions
            )
        )

    reads = tuple(
        filters_for(profile, query, me=me, now=now, live=False, since=None) for query in plan.reads
    )
    return Load(reads, signed(plan.claims), signed(plan.announcements))


async def _one_relay(url: str, load: Load) -> float:
    """Seconds ``url`` takes over ``load``: reads, claims, reads, announcements, in turn."""
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as client,
        httpx_ws.aconnect_ws(url, client, max_message_size_bytes=16 * 1024 * 1024) as ws,
    ):
        started = time.perf_counter()
        for step in ("reads", "claims", "reads", "announcements"):
            with anyio.fail_after(STEP_TIMEOUT):
                if step == "reads":
                    await _read(ws, load.reads)
                else:
                    await _store(ws, load.claims if step == "claims" else load.announcements)
        return time.perf_counter() - started


async def _store(ws: httpx_ws.AsyncWebSocketSession, events: Sequence[dict[str, Any]]) -> None:
    waiting = {event["id"] for event in events}
    for event in events:
        await ws.send_text(json.dumps(["EVENT", event]))
    while waiting:
        reply = json.loads(await ws.receive_text())
        if reply[0] == "OK" and reply[1] in waiting:
            if not reply[2]:
                raise RuntimeError(f"the relay refused a floor event: {reply[3]!r}")
            waiting.discard(reply[1])


async def _read(ws: httpx_ws.AsyncWebSocketSession, reads: Sequence[list[dict[str, Any]]]) -> None:
    waiting = set()
    for number, filters in enumerate(reads):
        sub_id = f"floor{number}"
        waiting.add(sub_id)
        await ws.send_text(json.dumps(["REQ", sub_id, *filters]))
    while waiting:
        reply = json.loads(await ws.receive_text())
        if reply[0] in ("EOSE", "CLOSED") and reply[1] in waiting:
            if reply[0] == "CLOSED":
                raise RuntimeError(f"the relay refused a floor read: {reply[2:]!r}")
            waiting.discard(reply[1])
            await ws.send_text(json.dumps(["CLOSE", reply[1]]))


async def relay_floor(urls: Sequence[str], workloads: int, quorum: int, now: float) -> Floor:
    """Time the failover's load of ``workloads`` on every relay of ``urls`` at once."""
    ids = [f"floor-{time.time_ns():x}-{i:05d}" for i in range(workloads)]
    load = failover_load(ids, now)
    per_relay: dict[str, float] = {}

    async def one(url: str) -> None:
        per_relay[url] = await _one_relay(url, load)

    async with anyio.create_task_group() as group:
        for url in urls:
            group.start_soon(one, url)
    events = len(load.claims) + len(load.announcements)
    return Floor(per_relay, quorum, events, 2 * len(load.reads))


async def memory_floor(network: MemoryRelayNetwork, workloads: int, quorum: int) -> Floor:
    """The same load on memory relays, through a fresh transport, on the current clock.

    What it costs there is what the network's cost model charges (nothing
    without one).
    """
    plan = takeover([f"floor-{i:05d}" for i in range(workloads)], "floor", network.wall_clock())
    transport = network.transport("floor")
    started = anyio.current_time()
    for messages in (None, plan.claims, None, plan.announcements):
        async with anyio.create_task_group() as group:
            if messages is None:  # the claims reads, all at once
                for query in plan.reads:
                    group.start_soon(partial(transport.query, query, timeout=STEP_TIMEOUT))
            else:
                for message in messages:
                    group.start_soon(partial(transport.publish, message, timeout=STEP_TIMEOUT))
    took = anyio.current_time() - started
    return Floor(dict.fromkeys(network.relays, took), quorum, 2 * workloads, 2 * len(plan.reads))
