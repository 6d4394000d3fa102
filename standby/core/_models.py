"""Data model: topology, standby slots, wire messages and envelopes."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeAlias, TypeVar

import attrs

from ._errors import InvalidSlot, TopologyError
from ._helpers import role_of
from ._roles import Role, Standby

__all__ = [
    "Envelope",
    "Heartbeat",
    "LeaseRevocation",
    "Message",
    "PromotionAnnouncement",
    "PromotionClaim",
    "StandbySlot",
    "Topology",
    "fencing_token",
]

SpecT = TypeVar("SpecT")
MessageT_co = TypeVar("MessageT_co", covariant=True)

#: Fencing tokens are ``epoch * TOKEN_EPOCH_STRIDE + standby_index``.
TOKEN_EPOCH_STRIDE = 1 << 20


def fencing_token(epoch: int, index: int) -> int:
    """The fencing token of standby ``index`` promoting into ``epoch``.

    Ordered by epoch first, then by index, so tokens strictly increase across
    successive promotions and two claimants of one epoch never share a token.
    """
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    if not 0 <= index < TOKEN_EPOCH_STRIDE:
        raise ValueError(f"standby index must be in [0, {TOKEN_EPOCH_STRIDE}), got {index}")
    return epoch * TOKEN_EPOCH_STRIDE + index


def _identity(
    what: str, error: type[ValueError] = ValueError
) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, str) or not value.strip():
            raise error(f"{what} `{attribute.name}` must be a non-empty string, got {value!r}")

    return check


def _finite_as(error: type[ValueError]) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise error(f"`{attribute.name}` must be a finite number, got {value!r}")
        if not math.isfinite(value):
            raise error(f"`{attribute.name}` must be a finite number, got {value!r}")

    return check


def _count_as(error: type[ValueError]) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise error(f"`{attribute.name}` must be an integer >= 0, got {value!r}")

    return check


_finite = _finite_as(ValueError)
#: The rules for an identity-like string and a finite time, shared with the node's request.
identity_field = _identity("field")
finite_field = _finite
_non_negative_int = _count_as(ValueError)
_slot_finite = _finite_as(InvalidSlot)
_slot_count = _count_as(InvalidSlot)


def _version(_inst: Any, _attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`version` must be an integer >= 1, got {value!r}")


def _identities(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


def _standby_list(values: Iterable[str]) -> tuple[str, ...]:
    if isinstance(values, (str, bytes)):
        raise TopologyError(
            f"standbys must be a sequence of identities, not a single string: got {values!r} "
            f"(for one standby write ({values!r},))"
        )
    try:
        return tuple(values)
    except TypeError:
        raise TopologyError(
            f"standbys must be a sequence of identities, got {type(values).__name__}"
        ) from None


#: Marks a :class:`Topology` argument that was not given.
_MISSING: Any = object()


def _check_standbys(primary: str, standbys: Sequence[str]) -> None:
    seen: set[str] = set()
    for position, standby in enumerate(standbys):
        if not isinstance(standby, str) or not standby.strip():
            raise TopologyError(f"standby #{position} is an empty identity: {standby!r}")
        if standby == primary:
            raise TopologyError(f"the primary {primary!r} is also listed as standby #{position}")
        if standby in seen:
            raise TopologyError(f"standby {standby!r} is listed twice")
        seen.add(standby)


@attrs.frozen(init=False)
class Topology:
    """A workload's primary and its ordered standbys, as the consumer sent them.

    ``Topology("alice", ("bob", "carol"))``. Identities must already be
    canonical (see :meth:`standby.protocols.RelayTransport.canonical`);
    validation raises :class:`TopologyError` for an empty identity, a
    duplicate standby, a primary listed as a standby, and ``standbys`` given
    as one string (``Topology("p", "ab")`` would otherwise mean standbys
    ``"a"`` and ``"b"``). Leaving out an argument raises :class:`TypeError`
    naming it.
    """

    primary: str = attrs.field(validator=_identity("identity", TopologyError))
    standbys: tuple[str, ...] = attrs.field(converter=_standby_list)

    def __init__(self, primary: str = _MISSING, standbys: Iterable[str] = _MISSING) -> None:
        missing = [
            name
            for name, value in (("primary", primary), ("standbys", standbys))
            if value is _MISSING
        ]
        if missing:
            raise TypeError(
                f"Topology needs {' and '.join(missing)}: Topology(primary, standbys), "
                "for example Topology('alice', ('bob', 'carol'))"
            )
        self.__attrs_init__(primary, standbys)

    def __attrs_post_init__(self) -> None:
        _check_standbys(self.primary, self.standbys)

    def role_of(self, me: str, *, same: Callable[[str, str], bool] = operator.eq) -> Role:
        """This provider's role, as :func:`standby.role_of`."""
        return role_of(me, self.primary, self.standbys, same=same)


