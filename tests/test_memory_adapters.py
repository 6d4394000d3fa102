"""The in-memory relays, runtime and store behave as their protocols promise.

All tests run on trio's virtual clock (see ``conftest.py``).
"""

from __future__ import annotations

import math

import anyio
import attrs
import pytest

from standby import (
    Envelope,
    Heartbeat,
    LeaseRevocation,
    PromotionAnnouncement,
    PromotionClaim,
    StandbySlot,
    StoreError,
)
from standby.adapters.memory import (
    MemoryRelay,
    MemoryRelayNetwork,
    MemoryRuntime,
    MemorySlotStore,
    RuntimeRecord,
    canonical_identity,
)
from standby.core import DropReason
from standby.core._errors import IdentityError, SpawnError, TransportError
from standby.protocols import (
    MESSAGE_KINDS,
    AtomicClaims,
    ContainerRuntime,
    Query,
    RelayTransport,
    ReportsDrops,
    SlotStore,
    TransportDrop,
    newest_per_key,
    unexpected_author,
)

pytestmark = pytest.mark.anyio

EPOCH = 1_700_000_000.0


def wall() -> float:
    return EPOCH + anyio.current_time()


def heartbeat(provider: str, at: float) -> Heartbeat:
    return Heartbeat(provider=provider, timestamp=at)


def claim(who: str, at: float, *, epoch: int = 1, withdrawn: bool = False) -> PromotionClaim:
    return PromotionClaim(
        workload_id="w1",
        epoch=epoch,
        fencing_token=epoch << 20,
        claimant=who,
        standby_index=0,
        claimed_at=at,
        withdrawn=withdrawn,
    )


# --------------------------------------------------------------------------- identities


def test_canonical_identity_accepts_equivalent_forms() -> None:
    assert canonical_identity(" MEM:Alice ") == "alice"
    assert canonical_identity("alice") == "alice"
    assert canonical_identity(canonical_identity("Bob-1")) == "bob-1"


@pytest.mark.parametrize("bad", ["", "   ", "mem:", "al ice", "-alice", "x" * 65, "ålice"])
def test_canonical_identity_rejects_malformed(bad: str) -> None:
    with pytest.raises(IdentityError, match="malformed identity"):
        canonical_identity(bad)


def test_protocol_conformance() -> None:
    network = MemoryRelayNetwork()
    atomic = MemoryRelayNetwork(atomic_claims=True)
    assert isinstance(network.transport("a"), RelayTransport)
    assert not isinstance(network.transport("a"), AtomicClaims)
    assert isinstance(atomic.transport("a"), AtomicClaims)
    assert isinstance(MemoryRuntime(), ContainerRuntime)
    assert isinstance(MemorySlotStore(), SlotStore)
    assert network.transport(" MEM:Alice ").identity == "alice"


# --------------------------------------------------------------------------- publish / query


async def test_publish_is_acknowledged_and_queryable() -> None:
    network = MemoryRelayNetwork(relays=3, wall_clock=wall)
    alice = network.transport("alice")
    result = await alice.publish(heartbeat("alice", wall()), timeout=1)
    assert result.acked == frozenset(network.relays)
    assert dict(result.errors) == {}
    found = await network.transport("bob").query(Query(kinds=["heartbeat"]), timeout=1)
    assert found.answered == frozenset(network.relays)
    assert [(e.signer, e.message.provider) for e in found.envelopes] == [("alice", "alice")]  # type: ignore[union-attr]


async def test_signer_is_the_publisher_whatever_the_body_says() -> None:
    network = MemoryRelayNetwork(wall_clock=wall)
    forged = LeaseRevocation(workload_id="w1", primary="alice", revoked_at=wall())
    await network.transport("mallory").publish(forged, timeout=1)
    found = await network.transport("bob").query(Query(kinds=["revocation"]), timeout=1)
    assert {e.signer for e in found.envelopes} == {"mallory"}
    by_alice = await network.transport("bob").query(
        Query(kinds=["revocation"], authors=["alice"]), timeout=1
    )
    assert by_alice.envelopes == ()


