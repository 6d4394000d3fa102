"""The canonical form of a :class:`~standby.testing.explore._world.World`.

Two states that behave the same from now on get the same form, so the
search visits them once: every instant is taken relative to now (and an
instant more than ``horizon`` seconds away counts only as "long ago" or
"far ahead"), request
ids relative to the machine's counter, and what has no order (a relay's
messages, the operations in flight, the deliveries) is sorted. Counters,
histories and reasons kept only for people are left out.
"""

from __future__ import annotations

import enum
import math
from typing import Any

import attrs

from ...core._admission import ClaimAdmission
from ...core._election import StandbyElection
from ...core._lifecycle import WorkloadLifecycle
from ...core._timing import Timing
from ._world import World

__all__ = ["canonical"]

_LONG_AGO = "long ago"
_FAR_AHEAD = "far ahead"


# How :meth:`_Form.value` treats a value, decided once per type (the order of
# the tests matters: a ``bool`` is an ``int``, an enum may be a ``str``).
_PLAIN, _FLOAT, _ENUM, _TIMING, _ATTRS, _FROZEN, _SEQUENCE, _SET, _DICT = range(9)
_KINDS: dict[type, int] = {}
#: The field names of each attrs class met, in definition order.
_FIELDS: dict[type, tuple[str, ...]] = {}
#: Forms of frozen values by ``(value, now, horizon)``: the siblings of a
#: search hold equal messages and slots at the same instant. Emptied when full.
_SHARED: dict[tuple[Any, float, float], Any] = {}
_SHARED_LIMIT = 200_000


def _kind(t: type) -> int:
    kind = _KINDS.get(t)
    if kind is not None:
        return kind
    if t is type(None) or issubclass(t, (bool, int, str)):
        kind = _PLAIN
    elif issubclass(t, float):
        kind = _FLOAT
    elif issubclass(t, enum.Enum):
        kind = _ENUM
    elif issubclass(t, Timing):
        kind = _TIMING
    elif attrs.has(t):
        # A frozen class hashes by value: its forms are shared across states.
        kind = _ATTRS if t.__hash__ is None else _FROZEN
        _FIELDS[t] = tuple(a.name for a in attrs.fields(t))
    elif issubclass(t, (tuple, list)):
        kind = _SEQUENCE
    elif issubclass(t, (set, frozenset)):
        kind = _SET
    elif issubclass(t, dict):
        kind = _DICT
    else:
        raise TypeError(f"no canonical form for a {t.__name__}")
    _KINDS[t] = kind
    return kind


