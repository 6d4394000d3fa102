"""What every transport agrees on about relay messages (see :mod:`standby.protocols`).

The kind and author timestamp of a message, the key under which a newer
version replaces an older one and which version is the newest, the
compare-and-set rule for claims, and the values a transport is asked and
answers with (:class:`Query`, :class:`PublishResult`, :class:`QueryResult`,
:class:`ClaimOutcome`). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Final, Literal, TypeAlias, cast

import attrs

from ..wire import KINDS
from ._models import (
    Envelope,
    Heartbeat,
    LeaseRevocation,
    Message,
    PromotionAnnouncement,
    PromotionClaim,
)

__all__ = [
    "MESSAGE_KINDS",
    "ClaimOutcome",
    "MessageKind",
    "PublishResult",
    "Query",
    "QueryResult",
    "addressable_key",
    "catch_up_read",
    "claim_wins",
    "claims_read",
    "followed_read",
    "heartbeats_read",
    "is_newer",
    "message_kind",
    "message_timestamp",
    "newest_per_key",
    "takeover_epoch",
    "unexpected_author",
]

MessageKind: TypeAlias = Literal["heartbeat", "revocation", "claim", "announcement"]
"""Wire name of a message kind (the names :mod:`standby.wire` uses)."""

# The relay messages and their names, taken from the wire codec (one source).
_WIRE_KINDS: Final[Mapping[type, MessageKind]] = {
    cls: cast("MessageKind", name) for name, cls in KINDS.items() if name != "slot"
}

#: Every message kind a relay carries.
MESSAGE_KINDS: Final[frozenset[str]] = frozenset(
    {"heartbeat", "revocation", "claim", "announcement"}
)


# --------------------------------------------------------------------------
# Helpers shared by every transport
# --------------------------------------------------------------------------


def message_kind(message: Message) -> MessageKind:
    """The wire name of ``message``'s kind; :class:`TypeError` for anything else.

    The names are :mod:`standby.wire`'s; a slot is a wire kind but not a
    relay message.
    """
    kind = _KIND_OF_TYPE.get(type(message))
    if kind is not None:
        return kind
    for cls, kind in _WIRE_KINDS.items():
        if isinstance(message, cls):
            _KIND_OF_TYPE[type(message)] = kind
            return kind
    raise TypeError(f"not a relay message: {message!r:.80}")


#: What :func:`message_kind` found for each type it saw (the first match of the loop).
_KIND_OF_TYPE: dict[type, MessageKind] = {}


def message_timestamp(message: Message) -> float:
    """The author's timestamp of ``message`` (what "newest" is judged by)."""
    if isinstance(message, Heartbeat):
        return message.timestamp
    if isinstance(message, LeaseRevocation):
        return message.revoked_at
    if isinstance(message, PromotionClaim):
        return message.claimed_at
    if isinstance(message, PromotionAnnouncement):
        return message.promoted_at
    raise TypeError(f"not a relay message: {message!r:.80}")


def takeover_epoch(message: Message) -> int | None:
    """The epoch a claim or announcement takes over (``None``: it takes nothing over).

    A withdrawn claim takes nothing over. An announcement without an epoch
    (from a peer that predates epochs) still means a takeover, of epoch 1 at
    least.
    """
    if isinstance(message, PromotionClaim):
        return None if message.withdrawn else message.epoch
    if isinstance(message, PromotionAnnouncement):
        return 1 if message.epoch is None else message.epoch
    return None


def addressable_key(signer: str, message: Message) -> tuple[str, ...]:
    """The key under which a newer message replaces an older one.

    Heartbeats are addressable per signer; revocations, claims and
    announcements per signer and workload.
    """
    kind = message_kind(message)
    if isinstance(message, Heartbeat):
        return (kind, signer)
    return (kind, signer, message.workload_id)


