"""The Nostr transport: keys and identities, events, bodies, and relay behaviour.

The first part is pure (no sockets). The second runs against the three real
relay processes of ``_nostr_relays`` (relay 0 does not check signatures, so
it hands forged events to the transport) and against a deliberately broken
websocket relay served from the test itself, on asyncio and trio.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import math
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import attrs
import httpx
import pytest
import wsproto
import wsproto.events
from _nostr_relays import (  # noqa: F401
    RelayCluster,
    any_relays,
    backends,
    fixed_keys,
    local_relays,
    nostr_relays,
    relays,
)
from httpx_ws import aconnect_ws

from standby import (
    Heartbeat,
    LeaseRevocation,
    PromotionAnnouncement,
    PromotionClaim,
    StandbySlot,
    WireError,
    fencing_token,
)
from standby.adapters.nostr import (
    DEFAULT_PREFIX,
    REFERENCE_PREFIX,
    NostrKeys,
    NostrProfile,
    NostrTransport,
    Pacing,
    canonical_identity,
    npub_of,
    sign_event,
    verify_event,
)
from standby.adapters.nostr._keys import EventRejected, event_id
from standby.adapters.nostr._profile import filters_for
from standby.core import DropReason
from standby.core._errors import IdentityError, TransportError
from standby.protocols import (
    Query,
    RelayTransport,
    ReportsDrops,
    Subscription,
    TransportDrop,
    WaitsConnected,
)
from standby.wire import Codec

# A NIP-19 vector: the same key as hex and as npub.
VECTOR_HEX = "3bf0c63fcb93463407af97a5e5ee64fa883d107ef9e558472c4eb9aaaefa459d"
VECTOR_NPUB = "npub180cvv07tjdrrgpa0j7j7tmnyl2yr6yr7l8j4s3evf6u64th6gkwsyjh6w6"

PROFILE = NostrProfile()
CODEC = Codec()


# =========================================================================== identities and keys


@pytest.mark.parametrize(
    "spelling",
    [
        VECTOR_HEX,
        VECTOR_HEX.upper(),
        VECTOR_NPUB,
        VECTOR_NPUB.upper(),
        f"  {VECTOR_NPUB}\n",
        f"nostr:{VECTOR_NPUB}",
    ],
)
def test_every_spelling_of_a_key_is_one_identity(spelling: str) -> None:
    assert canonical_identity(spelling) == VECTOR_HEX


def test_npub_of_gives_the_nip19_form() -> None:
    assert npub_of(VECTOR_HEX) == VECTOR_NPUB
    assert npub_of(VECTOR_NPUB) == VECTOR_NPUB


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("", "expected an npub1"),
        ("alice", "expected an npub1"),
        (VECTOR_HEX[:-1], "expected an npub1"),
        ("g" * 64, "expected an npub1"),
        (VECTOR_NPUB[:-1] + ("q" if VECTOR_NPUB[-1] != "q" else "p"), "checksum"),
        (VECTOR_NPUB[:10] + VECTOR_NPUB[10:].upper(), "mixed case"),
        ("00" * 32, "not a public key on secp256k1"),
        ("nsec1vl029mgpspedva04g90vltkh6fvh240zqtv9k0t9af8935ke9laqsnlfe5", "expected an npub1"),
    ],
)
def test_malformed_identities_are_refused_with_a_reason(bad: str, why: str) -> None:
    with pytest.raises(IdentityError, match=why):
        canonical_identity(bad)


def test_keys_load_from_nsec_or_hex_and_never_show_the_secret() -> None:
    keys = NostrKeys.generate()
    assert NostrKeys.from_secret(keys.nsec).public_key == keys.public_key
    assert NostrKeys.from_secret(keys.secret_hex.upper()).public_key == keys.public_key
    assert canonical_identity(keys.npub) == keys.public_key
    assert keys.secret_hex not in repr(keys)
    assert keys.nsec not in repr(keys)
    # Change the last character (bech32's checksum catches any one change).
    broken = keys.nsec[:-1] + ("q" if keys.nsec[-1] != "q" else "p")
    with pytest.raises(IdentityError) as info:
        NostrKeys.from_secret(broken)
    assert keys.nsec[:-1] not in str(info.value)
    with pytest.raises(IdentityError):
        NostrKeys.from_secret("0" * 64)  # zero is not a secret key


# =========================================================================== events


def test_a_signed_event_verifies_and_any_tampering_is_caught() -> None:
    keys = fixed_keys()
    event = sign_event(keys, kind=38384, tags=[["d", "x"]], content='{"a":"é\\n"}', created_at=1)
    assert verify_event(event.to_json()) == event
    assert event.id == event_id(keys.public_key, 1, 38384, [["d", "x"]], '{"a":"é\\n"}')

    tampered = dict(event.to_json(), content='{"a":2}')
    with pytest.raises(EventRejected) as info:
        verify_event(tampered)
    assert info.value.reason == "bad_id"

    stranger = fixed_keys()
    resigned = dict(event.to_json(), sig=stranger.sign(bytes.fromhex(event.id)).hex())
    with pytest.raises(EventRejected) as info:
        verify_event(resigned)
    assert info.value.reason == "bad_signature"

    claimed = dict(event.to_json(), pubkey=stranger.public_key)
    claimed["id"] = event_id(stranger.public_key, 1, 38384, [["d", "x"]], '{"a":"é\\n"}')
    with pytest.raises(EventRejected) as info:
        verify_event(claimed)
    assert info.value.reason == "bad_signature"


@pytest.mark.parametrize(
    "change",
    [
        {"created_at": "1"},
        {"created_at": True},
        {"kind": 1.5},
        {"tags": [["d", 1]]},
        {"tags": "d"},
        {"content": None},
        {"pubkey": VECTOR_HEX.upper()},
        {"sig": "00"},
        {"id": None},
    ],
)
def test_malformed_events_are_refused(change: dict[str, Any]) -> None:
    event = sign_event(fixed_keys(), kind=1, tags=[], content="", created_at=1).to_json()
    event.update(change)
    with pytest.raises(EventRejected) as info:
        verify_event(event)
    assert info.value.reason == "malformed"
    with pytest.raises(EventRejected):
        verify_event([event])


# ================================================================== bodies (reference system)

PRIMARY = fixed_keys()
STANDBYS = (fixed_keys(), fixed_keys())


def event_of(kind: int, content: Any, tags: list[list[str]] | None = None) -> Any:
    text = content if isinstance(content, str) else json.dumps(content)
    return sign_event(PRIMARY, kind=kind, tags=tags or [], content=text, created_at=1_700_000_000)


def test_a_reference_revocation_body_decodes() -> None:
    # As the reference system writes it: npubs, integer seconds, no version.
    body = {
        "workload_id": "w-7",
        "primary_provider_npub": PRIMARY.npub,
        "standby_providers": [STANDBYS[0].npub, STANDBYS[1].npub],
        "reason": "lease lost",
        "revoked_at": 1_700_000_000,
        "state_uri": "s3://bucket/w-7",
    }
    d = PROFILE.revocation_d(PRIMARY.public_key, "w-7")
    message = PROFILE.decode(event_of(38385, body, [["d", d]]), CODEC)
    assert message == LeaseRevocation(
        workload_id="w-7",
        primary=PRIMARY.public_key,
        standbys=(STANDBYS[0].public_key, STANDBYS[1].public_key),
        reason="lease lost",
        revoked_at=1_700_000_000.0,
        state_uri="s3://bucket/w-7",
        version=1,
    )


def test_a_reference_announcement_and_heartbeat_decode() -> None:
    announcement = {
        "workload_id": "w-7",
        "new_primary_npub": STANDBYS[0].npub,
        "promoted_at": 1_700_000_100,
        "version": 1,
    }
    d = PROFILE.announcement_d("w-7")
    assert PROFILE.decode(event_of(38386, announcement, [["d", d]]), CODEC) == (
        PromotionAnnouncement(
            workload_id="w-7", new_primary=STANDBYS[0].public_key, promoted_at=1_700_000_100.0
        )
    )
    heartbeat = {
        "provider_npub": PRIMARY.npub,
        "timestamp": 1_700_000_200,
        "active_workloads": 3,
        "available_capacity": 5,
        "version": 1,
    }
    for kind in (38384, 20384):
        assert PROFILE.decode(event_of(kind, heartbeat), CODEC) == Heartbeat(
            provider=PRIMARY.public_key,
            timestamp=1_700_000_200.0,
            active_workloads=3,
            available_capacity=5,
        )


def test_the_reference_profile_reads_and_writes_the_reference_d_tags() -> None:
    reference = NostrProfile.reference()
    assert reference == NostrProfile(prefix="paygress")
    assert reference.is_reference
    assert not PROFILE.is_reference
    assert PROFILE.prefix == DEFAULT_PREFIX == "standby"
    assert reference.prefix == REFERENCE_PREFIX
    assert NostrProfile.reference(live_backlog=5.0).live_backlog == 5.0
    assert reference.announcement_d("w-7") == "paygress:promoted:v1:w-7"
    revocation_d = reference.revocation_d(PRIMARY.public_key, "w-7")
    assert revocation_d == f"paygress:revocation:v1:{PRIMARY.npub}:w-7"
    # A reference provider's announcement: the reference profile asks relays for
    # its d tag; the default profile asks for another one and never sees it.
    d = "paygress:promoted:v1:w-7"
    query = Query(kinds={"announcement"}, workload_ids={"w-7"})
    asked = {
        profile.prefix: filters_for(
            profile, query, me=PRIMARY.public_key, now=0.0, live=False, since=None
        )
        for profile in (PROFILE, reference)
    }
    assert asked["paygress"][0]["#d"] == [d]
    assert d not in asked["standby"][0]["#d"]
    body = {
        "workload_id": "w-7",
        "new_primary_npub": STANDBYS[0].npub,
        "promoted_at": 1_700_000_100,
    }
    announcement = reference.decode(event_of(38386, body, [["d", d]]), CODEC)
    assert announcement.new_primary == STANDBYS[0].public_key  # type: ignore[union-attr]
    drafts = reference.drafts(announcement, CODEC)
    assert drafts[-1].tags == (("d", d),)


def test_a_live_subscription_asks_for_workload_messages_from_anyone() -> None:
    query = Query(authors={PRIMARY.public_key}, workload_ids={"w-7"})

    def by_kind(live: bool, q: Query = query) -> dict[int, dict[str, Any]]:
        found = filters_for(PROFILE, q, me=STANDBYS[0].public_key, now=0.0, live=live, since=None)
        return {f["kinds"][0]: f for f in found}

    live = by_kind(True)
    assert live[38384]["authors"] == [PRIMARY.public_key]  # heartbeats: by author
    for kind in (38385, 38386, 38387):
        assert "authors" not in live[kind]  # the transport drops strangers itself
    assert live[38385]["#p"] == [STANDBYS[0].public_key]
    # queries keep the authors filter; a subscription that watches no workload
    # keeps it too, but for the revocations addressed to this standby
    for kind, found in by_kind(False).items():
        assert found["authors"] == [PRIMARY.public_key], kind
    for kind, found in by_kind(True, Query(authors=query.authors)).items():
        if kind == 38385:
            assert "authors" not in found
            assert found["#p"] == [STANDBYS[0].public_key]
        else:
            assert found["authors"] == [PRIMARY.public_key], kind


def _reference_slot(**changes: Any) -> StandbySlot[Any]:
    fields: dict[str, Any] = {
        "workload_id": "w-7",
        "primary": PRIMARY.public_key,
        "standby_index": 1,
        "standby_count": 2,
        "spec": {"image": "app:1", "cpus": 2},
        "expires_at": 1_700_003_600.25,
        "owner": STANDBYS[1].public_key,
        "created_at": 1_700_000_000.5,
        "peers": (STANDBYS[0].public_key,),
        "spec_id": "offer-42",
    }
    fields.update(changes)
    return StandbySlot(**fields)


def test_a_slot_travels_in_the_reference_field_names_with_its_spec_id() -> None:
    slot = _reference_slot()
    body = PROFILE.slot_body(slot, CODEC)
    assert body["primary_npub"] == PRIMARY.npub
    assert body["owner_npub"] == STANDBYS[1].npub
    assert body["peer_standby_npubs"] == [STANDBYS[0].npub]
    assert body["container_config"] == {"image": "app:1", "cpus": 2}
    assert body["spec_id"] == "offer-42"
    assert (body["created_at"], body["created_at_exact"]) == (1_700_000_000, 1_700_000_000.5)
    assert (body["expires_at"], body["expires_at_exact"]) == (1_700_003_600, 1_700_003_600.25)
    assert {"primary", "owner", "peers", "spec"}.isdisjoint(body)
    assert PROFILE.parse_slot(json.loads(json.dumps(body)), CODEC) == slot
    # without an offer id the field is left out, and reads back as None
    assert "spec_id" not in PROFILE.slot_body(_reference_slot(spec_id=None), CODEC)


def test_a_slot_as_the_reference_provider_writes_it_decodes() -> None:
    body = {
        "workload_id": "w-7",
        "primary_npub": PRIMARY.npub,
        "standby_index": 0,
        "standby_count": 2,
        "container_config": {"image": "app:1"},
        "spec_id": "offer-9",
        "expires_at": 1_700_003_600,
        "owner_npub": STANDBYS[1].npub,
        "created_at": 1_700_000_000,
        "peer_standby_npubs": [STANDBYS[0].npub],
    }
    slot = PROFILE.parse_slot(body, CODEC)
    assert slot.spec_id == "offer-9"
    assert slot.spec == {"image": "app:1"}
    assert (slot.primary, slot.owner) == (PRIMARY.public_key, STANDBYS[1].public_key)
    assert slot.peers == (STANDBYS[0].public_key,)
    assert PROFILE.parse_slot(dict(body, spec_id=""), CODEC).spec_id is None
    with pytest.raises(WireError) as caught:
        PROFILE.parse_slot(dict(body, primary_npub="npub1nope"), CODEC)
    assert caught.value.path == "$.primary"


def test_outgoing_bodies_use_the_reference_names_and_keep_our_fields() -> None:
    revocation = LeaseRevocation(
        workload_id="w-7",
        primary=PRIMARY.public_key,
        standbys=tuple(s.public_key for s in STANDBYS),
        reason="handover",
        revoked_at=1_700_000_000.25,
        epoch=2,
    )
    body = PROFILE.body(revocation, CODEC)
    assert body["primary_provider_npub"] == PRIMARY.npub
    assert body["standby_providers"] == [s.npub for s in STANDBYS]
    assert body["revoked_at"] == 1_700_000_000
    assert isinstance(body["revoked_at"], int)
    assert body["revoked_at_exact"] == 1_700_000_000.25
    assert body["epoch"] == 2
    assert body["version"] == 1
    assert "primary" not in body
    assert "standbys" not in body

    announcement = PromotionAnnouncement(
        workload_id="w-7",
        new_primary=STANDBYS[0].public_key,
        promoted_at=1_700_000_001.5,
        epoch=3,
        fencing_token=fencing_token(3, 0),
    )
    body = PROFILE.body(announcement, CODEC)
    assert body["new_primary_npub"] == STANDBYS[0].npub
    assert body["promoted_at"] == 1_700_000_001
    assert body["fencing_token"] == fencing_token(3, 0)

    heartbeat = Heartbeat(provider=PRIMARY.public_key, timestamp=1_700_000_002.75)
    body = PROFILE.body(heartbeat, CODEC)
    assert body["provider_npub"] == PRIMARY.npub
    assert body["timestamp"] == 1_700_000_002

    # And everything comes back exactly, through the events the transport signs.
    for message in (revocation, announcement, heartbeat):
        for draft in PROFILE.drafts(message, CODEC):
            event = sign_event(
                PRIMARY, kind=draft.kind, tags=draft.tags, content=draft.content, created_at=1
            )
            assert PROFILE.decode(event, CODEC) == message


def test_revocations_carry_a_p_tag_per_standby_and_their_d_tag() -> None:
    revocation = LeaseRevocation(
        workload_id="w-9",
        primary=PRIMARY.npub,
        standbys=tuple(s.npub for s in STANDBYS),
        revoked_at=1.0,
    )
    (draft,) = PROFILE.drafts(revocation, CODEC)
    assert draft.kind == 38385
    assert draft.tags == (
        ("d", f"standby:revocation:v1:{PRIMARY.npub}:w-9"),
        ("p", STANDBYS[0].public_key),
        ("p", STANDBYS[1].public_key),
    )
    claim = PromotionClaim(
        workload_id="w-9",
        epoch=1,
        fencing_token=fencing_token(1, 1),
        claimant=STANDBYS[1].public_key,
        standby_index=1,
        claimed_at=5.0,
    )
    (draft,) = PROFILE.drafts(claim, CODEC)
    assert (draft.kind, draft.tags) == (38387, (("d", "standby:claim:v1:w-9"),))
    heartbeat_drafts = PROFILE.drafts(
        Heartbeat(provider=PRIMARY.public_key, timestamp=125.0), CODEC
    )
    assert [(d.kind, d.tags) for d in heartbeat_drafts] == [
        (20384, ()),
        (38384, (("d", "standby:heartbeat:v1:125"),)),
    ]


@pytest.mark.parametrize(
    ("kind", "content", "reason"),
    [
        (38384, "not json", "bad_body"),
        (38384, "[1, 2]", "bad_body"),
        (38384, {"provider_npub": "alice", "timestamp": 1}, "bad_body"),
        (38384, {"provider_npub": VECTOR_NPUB, "timestamp": "1"}, "bad_body"),
        (38384, {"provider_npub": VECTOR_NPUB, "timestamp": 1, "version": 2}, "bad_body"),
        (38384, {"provider_npub": VECTOR_NPUB, "timestamp": 1, "pad": "x" * 70_000}, "bad_body"),
        (
            38386,
            {"workload_id": "w", "new_primary_npub": VECTOR_NPUB, "promoted_at": 1},
            "d_mismatch",
        ),
        (1, {"hello": 1}, "unexpected_kind"),
    ],
)
def test_bad_bodies_are_refused_with_a_reason(kind: int, content: Any, reason: str) -> None:
    with pytest.raises(EventRejected) as info:
        PROFILE.decode(event_of(kind, content, [["d", "standby:promoted:v1:other"]]), CODEC)
    assert info.value.reason == reason


def test_an_inconsistent_exact_timestamp_is_ignored() -> None:
    body = {"provider_npub": VECTOR_NPUB, "timestamp": 100, "timestamp_exact": 250.5}
    message = PROFILE.decode(event_of(38384, body), CODEC)
    assert isinstance(message, Heartbeat)
    assert message.timestamp == 100.0


def test_profile_validation() -> None:
    with pytest.raises(ValueError, match="addressable"):
        NostrProfile(claim_kind=1234)
    with pytest.raises(ValueError, match="distinct"):
        NostrProfile(claim_kind=38385)
    with pytest.raises(ValueError, match="prefix"):
        NostrProfile(prefix="a:b")
    assert NostrProfile(ephemeral_heartbeat_kind=None).event_kinds == {38384, 38385, 38386, 38387}


# =========================================================================== created_at ordering


def created_ats(transport: NostrTransport, *messages: Any) -> list[int]:
    return [transport._sign(m)[-1].created_at for m in messages]


def test_a_withdrawal_always_outranks_its_claim_on_relays() -> None:
    keys = fixed_keys()
    transport = NostrTransport(["ws://127.0.0.1:1/"], keys)
    claim = PromotionClaim(
        workload_id="w",
        epoch=1,
        fencing_token=fencing_token(1, 0),
        claimant=keys.public_key,
        standby_index=0,
        claimed_at=1_700_000_000.9,
    )
    withdrawal = attrs.evolve(claim, withdrawn=True)
    retry = attrs.evolve(
        claim, epoch=2, fencing_token=fencing_token(2, 0), claimed_at=1_700_000_001.2
    )
    first, second, third = created_ats(transport, claim, withdrawal, retry)
    assert first == 1_700_000_000
    assert second > first
    assert third > second  # the retry in the withdrawal's second still replaces it
    # Republishing the same message gives the very same event (relays deduplicate).
    assert transport._sign(retry)[-1].id == transport._sign(retry)[-1].id
    # A fresh process (no memory) still orders a withdrawal after its claim.
    fresh = NostrTransport(["ws://127.0.0.1:1/"], keys)
    assert created_ats(fresh, withdrawal) == [1_700_000_001]


def test_an_older_version_never_outranks_a_newer_one() -> None:
    keys = fixed_keys()
    transport = NostrTransport(["ws://127.0.0.1:1/"], keys)
    newer = Heartbeat(provider=keys.public_key, timestamp=1_700_000_010.5)
    older = Heartbeat(provider=keys.public_key, timestamp=1_700_000_010.1)
    first, second = created_ats(transport, newer, older)
    assert second < first


def test_messages_that_cannot_be_encoded_raise_transport_error() -> None:
    transport = NostrTransport(["ws://127.0.0.1:1/"], fixed_keys())
    with pytest.raises(TransportError, match="cannot publish"):
        transport._sign(Heartbeat(provider="alice", timestamp=1.0))


def test_constructor_validation() -> None:
    keys = fixed_keys()
    with pytest.raises(ValueError, match="at least one"):
        NostrTransport([], keys)
    with pytest.raises(ValueError, match="ws://"):
        NostrTransport(["http://x/"], keys)
    with pytest.raises(ValueError, match="unique"):
        NostrTransport(["ws://x/", "ws://x/"], keys)
    with pytest.raises(IdentityError):
        NostrTransport(["ws://x/"], "not a key")
    transport = NostrTransport(["ws://x/"], keys.nsec)
    assert transport.identity == keys.public_key
    assert transport.npub == keys.npub
    assert isinstance(transport, RelayTransport)
    assert keys.public_key[:12] in repr(transport)


def test_importing_without_the_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(sys.modules):
        if name.startswith(("standby.adapters.nostr", "standby.adapters._nostr")):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "coincurve", None)
    with pytest.raises(ImportError, match=r"pip install 'standby\[nostr\]'"):
        importlib.import_module("standby.adapters.nostr")


# =========================================================================== real relays


@pytest.fixture(params=backends())
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


def unique(what: str) -> str:
    return f"{what}-{uuid.uuid4().hex[:10]}"


@contextlib.asynccontextmanager
async def transports(
    urls: list[str], count: int, **options: Any
) -> AsyncIterator[list[NostrTransport]]:
    async with contextlib.AsyncExitStack() as stack:
        made = [
            await stack.enter_async_context(
                NostrTransport(urls, fixed_keys(), reconnect_backoff=(0.05, 0.5), **options)
            )
            for _ in range(count)
        ]
        yield made


async def raw_query(url: str, filters: dict[str, Any]) -> list[dict[str, Any]]:
    """What one relay stores for ``filters``, read with a plain websocket."""
    found: list[dict[str, Any]] = []
    async with httpx.AsyncClient() as client, aconnect_ws(url, client) as ws:
        await ws.send_text(json.dumps(["REQ", "raw", filters]))
        with anyio.fail_after(5):
            while True:
                message = json.loads(await ws.receive_text())
                if message[0] == "EOSE":
                    return found
                if message[0] == "EVENT":
                    found.append(message[2])


@pytest.mark.anyio
async def test_a_transport_must_be_entered_first() -> None:
    transport = NostrTransport(["ws://127.0.0.1:1/"], fixed_keys())
    with pytest.raises(TransportError, match="async with"):
        await transport.query(Query(), timeout=0.1)
    with pytest.raises(TransportError, match="async with"):
        transport.subscribe(Query())
    async with transport:
        subscription = transport.subscribe(Query(kinds={"claim"}))
        assert isinstance(subscription, Subscription)
    # The transport closed under a live subscription: it ends with an error.
    with pytest.raises(TransportError, match="closed"):
        await subscription.__anext__()
    await subscription.aclose()
    with pytest.raises(StopAsyncIteration):
        await subscription.__anext__()


@pytest.mark.anyio
async def test_forged_events_from_a_relay_are_dropped_and_counted(relays: RelayCluster) -> None:  # noqa: F811
    lax = relays.relays[0]
    assert lax.lax
    async with transports(relays.urls, 3) as (victim, reader, forger):
        workload = unique("forged")
        revocation = LeaseRevocation(
            workload_id=workload,
            primary=victim.identity,
            standbys=(reader.identity,),
            revoked_at=time.time(),
        )
        draft = forger.profile.drafts(revocation, forger.codec)[-1]
        created_at = math.floor(revocation.revoked_at)
        good_id = event_id(victim.identity, created_at, draft.kind, draft.tags, draft.content)
        bad_signature = {
            "id": good_id,
            "pubkey": victim.identity,
            "created_at": created_at,
            "kind": draft.kind,
            "tags": [list(t) for t in draft.tags],
            "content": draft.content,
            "sig": forger.keys.sign(bytes.fromhex(good_id)).hex(),
        }
        genuine = sign_event(
            victim.keys,
            kind=draft.kind,
            tags=draft.tags,
            content=draft.content,
            created_at=created_at + 1,
        ).to_json()
        # Tags changed after signing (another d: the relay keeps both events).
        bad_id = dict(genuine, tags=[["d", unique("other")], ["p", reader.identity]])
        reported: list[TransportDrop] = []
        reader.set_drop_hook(reported.append)
        subscription = reader.subscribe(Query(kinds={"revocation"}, authors={victim.identity}))

        async def marker_from_lax() -> None:
            marker = attrs.evolve(revocation, workload_id=unique("marker"), revoked_at=time.time())
            await victim.publish(marker, timeout=2.0)
            with anyio.fail_after(5):
                while True:
                    envelope = await subscription.__anext__()
                    assert envelope.message.workload_id != workload, envelope  # type: ignore[union-attr]
                    if envelope.message == marker and envelope.relay == lax.url:
                        return

        try:
            await marker_from_lax()  # the subscription is live on the lax relay
            for event in (bad_signature, bad_id):
                accepted, reason = await forger.send_raw(lax.url, event, timeout=2.0)
                assert accepted, reason  # the lax relay stores anything
            # A strict relay refuses the forgery itself.
            accepted, reason = await forger.send_raw(relays.urls[1], bad_signature, timeout=3.0)
            assert not accepted
            assert "signature" in reason.lower()
            await marker_from_lax()  # delivered after the forgeries, which were dropped

            result = await reader.query(
                Query(kinds={"revocation"}, workload_ids={workload}), timeout=2.0
            )
            assert result.envelopes == ()
            assert result.answered == frozenset(relays.urls)
        finally:
            await subscription.aclose()
        assert reader.counters.get("dropped_bad_signature", 0) >= 2  # query + subscription
        assert reader.counters.get("dropped_bad_id", 0) >= 2
        assert reader.dropped >= 4
        # every one of them was reported, as a bad signature claiming a victim's key
        # (the lax relay also keeps the forgeries of earlier runs of this test)
        assert isinstance(reader, ReportsDrops)
        assert len(reported) == reader.dropped
        assert {(d.reason, d.relay) for d in reported} == {(DropReason.BAD_SIGNATURE, lax.url)}
        assert victim.identity in {d.signer for d in reported}


@pytest.mark.anyio
async def test_a_strangers_revocation_on_a_watched_workload_is_reported(
    relays: RelayCluster,  # noqa: F811
) -> None:
    async with transports(relays.urls, 3) as (primary, standby, stranger):
        workload = unique("stranger")
        reported: list[TransportDrop] = []
        all_reported = anyio.Event()

        def hook(drop: TransportDrop) -> None:
            reported.append(drop)
            if len(reported) >= len(relays.urls):
                all_reported.set()

        standby.set_drop_hook(hook)
        subscription = standby.subscribe(
            Query(kinds={"revocation"}, authors={primary.identity}, workload_ids={workload})
        )
        try:
            forged = LeaseRevocation(
                workload_id=workload,
                primary=primary.identity,
                standbys=(standby.identity,),
                revoked_at=time.time(),
            )
            assert (await stranger.publish(forged, timeout=3.0)).acked
            genuine = attrs.evolve(forged, revoked_at=time.time() + 1)
            assert (await primary.publish(genuine, timeout=3.0)).acked
            with anyio.fail_after(5):
                envelope = await subscription.__anext__()
            assert (envelope.signer, envelope.message) == (primary.identity, genuine)
            with anyio.fail_after(5):
                await all_reported.wait()
        finally:
            await subscription.aclose()
        assert {(d.reason, d.signer, d.workload_id) for d in reported} == {
            (DropReason.UNEXPECTED_AUTHOR, stranger.identity, workload)
        }
        assert {d.relay for d in reported} == set(relays.urls)
        assert standby.counters["dropped_unexpected_author"] == len(reported)


@pytest.mark.anyio
async def test_relays_store_the_reference_shaped_events(relays: RelayCluster) -> None:  # noqa: F811
    async with transports(relays.urls, 2) as (primary, standby):
        workload = unique("shape")
        now = time.time()
        revocation = LeaseRevocation(
            workload_id=workload,
            primary=primary.identity,
            standbys=(standby.identity,),
            reason="handover",
            revoked_at=now,
        )
        assert (await primary.publish(revocation, timeout=2.0)).acked == frozenset(relays.urls)
        (stored,) = await raw_query(
            relays.urls[2], {"kinds": [38385], "authors": [primary.identity]}
        )
        assert ["p", standby.identity] in stored["tags"]
        assert ["d", f"standby:revocation:v1:{primary.npub}:{workload}"] in stored["tags"]
        body = json.loads(stored["content"])
        assert body["primary_provider_npub"] == primary.npub
        assert body["standby_providers"] == [standby.npub]
        assert body["revoked_at"] == math.floor(now)


@pytest.mark.anyio
async def test_a_reference_announcement_is_seen_only_with_the_reference_profile(
    relays: RelayCluster,  # noqa: F811
) -> None:
    async with (
        transports(relays.urls, 1) as (ours,),
        transports(relays.urls, 1, profile=NostrProfile.reference()) as (mixed,),
    ):
        workload = unique("mixed")
        reference_provider = fixed_keys()
        body = {
            "workload_id": workload,
            "new_primary_npub": reference_provider.npub,
            "promoted_at": math.floor(time.time()),
        }
        event = sign_event(
            reference_provider,
            kind=38386,
            tags=[["d", f"paygress:promoted:v1:{workload}"]],
            content=json.dumps(body),
            created_at=body["promoted_at"],
        ).to_json()
        for url in relays.urls:
            accepted, reason = await ours.send_raw(url, event, timeout=3.0)
            assert accepted, reason
        query = Query(kinds={"announcement"}, workload_ids={workload})
        assert (await ours.query(query, timeout=3.0)).envelopes == ()
        (seen,) = (await mixed.query(query, timeout=3.0)).envelopes
        assert seen.signer == reference_provider.public_key
        assert seen.message.new_primary == reference_provider.public_key  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_a_withdrawal_replaces_its_claim_on_a_real_relay(relays: RelayCluster) -> None:  # noqa: F811
    async with transports(relays.urls, 1) as (claimant,):
        workload = unique("withdraw")
        claim = PromotionClaim(
            workload_id=workload,
            epoch=1,
            fencing_token=fencing_token(1, 0),
            claimant=claimant.identity,
            standby_index=0,
            claimed_at=math.floor(time.time()) + 0.5,
        )
        for message in (claim, attrs.evolve(claim, withdrawn=True)):
            assert (await claimant.publish(message, timeout=2.0)).acked == frozenset(relays.urls)
        for url in relays.urls:
            stored = await raw_query(
                url,
                {
                    "kinds": [38387],
                    "authors": [claimant.identity],
                    "#d": [f"standby:claim:v1:{workload}"],
                },
            )
            bodies = [json.loads(e["content"]) for e in stored]
            assert [b["withdrawn"] for b in bodies] == [True], (url, bodies)


@pytest.mark.anyio
async def test_revocations_reach_only_the_standbys_they_address(relays: RelayCluster) -> None:  # noqa: F811
    async with transports(relays.urls, 3) as (primary, named, other):
        workload = unique("addressed")
        subscriptions = [
            t.subscribe(Query(kinds={"revocation"}, authors={primary.identity}))
            for t in (named, other)
        ]
        try:
            revocation = LeaseRevocation(
                workload_id=workload,
                primary=primary.identity,
                standbys=(named.npub,),
                revoked_at=time.time(),
            )
            await primary.publish(revocation, timeout=2.0)
            with anyio.fail_after(5):
                envelope = await subscriptions[0].__anext__()
            assert envelope.message == attrs.evolve(revocation, standbys=(named.identity,))
            assert envelope.signer == primary.identity
            with anyio.move_on_after(0.5):
                got = await subscriptions[1].__anext__()
                pytest.fail(f"a revocation not addressed to this standby arrived: {got!r}")
        finally:
            for subscription in subscriptions:
                await subscription.aclose()


@pytest.mark.anyio
async def test_after_a_rejection_the_transport_reconnects_instead_of_queueing(
    relays: RelayCluster,  # noqa: F811
) -> None:
    async with transports(relays.urls, 1) as (transport,):
        stale = Heartbeat(provider=transport.identity, timestamp=time.time() - 400 * 86_400)
        # The relays refuse it (too old) and then throttle the connection.
        # Long enough to hear the refusal even on a loaded machine.
        result = await transport.publish(stale, timeout=3.0)
        assert result.acked == frozenset()
        fresh = Heartbeat(provider=transport.identity, timestamp=time.time())
        started = anyio.current_time()
        result = await transport.publish(fresh, timeout=1.5)
        assert result.acked == frozenset(relays.urls), result
        assert anyio.current_time() - started < 1.0
        assert transport.counters.get("recycled_connections", 0) >= len(relays.urls)
        # With time to hear it out, the relay's reason is kept for diagnostics.
        older = attrs.evolve(stale, timestamp=stale.timestamp - 1)
        result = await transport.publish(older, timeout=3.5)
        assert result.acked == frozenset()
        assert all("too old" in reason for reason in result.errors.values()), result.errors


# --------------------------------------------------------------------------- a misbehaving relay

Behaviour = Callable[[list[Any], Callable[[Any], Awaitable[None]]], Awaitable[bool]]
"""Given a client message and a send function, answer; return False to hang up."""


@contextlib.asynccontextmanager
async def bad_relay(behaviour: Behaviour) -> AsyncIterator[str]:
    """A websocket server on 127.0.0.1 that speaks just enough NIP-01 to misbehave."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def handle(stream: anyio.abc.SocketStream) -> None:
        connection = wsproto.WSConnection(wsproto.ConnectionType.SERVER)

        async def send(message: Any) -> None:
            text = message if isinstance(message, str) else json.dumps(message)
            await stream.send(connection.send(wsproto.events.TextMessage(data=text)))

        async with stream:
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                while True:
                    connection.receive_data(await stream.receive())
                    for event in connection.events():
                        if isinstance(event, wsproto.events.Request):
                            await stream.send(connection.send(wsproto.events.AcceptConnection()))
                        elif isinstance(event, wsproto.events.TextMessage):
                            if not await behaviour(json.loads(event.data), send):
                                return
                        elif isinstance(event, wsproto.events.CloseConnection):
                            return

    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, handle)
        yield f"ws://127.0.0.1:{port}/"
        group.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_relay_that_hangs_up_mid_query_is_not_counted(relays: RelayCluster) -> None:  # noqa: F811
    sender = fixed_keys()

    async def hang_up_after_one_event(message: list[Any], send: Any) -> bool:
        if message[0] == "REQ":
            event = sign_event(sender, kind=38384, tags=[], content="{}", created_at=1)
            await send(["EVENT", message[1], event.to_json()])
            return False  # hang up before EOSE
        return True

    async with (
        bad_relay(hang_up_after_one_event) as url,
        transports([relays.urls[1], url], 1) as (transport,),
    ):
        started = anyio.current_time()
        result = await transport.query(Query(kinds={"heartbeat"}), timeout=3.0)
        assert anyio.current_time() - started < 2.0  # did not wait for the timeout
        assert result.answered == frozenset({relays.urls[1]})
        assert url in result.errors


