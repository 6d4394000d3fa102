"""The Redis transport against a real ``redis-server`` with ACL users.

Every provider is an ACL user that may write only its own hash (and the
shared claim keys): the conformance suites of relays and of atomic claims
run against it, and the tests below prove that one provider cannot write as
another and that a forged notification forges nothing. On asyncio and trio,
real sockets and clocks.
"""

from __future__ import annotations

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
from _proxy import tcp_proxy
from _redis import RedisServer, redis, redis_server  # noqa: F401

from standby import Heartbeat, LeaseRevocation, Message, PromotionClaim, fencing_token
from standby._errors import IdentityError, TransportError
from standby.adapters.redis import RedisTransport, canonical_identity
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
    return f"standby-test-{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def transports(
    server: RedisServer,
    names: tuple[str, ...] = ("alice", "bob", "mallory"),
    *,
    port: int | None = None,
) -> AsyncIterator[list[RedisTransport]]:
    prefix = fresh_prefix()
    accounts = [server.provider(name, prefix) for name in names]
    async with contextlib.AsyncExitStack() as stack:
        opened = [
            await stack.enter_async_context(
                RedisTransport(
                    "127.0.0.1",
                    port or server.port,
                    user=user,
                    password=password,
                    prefix=prefix,
                    name="redis",
                    reconnect_backoff=(0.02, 0.2),
                    connect_timeout=1.0,
                )
            )
            for user, password in accounts
        ]
        yield opened


async def _raw(transport: RedisTransport, command: Any) -> Any:
    from standby.adapters._kv_transport import Refused

    try:
        return await transport._run(command)
    except Refused as exc:
        raise TransportError(str(exc)) from exc


def forger(mallory: RedisTransport) -> Any:
    async def forge(message: Message, as_signer: str) -> None:
        client = mallory._require_running()
        data = mallory.codec.encode(message)
        # Into the victim's hash: the ACL refuses it...
        with pytest.raises(TransportError, match="no permissions"):
            await _raw(mallory, client.hset(mallory._hash(as_signer), {"m/forged": data}))
        # ...so mallory stores it where she may, and sends a notification in
        # the victim's name pointing at a field the victim never wrote.
        await _raw(mallory, client.set(f"{mallory.prefix}:claims:forged", data))
        await _raw(mallory, client.publish(mallory._channel(as_signer), "m/forged"))

    return forge


# --------------------------------------------------------------------------- conformance


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_redis_transport_passes_the_relay_suite(redis: RedisServer) -> None:  # noqa: F811
    @contextlib.asynccontextmanager
    async def harness() -> AsyncIterator[RelayHarness]:
        async with transports(redis) as (alice, bob, mallory):
            yield RelayHarness(
                transports=[alice, bob, mallory],
                relays=["redis"],
                forge=forger(mallory),
                aliases=lambda identity: [identity.upper(), f" redis:{identity} "],
                malformed_identities=["redis:", "a:b", "*"],
                open_requests=lambda: sum(t.open_requests() for t in (alice, bob, mallory)),
                timeout=2.0,
                delivery_timeout=5.0,
            )

    report = await check_relay_transport(harness, only=set(RELAY_CHECKS) - {"relay_down"})
    assert report.passed == tuple(name for name in RELAY_CHECKS if name != "relay_down")


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_a_subscription_survives_the_server_going_away(redis: RedisServer) -> None:  # noqa: F811
    """The relay suite's ``relay_down`` check, through a proxy that cuts every connection."""
    async with tcp_proxy(redis.port) as proxy:

        @contextlib.asynccontextmanager
        async def harness() -> AsyncIterator[RelayHarness]:
            async with transports(redis, port=proxy.port) as (alice, bob, mallory):

                async def down(_relay: str) -> None:
                    proxy.cut()

                async def up(_relay: str) -> None:
                    proxy.restore()

                yield RelayHarness(
                    transports=[alice, bob, mallory],
                    relays=["redis"],
                    forge=forger(mallory),
                    relay_down=down,
                    relay_up=up,
                    timeout=0.5,
                    delivery_timeout=5.0,
                )

        report = await check_relay_transport(harness, only={"relay_down"})
    assert report.passed == ("relay_down",)


