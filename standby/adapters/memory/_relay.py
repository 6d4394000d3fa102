"""The in-memory relays themselves: identities, link faults, one relay's store.

:class:`~standby.adapters.memory.MemoryRelayNetwork` (in ``_memory_network``)
ties the relays together; everything here is re-exported by
:mod:`standby.adapters.memory`.
"""

from __future__ import annotations

import heapq
import math
import re
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
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


#: One stored message: ``(arrival, signer, message, stored_at)``, ``arrival``
#: counting the relay's arrivals from 1. Entries compare by their arrival
#: alone (no two share one), so a merge of lists in arrival order needs no key.
_Entry = tuple[int, str, Message, float]


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
        self._up = True
        #: Called after :attr:`up` changes (the network updates its links);
        #: weak, so that the network and its relays make no cycle.
        self._on_up: weakref.WeakMethod[Callable[[], None]] | None = None
        self.replace_on_arrival = False
        self.amnesiac = False
        self._stored: list[_Entry] = []
        # The same messages indexed twice, each list in arrival order: by kind
        # (a query reads the kinds it asks for) and by workload, heartbeats
        # under None (a read naming a hundred workloads does not scan what a
        # thousand others stored).
        self._by_kind: defaultdict[str, list[_Entry]] = defaultdict(list)
        self._by_workload: defaultdict[str | None, list[_Entry]] = defaultdict(list)
        self._arrivals = 0

    @property
    def up(self) -> bool:
        """Whether the relay is up: a relay down neither stores, answers nor delivers."""
        return self._up

    @up.setter
    def up(self, value: bool) -> None:
        self._up = value
        changed = None if self._on_up is None else self._on_up()
        if changed is not None:
            changed()

    def __repr__(self) -> str:
        state = "up" if self._up else "down"
        return f"MemoryRelay({self.name!r}, {state}, {len(self._stored)} stored)"

    def store(self, signer: str, message: Message, at: float) -> None:
        """Store ``message`` signed by ``signer``."""
        if self.replace_on_arrival:
            key = addressable_key(signer, message)
            self._keep(lambda e: addressable_key(e[1], e[2]) != key)
        self._arrivals += 1
        entry = (self._arrivals, signer, message, at)
        self._stored.append(entry)
        self._by_kind[message_kind(message)].append(entry)
        workload = None if isinstance(message, Heartbeat) else message.workload_id
        self._by_workload[workload].append(entry)

    def matching(self, query: Query) -> list[tuple[str, Message]]:
        """Stored ``(signer, message)`` pairs matching ``query``, in arrival order."""
        index: Mapping[Any, list[_Entry]]
        keys: Iterable[Any]  # kinds, or workloads (None: the heartbeats)
        if query.workload_ids is None:
            index = self._by_kind
            keys = query.kinds
        else:
            index = self._by_workload
            keys = (None, *query.workload_ids) if "heartbeat" in query.kinds else query.workload_ids
        lists = []  # a loop, not a comprehension: no call on each read
        for key in keys:
            found = index.get(key)
            if found:
                lists.append(found)
        if not lists:
            return []
        entries = lists[0] if len(lists) == 1 else heapq.merge(*lists)
        matches = query.matches
        return [(signer, message) for _, signer, message, _ in entries if matches(signer, message)]

    def stored(self) -> list[tuple[str, Message]]:
        """Everything stored, in arrival order."""
        return [(signer, message) for _, signer, message, _ in self._stored]

    def forget(self, predicate: Callable[[str, Message], bool] | None = None) -> int:
        """Lose stored messages (all, or those matching ``predicate``); returns how many."""
        before = len(self._stored)
        if predicate is None:
            self._keep(lambda _e: False)
        else:
            self._keep(lambda e: not predicate(e[1], e[2]))
        return before - len(self._stored)

    def _keep(self, keep: Callable[[_Entry], bool]) -> None:
        """Keep only what ``keep`` accepts, in the list and in the index."""
        self._stored = [e for e in self._stored if keep(e)]
        for kind, entries in self._by_kind.items():
            self._by_kind[kind] = [e for e in entries if keep(e)]
        for workload, entries in self._by_workload.items():
            self._by_workload[workload] = [e for e in entries if keep(e)]
