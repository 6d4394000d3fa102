"""End to end over consistent stores: StandbyNode over etcd and over Redis.

Three providers (a primary and two standbys), each a :class:`StandbyNode`
with its own transport to the real store and a :class:`MemoryRuntime`; the
runtimes share one :class:`RuntimeRecord`, which is what the assertions read.
The store is one relay (``relay_count=1``, quorums of 1) and claims are
atomic. Then faults on the real etcd cluster: its leader killed during a
claim race, two of three members killed under a running workload.

Real sockets and clocks at a fast timing (silence 2.5 s); the assertions are
about order and counts, never durations.
"""

from __future__ import annotations

import contextlib
import functools
import time
import uuid
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from _e2e import NAMES, Providers, wait_until
from _etcd import EtcdCluster, etcd, etcd_cluster  # noqa: F401
from _redis import RedisServer, redis_server  # noqa: F401

from standby import PromotionClaim, Timing, TransportError, fencing_token
from standby.adapters.etcd import EtcdTransport
from standby.adapters.redis import RedisTransport
from standby.node import StandbyNode

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

#: One relay; silence 2.5 s. Store calls take a few ms here.
TIMING = Timing(
    heartbeat_interval=0.4,
    lease=2.0,
    fence_grace=0.3,
    max_clock_skew=0.2,
    silence=2.5,
    promotion_delay=0.5,
    suspect_after=1.0,
    claim_timeout=0.5,
    claim_settle=0.6,
    query_timeout=0.2,
    retry_interval=0.3,
    spawn_timeout=0.3,
    spawn_retry_backoff=0.3,
    relay_count=1,
    write_quorum=1,
)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


TransportFactory = Callable[[str], Any]


def accounts(
    provision: Callable[[str], tuple[str, str]], build: Callable[..., Any]
) -> tuple[TransportFactory, dict[str, str]]:
    """An account for each provider, a factory of their transports, and their identities.

    ``build(user=..., password=...)`` makes a transport that logs in as one account.
    """
    made = {name: provision(name) for name in NAMES}

    def make(name: str) -> Any:
        user, password = made[name]
        return build(user=user, password=password)

    return make, {name: user for name, (user, _pw) in made.items()}


def etcd_factory(cluster: EtcdCluster) -> tuple[TransportFactory, dict[str, str]]:
    prefix = f"/standby-e2e/{uuid.uuid4().hex[:8]}/"
    build = functools.partial(
        EtcdTransport,
        cluster.endpoints,
        prefix=prefix,
        name="etcd",
        reconnect_backoff=(0.02, 0.2),
    )
    return accounts(lambda name: cluster.provider(name, prefix), build)


def redis_factory(server: RedisServer) -> tuple[TransportFactory, dict[str, str]]:
    prefix = f"standby-e2e-{uuid.uuid4().hex[:8]}"
    build = functools.partial(
        RedisTransport,
        "127.0.0.1",
        server.port,
        prefix=prefix,
        name="redis",
        reconnect_backoff=(0.02, 0.2),
        connect_timeout=1.0,
    )
    return accounts(lambda name: server.provider(name, prefix), build)


def store_providers(make: TransportFactory, identities: dict[str, str]) -> Providers:
    """The three providers on one store, its claims atomic."""

    def check(node: StandbyNode[Any]) -> None:
        assert node.atomic_claims

    return Providers(make, identities, TIMING, check=check, stamp_created=True)


@pytest.fixture(params=["etcd", "redis"])
def store(request: pytest.FixtureRequest) -> tuple[TransportFactory, dict[str, str]]:
    if request.param == "etcd":
        cluster: EtcdCluster = request.getfixturevalue("etcd")
        return etcd_factory(cluster)
    server: RedisServer = request.getfixturevalue("redis_server")
    server.start()
    return redis_factory(server)


async def test_a_crashed_primary_is_replaced_by_exactly_one_standby(
    store: tuple[TransportFactory, dict[str, str]],
) -> None:
    providers = store_providers(*store)
    async with providers.running():
        await anyio.sleep(TIMING.heartbeat_interval)
        # Standby 1's backoff ends while standby 0 runs: it must stay down.
        await providers.fail_over(
            within=TIMING.silence + 5.0,
            what="a standby to take over",
            settle=TIMING.promotion_delay + TIMING.claim_settle,
        )
    providers.assert_standby_0_alone_was_promoted()