@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.parametrize("through_proxy", [False, True], ids=["direct", "proxy"])
async def test_redis_claims_pass_the_claims_suite(
    redis: RedisServer,  # noqa: F811
    through_proxy: bool,
) -> None:
    async with tcp_proxy(redis.port) as proxy:

        @contextlib.asynccontextmanager
        async def harness() -> AsyncIterator[ClaimsHarness]:
            port = proxy.port if through_proxy else None
            async with transports(redis, ("alice", "bob", "carol"), port=port) as opened:
                carol = opened[2]

                async def forge_claim(claim: PromotionClaim) -> None:
                    client = carol._require_running()
                    key = carol._claim_key(claim.workload_id)
                    await _raw(carol, client.set(key, carol.codec.encode(claim)))

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


async def test_one_provider_cannot_write_as_another(redis: RedisServer) -> None:  # noqa: F811
    async with transports(redis) as (alice, bob, mallory):
        client = mallory._require_running()
        heartbeat = Heartbeat(provider=alice.identity, timestamp=time.time())
        assert (await mallory.publish(heartbeat, timeout=2.0)).acked == {"redis"}
        data = mallory.codec.encode(heartbeat)
        with pytest.raises(TransportError, match="no permissions"):
            await _raw(mallory, client.hset(mallory._hash(alice.identity), {"m/heartbeat": data}))
        with pytest.raises(TransportError, match="no permissions"):
            await _raw(mallory, client.delete([mallory._hash(alice.identity)]))
        seen = await bob.query(Query(kinds={"heartbeat"}), timeout=2.0)
        assert [(e.signer, e.message) for e in seen.envelopes] == [(mallory.identity, heartbeat)]
    async with RedisTransport(
        "127.0.0.1",
        redis.port,
        user=alice.identity,
        password="wrong",
        prefix=alice.prefix,
        name="redis",
    ) as impostor:
        result = await impostor.publish(heartbeat, timeout=1.0)
    assert result.acked == frozenset()
    assert "WRONGPASS" in result.errors["redis"] or "invalid" in result.errors["redis"]


async def test_a_forged_notification_delivers_only_what_the_signer_stored(
    redis: RedisServer,  # noqa: F811
) -> None:
    async with transports(redis) as (alice, bob, mallory):
        now = time.time()
        genuine = LeaseRevocation(
            workload_id="w1",
            primary=alice.identity,
            standbys=(bob.identity,),
            revoked_at=now,
            reason="genuine",
        )
        assert (await alice.publish(genuine, timeout=2.0)).acked == {"redis"}
        subscription = bob.subscribe(Query(kinds={"revocation"}, authors={alice.identity}))
        try:
            with anyio.fail_after(5):
                first = await subscription.__anext__()  # the stored backlog
            assert first.message == genuine
            client = mallory._require_running()
            # Mallory may publish on alice's channel, but the value is read from alice's hash.
            await _raw(mallory, client.publish(mallory._channel(alice.identity), "m/revocation/w1"))
            with anyio.fail_after(5):
                again = await subscription.__anext__()
            assert again.message == genuine
            assert again.signer == alice.identity
        finally:
            await subscription.aclose()


async def test_a_claim_key_overwritten_by_another_provider_is_not_believed(
    redis: RedisServer,  # noqa: F811
) -> None:
    async with transports(redis, ("alice", "bob", "carol")) as (alice, bob, carol):
        workload = f"w-{uuid.uuid4().hex[:6]}"
        forged = PromotionClaim(
            workload_id=workload,
            epoch=7,
            fencing_token=fencing_token(7, 0),
            claimant=alice.identity,
            standby_index=0,
            claimed_at=time.time(),
        )
        client = carol._require_running()
        await _raw(carol, client.set(carol._claim_key(workload), carol.codec.encode(forged)))
        assert await bob.holder(workload, timeout=2.0) is None
        claim = attrs.evolve(forged, claimant=bob.identity, standby_index=1)
        assert (await bob.compare_and_set_claim(claim, timeout=2.0)).won
        held = await alice.holder(workload, timeout=2.0)
        assert held is not None
        assert held.claimant == bob.identity


# --------------------------------------------------------------------------- behaviour


