"""The relay checks of the protocol itself: identities, publish, query, subscribe, ordering.

Each check takes a fresh :class:`~standby.testing.RelayHarness` and raises
an :class:`AssertionError` naming itself at the first broken rule. The
checks of how a transport survives trouble (a relay down, cancelled calls)
are in :mod:`._relay_trouble`.
"""

from __future__ import annotations

import math

import anyio
import attrs

from ...core._errors import IdentityError, TransportError
from ...core._models import (
    Heartbeat,
    LeaseRevocation,
    Message,
    PromotionAnnouncement,
    PromotionClaim,
    fencing_token,
)
from ...protocols._contracts import Query, addressable_key
from ._base import fail, unique
from ._relay_harness import (
    DEFAULT_MALFORMED_IDENTITIES,
    RelayHarness,
    collect,
    describe,
    make_announcement,
    make_claim,
    make_revocation,
    pick,
)

__all__ = [
    "check_forged",
    "check_identity",
    "check_newest",
    "check_publish",
    "check_query",
    "check_signer",
    "check_since",
    "check_subscribe",
]


async def check_identity(harness: RelayHarness) -> None:
    check = "identity"
    transports = list(harness.transports)
    pick(harness, check)
    for transport in transports:
        me = transport.identity
        canonical = transport.canonical(me)
        if canonical != me:
            raise fail(check, f"identity {me!r} is not canonical: canonical() gives {canonical!r}")
        if transport.canonical(canonical) != canonical:
            raise fail(check, f"canonical() is not idempotent on {canonical!r}")
        for alias in harness.aliases(me):
            try:
                got = transport.canonical(alias)
            except IdentityError as exc:
                raise fail(
                    check, f"canonical({alias!r}) refused an alias of {me!r}: {exc}"
                ) from exc
            if got != me:
                raise fail(
                    check, f"canonical({alias!r}) gave {got!r}, expected {me!r} (failure mode 2)"
                )
        for other in transports:
            if other is not transport and other.canonical(me) != me:
                raise fail(check, f"two transports disagree on the canonical form of {me!r}")
    for bad in (*DEFAULT_MALFORMED_IDENTITIES, *harness.malformed_identities):
        try:
            got = transports[0].canonical(bad)
        except IdentityError:
            continue
        except Exception as exc:
            raise fail(
                check,
                f"canonical({bad!r}) raised {type(exc).__name__}, expected standby.IdentityError",
            ) from exc
        raise fail(check, f"canonical({bad!r}) accepted a malformed identity as {got!r}")


async def check_publish(harness: RelayHarness) -> None:
    check = "publish"
    alice, _bob, _carol = pick(harness, check)
    relays = frozenset(harness.relays)
    heartbeat = Heartbeat(provider=alice.identity, timestamp=harness.wall_clock())
    result = await alice.publish(heartbeat, timeout=harness.timeout)
    if result.acked != relays:
        raise fail(
            check,
            f"every relay is up, so every relay must acknowledge: acked={sorted(result.acked)}, "
            f"relays={sorted(relays)}, errors={dict(result.errors)}",
        )
    again = await alice.publish(heartbeat, timeout=harness.timeout)
    if again.acked != relays:
        raise fail(
            check,
            f"publishing the same message twice must be harmless; the second time "
            f"acked={sorted(again.acked)}, errors={dict(again.errors)}",
        )
    try:
        await alice.publish("not a message", timeout=harness.timeout)  # type: ignore[arg-type]
    except Exception as exc:
        if not isinstance(exc, TransportError):
            raise fail(
                check,
                f"publishing a non-message raised {type(exc).__name__}, expected TransportError",
            ) from exc
    else:
        raise fail(check, "publishing a non-message must raise TransportError")


