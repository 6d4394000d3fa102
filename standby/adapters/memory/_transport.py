"""A provider's view of the in-memory relays.

Re-exported by :mod:`standby.adapters.memory`, their public home.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
import attrs

from ...aio import Steps, at_once, at_once_steps, run_steps
from ...core._errors import TransportError
from ...core._models import Envelope, Message, PromotionClaim
from ...protocols._contracts import (
    ClaimOutcome,
    PublishResult,
    Query,
    QueryResult,
    TransportDrop,
    claim_wins,
    message_kind,
    newest_per_key,
)
from .._pacing import Lane, Pacing, PublishWindow, lane_of, send_paced, window_for
from ._relay import canonical_identity

if TYPE_CHECKING:
    from ._network import MemoryRelayNetwork, MemorySubscription

__all__ = ["MemoryAtomicTransport", "MemoryTransport"]


def _congested(reason: str) -> bool:
    """Whether a memory relay's answer says it is overloaded or the message got lost."""
    return reason in ("lost in transit", "acknowledgement lost") or reason.startswith(
        ("rejected:", "rate-limited:")
    )


class MemoryTransport:
    """A provider's view of a :class:`MemoryRelayNetwork`; implements ``RelayTransport``."""

    def __init__(
        self, network: MemoryRelayNetwork, identity: str, *, pacing: Pacing | None = None
    ) -> None:
        self._network = network
        self._identity = identity
        self._pacing = network.pacing if pacing is None else pacing
        #: The bulk window of each relay (used only when the relays charge costs).
        self.windows: dict[str, PublishWindow] = {}
        self._publishes = itertools.count()
        self._severed = False
        self._opened: list[MemorySubscription] = []
        self._drop_hook: Callable[[TransportDrop], None] | None = None
        self.drops: collections.deque[TransportDrop] = collections.deque(maxlen=1000)
        """The latest 1000 messages this transport's subscriptions dropped, oldest first."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._identity!r})"

    def sever(self) -> None:
        """The process behind this transport is gone (``kill -9``).

        Nothing it sends from now on reaches a relay, not even a publish or a
        compare-and-set already in flight; its subscriptions close at once
        (the relays see the connections drop); new calls raise
        :class:`~standby.TransportError`. Other transports of the same
        identity (a restarted process) are not affected.
        """
        self._severed = True
        for subscription in self._opened:
            subscription._close()
        self._opened.clear()

    def close(self) -> None:
        """The end of this transport: :meth:`sever`, and let go of the network.

        Call it once nothing uses the transport any more: what the network's
        relays hold then lives only as long as something else keeps the
        network (a dropped node does not), and :attr:`network` is gone.
        Idempotent.
        """
        self.sever()
        self._drop_hook = None
        self.__dict__.pop("_network", None)

    @property
    def severed(self) -> bool:
        """Whether :meth:`sever` was called."""
        return self._severed

    def _alive(self) -> None:
        if self._severed:
            raise TransportError(f"the transport of {self._identity!r} was severed")

    def set_drop_hook(self, hook: Callable[[TransportDrop], None] | None) -> None:
        """Report every dropped message to ``hook`` (``ReportsDrops``); ``None`` stops."""
        self._drop_hook = hook

    def _report(self, drop: TransportDrop) -> None:
        self.drops.append(drop)
        hook = self._drop_hook
        if hook is not None:
            with contextlib.suppress(Exception):
                hook(drop)

    @property
    def identity(self) -> str:
        """The canonical identity this transport signs with."""
        return self._identity

    @property
    def relay_count(self) -> int:
        """How many relays the network has."""
        return len(self._network.relays)

    @property
    def pacing(self) -> Pacing:
        """How this transport uses each relay's connections."""
        return self._pacing

    def _connection(self, relay: str, lane: Lane) -> tuple[int, str, str]:
        """The key of this transport's connection to ``relay`` for ``lane``."""
        return (id(self), relay, lane.value)

    @property
    def network(self) -> MemoryRelayNetwork:
        """The network this transport belongs to."""
        return self._network

    def canonical(self, identity: str) -> str:
        """See :func:`canonical_identity`."""
        return canonical_identity(identity)

    async def wait_connected(
        self,
        *,
        timeout: float,  # noqa: ASYNC109 - like publish and query
    ) -> frozenset[str]:
        """The relays this transport reaches now (``WaitsConnected``); nothing to open.

        Returns at once, without a checkpoint: in-memory relays need no
        handshake, so a simulated node's schedule is the same with or without it.
        """
        self._alive()
        me = self._identity
        return frozenset(r for r in self._network.relays if self._network.reachable(me, r))

    async def publish(
        self,
        message: Message,
        *,
        timeout: float,  # noqa: ASYNC109 - part of the protocol
    ) -> PublishResult:
        """Send ``message`` to every relay; see ``RelayTransport.publish``."""
        self._alive()
        try:
            message_kind(message)
        except TypeError as exc:
            raise TransportError(f"cannot publish {message!r:.80}") from exc
        network = self._network
        me = self._identity
        answers: dict[str, str | None] = {}
        server = network.server
        limiter = network.limiter
        lane, rank = lane_of(self._pacing, message)
        order = next(self._publishes)
        links = network._links_of(me)

        def unreached(relay: str) -> None:
            """A leg cannot start: ``relay`` is down or cut off (the answer says which)."""
            answers[relay] = "down" if not network.relay(relay).up else "unreachable"

        def one(relay: str) -> Steps:
            if not links[relay].open:
                unreached(relay)
                return
            window = None if server is None else window_for(self.windows, self._pacing, relay, lane)
            if window is None:  # free relays: nothing to pace, nothing added
                yield from send(relay, first=False)
                return
            yield send_paced(
                window,
                rank,
                relay,
                answers,
                lambda: run_steps(send(relay, first=False)),
                _congested,
                order,
            )

        def send(relay: str, first: bool = True) -> Steps:
            # ``first``: the whole leg (free relays), starting as ``one`` does;
            # ``one`` itself passes False, having started the leg.
            link = links[relay]
            if first and not link.open:
                unreached(relay)
                return
            faults = link.faults  # those of the leg, whatever changes during it
            if limiter is not None:
                yield limiter.pace(me, relay)
            yield network._delay(faults)
            if not link.open:
                answers[relay] = "connection lost"
                return
            if network._lost(faults) or self._severed:
                answers[relay] = "lost in transit"
                return
            if limiter is not None and (refusal := limiter.admit_publish(me, relay)) is not None:
                answers[relay] = refusal
                return
            if server is None:
                network._store(relay, me, message)
            else:
                now = network.clock()
                kind = message_kind(message)
                done = server.store(relay, self._connection(relay, lane), me, kind, now)
                network._store_at(done, relay, me, message)
                yield done - now
            yield network._delay(faults)
            if network._lost(faults) or not link.open:
                answers[relay] = "acknowledgement lost"
                return
            answers[relay] = None

        if server is None and limiter is None:  # legs of delays only: no tasks on asyncio
            # Each leg is ``send`` itself: one generator a leg, rather than ``one``
            # delegating to ``send`` on every step.
            await at_once_steps(network.relays, send, timeout)
        else:
            await at_once(network.relays, lambda relay: run_steps(one(relay)), timeout)
        acked_by: list[str] = []
        errors: dict[str, str] = {}
        for relay in network.relays:
            if relay in answers and answers[relay] is None:
                acked_by.append(relay)
            else:
                errors[relay] = answers.get(relay) or "timed out"
        acked = frozenset(acked_by)
        network.published.append((network.clock(), me, message, acked))
        return PublishResult(acked, errors)

    async def query(
        self,
        query: Query,
        *,
        timeout: float,  # noqa: ASYNC109 - part of the protocol
    ) -> QueryResult:
        """Read from every relay; see ``RelayTransport.query``."""
        self._alive()
        network = self._network
        me = self._identity
        found: list[Envelope[Message]] = []
        answered: set[str] = set()
        errors: dict[str, str] = {}
        limiter = network.limiter
        links = network._links_of(me)

        async def one(relay: str) -> None:
            assert limiter is not None
            async with limiter.query(me, relay) as refusal:
                if refusal is not None:
                    errors[relay] = refusal
                    return
                await run_steps(ask(relay))

        def ask(relay: str) -> Steps:
            link = links[relay]
            if not link.open:
                errors[relay] = "down" if not network.relay(relay).up else "unreachable"
                return
            faults = link.faults  # those of the leg, whatever changes during it
            yield network._delay(faults)
            if not link.open or network._lost(faults):
                errors[relay] = "no answer"
                return
            server = network.server
            if server is None:
                matches = network.relay(relay).matching(query)
            else:
                # In order: the relay reads once it is done with what this
                # connection sent before, and answers after its own cost.
                connection = self._connection(relay, lane_of(self._pacing, None)[0])
                tags = len(query.workload_ids or ()) + len(query.authors or ())
                start, done = server.query(relay, connection, network.clock(), tags)
                yield start - network.clock()
                matches = network.relay(relay).matching(query)
                yield done + server.costs.per_result * len(matches) - start
            yield network._delay(faults)
            if not link.open or network._lost(faults):
                errors[relay] = "answer lost"
                return
            received = network.wall_clock()
            found.extend(
                [Envelope(message, signer, relay, received) for signer, message in matches]
            )
            answered.add(relay)

        if limiter is None:  # legs of delays only: no tasks on asyncio
            await at_once_steps(network.relays, ask, timeout)
        else:
            await at_once(network.relays, one, timeout)
        for relay in network.relays:
            if relay not in answered and relay not in errors:
                errors[relay] = "timed out"
        return QueryResult(
            newest_per_key(found, not_after=query.until), frozenset(answered), errors
        )

    def subscribe(self, query: Query) -> MemorySubscription:
        """Receive matching messages as relays store them; see ``RelayTransport.subscribe``."""
        self._alive()
        subscription = self._network._subscribe(self._identity, query, self._report)
        self._opened = [s for s in self._opened if not s.closed]
        self._opened.append(subscription)
        return subscription