async def test_transport_shape_and_identities(redis: RedisServer) -> None:  # noqa: F811
    async with transports(redis, ("alice", "bob", "carol")) as (alice, _bob, _carol):
        assert isinstance(alice, RelayTransport)
        assert isinstance(alice, AtomicClaims)
        assert alice.relay_count == 1
        assert alice.relays == ("redis",)
        assert alice.canonical(f"REDIS:{alice.identity.upper()} ") == alice.identity
        assert canonical_identity(alice.identity) == alice.identity
        for bad in ("", "redis:", "a:b", "a*", "x" * 65):
            with pytest.raises(IdentityError):
                alice.canonical(bad)


async def test_commands_fail_cleanly_when_the_server_goes_away(redis: RedisServer) -> None:  # noqa: F811
    async with (
        tcp_proxy(redis.port) as proxy,
        transports(redis, ("alice", "bob", "carol"), port=proxy.port) as opened,
    ):
        alice = opened[0]
        heartbeat = Heartbeat(provider=alice.identity, timestamp=time.time())
        assert (await alice.publish(heartbeat, timeout=2.0)).acked == {"redis"}
        proxy.cut()
        result = await alice.publish(heartbeat, timeout=0.3)
        assert result.acked == frozenset()
        assert "redis" in result.errors
        answer = await alice.query(Query(), timeout=0.3)
        assert answer.answered == frozenset()
        proxy.restore()
        later = Heartbeat(provider=alice.identity, timestamp=time.time() + 1)
        assert (await alice.publish(later, timeout=3.0)).acked == {"redis"}
    with pytest.raises(TransportError, match="not running"):
        await alice.query(Query(), timeout=0.3)


def test_a_missing_coredis_gives_a_clear_error() -> None:
    code = (
        "import sys; sys.modules['coredis'] = None\n"
        "try:\n"
        "    import standby.adapters.redis\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    assert "pip install 'standby[redis]'" in out


def test_prefix_is_checked() -> None:
    with pytest.raises(ValueError, match="prefix"):
        RedisTransport("127.0.0.1", user="a", password="x", prefix="has*glob")
    with pytest.raises(IdentityError):
        RedisTransport("127.0.0.1", user="A:B", password="x")


async def test_a_query_naming_several_authors_reads_each_of_them(redis: RedisServer) -> None:  # noqa: F811
    async with transports(redis, ("alice", "bob", "carol")) as (alice, bob, carol):
        now = time.time()
        for sender in (alice, bob, carol):
            beat = Heartbeat(provider=sender.identity, timestamp=now)
            assert (await sender.publish(beat, timeout=2.0)).acked == {"redis"}
        seen = await carol.query(
            Query(kinds={"heartbeat"}, authors={alice.identity, bob.identity}), timeout=2.0
        )
        assert sorted(e.signer for e in seen.envelopes) == sorted([alice.identity, bob.identity])
        everyone = await alice.query(Query(kinds={"heartbeat"}), timeout=2.0)
        assert len(everyone.envelopes) == 3


async def test_a_lost_answer_is_read_again_not_assumed(redis: RedisServer) -> None:  # noqa: F811
    async with (
        tcp_proxy(redis.port) as proxy,
        transports(redis, ("alice", "bob", "carol"), port=proxy.port) as opened,
    ):
        alice, bob, _carol = opened
        beat = Heartbeat(provider=alice.identity, timestamp=time.time())
        assert (await alice.publish(beat, timeout=2.0)).acked == {"redis"}  # connected
        later = Heartbeat(provider=alice.identity, timestamp=time.time() + 1)
        proxy.lose_next_answer()
        assert (await alice.publish(later, timeout=3.0)).acked == {"redis"}
        assert proxy.lost_answers == 1
        assert alice.counters["unknown_outcomes"] == 1
        seen = await bob.query(Query(authors={alice.identity}), timeout=2.0)
        assert [e.message for e in seen.envelopes] == [later]
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
        rival = attrs.evolve(claim, claimant=bob.identity, standby_index=1)
        outcome = await bob.compare_and_set_claim(rival, timeout=2.0)
        assert not outcome.won
        assert outcome.holder is not None
        assert outcome.holder.claimant == alice.identity
