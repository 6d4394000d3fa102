"""Nostr keys, identities and signed events (NIP-01, NIP-19).

Private to :mod:`standby.adapters.nostr`, which re-exports the public names.
The elliptic-curve work (BIP-340 Schnorr) is done by ``coincurve`` and the
bech32 encoding by ``bech32``; this module only arranges their inputs.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs
import bech32
from coincurve import PrivateKey, PublicKeyXOnly

from ...core._errors import IdentityError

__all__ = [
    "EventRejected",
    "NostrEvent",
    "NostrKeys",
    "canonical_identity",
    "event_id",
    "npub_of",
    "sign_event",
    "verify_event",
]

_HEX64: Final = re.compile(r"[0-9a-f]{64}")
_HEX128: Final = re.compile(r"[0-9a-f]{128}")


# --------------------------------------------------------------------------- identities


def _bech32_payload(text: str, hrp: str) -> bytes | None:
    """The 32-byte payload of a bech32 string with human-readable part ``hrp``."""
    found_hrp, data = bech32.bech32_decode(text)
    if found_hrp != hrp or data is None:
        return None
    payload = bech32.convertbits(data, 5, 8, False)
    if payload is None or len(payload) != 32:
        return None
    return bytes(payload)


def _bech32_encode(hrp: str, payload: bytes) -> str:
    data = bech32.convertbits(payload, 8, 5, True)
    assert data is not None
    encoded = bech32.bech32_encode(hrp, data)
    assert encoded is not None
    return encoded


def _valid_point(raw: bytes) -> bool:
    try:
        PublicKeyXOnly(raw)
    except (ValueError, TypeError):
        return False
    return True


def canonical_identity(identity: str) -> str:
    """The canonical form of a Nostr identity: the public key as lowercase hex.

    Accepts a 64-character hex public key (any case), an ``npub1...`` bech32
    string (NIP-19, either case) and either one behind a ``nostr:`` prefix
    (NIP-21); surrounding blanks are ignored. Anything else, including a key
    that is not a point of the curve, raises :class:`~standby.IdentityError`.
    ``canonical_identity("npub1...") == canonical_identity(hex)`` for the
    same key, which is what keeps failure mode 2 of ``docs/failure-modes.md`` away.
    """
    if not isinstance(identity, str):
        raise IdentityError(f"a Nostr identity must be a string, got {type(identity).__name__}")
    text = identity.strip()
    if text[:6].lower() == "nostr:":
        text = text[6:]
    lowered = text.lower()
    if _HEX64.fullmatch(lowered):
        raw = bytes.fromhex(lowered)
    elif lowered.startswith("npub1"):
        payload = _bech32_payload(text, "npub")
        if payload is None:
            raise IdentityError(
                f"malformed Nostr identity {identity!r}: not a valid npub (bad bech32 checksum, "
                "mixed case or wrong length)"
            )
        raw = payload
    else:
        raise IdentityError(
            f"malformed Nostr identity {identity!r}: expected an npub1... string or a "
            "64-character hex public key"
        )
    if not _valid_point(raw):
        raise IdentityError(f"malformed Nostr identity {identity!r}: not a public key on secp256k1")
    return raw.hex()


def npub_of(identity: str) -> str:
    """The ``npub1...`` (NIP-19) form of an identity given as npub or hex."""
    return _bech32_encode("npub", bytes.fromhex(canonical_identity(identity)))


# --------------------------------------------------------------------------- keys


class NostrKeys:
    """A Nostr key pair: signs events as one identity.

    Build one with :meth:`generate` or :meth:`from_secret` (an ``nsec1...``
    string or 64 hex characters). The secret never appears in ``repr``.
    """

    __slots__ = ("_private", "_public")

    def __init__(self, secret: bytes) -> None:
        if not isinstance(secret, bytes) or len(secret) != 32:
            raise IdentityError("a Nostr secret key is 32 bytes")
        try:
            self._private = PrivateKey(secret)
        except ValueError as exc:
            raise IdentityError(f"invalid Nostr secret key: {exc}") from None
        self._public = self._private.public_key_xonly.format().hex()

    @classmethod
    def generate(cls) -> NostrKeys:
        """A fresh random key pair."""
        return cls(PrivateKey().secret)

    @classmethod
    def from_secret(cls, secret: str) -> NostrKeys:
        """Load a secret key given as ``nsec1...`` (NIP-19) or as 64 hex characters.

        Raises :class:`~standby.IdentityError` for anything else (the message
        never repeats the secret).
        """
        if not isinstance(secret, str):
            raise IdentityError(f"a Nostr secret key must be a string, got {type(secret).__name__}")
        text = secret.strip()
        if _HEX64.fullmatch(text.lower()):
            return cls(bytes.fromhex(text.lower()))
        if text.lower().startswith("nsec1"):
            payload = _bech32_payload(text, "nsec")
            if payload is not None:
                return cls(payload)
            raise IdentityError("malformed nsec: bad bech32 checksum, mixed case or wrong length")
        raise IdentityError("a Nostr secret key must be an nsec1... string or 64 hex characters")

    def __repr__(self) -> str:
        return f"NostrKeys(public_key={self._public!r})"

    @property
    def public_key(self) -> str:
        """The public key, lowercase hex: this identity in canonical form."""
        return self._public

    @property
    def npub(self) -> str:
        """The public key as ``npub1...``."""
        return _bech32_encode("npub", bytes.fromhex(self._public))

    @property
    def nsec(self) -> str:
        """The secret key as ``nsec1...`` (handle with care)."""
        return _bech32_encode("nsec", self._private.secret)

    @property
    def secret_hex(self) -> str:
        """The secret key as 64 hex characters (handle with care)."""
        return self._private.secret.hex()

    def sign(self, digest: bytes) -> bytes:
        """A BIP-340 Schnorr signature of a 32-byte ``digest``."""
        return self._private.sign_schnorr(digest)


# --------------------------------------------------------------------------- events


def _serialize(
    pubkey: str, created_at: int, kind: int, tags: Sequence[Sequence[str]], content: str
) -> bytes:
    # NIP-01: the id is the sha256 of this array as compact UTF-8 JSON.
    text = json.dumps(
        [0, pubkey, created_at, kind, [list(tag) for tag in tags], content],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return text.encode("utf-8")


def event_id(
    pubkey: str, created_at: int, kind: int, tags: Sequence[Sequence[str]], content: str
) -> str:
    """The NIP-01 id of an event: sha256 of its canonical serialization, in hex."""
    return hashlib.sha256(_serialize(pubkey, created_at, kind, tags, content)).hexdigest()


@attrs.frozen
class NostrEvent:
    """A Nostr event (NIP-01). Instances from :func:`verify_event` are checked."""

    id: str
    pubkey: str
    created_at: int
    kind: int
    tags: tuple[tuple[str, ...], ...]
    content: str
    sig: str

    def to_json(self) -> dict[str, Any]:
        """The event as the JSON object relays exchange."""
        return {
            "id": self.id,
            "pubkey": self.pubkey,
            "created_at": self.created_at,
            "kind": self.kind,
            "tags": [list(tag) for tag in self.tags],
            "content": self.content,
            "sig": self.sig,
        }

    def tag(self, name: str) -> str | None:
        """The first value of the first tag called ``name``."""
        for tag in self.tags:
            if len(tag) >= 2 and tag[0] == name:
                return tag[1]
        return None

    def tag_values(self, name: str) -> list[str]:
        """The first value of every tag called ``name``, in order."""
        return [tag[1] for tag in self.tags if len(tag) >= 2 and tag[0] == name]


def sign_event(
    keys: NostrKeys,
    *,
    kind: int,
    tags: Sequence[Sequence[str]],
    content: str,
    created_at: int,
) -> NostrEvent:
    """A new event signed by ``keys``."""
    frozen_tags = tuple(tuple(tag) for tag in tags)
    digest = hashlib.sha256(
        _serialize(keys.public_key, created_at, kind, frozen_tags, content)
    ).digest()
    return NostrEvent(
        id=digest.hex(),
        pubkey=keys.public_key,
        created_at=created_at,
        kind=kind,
        tags=frozen_tags,
        content=content,
        sig=keys.sign(digest).hex(),
    )


class EventRejected(ValueError):
    """An incoming event failed verification; ``reason`` is a short counter name."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def verify_event(obj: object) -> NostrEvent:
    """Check an event received from a relay and return it as a :class:`NostrEvent`.

    Checks the shape of every field, recomputes the id from the content and
    verifies the BIP-340 signature of the id under ``pubkey``. Raises
    :class:`EventRejected` (``reason`` is ``"malformed"``, ``"bad_id"`` or
    ``"bad_signature"``) otherwise.
    """
    if not isinstance(obj, Mapping):
        raise EventRejected("malformed", "an event must be a JSON object")
    pubkey, eid, sig = obj.get("pubkey"), obj.get("id"), obj.get("sig")
    created_at, kind = obj.get("created_at"), obj.get("kind")
    tags, content = obj.get("tags"), obj.get("content")
    if not (isinstance(pubkey, str) and _HEX64.fullmatch(pubkey)):
        raise EventRejected("malformed", "pubkey is not 64 lowercase hex characters")
    if not (isinstance(eid, str) and _HEX64.fullmatch(eid)):
        raise EventRejected("malformed", "id is not 64 lowercase hex characters")
    if not (isinstance(sig, str) and _HEX128.fullmatch(sig)):
        raise EventRejected("malformed", "sig is not 128 lowercase hex characters")
    if not (_is_int(created_at) and _is_int(kind)):
        raise EventRejected("malformed", "created_at and kind must be integers")
    if not isinstance(content, str):
        raise EventRejected("malformed", "content must be a string")
    if not isinstance(tags, list) or not all(
        isinstance(tag, list) and all(isinstance(item, str) for item in tag) for tag in tags
    ):
        raise EventRejected("malformed", "tags must be an array of arrays of strings")
    assert isinstance(created_at, int)
    assert isinstance(kind, int)
    frozen_tags = tuple(tuple(tag) for tag in tags)
    digest = hashlib.sha256(_serialize(pubkey, created_at, kind, frozen_tags, content)).digest()
    if digest.hex() != eid:
        raise EventRejected("bad_id", f"id {eid[:16]}... does not match the event's content")
    try:
        valid = PublicKeyXOnly(bytes.fromhex(pubkey)).verify(bytes.fromhex(sig), digest)
    except (ValueError, TypeError):
        valid = False
    if not valid:
        raise EventRejected("bad_signature", f"signature of {eid[:16]}... does not verify")
    return NostrEvent(
        id=eid,
        pubkey=pubkey,
        created_at=created_at,
        kind=kind,
        tags=frozen_tags,
        content=content,
        sig=sig,
    )
