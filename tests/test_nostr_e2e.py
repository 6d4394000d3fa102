"""End to end over three real relay processes: StandbyNode + NostrTransport.

Every test runs on both relay implementations (``any_relays``:
``nostr-relay`` and rust-nostr's ``LocalRelay``). Three providers (a
primary and two standbys), each a :class:`StandbyNode` with its own
:class:`NostrTransport` to the three local relays and a
:class:`MemoryRuntime`; all runtimes share one :class:`RuntimeRecord`,
which is what the assertions read ("who ran the workload, when"). Real sockets and
real time, at a timing scaled down to a silence of 4 s.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from _e2e import NAMES, Providers
from _nostr_relays import (  # noqa: F401
    RelayCluster,
    any_relays,
    backends,
    fixed_keys,
    local_relays,
    nostr_relays,
    on_relay_runs,
)

from standby import Heartbeat, LeaseRevocation
from standby.adapters.nostr import NostrProfile, NostrTransport, sign_event
from standby.core import Phase
from standby.node import SlotPhaseChanged
from standby.protocols import Query
from standby.testing._relay_process import local_relay_timing
from standby.wire import Codec

pytestmark = [pytest.mark.anyio, on_relay_runs]

#: Silence 4 s; queries get 0.3 s (real sockets; they take a few ms here).
TIMING = local_relay_timing()


@pytest.fixture(params=backends())
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


class NostrProviders(Providers):
    """The three providers on the real relays, each with its own keys."""

    def __init__(self, cluster: RelayCluster) -> None:
        self.cluster = cluster
        self.keys = {name: fixed_keys() for name in NAMES}
        # The consumer mixes encodings: npub for some, hex for others.
        identities = {
            "primary": self.keys["primary"].npub,
            "sb0": self.keys["sb0"].npub,
            "sb1": self.keys["sb1"].public_key,
        }
        super().__init__(self.connected, identities, TIMING)

    @contextlib.asynccontextmanager
    async def connected(self, name: str) -> AsyncIterator[NostrTransport]:
        async with NostrTransport(
            self.cluster.urls, self.keys[name], reconnect_backoff=(0.05, 0.5)
        ) as transport:
            connected = await transport.wait_connected(timeout=5.0)
            assert len(connected) == len(self.cluster.urls), connected
            yield transport


async def test_primary_crash_exactly_one_standby_takes_over(any_relays: RelayCluster) -> None:  # noqa: F811
    providers = NostrProviders(any_relays)
    async with providers.running():
        await anyio.sleep(TIMING.heartbeat_interval)
        # Standby 1's backoff expired before standby 0 spawned: it must have
        # stood down, and stay down.
        await providers.fail_over(
            within=TIMING.silence + TIMING.claim_settle + 4.0,
            what="a standby to take over",
            settle=TIMING.claim_settle,
        )
    providers.assert_standby_0_alone_was_promoted()


async def test_a_revocation_signed_by_a_stranger_promotes_nobody(any_relays: RelayCluster) -> None:  # noqa: F811
    providers = NostrProviders(any_relays)
    async with providers.running():
        primary = providers.keys["primary"].public_key
        standbys = (providers.keys["sb0"].public_key, providers.keys["sb1"].public_key)
        async with NostrTransport(any_relays.urls, fixed_keys()) as stranger:
            forged = LeaseRevocation(
                workload_id=providers.workload_id,
                primary=primary,
                standbys=standbys,
                reason="handover",
                revoked_at=time.time(),
            )
            result = await stranger.publish(forged, timeout=2.0)
            assert result.acked == frozenset(any_relays.urls)
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


async def test_failover_works_with_one_relay_of_three_down(any_relays: RelayCluster) -> None:  # noqa: F811
    providers = NostrProviders(any_relays)
    async with providers.running():
        await anyio.sleep(TIMING.heartbeat_interval)
        await anyio.to_thread.run_sync(lambda: any_relays.stop(1, kill=True))
        await anyio.sleep(TIMING.heartbeat_interval)
        assert providers.runtimes["primary"].running(providers.workload_id)
        await providers.fail_over(
            within=TIMING.silence + TIMING.claim_settle + 5.0,
            what="a standby to take over on two relays",
            settle=TIMING.claim_settle,
        )
    providers.assert_standby_0_took_over()


async def test_planned_handover_skips_the_silence_wait(any_relays: RelayCluster) -> None:  # noqa: F811
    providers = NostrProviders(any_relays)
    async with providers.running():
        await anyio.sleep(TIMING.heartbeat_interval)
        handed_over_at = anyio.current_time()
        await providers.nodes["primary"].handover(providers.workload_id)
        await providers.taken_over(
            within=TIMING.silence,
            what="the first standby to take over",
        )
        await anyio.sleep(TIMING.promotion_delay)
    providers.assert_standby_0_took_over()
    took = providers.started_at("sb0") - handed_over_at
    assert took < TIMING.silence, f"handover took {took:.2f}s, no faster than the silence wait"


class NoLiveHeartbeats:
    """A live subscription that loses every heartbeat: silence is confirmed by reading."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __aiter__(self) -> NoLiveHeartbeats:
        return self

    async def __anext__(self) -> Any:
        while True:
            envelope = await self.inner.__anext__()
            if not isinstance(envelope.message, Heartbeat):
                return envelope

    async def aclose(self) -> None:
        await self.inner.aclose()


