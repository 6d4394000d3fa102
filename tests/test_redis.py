"""The Redis transport against a real ``redis-server`` with ACL users.

Every provider is an ACL user that may write only its own hash (and the
shared claim keys): the conformance suites of relays and of atomic claims
run against it, and the tests below (with those of ``tests/_kv_checks.py``
it shares with etcd) prove that one provider cannot write as another and
that a forged notification forges nothing. On asyncio and trio, real
sockets and clocks.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
from _kv_checks import (  # noqa: F401 - the shared tests run here, against Redis
    KvStore,
    anyio_backend,
    assert_missing_extra_is_explained,
    claim,
    claims_suite_test,
    raw,
    relay_down_test,
    relay_suite_test,
    test_a_claim_key_overwritten_by_another_provider_is_not_believed,
    test_a_lost_answer_is_read_again_not_assumed,
    test_a_query_naming_several_authors_reads_each_of_them,
    test_one_provider_cannot_write_as_another,
    test_transport_shape_and_identities,
    test_wait_connected_reports_the_store_once_it_is_ready,
)
from _proxy import tcp_proxy
from _redis import RedisServer, redis, redis_server  # noqa: F401

from standby import (
    Heartbeat,
    LeaseRevocation,
    Message,
    PromotionAnnouncement,
    PromotionClaim,
    fencing_token,
)
from standby.adapters.redis import RedisTransport
from standby.core._errors import IdentityError, TransportError
from standby.protocols import Query

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


async def _raw(transport: RedisTransport, command: Any) -> Any:
    return await raw(transport._run(command))


class RedisStore(KvStore):
    """The session's ``redis-server``, for the shared checks."""

    relay = "redis"
    scheme = "redis"
    refusal = "no permissions"
    malformed_identities = ("redis:", "a:b", "*")
    bad_identities = ("", "redis:", "a:b", "a*", "x" * 65)
    request_counter = "commands"
    counts_lost_claim_answer = False

    def __init__(self, server: RedisServer) -> None:
        self.server = server

    @property
    def port(self) -> int:
        return self.server.port

    def fresh_prefix(self) -> str:
        return f"standby-test-{uuid.uuid4().hex[:8]}"

    async def account(self, name: str, prefix: str) -> tuple[str, str]:
        return self.server.provider(name, prefix)

    def open(self, user: str, password: str, prefix: str, via: int | None) -> RedisTransport:
        return RedisTransport(
            "127.0.0.1",
            via or self.server.port,
            user=user,
            password=password,
            prefix=prefix,
            name="redis",
            reconnect_backoff=(0.02, 0.2),
            connect_timeout=1.0,
        )

    def forge(self, mallory: RedisTransport) -> Callable[[Message, str], Awaitable[None]]:
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

    async def write_claim_key(
        self, transport: RedisTransport, workload_id: str, data: bytes
    ) -> None:
        client = transport._require_running()
        await _raw(transport, client.set(transport._claim_key(workload_id), data))

    def intrusions(
        self, mallory: RedisTransport, victim: str, message: Message
    ) -> list[Callable[[], Awaitable[Any]]]:
        client = mallory._require_running()
        data = mallory.codec.encode(message)
        victims = mallory._hash(victim)
        return [
            lambda: _raw(mallory, client.hset(victims, {"m/heartbeat": data})),
            lambda: _raw(mallory, client.delete([victims])),
        ]

    def wrong_password(self, error: str) -> bool:
        return "WRONGPASS" in error or "invalid" in error


@pytest.fixture
def store(redis: RedisServer) -> RedisStore:  # noqa: F811
    return RedisStore(redis)


# --------------------------------------------------------------------------- conformance

test_the_redis_transport_passes_the_relay_suite = relay_suite_test("asyncio")
test_a_subscription_survives_the_server_going_away = relay_down_test("trio")
test_redis_claims_pass_the_claims_suite = claims_suite_test("trio")


# --------------------------------------------------------------------------- behaviour


