"""In-memory adapters: fault-injecting relays, a recording runtime, a slot store.

Everything here runs inside one process on anyio, so on trio's
``MockClock(autojump_threshold=0)`` hours of protocol time pass in
milliseconds. All randomness comes from a seeded :class:`random.Random`.

Relays::

    network = MemoryRelayNetwork(relays=3, seed=7)
    alice = network.transport("alice")       # signs as "alice"
    network.relay_down("relay-1")             # faults at any time
    network.partition("alice", ["relay-0", "relay-2"])
    network.set_faults(relay="relay-2", latency=0.2, jitter=0.5, drop=0.1, duplicate=0.2)

The signer of an envelope is always the identity of the transport that
published it (authenticated by construction); a stranger's transport can still
publish a body that names someone else, which is how tests forge messages.
Like the Nostr transport, a subscription asks the relays for the messages of
its workloads from anyone and drops those from outside its authors itself
(heartbeats are filtered by author at the relay); the transport reports each
such drop to the hook given to :meth:`MemoryTransport.set_drop_hook`
(``ReportsDrops``), which the node installs. Messages here carry no
signatures, so there are no bad-signature drops.

Runtime::

    record = RuntimeRecord()
    runtime = MemoryRuntime("alice", record=record, spawn_latency=2.0)
    ...
    assert record.max_concurrent("w1") == 1
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import anyio
import anyio.lowlevel

from ...core._errors import StoreError
from ...core._models import StandbySlot
from ...core._public import publish
from ...core._records import NodeState
from .._pacing import Pacing
from ._costs import RelayCosts
from ._limits import RelayLimits
from ._network import MemoryRelayNetwork, MemorySubscription
from ._relay import LinkFaults, MemoryRelay, canonical_identity
from ._runtime import MemoryHandle, MemoryRuntime, RunInterval, RuntimeEvent, RuntimeRecord
from ._transport import MemoryAtomicTransport, MemoryTransport

__all__ = [
    "LinkFaults",
    "MemoryAtomicTransport",
    "MemoryHandle",
    "MemoryRelay",
    "MemoryRelayNetwork",
    "MemoryRuntime",
    "MemorySlotStore",
    "MemorySubscription",
    "MemoryTransport",
    "Pacing",
    "RelayCosts",
    "RelayLimits",
    "RunInterval",
    "RuntimeEvent",
    "RuntimeRecord",
    "canonical_identity",
]


class MemorySlotStore:
    """A ``SlotStore`` in memory (survives a node restart within the process).

    Each save replaces the state. ``fail_next_save`` / ``fail_next_load``
    inject a :class:`~standby.StoreError`. ``saves`` counts successful saves.
    ``save_latency`` models a disk: a save becomes durable only when it
    returns, so a node killed (or a save cancelled) during that time leaves
    the old state, exactly what a restarted node must cope with.
    """

    def __init__(
        self, slots: Iterable[StandbySlot[Any]] = (), *, save_latency: float = 0.0
    ) -> None:
        self._state: NodeState[Any] = NodeState(tuple(slots))
        self.save_latency = save_latency
        self.saves = 0
        self.fail_next_save = False
        self.fail_next_load = False

    def __repr__(self) -> str:
        return f"MemorySlotStore({len(self._state.slots)} slots)"

    @property
    def slots(self) -> tuple[StandbySlot[Any], ...]:
        """The slots saved last."""
        return self._state.slots

    @property
    def state(self) -> NodeState[Any]:
        """The whole state saved last (what a restarted node would load)."""
        return self._state

    async def load(self) -> list[StandbySlot[Any]]:
        """The saved slots."""
        return list((await self.load_state()).slots)

    async def load_state(self) -> NodeState[Any]:
        """The saved state."""
        await anyio.lowlevel.checkpoint()
        if self.fail_next_load:
            self.fail_next_load = False
            raise StoreError("injected load failure")
        return self._state

    async def save(self, slots: Sequence[StandbySlot[Any]]) -> list[str]:
        """Replace the saved slots; nothing is withheld."""
        return await self.save_state(self._state.replace_slots(slots))

    async def save_state(self, state: NodeState[Any]) -> list[str]:
        """Replace the saved state once ``save_latency`` has passed; nothing is withheld."""
        if self.save_latency:
            await anyio.sleep(self.save_latency)
        else:
            await anyio.lowlevel.checkpoint()
        if self.fail_next_save:
            self.fail_next_save = False
            raise StoreError("injected save failure")
        self._state = state
        self.saves += 1
        return []


# The classes above are defined in private modules; their home is this one
# (``RelayLimits`` and ``Pacing`` are shared with the other transports and
# keep their own).
publish(__name__, globals(), [name for name in __all__ if name not in ("RelayLimits", "Pacing")])
