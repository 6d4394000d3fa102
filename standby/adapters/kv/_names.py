"""What the key-value transports (etcd, Redis) share: names, fields, decoding.

Private to :mod:`standby.adapters.etcd` and :mod:`standby.adapters.redis`.
Both store one value per addressable key (see
:func:`~standby.protocols.addressable_key`) in an area that only the
signer's own store account may write, so the signer of a value is read from
*where* it is stored, never from its body.

A value's *field* names its addressable key inside the signer's area:
``m/heartbeat`` for heartbeats, ``m/<kind>/<workload>`` for the others (the
workload id percent-encoded, so it never contains a separator). A claim's
*proof* (``h/<workload>``) lives in the claimant's area too: a claim held
in the shared compare-and-set key counts only while its claimant's proof
equals it, so nobody can make a claim look like someone else's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, MutableMapping
from typing import Final
from urllib.parse import quote, unquote

import attrs

from ...core._errors import IdentityError, WireError
from ...core._models import Envelope, Heartbeat, Message, PromotionClaim
from ...protocols._contracts import Query, addressable_key, message_kind
from ...wire import Codec

__all__ = [
    "ABSENT",
    "MESSAGE_FIELD_PREFIX",
    "PROOF_FIELD_PREFIX",
    "Slot",
    "canonical_account",
    "claim_matches",
    "decode_claim",
    "decode_stored",
    "exact_account",
    "field_of",
    "proof_field",
    "quote_workload",
]

_ACCOUNT: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")

#: Fields of messages start with this; proofs of claims with :data:`PROOF_FIELD_PREFIX`.
MESSAGE_FIELD_PREFIX: Final = "m/"
PROOF_FIELD_PREFIX: Final = "h/"


@attrs.frozen
class Slot:
    """What one stored key (or hash field) held when read.

    ``value`` is ``None`` when it was absent; ``revision`` is the version the
    store gave it (etcd's ``mod_revision``; ``0`` when absent or untracked).
    """

    value: bytes | None
    revision: int = 0


#: A key read as absent (also the first guess before any read).
ABSENT: Final = Slot(None)


def canonical_account(identity: str, *, scheme: str) -> str:
    """Canonical form of a store account name used as an identity.

    Case and surrounding blanks do not matter and an optional ``<scheme>:``
    prefix (``etcd:``, ``redis:``) is dropped. What is left must be 1-64
    characters of ``a-z 0-9 . _ -`` starting with a letter or digit (so it
    is safe inside keys and glob patterns); anything else raises
    :class:`~standby.IdentityError`. Store accounts must be created with
    their canonical (lowercase) names.
    """
    if not isinstance(identity, str):
        raise IdentityError(f"an identity must be a string, got {type(identity).__name__}")
    text = identity.strip().lower().removeprefix(f"{scheme}:")
    if not _ACCOUNT.fullmatch(text):
        raise IdentityError(
            f"malformed identity {identity!r}: expected a {scheme} account name of 1-64 "
            "characters of a-z, 0-9, '.', '_', '-'"
        )
    return text


def exact_account(text: str, *, scheme: str) -> str | None:
    """``text`` when it is a canonical account name already, else ``None``.

    A signer read from where a value is stored must be spelled exactly as
    its account: any other spelling is not that account's area.
    """
    try:
        return text if canonical_account(text, scheme=scheme) == text else None
    except IdentityError:
        return None


def quote_workload(workload_id: str) -> str:
    """``workload_id`` with every character that is not a letter, digit or ``-._~`` encoded."""
    return quote(workload_id, safe="")


def field_of(message: Message) -> str:
    """The field that holds ``message``'s addressable key inside its signer's area."""
    kind = message_kind(message)
    if isinstance(message, Heartbeat):
        return f"{MESSAGE_FIELD_PREFIX}{kind}"
    return f"{MESSAGE_FIELD_PREFIX}{kind}/{quote_workload(message.workload_id)}"


def proof_field(workload_id: str) -> str:
    """The field of the claimant's proof for ``workload_id``'s compare-and-set key."""
    return f"{PROOF_FIELD_PREFIX}{quote_workload(workload_id)}"


def _expected_key(signer: str, field: str) -> tuple[str, ...] | None:
    if not field.startswith(MESSAGE_FIELD_PREFIX):
        return None
    parts = field[len(MESSAGE_FIELD_PREFIX) :].split("/")
    if len(parts) == 1:
        return (parts[0], signer)
    if len(parts) == 2:
        return (parts[0], signer, unquote(parts[1]))
    return None


def decode_stored(
    codec: Codec,
    *,
    signer: str,
    field: str,
    data: bytes,
    relay: str,
    received_at: float,
    query: Query | None,
    counters: MutableMapping[str, int],
) -> Envelope[Message] | None:
    """The envelope of a stored value, or ``None`` (counted) when it must be dropped.

    The value must decode, be a relay message, and sit in the field of its
    own addressable key (a value stored under another key is dropped as
    ``dropped_misplaced``); then it must match ``query`` (when given).
    """
    expected = _expected_key(signer, field)
    if expected is None:
        _count(counters, "dropped_misplaced")
        return None
    try:
        message = codec.decode(expected[0], data)
        kind = message_kind(message)  # type: ignore[arg-type]
    except (WireError, TypeError):
        _count(counters, "dropped_malformed")
        return None
    assert kind == expected[0]
    if addressable_key(signer, message) != expected:  # type: ignore[arg-type]
        _count(counters, "dropped_misplaced")
        return None
    if query is not None and not query.matches(signer, message):  # type: ignore[arg-type]
        return None
    return Envelope(message, signer, relay, received_at)  # type: ignore[arg-type]


def decode_claim(codec: Codec, data: bytes | None) -> PromotionClaim | None:
    """The claim stored in a compare-and-set key; ``None`` when absent or unreadable."""
    if not data:
        return None
    try:
        claim = codec.decode("claim", data)
    except WireError:
        return None
    return claim if isinstance(claim, PromotionClaim) else None


def claim_matches(held: PromotionClaim, claim: PromotionClaim) -> bool:
    """Whether ``held`` is ``claim``'s epoch held by ``claim``'s claimant."""
    return held.epoch == claim.epoch and held.claimant == claim.claimant


def _count(counters: MutableMapping[str, int], name: str) -> None:
    counters[name] = counters.get(name, 0) + 1


def counter(counters: MutableMapping[str, int]) -> Callable[[str], None]:
    """A function that adds one to ``counters[name]``."""
    return lambda name: _count(counters, name)
