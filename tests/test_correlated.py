"""Correlated failover: one primary carrying many workloads dies (failure mode 19).

The memory relays model the limits of ``nostr-relay`` (64 subscriptions and
10 queries in flight per connection) and refuse what breaks them; the node
must stay inside them and still promote every workload exactly once, by the
standby the order says, on trio's virtual clock.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio
import pytest
from test_node import Cluster, primary_state, wait_until, wall

from standby import PromotionClaim, Timing, fencing_token
from standby.adapters.memory import MemoryRelayNetwork, RelayLimits
from standby.core import LifecycleState
from standby.node import QuorumMissed
from standby.protocols import Query

pytestmark = pytest.mark.anyio

FAST = Timing.fast()


def limited_cluster(limits: RelayLimits, *, standbys: int = 2) -> Cluster:
    cluster = Cluster(timing=FAST, standbys=standbys)
    cluster.network = MemoryRelayNetwork(3, seed=0, wall_clock=wall, limits=limits)
    return cluster


async def run_correlated(cluster: Cluster, workloads: int) -> tuple[list[str], float]:
    ids = [f"w{i:04d}" for i in range(workloads)]
    async with anyio.create_task_group() as group:
        await cluster.launch_all(group)
        for workload_id in ids:
            await cluster.accept_everywhere(cluster.request(workload_id))
        await wait_until(
            lambda: all(
                primary_state(cluster, cluster.primary, w) is LifecycleState.LIVE for w in ids
            ),
            within=10 * FAST.heartbeat_interval,
            step=FAST.heartbeat_interval / 10,
            what="the primary to run every workload",
        )
        await anyio.sleep(FAST.lease)
        cluster.crash(cluster.primary)
        last = cluster.last_heartbeat(cluster.primary)
        await wait_until(
            lambda: all(len(cluster.starts(w)) >= 2 for w in ids),
            within=4 * FAST.silence,
            step=FAST.query_timeout,
            what="every workload to be taken over",
        )
        await anyio.sleep(FAST.silence)  # later still exactly one copy each
        group.cancel_scope.cancel()
    return ids, last


async def test_fm19_correlated_failover_of_one_primary_is_batched_and_bounded() -> None:
    cluster = limited_cluster(RelayLimits.nostr_relay_defaults())
    ids, last = await run_correlated(cluster, 200)

    bound = FAST.silence + FAST.claim_settle + 4 * FAST.query_timeout + 0.5
    takeovers = []
    for workload_id in ids:
        (first, _t0, token0), (host, started, token) = cluster.starts(workload_id)
        assert (first, token0) == ("prime", 0)
        assert (host, token) == ("sb0", fencing_token(1, 0)), workload_id
        assert cluster.record.max_concurrent(workload_id) == 1
        takeovers.append(started - last)
    assert FAST.silence <= min(takeovers)
    assert max(takeovers) <= bound, (max(takeovers), bound)
    limiter = cluster.network.limiter
    assert limiter is not None
    assert limiter.refusals == {}
    assert limiter.peak_queries <= 10
    # Reads are per primary and step, not per slot: a handful for 200 workloads.
    # The claim window starts at 28 for this claim_timeout (0.7 s) and grows
    # as the relays answer in time: slots are let in in chunks of half the
    # window, each chunk one pre-read and one re-read (400 reads unbatched).
    reads = cluster.nodes["sb0"].status().counters["election.claims_reads"]
    assert reads <= 20, reads
    assert not [e for e in cluster.events["sb0"] if isinstance(e, QuorumMissed)]
    promoted = Counter(host for w in ids for host, _at, _tok in cluster.starts(w)[1:])
    assert promoted == {"sb0": 200}


def watch_queries(cluster: Cluster, name: str) -> list[tuple[Query, float]]:
    """Every query node ``name``'s transport is asked, with its timeout, in order."""
    seen: list[tuple[Query, float]] = []
    make = cluster.network.transport

    def watching(provider: str, **options: Any) -> Any:
        transport = make(provider, **options)
        if provider == name:
            query = transport.query

            async def watched(q: Query, *, timeout: float) -> Any:  # noqa: ASYNC109
                seen.append((q, timeout))
                return await query(q, timeout=timeout)

            transport.query = watched  # type: ignore[method-assign]
        return transport

    cluster.network.transport = watching  # type: ignore[method-assign]
    return seen


async def test_fm19_slots_following_the_new_primary_share_their_catch_up_reads() -> None:
    # Standby 1 follows standby 0 for every workload, one announcement at a
    # time: what it did not heed is read back for many slots a read, not one
    # each, and only the new primary's revocations (its claims and
    # announcements were heard as a peer's: reading them back again made the
    # relays serve thousands of events while they stored the claims).
    cluster = limited_cluster(RelayLimits.nostr_relay_defaults())
    queries = watch_queries(cluster, "sb1")
    ids, _last = await run_correlated(cluster, 200)
    assert all(cluster.nodes["sb1"].election.slots[w].primary == "sb0" for w in ids)
    assert not [q for q, _timeout in queries if "claim" in q.kinds and "revocation" in q.kinds]
    catch_ups = [
        len(q.workload_ids)
        for q, _timeout in queries
        if tuple(q.kinds) == ("revocation",) and q.authors == frozenset({"sb0"}) and q.workload_ids
    ]
    assert sum(catch_ups) >= 200  # every followed slot was read back ...
    assert len(catch_ups) <= 20  # ... in shared reads (one each: 200)
    assert max(catch_ups) <= 100