async def test_a_forged_notification_delivers_only_what_the_signer_stored(
    store: RedisStore,
) -> None:
    async with store.transports() as (alice, bob, mallory):
        genuine = LeaseRevocation(
            workload_id="w1",
            primary=alice.identity,
            standbys=(bob.identity,),
            revoked_at=time.time(),
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


async def test_commands_fail_cleanly_when_the_server_goes_away(store: RedisStore) -> None:
    async with (
        tcp_proxy(store.port) as proxy,
        store.transports(("alice", "bob", "carol"), via=proxy.port) as opened,
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
    assert_missing_extra_is_explained("coredis", "redis")


def test_prefix_is_checked() -> None:
    with pytest.raises(ValueError, match="prefix"):
        RedisTransport("127.0.0.1", user="a", password="x", prefix="has*glob")
    with pytest.raises(IdentityError):
        RedisTransport("127.0.0.1", user="A:B", password="x")


@pytest.mark.parametrize(
    ("host", "port", "error", "fragment"),
    [
        ("redis://127.0.0.1:6379", 6379, ValueError, "not a URL"),
        ("127.0.0.1:6379", 6379, ValueError, "port separately"),
        ("127.0.0.1", 99999, ValueError, "port from 1 to 65535, got 99999"),
        ("127.0.0.1", 0, ValueError, "port from 1 to 65535"),
        ("127.0.0.1", "6379", TypeError, "integer port"),
        ("", 6379, ValueError, "host name"),
        (["127.0.0.1"], 6379, ValueError, "host name"),
    ],
)
def test_host_and_port_are_checked_at_construction(
    host: Any, port: Any, error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error, match=fragment):
        RedisTransport(host, port, user="a", password="x")


def test_an_ipv6_address_is_a_host() -> None:
    assert RedisTransport("::1", 6379, user="a", password="x").port == 6379


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_claims_expire_and_old_fields_are_swept(store: RedisStore) -> None:
    # Claims and announcements stayed in Redis for ever: a claim key now has a
    # time to live of the retention, and a sweep drops this provider's fields
    # older than that (Redis 7.0 cannot expire one field of a hash).
    prefix = store.fresh_prefix()
    user, password = await store.account("alice", prefix)
    day = 86_400.0
    now = time.time()
    opened = RedisTransport(
        "127.0.0.1", store.port, user=user, password=password, prefix=prefix, retention=day
    )
    async with opened as alice:
        client = alice._require_running()
        assert (await alice.compare_and_set_claim(claim("w1", 1, user, 0), timeout=5)).won
        ttl = await _raw(alice, client.pttl(alice._claim_key("w1")))
        assert (day - 60) * 1000 <= ttl <= day * 1000
        old_claim = PromotionClaim(
            workload_id="w-old",
            epoch=1,
            fencing_token=fencing_token(1, 0),
            claimant=user,
            standby_index=0,
            claimed_at=now - 2 * day,
        )
        assert (await alice.compare_and_set_claim(old_claim, timeout=5)).won
        for workload_id, at in (("w-old", now - 2 * day), ("w1", now)):
            announcement = PromotionAnnouncement(
                workload_id=workload_id, new_primary=user, promoted_at=at, epoch=1
            )
            assert (await alice.publish(announcement, timeout=5)).acked
        assert await alice.sweep() == 2  # the old announcement and the old claim's proof
        left = await alice.query(Query(kinds=("announcement",)), timeout=5)
        assert [e.message.workload_id for e in left.envelopes] == ["w1"]
        assert await alice.holder("w-old", timeout=5) is None
        assert (await alice.holder("w1", timeout=5)) is not None
        assert await alice.sweep() == 0
    forever = RedisTransport(
        "127.0.0.1", store.port, user=user, password=password, prefix=prefix, retention=None
    )
    async with forever as alice:
        client = alice._require_running()
        assert (await alice.compare_and_set_claim(claim("w2", 1, user, 0), timeout=5)).won
        assert await _raw(alice, client.pttl(alice._claim_key("w2"))) == -1


def test_the_retention_is_checked() -> None:
    for bad in (0, 60.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="retention must be"):
            RedisTransport("127.0.0.1", user="a", password="x", retention=bad)
