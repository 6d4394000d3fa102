"""The events of the Nostr transport: signing and offering them, reporting drops.

Private to :mod:`standby.adapters.nostr`. :func:`sign_message` turns one
message into its signed events (the profile drafts them), giving each
version of an addressable event a ``created_at`` that orders it against
the versions sent before; :func:`offer` sends them on a relay's connection
and waits for its ``OK``. :func:`rejected_drop` and
:func:`unexpected_author_drop` describe an incoming event that was dropped.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Final

from ...core._effects import DropReason
from ...core._errors import IdentityError, TransportError, WireError
from ...core._models import Heartbeat, Message
from ...protocols._contracts import TransportDrop, is_newer, message_kind
from ...wire import Codec
from .._transport_base import keep_recent
from ._keys import EventRejected, NostrEvent, NostrKeys, sign_event
from ._link import Connection, RelayLink, RelayUnavailable
from ._profile import NostrProfile

__all__ = ["Versions", "offer", "rejected_drop", "sign_message", "unexpected_author_drop"]

#: EventRejected reason -> what a dropped-event report says.
_DROP_REASONS: Final[Mapping[str, DropReason]] = {
    "bad_signature": DropReason.BAD_SIGNATURE,
    "bad_id": DropReason.BAD_SIGNATURE,
}

#: Remembered (kind, d) -> last version published, to order ``created_at``.
_VERSIONS_KEPT: Final = 4096

Versions = OrderedDict[tuple[int, str], tuple[Message, int]]
"""The last version published of each addressable event, with its ``created_at``."""


def sign_message(
    message: Message, *, keys: NostrKeys, profile: NostrProfile, codec: Codec, versions: Versions
) -> list[NostrEvent]:
    """The signed events that publish ``message``; ``TransportError`` when it cannot be."""
    try:
        message_kind(message)
        drafts = profile.drafts(message, codec)
    except (TypeError, IdentityError, WireError) as exc:
        raise TransportError(f"cannot publish {message!r:.100}: {exc}") from exc
    natural = profile.natural_created_at(message)
    events: list[NostrEvent] = []
    for draft in drafts:
        size = len(draft.content.encode("utf-8"))
        if size > codec.max_size:
            raise TransportError(
                f"cannot publish {message!r:.80}: body of {size} bytes exceeds {codec.max_size}"
            )
        created_at = natural
        if draft.key is not None:
            created_at = _created_at(versions, draft.key, message, natural)
        events.append(
            sign_event(
                keys,
                kind=draft.kind,
                tags=draft.tags,
                content=draft.content,
                created_at=created_at,
            )
        )
    return events


def _created_at(versions: Versions, key: tuple[int, str], message: Message, natural: int) -> int:
    """``created_at`` for a version of an addressable event.

    Relays keep, per (kind, pubkey, d), the event with the greater
    ``created_at`` and break ties arbitrarily; this makes a newer version
    (by :func:`~standby.protocols.newest_per_key`'s rule) always carry a
    strictly greater ``created_at`` than the last one sent, an older one
    a strictly smaller one, and a repeat the very same (so it is the same
    event).
    """
    known = versions.get(key)
    if known is None:
        created_at = natural
    else:
        previous, previous_at = known
        if previous == message:
            return previous_at
        if not is_newer(message, previous):
            return min(natural, previous_at - 1)
        created_at = max(natural, previous_at + 1)
    keep_recent(versions, key, (message, created_at), _VERSIONS_KEPT)
    return created_at


async def offer(
    link: RelayLink,
    events: Sequence[NostrEvent],
    results: dict[str, str | None],
    used: dict[str, Connection],
) -> None:
    """Send ``events`` to ``link``'s relay; ``results[url]`` says how it answered the last.

    ``None`` means stored; otherwise the relay's reason (or why it could not
    be asked). The connection used is put in ``used`` before any wait, so a
    caller that gives up can recycle it.
    """
    try:
        conn = await link.connection()
    except RelayUnavailable as exc:
        results[link.url] = f"unreachable: {exc}"
        return
    used[link.url] = conn
    waiters = [(event.id, conn.expect_ok(event.id)) for event in events]
    try:
        for event in events:
            conn.send(["EVENT", event.to_json()])
        stored = waiters[-1][1]
        await stored.done.wait()
        if stored.accepted:
            results[link.url] = None
        else:
            # Prefer the relay's own words (it may have refused an
            # earlier event of the message and dropped the connection).
            said = [w.reason for _id, w in waiters if w.answered and not w.accepted]
            results[link.url] = (said[-1] if said else stored.reason) or "rejected"
    except RelayUnavailable as exc:
        results[link.url] = f"unreachable: {exc}"
    finally:
        for event_id, waiter in waiters:
            if not waiter.done.is_set():
                conn.forget_ok(event_id)


def rejected_drop(relay: str, exc: EventRejected, raw: object) -> TransportDrop:
    """The report of an event from ``relay`` that failed verification."""
    pubkey = raw.get("pubkey") if isinstance(raw, Mapping) else None
    return TransportDrop(
        _DROP_REASONS.get(exc.reason, DropReason.MALFORMED),
        relay,
        pubkey if isinstance(pubkey, str) else None,
        str(exc),
    )


def unexpected_author_drop(relay: str, event: NostrEvent, message: Message) -> TransportDrop:
    """The report of a valid event from ``relay`` signed by an author the query did not name."""
    workload = None if isinstance(message, Heartbeat) else message.workload_id
    return TransportDrop(
        DropReason.UNEXPECTED_AUTHOR,
        relay,
        event.pubkey,
        f"{message_kind(message)} event {event.id[:16]}... signed by an unexpected author",
        workload,
    )