@pytest.mark.anyio
async def test_a_silent_relay_times_out_and_oversized_or_garbage_messages_are_dropped() -> None:
    async def silent(message: list[Any], send: Any) -> bool:
        return True

    async def noisy(message: list[Any], send: Any) -> bool:
        if message[0] == "REQ":
            await send("this is not json")
            await send(["NOTICE", "hello"])
            await send(["EVENT", message[1], {"id": "x" * 5000}])  # oversized
            await send(["EVENT", message[1], {"id": "nope"}])  # malformed
            await send(["EOSE", message[1]])
        return True

    async with (
        bad_relay(silent) as quiet_url,
        bad_relay(noisy) as noisy_url,
        transports([quiet_url, noisy_url], 1, max_message_bytes=4096) as (transport,),
    ):
        started = anyio.current_time()
        result = await transport.query(Query(kinds={"heartbeat"}), timeout=0.5)
        assert 0.45 < anyio.current_time() - started < 2.0
        assert result.answered == frozenset({noisy_url})
        assert result.errors[quiet_url] == "timed out"
        assert result.envelopes == ()
        counters = transport.counters
        assert counters["bad_relay_messages"] == 1
        assert counters["notices"] == 1
        assert counters["dropped_oversized"] == 1
        assert counters["dropped_malformed"] == 1
        assert transport.open_requests() == 0


