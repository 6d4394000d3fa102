"""A :class:`~standby.protocols.RelayTransport` with atomic claims over one Redis server.

Needs the ``redis`` extra (``pip install 'standby[redis]'``: ``coredis``,
which is built on anyio, so this runs on asyncio and on trio)::

    async with RedisTransport(
        "10.0.0.5", 6379, user="provider-a", password=os.environ["REDIS_PASSWORD"]
    ) as transport:
        async with StandbyNode(
            transport=transport, runtime=..., timing=Timing(relay_count=1, write_quorum=1)
        ) as node:
            ...

What it guarantees, and what it does not:

* **One relay, one point of failure.** A Redis server counts as one relay
  (:attr:`RedisTransport.relay_count` is 1). While it is down nobody can
  heartbeat or claim: every primary with standbys fences at its lease end
  and no standby promotes until it is back. Redis replication is
  asynchronous: after a failover to a replica (Sentinel, a managed
  service), a claim or heartbeat the old primary acknowledged may be gone,
  and a second standby can then win the same epoch. Fencing tokens
  (``SAFETY.md``, guarantee 3) still order the two. Use etcd for a store
  that keeps an acknowledged claim through the loss of a member.
* **Who wrote it.** The identity is the Redis ACL user name. Messages live
  in the hash ``<prefix>:p:<user>``, which the ACL lets only that user write
  (see :func:`provider_acl`); the signer of a value is taken from the key,
  never from its body.
* **Newest per key.** One field per addressable key; a publish replaces it
  only with a newer version by :func:`~standby.protocols.is_newer`, through
  a Lua compare-and-swap on the field's bytes.
* **Atomic claims.** Decided by :func:`~standby.protocols.claim_wins`;
  written by a Lua compare-and-swap of the claim key
  ``<prefix>:claims:<workload>`` against the value read, together with a
  proof in the claimant's own hash. A claim whose proof does not match
  counts as no claim.
* **Unknown outcomes are re-read.** A command whose connection broke or
  timed out may have run: the transport reads again before deciding.
* **Subscriptions** are pub/sub notifications naming the field that
  changed; the subscriber reads the value from the signer's hash (so a
  forged notification cannot forge a message). After a reconnection the
  stored messages of the last ``live_backlog`` seconds before the break are
  delivered again, to fill the gap.
"""

from __future__ import annotations

try:
    import coredis
    import coredis.exceptions
    import coredis.retry
except ImportError as _exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "standby.adapters.redis needs the optional dependencies of the 'redis' extra "
        f"(missing: {_exc.name}); install them with: pip install 'standby[redis]'"
    ) from _exc

import contextlib
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import MappingProxyType, TracebackType
from typing import Any, Final, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel
import attrs

from .._errors import IdentityError, TransportError, WireError
from .._models import Envelope, Message, PromotionClaim
from .._protocols import (
    ClaimOutcome,
    PublishResult,
    Query,
    QueryResult,
    claim_wins,
    is_newer,
    message_kind,
    newest_per_key,
)
from ..wire import Codec
from ._kv import (
    MESSAGE_FIELD_PREFIX,
    canonical_account,
    claim_matches,
    decode_claim,
    decode_stored,
    field_of,
    proof_field,
    quote_workload,
)
from ._stream import StreamSubscription

__all__ = [
    "RedisSubscription",
    "RedisTransport",
    "canonical_identity",
    "provider_acl",
]

_T = TypeVar("_T")

_PREFIX: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: Fields whose last written version is remembered (saves a read per publish).
_KNOWN_KEPT: Final = 4096

