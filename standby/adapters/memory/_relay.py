"""The in-memory relays themselves: identities, link faults, one relay's store.

:class:`~standby.adapters.memory.MemoryRelayNetwork` (in ``_memory_network``)
ties the relays together; everything here is re-exported by
:mod:`standby.adapters.memory`.
"""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Callable
from typing import Any, Final

import attrs

from ...core._errors import IdentityError
from ...core._models import Heartbeat, Message
from ...protocols._contracts import Query, addressable_key, message_kind

__all__ = ["NO_FAULTS", "LinkFaults", "MemoryRelay", "canonical_identity"]

_IDENTITY: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def canonical_identity(identity: str) -> str:
    """Canonical form of an in-memory identity.

    Case and surrounding blanks do not matter and an optional ``mem:`` prefix
    is dropped, so ``" MEM:Alice "`` and ``"alice"`` are one identity. What is
    left must be 1-64 characters of ``a-z 0-9 . _ -`` starting with a letter
    or digit; anything else raises :class:`~standby.IdentityError`.
    """
    if not isinstance(identity, str):
        raise IdentityError(f"an identity must be a string, got {type(identity).__name__}")
    text = identity.strip().lower()
    text = text.removeprefix("mem:")
    if not _IDENTITY.fullmatch(text):
        raise IdentityError(
            f"malformed identity {identity!r}: expected 1-64 characters of a-z, 0-9, '.', "
            "'_', '-' (optionally prefixed with 'mem:')"
        )
    return text


# --------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------


def _probability(_inst: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be a probability in [0, 1], got {value}")


def _duration(_inst: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a finite number >= 0, got {value}")


@attrs.frozen
class LinkFaults:
    """Faults on the link between a provider and a relay (each direction).

    ``latency`` is a fixed one-way delay; ``jitter`` adds a uniform random
    extra in ``[0, jitter]`` (which reorders messages); ``drop`` is the chance
    a message (a publish, a query answer, a delivery) is lost; ``duplicate``
    the chance a subscription delivery happens twice.
    """

    latency: float = attrs.field(default=0.0, validator=_duration)
    jitter: float = attrs.field(default=0.0, validator=_duration)
    drop: float = attrs.field(default=0.0, validator=_probability)
    duplicate: float = attrs.field(default=0.0, validator=_probability)

    def combine(self, other: LinkFaults) -> LinkFaults:
        """Both faults at once: delays add up, losses and duplicates compound."""
        return LinkFaults(
            latency=self.latency + other.latency,
            jitter=self.jitter + other.jitter,
            drop=1 - (1 - self.drop) * (1 - other.drop),
            duplicate=1 - (1 - self.duplicate) * (1 - other.duplicate),
        )


NO_FAULTS: Final = LinkFaults()


@attrs.frozen
class _Stored:
    signer: str
    message: Message
    stored_at: float


def _workload(message: Message) -> str | None:
    return None if isinstance(message, Heartbeat) else message.workload_id


class MemoryRelay:
    """One relay: it stores every message it receives and answers queries.

    By default a relay keeps every version of an addressable message (readers
    pick the newest). With ``replace_on_arrival=True`` it keeps only the last
    version that *arrived* per key, so a stale message arriving late hides a
    newer one: the misbehaviour that breaks claims over plain relays. With
    ``amnesiac=True`` it acknowledges what it receives but neither keeps it
    nor passes it on (a relay that loses acknowledged events).

    A query that names workloads looks only at their messages and the
    heartbeats (an index by workload id, in arrival order), so a read of a
    hundred workloads does not scan what a thousand others stored.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.up = True
        self.replace_on_arrival = False
        self.amnesiac = False
        self._stored: list[_Stored] = []
        # The same messages indexed twice, each list in arrival order: by kind
        # (a query reads the kinds it asks for) and by workload, heartbeats
        # under None (a read naming a hundred workloads does not scan what a
        # thousand others stored).
        self._by_kind: dict[str, list[tuple[int, _Stored]]] = {}
        self._by_workload: dict[str | None, list[tuple[int, _Stored]]] = {}
        self._arrivals = 0

    def __repr__(self) -> str:
        state = "up" if self.up else "down"
        return f"MemoryRelay({self.name!r}, {state}, {len(self._stored)} stored)"

    def store(self, signer: str, message: Message, at: float) -> None:
        """Store ``message`` signed by ``signer``."""
        stored = _Stored(signer, message, at)
        if self.replace_on_arrival:
            key = addressable_key(signer, message)
            self._keep(lambda s: addressable_key(s.signer, s.message) != key)
        self._stored.append(stored)
        self._arrivals += 1
        entry = (self._arrivals, stored)
        self._by_kind.setdefault(message_kind(message), []).append(entry)
        self._by_workload.setdefault(_workload(message), []).append(entry)

    def matching(self, query: Query) -> list[tuple[str, Message]]:
        """Stored ``(signer, message)`` pairs matching ``query``, in arrival order."""
        if query.workload_ids is None:
            lists = [self._by_kind.get(kind, ()) for kind in query.kinds]
        else:
            keys = (None, *query.workload_ids) if "heartbeat" in query.kinds else query.workload_ids
            lists = [self._by_workload.get(w, ()) for w in keys]
        lists = [entries for entries in lists if entries]
        if not lists:
            return []
        entries = lists[0] if len(lists) == 1 else heapq.merge(*lists, key=lambda e: e[0])
        return [(s.signer, s.message) for _, s in entries if query.matches(s.signer, s.message)]

    def stored(self) -> list[tuple[str, Message]]:
        """Everything stored, in arrival order."""
        return [(s.signer, s.message) for s in self._stored]

    def forget(self, predicate: Callable[[str, Message], bool] | None = None) -> int:
        """Lose stored messages (all, or those matching ``predicate``); returns how many."""
        before = len(self._stored)
        if predicate is None:
            self._keep(lambda _s: False)
        else:
            self._keep(lambda s: not predicate(s.signer, s.message))
        return before - len(self._stored)

    def _keep(self, keep: Callable[[_Stored], bool]) -> None:
        """Keep only what ``keep`` accepts, in the list and in the index."""
        self._stored = [s for s in self._stored if keep(s)]
        for kind, entries in self._by_kind.items():
            self._by_kind[kind] = [(n, s) for n, s in entries if keep(s)]
        for workload, entries in self._by_workload.items():
            self._by_workload[workload] = [(n, s) for n, s in entries if keep(s)]
