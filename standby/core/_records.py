"""What a node must remember across a restart, besides its slots.

A node that is killed and restarted must never promote twice into one epoch,
never hand one fencing token to two incarnations and never start a second
copy of a workload it already runs (``docs/safety.md``, guarantee 5). For that it
keeps, next to the slot table:

- :class:`PromotionIntent`: a promotion it decided to make, written and made
  durable *before* the spawn;
- :class:`PrimaryRecord`: a workload it runs (or started to run) as primary.

:class:`NodeState` bundles the three; a :class:`~standby.protocols.SlotStore`
saves and loads it as one atomic unit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Generic, TypeVar

import attrs

from ._errors import StoreError
from ._models import StandbySlot

__all__ = ["NodeState", "PrimaryRecord", "PromotionIntent"]

SpecT = TypeVar("SpecT")


def _tuple(values: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(values)


@attrs.frozen
class PromotionIntent:
    """A promotion this node decided to make: ``workload_id`` into ``epoch`` with ``fencing_token``.

    Saved durably before the runtime is asked to spawn, so that a node
    restarted after the spawn (whether or not the container still runs)
    knows that it already used this epoch and token, and never uses them
    again. ``lease_end`` is the bound the spawn was given; ``standbys`` are
    the slot's peers (who may follow this node once it claimed) and
    ``expires_at`` the reservation's end. A **spent** intent is one a
    restarted node gave up: it is kept until ``expires_at`` so that the node
    never stands by for that workload again and reuses its token.
    """

    workload_id: str
    epoch: int
    fencing_token: int
    lease_end: float
    recorded_at: float
    standbys: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    expires_at: float = math.inf
    spent: bool = False


@attrs.frozen
class PrimaryRecord:
    """A workload this node runs as primary, as it is saved.

    It carries what a restarted node needs to adopt the container it finds
    still running (or to fence the workload when the container is gone):
    the epoch and token it runs under, its standbys and the reservation
    window. The container spec is not saved: the host supplies it again when
    it re-accepts the request.

    ``ended`` is why the run ended here (``None`` while it runs or may still
    run). An ended replicated run is kept until ``expires_at``: its epoch was
    fenced and revoked (its standbys take over from it), so this node never
    starts that workload again in this reservation, whatever restarts come
    (failure mode 29).
    """

    workload_id: str
    epoch: int
    fencing_token: int
    standbys: tuple[str, ...] = attrs.field(converter=_tuple)
    created_at: float
    expires_at: float
    started: bool = False
    ended: str | None = None

    @property
    def replicated(self) -> bool:
        """Whether the workload has standbys (a lost one is theirs to take over)."""
        return bool(self.standbys)


@attrs.frozen
class NodeState(Generic[SpecT]):
    """Everything a node saves: slots, promotion intents and primary records."""

    slots: tuple[StandbySlot[SpecT], ...] = attrs.field(default=(), converter=_tuple)
    intents: tuple[PromotionIntent, ...] = attrs.field(default=(), converter=_tuple)
    primaries: tuple[PrimaryRecord, ...] = attrs.field(default=(), converter=_tuple)

    def replace_slots(self, slots: Iterable[StandbySlot[SpecT]]) -> NodeState[SpecT]:
        """The same state with another slot table."""
        return attrs.evolve(self, slots=tuple(slots))


# --------------------------------------------------------------------------
# Plain-JSON form of intents and primary records (used by the file store)
# --------------------------------------------------------------------------


def _number(entry: Mapping[str, Any], key: str, what: str) -> float:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise StoreError(f"{what}: `{key}` must be a number, got {value!r}")
    number = float(value)
    if math.isnan(number):
        raise StoreError(f"{what}: `{key}` is not a number")
    return number


def _integer(entry: Mapping[str, Any], key: str, what: str) -> int:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StoreError(f"{what}: `{key}` must be an integer >= 0, got {value!r}")
    return value


def _text(entry: Mapping[str, Any], key: str, what: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value:
        raise StoreError(f"{what}: `{key}` must be a non-empty string, got {value!r}")
    return value


def _object(entry: object, what: str) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise StoreError(f"{what} is not an object")
    return entry


def _identities(entry: Mapping[str, Any], what: str, default: object) -> tuple[str, ...]:
    standbys = entry.get("standbys", default)
    if not isinstance(standbys, list) or not all(isinstance(s, str) and s for s in standbys):
        raise StoreError(f"{what}: `standbys` must be a list of identities, got {standbys!r}")
    return tuple(standbys)


def _flag(entry: Mapping[str, Any], key: str, what: str) -> bool:
    value = entry.get(key, False)
    if not isinstance(value, bool):
        raise StoreError(f"{what}: `{key}` must be true or false, got {value!r}")
    return value


def _expiry(entry: Mapping[str, Any], what: str) -> float:
    """``expires_at``: a number, or ``null`` for never."""
    return math.inf if entry.get("expires_at") is None else _number(entry, "expires_at", what)


def _expiry_json(expires_at: float) -> float | None:
    return None if math.isinf(expires_at) else expires_at


def _fence_json(record: PromotionIntent | PrimaryRecord) -> dict[str, Any]:
    """The keys every saved record starts with: whose workload, which epoch and token."""
    return {
        "workload_id": record.workload_id,
        "epoch": record.epoch,
        "fencing_token": record.fencing_token,
    }


def _fence(entry: Mapping[str, Any], what: str) -> dict[str, Any]:
    """:func:`_fence_json` read back, as keyword arguments."""
    return {
        "workload_id": _text(entry, "workload_id", what),
        "epoch": _integer(entry, "epoch", what),
        "fencing_token": _integer(entry, "fencing_token", what),
    }


def intent_to_json(intent: PromotionIntent) -> dict[str, Any]:
    """The JSON object a store writes for ``intent``."""
    return {
        **_fence_json(intent),
        "lease_end": intent.lease_end,
        "recorded_at": intent.recorded_at,
        "standbys": list(intent.standbys),
        "expires_at": _expiry_json(intent.expires_at),
        "spent": intent.spent,
    }


def intent_from_json(entry: object, position: int) -> PromotionIntent:
    """Read an intent back; :class:`~standby.StoreError` when malformed."""
    what = f"intent #{position}"
    found = _object(entry, what)
    standbys = _identities(found, what, default=[])
    spent = _flag(found, "spent", what)
    expires_at = _expiry(found, what)
    return PromotionIntent(
        **_fence(found, what),
        lease_end=_number(found, "lease_end", what),
        recorded_at=_number(found, "recorded_at", what),
        standbys=standbys,
        expires_at=expires_at,
        spent=spent,
    )


def primary_to_json(record: PrimaryRecord) -> dict[str, Any]:
    """The JSON object a store writes for ``record`` (``ended`` only when it ended)."""
    found: dict[str, Any] = {
        **_fence_json(record),
        "standbys": list(record.standbys),
        "created_at": record.created_at,
        "expires_at": _expiry_json(record.expires_at),
        "started": record.started,
    }
    if record.ended is not None:
        found["ended"] = record.ended
    return found


def primary_from_json(entry: object, position: int) -> PrimaryRecord:
    """Read a primary record back; :class:`~standby.StoreError` when malformed."""
    what = f"primary #{position}"
    found = _object(entry, what)
    standbys = _identities(found, what, default=None)
    started = _flag(found, "started", what)
    expires_at = _expiry(found, what)
    ended = None if found.get("ended") is None else _text(found, "ended", what)
    return PrimaryRecord(
        **_fence(found, what),
        standbys=standbys,
        created_at=_number(found, "created_at", what),
        expires_at=expires_at,
        started=started,
        ended=ended,
    )
