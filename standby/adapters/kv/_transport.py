"""The rules of a transport over one linearizable key-value store (etcd, Redis).

Private to :mod:`standby.adapters.etcd` and :mod:`standby.adapters.redis`.
:class:`KvTransport` holds everything the two decide the same way: the
read-modify-swap loops of ``publish`` and of the claims (a swap that finds
the key changed reads again, never assumes), the proof check of a held
claim, the retry-until-deadline loop and the reconnecting loop of a
subscription. A subclass says how to read a key and how to swap it.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, ClassVar, Final, TypeVar

import anyio
import attrs

from ...core._errors import IdentityError, TransportError, WireError
from ...core._models import Envelope, Message, PromotionClaim
from ...protocols._contracts import (
    ClaimOutcome,
    PublishResult,
    Query,
    QueryResult,
    claim_wins,
    is_newer,
    message_kind,
    newest_per_key,
)
from ...wire import Codec
from .._stream import StreamSubscription
from .._transport_base import (
    TransportBase,
    canonical_query,
    check_backoff,
    check_retention,
    keep_recent,
)
from ._names import ABSENT, Slot, canonical_account, claim_matches, decode_claim

__all__ = ["KvTransport", "Refused", "Retry"]

_T = TypeVar("_T")

#: Keys whose last written version is remembered (saves a read per publish).
_KNOWN_KEPT: Final = 4096


class Retry(Exception):
    """An attempt that must be tried again (after reading again)."""


class Refused(Exception):
    """A request the store refused for good (permission denied, invalid)."""


class KvTransport(TransportBase):
    """A provider's connection to one store; ``RelayTransport`` and ``AtomicClaims``.

    The store counts as one relay, named :attr:`name`. A subclass provides
    the reads (:meth:`_read_message`, :meth:`_read_claim`,
    :meth:`_read_proof`, :meth:`_stored`), the swaps (:meth:`_swap_message`,
    :meth:`_swap_claim`), the decoding of its own stored values
    (:meth:`_decode_own`), a subscription (:meth:`_subscription`) and one
    connection of its live feed (:meth:`_connect_once`).
    """

    #: The account scheme of identities (``etcd:``, ``redis:``).
    _scheme: ClassVar[str]
    #: What a message lives in, for the error of a lost swap ("key", "field").
    _unit: ClassVar[str] = "key"
    #: The counter of live-feed reconnections, and the name of its tasks.
    _reconnects: ClassVar[str]
    _task: ClassVar[str]

    def __init__(
        self,
        *,
        user: str,
        password: str,
        name: str,
        codec: Codec | None,
        wall_clock: Callable[[], float],
        connect_timeout: float,
        reconnect_backoff: tuple[float, float],
        subscription_buffer: int,
        live_backlog: float,
        retention: float | None,
    ) -> None:
        super().__init__()
        #: Seconds a written key is kept after its last write (``None``: for ever).
        self.retention = check_retention(retention)
        self.reconnect_backoff = check_backoff("reconnect_backoff", reconnect_backoff)
        self.user = self.canonical(user)
        self._password = password
        self.name = name
        self.codec = codec if codec is not None else Codec()
        self.wall_clock = wall_clock
        self.connect_timeout = connect_timeout
        self.subscription_buffer = subscription_buffer
        self.live_backlog = live_backlog
        self._known: OrderedDict[Hashable, Slot] = OrderedDict()
        self._open = 0

    # ----------------------------------------------------------------- identity

    @property
    def identity(self) -> str:
        """The store account this transport writes as (canonical)."""
        return self.user

    @property
    def relay_count(self) -> int:
        """One: the store is linearizable, so it counts as one relay."""
        return 1

    @property
    def relays(self) -> tuple[str, ...]:
        """The name of the one relay (as it appears in results and envelopes)."""
        return (self.name,)

    def canonical(self, identity: str) -> str:
        """The canonical form of a store account name (see ``canonical_identity``)."""
        return canonical_account(identity, scheme=self._scheme)

    def open_requests(self) -> int:
        """Requests in flight (the live feed excluded): a leak check for cancellation."""
        return self._open

    # ----------------------------------------------------------------- what a store does

    async def _read_message(self, where: Hashable) -> Slot:
        raise NotImplementedError

    async def _read_claim(self, workload_id: str) -> Slot:
        raise NotImplementedError

    async def _read_proof(self, claimant: str, workload_id: str) -> Slot:
        raise NotImplementedError

    async def _stored(self, query: Query) -> list[Envelope[Message]]:
        """One read of every stored message matching ``query`` (authors canonical)."""
        raise NotImplementedError

    async def _swap_message(self, where: Hashable, current: Slot, data: bytes) -> tuple[bool, Slot]:
        """Write ``data`` at ``where`` iff it still holds ``current``.

        Returns ``(True, what is stored now)`` when written, else ``(False,
        what is there instead)``.
        """
        raise NotImplementedError

    async def _swap_claim(
        self, workload_id: str, current: Slot, data: bytes | None
    ) -> tuple[bool, Slot]:
        """Write (``None``: delete) the claim key and own proof iff it holds ``current``."""
        raise NotImplementedError

    def _where(self, message: Message) -> Hashable:
        """Where this provider stores ``message`` (the key of :meth:`_read_message`)."""
        raise NotImplementedError

    def _decode_own(self, where: Hashable, value: bytes) -> Message | None:
        raise NotImplementedError

    def _subscription(self, query: Query) -> StreamSubscription:
        raise NotImplementedError

    async def _connect_once(self, subscription: Any) -> bool:
        """Run the live feed once until it ends; ``True``: reconnect without a pause."""
        raise NotImplementedError

    async def _probe(self, deadline: float) -> None:
        """Connect, log in and make one cheap request by ``deadline``.

        Raises ``Retry`` or ``Refused`` when it did not go through.
        """
        raise NotImplementedError

    # ----------------------------------------------------------------- connecting

    async def _warm_up(self) -> None:
        with contextlib.suppress(Exception):
            await self._connect(anyio.current_time() + self.connect_timeout)

    async def _connect(self, deadline: float) -> bool:
        """Log in and make a cheap request, trying again until ``deadline``."""

        async def attempt() -> bool:
            await self._probe(deadline)
            return True

        done, _error = await self._until(deadline, attempt, what="connect")
        return bool(done)

    async def wait_connected(
        self,
        *,
        timeout: float,  # noqa: ASYNC109 - like publish and query
    ) -> frozenset[str]:
        """Connect and log in to the store; ``{name}`` once ready within ``timeout``, else ``{}``.

        Implements :class:`~standby.protocols.WaitsConnected`: tries again
        (with a growing pause) while the store cannot be reached, and gives
        up at once when it refuses the login. Entering the transport starts
        connecting in the background (for up to ``connect_timeout``); this
        waits for that first, then makes one cheap request. The node calls
        it before its first request, so that request pays no handshake or
        login.
        """
        self._check_running()
        deadline = anyio.current_time() + timeout
        with anyio.move_on_after(timeout):
            await self._warm_up_done()  # one login at a time
        ready = await self._connect(deadline)
        return frozenset({self.name}) if ready else frozenset()

    # ----------------------------------------------------------------- retrying

    async def _until(
        self, deadline: float, attempt: Callable[[], Awaitable[_T]], *, what: str
    ) -> tuple[_T | None, str | None]:
        """Retry ``attempt`` until it returns or ``deadline`` passes.

        Returns ``(result, None)``, or ``(None, reason)`` when the deadline
        passed or the store refused the request for good.
        """
        error: str | None = None
        pause = 0.01
        with anyio.move_on_after(max(0.0, deadline - anyio.current_time())):
            while True:
                try:
                    return await attempt(), None
                except Refused as exc:
                    return None, str(exc)
                except Retry as exc:
                    error = str(exc)
                    self._count("retries")
                await anyio.sleep(pause)
                pause = min(pause * 2, 0.2)
        return None, f"{what} timed out" + (f" (last error: {error})" if error else "")

    def _encode(self, message: Message) -> bytes:
        try:
            message_kind(message)
            return self.codec.encode(message)
        except (TypeError, WireError) as exc:
            raise TransportError(f"cannot publish {message!r:.100}: {exc}") from exc

    # ----------------------------------------------------------------- RelayTransport

    async def publish(
        self,
        message: Message,
        *,
        timeout: float,  # noqa: ASYNC109 - part of the protocol
    ) -> PublishResult:
        """Store ``message`` unless a newer version is stored; see ``RelayTransport.publish``.

        A version older than the stored one is acknowledged without being
        written: the store already holds what every reader must see.
        """
        self._check_running()
        data = self._encode(message)
        where = self._where(message)
        deadline = anyio.current_time() + timeout
        # What it held when last written here, or (never written) a guess that
        # it is absent. Either only guides the first swap: when it is wrong,
        # the swap writes nothing and returns what is there.
        state: list[Slot] = [self._known.get(where, ABSENT)]
        cached = [True]

        async def attempt() -> bool:
            if not state:
                self._count("rereads")
                state.append(await self._read_message(where))
            current = state.pop()
            fresh = not cached
            cached.clear()
            if current.value is not None and current.value != data:
                stored = self._decode_own(where, current.value)
                if stored is not None and not is_newer(message, stored):
                    if fresh:
                        return True  # a newer version is stored: nothing to write
                    # Only what was just read shows that; a remembered value
                    # only guides the swap.
                    raise Retry("check the stored version")
            elif fresh and current.value == data:
                return True  # the very same message is stored
            self._known.pop(where, None)
            written, now_there = await self._swap_message(where, current, data)
            if written:
                keep_recent(self._known, where, now_there, _KNOWN_KEPT)
                return True
            state.append(now_there)
            raise Retry(f"the {self._unit} changed meanwhile")

        done, error = await self._until(deadline, attempt, what="publish")
        if done:
            return PublishResult(frozenset({self.name}))
        return PublishResult(frozenset(), {self.name: error or "timed out"})

    async def query(
        self,
        query: Query,
        *,
        timeout: float,  # noqa: ASYNC109 - part of the protocol
    ) -> QueryResult:
        """Read the stored messages matching ``query``; see ``RelayTransport.query``."""
        self._check_running()
        query = self._canonical_query(query)
        if query.authors is not None and not query.authors:
            return QueryResult((), frozenset({self.name}))
        deadline = anyio.current_time() + timeout

        async def attempt() -> list[Envelope[Message]]:
            return await self._stored(query)

        found, error = await self._until(deadline, attempt, what="query")
        if found is None:
            return QueryResult((), frozenset(), {self.name: error or "timed out"})
        return QueryResult(newest_per_key(found), frozenset({self.name}))

    def _canonical_query(self, query: Query) -> Query:
        return canonical_query(query, self.canonical)

    def subscribe(self, query: Query) -> StreamSubscription:
        """Receive matching messages as they are stored; see ``RelayTransport.subscribe``.

        Which stored messages come first depends on the store (see its
        class). Raises :class:`~standby.TransportError` when the transport
        is not running or the query names a malformed author.
        """
        self._check_running()
        subscription = self._subscription(self._canonical_query(query))
        self._subscriptions.add(subscription)
        assert self._group is not None
        self._group.start_soon(self._follow, subscription, name=f"{self._task}-{id(subscription)}")
        return subscription

    async def _follow(self, subscription: StreamSubscription) -> None:
        """Keep ``subscription``'s live feed connected, with a growing pause between tries."""
        first, longest = self.reconnect_backoff
        wait = first
        with subscription._scope:
            while not subscription.closed:
                attempt_at = anyio.current_time()
                if await self._connect_once(subscription):
                    continue
                if subscription.connected_at >= attempt_at:
                    wait = first  # it was connected: start the backoff afresh
                self._count(self._reconnects)
                await anyio.sleep(wait)
                wait = min(wait * 2, longest)

    # ----------------------------------------------------------------- AtomicClaims

    async def _holder(self, current: Slot) -> PromotionClaim | None:
        """The live claim in a claim key: its claimant's proof must equal it."""
        held = decode_claim(self.codec, current.value)
        if held is None:
            if current.value is not None:
                self._count("forged_claims")
            return None
        try:
            claimant = self.canonical(held.claimant)
        except IdentityError:
            self._count("forged_claims")
            return None
        proof = await self._read_proof(claimant, held.workload_id)
        if proof.value != current.value:
            self._count("forged_claims")
            return None
        return held

    async def compare_and_set_claim(
        self,
        claim: PromotionClaim,
        *,
        timeout: float,  # noqa: ASYNC109 - part of the protocol
    ) -> ClaimOutcome:
        """Hold ``(claim.workload_id, claim.epoch)`` unless taken; see ``AtomicClaims``.

        The claim is made in this transport's name (its ``claimant`` is set
        to :attr:`identity`) and decided by
        :func:`~standby.protocols.claim_wins`; the claim key and this
        provider's proof are written in one atomic swap that compares the
        claim key with what was read.
        """
        self._check_running()
        claim = attrs.evolve(claim, claimant=self.user)
        data = self._encode(claim)
        deadline = anyio.current_time() + timeout
        # First guess: nobody holds the key (create-if-absent). When wrong, the
        # swap fails and returns the holder, and the rule decides.
        state: list[Slot] = [ABSENT]

        async def attempt() -> ClaimOutcome:
            if not state:
                self._count("rereads")
                state.append(await self._read_claim(claim.workload_id))
            current = state.pop()
            held = decode_claim(self.codec, current.value)
            if not claim_wins(claim, held):
                # Only a genuine claim (its claimant's proof matches) blocks.
                held = await self._holder(current)
                if not claim_wins(claim, held):
                    return ClaimOutcome(won=False, holder=held)
            written, now_there = await self._swap_claim(claim.workload_id, current, data)
            if written:
                return ClaimOutcome(won=True)
            state.append(now_there)
            raise Retry("the claim key changed meanwhile")

        outcome, error = await self._until(deadline, attempt, what="compare_and_set_claim")
        if outcome is None:
            raise TransportError(f"claim of epoch {claim.epoch}: outcome unknown: {error}")
        return outcome

    async def release_claim(
        self,
        claim: PromotionClaim,
        *,
        timeout: float,  # noqa: ASYNC109 - part of the protocol
    ) -> None:
        """Release ``claim`` if it still holds its epoch; see ``AtomicClaims``."""
        self._check_running()
        claim = attrs.evolve(claim, claimant=self.user)
        deadline = anyio.current_time() + timeout

        async def attempt() -> bool:
            current = await self._read_claim(claim.workload_id)
            held = decode_claim(self.codec, current.value)
            if current.value is None or held is None or not claim_matches(held, claim):
                return True
            written, _now = await self._swap_claim(claim.workload_id, current, None)
            if not written:
                raise Retry("the claim key changed meanwhile")
            return True

        done, error = await self._until(deadline, attempt, what="release_claim")
        if not done:
            raise TransportError(f"release of epoch {claim.epoch}: {error}")

    async def holder(
        self,
        workload_id: str,
        *,
        timeout: float,  # noqa: ASYNC109 - like publish and query
    ) -> PromotionClaim | None:
        """The live claim holding ``workload_id``'s newest epoch (``None``: none)."""
        self._check_running()
        deadline = anyio.current_time() + timeout

        async def attempt() -> tuple[PromotionClaim | None]:
            return (await self._holder(await self._read_claim(workload_id)),)

        found, error = await self._until(deadline, attempt, what="holder")
        if found is None:
            raise TransportError(f"cannot read the claim of {workload_id!r}: {error}")
        return found[0]