async def test_relay_down_and_up() -> None:
    network = MemoryRelayNetwork(relays=3)
    alice = network.transport("alice")
    network.relay_down("relay-1")
    result = await alice.publish(heartbeat("alice", 10), timeout=1)
    assert result.acked == {"relay-0", "relay-2"}
    assert result.errors["relay-1"] == "down"
    answer = await alice.query(Query(), timeout=1)
    assert answer.answered == {"relay-0", "relay-2"}
    network.relay_up("relay-1")
    answer = await alice.query(Query(kinds=["heartbeat"]), timeout=1)
    assert answer.answered == frozenset(network.relays)
    assert network.stored("relay-1") == []  # it missed the message while down


async def test_partition_and_heal_one_provider() -> None:
    network = MemoryRelayNetwork(relays=3)
    alice, bob = network.transport("alice"), network.transport("bob")
    network.partition("alice", ["relay-0", "relay-1"])
    assert (await alice.publish(heartbeat("alice", 1), timeout=1)).acked == {"relay-2"}
    assert (await bob.publish(heartbeat("bob", 1), timeout=1)).acked == frozenset(network.relays)
    assert (await alice.query(Query(), timeout=1)).answered == {"relay-2"}
    network.heal("alice", ["relay-0"])
    assert (await alice.publish(heartbeat("alice", 2), timeout=1)).acked == {"relay-0", "relay-2"}
    network.heal("alice")
    assert (await alice.publish(heartbeat("alice", 3), timeout=1)).acked == frozenset(
        network.relays
    )


async def test_slow_relay_times_out_and_the_others_still_count() -> None:
    network = MemoryRelayNetwork(relays=3)
    network.set_faults(relay="relay-2", latency=5.0)
    alice = network.transport("alice")
    start = anyio.current_time()
    result = await alice.publish(heartbeat("alice", 1), timeout=2.0)
    assert anyio.current_time() - start == pytest.approx(2.0)
    assert result.acked == {"relay-0", "relay-1"}
    assert result.errors["relay-2"] == "timed out"
    answer = await alice.query(Query(), timeout=2.0)
    assert answer.answered == {"relay-0", "relay-1"}
    assert answer.errors["relay-2"] == "timed out"


async def test_latency_is_virtual_and_round_trip() -> None:
    network = MemoryRelayNetwork(relays=2)
    network.set_faults(latency=0.25)
    start = anyio.current_time()
    result = await network.transport("a").publish(heartbeat("a", 1), timeout=5)
    assert result.acked == {"relay-0", "relay-1"}
    assert anyio.current_time() - start == pytest.approx(0.5)


async def test_total_loss_acknowledges_nothing() -> None:
    network = MemoryRelayNetwork(relays=3, seed=1)
    network.set_faults(provider="alice", drop=1.0)
    result = await network.transport("alice").publish(heartbeat("alice", 1), timeout=1)
    assert result.acked == frozenset()
    assert set(result.errors.values()) == {"lost in transit"}


# --------------------------------------------------------------------------- addressable messages


async def test_query_returns_only_the_newest_version_per_key() -> None:
    network = MemoryRelayNetwork(relays=2)
    bob = network.transport("bob")
    await bob.publish(claim("bob", 100.0), timeout=1)
    await bob.publish(claim("bob", 100.0, withdrawn=True), timeout=1)
    await bob.publish(heartbeat("bob", 5.0), timeout=1)
    await bob.publish(heartbeat("bob", 7.0), timeout=1)
    answer = await network.transport("carol").query(Query(), timeout=1)
    messages = [e.message for e in answer.envelopes]
    # the withdrawal ties on timestamp and wins; only the newest heartbeat is left
    assert messages == [heartbeat("bob", 7.0), claim("bob", 100.0, withdrawn=True)]


async def test_stale_version_arriving_late_does_not_win() -> None:
    network = MemoryRelayNetwork(relays=3)
    bob = network.transport("bob")
    await bob.publish(heartbeat("bob", 50.0), timeout=1)
    # relay-0 receives an older version after the newer one
    network.replay(heartbeat("bob", 10.0), signer="bob", relays=["relay-0"])
    assert [m for _s, m in network.stored("relay-0")] == [
        heartbeat("bob", 50.0),
        heartbeat("bob", 10.0),
    ]
    answer = await bob.query(Query(kinds=["heartbeat"]), timeout=1)
    assert [e.message for e in answer.envelopes] == [heartbeat("bob", 50.0)]


