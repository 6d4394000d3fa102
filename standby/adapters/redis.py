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
  (``docs/safety.md``, guarantee 3) still order the two. Use etcd for a store
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
    from ._transport_base import missing_extra

    raise missing_extra("redis", "redis", _exc) from _exc

import contextlib
import math
import re
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from typing import Any, Final, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel
import attrs

from ..core._errors import TransportError
from ..core._models import Envelope, Message
from ..core._relay_messages import message_timestamp
from ..protocols._contracts import Query
from ..wire import Codec
from ._stream import StreamSubscription
from ._transport_base import DEFAULT_RETENTION, check_host_port
from .kv._names import (
    MESSAGE_FIELD_PREFIX,
    PROOF_FIELD_PREFIX,
    Slot,
    canonical_account,
    decode_claim,
    decode_stored,
    exact_account,
    field_of,
    proof_field,
    quote_workload,
)
from .kv._redis_lua import DROP_FIELD, PUT_FIELD, SWAP_CLAIM
from .kv._transport import KvTransport, Refused, Retry

__all__ = [
    "RedisSubscription",
    "RedisTransport",
    "canonical_identity",
    "provider_acl",
]

_T = TypeVar("_T")

_PREFIX: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")


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


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _bytes(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    return str(value).encode()


class RedisSubscription(StreamSubscription):
    """A live pub/sub subscription of a :class:`RedisTransport`; implements ``Subscription``.

    When the consumer falls more than ``buffer`` envelopes behind, newer
    deliveries are dropped and counted (``dropped_overflow``).
    """

    backend = "Redis"

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"RedisSubscription({self.query!r}, {state})"


class RedisTransport(KvTransport):
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

    ``retention`` (seconds, default 400 days; ``None``: for ever) is how long
    what this provider writes is kept: claim keys get that time to live and
    :meth:`sweep` drops older fields of its hash (it runs by itself). It must
    be longer than any reservation the provider sells (plus the longest a
    node may be down): see ``docs/backends.md``.

    A query with ``authors`` reads only their hashes (only the fields the
    query can match when it names workloads); without, every provider's
    hash under the prefix (found with ``SCAN``). A subscription gets the
    stored messages first: those at least ``query.since`` old, or without
    ``since`` those of the last ``live_backlog`` seconds. Claims swap the
    claim key and this provider's proof in one Lua script that compares the
    claim key with the value read.

    :attr:`counters` counts ``commands``, ``retries``, ``unknown_outcomes``,
    ``rereads``, ``subscription_errors``, ``subscription_reconnects``,
    ``dropped_malformed``, ``dropped_misplaced``, ``dropped_overflow``,
    ``forged_claims``, ``swept`` and ``sweep_errors``.
    """

    _backend = "Redis"
    _scheme = "redis"
    _unit = "field"
    _reconnects = "subscription_reconnects"
    _task = "redis-sub"

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
        retention: float | None = DEFAULT_RETENTION,
    ) -> None:
        check_host_port(host, port, what="RedisTransport")
        super().__init__(
            user=user,
            password=password,
            name=name if name is not None else f"redis://{host}:{port}",
            codec=codec,
            wall_clock=wall_clock,
            connect_timeout=connect_timeout,
            reconnect_backoff=reconnect_backoff,
            subscription_buffer=subscription_buffer,
            live_backlog=live_backlog,
            retention=retention,
        )
        self.host = host
        self.port = port
        self.prefix = _check_prefix(prefix)
        self._client: coredis.Redis[bytes] | None = None
        self._field_script: Any = None
        self._claim_script: Any = None
        self._last_subscription_error = ""
        self._last_sweep_error = ""
        self._drop_script: Any = None

    def __repr__(self) -> str:
        state = "running" if self._group is not None else "stopped"
        return f"RedisTransport({self.user!r}, {self.name!r}, {state})"

    # ----------------------------------------------------------------- lifecycle

    async def _open_resources(self, stack: contextlib.AsyncExitStack) -> None:
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
        self._field_script = client.register_script(PUT_FIELD)
        self._claim_script = client.register_script(SWAP_CLAIM)
        self._drop_script = client.register_script(DROP_FIELD)

    def _started(self, group: anyio.abc.TaskGroup) -> None:
        if self.retention is not None:
            group.start_soon(self._sweep_loop, name="redis-sweep")

    async def _sweep_loop(self) -> None:
        """Sweep a minute after the start, then every ``retention / 16`` (at most 6 h)."""
        assert self.retention is not None
        interval = min(self.retention / 16, 6 * 3600.0)
        await anyio.sleep(min(interval, 60.0))
        while self._group is not None:
            try:
                await self.sweep()
            except (Retry, Refused) as exc:
                self._count("sweep_errors")
                self._last_sweep_error = str(exc)
            except TransportError:
                return  # stopped meanwhile
            await anyio.sleep(interval)

    async def sweep(self) -> int:
        """Delete this provider's fields written more than ``retention`` ago; how many.

        A field's age is that of the message it holds (its timestamp, by
        this provider's clock); a proof of a claim goes with the claim. A
        field written again meanwhile is left alone. Runs by itself every
        ``retention / 16`` while the transport runs (Redis 7.0 cannot expire
        a field of a hash, only a whole key); shared claim keys expire by
        their own time to live.
        """
        if self.retention is None:
            return 0
        client = self._require_running()
        key = self._hash(self.user)
        cutoff = self.wall_clock() - self.retention
        dropped = 0
        for field, value in (await self._run(client.hgetall(key))).items():
            name, data = _text(field), _bytes(value)
            if data is None:
                continue
            stamp: float | None = None
            if name.startswith(PROOF_FIELD_PREFIX):
                claim = decode_claim(self.codec, data)
                stamp = None if claim is None else claim.claimed_at
            else:
                message = self._decode_own((key, name), data)
                stamp = None if message is None else message_timestamp(message)
            if stamp is None or stamp >= cutoff:
                continue
            if await self._run(self._drop_script(keys=[key], args=[name, data])) == 1:
                dropped += 1
        if dropped:
            self._count("swept", dropped)
        return dropped

    def _forget_client(self) -> None:
        self._client = None

    def _require_running(self) -> coredis.Redis[bytes]:
        client = self._client
        if self._group is None or client is None:
            raise self._not_running()
        return client

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
        return exact_account(text[len(head) :], scheme="redis")

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
            raise Refused(f"{self.name}: {exc}") from exc
        except coredis.exceptions.ResponseError as exc:
            if "NOPERM" in str(exc) or "no permissions" in str(exc):
                raise Refused(f"{self.name}: {exc}") from exc
            raise Retry(f"{self.name}: {exc}") from exc
        except (coredis.exceptions.RedisError, OSError, TimeoutError) as exc:
            self._count("unknown_outcomes")
            raise Retry(f"{self.name}: {type(exc).__name__}: {exc}") from exc
        finally:
            self._open -= 1

    async def _hget(self, key: str, field: str) -> Slot:
        client = self._require_running()
        return Slot(_bytes(await self._run(client.hget(key, field))))

    async def _swap(self, script: Any, keys: Sequence[str], args: Sequence[Any]) -> Slot | None:
        """Run a compare-and-swap script: ``None`` when applied, else what is there now."""
        answer = await self._run(script(keys=list(keys), args=list(args)))
        if not isinstance(answer, list) or not answer:
            raise Retry(f"{self.name}: unexpected script answer {answer!r:.80}")
        if answer[0] == 1:
            return None
        return Slot(_bytes(answer[1]) if len(answer) > 1 else None)

    # ----------------------------------------------------------------- KvTransport

    def _where(self, message: Message) -> tuple[str, str]:
        return self._hash(self.user), field_of(message)

    async def _read_message(self, where: Hashable) -> Slot:
        key, field = _pair(where)
        return await self._hget(key, field)

    def _decode_own(self, where: Hashable, value: bytes) -> Message | None:
        stored = self._envelope(self.user, _pair(where)[1], value, None)
        return None if stored is None else stored.message

    async def _swap_message(self, where: Hashable, current: Slot, data: bytes) -> tuple[bool, Slot]:
        key, field = _pair(where)
        absent = "1" if current.value is None else "0"
        now_there = await self._swap(
            self._field_script,
            [key],
            [field, absent, current.value or b"", data, self._channel(self.user)],
        )
        return (True, Slot(data)) if now_there is None else (False, now_there)

    def _ttl_ms(self) -> str:
        """A claim key's time to live, as the claim script takes it ('' for ever)."""
        return "" if self.retention is None else str(math.ceil(self.retention * 1000))

    async def _read_claim(self, workload_id: str) -> Slot:
        client = self._require_running()
        return Slot(_bytes(await self._run(client.get(self._claim_key(workload_id)))))

    async def _read_proof(self, claimant: str, workload_id: str) -> Slot:
        return await self._hget(self._hash(claimant), proof_field(workload_id))

    async def _swap_claim(
        self, workload_id: str, current: Slot, data: bytes | None
    ) -> tuple[bool, Slot]:
        absent = "1" if current.value is None else "0"
        now_there = await self._swap(
            self._claim_script,
            [self._claim_key(workload_id), self._hash(self.user)],
            [absent, current.value or b"", data or b"", proof_field(workload_id), self._ttl_ms()],
        )
        return (True, Slot(data)) if now_there is None else (False, now_there)

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

    async def _stored(self, query: Query) -> list[Envelope[Message]]:
        """Every stored message of the signers ``query`` names that matches it."""
        client = self._require_running()
        fields = self._fields(query)
        found: list[Envelope[Message]] = []

        failures: list[Retry | Refused] = []

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
            except (Retry, Refused) as exc:
                failures.append(exc)
                return
            for field, value in pairs:
                data = _bytes(value)
                if data is None or not _text(field).startswith(MESSAGE_FIELD_PREFIX):
                    continue
                envelope = self._envelope(signer, field, data, query)
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

    def _subscription(self, query: Query) -> RedisSubscription:
        since = query.since if query.since is not None else self.wall_clock() - self.live_backlog
        backlog = attrs.evolve(query, since=since)
        return RedisSubscription(self, query, self.subscription_buffer, backlog)

    # ----------------------------------------------------------------- listening

    async def _probe(self, deadline: float) -> None:
        # Opens a pooled connection (logging in as the provider) and PINGs.
        # coredis leaves the streams of a connection cancelled halfway open,
        # so the attempt is shielded, up to the deadline, also from the
        # transport's exit.
        client = self._require_running()
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(max(0.0, deadline - anyio.current_time())) as scope:
                await self._run(client.ping())
        if scope.cancelled_caught:
            raise Retry(f"{self.name}: no answer to PING before the deadline")

    async def _connect_once(self, subscription: RedisSubscription) -> bool:
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
        return False

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
                for envelope in await self._stored(backlog):
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


def _pair(where: Hashable) -> tuple[str, str]:
    assert isinstance(where, tuple)
    key, field = where
    return str(key), str(field)
