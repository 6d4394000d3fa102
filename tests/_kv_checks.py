"""Checks that the etcd and the Redis transports share, run against a real store.

``tests/test_etcd.py`` and ``tests/test_redis.py`` each describe their store
as a :class:`KvStore` (how to open transports, how a provider tries to write
as another) in a ``store`` fixture, and import the tests below, which then
run in that module against that store. The conformance suites are made by
:func:`relay_suite_test`, :func:`relay_down_test` and
:func:`claims_suite_test`, each on one event loop of the caller's choice
(the two stores take turns, since they are the longest tests).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import anyio
import attrs
import pytest
from _proxy import tcp_proxy
from _real import REAL_MAX_BLOCKING

from standby import Heartbeat, Message, PromotionClaim, fencing_token
from standby.adapters.kv._transport import Refused
from standby.core._errors import IdentityError, TransportError
from standby.protocols import AtomicClaims, Query, RelayTransport, WaitsConnected
from standby.testing import (
    CLAIM_CHECKS,
    RELAY_CHECKS,
    ClaimsHarness,
    RelayHarness,
    check_atomic_claims,
    check_relay_transport,
)

__all__ = [
    "KvStore",
    "anyio_backend",
    "assert_missing_extra_is_explained",
    "claim",
    "claims_suite_test",
    "raw",
    "relay_down_test",
    "relay_suite_test",
    "test_a_claim_key_overwritten_by_another_provider_is_not_believed",
    "test_a_lost_answer_is_read_again_not_assumed",
    "test_a_query_naming_several_authors_reads_each_of_them",
    "test_one_provider_cannot_write_as_another",
    "test_transport_shape_and_identities",
]

Test = Callable[..., Awaitable[None]]
_T = TypeVar("_T")


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """Every test on asyncio and on trio, with real clocks (a store runs in real time)."""
    return request.param


class KvStore:
    """One running store, as the shared checks use it; a subclass per store."""

    #: The relay name every transport is given.
    relay: str
    #: The account scheme of identities (``etcd:``, ``redis:``).
    scheme: str
    #: What the store says when it refuses a write (a ``pytest.raises`` match).
    refusal: str
    #: Spellings the relay suite must refuse, and those ``canonical`` refuses.
    malformed_identities: tuple[str, ...]
    bad_identities: tuple[str, ...]
    #: Whether a lost claim answer counts exactly one more ``unknown_outcomes``.
    counts_lost_claim_answer: bool
    #: The transport's counter of requests sent to the store.
    request_counter: str

    @property
    def port(self) -> int:
        """The port a proxy in front of the store forwards to."""
        raise NotImplementedError

    def fresh_prefix(self) -> str:
        raise NotImplementedError

    async def account(self, name: str, prefix: str) -> tuple[str, str]:
        """A provider's ``(user, password)`` with its rights under ``prefix``."""
        raise NotImplementedError

    def open(self, user: str, password: str, prefix: str, via: int | None) -> Any:
        """A transport (not entered) for one account, through the proxy at ``via``."""
        raise NotImplementedError

    def forge(self, mallory: Any) -> Callable[[Message, str], Awaitable[None]]:
        """The relay suite's ``forge``: ``mallory`` stores a message as another signer."""
        raise NotImplementedError

    async def write_claim_key(self, transport: Any, workload_id: str, data: bytes) -> None:
        """Write the shared claim key of ``workload_id`` directly (no proof)."""
        raise NotImplementedError

    def intrusions(self, mallory: Any, victim: str, message: Message) -> list[Test]:
        """Raw writes into ``victim``'s area that the store must refuse."""
        raise NotImplementedError

    def wrong_password(self, error: str) -> bool:
        """Whether ``error`` says the password was refused."""
        raise NotImplementedError

    @contextlib.asynccontextmanager
    async def transports(
        self, names: tuple[str, ...] = ("alice", "bob", "mallory"), *, via: int | None = None
    ) -> AsyncIterator[list[Any]]:
        """Entered transports of fresh providers sharing a fresh prefix."""
        prefix = self.fresh_prefix()
        accounts = [await self.account(name, prefix) for name in names]
        async with contextlib.AsyncExitStack() as stack:
            yield [
                await stack.enter_async_context(self.open(user, password, prefix, via))
                for user, password in accounts
            ]


async def raw(request: Awaitable[_T]) -> _T:
    """Await a request sent around the transport's checks; a refusal raises
    ``TransportError`` (what the checks expect)."""
    try:
        return await request
    except Refused as exc:
        raise TransportError(str(exc)) from exc


def claim(workload_id: str, epoch: int, claimant: str, index: int) -> PromotionClaim:
    """A claim of ``workload_id``'s ``epoch`` by the standby ``claimant`` at ``index``."""
    return PromotionClaim(
        workload_id=workload_id,
        epoch=epoch,
        fencing_token=fencing_token(epoch, index),
        claimant=claimant,
        standby_index=index,
        claimed_at=time.time(),
    )


