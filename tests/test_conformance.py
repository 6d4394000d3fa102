"""The adapter conformance suites, run against the shipped adapters.

``check_relay_transport`` runs against the in-memory relays and against
:class:`NostrTransport` over three real relay processes
(``check_container_runtime`` has its own module,
``tests/test_runtime_conformance.py``). Every suite runs
on asyncio and on trio (real clocks: the Nostr harness uses real sockets).
A few deliberately broken adapters show that the suites catch what they
claim to catch.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import attrs
import pytest
from _nostr_relays import (  # noqa: F401
    RelayCluster,
    any_relays,
    backends,
    fixed_keys,
    local_relays,
    nostr_relays,
    on_relay_runs,
    relays,
)
from _real import REAL_MAX_BLOCKING

from standby import Envelope, Heartbeat, LeaseRevocation, Message
from standby.adapters.memory import MemoryRelayNetwork, MemoryTransport
from standby.adapters.nostr import NostrTransport, npub_of
from standby.core._errors import TransportError
from standby.protocols import PublishResult, Query, QueryResult
from standby.testing.conformance._suites import (
    RELAY_CHECKS,
    RelayHarness,
    check_relay_transport,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(params=backends())
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


# --------------------------------------------------------------------------- memory harnesses


@contextlib.asynccontextmanager
async def memory_relays(
    wrap: Any = None, *, with_faults: bool = True
) -> AsyncIterator[RelayHarness]:
    network = MemoryRelayNetwork(relays=3)
    transports: list[Any] = [network.transport(n) for n in ("alice", "bob", "mallory")]
    if wrap is not None:
        transports = [wrap(t) for t in transports]
    stranger = network.transport("stranger")

    async def forge(message: Message, as_signer: str) -> None:
        # Memory relays authenticate by construction: a forgery is a message
        # in someone's name published by somebody else.
        result = await stranger.publish(message, timeout=1.0)
        assert result.acked, result

    async def down(relay: str) -> None:
        network.relay_down(relay)

    async def up(relay: str) -> None:
        network.relay_up(relay)

    yield RelayHarness(
        transports=transports,
        relays=network.relays,
        forge=forge,
        aliases=lambda identity: [identity.upper(), f"  mem:{identity} "],
        malformed_identities=["mem:", "has space"],
        relay_down=down if with_faults else None,
        relay_up=up if with_faults else None,
        timeout=1.0,
        delivery_timeout=2.0,
    )


async def test_memory_relays_pass_the_relay_suite() -> None:
    report = await check_relay_transport(memory_relays)
    assert report.passed == RELAY_CHECKS
    assert report.skipped == ()


async def test_missing_probes_are_reported_as_skipped() -> None:
    report = await check_relay_transport(
        lambda: memory_relays(with_faults=False), only={"relay_down", "identity"}
    )
    assert report.passed == ("identity",)
    assert [name for name, _why in report.skipped] == ["relay_down"]


async def test_unknown_check_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown relay transport checks"):
        await check_relay_transport(memory_relays, only={"nope"})


# --------------------------------------------------------------------------- broken adapters


class _Wrapped:
    """A memory transport with one behaviour broken by a subclass."""

    def __init__(self, inner: MemoryTransport) -> None:
        self.inner = inner

    @property
    def identity(self) -> str:
        return self.inner.identity

    @property
    def relay_count(self) -> int:
        return int(self.inner.relay_count)

    def canonical(self, identity: str) -> str:
        return self.inner.canonical(identity)

    async def publish(
        self,
        message: Message,
        *,
        timeout: float,  # noqa: ASYNC109 - the protocol's
    ) -> PublishResult:
        return await self.inner.publish(message, timeout=timeout)

    async def query(
        self,
        query: Query,
        *,
        timeout: float,  # noqa: ASYNC109 - the protocol's
    ) -> QueryResult:
        return await self.inner.query(query, timeout=timeout)

    def subscribe(self, query: Query) -> Any:
        return self.inner.subscribe(query)


class _RawCanonical(_Wrapped):
    """Compares identities as raw strings (failure mode 2)."""

    def canonical(self, identity: str) -> str:
        if not identity.strip() or "!" in identity or "\x00" in identity or " " in identity.strip():
            return self.inner.canonical(identity)
        return identity


def _body_identity(message: Message) -> str | None:
    if isinstance(message, Heartbeat):
        return message.provider
    if isinstance(message, LeaseRevocation):
        return message.primary
    return None


class _SignerFromBody(_Wrapped):
    """Believes the identity written in the body (failure mode 8)."""

    async def query(
        self,
        query: Query,
        *,
        timeout: float,  # noqa: ASYNC109 - the protocol's
    ) -> QueryResult:
        wide = attrs.evolve(query, authors=None)
        result = await self.inner.query(wide, timeout=timeout)
        envelopes = [
            attrs.evolve(e, signer=_body_identity(e.message) or e.signer) for e in result.envelopes
        ]
        kept = [e for e in envelopes if query.authors is None or e.signer in query.authors]
        return QueryResult(kept, result.answered, result.errors)


class _KeepsEveryVersion(_Wrapped):
    """Trusts relays to replace addressable messages (returns every version)."""

    async def query(
        self,
        query: Query,
        *,
        timeout: float,  # noqa: ASYNC109 - the protocol's
    ) -> QueryResult:
        network = self.inner.network
        found = [
            Envelope(message, signer, relay, time.time())
            for relay in network.relays
            for signer, message in network.stored(relay)
            if query.matches(signer, message)
        ]
        await anyio.lowlevel.checkpoint()
        return QueryResult(found, frozenset(network.relays))


async def test_the_relay_suite_catches_raw_string_identities() -> None:
    with pytest.raises(AssertionError, match=r"\[identity\] canonical\("):
        await check_relay_transport(lambda: memory_relays(_RawCanonical), only={"identity"})


async def test_the_relay_suite_catches_signers_read_from_the_body() -> None:
    with pytest.raises(AssertionError, match=r"\[signer\] .*came back as alice's"):
        await check_relay_transport(lambda: memory_relays(_SignerFromBody), only={"signer"})


async def test_the_relay_suite_catches_trusting_relay_replacement() -> None:
    with pytest.raises(AssertionError, match=r"\[(query|newest)\]"):
        await check_relay_transport(
            lambda: memory_relays(_KeepsEveryVersion), only={"query", "newest"}
        )


class _IgnoresSinceInQueries(_Wrapped):
    """Answers a query as if it had no ``since``."""

    async def query(
        self,
        query: Query,
        *,
        timeout: float,  # noqa: ASYNC109 - the protocol's
    ) -> QueryResult:
        return await self.inner.query(attrs.evolve(query, since=None), timeout=timeout)


class _NoBacklog(_Wrapped):
    """Subscribes without ``since``: stored messages are never delivered."""

    def subscribe(self, query: Query) -> Any:
        return self.inner.subscribe(attrs.evolve(query, since=None))


class _ForgetfulSubscription:
    """Gives up for good on a relay that was down while it was being read."""

    def __init__(self, inner: Any, network: MemoryRelayNetwork) -> None:
        self.inner = inner
        self.network = network
        self.given_up: set[str] = set()

    def __aiter__(self) -> _ForgetfulSubscription:
        return self

    async def __anext__(self) -> Envelope[Message]:
        while True:
            self.given_up.update(r for r in self.network.relays if not self.network.relay(r).up)
            envelope: Envelope[Message] = await self.inner.__anext__()
            if envelope.relay not in self.given_up:
                return envelope

    async def aclose(self) -> None:
        await self.inner.aclose()


class _ForgetsDownRelays(_Wrapped):
    def subscribe(self, query: Query) -> Any:
        return _ForgetfulSubscription(self.inner.subscribe(query), self.inner.network)


class _SlowToCancel(_Wrapped):
    """Keeps going for 50 ms after its publish was cancelled."""

    async def publish(
        self,
        message: Message,
        *,
        timeout: float,  # noqa: ASYNC109 - the protocol's
    ) -> PublishResult:
        try:
            return await self.inner.publish(message, timeout=timeout)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.05)
            raise


class _RaisesWhenARelayIsDown(_Wrapped):
    async def publish(
        self,
        message: Message,
        *,
        timeout: float,  # noqa: ASYNC109 - the protocol's
    ) -> PublishResult:
        result = await self.inner.publish(message, timeout=timeout)
        if result.errors:
            raise TransportError(f"relays failed: {dict(result.errors)}")
        return result


class _EndsAfterACancelledWait:
    """A subscription that ends once a waiting ``__anext__`` was cancelled."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.broken = False

    def __aiter__(self) -> _EndsAfterACancelledWait:
        return self

    async def __anext__(self) -> Envelope[Message]:
        if self.broken:
            raise StopAsyncIteration
        try:
            envelope: Envelope[Message] = await self.inner.__anext__()
        except anyio.get_cancelled_exc_class():
            self.broken = True
            raise
        return envelope

    async def aclose(self) -> None:
        await self.inner.aclose()