async def test_relay_replacing_on_arrival_hides_the_newer_version() -> None:
    network = MemoryRelayNetwork(relays=1)
    network.relay("relay-0").replace_on_arrival = True
    bob = network.transport("bob")
    await bob.publish(heartbeat("bob", 50.0), timeout=1)
    network.replay(heartbeat("bob", 10.0), signer="bob")
    answer = await bob.query(Query(kinds=["heartbeat"]), timeout=1)
    assert [e.message for e in answer.envelopes] == [heartbeat("bob", 10.0)]


def test_newest_per_key_keeps_distinct_keys() -> None:
    a1 = Envelope(claim("a", 1.0), "a", "r0", 0.0)
    a2 = Envelope(claim("a", 2.0), "a", "r1", 0.0)
    b1 = Envelope(claim("b", 1.5), "b", "r0", 0.0)
    other = Envelope(attrs.evolve(claim("a", 3.0), workload_id="w2"), "a", "r0", 0.0)
    assert newest_per_key([a2, b1, a1, other]) == [b1, a2, other]


# --------------------------------------------------------------------------- subscriptions


async def test_subscription_delivers_after_link_latency() -> None:
    network = MemoryRelayNetwork(relays=1, wall_clock=wall)
    network.set_faults(provider="bob", latency=3.0)
    sub = network.transport("bob").subscribe(Query(kinds=["heartbeat"]))
    start = anyio.current_time()
    await network.transport("alice").publish(heartbeat("alice", wall()), timeout=1)
    envelope = await sub.__anext__()
    assert anyio.current_time() - start == pytest.approx(3.0)
    assert envelope.signer == "alice"
    assert envelope.relay == "relay-0"
    assert envelope.received_at == pytest.approx(wall())
    await sub.aclose()
    with pytest.raises(StopAsyncIteration):
        await sub.__anext__()


async def test_subscription_filters_by_query() -> None:
    network = MemoryRelayNetwork(relays=1)
    sub = network.transport("bob").subscribe(
        Query(kinds=["claim"], authors=["carol"], workload_ids=["w1"])
    )
    await network.transport("dave").publish(claim("dave", 1.0), timeout=1)
    await network.transport("carol").publish(
        attrs.evolve(claim("carol", 1.0), workload_id="w9"), timeout=1
    )
    await network.transport("carol").publish(claim("carol", 2.0), timeout=1)
    envelope = await sub.__anext__()
    assert (envelope.signer, envelope.message) == ("carol", claim("carol", 2.0))
    await sub.aclose()


async def test_messages_from_unexpected_authors_are_dropped_and_reported() -> None:
    network = MemoryRelayNetwork(relays=3, wall_clock=wall)
    bob = network.transport("bob")
    assert isinstance(bob, ReportsDrops)
    hooked: list[TransportDrop] = []
    bob.set_drop_hook(hooked.append)
    network.partition("bob", ["relay-2"])
    sub = bob.subscribe(
        Query(kinds=MESSAGE_KINDS, authors=["alice", "carol"], workload_ids=["w1"], since=0.0)
    )
    # Addressed to bob (a revocation reaches the standbys it names).
    forged = LeaseRevocation(workload_id="w1", primary="alice", standbys=("bob",), revoked_at=1.0)
    await network.transport("mallory").publish(forged, timeout=1)
    # not reported: a stranger's heartbeat, a stranger talking about another workload
    await network.transport("mallory").publish(heartbeat("alice", 2.0), timeout=1)
    await network.transport("mallory").publish(attrs.evolve(forged, workload_id="w9"), timeout=1)
    await network.transport("carol").publish(claim("carol", 3.0), timeout=1)
    envelope = await sub.__anext__()
    assert envelope.signer == "carol"  # the expected author's message still arrives
    assert hooked == list(bob.drops)
    assert sorted((d.relay, d.reason, d.signer, d.workload_id) for d in hooked) == [
        (relay, DropReason.UNEXPECTED_AUTHOR, "mallory", "w1") for relay in ("relay-0", "relay-1")
    ]
    assert "revocation signed by 'mallory'" in hooked[0].detail
    # the backlog of a new subscription reports them too; without a hook only the record
    bob.set_drop_hook(None)
    late = bob.subscribe(Query(authors=["alice", "carol"], workload_ids=["w1"], since=0.0))
    assert len(bob.drops) == 4
    assert len(hooked) == 2
    await late.aclose()
    await sub.aclose()
    # a query keeps the author filter at the relay: nothing to drop
    result = await bob.query(Query(authors=["alice"], workload_ids=["w1"]), timeout=1)
    assert result.envelopes == ()
    assert len(bob.drops) == 4


