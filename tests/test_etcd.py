"""The etcd transport against a real 3-member cluster with auth enabled.

Every provider is an etcd user whose role may write only its own area (and
the shared claim keys): the conformance suites of relays and of atomic
claims run against it, and the tests below prove that one provider cannot
write as another, that a watch resumes after a disconnect, and that an
expired login is renewed. On asyncio and trio, real sockets and clocks.
"""

from __future__ import annotations

import base64
import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import attrs
import pytest
from _etcd import EtcdCluster, etcd, etcd_cluster  # noqa: F401
from _proxy import tcp_proxy

from standby import Heartbeat, LeaseRevocation, Message, PromotionClaim, fencing_token
from standby._errors import IdentityError, TransportError
from standby.adapters.etcd import EtcdTransport, canonical_identity, prefix_end
from standby.protocols import AtomicClaims, Query, RelayTransport
from standby.testing import (
    CLAIM_CHECKS,
    RELAY_CHECKS,
    ClaimsHarness,
    RelayHarness,
    check_atomic_claims,
    check_relay_transport,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


# The conformance suites are the longest tests here: each runs on one event
# loop (the two stores take turns); everything else runs on both.


def fresh_prefix() -> str:
    return f"/standby-test/{uuid.uuid4().hex[:8]}/"


@contextlib.asynccontextmanager
async def transports(
    cluster: EtcdCluster,
    names: tuple[str, ...] = ("alice", "bob", "mallory"),
    *,
    prefix: str | None = None,
    endpoints: list[str] | None = None,
) -> AsyncIterator[list[EtcdTransport]]:
    prefix = prefix or fresh_prefix()
    accounts = [await anyio.to_thread.run_sync(cluster.provider, name, prefix) for name in names]
    async with contextlib.AsyncExitStack() as stack:
        opened = [
            await stack.enter_async_context(
                EtcdTransport(
                    endpoints or cluster.endpoints,
                    user=user,
                    password=password,
                    prefix=prefix,
                    name="etcd",
                    reconnect_backoff=(0.02, 0.2),
                )
            )
            for user, password in accounts
        ]
        yield opened


def forger(cluster: EtcdCluster, mallory: EtcdTransport) -> Any:
    async def forge(message: Message, as_signer: str) -> None:
        data = mallory.codec.encode(message)
        # Straight into the victim's area: etcd refuses it...
        key = mallory._message_key(as_signer, message)
        with pytest.raises(TransportError, match="permission denied"):
            await _raw_put(mallory, key, data)
        # ...so mallory stores it where she may write, shaped like the victim's key.
        shaped = f"{mallory.prefix}claims/p/{as_signer}/m/forged".encode()
        await _raw_put(mallory, shaped, data)

    return forge


async def _raw_put(transport: EtcdTransport, key: bytes, data: bytes) -> None:
    from standby.adapters._kv_transport import Refused

    try:
        await transport._call(
            "/v3/kv/put",
            {"key": base64.b64encode(key).decode(), "value": base64.b64encode(data).decode()},
        )
    except Refused as exc:
        raise TransportError(str(exc)) from exc


# --------------------------------------------------------------------------- conformance


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_the_etcd_transport_passes_the_relay_suite(etcd: EtcdCluster) -> None:  # noqa: F811
    @contextlib.asynccontextmanager
    async def harness() -> AsyncIterator[RelayHarness]:
        async with transports(etcd) as (alice, bob, mallory):
            yield RelayHarness(
                transports=[alice, bob, mallory],
                relays=["etcd"],
                forge=forger(etcd, mallory),
                aliases=lambda identity: [identity.upper(), f" etcd:{identity} "],
                malformed_identities=["etcd:", "a/b", "*"],
                open_requests=lambda: sum(t.open_requests() for t in (alice, bob, mallory)),
                timeout=2.0,
                delivery_timeout=5.0,
            )

    report = await check_relay_transport(harness, only=set(RELAY_CHECKS) - {"relay_down"})
    assert report.passed == tuple(name for name in RELAY_CHECKS if name != "relay_down")


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_watch_survives_the_cluster_going_away(etcd: EtcdCluster) -> None:  # noqa: F811
    """The relay suite's ``relay_down`` check, through a proxy that cuts every connection."""
    async with tcp_proxy(etcd.members[0].client_port) as proxy:

        @contextlib.asynccontextmanager
        async def harness() -> AsyncIterator[RelayHarness]:
            endpoint = [f"http://127.0.0.1:{proxy.port}"]
            async with transports(etcd, endpoints=endpoint) as (alice, bob, mallory):

                async def down(_relay: str) -> None:
                    proxy.cut()

                async def up(_relay: str) -> None:
                    proxy.restore()

                yield RelayHarness(
                    transports=[alice, bob, mallory],
                    relays=["etcd"],
                    forge=forger(etcd, mallory),
                    relay_down=down,
                    relay_up=up,
                    timeout=0.5,
                    delivery_timeout=5.0,
                )

        report = await check_relay_transport(harness, only={"relay_down"})
    assert report.passed == ("relay_down",)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("through_proxy", [False, True], ids=["direct", "proxy"])
async def test_etcd_claims_pass_the_claims_suite(
    etcd: EtcdCluster,  # noqa: F811
    through_proxy: bool,
) -> None:
    # The store_down check needs the proxy; the others run without it (the
    # proxy's own tasks would count in the cancellation check).
    async with tcp_proxy(etcd.members[0].client_port) as proxy:

        @contextlib.asynccontextmanager
        async def harness() -> AsyncIterator[ClaimsHarness]:
            endpoint = [f"http://127.0.0.1:{proxy.port}"] if through_proxy else None
            async with transports(etcd, ("alice", "bob", "carol"), endpoints=endpoint) as opened:
                _alice, _bob, carol = opened

                async def forge_claim(claim: PromotionClaim) -> None:
                    # Carol writes the shared key in alice's name (she may
                    # write claim keys, not alice's proof).
                    key = carol._claim_key(claim.workload_id)
                    await _raw_put(carol, key, carol.codec.encode(claim))

                async def down() -> None:
                    proxy.cut()

                async def up() -> None:
                    proxy.restore()

                yield ClaimsHarness(
                    transports=opened,
                    forge_claim=forge_claim,
                    store_down=down,
                    store_up=up,
                    timeout=1.0,
                )

        checks = {"store_down"} if through_proxy else set(CLAIM_CHECKS) - {"store_down"}
        report = await check_atomic_claims(harness, only=checks)
    assert report.passed == tuple(name for name in CLAIM_CHECKS if name in checks)


# --------------------------------------------------------------------------- who wrote it


async def test_one_provider_cannot_write_as_another(etcd: EtcdCluster) -> None:  # noqa: F811
    async with transports(etcd) as (alice, bob, mallory):
        now = time.time()
        heartbeat = Heartbeat(provider=alice.identity, timestamp=now)
        # Mallory's own write of a body naming alice is hers.
        assert (await mallory.publish(heartbeat, timeout=2.0)).acked == {"etcd"}
        # Writing into alice's area is refused by etcd's RBAC.
        key = mallory._message_key(alice.identity, heartbeat)
        with pytest.raises(TransportError, match="permission denied"):
            await _raw_put(mallory, key, mallory.codec.encode(heartbeat))
        # Alice's proof of a claim, likewise.
        proof = mallory._proof_key(alice.identity, "w1")
        with pytest.raises(TransportError, match="permission denied"):
            await _raw_put(mallory, proof, b"{}")
        seen = await bob.query(Query(kinds={"heartbeat"}), timeout=2.0)
        assert [(e.signer, e.message) for e in seen.envelopes] == [(mallory.identity, heartbeat)]
        # A wrong password never gets in.
        async with EtcdTransport(
            etcd.endpoints, user=alice.identity, password="wrong", prefix=alice.prefix, name="etcd"
        ) as impostor:
            result = await impostor.publish(heartbeat, timeout=1.0)
        assert result.acked == frozenset()
        assert "authentication failed" in result.errors["etcd"]


async def test_a_claim_key_overwritten_by_another_provider_is_not_believed(
    etcd: EtcdCluster,  # noqa: F811
) -> None:
    async with transports(etcd, ("alice", "bob", "carol")) as (alice, bob, carol):
        workload = f"w-{uuid.uuid4().hex[:6]}"
        forged = PromotionClaim(
            workload_id=workload,
            epoch=7,
            fencing_token=fencing_token(7, 0),
            claimant=alice.identity,
            standby_index=0,
            claimed_at=time.time(),
        )
        await _raw_put(carol, carol._claim_key(workload), carol.codec.encode(forged))
        assert await bob.holder(workload, timeout=2.0) is None
        claim = PromotionClaim(
            workload_id=workload,
            epoch=7,
            fencing_token=fencing_token(7, 1),
            claimant=bob.identity,
            standby_index=1,
            claimed_at=time.time(),
        )
        assert (await bob.compare_and_set_claim(claim, timeout=2.0)).won
        held = await alice.holder(workload, timeout=2.0)
        assert held is not None
        assert held.claimant == bob.identity
        assert bob.counters["forged_claims"] >= 1


# --------------------------------------------------------------------------- behaviour


async def test_transport_shape_and_identities(etcd: EtcdCluster) -> None:  # noqa: F811
    async with transports(etcd, ("alice", "bob", "carol")) as (alice, _bob, _carol):
        assert isinstance(alice, RelayTransport)
        assert isinstance(alice, AtomicClaims)
        assert alice.relay_count == 1
        assert alice.relays == ("etcd",)
        assert alice.canonical(f"ETCD:{alice.identity.upper()} ") == alice.identity
        assert canonical_identity(alice.identity) == alice.identity
        for bad in ("", "etcd:", "a/b", "a b", "x" * 65):
            with pytest.raises(IdentityError):
                alice.canonical(bad)
    assert prefix_end(b"/a/") == b"/a0"
    assert prefix_end(b"a\xff") == b"b"


async def test_an_expired_login_is_renewed(etcd: EtcdCluster) -> None:  # noqa: F811
    async with transports(etcd, ("alice", "bob", "carol")) as (alice, bob, _carol):
        heartbeat = Heartbeat(provider=alice.identity, timestamp=time.time())
        assert (await alice.publish(heartbeat, timeout=2.0)).acked == {"etcd"}
        alice._token = "not-a-token"  # what a member that restarted would say
        later = Heartbeat(provider=alice.identity, timestamp=time.time() + 1)
        assert (await alice.publish(later, timeout=2.0)).acked == {"etcd"}
        assert alice.counters["reauthentications"] == 1
        seen = await bob.query(Query(authors={alice.identity}), timeout=2.0)
        assert [e.message for e in seen.envelopes] == [later]


async def test_a_subscription_with_since_gets_the_stored_backlog(etcd: EtcdCluster) -> None:  # noqa: F811
    async with transports(etcd, ("alice", "bob", "carol")) as (alice, bob, _carol):
        now = time.time()
        old = LeaseRevocation(
            workload_id="w-old",
            primary=alice.identity,
            standbys=(bob.identity,),
            revoked_at=now - 100,
            reason="old",
        )
        new = LeaseRevocation(
            workload_id="w-new",
            primary=alice.identity,
            standbys=(bob.identity,),
            revoked_at=now,
            reason="new",
        )
        for message in (old, new):
            assert (await alice.publish(message, timeout=2.0)).acked == {"etcd"}
        subscription = bob.subscribe(Query(kinds={"revocation"}, since=now - 10))
        try:
            with anyio.fail_after(5):
                envelope = await subscription.__anext__()
        finally:
            await subscription.aclose()
        assert envelope.message == new
        assert envelope.signer == alice.identity


async def test_publishing_fails_cleanly_without_a_cluster() -> None:
    async with EtcdTransport(
        ["http://127.0.0.1:9"], user="alice", password="x", name="etcd"
    ) as transport:
        result = await transport.publish(
            Heartbeat(provider="alice", timestamp=time.time()), timeout=0.3
        )
        assert result.acked == frozenset()
        assert "cannot connect" in result.errors["etcd"]
        answer = await transport.query(Query(), timeout=0.3)
        assert answer.answered == frozenset()
        claim = PromotionClaim(
            workload_id="w",
            epoch=1,
            fencing_token=1,
            claimant="alice",
            standby_index=0,
            claimed_at=time.time(),
        )
        with pytest.raises(TransportError, match="outcome unknown"):
            await transport.compare_and_set_claim(claim, timeout=0.3)
    with pytest.raises(TransportError, match="not running"):
        await transport.query(Query(), timeout=0.3)


def test_a_missing_httpx_gives_a_clear_error() -> None:
    code = (
        "import sys; sys.modules['httpx'] = None\n"
        "try:\n"
        "    import standby.adapters.etcd\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    assert "pip install 'standby[etcd]'" in out


def test_endpoints_and_prefix_are_checked() -> None:
    with pytest.raises(ValueError, match="at least one endpoint"):
        EtcdTransport([], user="a", password="x")
    with pytest.raises(ValueError, match="http"):
        EtcdTransport(["127.0.0.1:2379"], user="a", password="x")
    with pytest.raises(ValueError, match="prefix"):
        EtcdTransport(["http://127.0.0.1:2379"], user="a", password="x", prefix="standby")
    with pytest.raises(IdentityError):
        EtcdTransport(["http://127.0.0.1:2379"], user="A B", password="x")


async def test_a_query_naming_several_authors_reads_each_of_them(etcd: EtcdCluster) -> None:  # noqa: F811
    async with transports(etcd, ("alice", "bob", "carol")) as (alice, bob, carol):
        now = time.time()
        for sender in (alice, bob, carol):
            beat = Heartbeat(provider=sender.identity, timestamp=now)
            assert (await sender.publish(beat, timeout=2.0)).acked == {"etcd"}
        seen = await carol.query(
            Query(kinds={"heartbeat"}, authors={alice.identity, bob.identity}), timeout=2.0
        )
        assert sorted(e.signer for e in seen.envelopes) == sorted([alice.identity, bob.identity])


async def test_a_lost_answer_is_read_again_not_assumed(etcd: EtcdCluster) -> None:  # noqa: F811
    async with tcp_proxy(etcd.members[0].client_port) as proxy:
        endpoint = [f"http://127.0.0.1:{proxy.port}"]
        async with transports(etcd, ("alice", "bob", "carol"), endpoints=endpoint) as opened:
            alice, bob, _carol = opened
            beat = Heartbeat(provider=alice.identity, timestamp=time.time())
            assert (await alice.publish(beat, timeout=2.0)).acked == {"etcd"}  # logged in
            later = Heartbeat(provider=alice.identity, timestamp=time.time() + 1)
            proxy.lose_next_answer()
            assert (await alice.publish(later, timeout=3.0)).acked == {"etcd"}
            assert proxy.lost_answers == 1
            assert alice.counters["unknown_outcomes"] == 1
            seen = await bob.query(Query(authors={alice.identity}), timeout=2.0)
            assert [e.message for e in seen.envelopes] == [later]
            # A claim whose answer was lost: the re-read finds it held by
            # alice, so alice wins (again) and bob loses.
            workload = f"w-{uuid.uuid4().hex[:6]}"
            claim = PromotionClaim(
                workload_id=workload,
                epoch=1,
                fencing_token=fencing_token(1, 0),
                claimant=alice.identity,
                standby_index=0,
                claimed_at=time.time(),
            )
            proxy.lose_next_answer()
            assert (await alice.compare_and_set_claim(claim, timeout=3.0)).won
            assert proxy.lost_answers == 2
            assert alice.counters["unknown_outcomes"] == 2
            rival = attrs.evolve(claim, claimant=bob.identity, standby_index=1)
            outcome = await bob.compare_and_set_claim(rival, timeout=2.0)
            assert not outcome.won
            assert outcome.holder is not None
            assert outcome.holder.claimant == alice.identity