@pytest.mark.anyio
async def test_fm18_a_future_heartbeat_hides_no_genuine_one_on_real_relays(
    relays: RelayCluster,  # noqa: F811
) -> None:
    """Relays replace addressable events by key: a future stamp must not own the key."""
    async with transports(relays.urls, 2) as (primary, reader):
        now = time.time()
        future = Heartbeat(provider=primary.identity, timestamp=now + 20, active_workloads=1)
        await primary.publish(future, timeout=2.0)
        genuine = [now - 2.0, now - 1.0, now]
        for stamp in genuine:
            beat = Heartbeat(provider=primary.identity, timestamp=stamp, active_workloads=1)
            result = await primary.publish(beat, timeout=2.0)
            assert result.acked == frozenset(relays.urls), result.errors
        query = Query(kinds=("heartbeat",), authors=(primary.identity,), until=now + 1.0)
        found = await reader.query(query, timeout=2.0)
    [envelope] = found.envelopes
    assert isinstance(envelope.message, Heartbeat)
    assert envelope.message.timestamp == pytest.approx(genuine[-1], abs=1.0)


def future_heartbeat(keys: NostrKeys, now: float) -> dict[str, Any]:
    """A heartbeat whose body is stamped an hour ahead while its ``created_at`` is now."""
    beat = Heartbeat(provider=keys.public_key, timestamp=now + 3600, active_workloads=1)
    draft = PROFILE.drafts(beat, CODEC)[-1]
    return sign_event(
        keys, kind=draft.kind, tags=draft.tags, content=draft.content, created_at=math.floor(now)
    ).to_json()


