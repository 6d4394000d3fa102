"""The etcd transport against a real 3-member cluster with auth enabled.

Every provider is an etcd user whose role may write only its own area (and
the shared claim keys): the conformance suites of relays and of atomic
claims run against it, and the tests below (with those of
``tests/_kv_checks.py`` it shares with Redis) prove that one provider cannot
write as another, that a watch resumes after a disconnect, and that an
expired login is renewed. On asyncio and trio, real sockets and clocks.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Awaitable, Callable

import anyio
import pytest
from _etcd import EtcdCluster, etcd, etcd_cluster  # noqa: F401
from _kv_checks import (  # noqa: F401 - the shared tests run here, against etcd
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

from standby import Heartbeat, LeaseRevocation, Message, PromotionAnnouncement
from standby.adapters.etcd import EtcdTransport, prefix_end
from standby.core._errors import IdentityError, TransportError
from standby.protocols import Query

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


async def _raw_put(transport: EtcdTransport, key: bytes, data: bytes) -> None:
    body = {"key": base64.b64encode(key).decode(), "value": base64.b64encode(data).decode()}
    await raw(transport._call("/v3/kv/put", body))


class EtcdStore(KvStore):
    """The session's etcd cluster, for the shared checks."""

    relay = "etcd"
    scheme = "etcd"
    refusal = "permission denied"
    malformed_identities = ("etcd:", "a/b", "*")
    bad_identities = ("", "etcd:", "a/b", "a b", "x" * 65)
    request_counter = "requests"
    counts_lost_claim_answer = True

    def __init__(self, cluster: EtcdCluster) -> None:
        self.cluster = cluster

    @property
    def port(self) -> int:
        return self.cluster.members[0].client_port

    def fresh_prefix(self) -> str:
        return f"/standby-test/{uuid.uuid4().hex[:8]}/"

    async def account(self, name: str, prefix: str) -> tuple[str, str]:
        return await anyio.to_thread.run_sync(self.cluster.provider, name, prefix)

    def open(self, user: str, password: str, prefix: str, via: int | None) -> EtcdTransport:
        endpoints = self.cluster.endpoints if via is None else [f"http://127.0.0.1:{via}"]
        return EtcdTransport(
            endpoints,
            user=user,
            password=password,
            prefix=prefix,
            name="etcd",
            reconnect_backoff=(0.02, 0.2),
        )

    def forge(self, mallory: EtcdTransport) -> Callable[[Message, str], Awaitable[None]]:
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

    async def write_claim_key(
        self, transport: EtcdTransport, workload_id: str, data: bytes
    ) -> None:
        await _raw_put(transport, transport._claim_key(workload_id), data)

    def intrusions(
        self, mallory: EtcdTransport, victim: str, message: Message
    ) -> list[Callable[[], Awaitable[None]]]:
        data = mallory.codec.encode(message)
        key = mallory._message_key(victim, message)
        proof = mallory._proof_key(victim, "w1")  # the victim's proof of a claim, likewise
        return [lambda: _raw_put(mallory, key, data), lambda: _raw_put(mallory, proof, b"{}")]

    def wrong_password(self, error: str) -> bool:
        return "authentication failed" in error


@pytest.fixture
def store(etcd: EtcdCluster) -> EtcdStore:  # noqa: F811
    return EtcdStore(etcd)


# --------------------------------------------------------------------------- conformance

test_the_etcd_transport_passes_the_relay_suite = relay_suite_test("trio")
test_a_watch_survives_the_cluster_going_away = relay_down_test("asyncio")
test_etcd_claims_pass_the_claims_suite = claims_suite_test("asyncio")


# --------------------------------------------------------------------------- behaviour


def test_prefix_end_covers_every_key_of_the_prefix() -> None:
    assert prefix_end(b"/a/") == b"/a0"
    assert prefix_end(b"a\xff") == b"b"


async def test_an_expired_login_is_renewed(store: EtcdStore) -> None:
    async with store.transports(("alice", "bob", "carol")) as (alice, bob, _carol):
        heartbeat = Heartbeat(provider=alice.identity, timestamp=time.time())
        assert (await alice.publish(heartbeat, timeout=2.0)).acked == {"etcd"}
        alice._token = "not-a-token"  # what a member that restarted would say
        later = Heartbeat(provider=alice.identity, timestamp=time.time() + 1)
        assert (await alice.publish(later, timeout=2.0)).acked == {"etcd"}
        assert alice.counters["reauthentications"] == 1
        seen = await bob.query(Query(authors={alice.identity}), timeout=2.0)
        assert [e.message for e in seen.envelopes] == [later]