class _Text:
    """A message ordered by its ``repr``, written only when a comparison needs it.

    Versions of one key nearly always differ in timestamp, and a relay's
    copies of one version are the same message: the text decides only the
    rare true ties, so most comparisons never pay for a ``repr``.
    """

    __slots__ = ("_message", "_text")

    def __init__(self, message: Message) -> None:
        self._message = message
        self._text: str | None = None

    def text(self) -> str:
        if self._text is None:
            self._text = repr(self._message)
        return self._text

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Text):
            return NotImplemented
        return self._message is other._message or self.text() == other.text()

    def __hash__(self) -> int:
        return hash(self.text())

    def __lt__(self, other: _Text) -> bool:
        return self._message is not other._message and self.text() < other.text()

    def __gt__(self, other: _Text) -> bool:
        return self._message is not other._message and self.text() > other.text()


def _version_rank(message: Message) -> tuple[float, int, _Text]:
    # Newest timestamp first; on a tie a withdrawn claim beats the claim it
    # withdraws (a withdrawal may carry the claim's own timestamp), and then
    # the text of the message decides, so every reader picks the same one.
    withdrawn = 1 if isinstance(message, PromotionClaim) and message.withdrawn else 0
    return (message_timestamp(message), withdrawn, _Text(message))


def newest_per_key(
    envelopes: Iterable[Envelope[Message]], *, not_after: float | None = None
) -> list[Envelope[Message]]:
    """Keep only the newest version of each addressable message.

    Relays are not trusted to replace addressable messages: one may hold an
    older version, or several. "Newest" is the greatest author timestamp; on a
    tie a withdrawn claim wins, then the greater ``repr`` (a deterministic
    rule, so every reader agrees). Order of the result: oldest first.

    With ``not_after`` (a reader passes ``now + max_clock_skew``), a version
    stamped later than that is future-dated: it never wins over a version
    that is not, so one heartbeat from a clock that jumped ahead cannot hide
    the genuine ones after it (failure mode 18). It is kept only when no
    genuine version of its key exists, so the reader can still report it.
    """
    best: dict[tuple[str, ...], tuple[tuple[int, float, int, _Text], Envelope[Message]]] = {}
    for envelope in envelopes:
        key = addressable_key(envelope.signer, envelope.message)
        version = _version_rank(envelope.message)
        genuine = 0 if not_after is not None and version[0] > not_after else 1
        rank = (genuine, *version)
        known = best.get(key)
        if known is None or rank > known[0]:
            best[key] = (rank, envelope)
    return [envelope for _rank, envelope in sorted(best.values(), key=lambda item: item[0][1:])]


def is_newer(message: Message, than: Message) -> bool:
    """Whether ``message`` replaces ``than`` under :func:`newest_per_key`'s rule."""
    return _version_rank(message) > _version_rank(than)


def claim_wins(claim: PromotionClaim, held: PromotionClaim | None) -> bool:
    """Whether ``claim`` may take its epoch from ``held`` (the compare-and-set rule).

    The one rule of :meth:`AtomicClaims.compare_and_set_claim`: ``claim``
    wins when no live claim holds its epoch or a later one (``held`` is
    ``None``, withdrawn, or for an earlier epoch), or when ``held`` is the
    same claimant's claim for the same epoch (a retry after a lost answer
    wins again). Every transport with atomic claims decides with this
    function and makes only the compare-and-swap itself atomic.
    """
    if held is None or held.withdrawn or claim.epoch > held.epoch:
        return True
    return claim.epoch == held.epoch and held.claimant == claim.claimant


# --------------------------------------------------------------------------
# Values exchanged with a transport
# --------------------------------------------------------------------------


def _kinds(values: Iterable[str]) -> frozenset[str]:
    kinds = frozenset(values)
    unknown = kinds - MESSAGE_KINDS
    if unknown:
        raise ValueError(f"unknown message kinds {sorted(unknown)}; known: {sorted(MESSAGE_KINDS)}")
    return kinds