@pytest.mark.anyio
async def test_fm18_a_hand_crafted_future_heartbeat_hides_no_genuine_one_on_real_relays(
    relays: RelayCluster,  # noqa: F811
) -> None:
    """Body an hour ahead, ``created_at`` now (relays take it): the genuine beats still count."""
    async with transports(relays.urls, 2) as (primary, reader):
        now = time.time()
        crafted = future_heartbeat(primary.keys, now - 3.0)
        for url in relays.urls:
            assert await primary.send_raw(url, crafted, timeout=2.0) == (True, "")
        genuine = [now - 2.0, now - 1.0, now]
        for stamp in genuine:
            beat = Heartbeat(provider=primary.identity, timestamp=stamp, active_workloads=1)
            result = await primary.publish(beat, timeout=2.0)
            assert result.acked == frozenset(relays.urls), result.errors
        workload = unique("fm18")
        query = Query(
            kinds=("heartbeat", "revocation"),
            authors=(primary.identity,),
            workload_ids=(workload,),
            until=time.time() + 5.0,
        )
        found = await reader.query(query, timeout=2.0)
    beats = [e.message for e in found.envelopes if isinstance(e.message, Heartbeat)]
    assert [b.timestamp for b in beats] == [pytest.approx(genuine[-1], abs=1.0)], beats