class _Form:
    """Turns values into hashable, relative forms for one state.

    The form of an attrs object is kept for the rest of the state (one
    message sits on several relays and in several machines); the object is
    kept with it, so that its ``id`` is not reused meanwhile.
    """

    def __init__(self, now: float, horizon: float) -> None:
        self.now = now
        self.horizon = horizon
        self._seen: dict[int, tuple[Any, Any]] = {}

    def time(self, t: float | None) -> Any:
        if t is None or not math.isfinite(t):
            return t
        rel = round(t - self.now, 6)
        if rel < -self.horizon:
            return _LONG_AGO
        return _FAR_AHEAD if rel > self.horizon else rel

    def admission_rate(self, admission: ClaimAdmission[Any]) -> Any:
        """What of the claim window's rate measure can still matter: how long
        slots have been getting through, up to one target, and when the slots
        of the last target got through."""
        target = admission.target
        since = admission.through_since
        flowing = None if since is None else min(round(self.now - since, 6), target)
        recent = tuple(round(t - self.now, 6) for t in admission.through if t >= self.now - target)
        return flowing, recent

    def value(self, v: Any) -> Any:
        t = type(v)
        kind = _KINDS.get(t)
        if kind is None:
            kind = _kind(t)
        if kind == _PLAIN:
            return v
        if kind == _FLOAT:
            return self.time(v)
        if kind == _FROZEN:
            key = (v, self.now, self.horizon)
            form = _SHARED.get(key)
            if form is None:
                value = self.value
                form = (t.__name__, *[value(getattr(v, name)) for name in _FIELDS[t]])
                if len(_SHARED) >= _SHARED_LIMIT:
                    _SHARED.clear()
                _SHARED[key] = form
            return form
        if kind == _ATTRS:
            seen = self._seen.get(id(v))
            if seen is not None and seen[0] is v:
                return seen[1]
            value = self.value
            form = (t.__name__, *[value(getattr(v, name)) for name in _FIELDS[t]])
            self._seen[id(v)] = (v, form)
            return form
        if kind == _ENUM:
            return v._value_  # the member's value, without the property
        if kind == _TIMING:
            return None
        if kind == _SEQUENCE:
            return tuple([self.value(x) for x in v])
        if kind == _SET:
            return tuple(sorted(map(repr, [self.value(x) for x in v])))
        return tuple(sorted([(repr(self.value(k)), self.value(x)) for k, x in v.items()]))

    def election(self, e: StandbyElection[Any]) -> Any:
        base = e._next_request

        def rid(request: int | None) -> int | None:
            return None if request is None or request == 0 else request - base

        index = e._index
        entries = []
        for wid, entry in sorted(index.entries.items()):
            claiming = entry.phase._value_ not in ("watching", "confirming", "retry-watch")
            entries.append(
                (
                    wid,
                    entry.phase._value_,
                    self.time(entry.deadline),
                    rid(entry.request),
                    entry.request == 0,
                    entry.revoked,
                    self.value(entry.claim),
                    entry.attempts,
                    entry.rounds,
                    entry.claim_failures,
                    entry.turn_waits,
                    entry.rereads,
                    self.time(entry.preread_at) if claiming else None,
                    self.value(entry.deferred),
                    self.time(entry.confirmed_baseline) if entry.confirmed_baseline else None,
                    entry.joined,
                    self.time(entry.origin),
                    self.value(entry.slot),
                    entry.state_uri,
                )
            )
        return (
            tuple(entries),
            self.value(index.last_hb),
            self.value(index.promoted),
            self.value(e._claims_seen),
            tuple(sorted((rid(r), k._value_, w) for r, (k, w) in e._requests.items())),
            tuple(sorted((rid(r), v) for r, v in e._confirming.items())),
            tuple(sorted((rid(r), v) for r, v in e._abandoned.items())),
            tuple(sorted((rid(r), p._value_, w) for r, (p, w) in e._reads.reading.items())),
            tuple(
                sorted(
                    (p, s, tuple((w, self.time(t)) for w, t in held.items()))
                    for p, by_signer in e._at_work.items()
                    for s, held in by_signer.items()
                )
            ),
            (
                e._admission.window,
                tuple(e._admission.waiting),
                self.time(e._admission.cut_at),
                self.admission_rate(e._admission),
            ),
        )

    def lifecycle(self, lc: WorkloadLifecycle) -> Any:
        return (
            lc.state._value_,
            lc.reason,
            lc.epoch,
            lc.fencing_token,
            lc.standbys,
            self.value(lc._acks),
            self.time(lc._lease_floor),
            self.time(lc._lease_cap),
            self.time(lc._live_since),
            lc._container._value_,
            self.time(lc._restart_at),
            lc._restarts,
            lc._revocation_state._value_,
            self.value(lc._revocation),
            self.time(lc._revocation_due),
            lc._reclaimed,
            self.time(lc._created_at),
            lc.superseded,
            len(lc._queued),
        )


def canonical(world: World, horizon: float) -> tuple[Any, ...]:
    """The hashable canonical form of ``world`` (see the module docstring)."""
    f = _Form(world.now, horizon)
    providers = []
    for name, p in sorted(world.providers.items()):
        shifted = _Form(p.local(world.now), horizon)  # its machines run on its own clock
        providers.append(
            (
                name,
                p.offset,
                p.up,
                p.paused,
                tuple(sorted(p.cut)),
                None if p.election is None else shifted.election(p.election),
                None if p.lifecycle is None else shifted.lifecycle(p.lifecycle),
                None
                if p.container is None
                else (
                    p.container.token,
                    p.container.epoch,
                    shifted.time(p.container.lease_end),
                    shifted.time(p.container.stop_at),
                ),
                shifted.time(p.heartbeat_due),
                shifted.value(p.saved_slot),
                p.intent,
                p.ran_primary,
            )
        )
    relays = tuple(
        (r, tuple(sorted(repr((s, f.value(m))) for s, m in stored.values())))
        for r, stored in sorted(world.relays.items())
    )
    ops = tuple(
        sorted(
            repr(
                (
                    op.kind.value,
                    op.provider,
                    op.late,
                    f.time(op.due),
                    _request(world, f, op.provider, op.effect),
                    f.value(op.message),
                )
            )
            for op in world.ops
        )
    )
    deliveries = tuple(
        sorted(
            repr(
                (d.recipient, d.signer, f.value(d.message), tuple(sorted(d.relays)), f.time(d.due))
            )
            for d in world.deliveries
        )
    )
    return (
        tuple(providers),
        relays,
        ops,
        deliveries,
        world.budget.key(),
        world.max_token,
        world.max_epoch,
    )


def _request(world: World, f: _Form, provider: str, effect: Any) -> Any:
    """An effect, its request id relative to its machine's counter."""
    request = getattr(effect, "request_id", None)
    if request is None:
        return f.value(effect)
    e = world.providers[provider].election
    rel = request if e is None else request - e._next_request
    return f.value(attrs.evolve(effect, request_id=rel))