def _optional_set(values: Iterable[str] | None) -> frozenset[str] | None:
    return None if values is None else frozenset(values)


def _frozen(values: Iterable[str]) -> frozenset[str]:
    return frozenset(values)


def _envelopes(values: Iterable[Envelope[Message]]) -> tuple[Envelope[Message], ...]:
    return tuple(values)


def _errors(values: Mapping[str, str] | Iterable[tuple[str, str]]) -> Mapping[str, str]:
    return MappingProxyType(dict(values))


@attrs.frozen
class Query:
    """What to read from the relays (or to subscribe to).

    A message matches when its kind is in ``kinds``, its signer is in
    ``authors`` (``None``: anyone), its workload is in ``workload_ids``
    (``None``: any; heartbeats carry no workload and are not filtered by it)
    and its author timestamp is at least ``since`` and at most ``until``
    (``None``: no bound). The node sets ``until`` to ``now +
    max_clock_skew`` on its reads, so future-dated versions never mask
    genuine ones (failure mode 18).
    """

    kinds: frozenset[str] = attrs.field(default=MESSAGE_KINDS, converter=_kinds)
    authors: frozenset[str] | None = attrs.field(default=None, converter=_optional_set)
    workload_ids: frozenset[str] | None = attrs.field(default=None, converter=_optional_set)
    since: float | None = None
    until: float | None = None

    def matches(self, signer: str, message: Message) -> bool:
        """Whether a message signed by ``signer`` matches this query."""
        # Asked of every message a relay holds or offers: the kind is read from
        # message_kind's table of known types first, saving the call.
        kind = _KIND_OF_TYPE.get(type(message)) or message_kind(message)
        if kind not in self.kinds:
            return False
        if self.authors is not None and signer not in self.authors:
            return False
        if (
            self.workload_ids is not None
            and not isinstance(message, Heartbeat)
            and message.workload_id not in self.workload_ids
        ):
            return False
        stamp = message_timestamp(message)
        if self.until is not None and stamp > self.until:
            return False
        return self.since is None or stamp >= self.since


def unexpected_author(query: Query, signer: str, message: Message) -> bool:
    """Whether a subscription for ``query`` drops ``message`` for its author.

    True when ``signer`` is not one of the query's authors, everything else
    about the message matches, and it is a revocation (live revocations are
    asked for from anyone: those addressed to the subscriber, a bounded set
    whatever the slot count) or a claim or announcement of a workload the
    query names: someone outside the expected authors speaking about a
    watched workload is a forgery attempt. Subscriptions drop these
    themselves, so they can report them (:class:`ReportsDrops`); heartbeats
    are filtered by author at the relay.
    """
    if query.authors is None or isinstance(message, Heartbeat) or signer in query.authors:
        return False
    if query.workload_ids is None and not isinstance(message, LeaseRevocation):
        return False
    return attrs.evolve(query, authors=None).matches(signer, message)


@attrs.frozen
class PublishResult:
    """Outcome of :meth:`RelayTransport.publish`.

    ``acked`` names the relays that acknowledged storing the message;
    ``errors`` maps each relay that did not to a short reason ("down",
    "timed out", ...).
    """

    acked: frozenset[str] = attrs.field(converter=_frozen)
    errors: Mapping[str, str] = attrs.field(factory=dict, converter=_errors, eq=False)

    @property
    def never_sent(self) -> bool:
        """Whether no relay can hold the message: none acknowledged and none was sent it.

        A paced transport gives the reason :data:`NOT_SENT` (with details
        after it) for a relay it never sent the message to (its caller's
        timeout ended while it waited for room), so a withdrawal of it need
        not be published.
        """
        return (
            not self.acked
            and bool(self.errors)
            and all(reason.startswith(NOT_SENT) for reason in self.errors.values())
        )


#: The start of a publish error for a relay the message was never sent to.
NOT_SENT: Final = "not sent"