def assert_missing_extra_is_explained(dependency: str, module: str) -> None:
    """Importing ``standby.adapters.<module>`` without ``dependency`` says what to install."""
    code = (
        f"import sys; sys.modules[{dependency!r}] = None\n"
        "try:\n"
        f"    import standby.adapters.{module}\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    assert f"pip install 'standby[{module}]'" in out


# --------------------------------------------------------------------------- conformance


def relay_suite_test(loop: str) -> Test:
    """The relay conformance suite (all but ``relay_down``) on ``loop``."""

    @pytest.mark.parametrize("anyio_backend", [loop])
    async def test(store: KvStore) -> None:
        @contextlib.asynccontextmanager
        async def harness() -> AsyncIterator[RelayHarness]:
            async with store.transports() as (alice, bob, mallory):
                yield RelayHarness(
                    transports=[alice, bob, mallory],
                    relays=[store.relay],
                    forge=store.forge(mallory),
                    aliases=lambda identity: [identity.upper(), f" {store.scheme}:{identity} "],
                    malformed_identities=list(store.malformed_identities),
                    open_requests=lambda: sum(t.open_requests() for t in (alice, bob, mallory)),
                    timeout=2.0,
                    delivery_timeout=5.0,
                    max_blocking=REAL_MAX_BLOCKING,
                )

        report = await check_relay_transport(harness, only=set(RELAY_CHECKS) - {"relay_down"})
        assert report.passed == tuple(name for name in RELAY_CHECKS if name != "relay_down")

    return test


def relay_down_test(loop: str) -> Test:
    """The relay suite's ``relay_down`` check on ``loop``, through a proxy that cuts
    every connection."""

    @pytest.mark.parametrize("anyio_backend", [loop])
    async def test(store: KvStore) -> None:
        async with tcp_proxy(store.port) as proxy:

            @contextlib.asynccontextmanager
            async def harness() -> AsyncIterator[RelayHarness]:
                async with store.transports(via=proxy.port) as (alice, bob, mallory):

                    async def down(_relay: str) -> None:
                        proxy.cut()

                    async def up(_relay: str) -> None:
                        proxy.restore()

                    yield RelayHarness(
                        transports=[alice, bob, mallory],
                        relays=[store.relay],
                        forge=store.forge(mallory),
                        relay_down=down,
                        relay_up=up,
                        timeout=0.5,
                        delivery_timeout=5.0,
                        max_blocking=REAL_MAX_BLOCKING,
                    )

            report = await check_relay_transport(harness, only={"relay_down"})
        assert report.passed == ("relay_down",)

    return test


def claims_suite_test(loop: str) -> Test:
    """The claims conformance suite on ``loop``: ``store_down`` through a proxy, the
    other checks without it (the proxy's own tasks would count in the cancellation
    check)."""

    @pytest.mark.parametrize("anyio_backend", [loop])
    @pytest.mark.parametrize("through_proxy", [False, True], ids=["direct", "proxy"])
    async def test(store: KvStore, through_proxy: bool) -> None:
        async with tcp_proxy(store.port) as proxy:

            @contextlib.asynccontextmanager
            async def harness() -> AsyncIterator[ClaimsHarness]:
                via = proxy.port if through_proxy else None
                async with store.transports(("alice", "bob", "carol"), via=via) as opened:
                    carol = opened[2]

                    async def forge_claim(forged: PromotionClaim) -> None:
                        # Carol writes the shared key in another's name (she may
                        # write claim keys, not the claimant's proof).
                        data = carol.codec.encode(forged)
                        await store.write_claim_key(carol, forged.workload_id, data)

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

    return test


# --------------------------------------------------------------------------- who wrote it


async def test_one_provider_cannot_write_as_another(store: KvStore) -> None:
    async with store.transports() as (alice, bob, mallory):
        heartbeat = Heartbeat(provider=alice.identity, timestamp=time.time())
        # Mallory's own write of a body naming alice is hers.
        assert (await mallory.publish(heartbeat, timeout=2.0)).acked == {store.relay}
        # Writing into alice's area is refused by the store's access rules.
        for intrude in store.intrusions(mallory, alice.identity, heartbeat):
            with pytest.raises(TransportError, match=store.refusal):
                await intrude()
        seen = await bob.query(Query(kinds={"heartbeat"}), timeout=2.0)
        assert [(e.signer, e.message) for e in seen.envelopes] == [(mallory.identity, heartbeat)]
        # A wrong password never gets in.
        async with store.open(alice.identity, "wrong", alice.prefix, None) as impostor:
            result = await impostor.publish(heartbeat, timeout=1.0)
        assert result.acked == frozenset()
        assert store.wrong_password(result.errors[store.relay])


async def test_a_claim_key_overwritten_by_another_provider_is_not_believed(
    store: KvStore,
) -> None:
    async with store.transports(("alice", "bob", "carol")) as (alice, bob, carol):
        workload = f"w-{uuid.uuid4().hex[:6]}"
        forged = claim(workload, 7, alice.identity, 0)
        await store.write_claim_key(carol, workload, carol.codec.encode(forged))
        assert await bob.holder(workload, timeout=2.0) is None
        assert (
            await bob.compare_and_set_claim(claim(workload, 7, bob.identity, 1), timeout=2.0)
        ).won
        held = await alice.holder(workload, timeout=2.0)
        assert held is not None
        assert held.claimant == bob.identity
        assert bob.counters["forged_claims"] >= 1


# --------------------------------------------------------------------------- behaviour


async def test_transport_shape_and_identities(store: KvStore) -> None:
    async with store.transports(("alice", "bob", "carol")) as (alice, _bob, _carol):
        assert isinstance(alice, RelayTransport)
        assert isinstance(alice, AtomicClaims)
        assert alice.relay_count == 1
        assert alice.relays == (store.relay,)
        spelled = f"{store.scheme.upper()}:{alice.identity.upper()} "
        assert alice.canonical(spelled) == alice.identity
        module = sys.modules[type(alice).__module__]
        assert module.canonical_identity(alice.identity) == alice.identity
        for bad in store.bad_identities:
            with pytest.raises(IdentityError):
                alice.canonical(bad)


async def test_a_query_naming_several_authors_reads_each_of_them(store: KvStore) -> None:
    async with store.transports(("alice", "bob", "carol")) as (alice, bob, carol):
        now = time.time()
        for sender in (alice, bob, carol):
            beat = Heartbeat(provider=sender.identity, timestamp=now)
            assert (await sender.publish(beat, timeout=2.0)).acked == {store.relay}
        seen = await carol.query(
            Query(kinds={"heartbeat"}, authors={alice.identity, bob.identity}), timeout=2.0
        )
        assert sorted(e.signer for e in seen.envelopes) == sorted([alice.identity, bob.identity])
        everyone = await alice.query(Query(kinds={"heartbeat"}), timeout=2.0)
        assert len(everyone.envelopes) == 3


async def test_a_lost_answer_is_read_again_not_assumed(store: KvStore) -> None:
    async with (
        tcp_proxy(store.port) as proxy,
        store.transports(("alice", "bob", "carol"), via=proxy.port) as opened,
    ):
        alice, bob, _carol = opened
        for transport in opened:  # connected and logged in: nothing else in flight
            assert await transport.wait_connected(timeout=5.0) == {store.relay}
        beat = Heartbeat(provider=alice.identity, timestamp=time.time())
        assert (await alice.publish(beat, timeout=2.0)).acked == {store.relay}
        later = Heartbeat(provider=alice.identity, timestamp=time.time() + 1)
        proxy.lose_next_answer()
        assert (await alice.publish(later, timeout=3.0)).acked == {store.relay}
        assert proxy.lost_answers == 1
        assert alice.counters["unknown_outcomes"] == 1
        seen = await bob.query(Query(authors={alice.identity}), timeout=2.0)
        assert [e.message for e in seen.envelopes] == [later]
        # A claim whose answer was lost: the re-read finds it held by
        # alice, so alice wins (again) and bob loses.
        first = claim(f"w-{uuid.uuid4().hex[:6]}", 1, alice.identity, 0)
        proxy.lose_next_answer()
        assert (await alice.compare_and_set_claim(first, timeout=3.0)).won
        assert proxy.lost_answers == 2
        if store.counts_lost_claim_answer:
            assert alice.counters["unknown_outcomes"] == 2
        rival = attrs.evolve(first, claimant=bob.identity, standby_index=1)
        outcome = await bob.compare_and_set_claim(rival, timeout=2.0)
        assert not outcome.won
        assert outcome.holder is not None
        assert outcome.holder.claimant == alice.identity


async def test_wait_connected_reports_the_store_once_it_is_ready(store: KvStore) -> None:
    """Entering starts the login; ``wait_connected`` says whether the store is ready."""
    async with tcp_proxy(store.port) as proxy:
        # Entering alone connects and logs in: no request of the caller needed.
        async with store.transports(("alice",), via=proxy.port) as (alice,):
            assert isinstance(alice, WaitsConnected)
            with anyio.fail_after(5):
                while alice.counters.get(store.request_counter, 0) == 0:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            assert await alice.wait_connected(timeout=5.0) == {store.relay}
        proxy.cut()
        async with store.transports(("bob",), via=proxy.port) as (bob,):
            assert await bob.wait_connected(timeout=0.5) == frozenset()
            proxy.restore()
            assert await bob.wait_connected(timeout=5.0) == {store.relay}