def test_unexpected_author_is_a_stranger_on_a_watched_workload() -> None:
    watched = Query(authors=["alice"], workload_ids=["w1"])
    forged = LeaseRevocation(workload_id="w1", primary="alice", revoked_at=1.0)
    assert unexpected_author(watched, "mallory", forged)
    assert not unexpected_author(watched, "alice", forged)
    assert not unexpected_author(watched, "mallory", attrs.evolve(forged, workload_id="w2"))
    assert not unexpected_author(watched, "mallory", heartbeat("alice", 1.0))
    # Live revocations are asked for from anyone (those addressed to the
    # subscriber): a stranger's is unexpected even without a workload filter;
    # a stranger's claim is, only for a watched workload.
    assert unexpected_author(Query(authors=["alice"]), "mallory", forged)
    stranger_claim = claim("mallory", 1.0)
    assert not unexpected_author(Query(authors=["alice"]), "mallory", stranger_claim)
    assert not unexpected_author(Query(workload_ids=["w1"]), "mallory", forged)
    assert not unexpected_author(attrs.evolve(watched, since=5.0), "mallory", forged)


async def test_subscription_duplicates_and_drops_by_seeded_chance() -> None:
    network = MemoryRelayNetwork(relays=1)
    network.set_faults(relay="relay-0", duplicate=1.0)
    sub = network.transport("bob").subscribe(Query())
    await network.transport("alice").publish(heartbeat("alice", 1.0), timeout=1)
    first, second = await sub.__anext__(), await sub.__anext__()
    assert (first.message, first.signer) == (second.message, second.signer)
    network.set_faults(relay="relay-0", drop=1.0)
    await network.transport("alice").publish(heartbeat("alice", 2.0), timeout=1)
    with anyio.move_on_after(60) as scope:
        await sub.__anext__()
    assert scope.cancelled_caught
    await sub.aclose()


async def test_jitter_reorders_deterministically_for_a_seed() -> None:
    async def arrival_order(seed: int) -> list[float]:
        network = MemoryRelayNetwork(relays=1, seed=seed)
        network.set_faults(jitter=10.0)
        sub = network.transport("bob").subscribe(Query())
        alice = network.transport("alice")
        for stamp in range(8):
            network.replay(heartbeat("alice", float(stamp)), signer="alice")
        order = [(await sub.__anext__()).message for _ in range(8)]
        await sub.aclose()
        del alice
        return [m.timestamp for m in order]  # type: ignore[union-attr]

    first = await arrival_order(3)
    assert first == await arrival_order(3)
    assert sorted(first) == [float(i) for i in range(8)]
    assert first != sorted(first)


async def test_subscription_with_since_replays_stored_messages() -> None:
    network = MemoryRelayNetwork(relays=2)
    await network.transport("alice").publish(heartbeat("alice", 5.0), timeout=1)
    await network.transport("alice").publish(heartbeat("alice", 9.0), timeout=1)
    sub = network.transport("bob").subscribe(Query(since=8.0))
    got = [await sub.__anext__(), await sub.__anext__()]
    assert {e.relay for e in got} == {"relay-0", "relay-1"}
    assert {e.message for e in got} == {heartbeat("alice", 9.0)}
    await sub.aclose()


async def test_partitioned_subscriber_hears_nothing_from_cut_relays() -> None:
    network = MemoryRelayNetwork(relays=2)
    sub = network.transport("bob").subscribe(Query())
    network.partition("bob", ["relay-0"])
    await network.transport("alice").publish(heartbeat("alice", 1.0), timeout=1)
    envelope = await sub.__anext__()
    assert envelope.relay == "relay-1"
    with anyio.move_on_after(10) as scope:
        await sub.__anext__()
    assert scope.cancelled_caught
    await sub.aclose()


# --------------------------------------------------------------------------- atomic claims