@attrs.frozen
class StandbySlot(Generic[SpecT]):
    """A reserved standby slot: paid for and acknowledged, no container yet.

    ``peers`` are the *other* standbys, in the consumer's order, without this
    provider. ``epoch`` counts the promotions the workload went through; the
    slot's ``primary`` is the primary of that epoch. ``spec_id`` is the id of
    the offer the consumer paid for (``None`` when the host does not track
    offers); ``spec`` is the container configuration itself.

    ``primary_since`` is when the slot's current primary took over (``None``
    until the slot follows a new primary): the silence of that primary is
    measured from it, not from ``created_at``, so a fresh primary gets a full
    silence window, also after this provider restarts (see :attr:`origin`).
    From epoch 1 on, ``primary`` may also be one of ``peers``: a peer
    followed on the strength of its claim alone (it never announced a
    promotion) keeps its place in the standby order, since it may still
    stand by.
    """

    workload_id: str = attrs.field(validator=_identity("slot field", InvalidSlot))
    primary: str = attrs.field(validator=_identity("slot field", InvalidSlot))
    standby_index: int = attrs.field(validator=_slot_count)
    standby_count: int = attrs.field(validator=_slot_count)
    spec: SpecT
    expires_at: float = attrs.field(validator=_slot_finite)
    owner: str = attrs.field(validator=_identity("slot field", InvalidSlot))
    created_at: float = attrs.field(validator=_slot_finite)
    peers: tuple[str, ...] = attrs.field(converter=_identities, factory=tuple)
    epoch: int = attrs.field(default=0, validator=_slot_count)
    spec_id: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(_identity("slot field", InvalidSlot))
    )
    primary_since: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(_slot_finite)
    )

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.standby_index < self.standby_count:
            raise InvalidSlot(
                f"slot {self.workload_id!r}: need 0 <= standby_index < standby_count, got "
                f"standby_index={self.standby_index}, standby_count={self.standby_count}"
            )
        if not self.expires_at > self.created_at > 0:
            raise InvalidSlot(
                f"slot {self.workload_id!r}: need expires_at > created_at > 0, got "
                f"expires_at={self.expires_at}, created_at={self.created_at}"
            )
        if self.primary in self.peers and self.epoch == 0:
            raise InvalidSlot(f"slot {self.workload_id!r}: primary {self.primary!r} is a peer")
        if len(set(self.peers)) != len(self.peers):
            raise InvalidSlot(f"slot {self.workload_id!r}: duplicate peers in {self.peers!r}")
        for peer in self.peers:
            if not isinstance(peer, str) or not peer.strip():
                raise InvalidSlot(f"slot {self.workload_id!r}: empty peer identity {peer!r}")
        if len(self.peers) != self.standby_count - 1:
            raise InvalidSlot(
                f"slot {self.workload_id!r}: peers are the other standbys, so there must be "
                f"standby_count - 1 = {self.standby_count - 1} of them, got {len(self.peers)}"
            )

    @classmethod
    def reserve(
        cls,
        *,
        me: str,
        workload_id: str,
        topology: Topology,
        spec: SpecT,
        owner: str,
        created_at: float,
        expires_at: float,
        same: Callable[[str, str], bool] = operator.eq,
        spec_id: str | None = None,
    ) -> StandbySlot[SpecT]:
        """Build this provider's slot from a consumer's topology.

        Raises :class:`TopologyError` when ``me`` is not one of the standbys.
        """
        role = topology.role_of(me, same=same)
        if not isinstance(role, Standby):
            raise TopologyError(f"{me!r} is not a standby of workload {workload_id!r}: {role!r}")
        peers = tuple(s for i, s in enumerate(topology.standbys) if i != role.index)
        return cls(
            workload_id=workload_id,
            primary=topology.primary,
            standby_index=role.index,
            standby_count=role.count,
            spec=spec,
            expires_at=expires_at,
            owner=owner,
            created_at=created_at,
            peers=peers,
            spec_id=spec_id,
        )

    @property
    def origin(self) -> float:
        """The instant this slot's primary is timed from, before any heartbeat of it.

        ``primary_since`` when the slot followed a new primary (never before
        ``created_at``), else ``created_at``: a primary that just took over
        gets a full silence window, whatever the slot's age.
        """
        since = self.primary_since
        return self.created_at if since is None else max(since, self.created_at)

    def standbys(self, me: str) -> tuple[str, ...]:
        """The full ordered standby list, with ``me`` at this slot's index."""
        i = self.standby_index
        return (*self.peers[:i], me, *self.peers[i:])

    def peer_index(self, peer: str) -> int | None:
        """The standby index of ``peer``, or ``None`` when it is not a peer."""
        try:
            position = self.peers.index(peer)
        except ValueError:
            return None
        return position if position < self.standby_index else position + 1


