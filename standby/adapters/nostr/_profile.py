"""How standby messages map onto Nostr events: kinds, tags, bodies, filters.

Private to :mod:`standby.adapters.nostr` (which re-exports
:class:`NostrProfile`). Pure: no I/O, no clock (``now`` is passed in).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Final

import attrs

from ...core._errors import IdentityError, WireError
from ...core._models import (
    Heartbeat,
    LeaseRevocation,
    Message,
    PromotionAnnouncement,
    PromotionClaim,
    StandbySlot,
)
from ...protocols._contracts import MessageKind, Query, message_kind, message_timestamp
from ...wire import Codec
from ._keys import EventRejected, NostrEvent, canonical_identity, npub_of

__all__ = ["DEFAULT_PREFIX", "REFERENCE_PREFIX", "EventDraft", "NostrProfile"]

#: The ``d``-tag prefix of :class:`NostrProfile` by default (a fleet of
#: ``standby`` providers only).
DEFAULT_PREFIX: Final = "standby"
#: The ``d``-tag prefix the reference provider writes and reads
#: (``paygress:promoted:v1:<workload>``): :meth:`NostrProfile.reference`.
REFERENCE_PREFIX: Final = "paygress"

#: Library field -> the reference system's field, per message kind. Identity
#: fields are written as npub in the reference fields.
_RENAMES: Final[Mapping[str, Mapping[str, str]]] = {
    "heartbeat": {"provider": "provider_npub"},
    "revocation": {"primary": "primary_provider_npub", "standbys": "standby_providers"},
    "announcement": {"new_primary": "new_primary_npub"},
    "claim": {},
}
#: Identity fields of the library's bodies (canonicalised when read).
_IDENTITY_FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    "heartbeat": ("provider",),
    "revocation": ("primary", "standbys"),
    "announcement": ("new_primary",),
    "claim": ("claimant",),
}
#: Slot field -> the reference system's field (identities as npub there).
_SLOT_RENAMES: Final[Mapping[str, str]] = {
    "primary": "primary_npub",
    "owner": "owner_npub",
    "peers": "peer_standby_npubs",
    "spec": "container_config",
}
#: Slot fields written as whole seconds (and exactly in ``<field>_exact``).
_SLOT_TIME_FIELDS: Final = ("created_at", "expires_at")
#: The timestamp field of the kinds the reference system reads: written as
#: whole seconds there (its readers expect integers) and exactly in
#: ``<field>_exact``.
_TIME_FIELDS: Final[Mapping[str, str]] = {
    "heartbeat": "timestamp",
    "revocation": "revoked_at",
    "announcement": "promoted_at",
}


@attrs.frozen
class EventDraft:
    """An unsigned event: what :meth:`NostrProfile.drafts` asks the transport to sign."""

    kind: int
    tags: tuple[tuple[str, ...], ...]
    content: str
    key: tuple[int, str] | None
    """``(kind, d)`` for an addressable event, ``None`` for an ephemeral one."""


def _addressable(_inst: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 30000 <= value < 40000:
        raise ValueError(f"{attribute.name} must be an addressable kind (30000-39999), got {value}")


def _ephemeral(_inst: Any, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and not 20000 <= value < 30000:
        raise ValueError(
            f"{attribute.name} must be an ephemeral kind (20000-29999) or None, got {value}"
        )


def _prefix(_inst: Any, _attribute: attrs.Attribute[Any], value: str) -> None:
    if not value or ":" in value or value.strip() != value:
        raise ValueError(f"prefix must be a non-empty string without ':' or blanks, got {value!r}")


def _positive(_inst: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a finite number > 0, got {value}")


@attrs.frozen(kw_only=True)
class NostrProfile:
    """Event kinds, tags and body field names used on Nostr.

    The defaults are the reference system's kinds (see ``docs/nostr.md``):

    ==========  =======================  ===========================================
    kind        message                  ``d`` tag
    ==========  =======================  ===========================================
    38384       heartbeat (addressable)  ``<prefix>:heartbeat:v1:<bucket>``
    20384       heartbeat (ephemeral)    none
    38385       lease revocation         ``<prefix>:revocation:v1:<primary npub>:<workload>``
    38386       promotion announcement   ``<prefix>:promoted:v1:<workload>``
    38387       promotion claim          ``<prefix>:claim:v1:<workload>``
    ==========  =======================  ===========================================

    ``<bucket>`` is ``floor(timestamp / heartbeat_bucket)``: one address per
    second by default, so a relay that replaces addressable events by key
    can never let one heartbeat stamped in the future (a clock step) stand
    in for the genuine ones after it for longer than one bucket (failure mode
    18). Readers find heartbeats by kind and author, not by ``d`` tag, so
    the bucket width is the sender's choice.

    Revocations carry a ``p`` tag (hex public key) per standby.
    ``heartbeat_lookback`` bounds how far back a query reads heartbeats
    (relays keep one per bucket per provider); it must be at least the
    ``Timing``'s ``silence + max_clock_skew``, so no heartbeat that could keep
    a primary alive is ever left out. A subscription without ``since``
    starts ``live_backlog`` seconds back, and after a reconnect resumes
    ``live_backlog`` seconds before the newest ``created_at`` it saw on that
    relay (the overlap absorbs clock skew between hosts; repeats are
    filtered by event id).
    """

    prefix: str = attrs.field(default=DEFAULT_PREFIX, validator=_prefix)
    heartbeat_kind: int = attrs.field(default=38384, validator=_addressable)
    ephemeral_heartbeat_kind: int | None = attrs.field(default=20384, validator=_ephemeral)
    revocation_kind: int = attrs.field(default=38385, validator=_addressable)
    announcement_kind: int = attrs.field(default=38386, validator=_addressable)
    claim_kind: int = attrs.field(default=38387, validator=_addressable)
    heartbeat_bucket: int = attrs.field(default=1, validator=_positive)
    heartbeat_lookback: float = attrs.field(default=3600.0, validator=_positive)
    live_backlog: float = attrs.field(default=60.0, validator=_positive)

    def __attrs_post_init__(self) -> None:
        kinds = [
            self.heartbeat_kind,
            self.revocation_kind,
            self.announcement_kind,
            self.claim_kind,
        ]
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"the addressable kinds must be distinct, got {kinds}")

    @classmethod
    def reference(cls, **changes: Any) -> NostrProfile:
        """The profile a fleet that mixes ``standby`` and reference providers needs.

        The reference kinds (the defaults) with the reference ``d``-tag
        prefix, ``paygress`` (:data:`REFERENCE_PREFIX`): announcements are
        ``paygress:promoted:v1:<workload>`` and revocations
        ``paygress:revocation:v1:<primary npub>:<workload>``, so each side
        finds what the other publishes. ``changes`` override other fields.
        """
        return cls(**{"prefix": REFERENCE_PREFIX, **changes})

    @property
    def is_reference(self) -> bool:
        """Whether this profile uses the reference prefix (see :meth:`reference`)."""
        return self.prefix == REFERENCE_PREFIX

    # ----------------------------------------------------------------- kinds and tags

    @property
    def event_kinds(self) -> frozenset[int]:
        """Every event kind this profile reads."""
        kinds = {self.heartbeat_kind, self.revocation_kind, self.announcement_kind, self.claim_kind}
        if self.ephemeral_heartbeat_kind is not None:
            kinds.add(self.ephemeral_heartbeat_kind)
        return frozenset(kinds)

    def message_kind_of(self, kind: int) -> MessageKind | None:
        """The message kind an event kind carries (``None``: not one of ours)."""
        if kind in (self.heartbeat_kind, self.ephemeral_heartbeat_kind):
            return "heartbeat"
        if kind == self.revocation_kind:
            return "revocation"
        if kind == self.announcement_kind:
            return "announcement"
        if kind == self.claim_kind:
            return "claim"
        return None

    def heartbeat_d(self, timestamp: float) -> str:
        """The ``d`` tag of the addressable heartbeat sent at ``timestamp``."""
        return f"{self.prefix}:heartbeat:v1:{math.floor(timestamp / self.heartbeat_bucket)}"

    def revocation_d(self, primary: str, workload_id: str) -> str:
        """The ``d`` tag of ``primary``'s revocation of ``workload_id``."""
        return f"{self.prefix}:revocation:v1:{npub_of(primary)}:{workload_id}"

    def announcement_d(self, workload_id: str) -> str:
        """The ``d`` tag of an announcement for ``workload_id``."""
        return f"{self.prefix}:promoted:v1:{workload_id}"

    def claim_d(self, workload_id: str) -> str:
        """The ``d`` tag of a claim on ``workload_id``."""
        return f"{self.prefix}:claim:v1:{workload_id}"

    # ----------------------------------------------------------------- outgoing

    def natural_created_at(self, message: Message) -> int:
        """The ``created_at`` of ``message``'s event before any per-key bump.

        Whole seconds of the message's timestamp; a claim withdrawal gets one
        second more, so on a relay it always replaces the claim it withdraws
        (relays replace by greater ``created_at`` and break ties arbitrarily).
        """
        seconds = math.floor(message_timestamp(message))
        if isinstance(message, PromotionClaim) and message.withdrawn:
            seconds += 1
        return seconds

    def body(self, message: Message, codec: Codec) -> dict[str, Any]:
        """The JSON body of ``message``, readable by the reference system too.

        Raises :class:`~standby.IdentityError` when an identity field is not a
        Nostr identity and :class:`~standby.WireError` when it cannot be encoded.
        """
        kind = message_kind(message)
        body = codec.to_dict(message)
        for field, ref in _RENAMES[kind].items():
            value = body.pop(field)
            if isinstance(value, list):
                body[ref] = [npub_of(item) for item in value]
            else:
                body[ref] = npub_of(value)
        if kind == "claim":
            body["claimant"] = canonical_identity(body["claimant"])
        time_field = _TIME_FIELDS.get(kind)
        if time_field is not None:
            exact = float(body[time_field])
            body[time_field] = math.floor(exact)
            body[f"{time_field}_exact"] = exact
        return body

    def drafts(self, message: Message, codec: Codec) -> list[EventDraft]:
        """The events that carry ``message``, unsigned, the stored one last.

        A heartbeat goes out as an ephemeral event (fast live delivery) and as
        an addressable one (what queries read); every other message as one
        addressable event.
        """
        content = json.dumps(
            self.body(message, codec),
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        )
        drafts: list[EventDraft] = []
        if isinstance(message, Heartbeat):
            if self.ephemeral_heartbeat_kind is not None:
                drafts.append(EventDraft(self.ephemeral_heartbeat_kind, (), content, None))
            d = self.heartbeat_d(message.timestamp)
            drafts.append(
                EventDraft(self.heartbeat_kind, (("d", d),), content, (self.heartbeat_kind, d))
            )
        elif isinstance(message, LeaseRevocation):
            d = self.revocation_d(message.primary, message.workload_id)
            p_tags = tuple(("p", canonical_identity(s)) for s in message.standbys)
            drafts.append(
                EventDraft(
                    self.revocation_kind, (("d", d), *p_tags), content, (self.revocation_kind, d)
                )
            )
        elif isinstance(message, PromotionAnnouncement):
            d = self.announcement_d(message.workload_id)
            drafts.append(
                EventDraft(
                    self.announcement_kind, (("d", d),), content, (self.announcement_kind, d)
                )
            )
        else:
            d = self.claim_d(message.workload_id)
            drafts.append(EventDraft(self.claim_kind, (("d", d),), content, (self.claim_kind, d)))
        return drafts

    # ----------------------------------------------------------------- incoming

    def decode(self, event: NostrEvent, codec: Codec) -> Message:
        """The message an already verified event carries.

        Raises :class:`EventRejected` for an event that is not one of ours
        (``"unexpected_kind"``), whose ``d`` tag does not fit its body
        (``"d_mismatch"``) or whose body the codec refuses (``"bad_body"``).
        """
        kind = self.message_kind_of(event.kind)
        if kind is None:
            raise EventRejected("unexpected_kind", f"kind {event.kind} is not in this profile")
        try:
            message = self.parse_body(kind, event.content, codec)
        except WireError as exc:
            raise EventRejected("bad_body", str(exc)) from None
        if not isinstance(message, Heartbeat):
            d = event.tag("d")
            if isinstance(message, PromotionClaim):
                fits = d == self.claim_d(message.workload_id)
            else:
                fits = d is not None and d.endswith(f":{message.workload_id}")
            if not fits:
                raise EventRejected(
                    "d_mismatch", f"d tag {d!r} does not name workload {message.workload_id!r}"
                )
        return message

    def parse_body(self, kind: MessageKind, content: str, codec: Codec) -> Message:
        """Decode a body in the reference system's or the library's field names.

        Identity fields are canonicalised (npub or hex); a missing
        ``version`` means 1. Raises :class:`~standby.WireError`.
        """
        size = len(content.encode("utf-8", "surrogatepass"))
        if size > codec.max_size:
            raise WireError(f"body is larger than {codec.max_size} bytes ({size} bytes)")
        try:
            parsed = json.loads(content)
        except ValueError as exc:
            raise WireError(f"body is not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise WireError("body is not a JSON object")
        body: dict[str, Any] = dict(parsed)
        for field, ref in _RENAMES[kind].items():
            if ref in body:
                body[field] = body.pop(ref)
        for field in _IDENTITY_FIELDS[kind]:
            if field in body:
                body[field] = _canonical_field(field, body[field])
        time_field = _TIME_FIELDS.get(kind)
        if time_field is not None:
            _refine_time(body, time_field)
        result = codec.from_dict(kind, body)
        assert not isinstance(result, StandbySlot)
        return result

    # ----------------------------------------------------------------- slots

    def slot_body(self, slot: StandbySlot[Any], codec: Codec) -> dict[str, Any]:
        """``slot`` as a JSON object in the reference system's field names.

        ``primary_npub``, ``owner_npub`` and ``peer_standby_npubs`` (npub),
        ``container_config`` (the spec), ``spec_id`` (only when set: the
        reference system requires it), ``created_at`` and ``expires_at`` as
        whole seconds with the exact values in ``<field>_exact``; the
        library's other fields (``epoch``, ``primary_since`` when set,
        ``version``) ride along. Raises
        :class:`~standby.IdentityError` when an identity is not a Nostr key
        and :class:`~standby.WireError` when the slot cannot be encoded.
        """
        body = codec.to_dict(slot)
        for field, ref in _SLOT_RENAMES.items():
            value = body.pop(field)
            if field == "peers":
                body[ref] = [npub_of(item) for item in value]
            elif field == "spec":
                body[ref] = value
            else:
                body[ref] = npub_of(value)
        for field in _SLOT_TIME_FIELDS:
            exact = float(body[field])
            body[field] = math.floor(exact)
            body[f"{field}_exact"] = exact
        return body

    def parse_slot(self, body: Mapping[str, Any], codec: Codec) -> StandbySlot[Any]:
        """Decode a slot written in the reference system's or the library's field names.

        Identities are canonicalised (npub or hex), ``spec_id`` is kept (an
        empty one reads as ``None``), whole-second times are refined by their
        ``_exact`` values when those are within a second. Raises
        :class:`~standby.WireError`.
        """
        if not isinstance(body, Mapping):
            raise WireError("slot body is not a JSON object")
        fields: dict[str, Any] = dict(body)
        for field, ref in _SLOT_RENAMES.items():
            if ref in fields:
                fields[field] = fields.pop(ref)
        for field in ("primary", "owner", "peers"):
            if field in fields:
                fields[field] = _canonical_field(field, fields[field])
        if fields.get("spec_id") == "":
            del fields["spec_id"]
        for field in _SLOT_TIME_FIELDS:
            _refine_time(fields, field)
        slot: StandbySlot[Any] = codec.from_dict("slot", fields)  # type: ignore[assignment]
        return slot


def _refine_time(body: dict[str, Any], field: str) -> None:
    """Use ``<field>_exact`` for ``field`` when it agrees with the whole seconds."""
    exact = body.pop(f"{field}_exact", None)
    whole = body.get(field)
    if _is_number(exact) and _is_number(whole) and math.isfinite(exact) and abs(exact - whole) < 1:
        body[field] = float(exact)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _canonical_field(field: str, value: object) -> object:
    try:
        if isinstance(value, list):
            return [canonical_identity(item) if isinstance(item, str) else item for item in value]
        if isinstance(value, str):
            return canonical_identity(value)
    except IdentityError as exc:
        raise WireError(str(exc), path=f"$.{field}") from None
    return value  # a wrong type: the codec reports it


def filters_for(
    profile: NostrProfile,
    query: Query,
    *,
    me: str,
    now: float,
    live: bool,
    since: int | None,
) -> list[dict[str, Any]]:
    """NIP-01 filters that fetch (a superset of) what ``query`` matches.

    ``since`` is the relay-side floor on ``created_at`` (the caller derives
    it from ``query.since``, or from its resume point for a subscription).
    ``live`` builds a subscription's filters: heartbeats include the
    ephemeral kind and revocations are those addressed to ``me`` (their
    ``p`` tags), and when ``query.workload_ids`` is set the workload kinds
    are asked for from any author (the transport drops and reports the
    unexpected ones); otherwise heartbeats are read back
    ``heartbeat_lookback`` seconds at most. Authors must already be canonical. The caller still
    checks every decoded message with :meth:`Query.matches`.
    """
    authors = None if query.authors is None else sorted(query.authors)
    workloads = None if query.workload_ids is None else sorted(query.workload_ids)
    # A subscription scoped to workloads asks for their messages from anyone
    # and drops (and reports) those from unexpected authors itself
    # (``unexpected_author``); heartbeats are always filtered by author.
    anyone = live and workloads is not None
    out: list[dict[str, Any]] = []

    def add(
        kinds: list[int], extra: Mapping[str, Any], floor: int | None, *, by_author: bool = True
    ) -> None:
        found: dict[str, Any] = {}
        if authors is not None and by_author:
            found["authors"] = authors
        found.update(kinds=kinds, **extra)
        if floor is not None:
            found["since"] = floor
        out.append(found)

    if "heartbeat" in query.kinds:
        kinds = [profile.heartbeat_kind]
        floor = since
        if live:
            if profile.ephemeral_heartbeat_kind is not None:
                kinds.append(profile.ephemeral_heartbeat_kind)
        else:
            lookback = math.floor(now - profile.heartbeat_lookback)
            floor = lookback if floor is None else max(floor, lookback)
        add(kinds, {}, floor)
    if "revocation" in query.kinds:
        # Live revocations are those addressed to us (``#p``), from anyone: a
        # bounded request whatever the slot count, and a stranger's forgery
        # arrives to be dropped and reported.
        add([profile.revocation_kind], {"#p": [me]} if live else {}, since, by_author=not live)
    if "claim" in query.kinds:
        extra = {} if workloads is None else {"#d": [profile.claim_d(w) for w in workloads]}
        add([profile.claim_kind], extra, since, by_author=not anyone)
    if "announcement" in query.kinds:
        extra = {} if workloads is None else {"#d": [profile.announcement_d(w) for w in workloads]}
        add([profile.announcement_kind], extra, since, by_author=not anyone)
    return out