async def test_compare_and_set_claims() -> None:
    network = MemoryRelayNetwork(atomic_claims=True)
    bob, carol = network.transport("bob"), network.transport("carol")
    assert isinstance(bob, AtomicClaims)
    assert isinstance(carol, AtomicClaims)
    won = await bob.compare_and_set_claim(claim("bob", 1.0), timeout=1)
    assert won.won
    lost = await carol.compare_and_set_claim(claim("carol", 1.0), timeout=1)
    assert not lost.won
    assert lost.holder is not None
    assert lost.holder.claimant == "bob"
    again = await bob.compare_and_set_claim(claim("bob", 2.0), timeout=1)
    assert again.won  # idempotent for the holder
    await carol.release_claim(claim("carol", 1.0), timeout=1)  # not the holder: no effect
    assert not (await carol.compare_and_set_claim(claim("carol", 3.0), timeout=1)).won
    await bob.release_claim(claim("bob", 1.0), timeout=1)
    assert (await carol.compare_and_set_claim(claim("carol", 4.0), timeout=1)).won
    later = await bob.compare_and_set_claim(claim("bob", 5.0, epoch=2), timeout=1)
    assert later.won  # a later epoch supersedes


async def test_compare_and_set_fails_when_claim_store_unreachable() -> None:
    network = MemoryRelayNetwork(atomic_claims=True)
    bob = network.transport("bob")
    assert isinstance(bob, AtomicClaims)
    network.partition("bob", ["relay-0"])
    with pytest.raises(TransportError, match="unreachable"):
        await bob.compare_and_set_claim(claim("bob", 1.0), timeout=1)


# --------------------------------------------------------------------------- runtime


async def test_runtime_records_spawn_latency_and_stop() -> None:
    runtime = MemoryRuntime("alice", spawn_latency=2.0)
    handle = await runtime.spawn(
        {"image": "x"}, workload_id="w1", fencing_token=7, lease_end=math.inf
    )
    assert await runtime.status(handle) == "running"
    assert [(e.kind, e.at, e.fencing_token) for e in runtime.events] == [
        ("spawn", 0.0, 7),
        ("started", 2.0, 7),
    ]
    await runtime.stop(handle)
    await runtime.stop(handle)  # idempotent
    assert await runtime.status(handle) == "stopped"
    assert [e.kind for e in runtime.events].count("stopped") == 1
    runtime.remove(handle)
    assert await runtime.status(handle) == "absent"


async def test_runtime_injected_failures_and_exits() -> None:
    runtime = MemoryRuntime("alice")
    runtime.fail_spawns(1, workload_id="w2", error="no capacity")
    handle = await runtime.spawn(None, workload_id="w1", fencing_token=1, lease_end=math.inf)
    with pytest.raises(SpawnError, match="no capacity"):
        await runtime.spawn(None, workload_id="w2", fencing_token=1, lease_end=math.inf)
    await runtime.spawn(None, workload_id="w2", fencing_token=2, lease_end=math.inf)
    assert runtime.exit("w1", "oom") == 1
    assert await runtime.status(handle) == "stopped"
    assert runtime.crash() == 1
    assert runtime.running() == []


async def test_cancelled_spawn_leaves_nothing_running() -> None:
    runtime = MemoryRuntime("alice", spawn_latency=10.0)
    with anyio.move_on_after(1.0):
        await runtime.spawn(None, workload_id="w1", fencing_token=1, lease_end=math.inf)
    assert runtime.running() == []
    assert [e.kind for e in runtime.events] == ["spawn", "spawn-cancelled"]


async def test_shared_record_detects_overlap_across_hosts() -> None:
    record = RuntimeRecord()
    alice = MemoryRuntime("alice", record=record)
    bob = MemoryRuntime("bob", record=record)
    first = await alice.spawn(None, workload_id="w1", fencing_token=1, lease_end=math.inf)
    await anyio.sleep(5)
    await alice.stop(first)
    await bob.spawn(
        None, workload_id="w1", fencing_token=2, lease_end=math.inf
    )  # starts as the other stops
    assert record.max_concurrent("w1") == 1
    assert record.overlaps("w1") == []
    await anyio.sleep(5)
    await alice.spawn(None, workload_id="w1", fencing_token=3, lease_end=math.inf)
    assert record.max_concurrent("w1") == 2
    [(x, y)] = record.overlaps("w1")
    assert (x.host, y.host) == ("bob", "alice")
    assert [(r.host, r.start, r.end) for r in record.intervals("w1")] == [
        ("alice", 0.0, 5.0),
        ("bob", 5.0, None),
        ("alice", 10.0, None),
    ]