@pytest.mark.anyio
async def test_wait_connected_returns_the_relays_that_are_up(
    relays: RelayCluster,  # noqa: F811
) -> None:
    """Entering connects to every relay; ``wait_connected`` returns those ready."""
    async with transports(relays.urls, 1) as (transport,):
        assert isinstance(transport, WaitsConnected)
        assert await transport.wait_connected(timeout=5.0) == frozenset(relays.urls)
        assert transport.connected_relays() == frozenset(relays.urls)
        # Every lane is up, not only the bulk connection: the first query
        # must not pay for its connection's handshake inside its timeout.
        lanes = transport._all_links()
        assert len(lanes) == 3 * len(relays.urls)
        assert all(link.conn is not None for link in lanes), lanes
    await anyio.to_thread.run_sync(lambda: relays.stop(1, kill=True))
    async with transports(relays.urls, 1) as (transport,):
        ready = await transport.wait_connected(timeout=1.0)
    assert ready == frozenset(relays.urls) - {relays.urls[1]}


@pytest.mark.anyio
async def test_fm20_a_relay_that_refuses_a_live_subscription_is_asked_again(
    relays: RelayCluster,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The relay's subscription limit refuses one; once room is made, it is sent again."""
    caplog.set_level("WARNING", logger="standby")
    async with transports(relays.urls[1:2], 2) as (listener, speaker):
        fillers = [listener.subscribe(Query(authors=(fixed_keys().public_key,))) for _ in range(64)]
        wanted = listener.subscribe(Query(kinds=("heartbeat",), authors=(speaker.identity,)))
        try:
            with anyio.move_on_after(5):
                while listener.counters.get("live_subscriptions_refused", 0) == 0:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            assert listener.counters.get("live_subscriptions_refused", 0) >= 1, dict(
                listener.counters
            )
            for filler in fillers[:8]:
                await filler.aclose()
            beat = Heartbeat(provider=speaker.identity, timestamp=time.time(), active_workloads=1)
            with anyio.fail_after(10):
                while True:
                    await speaker.publish(beat, timeout=2.0)
                    with anyio.move_on_after(0.5):
                        envelope = await wanted.__anext__()
                        break
        finally:
            for filler in fillers:
                await filler.aclose()
            await wanted.aclose()
    assert envelope.signer == speaker.identity
    assert listener.counters["live_resubscribes"] >= 1
    assert any("refused live subscription" in r.getMessage() for r in caplog.records)


@pytest.mark.anyio
async def test_fm19_many_queries_at_once_stay_within_the_relay_limits(
    relays: RelayCluster,  # noqa: F811
) -> None:
    """100 concurrent queries through a pool of 8 per connection: none refused, all answered."""
    async with transports(relays.urls, 1) as (reader,):
        results = []

        async def ask(n: int) -> None:
            query = Query(kinds=("claim",), workload_ids=(f"w{n}",))
            results.append(await reader.query(query, timeout=20.0))

        async with anyio.create_task_group() as group:
            for n in range(100):
                group.start_soon(ask, n)
        assert all(r.answered == frozenset(relays.urls) for r in results), [
            r.errors for r in results if r.errors
        ]
        assert reader.counters.get("relay_refusals", 0) == 0
        assert reader.counters.get("notices", 0) == 0
        assert reader.open_requests() == 0


@pytest.mark.anyio
async def test_fm19_a_refused_query_is_asked_again_not_lost() -> None:
    refused: list[str] = []

    async def refuse_first(message: list[Any], send: Any) -> bool:
        if message[0] == "REQ":
            if not refused:
                refused.append(message[1])
                await send(["NOTICE", "rejected: too many subscriptions"])
            else:
                await send(["EOSE", message[1]])
        return True

    async with bad_relay(refuse_first) as url, transports([url], 1) as (transport,):
        result = await transport.query(Query(kinds={"heartbeat"}), timeout=3.0)
        assert result.answered == frozenset({url}), result.errors
        assert transport.counters["relay_refusals"] == 1
        assert transport.open_requests() == 0


def test_a_single_relay_url_string_is_refused() -> None:
    # it iterated as characters: "relay URLs must be unique, got ['w', 's', ':', ...]"
    with pytest.raises(TypeError, match=r"a list of URLs.*pass \['wss://relay.example'\]"):
        NostrTransport("wss://relay.example", fixed_keys())


# =========================================================================== paging


def page_events(times: list[int]) -> list[Any]:
    from standby.adapters.nostr._keys import NostrEvent

    return [
        NostrEvent(
            id=f"{i:064x}", pubkey="a" * 64, created_at=t, kind=1, tags=(), content="", sig=""
        )
        for i, t in enumerate(times)
    ]


def test_a_short_page_ends_the_read_and_a_full_one_asks_until_its_oldest_second() -> None:
    from standby.adapters.nostr._paging import next_page

    asked = {"kinds": [1], "limit": 3}
    assert next_page(asked, page_events([5, 4]), set(), 3) is None
    assert next_page(asked, page_events([9, 7, 8]), set(), 3) == {**asked, "until": 7}


def test_a_full_page_with_nothing_new_is_an_answer_that_cannot_be_completed() -> None:
    from standby.adapters.nostr._paging import PagingStuck, next_page

    page = page_events([7, 7, 7])
    with pytest.raises(PagingStuck, match="more than 3 events at created_at 7"):
        next_page({"kinds": [1], "until": 7}, page, {e.id for e in page}, 3)


def test_many_d_tags_are_split_so_each_filter_fits_in_a_page() -> None:
    from standby.adapters.nostr._paging import CLAIMANTS_PER_KEY, first_pages

    tags = [f"d{i}" for i in range(120)]
    pages = first_pages({"kinds": [30000], "#d": tags}, 100)
    assert [len(p["#d"]) for p in pages] == [100 // CLAIMANTS_PER_KEY] * 12
    assert [t for p in pages for t in p["#d"]] == tags
    assert {p["limit"] for p in pages} == {100}
    assert first_pages({"kinds": [1]}, 100) == [{"kinds": [1], "limit": 100}]


def test_page_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="page_size must be >= 1, got 0"):
        NostrTransport(["ws://127.0.0.1:1/"], fixed_keys(), page_size=0)


#: More events than rust-nostr's LocalRelay answers for one filter (500).
PAGED = 620


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_fm19_a_query_reads_past_a_relay_that_caps_each_answer_at_500(
    any_relays: RelayCluster,  # noqa: F811
) -> None:
    """One claimant's claims for 620 workloads, one second apart, on every relay.

    ``LocalRelay`` answers a filter with 500 events at most, whatever its
    ``limit``: the transport must page back (``limit`` + ``until``) and split
    long ``#d`` lists to read them all, by author and by workload.
    """
    url = any_relays.urls[1]
    async with transports([url], 2) as (claimant, reader):
        now = int(time.time())
        workloads = [unique("paged") for _ in range(PAGED)]
        claims = [
            PromotionClaim(
                workload_id=w,
                epoch=1,
                fencing_token=fencing_token(1, 0),
                claimant=claimant.identity,
                standby_index=0,
                claimed_at=now - i,
            )
            for i, w in enumerate(workloads)
        ]
        acked: list[bool] = []

        async def put(claim: PromotionClaim) -> None:
            acked.append(url in (await claimant.publish(claim, timeout=60.0)).acked)

        async with anyio.create_task_group() as group:
            for claim in claims:
                group.start_soon(put, claim)
        assert acked == [True] * PAGED
        # What the relay itself answers to one filter that asks for them all:
        plain = await raw_query(
            url,
            {"kinds": [claimant.profile.claim_kind], "authors": [claimant.identity], "limit": 5000},
        )
        assert len(plain) == (500 if any_relays.implementation == "rust-local" else PAGED)
        by_author = await reader.query(
            Query(kinds={"claim"}, authors={claimant.identity}), timeout=30.0
        )
        by_workload = await reader.query(
            Query(kinds={"claim"}, workload_ids=set(workloads)), timeout=30.0
        )
    for result in (by_author, by_workload):
        assert result.answered == frozenset({url}), result.errors
        assert sorted(e.message.workload_id for e in result.envelopes) == sorted(workloads)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_fm19_a_relay_rate_limit_is_waited_out_on_the_same_connection(
    tmp_path: Path,
) -> None:
    """``LocalRelay`` with 5 events a minute per connection: the refusals are not dodged.

    The publishes past the limit come back ``rate-limited: slow down``; the
    transport must keep its connection (a new one would start a fresh
    allowance), retry within the timeout and report those relays as refused.
    """
    from standby.testing._relay_process import RelayCluster as Relays
    from standby.testing._relay_process import RelaySettings, running_relays

    cluster = Relays(tmp_path, [RelaySettings(rate_limit=(1000, 5))], implementation="rust-local")
    with running_relays(cluster):
        url = cluster.urls[0]
        async with transports([url], 1) as (claimant,):
            assert await claimant.wait_connected(timeout=5.0) == frozenset({url})
            now = time.time()
            results = [
                await claimant.publish(
                    PromotionClaim(
                        workload_id=unique("limited"),
                        epoch=1,
                        fencing_token=fencing_token(1, 0),
                        claimant=claimant.identity,
                        standby_index=0,
                        claimed_at=now,
                    ),
                    timeout=0.5,
                )
                for _ in range(12)
            ]
            counters = dict(claimant.counters)
    acked = [url in r.acked for r in results]
    refused = [r.errors[url] for r in results if url in r.errors]
    assert acked[:3] == [True] * 3
    assert refused, acked
    assert all("rate-limited" in reason for reason in refused), refused
    assert counters.get("recycled_connections", 0) == 0, counters
    # one connection per lane (urgent, bulk, read), each opened once
    assert counters.get("connects", 0) == 3, counters


async def read_during_bulk(urls: list[str], pacing: Pacing) -> list[str]:
    """Publish 300 claims at once, read while the relays store them: what finished first."""
    finished: list[str] = []
    run = uuid.uuid4().hex[:8]
    async with transports(urls, 1, pacing=pacing) as (transport,):

        async def bulk() -> None:
            async with anyio.create_task_group() as group:
                for n in range(300):
                    claim = PromotionClaim(
                        workload_id=f"bulk-{run}-{n}",
                        epoch=1,
                        fencing_token=fencing_token(1, 0),
                        claimant=transport.identity,
                        standby_index=0,
                        claimed_at=time.time(),
                    )
                    group.start_soon(functools.partial(transport.publish, claim, timeout=60.0))
            finished.append("writes")

        async def read() -> None:
            await anyio.sleep(0.05)  # after the events, on the wire
            query = Query(kinds=("claim",), workload_ids=(f"bulk-{run}-0",))
            result = await transport.query(query, timeout=60.0)
            assert result.answered == frozenset(urls), result.errors
            finished.append("read")

        async with anyio.create_task_group() as group:
            group.start_soon(bulk)
            group.start_soon(read)
        assert transport.open_requests() == 0
    return finished


@pytest.mark.anyio
async def test_fm26_a_read_does_not_wait_behind_the_transports_own_writes(
    relays: RelayCluster,  # noqa: F811
) -> None:
    # nostr-relay handles one connection's messages in order: on the bulk
    # connection a read waits for every event sent before it; on its own
    # connection it answers while they are being stored.
    assert await read_during_bulk(relays.urls, Pacing(paced=False)) == ["read", "writes"]
    assert await read_during_bulk(relays.urls, Pacing.unpaced()) == ["writes", "read"]