@attrs.frozen
class QueryResult:
    """Outcome of :meth:`RelayTransport.query`.

    ``envelopes`` holds the matching messages, already reduced to the newest
    version per addressable key (see :func:`newest_per_key`); ``answered``
    names the relays that answered in time (an answer with no message still
    counts: it is evidence of absence); ``errors`` gives a reason for each
    relay that did not answer.
    """

    envelopes: tuple[Envelope[Message], ...] = attrs.field(converter=_envelopes)
    answered: frozenset[str] = attrs.field(converter=_frozen)
    errors: Mapping[str, str] = attrs.field(factory=dict, converter=_errors, eq=False)


@attrs.frozen
class ClaimOutcome:
    """Outcome of :meth:`AtomicClaims.compare_and_set_claim`.

    ``won`` tells whether the claim now holds its epoch; when it does not,
    ``holder`` is the claim that does (``None`` when unknown).
    """

    won: bool
    holder: PromotionClaim | None = None


# --------------------------------------------------------------------------
# The node's reads (the explorer sends the same)
# --------------------------------------------------------------------------


def heartbeats_read(
    primary: str, workload_ids: Iterable[str], now: float, max_clock_skew: float
) -> Query:
    """A standby's read of a primary's silence: its heartbeats and revocations.

    Bounded by ``now + max_clock_skew``, as every read of the election and
    of the step-down watch, so a future-dated version never masks the
    genuine ones (failure mode 18).
    """
    return Query(
        kinds=("heartbeat", "revocation"),
        authors=(primary,),
        workload_ids=workload_ids,
        until=now + max_clock_skew,
    )


def claims_read(
    workload_ids: Iterable[str],
    now: float,
    max_clock_skew: float,
    authors: Iterable[str] | None = None,
) -> Query:
    """The claims and announcements of some workloads: a standby's pre-read and settle
    re-read, and a primary's watch for a later epoch of its own (bounded as
    :func:`heartbeats_read`). ``authors``: only those signers' (``None``: anyone's)."""
    return Query(
        kinds=("claim", "announcement"),
        authors=authors,
        workload_ids=workload_ids,
        until=now + max_clock_skew,
    )


def step_down_read(
    workload_ids: Iterable[str],
    standbys: Iterable[str],
    me: str,
    now: float,
    max_clock_skew: float,
) -> Query:
    """A primary's watch for a later epoch of its workloads (failure mode 25).

    Only the workloads' standbys can make a primary step down, so only their
    claims and announcements are asked for, never its own: after a takeover
    of a thousand workloads the relays hold its own claim and announcement
    of each, and returning those every interval made every watch read of
    such a host time out (failure mode 19). With no standby left
    (``authors`` empty) the query matches nothing and need not be sent.
    """
    authors = set(standbys)
    authors.discard(me)
    return claims_read(workload_ids, now, max_clock_skew, authors)


def catch_up_read(workload_ids: Iterable[str]) -> Query:
    """What a standby missed while it was away (after a restart).

    Its revocations, claims and announcements, with no time bound.
    """
    return Query(kinds=("revocation", "claim", "announcement"), workload_ids=workload_ids)


def followed_read(workload_ids: Iterable[str], new_primaries: Iterable[str]) -> Query:
    """What slots that just followed a new primary heard from it and did not heed.

    The new primary was a peer of each slot until then, so the slot heard its
    claims and announcements as a peer's (that is how it came to follow), but
    a revocation from a peer means nothing: only the new primary's
    revocations, with no time bound, are read back. Reading every
    revocation, claim and announcement of the workloads instead returned the
    new primary's claim and announcement of each: in a takeover of 1,000
    workloads, thousands of events the relays served while they were still
    storing its claims, and reads that timed out (failure mode 19).
    """
    return Query(kinds=("revocation",), authors=new_primaries, workload_ids=workload_ids)