@attrs.frozen(kw_only=True)
class Heartbeat:
    """A provider's periodic proof of life (one per provider, not per workload)."""

    provider: str = attrs.field(validator=_identity("message field"))
    timestamp: float = attrs.field(validator=_finite)
    active_workloads: int = attrs.field(default=0, validator=_non_negative_int)
    available_capacity: int | None = None
    version: int = attrs.field(default=1, validator=_version)


@attrs.frozen(kw_only=True)
class LeaseRevocation:
    """A primary's signed statement that it fenced ``workload_id`` and gives it up.

    Only the envelope's signer gives it authority; ``primary`` in the body is
    informative.
    """

    workload_id: str = attrs.field(validator=_identity("message field"))
    primary: str = attrs.field(validator=_identity("message field"))
    standbys: tuple[str, ...] = attrs.field(converter=_identities, factory=tuple)
    reason: str = ""
    revoked_at: float = attrs.field(validator=_finite)
    state_uri: str | None = None
    epoch: int = attrs.field(default=0, validator=_non_negative_int)
    version: int = attrs.field(default=1, validator=_version)


@attrs.frozen(kw_only=True)
class PromotionClaim:
    """A standby's claim on ``epoch`` of a workload, published before it spawns.

    ``withdrawn=True`` releases an earlier claim by the same claimant.
    """

    workload_id: str = attrs.field(validator=_identity("message field"))
    epoch: int = attrs.field(validator=_non_negative_int)
    fencing_token: int = attrs.field(validator=_non_negative_int)
    claimant: str = attrs.field(validator=_identity("message field"))
    standby_index: int = attrs.field(validator=_non_negative_int)
    claimed_at: float = attrs.field(validator=_finite)
    withdrawn: bool = False
    version: int = attrs.field(default=1, validator=_version)


@attrs.frozen(kw_only=True)
class PromotionAnnouncement:
    """Published by a standby after it spawned the workload as the new primary.

    ``epoch`` and ``fencing_token`` are ``None`` only in announcements from
    providers that predate them.
    """

    workload_id: str = attrs.field(validator=_identity("message field"))
    new_primary: str = attrs.field(validator=_identity("message field"))
    promoted_at: float = attrs.field(validator=_finite)
    epoch: int | None = None
    fencing_token: int | None = None
    version: int = attrs.field(default=1, validator=_version)


Message: TypeAlias = Heartbeat | LeaseRevocation | PromotionClaim | PromotionAnnouncement


@attrs.frozen
class Envelope(Generic[MessageT_co]):
    """A decoded message together with facts the transport proved about it.

    ``signer`` is the authenticated, canonical identity that signed it (never
    read from the body), ``relay`` the relay it came from and ``received_at``
    the local wall-clock time it arrived.
    """

    message: MessageT_co
    signer: str
    relay: str
    received_at: float