# Compare-and-swap of one hash field, then a notification naming the field.
# KEYS[1] hash; ARGV: field, expected-absent ('1'/'0'), expected, new, channel.
_PUT_FIELD: Final = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if (ARGV[2] == '1' and current == false) or (ARGV[2] == '0' and current == ARGV[3]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
  redis.call('PUBLISH', ARGV[5], ARGV[1])
  return {1}
end
if current == false then return {0} end
return {0, current}
"""

# Compare-and-swap of a claim key, writing (or deleting) the claimant's proof too.
# KEYS[1] claim key, KEYS[2] claimant's hash; ARGV: expected-absent, expected,
# new ('' deletes), proof field.
_SWAP_CLAIM: Final = """
local current = redis.call('GET', KEYS[1])
if (ARGV[1] == '1' and current == false) or (ARGV[1] == '0' and current == ARGV[2]) then
  if ARGV[3] == '' then
    redis.call('DEL', KEYS[1])
    redis.call('HDEL', KEYS[2], ARGV[4])
  else
    redis.call('SET', KEYS[1], ARGV[3])
    redis.call('HSET', KEYS[2], ARGV[4], ARGV[3])
  end
  return {1}
end
if current == false then return {0} end
return {0, current}
"""


def canonical_identity(identity: str) -> str:
    """Canonical form of a Redis ACL user name used as an identity (``redis:`` optional)."""
    return canonical_account(identity, scheme="redis")


def provider_acl(prefix: str, user: str) -> list[str]:
    """The ``ACL SETUSER`` rules (after ``on >password``) a provider needs.

    Read every key of the prefix; read and write its own hash and the
    shared claim keys; pub/sub on the prefix's channels; no administrative
    or dangerous commands.
    """
    prefix = _check_prefix(prefix)
    me = canonical_identity(user)
    return [
        "resetkeys",
        f"%R~{prefix}:*",
        f"%RW~{prefix}:p:{me}",
        f"%RW~{prefix}:claims:*",
        "resetchannels",
        f"&{prefix}:ch:*",
        "-@all",
        "+@read",
        "+@pubsub",
        "+@connection",
        "+@scripting",
        "+hset",
        "+hdel",
        "+set",
        "+del",
        "-@dangerous",
    ]


def _check_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
        raise ValueError(
            f"the key prefix must be 1-64 characters of A-Z a-z 0-9 . _ -, got {prefix!r}"
        )
    return prefix


def _cancellation_in(exc: BaseException) -> bool:
    """Whether ``exc`` is, or is a group holding, the event loop's cancellation."""
    if isinstance(exc, anyio.get_cancelled_exc_class()):
        return True
    inner = getattr(exc, "exceptions", None)
    return isinstance(inner, tuple) and any(_cancellation_in(e) for e in inner)


class _Retry(Exception):
    """An attempt that must be tried again (after reading again)."""


class _Refused(Exception):
    """The server refused the command for good (no permission, bad script)."""


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _bytes(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    return str(value).encode()


@attrs.frozen
class _Field:
    """What one hash field (or claim key) held when read: ``None`` for absent."""

    value: bytes | None


class RedisSubscription(StreamSubscription):
    """A live pub/sub subscription of a :class:`RedisTransport`; implements ``Subscription``.

    When the consumer falls more than ``buffer`` envelopes behind, newer
    deliveries are dropped and counted (``dropped_overflow``).
    """

    backend = "Redis"

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"RedisSubscription({self.query!r}, {state})"


class RedisTransport:
    """A provider's connection to one Redis server; ``RelayTransport`` and ``AtomicClaims``.

    ``user`` and ``password`` log in with an ACL user (the user name is the
    provider's identity; see :func:`provider_acl` for its rules).
    ``prefix`` starts every key and channel (default ``standby``); ``name``
    names the one relay in results and envelopes (default
    ``redis://host:port``). Use it as an async context manager.

    Options: ``codec``, ``wall_clock`` (Unix seconds, stamps
    ``received_at``), ``connect_timeout``, ``reconnect_backoff`` (first and
    longest wait between subscription reconnections), ``subscription_buffer``
    and ``live_backlog`` (how far back a subscription without ``since``, or
    one that reconnects, reads stored messages).
    """

    def __init__(
        self,
        host: str,
        port: int = 6379,
        *,
        user: str,
        password: str,
        prefix: str = "standby",
        name: str | None = None,
        codec: Codec | None = None,
        wall_clock: Callable[[], float] = time.time,
        connect_timeout: float = 5.0,
        reconnect_backoff: tuple[float, float] = (0.05, 2.0),
        subscription_buffer: int = 1024,
        live_backlog: float = 60.0,
    ) -> None:
        first, longest = reconnect_backoff
        if not 0 < first <= longest:
            raise ValueError(
                "reconnect_backoff must be (first, longest) with 0 < first <= longest, "
                f"got {reconnect_backoff!r}"
            )
        self.host = host
        self.port = port
        self.user = canonical_identity(user)
        self._password = password
        self.prefix = _check_prefix(prefix)
        self.name = name if name is not None else f"redis://{host}:{port}"
        self.codec = codec if codec is not None else Codec()
        self.wall_clock = wall_clock
        self.connect_timeout = connect_timeout
        self.reconnect_backoff = (first, longest)
        self.subscription_buffer = subscription_buffer
        self.live_backlog = live_backlog
        self._client: coredis.Redis[bytes] | None = None
        self._put_field: Any = None
        self._swap_claim: Any = None
        self._counters: dict[str, int] = {}
        self._known: OrderedDict[tuple[str, str], _Field] = OrderedDict()
        self._subscriptions: set[RedisSubscription] = set()
        self._group: anyio.abc.TaskGroup | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._open = 0
        self._last_subscription_error = ""

    def __repr__(self) -> str:
        state = "running" if self._group is not None else "stopped"
        return f"RedisTransport({self.user!r}, {self.name!r}, {state})"

    # ----------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> RedisTransport:
        if self._stack is not None:
            raise TransportError("this RedisTransport is already running")
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            client: coredis.Redis[bytes] = coredis.Redis(
                self.host,
                self.port,
                username=self.user,
                password=self._password,
                connect_timeout=self.connect_timeout,
                decode_responses=False,
                verify_version=False,
                retry_policy=coredis.retry.NoRetryPolicy(),
            )
            self._client = await stack.enter_async_context(client)
            stack.callback(self._forget_client)
            self._put_field = client.register_script(_PUT_FIELD)
            self._swap_claim = client.register_script(_SWAP_CLAIM)
            group = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(self._stopped)
            stack.callback(group.cancel_scope.cancel)
            self._group = group
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.__aexit__(exc_type, exc, tb)

    def _forget_client(self) -> None:
        self._client = None

    def _stopped(self) -> None:
        self._group = None
        for subscription in list(self._subscriptions):
            subscription._end()
        self._subscriptions.clear()

    def _require_running(self) -> coredis.Redis[bytes]:
        if self._group is None or self._client is None:
            raise TransportError(
                "the Redis transport is not running: use it as `async with RedisTransport(...)`"
            )
        return self._client

    # ----------------------------------------------------------------- identity

    @property
    def identity(self) -> str:
        """The ACL user name this transport writes as (canonical)."""
        return self.user

    @property
    def relay_count(self) -> int:
        """One: a single Redis server is one relay (and one point of failure)."""
        return 1

    @property
    def relays(self) -> tuple[str, ...]:
        """The name of the one relay (as it appears in results and envelopes)."""
        return (self.name,)

    def canonical(self, identity: str) -> str:
        """See :func:`canonical_identity`."""
        return canonical_identity(identity)

    # ----------------------------------------------------------------- observability

    @property
    def counters(self) -> Mapping[str, int]:
        """Counts of what happened: ``commands``, ``retries``, ``unknown_outcomes``,
        ``rereads``, ``subscription_errors``, ``subscription_reconnects``,
        ``dropped_malformed``, ``dropped_misplaced``, ``dropped_overflow``,
        ``forged_claims`` (read-only view)."""
        return MappingProxyType(self._counters)

    def open_requests(self) -> int:
        """Commands in flight (subscriptions excluded): a leak check for cancellation."""
        return self._open

    def _count(self, name: str, amount: int = 1) -> None:
        self._counters[name] = self._counters.get(name, 0) + amount

    # ----------------------------------------------------------------- keys

    def _hash(self, signer: str) -> str:
        return f"{self.prefix}:p:{signer}"

    def _channel(self, signer: str) -> str:
        return f"{self.prefix}:ch:{signer}"

    def _claim_key(self, workload_id: str) -> str:
        return f"{self.prefix}:claims:{quote_workload(workload_id)}"

    def _signer_of(self, key: bytes | str, part: str) -> str | None:
        text = _text(key)
        head = f"{self.prefix}:{part}:"
        if not text.startswith(head):
            return None
        signer = text[len(head) :]
        try:
            return signer if canonical_identity(signer) == signer else None
        except IdentityError:
            return None

    def _envelope(
        self, signer: str, field: bytes | str, data: bytes, query: Query | None
    ) -> Envelope[Message] | None:
        return decode_stored(
            self.codec,
            signer=signer,
            field=_text(field),
            data=data,
            relay=self.name,
            received_at=self.wall_clock(),
            query=query,
            counters=self._counters,
        )

    # ----------------------------------------------------------------- commands

    async def _run(self, command: Awaitable[_T]) -> _T:
        """Run one command; map its failures to retry (unknown outcome) or refusal."""
        self._count("commands")
        self._open += 1
        try:
            return await command
        except (
            coredis.exceptions.AuthenticationError,
            coredis.exceptions.AuthorizationError,
        ) as exc:
            raise _Refused(f"{self.name}: {exc}") from exc
        except coredis.exceptions.ResponseError as exc:
            if "NOPERM" in str(exc) or "no permissions" in str(exc):
                raise _Refused(f"{self.name}: {exc}") from exc
            raise _Retry(f"{self.name}: {exc}") from exc
        except (coredis.exceptions.RedisError, OSError, TimeoutError) as exc:
            self._count("unknown_outcomes")
            raise _Retry(f"{self.name}: {type(exc).__name__}: {exc}") from exc
        finally:
            self._open -= 1

    async def _until(
        self, deadline: float, attempt: Callable[[], Awaitable[_T]], *, what: str
    ) -> tuple[_T | None, str | None]:
        """Retry ``attempt`` until it returns or ``deadline`` passes; see the etcd transport."""
        error: str | None = None
        pause = 0.01
        with anyio.move_on_after(max(0.0, deadline - anyio.current_time())):
            while True:
                try:
                    return await attempt(), None
                except _Refused as exc:
                    return None, str(exc)
                except _Retry as exc:
                    error = str(exc)
                    self._count("retries")
                await anyio.sleep(pause)
                pause = min(pause * 2, 0.2)
        return None, f"{what} timed out" + (f" (last error: {error})" if error else "")

    async def _hget(self, key: str, field: str) -> _Field:
        client = self._require_running()
        return _Field(_bytes(await self._run(client.hget(key, field))))

    async def _swap(self, script: Any, keys: Sequence[str], args: Sequence[Any]) -> _Field | None:
        """Run a compare-and-swap script: ``None`` when applied, else what is there now."""
        answer = await self._run(script(keys=list(keys), args=list(args)))
        if not isinstance(answer, list) or not answer:
            raise _Retry(f"{self.name}: unexpected script answer {answer!r:.80}")
        if answer[0] == 1:
            return None
        return _Field(_bytes(answer[1]) if len(answer) > 1 else None)

    # ----------------------------------------------------------------- RelayTransport

    def _encode(self, message: Message) -> bytes:
        try:
            message_kind(message)
            return self.codec.encode(message)
        except (TypeError, WireError) as exc:
            raise TransportError(f"cannot publish {message!r:.100}: {exc}") from exc

    def _remember(self, where: tuple[str, str], value: _Field) -> None:
        self._known[where] = value
        self._known.move_to_end(where)
        while len(self._known) > _KNOWN_KEPT:
            self._known.popitem(last=False)

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
        self._require_running()
        data = self._encode(message)
        key, field = self._hash(self.user), field_of(message)
        where = (key, field)
        deadline = anyio.current_time() + timeout
        # What the field held when last written here, or (never written) a
        # guess that it is absent. Either only guides the first swap: when it
        # is wrong, the script writes nothing and returns what is there.
        state: list[_Field] = [self._known.get(where, _Field(None))]
        cached = [True]

        async def attempt() -> bool:
            if not state:
                self._count("rereads")
                state.append(await self._hget(key, field))
            current = state.pop()
            fresh = not cached
            cached.clear()
            if current.value is not None and current.value != data:
                stored = self._envelope(self.user, field, current.value, None)
                if stored is not None and not is_newer(message, stored.message):
                    if fresh:
                        return True  # a newer version is stored: nothing to write
                    # Only what was just read shows that; a remembered value
                    # only guides the swap.
                    raise _Retry("check the stored version")
            elif fresh and current.value == data:
                return True
            self._known.pop(where, None)
            absent = "1" if current.value is None else "0"
            now_there = await self._swap(
                self._put_field,
                [key],
                [field, absent, current.value or b"", data, self._channel(self.user)],
            )
            if now_there is None:
                self._remember(where, _Field(data))
                return True
            state.append(now_there)
            raise _Retry("the field changed meanwhile")

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
        """Read the stored messages matching ``query``; see ``RelayTransport.query``.

        With ``authors`` only their hashes are read (only the fields the
        query can match when it names workloads); without, every provider's
        hash under the prefix (found with ``SCAN``).
        """
        self._require_running()
        query = self._canonical_query(query)
        if query.authors is not None and not query.authors:
            return QueryResult((), frozenset({self.name}))
        deadline = anyio.current_time() + timeout

        async def attempt() -> list[Envelope[Message]]:
            return await self._read(query, query)

        found, error = await self._until(deadline, attempt, what="query")
        if found is None:
            return QueryResult((), frozenset(), {self.name: error or "timed out"})
        return QueryResult(newest_per_key(found), frozenset({self.name}))

    async def _signers(self, query: Query) -> list[str]:
        if query.authors is not None:
            return sorted(query.authors)
        client = self._require_running()
        signers: set[str] = set()
        cursor = 0
        while True:
            cursor, keys = await self._run(
                client.scan(cursor=cursor, match=f"{self.prefix}:p:*", count=1000)
            )
            for key in keys:
                signer = self._signer_of(key, "p")
                if signer is not None:
                    signers.add(signer)
            if not cursor:
                return sorted(signers)

    def _fields(self, query: Query) -> list[str] | None:
        """The exact fields ``query`` can match, or ``None`` when it needs them all."""
        if query.workload_ids is None:
            return None
        fields = []
        for kind in sorted(query.kinds):
            if kind == "heartbeat":
                fields.append(f"{MESSAGE_FIELD_PREFIX}heartbeat")
            else:
                fields.extend(
                    f"{MESSAGE_FIELD_PREFIX}{kind}/{quote_workload(w)}"
                    for w in sorted(query.workload_ids)
                )
        return fields

    async def _read(self, query: Query, match: Query | None) -> list[Envelope[Message]]:
        """Every stored message of the signers ``query`` names, filtered by ``match``."""
        client = self._require_running()
        fields = self._fields(query)
        found: list[Envelope[Message]] = []

        failures: list[_Retry | _Refused] = []

        async def one(signer: str) -> None:
            key = self._hash(signer)
            pairs: Iterable[tuple[Any, Any]]
            try:
                if fields is None:
                    pairs = (await self._run(client.hgetall(key))).items()
                elif fields:
                    values = await self._run(client.hmget(key, fields))
                    pairs = zip(fields, values, strict=True)
                else:
                    pairs = ()
            except (_Retry, _Refused) as exc:
                failures.append(exc)
                return
            for field, value in pairs:
                data = _bytes(value)
                if data is None or not _text(field).startswith(MESSAGE_FIELD_PREFIX):
                    continue
                envelope = self._envelope(signer, field, data, match)
                if envelope is not None:
                    found.append(envelope)

        signers = await self._signers(query)
        if len(signers) == 1:
            await one(signers[0])
        else:
            # One task per hash, so reading N providers costs about one round trip.
            async with anyio.create_task_group() as group:
                for signer in signers:
                    group.start_soon(one, signer)
        if failures:
            raise failures[0]
        return found

    def _canonical_query(self, query: Query) -> Query:
        if query.authors is None:
            return query
        try:
            authors = frozenset(canonical_identity(a) for a in query.authors)
        except IdentityError as exc:
            raise TransportError(f"query names a malformed author: {exc}") from exc
        return attrs.evolve(query, authors=authors)

    def subscribe(self, query: Query) -> RedisSubscription:
        """Receive matching messages as they are stored; see ``RelayTransport.subscribe``.

        Stored messages are delivered first: those at least ``query.since``
        old, or without ``since`` those of the last ``live_backlog`` seconds.
        Raises :class:`~standby.TransportError` when the transport is not
        running or the query names a malformed author.
        """
        self._require_running()
        query = self._canonical_query(query)
        since = query.since if query.since is not None else self.wall_clock() - self.live_backlog
        backlog = attrs.evolve(query, since=since)
        subscription = RedisSubscription(self, query, self.subscription_buffer, backlog)
        self._subscriptions.add(subscription)
        assert self._group is not None
        self._group.start_soon(self._listen, subscription, name=f"redis-sub-{id(subscription)}")
        return subscription

    # ----------------------------------------------------------------- listening

    async def _listen(self, subscription: RedisSubscription) -> None:
        first, longest = self.reconnect_backoff
        wait = first
        with subscription._scope:
            while not subscription.closed:
                attempt_at = anyio.current_time()
                try:
                    await self._listen_once(subscription)
                except Exception as exc:  # coredis raises its own, OSError or groups of them
                    self._count("subscription_errors")
                    self._last_subscription_error = f"{type(exc).__name__}: {exc}"
                except BaseException as exc:
                    if not _cancellation_in(exc):
                        raise
                    # coredis may wrap the cancellation with errors of its own
                    # teardown: drop those, let the cancellation through alone.
                    await anyio.lowlevel.checkpoint()
                    raise
                if subscription.backlog is None:
                    # Fill the gap when it comes back: what was stored meanwhile.
                    subscription.backlog = attrs.evolve(
                        subscription.query, since=self.wall_clock() - self.live_backlog
                    )
                if subscription.connected_at >= attempt_at:
                    wait = first
                self._count("subscription_reconnects")
                await anyio.sleep(wait)
                wait = min(wait * 2, longest)

    async def _listen_once(self, subscription: RedisSubscription) -> None:
        client = self._require_running()
        query = subscription.query
        pubsub = client.pubsub(
            ignore_subscribe_messages=True,
            retry_policy=coredis.retry.NoRetryPolicy(),
            subscription_timeout=self.connect_timeout,
        )
        async with pubsub:
            if query.authors is not None:
                channels = [self._channel(a) for a in sorted(query.authors)]
                if not channels:
                    await anyio.sleep_forever()
                await pubsub.subscribe(*channels)
            else:
                await pubsub.psubscribe(f"{self.prefix}:ch:*")
            subscription.connected_at = anyio.current_time()
            backlog, subscription.backlog = subscription.backlog, None
            if backlog is not None:
                for envelope in await self._read(backlog, backlog):
                    subscription._deliver(envelope)
            async for notice in pubsub:
                signer = self._signer_of(notice.get("channel", b""), "ch")
                field = _text(notice.get("data", b""))
                if signer is None or not field.startswith(MESSAGE_FIELD_PREFIX):
                    self._count("dropped_notices")
                    continue
                value = await self._hget(self._hash(signer), field)
                if value.value is None:
                    continue
                delivered = self._envelope(signer, field, value.value, query)
                if delivered is not None:
                    subscription._deliver(delivered)

    # ----------------------------------------------------------------- AtomicClaims

    async def _holder(self, value: _Field) -> PromotionClaim | None:
        """The live claim in a claim key: its claimant's proof must equal it."""
        held = decode_claim(self.codec, value.value)
        if held is None:
            if value.value is not None:
                self._count("forged_claims")
            return None
        try:
            claimant = canonical_identity(held.claimant)
        except IdentityError:
            self._count("forged_claims")
            return None
        proof = await self._hget(self._hash(claimant), proof_field(held.workload_id))
        if proof.value != value.value:
            self._count("forged_claims")
            return None
        return held

    async def _get(self, key: str) -> _Field:
        client = self._require_running()
        return _Field(_bytes(await self._run(client.get(key))))

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
        provider's proof are swapped by one Lua script that compares the
        claim key with the value read.
        """
        self._require_running()
        claim = attrs.evolve(claim, claimant=self.user)
        data = self._encode(claim)
        key = self._claim_key(claim.workload_id)
        proof = proof_field(claim.workload_id)
        deadline = anyio.current_time() + timeout
        # First guess: nobody holds the key; when wrong, the script returns the holder.
        state: list[_Field] = [_Field(None)]

        async def attempt() -> ClaimOutcome:
            if not state:
                self._count("rereads")
                state.append(await self._get(key))
            current = state.pop()
            held = decode_claim(self.codec, current.value)
            if not claim_wins(claim, held):
                held = await self._holder(current)  # only a genuine claim blocks
                if not claim_wins(claim, held):
                    return ClaimOutcome(won=False, holder=held)
            absent = "1" if current.value is None else "0"
            now_there = await self._swap(
                self._swap_claim,
                [key, self._hash(self.user)],
                [absent, current.value or b"", data, proof],
            )
            if now_there is None:
                return ClaimOutcome(won=True)
            state.append(now_there)
            raise _Retry("the claim key changed meanwhile")

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
        self._require_running()
        claim = attrs.evolve(claim, claimant=self.user)
        key = self._claim_key(claim.workload_id)
        deadline = anyio.current_time() + timeout

        async def attempt() -> bool:
            current = await self._get(key)
            held = decode_claim(self.codec, current.value)
            if current.value is None or held is None or not claim_matches(held, claim):
                return True
            now_there = await self._swap(
                self._swap_claim,
                [key, self._hash(self.user)],
                ["0", current.value, b"", proof_field(claim.workload_id)],
            )
            if now_there is not None:
                raise _Retry("the claim key changed meanwhile")
            return True

        done, error = await self._until(deadline, attempt, what="release_claim")
        if not done:
            raise TransportError(f"release of epoch {claim.epoch}: {error}")

    # ----------------------------------------------------------------- extras

    async def holder(
        self,
        workload_id: str,
        *,
        timeout: float,  # noqa: ASYNC109 - like publish and query
    ) -> PromotionClaim | None:
        """The live claim holding ``workload_id``'s newest epoch (``None``: none)."""
        self._require_running()
        deadline = anyio.current_time() + timeout

        async def attempt() -> tuple[PromotionClaim | None]:
            return (await self._holder(await self._get(self._claim_key(workload_id))),)

        found, error = await self._until(deadline, attempt, what="holder")
        if found is None:
            raise TransportError(f"cannot read the claim of {workload_id!r}: {error}")
        return found[0]