async def check_query(harness: RelayHarness) -> None:
    check = "query"
    alice, bob, carol = pick(harness, check)
    relays = frozenset(harness.relays)
    now = harness.wall_clock()
    workload = unique("query")
    heartbeat = Heartbeat(provider=alice.identity, timestamp=now, active_workloads=1)
    announcement = make_announcement(workload, alice, now)
    for message in (heartbeat, announcement):
        published = await alice.publish(message, timeout=harness.timeout)
        if published.acked != relays:
            raise fail(check, f"publish of {message!r} not acknowledged by all relays: {published}")
    result = await bob.query(Query(authors={alice.identity}), timeout=harness.timeout)
    if result.answered != relays:
        raise fail(
            check,
            f"every relay is up, so every relay must answer: answered={sorted(result.answered)}, "
            f"errors={dict(result.errors)}",
        )
    mine = [e for e in result.envelopes if e.signer == alice.identity]
    if len(mine) != len(result.envelopes):
        raise fail(
            check, f"authors={{alice}} returned others' messages: {describe(result.envelopes)}"
        )
    found = {type(e.message) for e in mine}
    if found != {Heartbeat, PromotionAnnouncement}:
        raise fail(
            check,
            f"expected alice's heartbeat and announcement, got {describe(result.envelopes)}",
        )
    for envelope in result.envelopes:
        if envelope.relay not in relays:
            raise fail(check, f"envelope from unknown relay {envelope.relay!r}")
        if envelope.message not in (heartbeat, announcement):
            raise fail(check, f"the message changed on the way: {envelope.message!r}")
    keys = [addressable_key(e.signer, e.message) for e in result.envelopes]
    if len(set(keys)) != len(keys):
        raise fail(
            check,
            f"the result must hold one envelope per addressable key (newest_per_key), got "
            f"{describe(result.envelopes)}",
        )
    by_workload = await carol.query(
        Query(kinds={"announcement"}, workload_ids={workload}), timeout=harness.timeout
    )
    if [e.message for e in by_workload.envelopes] != [announcement]:
        raise fail(check, f"query by workload_ids returned {describe(by_workload.envelopes)}")
    empty = await bob.query(
        Query(authors={carol.identity}, kinds={"claim"}, workload_ids={workload}),
        timeout=harness.timeout,
    )
    if empty.envelopes or empty.answered != relays:
        raise fail(
            check,
            "a query for something nobody published must come back empty and answered by every "
            f"relay (evidence of absence); got {describe(empty.envelopes)}, "
            f"answered={sorted(empty.answered)}",
        )


async def check_signer(harness: RelayHarness) -> None:
    check = "signer"
    alice, bob, mallory = pick(harness, check)
    now = harness.wall_clock()
    workload = unique("signer")
    # Bodies naming someone else: the signer is whoever signed, never the body.
    fake_heartbeat = Heartbeat(provider=alice.identity, timestamp=now)
    fake_revocation = make_revocation(workload, alice, bob, now, "conformance: wrong signer")
    for message in (fake_heartbeat, fake_revocation):
        await mallory.publish(message, timeout=harness.timeout)
    as_alice = await bob.query(
        Query(authors={alice.identity}, kinds={"heartbeat", "revocation"}, since=now - 1),
        timeout=harness.timeout,
    )
    if as_alice.envelopes:
        raise fail(
            check,
            "messages whose body names alice but that mallory signed came back as alice's: "
            f"{describe(as_alice.envelopes)}",
        )
    as_mallory = await bob.query(
        Query(authors={mallory.identity}, kinds={"heartbeat", "revocation"}),
        timeout=harness.timeout,
    )
    kinds = {type(e.message) for e in as_mallory.envelopes if e.signer == mallory.identity}
    if kinds != {Heartbeat, LeaseRevocation}:
        raise fail(
            check,
            "mallory's messages must be attributed to mallory; got "
            f"{describe(as_mallory.envelopes)}",
        )


async def check_forged(harness: RelayHarness) -> None:
    check = "forged"
    alice, bob, _carol = pick(harness, check)
    now = harness.wall_clock()
    forged_workload = unique("forged")
    marker_workload = unique("marker")
    subscription = bob.subscribe(
        Query(
            kinds={"revocation"},
            authors={alice.identity},
            workload_ids={forged_workload, marker_workload},
        )
    )
    try:
        forged = make_revocation(forged_workload, alice, bob, now, "conformance: forged")
        await harness.forge(forged, alice.identity)
        marker = make_revocation(marker_workload, alice, bob, now, "conformance: genuine")
        await alice.publish(marker, timeout=harness.timeout)
        received = await collect(
            subscription,
            until=lambda got: {e.relay for e in got if e.message == marker} >= set(harness.relays),
            within=harness.delivery_timeout,
            check=check,
        )
    finally:
        await subscription.aclose()
    leaked = [
        e
        for e in received
        if isinstance(e.message, LeaseRevocation) and e.message.workload_id == forged_workload
    ]
    if leaked:
        raise fail(
            check, f"a subscription delivered the forged message as alice's: {describe(leaked)}"
        )
    if not any(e.message == marker for e in received):
        raise fail(check, "alice's genuine revocation was never delivered to bob")
    result = await bob.query(
        Query(kinds={"revocation"}, workload_ids={forged_workload}), timeout=harness.timeout
    )
    leaked = [e for e in result.envelopes if e.signer == alice.identity]
    if leaked:
        raise fail(check, f"a query returned the forged message as alice's: {describe(leaked)}")