async def test_fm31_a_wall_clock_step_back_never_extends_a_lease_in_memory() -> None:
    """Failure mode 31: the lease end is held as a monotonic deadline from its receipt on."""
    step = [0.0]

    def host_clock() -> float:
        return wall() + step[0]

    runtime = MemoryRuntime("alice", wall_clock=host_clock, stop_grace=1.0)
    handle = await runtime.spawn(
        None, workload_id="w1", fencing_token=1, lease_end=host_clock() + 10
    )
    await anyio.sleep(4)
    await runtime.renew(handle, host_clock() + 10)  # now ends at t=14, stopped by t=15
    step[0] = -600.0  # the host's wall clock steps back ten minutes
    assert runtime.lease_end(handle) == EPOCH + 14  # a Unix time 610 s ahead of the clock now
    # The node, on the stepped clock, renews with an end before the one held: ignored.
    await runtime.renew(handle, host_clock() + 10)
    await anyio.sleep(30)
    assert await runtime.status(handle) == "stopped"
    assert [(e.kind, e.at) for e in runtime.events if e.kind != "spawn"] == [
        ("started", 0.0),
        ("renewed", 4.0),
        ("expired", 15.0),
    ]


async def test_runtime_rejects_foreign_handles() -> None:
    alice, bob = MemoryRuntime("alice"), MemoryRuntime("bob")
    handle = await alice.spawn(None, workload_id="w1", fencing_token=1, lease_end=math.inf)
    with pytest.raises(Exception, match="not a handle of this runtime"):
        await bob.stop(handle)


# --------------------------------------------------------------------------- store


async def test_memory_store_round_trip_and_injected_failures() -> None:
    slot = StandbySlot(
        workload_id="w1",
        primary="alice",
        standby_index=0,
        standby_count=1,
        spec={"image": "x"},
        expires_at=EPOCH + 100,
        owner="carol",
        created_at=EPOCH,
    )
    store = MemorySlotStore()
    assert await store.load() == []
    assert await store.save([slot]) == []
    assert await store.load() == [slot]
    store.fail_next_save = True
    with pytest.raises(StoreError):
        await store.save([])
    assert await store.load() == [slot]
    store.fail_next_load = True
    with pytest.raises(StoreError):
        await store.load()


def test_announcement_and_revocation_keys_are_per_workload() -> None:
    a = Envelope(
        PromotionAnnouncement(workload_id="w1", new_primary="b", promoted_at=1.0), "b", "r", 0.0
    )
    b = Envelope(
        PromotionAnnouncement(workload_id="w2", new_primary="b", promoted_at=0.5), "b", "r", 0.0
    )
    assert newest_per_key([a, b]) == [b, a]


def test_a_single_relay_name_string_is_refused() -> None:
    with pytest.raises(TypeError, match=r"pass \['relay-a'\]"):
        MemoryRelayNetwork("relay-a")


def test_a_relay_answers_a_query_of_several_kinds_in_arrival_order() -> None:
    relay = MemoryRelay("r")

    def claim(epoch: int, at: float) -> PromotionClaim:
        return PromotionClaim(
            workload_id="w1",
            epoch=epoch,
            fencing_token=epoch,
            claimant="b",
            standby_index=0,
            claimed_at=at,
        )

    stored = [
        ("a", Heartbeat(provider="a", timestamp=1.0)),
        ("b", claim(1, 2.0)),
        ("b", PromotionAnnouncement(workload_id="w1", new_primary="b", promoted_at=3.0)),
        ("a", Heartbeat(provider="a", timestamp=4.0)),
        ("b", claim(2, 5.0)),
    ]
    for at, (signer, message) in enumerate(stored):
        relay.store(signer, message, float(at))
    takeovers = Query(kinds=("claim", "announcement"))
    assert relay.matching(takeovers) == [stored[1], stored[2], stored[4]]
    assert relay.matching(Query(kinds=("heartbeat",))) == [stored[0], stored[3]]
    assert relay.forget(lambda _signer, message: isinstance(message, PromotionAnnouncement)) == 1
    assert relay.matching(takeovers) == [stored[1], stored[4]]
    relay.replace_on_arrival = True
    relay.store("b", claim(3, 1.5), 9.0)  # same key as both claims: replaces them
    assert relay.matching(takeovers) == [("b", claim(3, 1.5))]
    assert relay.stored() == [stored[0], stored[3], ("b", claim(3, 1.5))]