async def test_fm26_a_settle_re_read_waits_for_answers_most_of_its_deadline() -> None:
    # The re-read may take up to 2 * query_timeout (the lease rule allows it);
    # the node waits three quarters of that for answers, a pre-read only
    # query_timeout (its claim must still fit in claim_timeout).
    cluster = limited_cluster(RelayLimits.nostr_relay_defaults())
    queries = watch_queries(cluster, "sb0")
    await run_correlated(cluster, 20)
    reads = [
        (tuple(sorted(q.workload_ids or ())), timeout)
        for q, timeout in queries
        if set(q.kinds) == {"claim", "announcement"}
    ]
    # Every workload is pre-read (with query_timeout), then re-read with the
    # longer wait; later reads (the new primary's watch) are plain again.
    pre_read: set[str] = set()
    re_read: set[str] = set()
    for workloads, timeout in reads:
        if timeout == pytest.approx(1.5 * FAST.query_timeout):
            assert pre_read >= set(workloads)
            re_read.update(workloads)
        else:
            assert timeout == FAST.query_timeout
            if not re_read:
                pre_read.update(workloads)
    assert pre_read == re_read
    assert len(re_read) == 20


async def test_fm19_relays_refuse_what_breaks_their_limits() -> None:
    # The limits are real: a client that ignores them is refused, and the
    # refusal is an error for that relay (retried by the node), never a loss.
    network = MemoryRelayNetwork(
        3, wall_clock=wall, limits=RelayLimits(max_queries=2, rate=5, respect=False)
    )
    transport = network.transport("alice")
    results: list[Any] = []

    async def ask() -> None:
        results.append(await transport.query(Query(kinds=("claim",)), timeout=1.0))

    async with anyio.create_task_group() as group:
        for _ in range(8):
            group.start_soon(ask)
    limiter = network.limiter
    assert limiter is not None
    assert limiter.refused > 0
    refused = [r for r in results if len(r.answered) < 3]
    assert refused
    assert all(
        reason.startswith(("rejected:", "rate-limited:"))
        for r in refused
        for reason in r.errors.values()
    )


async def test_fm19_transport_waits_for_room_instead_of_being_refused() -> None:
    network = MemoryRelayNetwork(
        3, wall_clock=wall, limits=RelayLimits(max_queries=2, max_subscriptions=4, rate=20)
    )
    transport = network.transport("alice")
    results: list[Any] = []

    async def ask() -> None:
        results.append(await transport.query(Query(kinds=("claim",)), timeout=5.0))

    start = anyio.current_time()
    async with anyio.create_task_group() as group:
        for _ in range(40):
            group.start_soon(ask)
    limiter = network.limiter
    assert limiter is not None
    assert limiter.refusals == {}
    assert limiter.peak_queries <= 2
    assert all(len(r.answered) == 3 for r in results)
    # A burst of 20, then paced to 20 a second: the other 20 take a second.
    assert anyio.current_time() - start >= 1.0


async def test_subscription_is_sized_by_authors_and_replaced_once_for_many_accepts() -> None:
    cluster = Cluster(timing=FAST, standbys=2)
    transport = cluster.network.transport("sb0")
    opened: list[Query] = []
    subscribe = transport.subscribe

    def counting(query: Query) -> Any:
        opened.append(query)
        return subscribe(query)

    transport.subscribe = counting  # type: ignore[method-assign]
    async with anyio.create_task_group() as group:
        node = await cluster.launch(group, "sb0", transport=transport)
        for i in range(50):
            await node.accept(cluster.request(f"w{i:02d}"))
        await anyio.sleep(1.0)
        group.cancel_scope.cancel()
    assert len(opened) == 1  # same authors for all 50 slots: never replaced
    (query,) = opened
    assert query.workload_ids is None
    assert query.authors == frozenset({"prime", "sb1"})


async def test_messages_about_workloads_without_a_slot_are_dropped_locally() -> None:
    cluster = Cluster(timing=FAST, standbys=2)
    async with anyio.create_task_group() as group:
        node = await cluster.launch(group, "sb0")
        await node.accept(cluster.request("mine"))
        await anyio.sleep(0.5)
        peer = cluster.network.transport("sb1")
        stranger_claim = PromotionClaim(
            workload_id="not-mine",
            epoch=1,
            fencing_token=fencing_token(1, 1),
            claimant="sb1",
            standby_index=1,
            claimed_at=wall(),
        )
        await peer.publish(stranger_claim, timeout=1.0)
        await anyio.sleep(0.5)
        group.cancel_scope.cancel()
    assert node.counters["messages_not_ours"] >= 1
    assert "not-mine" not in node.election.slots