class DeafToHeartbeats(NostrTransport):
    """A standby's transport whose subscriptions miss every heartbeat (its queries do not)."""

    def subscribe(self, query: Query) -> Any:
        return NoLiveHeartbeats(super().subscribe(query))


async def test_fm18_a_hand_crafted_future_heartbeat_hides_no_genuine_one_on_real_relays(
    any_relays: RelayCluster,  # noqa: F811
) -> None:
    """A heartbeat body an hour ahead with ``created_at`` now (relays take it).

    The standbys see no heartbeat live, so each silence wait ends in a
    read-quorum query of the relays: it must find the primary's genuine
    heartbeats, not conclude silence over a live primary.
    """
    providers = NostrProviders(any_relays)
    plain = providers.connect

    @contextlib.asynccontextmanager
    async def connect(name: str) -> AsyncIterator[NostrTransport]:
        if name == "primary":
            async with plain(name) as transport:
                yield transport
            return
        async with DeafToHeartbeats(
            any_relays.urls, providers.keys[name], reconnect_backoff=(0.05, 0.5)
        ) as transport:
            assert await transport.wait_connected(timeout=5.0) == frozenset(any_relays.urls)
            yield transport

    providers.connect = connect
    async with providers.running():
        keys = providers.keys["primary"]
        now = time.time()
        beat = Heartbeat(provider=keys.public_key, timestamp=now + 3600, active_workloads=1)
        draft = NostrProfile().drafts(beat, Codec())[-1]
        crafted = sign_event(
            keys, kind=draft.kind, tags=draft.tags, content=draft.content, created_at=int(now)
        ).to_json()
        primary = providers.nodes["primary"].transport
        for url in any_relays.urls:
            assert await primary.send_raw(url, crafted, timeout=2.0) == (True, "")
        # The primary keeps heartbeating through two silence waits and more.
        await anyio.sleep(2 * TIMING.silence + TIMING.claim_settle)
        still_running = providers.runtimes["primary"].running(providers.workload_id)
    moves = [
        [(e.old, e.new) for e in providers.events[name] if isinstance(e, SlotPhaseChanged)]
        for name in NAMES[1:]
    ]
    assert providers.hosts_started() == ["primary"]
    assert len(still_running) == 1
    for standby in moves:
        # Each silence wait was checked by reading the relays...
        assert (Phase.WATCHING, Phase.CONFIRMING) in standby, standby
        # ...and the read found the primary alive every time.
        assert (Phase.CONFIRMING, Phase.BACKOFF) not in standby, standby