class _FragileSubscriptions(_Wrapped):
    def subscribe(self, query: Query) -> Any:
        return _EndsAfterACancelledWait(self.inner.subscribe(query))


@pytest.mark.parametrize(
    ("broken", "check", "message"),
    [
        (_IgnoresSinceInQueries, "since", r"a query with since=\S+ must return only"),
        (_NoBacklog, "since", "a subscription with since=\\S+ must first deliver"),
        (_ForgetsDownRelays, "relay_down", "got nothing from it"),
        (_SlowToCancel, "cancellation", "a cancelled publish must return promptly"),
        (_RaisesWhenARelayIsDown, "relay_down", "not raise TransportError"),
        (_FragileSubscriptions, "subscribe", r"ended \(StopAsyncIteration\)"),
    ],
)
async def test_the_relay_suite_catches_more_planted_bugs(
    broken: type[_Wrapped], check: str, message: str
) -> None:
    # The correct transport passes the same check.
    assert (await check_relay_transport(memory_relays, only={check})).passed == (check,)
    with pytest.raises(AssertionError) as caught:
        await check_relay_transport(lambda: memory_relays(broken), only={check})
    text = str(caught.value)
    assert text.startswith(f"[{check}] "), text
    assert re.search(message, text), text


class _BlocksTheLoop(_Wrapped):
    """Calls a blocking function inside ``publish``: the whole event loop stops for 0.2 s."""

    async def publish(
        self,
        message: Message,
        *,
        timeout: float,  # noqa: ASYNC109 - the protocol's
    ) -> PublishResult:
        time.sleep(0.2)  # noqa: ASYNC251 - the planted bug
        return await self.inner.publish(message, timeout=timeout)