# --------------------------------------------------------------------------- etcd faults


# One event loop is enough for the faults (the failover above runs on both).
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_killing_the_etcd_leader_during_a_claim_race_leaves_one_winner(
    etcd: EtcdCluster,  # noqa: F811
) -> None:
    prefix = f"/standby-race/{uuid.uuid4().hex[:8]}/"
    accounts = [etcd.provider(f"racer{i}", prefix) for i in range(3)]
    leader = await anyio.to_thread.run_sync(etcd.leader)
    workload = f"race-{uuid.uuid4().hex[:8]}"
    outcomes: list[tuple[str, bool]] = []
    errors: list[str] = []
    async with contextlib.AsyncExitStack() as stack:
        racers = [
            await stack.enter_async_context(
                EtcdTransport(etcd.endpoints, user=user, password=pw, prefix=prefix, name="etcd")
            )
            for user, pw in accounts
        ]

        async def race(index: int, racer: EtcdTransport) -> None:
            for _round in range(6):
                claim = PromotionClaim(
                    workload_id=workload,
                    epoch=1,
                    fencing_token=fencing_token(1, index),
                    claimant=racer.identity,
                    standby_index=index,
                    claimed_at=time.time(),
                )
                try:
                    outcome = await racer.compare_and_set_claim(claim, timeout=5.0)
                except TransportError as exc:
                    errors.append(str(exc))
                    continue
                outcomes.append((racer.identity, outcome.won))
                await anyio.sleep(0.05)

        async with anyio.create_task_group() as group:
            for index, racer in enumerate(racers):
                group.start_soon(race, index, racer)
            await anyio.sleep(0.03)
            await anyio.to_thread.run_sync(etcd.kill, leader)
        holder = await racers[0].holder(workload, timeout=5.0)
    winners = {identity for identity, won in outcomes if won}
    assert len(winners) == 1, (outcomes, errors)
    assert holder is not None
    assert {holder.claimant} == winners
    # Every racer got an answer after the leader died (none was assumed).
    assert len(outcomes) >= len(racers)
    await anyio.to_thread.run_sync(etcd.start, leader)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_losing_the_etcd_quorum_fences_the_primary_and_promotes_nobody_until_it_heals(
    etcd: EtcdCluster,  # noqa: F811
) -> None:
    providers = store_providers(*etcd_factory(etcd))
    async with providers.running():
        await anyio.sleep(TIMING.heartbeat_interval)
        for index in (1, 2):
            await anyio.to_thread.run_sync(etcd.kill, index)
        # The primary's heartbeats fail: it fences at its lease end...
        await wait_until(
            lambda: not providers.runtimes["primary"].running(providers.workload_id),
            within=TIMING.lease + TIMING.fence_grace + 3.0,
            what="the primary to fence",
        )
        # ...and no standby may promote while the cluster has no quorum.
        await anyio.sleep(TIMING.silence + TIMING.promotion_delay)
        assert providers.hosts_started() == ["primary"]
        # Stopped by the fencing node or by the runtime's supervisor at the
        # same lease end, whichever came first.
        fenced = [
            e
            for e in providers.record.events
            if e.kind in ("stopped", "expired") and e.workload_id == providers.workload_id
        ]
        # One member back: the cluster has a quorum again, standby 0 takes over.
        await anyio.to_thread.run_sync(etcd.start, 1)
        await providers.taken_over(
            within=TIMING.silence + 10.0,
            what="a standby to take over once the quorum is back",
        )
        await anyio.sleep(TIMING.promotion_delay + TIMING.claim_settle)
    await anyio.to_thread.run_sync(etcd.start)
    assert [e.host for e in fenced] == ["primary"]
    providers.assert_standby_0_took_over()
    started = providers.record.of_kind("started", providers.workload_id)
    assert fenced[0].at < started[1].at
