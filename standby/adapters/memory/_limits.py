"""Per-connection relay limits for the memory relays (failure mode 19).

Public relays bound what one connection may ask of them: ``nostr-relay``
refuses a ``REQ`` beyond its subscription limit (a ``NOTICE`` "rejected: too
many subscriptions"; a query is a subscription until it is closed), runs a
bounded number of queries at once, and may rate-limit. :class:`RelayLimits`
models those limits for :class:`~standby.adapters.memory.MemoryRelayNetwork`
so a test can show that correlated failover stays inside them.

Two sides, as with a real relay:

- the **relay** refuses what breaks a limit (the request fails for that
  relay with a reason starting ``rejected:`` or ``rate-limited:``) and
  counts it in :attr:`RelayLimiter.refusals`;
- a **transport** that knows the limits waits for room instead (a bounded
  pool of queries per connection, requests paced to the rate), as the Nostr
  transport does; ``respect=False`` turns that off, to watch the relay refuse.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import attrs

__all__ = ["RelayLimiter", "RelayLimits"]


def _optional_positive(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not (isinstance(value, (int, float)) and value > 0):
        raise ValueError(f"{attribute.name} must be None or > 0, got {value!r}")


@attrs.frozen
class RelayLimits:
    """What each relay allows one connection (one provider), ``None``: unbounded.

    ``max_subscriptions`` counts live subscriptions and queries in flight
    together (a query is a subscription until it ends); ``max_queries`` is
    how many queries run at once; ``rate`` is requests (publishes and
    queries) per second, with a burst of ``max(1, rate)``. With ``respect``
    the transports wait for room rather than send what would be refused.
    """

    max_subscriptions: int | None = attrs.field(default=None, validator=_optional_positive)
    max_queries: int | None = attrs.field(default=None, validator=_optional_positive)
    rate: float | None = attrs.field(default=None, validator=_optional_positive)
    respect: bool = True

    @classmethod
    def nostr_relay_defaults(cls) -> RelayLimits:
        """The limits of ``nostr-relay`` as the test relays run it: 64 subscriptions, 10 queries."""
        return cls(max_subscriptions=64, max_queries=10)


class RelayLimiter:
    """The bookkeeping of :class:`RelayLimits` for one network (private to the memory relays)."""

    def __init__(self, limits: RelayLimits) -> None:
        self.limits = limits
        #: Refused requests, by reason.
        self.refusals: dict[str, int] = {}
        #: Most queries ever in flight on one connection.
        self.peak_queries = 0
        self._queries: dict[tuple[str, str], int] = {}
        self._live: dict[str, int] = {}
        self._tokens: dict[tuple[str, str], tuple[float, float]] = {}
        self._pools: dict[tuple[str, str], anyio.CapacityLimiter] = {}

    @property
    def refused(self) -> int:
        """How many requests the relays refused, in all."""
        return sum(self.refusals.values())

    def _refuse(self, reason: str) -> str:
        self.refusals[reason] = self.refusals.get(reason, 0) + 1
        return reason

    def _burst(self) -> float:
        rate = self.limits.rate
        return 0.0 if rate is None else max(1.0, rate)

    def _take_token(self, key: tuple[str, str], now: float) -> bool:
        rate = self.limits.rate
        if rate is None:
            return True
        tokens, at = self._tokens.get(key, (self._burst(), now))
        tokens = min(self._burst(), tokens + (now - at) * rate)
        if tokens < 1.0:
            self._tokens[key] = (tokens, now)
            return False
        self._tokens[key] = (tokens - 1.0, now)
        return True

    async def pace(self, identity: str, relay: str) -> None:
        """Transport side: reserve a place in ``relay``'s rate and wait until it is due.

        Requests paced this way are within the rate by construction, so the
        relay does not charge them again.
        """
        rate = self.limits.rate
        if rate is None or not self.limits.respect:
            return
        key = (identity, relay)
        now = anyio.current_time()
        tokens, at = self._tokens.get(key, (self._burst(), now))
        tokens = min(self._burst(), tokens + (now - at) * rate) - 1.0
        self._tokens[key] = (tokens, now)
        if tokens < 0:
            await anyio.sleep(-tokens / rate)

    def _charge(self, key: tuple[str, str]) -> bool:
        """Relay side: whether an unpaced request fits the rate."""
        if self.limits.respect:
            return True
        return self._take_token(key, anyio.current_time())

    def admit_publish(self, identity: str, relay: str) -> str | None:
        """Relay side: ``None`` to accept a publish, else the refusal."""
        if not self._charge((identity, relay)):
            return self._refuse("rate-limited: slow down")
        return None

    @asynccontextmanager
    async def query(self, identity: str, relay: str) -> AsyncIterator[str | None]:
        """One query on ``identity``'s connection to ``relay``: yields ``None`` or the refusal.

        With ``respect`` it first waits for a place in the connection's pool
        (``max_queries``, less the live subscriptions when the subscription
        limit is the tighter one) and for the rate.
        """
        key = (identity, relay)
        limits = self.limits
        pool: anyio.CapacityLimiter | None = None
        if limits.respect:
            size = _pool_size(limits, self._live.get(identity, 0))
            if size is not None:
                pool = self._pools.get(key)
                if pool is None:
                    pool = self._pools[key] = anyio.CapacityLimiter(size)
                pool.total_tokens = size
                await pool.acquire()
        try:
            if limits.respect:
                await self.pace(identity, relay)
            refusal = self._admit_query(key)
            if refusal is not None:
                yield refusal
                return
            self._queries[key] = running = self._queries.get(key, 0) + 1
            self.peak_queries = max(self.peak_queries, running)
            try:
                yield None
            finally:
                self._queries[key] -= 1
        finally:
            if pool is not None:
                pool.release()

    def _admit_query(self, key: tuple[str, str]) -> str | None:
        limits = self.limits
        running = self._queries.get(key, 0)
        if limits.max_queries is not None and running >= limits.max_queries:
            return self._refuse("rejected: too many concurrent queries")
        live = self._live.get(key[0], 0)
        if limits.max_subscriptions is not None and running + live >= limits.max_subscriptions:
            return self._refuse("rejected: too many subscriptions")
        if not self._charge(key):
            return self._refuse("rate-limited: slow down")
        return None

    def open_subscription(self, identity: str) -> str | None:
        """Relay side: ``None`` when a live subscription of ``identity`` fits, else the refusal."""
        limit = self.limits.max_subscriptions
        live = self._live.get(identity, 0)
        if limit is not None:
            running = max(
                (n for (who, _), n in self._queries.items() if who == identity), default=0
            )
            if live + running >= limit:
                return self._refuse("rejected: too many subscriptions")
        self._live[identity] = live + 1
        return None

    def close_subscription(self, identity: str) -> None:
        live = self._live.get(identity, 0)
        if live > 1:
            self._live[identity] = live - 1
        else:
            self._live.pop(identity, None)


def _pool_size(limits: RelayLimits, live: int) -> int | None:
    sizes = []
    if limits.max_queries is not None:
        sizes.append(limits.max_queries)
    if limits.max_subscriptions is not None:
        # Keep room for the live subscription and its replacement.
        sizes.append(max(1, limits.max_subscriptions - max(live, 1) - 1))
    return min(sizes) if sizes else None