class MemoryAtomicTransport(MemoryTransport):
    """A :class:`MemoryTransport` that also implements ``AtomicClaims``."""

    async def compare_and_set_claim(
        self,
        claim: PromotionClaim,
        *,
        timeout: float,  # noqa: ASYNC109 - part of the protocol
    ) -> ClaimOutcome:
        """Hold ``claim.epoch`` unless another claimant holds it or a later one."""
        claim = attrs.evolve(claim, claimant=self._identity)
        table = await self._claim_table(within=timeout, answered=True)
        held = table.get(claim.workload_id)
        if claim_wins(claim, held):
            table[claim.workload_id] = claim
            return ClaimOutcome(won=True)
        return ClaimOutcome(won=False, holder=held)

    async def release_claim(
        self,
        claim: PromotionClaim,
        *,
        timeout: float,  # noqa: ASYNC109 - part of the protocol
    ) -> None:
        """Release ``claim`` if it still holds its epoch."""
        table = await self._claim_table(within=timeout, answered=False)
        held = table.get(claim.workload_id)
        if held is not None and held.claimant == self._identity and held.epoch == claim.epoch:
            del table[claim.workload_id]

    async def _claim_table(self, *, within: float, answered: bool) -> dict[str, PromotionClaim]:
        """Reach the compare-and-set store in ``within`` seconds; its table, once there.

        The request crosses the link to the store's relay (one delay). With
        ``answered`` the store must still be reachable once it arrived, for
        the answer to come back; a severed transport gets no table either.
        """
        network = self._network
        with anyio.fail_after(within):
            relay = network._cas_relay(self._identity)
            await anyio.sleep(network._delay(network.faults(relay, self._identity)))
            if answered:
                network._cas_relay(self._identity)
        self._alive()
        return network._cas