async def test_the_relay_suite_catches_a_transport_that_blocks_the_event_loop() -> None:
    message = r"\[publish\] transports\[0\]\.publish\(\) blocked the event loop for \d+ ms"
    with pytest.raises(AssertionError, match=message):
        await check_relay_transport(lambda: memory_relays(_BlocksTheLoop), only={"publish"})


async def test_the_blocking_check_can_be_relaxed_or_turned_off() -> None:
    @contextlib.asynccontextmanager
    async def relaxed(limit: float | None) -> AsyncIterator[RelayHarness]:
        async with memory_relays(_BlocksTheLoop) as harness:
            yield attrs.evolve(harness, max_blocking=limit)

    for limit in (1.0, None):
        report = await check_relay_transport(lambda wanted=limit: relaxed(wanted), only={"publish"})
        assert report.passed == ("publish",)


async def test_anything_a_check_raises_is_a_named_failure() -> None:
    class _Explodes(_Wrapped):
        async def query(
            self,
            query: Query,
            *,
            timeout: float,  # noqa: ASYNC109 - the protocol's
        ) -> QueryResult:
            raise RuntimeError("boom")

    with pytest.raises(AssertionError, match=r"^\[query\] the transport raised RuntimeError: boom"):
        await check_relay_transport(lambda: memory_relays(_Explodes), only={"query"})


# --------------------------------------------------------------------------- Nostr over real relays