async def check_subscribe(harness: RelayHarness) -> None:
    check = "subscribe"
    alice, bob, _carol = pick(harness, check)
    now = harness.wall_clock()
    workload = unique("subscribe")
    subscription = bob.subscribe(Query(authors={alice.identity}, workload_ids={workload}))
    messages: list[Message] = [
        Heartbeat(provider=alice.identity, timestamp=now, active_workloads=2),
        make_revocation(workload, alice, bob, now, "conformance"),
        make_claim(workload, alice, now),
        make_announcement(workload, alice, now),
    ]
    try:
        # A waiting __anext__ that is cancelled must not break the subscription.
        with anyio.move_on_after(0.01):
            await subscription.__anext__()
        for message in messages:
            await alice.publish(message, timeout=harness.timeout)
        received = await collect(
            subscription,
            until=lambda got: all(any(e.message == m for e in got) for m in messages),
            within=harness.delivery_timeout,
        )
        missing = [m for m in messages if not any(e.message == m for e in received)]
        if missing:
            raise fail(
                check,
                f"not delivered within {harness.delivery_timeout}s: {missing!r}; got "
                f"{describe(received)}",
            )
        wrong = [e for e in received if e.signer != alice.identity or e.relay not in harness.relays]
        if wrong:
            raise fail(check, f"deliveries with a wrong signer or relay: {describe(wrong)}")
    finally:
        await subscription.aclose()
    await subscription.aclose()  # idempotent
    try:
        with anyio.fail_after(harness.delivery_timeout):
            await subscription.__anext__()
    except StopAsyncIteration:
        pass
    except TimeoutError:
        raise fail(
            check, "__anext__ on a closed subscription must raise StopAsyncIteration"
        ) from None
    else:
        raise fail(check, "__anext__ on a closed subscription must raise StopAsyncIteration")


async def check_newest(harness: RelayHarness) -> None:
    check = "newest"
    alice, bob, _carol = pick(harness, check)
    now = math.floor(harness.wall_clock()) + 0.25
    workload = unique("newest")
    # An older heartbeat published after a newer one must not win.
    newer = Heartbeat(provider=alice.identity, timestamp=now, active_workloads=3)
    older = Heartbeat(provider=alice.identity, timestamp=now - 5, active_workloads=4)
    # A withdrawal carries its claim's timestamp and must still win; a new
    # claim in the same second must then win over the withdrawal.
    claim = make_claim(workload, alice, now)
    withdrawal = attrs.evolve(claim, withdrawn=True)
    again = attrs.evolve(claim, epoch=2, fencing_token=fencing_token(2, 0), claimed_at=now + 0.5)
    query = Query(authors={alice.identity}, kinds={"heartbeat", "claim"}, workload_ids={workload})
    for message, expected_claim in (
        (newer, None),
        (older, None),
        (claim, claim),
        (withdrawal, withdrawal),
        (again, again),
    ):
        await alice.publish(message, timeout=harness.timeout)
        result = await bob.query(query, timeout=harness.timeout)
        heartbeats = [e.message for e in result.envelopes if isinstance(e.message, Heartbeat)]
        if heartbeats != [newer]:
            raise fail(
                check,
                f"after publishing {message!r}, the newest heartbeat must win; got {heartbeats!r}",
            )
        if expected_claim is not None:
            claims = [e.message for e in result.envelopes if isinstance(e.message, PromotionClaim)]
            if claims != [expected_claim]:
                raise fail(
                    check,
                    f"after publishing {message!r}, expected exactly {expected_claim!r}, got "
                    f"{claims!r}",
                )


async def check_since(harness: RelayHarness) -> None:
    check = "since"
    alice, bob, _carol = pick(harness, check)
    now = math.floor(harness.wall_clock())
    old_workload, new_workload = unique("since-old"), unique("since-new")
    old = make_announcement(old_workload, alice, now - 20)
    new = attrs.evolve(old, workload_id=new_workload, promoted_at=now)
    for message in (old, new):
        await alice.publish(message, timeout=harness.timeout)
    base = Query(
        kinds={"announcement"}, authors={alice.identity}, workload_ids={old_workload, new_workload}
    )
    recent = attrs.evolve(base, since=now - 10)
    result = await bob.query(recent, timeout=harness.timeout)
    got = [e.message for e in result.envelopes]
    if got != [new]:
        raise fail(
            check,
            f"a query with since={recent.since} must return only messages at least that new "
            f"(the one stamped {new.promoted_at}, not the one stamped {old.promoted_at}); got "
            f"{describe(result.envelopes)}",
        )
    both = await bob.query(attrs.evolve(base, since=now - 30), timeout=harness.timeout)
    if {e.message for e in both.envelopes} != {old, new}:
        raise fail(
            check,
            f"a query with since={now - 30} must return both messages; got "
            f"{describe(both.envelopes)}",
        )
    # A subscription with since first delivers what the relays stored since then.
    subscription = bob.subscribe(recent)
    try:
        received = await collect(
            subscription,
            until=lambda got: any(e.message == new for e in got),
            within=harness.delivery_timeout,
            check=check,
        )
    finally:
        await subscription.aclose()
    if not any(e.message == new for e in received):
        raise fail(
            check,
            f"a subscription with since={recent.since} must first deliver the stored messages at "
            f"least that new; within {harness.delivery_timeout}s it delivered "
            f"{describe(received)}",
        )
    if any(e.message == old for e in received):
        raise fail(
            check,
            f"a subscription with since={recent.since} delivered a message stamped "
            f"{old.promoted_at}",
        )
