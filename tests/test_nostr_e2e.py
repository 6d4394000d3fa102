"""End to end over three real relay processes: StandbyNode + NostrTransport.

Three providers (a primary and two standbys), each a :class:`StandbyNode`
with its own :class:`NostrTransport` to the three local relays and a
:class:`MemoryRuntime`; all runtimes share one :class:`RuntimeRecord`, which
is what the assertions read ("who ran the workload, when"). Real sockets and
real time, at a timing scaled down to a silence of 4 s.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.abc
import pytest
from _nostr_relays import RelayCluster, backends, fixed_keys, nostr_relays, relays  # noqa: F401

from standby import LeaseRevocation, Phase, Timing, Topology
from standby.adapters.memory import MemoryRuntime, RuntimeRecord
from standby.adapters.nostr import NostrTransport
from standby.node import NodeEvent, SpawnRequest, StandbyNode
from standby.protocols import Query

pytestmark = pytest.mark.anyio

#: Silence 4 s; queries get 0.3 s (real sockets; they take a few ms here).
TIMING = Timing(
    heartbeat_interval=1.0,
    lease=3.0,
    fence_grace=0.5,
    max_clock_skew=0.5,
    silence=4.0,
    promotion_delay=1.0,
    suspect_after=1.5,
    claim_timeout=0.7,
    claim_settle=0.9,
    query_timeout=0.3,
    retry_interval=0.5,
    spawn_timeout=0.5,
    spawn_retry_backoff=0.5,
)
NAMES = ("primary", "sb0", "sb1")


@pytest.fixture(params=backends())
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


async def wait_until(predicate: Callable[[], bool], *, within: float, what: str) -> None:
    with anyio.move_on_after(within):
        while not predicate():  # noqa: ASYNC110 - polls state that other tasks change
            await anyio.sleep(0.02)
    if not predicate():
        raise AssertionError(f"timed out after {within}s waiting for {what}")


class Providers:
    """Three providers on the real relays, sharing one runtime record."""

    def __init__(self, cluster: RelayCluster) -> None:
        self.cluster = cluster
        self.keys = {name: fixed_keys() for name in NAMES}
        self.record = RuntimeRecord()
        self.runtimes = {name: MemoryRuntime(name, record=self.record) for name in NAMES}
        self.events: dict[str, list[NodeEvent]] = {name: [] for name in NAMES}
        self.nodes: dict[str, StandbyNode[Any]] = {}
        self.scopes: dict[str, anyio.CancelScope] = {}
        self.workload_id = f"e2e-{uuid.uuid4().hex[:10]}"

    async def launch(self, group: anyio.abc.TaskGroup, name: str) -> None:
        scope = self.scopes[name] = anyio.CancelScope()

        async def run(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            with scope:
                async with NostrTransport(
                    self.cluster.urls, self.keys[name], reconnect_backoff=(0.05, 0.5)
                ) as transport:
                    connected = await transport.wait_connected(timeout=5.0)
                    assert len(connected) == len(self.cluster.urls), connected
                    async with StandbyNode(
                        transport=transport,
                        runtime=self.runtimes[name],
                        timing=TIMING,
                        on_event=self.events[name].append,
                    ) as node:
                        self.nodes[name] = node
                        task_status.started()
                        await anyio.sleep_forever()

        await group.start(run)

    def request(self) -> SpawnRequest[Any]:
        # The consumer mixes encodings: npub for some, hex for others.
        return SpawnRequest(
            workload_id=self.workload_id,
            topology=Topology(
                primary=self.keys["primary"].npub,
                standbys=(self.keys["sb0"].npub, self.keys["sb1"].public_key),
            ),
            spec={"image": "app:1"},
            owner="consumer",
            expires_at=time.time() + 3600,
        )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[anyio.abc.TaskGroup]:
        """All three nodes up, the workload accepted and running on the primary."""
        async with anyio.create_task_group() as group:
            for name in NAMES:
                await self.launch(group, name)
            request = self.request()
            for name in NAMES:
                await self.nodes[name].accept(request)
            await wait_until(
                lambda: self.hosts_started() == ["primary"],
                within=5.0,
                what="the primary to start the workload",
            )
            yield group
            group.cancel_scope.cancel()

    def crash(self, name: str) -> None:
        """The host dies: its containers end and its node stops."""
        self.runtimes[name].crash()
        self.scopes[name].cancel()

    def hosts_started(self) -> list[str]:
        return [e.host for e in self.record.of_kind("started", self.workload_id)]

    def spawn_calls(self) -> list[str]:
        return [e.host for e in self.record.of_kind("spawn", self.workload_id)]

    def started_at(self, host: str) -> float:
        (event,) = [e for e in self.record.of_kind("started", self.workload_id) if e.host == host]
        return event.at


async def test_primary_crash_exactly_one_standby_takes_over(relays: RelayCluster) -> None:  # noqa: F811
    providers = Providers(relays)
    async with providers.running():
        await anyio.sleep(TIMING.heartbeat_interval)
        providers.crash("primary")
        await wait_until(
            lambda: len(providers.hosts_started()) >= 2,
            within=TIMING.silence + TIMING.claim_settle + 4.0,
            what="a standby to take over",
        )
        # Standby 1's backoff expired before standby 0 spawned: it must have
        # stood down, and stay down.
        await anyio.sleep(TIMING.claim_settle)
    assert providers.hosts_started() == ["primary", "sb0"]
    assert providers.spawn_calls() == ["primary", "sb0"]
    assert providers.record.max_concurrent(providers.workload_id) == 1
    tokens = [e.fencing_token for e in providers.record.of_kind("started", providers.workload_id)]
    assert tokens[1] > tokens[0]


async def test_a_revocation_signed_by_a_stranger_promotes_nobody(relays: RelayCluster) -> None:  # noqa: F811
    providers = Providers(relays)
    async with providers.running():
        primary = providers.keys["primary"].public_key
        standbys = (providers.keys["sb0"].public_key, providers.keys["sb1"].public_key)
        async with NostrTransport(relays.urls, fixed_keys()) as stranger:
            forged = LeaseRevocation(
                workload_id=providers.workload_id,
                primary=primary,
                standbys=standbys,
                reason="handover",
                revoked_at=time.time(),
            )
            result = await stranger.publish(forged, timeout=2.0)
            assert result.acked == frozenset(relays.urls)
        # A genuine revocation would have the workload moved well within this.
        await anyio.sleep(TIMING.claim_settle + 2.0)
        # The forged revocation is on the relays, attributed to its real signer...
        seen = await providers.nodes["sb0"].transport.query(
            Query(kinds={"revocation"}, workload_ids={providers.workload_id}), timeout=2.0
        )
        assert [e.signer for e in seen.envelopes] == [stranger.identity]
        # ...and no standby treats the lease as revoked.
        slots = [providers.nodes[name].status().slot(providers.workload_id) for name in NAMES[1:]]
        still_running = providers.runtimes["primary"].running(providers.workload_id)
    assert providers.hosts_started() == ["primary"]
    assert len(still_running) == 1
    for slot in slots:
        assert slot is not None
        assert not slot.revoked
        assert slot.phase is Phase.WATCHING


async def test_failover_works_with_one_relay_of_three_down(relays: RelayCluster) -> None:  # noqa: F811
    providers = Providers(relays)
    async with providers.running():
        await anyio.sleep(TIMING.heartbeat_interval)
        await anyio.to_thread.run_sync(lambda: relays.stop(1, kill=True))
        await anyio.sleep(TIMING.heartbeat_interval)
        assert providers.runtimes["primary"].running(providers.workload_id)
        providers.crash("primary")
        await wait_until(
            lambda: len(providers.hosts_started()) >= 2,
            within=TIMING.silence + TIMING.claim_settle + 5.0,
            what="a standby to take over on two relays",
        )
        await anyio.sleep(TIMING.claim_settle)
    assert providers.hosts_started() == ["primary", "sb0"]
    assert providers.record.max_concurrent(providers.workload_id) == 1


async def test_planned_handover_skips_the_silence_wait(relays: RelayCluster) -> None:  # noqa: F811
    providers = Providers(relays)
    async with providers.running():
        await anyio.sleep(TIMING.heartbeat_interval)
        handed_over_at = anyio.current_time()
        await providers.nodes["primary"].handover(providers.workload_id)
        await wait_until(
            lambda: len(providers.hosts_started()) >= 2,
            within=TIMING.silence,
            what="the first standby to take over",
        )
        await anyio.sleep(TIMING.promotion_delay)
    assert providers.hosts_started() == ["primary", "sb0"]
    assert providers.record.max_concurrent(providers.workload_id) == 1
    took = providers.started_at("sb0") - handed_over_at
    assert took < TIMING.silence, f"handover took {took:.2f}s, no faster than the silence wait"
