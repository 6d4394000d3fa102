"""What the memory relays charge for their work, and the order they do it in (failure mode 26).

A real relay spends time on every event it stores and every query it
answers, it stores one event at a time whichever connection it came on,
and it handles the messages of one connection strictly in order. Without
that, the memory relays answer a thousand claims as fast as one, a test
cannot see a provider's heartbeats wait behind its own bulk publishing, and
two providers publishing at once look twice as fast as one.
:class:`RelayCosts` names the charges; :class:`RelayServer` keeps when each
relay's store and each connection will be done with what they were sent.

With no costs (the default) the network never creates a server, so the
memory relays do exactly what they did before, at the same speed.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any

import attrs

__all__ = ["RelayCosts", "RelayServer"]


def _seconds(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{attribute.name} must be a number of seconds, got {value!r}")
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a finite number >= 0, got {value!r}")


@attrs.frozen
class RelayCosts:
    """Relay time charged per request, in seconds; each connection is served in order.

    A stored event costs ``per_event`` plus ``per_history`` for each event
    of the same kind its author already has on that relay (an addressable
    insert reads the author's older events of its kind). A query costs
    ``per_query``, plus ``per_tag`` for each workload id it names and
    ``per_result`` for each stored event it returns. A connection starts a
    request when it has finished the ones sent before it on that
    connection. A relay stores one event at a time, whatever connection it
    came on: events from separate connections queue for the same store
    (measured on ``nostr-relay``: two connections storing 1,000 claims each
    at once took 4.4 s, one connection storing 1,000 took 1.8 s). Queries on
    connections of their own are served beside the stores (a 100-tag read
    answered in 14 ms median while another connection stored 1,000
    events).

    :meth:`measured` gives the figures of one ``nostr-relay`` process.
    """

    per_event: float = attrs.field(default=0.0, validator=_seconds)
    per_history: float = attrs.field(default=0.0, validator=_seconds)
    per_query: float = attrs.field(default=0.0, validator=_seconds)
    per_tag: float = attrs.field(default=0.0, validator=_seconds)
    per_result: float = attrs.field(default=0.0, validator=_seconds)

    @classmethod
    def measured(cls) -> RelayCosts:
        """The costs measured on one ``nostr-relay`` process with the library's own events.

        2.1 ms of relay time per stored claim on a fresh author (about 490
        events a second on one connection), growing by 4 us per older event
        of the same author and kind (about 240 a second once the author has
        a thousand), which puts the failover mix of 1,000 workloads (1,000
        claims, 1,000 announcements and the reads) at the measured 8.8 s on
        one connection; a 100-tag read on an idle connection answers in
        13 to 28 ms. See issue 22 and ``docs/scale.md``.
        """
        return cls(
            per_event=0.0021, per_history=0.000004, per_query=0.005, per_tag=0.0001, per_result=5e-5
        )

    def failover_floor(self, workloads: int, *, read_size: int = 100) -> float:
        """The relay time a correlated failover of ``workloads`` needs on one relay, in seconds.

        One connection, pipelined: ``workloads`` claims and as many
        announcements by one fresh author (each kind's history growing from
        zero), and the batched claims reads of ``read_size`` workloads each.
        No transport can take over faster over these relays; the bound of
        failure mode 26 is 1.5 times this.
        """
        if workloads < 0:
            raise ValueError(f"workloads must be >= 0, got {workloads!r}")
        stores = workloads * self.per_event + self.per_history * workloads * (workloads - 1) / 2
        reads = -(-workloads // read_size)
        return 2 * stores + reads * self.per_query + workloads * (self.per_tag + self.per_result)

    @property
    def free(self) -> bool:
        """Whether every charge is zero (the relays then charge nothing and keep no order)."""
        return not (
            self.per_event or self.per_history or self.per_query or self.per_tag or self.per_result
        )


class RelayServer:
    """When each connection of the relays will be free (private to the memory relays)."""

    def __init__(self, costs: RelayCosts) -> None:
        self.costs = costs
        self._free_at: dict[Hashable, float] = {}
        #: When each relay's store is done with the events sent to it so far.
        self._store_free_at: dict[str, float] = {}
        self._history: dict[tuple[str, str, str], int] = {}
        #: Events stored and queries answered, per relay.
        self.served: dict[str, int] = {}

    def _serve(
        self, relay: str, connection: Hashable, arrived: float, cost: float, *, store: bool
    ) -> tuple[float, float]:
        start = max(arrived, self._free_at.get(connection, arrived))
        if store:
            start = max(start, self._store_free_at.get(relay, start))
        done = start + cost
        self._free_at[connection] = done
        if store:
            self._store_free_at[relay] = done
        self.served[relay] = self.served.get(relay, 0) + 1
        return start, done

    def store(
        self, relay: str, connection: Hashable, signer: str, kind: str, arrived: float
    ) -> float:
        """An event arrived on ``connection`` at ``arrived``: when the relay has stored it.

        It waits for the events sent before it on ``connection`` and for
        every event the relay was storing for anyone.
        """
        key = (relay, signer, kind)
        history = self._history.get(key, 0)
        self._history[key] = history + 1
        costs = self.costs
        cost = costs.per_event + costs.per_history * history
        return self._serve(relay, connection, arrived, cost, store=True)[1]

    def query(
        self, relay: str, connection: Hashable, arrived: float, tags: int
    ) -> tuple[float, float]:
        """A query of ``tags`` tags arrived on ``connection``: when the relay starts and ends it.

        The relay reads what it stored by the start; ``per_result`` for each
        result found then delays this answer but not the requests after it.
        """
        costs = self.costs
        cost = costs.per_query + costs.per_tag * tags
        return self._serve(relay, connection, arrived, cost, store=False)
