"""Conformance suites for adapter authors: ``check_relay_transport`` (and the shared runner).

An adapter author points a suite at a *factory*: a zero-argument callable
returning an async context manager that yields a *harness* (the adapter
under test plus a few probes the checks cannot do without). Each check
enters a fresh harness, so state never leaks from one check to the next.
A check that fails raises :class:`AssertionError` naming the check and
what was expected; a check whose optional probe the harness lacks is
reported as skipped in the returned :class:`ConformanceReport`.

Both suites are plain async functions: run them from any anyio test (on
asyncio and on trio). See ``docs/conformance.md``. The runtime suite,
``check_container_runtime``, lives in :mod:`._conformance_runtime` and uses
the runner and report defined here.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeAlias

import anyio
import anyio.lowlevel
import attrs

from .._errors import IdentityError, TransportError
from .._models import (
    Envelope,
    Heartbeat,
    LeaseRevocation,
    Message,
    PromotionAnnouncement,
    PromotionClaim,
    fencing_token,
)
from .._protocols import (
    Query,
    RelayTransport,
    Subscription,
    addressable_key,
)

__all__ = [
    "DEFAULT_MALFORMED_IDENTITIES",
    "RELAY_CHECKS",
    "ConformanceReport",
    "RelayHarness",
    "RelayHarnessFactory",
    "check_relay_transport",
]

#: Strings that no transport may accept as an identity.
DEFAULT_MALFORMED_IDENTITIES: tuple[str, ...] = ("", "   ", "not an identity!", "\x00")


def _no_aliases(_identity: str) -> Sequence[str]:
    return ()


@attrs.frozen(kw_only=True)
class RelayHarness:
    """What :func:`check_relay_transport` needs from one harness.

    Required:

    ``transports``
        At least three running transports with distinct identities, all
        talking to the same relays (the checks use them as a publisher, a
        reader and a stranger).
    ``relays``
        The relay names as the transports report them (in ``acked``,
        ``answered``, ``errors`` and ``Envelope.relay``).
    ``forge(message, as_signer)``
        Offer ``message`` to the relays (at least one must store it) *as if*
        signed by ``as_signer`` but without that identity's key: a Nostr
        event with ``as_signer``'s pubkey and a wrong signature, a message
        injected by a stranger, ... The check then requires that no
        transport ever attributes it to ``as_signer``.

    Optional probes (a check that needs a missing one is skipped):

    ``aliases(identity)``
        Other spellings of ``identity`` that ``canonical()`` must map to it
        (``npub1...`` for a hex key, upper case, surrounding blanks...).
    ``malformed_identities``
        Strings ``canonical()`` must refuse with ``IdentityError`` (on top of
        :data:`DEFAULT_MALFORMED_IDENTITIES`).
    ``open_requests()``
        The number of operations the transports still hold (sockets,
        subscriptions on the relays, waiters); it must come back to its
        value before a cancelled publish or query. Without it the check
        counts the event loop's tasks only.
    ``relay_down(name)`` / ``relay_up(name)``
        Make one relay unreachable and bring it back (kept data intact).

    Settings: ``wall_clock`` stamps the messages the checks publish;
    ``timeout`` is passed to ``publish`` and ``query``; ``delivery_timeout``
    bounds how long a subscription delivery (or a reconnection) may take;
    ``cancel_latency`` is how soon a cancelled ``publish`` or ``query`` must
    return (the best of three tries counts).
    """

    transports: Sequence[RelayTransport]
    relays: Sequence[str]
    forge: Callable[[Message, str], Awaitable[None]]
    aliases: Callable[[str], Sequence[str]] = _no_aliases
    malformed_identities: Sequence[str] = ()
    open_requests: Callable[[], int] | None = None
    relay_down: Callable[[str], Awaitable[None]] | None = None
    relay_up: Callable[[str], Awaitable[None]] | None = None
    wall_clock: Callable[[], float] = time.time
    timeout: float = 2.0
    delivery_timeout: float = 5.0
    cancel_latency: float = 0.03


RelayHarnessFactory: TypeAlias = Callable[[], AbstractAsyncContextManager[RelayHarness]]
"""Zero-argument callable returning an async context manager that yields a :class:`RelayHarness`."""


@attrs.frozen
class ConformanceReport:
    """What a suite did: the checks that passed and the skipped ones, with why."""

    passed: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...] = ()


class _Skip(Exception):
    """A check cannot run with this harness (a probe is missing)."""


def _fail(check: str, text: str) -> AssertionError:
    return AssertionError(f"[{check}] {text}")


def _unique(what: str) -> str:
    return f"conformance-{what}-{uuid.uuid4().hex[:12]}"


async def _run(
    suite: str,
    checks: Sequence[tuple[str, Callable[[Any], Awaitable[None]]]],
    factory: Callable[[], AbstractAsyncContextManager[Any]],
    only: Collection[str] | None,
) -> ConformanceReport:
    names = [name for name, _check in checks]
    if only is not None:
        unknown = set(only) - set(names)
        if unknown:
            raise ValueError(f"unknown {suite} checks {sorted(unknown)}; known: {names}")
    passed: list[str] = []
    skipped: list[tuple[str, str]] = []
    for name, check in checks:
        if only is not None and name not in only:
            continue
        async with factory() as harness:
            try:
                await check(harness)
            except _Skip as why:
                skipped.append((name, str(why)))
                continue
        passed.append(name)
    return ConformanceReport(tuple(passed), tuple(skipped))


# =========================================================================== relay transports


def _pick(
    harness: RelayHarness, check: str
) -> tuple[RelayTransport, RelayTransport, RelayTransport]:
    transports = list(harness.transports)
    if len(transports) < 3:
        raise _fail(check, f"the harness must offer at least 3 transports, got {len(transports)}")
    identities = [t.identity for t in transports]
    if len(set(identities)) != len(identities):
        raise _fail(check, f"the harness's transports must have distinct identities: {identities}")
    if not harness.relays:
        raise _fail(check, "the harness names no relays")
    return transports[0], transports[1], transports[2]


def _describe(envelopes: Sequence[Envelope[Message]]) -> str:
    return (
        "["
        + ", ".join(f"{type(e.message).__name__} by {e.signer} via {e.relay}" for e in envelopes)
        + "]"
    )


async def _check_identity(harness: RelayHarness) -> None:
    check = "identity"
    transports = list(harness.transports)
    _pick(harness, check)
    for transport in transports:
        me = transport.identity
        canonical = transport.canonical(me)
        if canonical != me:
            raise _fail(check, f"identity {me!r} is not canonical: canonical() gives {canonical!r}")
        if transport.canonical(canonical) != canonical:
            raise _fail(check, f"canonical() is not idempotent on {canonical!r}")
        for alias in harness.aliases(me):
            try:
                got = transport.canonical(alias)
            except IdentityError as exc:
                raise _fail(
                    check, f"canonical({alias!r}) refused an alias of {me!r}: {exc}"
                ) from exc
            if got != me:
                raise _fail(
                    check, f"canonical({alias!r}) gave {got!r}, expected {me!r} (SAFETY.md #2)"
                )
        for other in transports:
            if other is not transport and other.canonical(me) != me:
                raise _fail(check, f"two transports disagree on the canonical form of {me!r}")
    for bad in (*DEFAULT_MALFORMED_IDENTITIES, *harness.malformed_identities):
        try:
            got = transports[0].canonical(bad)
        except IdentityError:
            continue
        except Exception as exc:
            raise _fail(
                check,
                f"canonical({bad!r}) raised {type(exc).__name__}, expected standby.IdentityError",
            ) from exc
        raise _fail(check, f"canonical({bad!r}) accepted a malformed identity as {got!r}")


async def _check_publish(harness: RelayHarness) -> None:
    check = "publish"
    alice, _bob, _carol = _pick(harness, check)
    relays = frozenset(harness.relays)
    heartbeat = Heartbeat(provider=alice.identity, timestamp=harness.wall_clock())
    result = await alice.publish(heartbeat, timeout=harness.timeout)
    if result.acked != relays:
        raise _fail(
            check,
            f"every relay is up, so every relay must acknowledge: acked={sorted(result.acked)}, "
            f"relays={sorted(relays)}, errors={dict(result.errors)}",
        )
    again = await alice.publish(heartbeat, timeout=harness.timeout)
    if again.acked != relays:
        raise _fail(
            check,
            f"publishing the same message twice must be harmless; the second time "
            f"acked={sorted(again.acked)}, errors={dict(again.errors)}",
        )
    try:
        await alice.publish("not a message", timeout=harness.timeout)  # type: ignore[arg-type]
    except Exception as exc:
        if not isinstance(exc, TransportError):
            raise _fail(
                check,
                f"publishing a non-message raised {type(exc).__name__}, expected TransportError",
            ) from exc
    else:
        raise _fail(check, "publishing a non-message must raise TransportError")


async def _check_query(harness: RelayHarness) -> None:
    check = "query"
    alice, bob, carol = _pick(harness, check)
    relays = frozenset(harness.relays)
    now = harness.wall_clock()
    workload = _unique("query")
    heartbeat = Heartbeat(provider=alice.identity, timestamp=now, active_workloads=1)
    announcement = PromotionAnnouncement(
        workload_id=workload,
        new_primary=alice.identity,
        promoted_at=now,
        epoch=1,
        fencing_token=fencing_token(1, 0),
    )
    for message in (heartbeat, announcement):
        published = await alice.publish(message, timeout=harness.timeout)
        if published.acked != relays:
            raise _fail(
                check, f"publish of {message!r} not acknowledged by all relays: {published}"
            )
    result = await bob.query(Query(authors={alice.identity}), timeout=harness.timeout)
    if result.answered != relays:
        raise _fail(
            check,
            f"every relay is up, so every relay must answer: answered={sorted(result.answered)}, "
            f"errors={dict(result.errors)}",
        )
    mine = [e for e in result.envelopes if e.signer == alice.identity]
    if len(mine) != len(result.envelopes):
        raise _fail(
            check, f"authors={{alice}} returned others' messages: {_describe(result.envelopes)}"
        )
    found = {type(e.message) for e in mine}
    if found != {Heartbeat, PromotionAnnouncement}:
        raise _fail(
            check,
            f"expected alice's heartbeat and announcement, got {_describe(result.envelopes)}",
        )
    for envelope in result.envelopes:
        if envelope.relay not in relays:
            raise _fail(check, f"envelope from unknown relay {envelope.relay!r}")
        if envelope.message not in (heartbeat, announcement):
            raise _fail(check, f"the message changed on the way: {envelope.message!r}")
    keys = [addressable_key(e.signer, e.message) for e in result.envelopes]
    if len(set(keys)) != len(keys):
        raise _fail(
            check,
            f"the result must hold one envelope per addressable key (newest_per_key), got "
            f"{_describe(result.envelopes)}",
        )
    by_workload = await carol.query(
        Query(kinds={"announcement"}, workload_ids={workload}), timeout=harness.timeout
    )
    if [e.message for e in by_workload.envelopes] != [announcement]:
        raise _fail(check, f"query by workload_ids returned {_describe(by_workload.envelopes)}")
    empty = await bob.query(
        Query(authors={carol.identity}, kinds={"claim"}, workload_ids={workload}),
        timeout=harness.timeout,
    )
    if empty.envelopes or empty.answered != relays:
        raise _fail(
            check,
            "a query for something nobody published must come back empty and answered by every "
            f"relay (evidence of absence); got {_describe(empty.envelopes)}, "
            f"answered={sorted(empty.answered)}",
        )


async def _check_signer(harness: RelayHarness) -> None:
    check = "signer"
    alice, bob, mallory = _pick(harness, check)
    now = harness.wall_clock()
    workload = _unique("signer")
    # Bodies naming someone else: the signer is whoever signed, never the body.
    fake_heartbeat = Heartbeat(provider=alice.identity, timestamp=now)
    fake_revocation = LeaseRevocation(
        workload_id=workload,
        primary=alice.identity,
        standbys=(bob.identity,),
        revoked_at=now,
        reason="conformance: wrong signer",
    )
    for message in (fake_heartbeat, fake_revocation):
        await mallory.publish(message, timeout=harness.timeout)
    as_alice = await bob.query(
        Query(authors={alice.identity}, kinds={"heartbeat", "revocation"}, since=now - 1),
        timeout=harness.timeout,
    )
    if as_alice.envelopes:
        raise _fail(
            check,
            "messages whose body names alice but that mallory signed came back as alice's: "
            f"{_describe(as_alice.envelopes)}",
        )
    as_mallory = await bob.query(
        Query(authors={mallory.identity}, kinds={"heartbeat", "revocation"}),
        timeout=harness.timeout,
    )
    kinds = {type(e.message) for e in as_mallory.envelopes if e.signer == mallory.identity}
    if kinds != {Heartbeat, LeaseRevocation}:
        raise _fail(
            check,
            "mallory's messages must be attributed to mallory; got "
            f"{_describe(as_mallory.envelopes)}",
        )


async def _check_forged(harness: RelayHarness) -> None:
    check = "forged"
    alice, bob, _carol = _pick(harness, check)
    now = harness.wall_clock()
    forged_workload = _unique("forged")
    marker_workload = _unique("marker")
    subscription = bob.subscribe(
        Query(
            kinds={"revocation"},
            authors={alice.identity},
            workload_ids={forged_workload, marker_workload},
        )
    )
    try:
        forged = LeaseRevocation(
            workload_id=forged_workload,
            primary=alice.identity,
            standbys=(bob.identity,),
            revoked_at=now,
            reason="conformance: forged",
        )
        await harness.forge(forged, alice.identity)
        marker = LeaseRevocation(
            workload_id=marker_workload,
            primary=alice.identity,
            standbys=(bob.identity,),
            revoked_at=now,
            reason="conformance: genuine",
        )
        await alice.publish(marker, timeout=harness.timeout)
        received = await _collect(
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
        raise _fail(
            check, f"a subscription delivered the forged message as alice's: {_describe(leaked)}"
        )
    if not any(e.message == marker for e in received):
        raise _fail(check, "alice's genuine revocation was never delivered to bob")
    result = await bob.query(
        Query(kinds={"revocation"}, workload_ids={forged_workload}), timeout=harness.timeout
    )
    leaked = [e for e in result.envelopes if e.signer == alice.identity]
    if leaked:
        raise _fail(check, f"a query returned the forged message as alice's: {_describe(leaked)}")


async def _collect(
    subscription: Subscription,
    *,
    until: Callable[[list[Envelope[Message]]], bool],
    within: float,
    check: str = "subscribe",
) -> list[Envelope[Message]]:
    """Read ``subscription`` until ``until(got)`` or ``within`` seconds passed.

    An open subscription must keep waiting: one that ends
    (``StopAsyncIteration``) or raises fails ``check``.
    """
    got: list[Envelope[Message]] = []
    with anyio.move_on_after(within):
        while not until(got):
            try:
                envelope = await subscription.__anext__()
            except StopAsyncIteration:
                raise _fail(
                    check,
                    "an open subscription ended (StopAsyncIteration) before it was closed; "
                    f"received so far: {_describe(got)}",
                ) from None
            except Exception as exc:
                raise _fail(
                    check,
                    f"reading an open subscription raised {type(exc).__name__}: {exc}",
                ) from exc
            got.append(envelope)
    return got


async def _check_subscribe(harness: RelayHarness) -> None:
    check = "subscribe"
    alice, bob, _carol = _pick(harness, check)
    now = harness.wall_clock()
    workload = _unique("subscribe")
    subscription = bob.subscribe(Query(authors={alice.identity}, workload_ids={workload}))
    messages: list[Message] = [
        Heartbeat(provider=alice.identity, timestamp=now, active_workloads=2),
        LeaseRevocation(
            workload_id=workload,
            primary=alice.identity,
            standbys=(bob.identity,),
            revoked_at=now,
            reason="conformance",
        ),
        PromotionClaim(
            workload_id=workload,
            epoch=1,
            fencing_token=fencing_token(1, 0),
            claimant=alice.identity,
            standby_index=0,
            claimed_at=now,
        ),
        PromotionAnnouncement(
            workload_id=workload,
            new_primary=alice.identity,
            promoted_at=now,
            epoch=1,
            fencing_token=fencing_token(1, 0),
        ),
    ]
    try:
        # A waiting __anext__ that is cancelled must not break the subscription.
        with anyio.move_on_after(0.01):
            await subscription.__anext__()
        for message in messages:
            await alice.publish(message, timeout=harness.timeout)
        received = await _collect(
            subscription,
            until=lambda got: all(any(e.message == m for e in got) for m in messages),
            within=harness.delivery_timeout,
        )
        missing = [m for m in messages if not any(e.message == m for e in received)]
        if missing:
            raise _fail(
                check,
                f"not delivered within {harness.delivery_timeout}s: {missing!r}; got "
                f"{_describe(received)}",
            )
        wrong = [e for e in received if e.signer != alice.identity or e.relay not in harness.relays]
        if wrong:
            raise _fail(check, f"deliveries with a wrong signer or relay: {_describe(wrong)}")
    finally:
        await subscription.aclose()
    await subscription.aclose()  # idempotent
    try:
        with anyio.fail_after(harness.delivery_timeout):
            await subscription.__anext__()
    except StopAsyncIteration:
        pass
    except TimeoutError:
        raise _fail(
            check, "__anext__ on a closed subscription must raise StopAsyncIteration"
        ) from None
    else:
        raise _fail(check, "__anext__ on a closed subscription must raise StopAsyncIteration")


async def _check_newest(harness: RelayHarness) -> None:
    check = "newest"
    alice, bob, _carol = _pick(harness, check)
    now = math.floor(harness.wall_clock()) + 0.25
    workload = _unique("newest")
    # An older heartbeat published after a newer one must not win.
    newer = Heartbeat(provider=alice.identity, timestamp=now, active_workloads=3)
    older = Heartbeat(provider=alice.identity, timestamp=now - 5, active_workloads=4)
    # A withdrawal carries its claim's timestamp and must still win; a new
    # claim in the same second must then win over the withdrawal.
    claim = PromotionClaim(
        workload_id=workload,
        epoch=1,
        fencing_token=fencing_token(1, 0),
        claimant=alice.identity,
        standby_index=0,
        claimed_at=now,
    )
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
            raise _fail(
                check,
                f"after publishing {message!r}, the newest heartbeat must win; got {heartbeats!r}",
            )
        if expected_claim is not None:
            claims = [e.message for e in result.envelopes if isinstance(e.message, PromotionClaim)]
            if claims != [expected_claim]:
                raise _fail(
                    check,
                    f"after publishing {message!r}, expected exactly {expected_claim!r}, got "
                    f"{claims!r}",
                )


async def _check_since(harness: RelayHarness) -> None:
    check = "since"
    alice, bob, _carol = _pick(harness, check)
    now = math.floor(harness.wall_clock())
    old_workload, new_workload = _unique("since-old"), _unique("since-new")
    old = PromotionAnnouncement(
        workload_id=old_workload,
        new_primary=alice.identity,
        promoted_at=now - 20,
        epoch=1,
        fencing_token=fencing_token(1, 0),
    )
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
        raise _fail(
            check,
            f"a query with since={recent.since} must return only messages at least that new "
            f"(the one stamped {new.promoted_at}, not the one stamped {old.promoted_at}); got "
            f"{_describe(result.envelopes)}",
        )
    both = await bob.query(attrs.evolve(base, since=now - 30), timeout=harness.timeout)
    if {e.message for e in both.envelopes} != {old, new}:
        raise _fail(
            check,
            f"a query with since={now - 30} must return both messages; got "
            f"{_describe(both.envelopes)}",
        )
    # A subscription with since first delivers what the relays stored since then.
    subscription = bob.subscribe(recent)
    try:
        received = await _collect(
            subscription,
            until=lambda got: any(e.message == new for e in got),
            within=harness.delivery_timeout,
            check=check,
        )
    finally:
        await subscription.aclose()
    if not any(e.message == new for e in received):
        raise _fail(
            check,
            f"a subscription with since={recent.since} must first deliver the stored messages at "
            f"least that new; within {harness.delivery_timeout}s it delivered "
            f"{_describe(received)}",
        )
    if any(e.message == old for e in received):
        raise _fail(
            check,
            f"a subscription with since={recent.since} delivered a message stamped "
            f"{old.promoted_at}",
        )


async def _check_relay_down(harness: RelayHarness) -> None:
    check = "relay_down"
    if harness.relay_down is None or harness.relay_up is None:
        raise _Skip("the harness offers no relay_down/relay_up")
    alice, bob, _carol = _pick(harness, check)
    relays = frozenset(harness.relays)
    victim = sorted(relays)[0]
    workload = _unique("down")
    subscription = bob.subscribe(Query(authors={alice.identity}, workload_ids={workload}))
    try:
        await harness.relay_down(victim)
        try:
            now = harness.wall_clock()
            message = PromotionAnnouncement(
                workload_id=workload,
                new_primary=alice.identity,
                promoted_at=now,
                epoch=1,
                fencing_token=fencing_token(1, 0),
            )
            try:
                published = await alice.publish(message, timeout=harness.timeout)
            except Exception as exc:
                raise _fail(
                    check,
                    f"with {victim} down, publish must report it in PublishResult.errors, not "
                    f"raise {type(exc).__name__}: {exc}",
                ) from exc
            if victim in published.acked or published.acked != relays - {victim}:
                raise _fail(
                    check,
                    f"with {victim} down, the others (only) must acknowledge: {published}",
                )
            if victim not in published.errors:
                raise _fail(check, f"a down relay must appear in PublishResult.errors: {published}")
            try:
                result = await bob.query(Query(authors={alice.identity}), timeout=harness.timeout)
            except Exception as exc:
                raise _fail(
                    check,
                    f"with {victim} down, query must report it in QueryResult.errors, not "
                    f"raise {type(exc).__name__}: {exc}",
                ) from exc
            if victim in result.answered or result.answered != relays - {victim}:
                raise _fail(check, f"with {victim} down, the others (only) must answer: {result}")
            if victim not in result.errors:
                raise _fail(check, f"a down relay must appear in QueryResult.errors: {result}")
            # Read the subscription during the outage: the relays that are up
            # keep delivering, and reading must not make it give up on the
            # one that is down. (With a single relay nothing is up to deliver.)
            if len(relays) > 1:
                during = await _collect(
                    subscription,
                    until=lambda got: any(e.message == message for e in got),
                    within=harness.delivery_timeout,
                    check=check,
                )
                if not any(e.message == message for e in during):
                    raise _fail(
                        check,
                        f"with only {victim} down, an open subscription got nothing from the "
                        f"other relays: {_describe(during)}",
                    )
        finally:
            await harness.relay_up(victim)
        # The relay is back: publishing reaches it again, and the open
        # subscription gets deliveries from it again (reconnected).
        later = PromotionAnnouncement(
            workload_id=workload,
            new_primary=alice.identity,
            promoted_at=harness.wall_clock() + 1,
            epoch=2,
            fencing_token=fencing_token(2, 0),
        )
        acked: frozenset[str] = frozenset()
        with anyio.move_on_after(harness.delivery_timeout):
            while acked != relays:
                acked = (await alice.publish(later, timeout=harness.timeout)).acked
                if acked != relays:
                    await anyio.sleep(0.05)
        if acked != relays:
            raise _fail(check, f"{victim} is back up but publishing reached only {sorted(acked)}")
        received = await _collect(
            subscription,
            until=lambda got: any(e.message == later and e.relay == victim for e in got),
            within=harness.delivery_timeout,
            check=check,
        )
        if not any(e.message == later and e.relay == victim for e in received):
            raise _fail(
                check,
                f"after {victim} came back, a subscription opened before it went down (and "
                f"read during the outage) got nothing from it: {_describe(received)}",
            )
    finally:
        await subscription.aclose()


async def _settled(probe: Callable[[], int], limit: int, within: float) -> int:
    value = probe()
    with anyio.move_on_after(within):
        while value > limit:
            await anyio.sleep(0.01)
            value = probe()
    return value


async def _check_cancellation(harness: RelayHarness) -> None:
    check = "cancellation"
    alice, bob, _carol = _pick(harness, check)
    query = Query(authors={alice.identity})
    # Warm up: connections and long-lived tasks exist before the baseline.
    await alice.publish(
        Heartbeat(provider=alice.identity, timestamp=harness.wall_clock()), timeout=harness.timeout
    )
    await bob.query(query, timeout=harness.timeout)
    await anyio.sleep(0.05)

    def tasks() -> int:
        return len(anyio.get_running_tasks())

    base_tasks = tasks()
    probe = harness.open_requests
    base_open = probe() if probe is not None else 0
    delays = (0.0, 0.0002, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016)
    for delay in delays:
        for what in ("query", "publish"):
            with anyio.move_on_after(delay):
                if what == "query":
                    await bob.query(query, timeout=harness.timeout)
                else:
                    heartbeat = Heartbeat(provider=alice.identity, timestamp=harness.wall_clock())
                    await alice.publish(heartbeat, timeout=harness.timeout)
            left = await _settled(tasks, base_tasks, harness.delivery_timeout)
            if left > base_tasks:
                raise _fail(
                    check,
                    f"a {what} cancelled after {delay}s left {left - base_tasks} task(s) running",
                )
            if probe is not None:
                still = await _settled(probe, base_open, harness.delivery_timeout)
                if still > base_open:
                    raise _fail(
                        check,
                        f"a {what} cancelled after {delay}s left {still - base_open} request(s) "
                        "open (open_requests)",
                    )
    for what in ("publish", "query"):
        latency = await _cancel_latency(harness, alice, bob, query, what)
        if latency > harness.cancel_latency:
            raise _fail(
                check,
                f"a cancelled {what} must return promptly: it took {latency:.3f}s after the "
                f"cancellation (best of 3, cancelled halfway; allowed {harness.cancel_latency}s)",
            )
    result = await bob.query(query, timeout=harness.timeout)
    if result.answered != frozenset(harness.relays):
        raise _fail(check, f"after cancelled operations, a query must still work: {result}")


async def _cancel_latency(
    harness: RelayHarness, alice: RelayTransport, bob: RelayTransport, query: Query, what: str
) -> float:
    """Seconds a cancelled ``what`` takes to return after its cancellation (best of 3).

    Each try is cancelled halfway through (half the quickest of three
    uncancelled runs), so the operation is in flight; a try that completes
    before its cancellation does not count.
    """

    async def operation() -> None:
        if what == "query":
            await bob.query(query, timeout=harness.timeout)
        else:
            heartbeat = Heartbeat(provider=alice.identity, timestamp=harness.wall_clock())
            await alice.publish(heartbeat, timeout=harness.timeout)

    full = math.inf
    for _attempt in range(3):
        started = anyio.current_time()
        await operation()
        full = min(full, anyio.current_time() - started)
    best: float | None = None
    for _attempt in range(3):
        delay = full / 2
        started = anyio.current_time()
        with anyio.move_on_after(delay) as scope:
            await operation()
        if not scope.cancelled_caught:
            continue
        latency = max(0.0, anyio.current_time() - started - delay)
        if latency <= harness.cancel_latency:
            return latency
        best = latency if best is None else min(best, latency)
    return 0.0 if best is None else best


def _named(
    name: str, check: Callable[[RelayHarness], Awaitable[None]]
) -> Callable[[RelayHarness], Awaitable[None]]:
    """``check``, with whatever the transport raises turned into a failure of ``name``.

    So a transport that raises where it must not (or ends a subscription
    early) fails a named check instead of crashing the suite.
    """

    async def run(harness: RelayHarness) -> None:
        try:
            await check(harness)
        except (_Skip, anyio.get_cancelled_exc_class()):
            raise
        except AssertionError as exc:
            if str(exc).startswith(f"[{name}]"):
                raise
            raise _fail(name, str(exc) or "an assertion failed") from exc
        except Exception as exc:  # StopAsyncIteration included
            raise _fail(name, f"the transport raised {type(exc).__name__}: {exc}") from exc

    return run


_RELAY_CHECKS: tuple[tuple[str, Callable[[RelayHarness], Awaitable[None]]], ...] = tuple(
    (name, _named(name, check))
    for name, check in (
        ("identity", _check_identity),
        ("publish", _check_publish),
        ("query", _check_query),
        ("signer", _check_signer),
        ("forged", _check_forged),
        ("subscribe", _check_subscribe),
        ("newest", _check_newest),
        ("since", _check_since),
        ("cancellation", _check_cancellation),
        ("relay_down", _check_relay_down),
    )
)

#: Names of the checks of :func:`check_relay_transport`, in the order they run.
RELAY_CHECKS: tuple[str, ...] = tuple(name for name, _check in _RELAY_CHECKS)


async def check_relay_transport(
    factory: RelayHarnessFactory, *, only: Collection[str] | None = None
) -> ConformanceReport:
    """Check a :class:`~standby.protocols.RelayTransport` against its contract.

    ``factory()`` must return an async context manager yielding a fresh
    :class:`RelayHarness`; every check enters its own. The checks:

    ``identity``
        identities are canonical, ``canonical`` is idempotent, maps every
        alias to the same identity and refuses malformed ones with
        ``IdentityError``.
    ``publish``
        every relay acknowledges when all are up; publishing twice is
        harmless; a non-message raises ``TransportError``.
    ``query``
        every relay answers; the messages come back unchanged with their
        signer, one per addressable key; filters by author and workload
        hold; an empty answer still counts as answered.
    ``signer``
        a body naming someone else is attributed to whoever signed it.
    ``forged``
        a message forged in someone's name (``harness.forge``) is never
        delivered or returned as theirs.
    ``subscribe``
        heartbeats, revocations (addressed to the subscriber), claims and
        announcements are delivered; a cancelled ``__anext__`` breaks
        nothing; ``aclose`` is idempotent and ends the iteration.
    ``newest``
        the newest version per addressable key wins, also when an older one
        is published later; a withdrawal beats its claim (same timestamp).
    ``since``
        a query with ``since`` leaves out older messages; a subscription
        with ``since`` first delivers the stored messages at least that new,
        and nothing older.
    ``cancellation``
        a publish or query cancelled at any moment leaves no task and no
        open request behind, returns within ``harness.cancel_latency``, and
        the transport keeps working.
    ``relay_down``
        (needs ``relay_down``/``relay_up``) a down relay is reported, not
        raised; a subscription read during the outage keeps delivering from
        the other relays, and once the relay is back, publishes and that
        subscription reach it again.

    ``only`` restricts the run to some checks. Raises
    :class:`AssertionError`, whose message starts with the check's name in
    brackets, at the first failure (also when the transport raised or a
    subscription ended where it must not); returns a
    :class:`ConformanceReport` otherwise.
    """
    return await _run("relay transport", _RELAY_CHECKS, factory, only)