async def test_a_subscription_with_since_gets_the_stored_backlog(store: EtcdStore) -> None:
    async with store.transports(("alice", "bob", "carol")) as (alice, bob, _carol):
        now = time.time()
        for workload, at in (("w-old", now - 100), ("w-new", now)):
            revocation = LeaseRevocation(
                workload_id=workload,
                primary=alice.identity,
                standbys=(bob.identity,),
                revoked_at=at,
                reason=workload,
            )
            assert (await alice.publish(revocation, timeout=2.0)).acked == {"etcd"}
        subscription = bob.subscribe(Query(kinds={"revocation"}, since=now - 10))
        try:
            with anyio.fail_after(5):
                envelope = await subscription.__anext__()
        finally:
            await subscription.aclose()
        assert envelope.message == revocation  # the new one only
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
        with pytest.raises(TransportError, match="outcome unknown"):
            await transport.compare_and_set_claim(claim("w", 1, "alice", 0), timeout=0.3)
    with pytest.raises(TransportError, match="not running"):
        await transport.query(Query(), timeout=0.3)


def test_a_missing_httpx_gives_a_clear_error() -> None:
    assert_missing_extra_is_explained("httpx", "etcd")


def test_endpoints_and_prefix_are_checked() -> None:
    with pytest.raises(ValueError, match="at least one endpoint"):
        EtcdTransport([], user="a", password="x")
    with pytest.raises(ValueError, match="http"):
        EtcdTransport(["127.0.0.1:2379"], user="a", password="x")
    with pytest.raises(ValueError, match="prefix"):
        EtcdTransport(["http://127.0.0.1:2379"], user="a", password="x", prefix="standby")
    with pytest.raises(IdentityError):
        EtcdTransport(["http://127.0.0.1:2379"], user="A B", password="x")


def test_a_single_endpoint_string_is_refused() -> None:
    # it would iterate as characters: "must be unique, got ['h', 't', ...]" or worse
    with pytest.raises(TypeError, match=r"a list of URLs.*pass \['http://127.0.0.1:2379'\]"):
        EtcdTransport("http://127.0.0.1:2379", user="a", password="x")


async def _lease_of(transport: EtcdTransport, key: bytes) -> int:
    answer = await raw(transport._call("/v3/kv/range", {"key": base64.b64encode(key).decode()}))
    (kv,) = answer["kvs"]
    return int(kv.get("lease", 0))


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_claims_and_announcements_expire_after_the_retention(store: EtcdStore) -> None:
    # They stayed in etcd for ever: every key now carries a lease of the retention.
    prefix = store.fresh_prefix()
    user, password = await store.account("alice", prefix)
    day = 86_400.0
    opened = EtcdTransport(
        store.cluster.endpoints, user=user, password=password, prefix=prefix, retention=day
    )
    async with opened as alice:
        assert (await alice.compare_and_set_claim(claim("w1", 1, user, 0), timeout=5)).won
        announcement = PromotionAnnouncement(
            workload_id="w1", new_primary=user, promoted_at=time.time(), epoch=1
        )
        assert (await alice.publish(announcement, timeout=5)).acked
        keys = [
            alice._claim_key("w1"),
            alice._proof_key(user, "w1"),
            alice._message_key(user, announcement),
        ]
        leases = {await _lease_of(alice, key) for key in keys}
        assert len(leases) == 1
        (lease,) = leases
        assert lease != 0
        alive = await raw(alice._call("/v3/lease/timetolive", {"ID": str(lease)}))
        assert day - 60 <= int(alive["TTL"]) <= day * 17 / 16
    forever = EtcdTransport(
        store.cluster.endpoints, user=user, password=password, prefix=prefix, retention=None
    )
    async with forever as alice:
        assert (await alice.compare_and_set_claim(claim("w2", 1, user, 0), timeout=5)).won
        assert await _lease_of(alice, alice._claim_key("w2")) == 0


def test_the_retention_is_checked() -> None:
    for bad in (0, 60.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="retention must be"):
            EtcdTransport(["http://127.0.0.1:2379"], user="a", password="x", retention=bad)
