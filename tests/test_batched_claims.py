"""Why claims and announcements stay one per workload in a version every release reads.

``docs/safety.md`` ("Batched claims and announcements: not done, and why")
argues that a claim format some readers refuse breaks guarantee 2: to a
reader that refuses it, the claim does not exist. This plays that schedule
on the real node: standby 1 refuses every claim and announcement standby 0
publishes (as a release that cannot read a new batched format would), the
primary dies, and both standbys run the workload in the same epoch. The
same cluster with nothing refused runs it once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from _crash import ForwardingTransport
from test_node import TIMING, Cluster, start_workload, wait_until

from standby import Envelope, Message, PromotionAnnouncement, PromotionClaim, fencing_token
from standby.protocols import Query, QueryResult

pytestmark = pytest.mark.anyio


def refused(envelope: Envelope[Message], author: str) -> bool:
    """What a reader that cannot decode ``author``'s takeover records drops."""
    message = envelope.message
    return envelope.signer == author and isinstance(
        message, (PromotionClaim, PromotionAnnouncement)
    )


class OldReader(ForwardingTransport):
    """A transport whose codec refuses ``author``'s claims and announcements."""

    def __init__(self, inner: Any, author: str) -> None:
        super().__init__(inner)
        self.author = author
        self.refused = 0

    async def query(self, query: Query, *, timeout: float) -> QueryResult:  # noqa: ASYNC109
        result = await super().query(query, timeout=timeout)
        kept = tuple(e for e in result.envelopes if not refused(e, self.author))
        self.refused += len(result.envelopes) - len(kept)
        return QueryResult(kept, result.answered, result.errors)

    def subscribe(self, query: Query) -> Any:
        return _Filtered(super().subscribe(query), self)


class _Filtered:
    def __init__(self, inner: Any, reader: OldReader) -> None:
        self.inner = inner
        self.reader = reader

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __aiter__(self) -> AsyncIterator[Envelope[Message]]:
        return self._items()

    async def _items(self) -> AsyncIterator[Envelope[Message]]:
        async for envelope in self.inner:
            if refused(envelope, self.reader.author):
                self.reader.refused += 1
                continue
            yield envelope

    async def aclose(self) -> None:
        await self.inner.aclose()


async def crash_and_watch(cluster: Cluster, old_reader: bool) -> OldReader | None:
    reader = None
    async with anyio.create_task_group() as group:
        await cluster.launch(group, "prime")
        await cluster.launch(group, "sb0")
        if old_reader:
            reader = OldReader(cluster.network.transport("sb1"), "sb0")
            await cluster.launch(group, "sb1", transport=reader)
        else:
            await cluster.launch(group, "sb1")
        await start_workload(cluster, group)
        await anyio.sleep(600)
        cluster.crash("prime")
        await wait_until(lambda: "sb0" in cluster.hosts_started(), within=3 * TIMING.silence)
        await anyio.sleep(3 * TIMING.silence)  # long past standby 1's turn
        group.cancel_scope.cancel()
    return reader


async def test_guarantee2_a_reader_that_refuses_a_peers_claims_runs_the_workload_twice() -> None:
    cluster = Cluster(timing=TIMING)
    reader = await crash_and_watch(cluster, old_reader=True)
    assert reader is not None
    assert reader.refused > 0
    tokens = {host: token for host, _at, token in cluster.starts()}
    assert tokens == {"prime": 0, "sb0": fencing_token(1, 0), "sb1": fencing_token(1, 1)}
    assert cluster.record.max_concurrent("w1") == 2  # guarantee 2 broken


async def test_guarantee2_the_same_schedule_with_every_claim_read_runs_it_once() -> None:
    cluster = Cluster(timing=TIMING)
    await crash_and_watch(cluster, old_reader=False)
    assert cluster.hosts_started() == ["prime", "sb0"]
    assert cluster.record.max_concurrent("w1") == 1