def forged_event(forger: NostrTransport, message: Message, victim: str) -> dict[str, Any]:
    """``message`` as an event with ``victim``'s pubkey but the forger's signature."""
    from standby.adapters.nostr._keys import event_id

    draft = forger.profile.drafts(message, forger.codec)[-1]
    created_at = int(forger.profile.natural_created_at(message))
    eid = event_id(victim, created_at, draft.kind, draft.tags, draft.content)
    return {
        "id": eid,
        "pubkey": victim,
        "created_at": created_at,
        "kind": draft.kind,
        "tags": [list(tag) for tag in draft.tags],
        "content": draft.content,
        "sig": forger.keys.sign(bytes.fromhex(eid)).hex(),
    }


def nostr_harness_factory(cluster: RelayCluster) -> Any:
    @contextlib.asynccontextmanager
    async def factory() -> AsyncIterator[RelayHarness]:
        async with contextlib.AsyncExitStack() as stack:
            transports = [
                await stack.enter_async_context(
                    NostrTransport(cluster.urls, fixed_keys(), reconnect_backoff=(0.05, 0.5))
                )
                for _ in range(3)
            ]
            forger = await stack.enter_async_context(NostrTransport(cluster.urls, fixed_keys()))

            async def forge(message: Message, as_signer: str) -> None:
                event = forged_event(forger, message, as_signer)
                answers: dict[str, tuple[bool, str]] = {}

                async def offer(url: str) -> None:
                    answers[url] = await forger.send_raw(url, event, timeout=1.0)

                async with anyio.create_task_group() as group:
                    for url in cluster.urls:
                        group.start_soon(offer, url)
                # A lax relay stores it and hands it out, so the transport
                # must drop it itself; a relay that checks signatures (every
                # LocalRelay) must refuse it, saying why.
                for relay in cluster.relays:
                    accepted, reason = answers[relay.url]
                    if relay.lax:
                        assert accepted, f"the lax relay refused the forged event: {answers}"
                    else:
                        assert not accepted, f"a strict relay took it: {answers}"
                        assert reason, f"a strict relay refused it without a reason: {answers}"

            async def relay_down(url: str) -> None:
                await anyio.to_thread.run_sync(cluster.stop, cluster.urls.index(url))

            async def relay_up(url: str) -> None:
                await anyio.to_thread.run_sync(cluster.start, cluster.urls.index(url))

            def aliases(identity: str) -> Sequence[str]:
                npub = npub_of(identity)
                return [npub, npub.upper(), identity.upper(), f" {identity} ", f"nostr:{npub}"]

            yield RelayHarness(
                transports=transports,
                relays=cluster.urls,
                forge=forge,
                aliases=aliases,
                malformed_identities=[
                    "npub1",
                    "f" * 63,
                    "g" * 64,
                    "00" * 32,  # not a point on the curve
                    fixed_keys().nsec,  # a secret key is no identity
                ],
                open_requests=lambda: sum(t.open_requests() for t in transports),
                max_blocking=REAL_MAX_BLOCKING,
                relay_down=relay_down,
                relay_up=relay_up,
                timeout=2.0,
                delivery_timeout=8.0,
            )

    return factory


@on_relay_runs
async def test_nostr_transport_passes_the_relay_suite_on_real_relays(
    any_relays: RelayCluster,  # noqa: F811
) -> None:
    """On ``nostr-relay`` and on rust-nostr's ``LocalRelay``."""
    report = await check_relay_transport(nostr_harness_factory(any_relays))
    assert report.passed == RELAY_CHECKS


# --------------------------------------------------------------------------- the docs' example


def test_the_worked_example_in_the_docs_runs(
    capsys: pytest.CaptureFixture[str], anyio_backend: Any
) -> None:
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "conformance.md").read_text()
    (block,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)[1:]
    block = block.replace("anyio.run(main)", f"anyio.run(main, backend={anyio_backend!r})")
    exec(compile(block, "docs/conformance.md", "exec"), {"__name__": "docs"})
    out = capsys.readouterr().out
    assert "relay transport: identity, publish, query, signer, forged" in out
    assert (
        "container runtime: lifecycle, restore, two_spawns, spawn_failure, cancelled_spawn" in out
    )
