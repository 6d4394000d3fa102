"""A :class:`~standby.protocols.RelayTransport` with atomic claims over etcd v3.

Needs the ``etcd`` extra (``pip install 'standby[etcd]'``: ``httpx``). It
speaks etcd's v3 JSON gateway (``/v3/kv/*``, ``/v3/watch``,
``/v3/auth/authenticate``), so it runs on asyncio and on trio::

    async with EtcdTransport(
        ["http://10.0.0.1:2379", "http://10.0.0.2:2379", "http://10.0.0.3:2379"],
        user="provider-a",
        password=os.environ["ETCD_PASSWORD"],
    ) as transport:
        async with StandbyNode(
            transport=transport, runtime=..., timing=Timing(relay_count=1, write_quorum=1)
        ) as node:
            ...

What it guarantees:

* **One relay.** An etcd cluster is linearizable, so it counts as one relay
  (:attr:`EtcdTransport.relay_count` is 1; use ``relay_count=1,
  write_quorum=1`` in :class:`~standby.Timing`). Every read is a
  linearizable read; the endpoints are members of one cluster, tried in turn.
* **Who wrote it.** The identity is the etcd user name. Messages live under
  ``<prefix>p/<user>/``, which etcd's RBAC lets only that user write (see
  :func:`provider_permissions`); the signer of a value is taken from its key,
  never from its body.
* **Newest per key.** A key holds one version; a publish replaces it only
  with a newer one by :func:`~standby.protocols.is_newer` (a transaction
  compares the key's ``mod_revision``), so readers and the protocol agree.
* **Atomic claims.** :meth:`EtcdTransport.compare_and_set_claim` decides
  with :func:`~standby.protocols.claim_wins` and writes through a
  transaction that compares the claim key's ``mod_revision`` with the one
  it read (``0`` when absent). The claim key ``<prefix>claims/<workload>``
  is shared by every provider that may claim; the winning claim is also
  written, in the same transaction, as a proof under the claimant's own
  prefix, and a claim whose proof does not match counts as no claim.
* **Unknown outcomes are re-read.** A request that timed out or broke after
  it was sent (a leader change) may have been applied: the transport reads
  the key again before deciding anything, never assumes.
* **Subscriptions** use ``/v3/watch`` and resume from the last revision seen
  after a disconnect; when that revision was compacted they re-read the
  stored messages instead.

A provider that may claim can still overwrite or delete the shared claim key
(RBAC has no "compare only" right): providers that share a cluster must
trust one another not to sabotage it. See ``docs/backends.md``.
"""

from __future__ import annotations

try:
    import httpx
except ImportError as _exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "standby.adapters.etcd needs the optional dependencies of the 'etcd' extra "
        f"(missing: {_exc.name}); install them with: pip install 'standby[etcd]'"
    ) from _exc

import base64
import contextlib
import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
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

_T = TypeVar("_T")

#: Keys whose last written version is remembered (saves a read per publish).
_KNOWN_KEPT: Final = 4096

__all__ = [
    "EtcdSubscription",
    "EtcdTransport",
    "canonical_identity",
    "prefix_end",
    "provider_permissions",
]

#: gRPC status codes the gateway reports in ``code``.
_UNAUTHENTICATED: Final = 16
_PERMISSION_DENIED: Final = 7
_INVALID_ARGUMENT: Final = 3
_FAILED_PRECONDITION: Final = 9


def canonical_identity(identity: str) -> str:
    """Canonical form of an etcd user name used as an identity (``etcd:`` prefix optional)."""
    return canonical_account(identity, scheme="etcd")


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` that makes a range cover every key starting with ``prefix``."""
    raw = bytearray(prefix)
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return bytes(raw)
        raw.pop()
    return b"\x00"  # every key


def provider_permissions(prefix: str, user: str) -> list[tuple[str, str, str]]:
    """The etcd role permissions a provider needs, as ``(type, key, range_end)``.

    ``READ`` on the whole prefix, ``READWRITE`` on its own area and on the
    shared claim keys. Grant them with ``etcdctl role grant-permission`` or
    the ``/v3/auth/role/grant`` call (``range_end`` is the key's prefix end).
    """
    prefix = _normal_prefix(prefix)
    me = canonical_identity(user)
    return [
        ("READ", prefix, prefix_end(prefix.encode()).decode()),
        ("READWRITE", f"{prefix}p/{me}/", prefix_end(f"{prefix}p/{me}/".encode()).decode()),
        ("READWRITE", f"{prefix}claims/", prefix_end(f"{prefix}claims/".encode()).decode()),
    ]


def _normal_prefix(prefix: str) -> str:
    if not prefix or not prefix.startswith("/"):
        raise ValueError(f"the key prefix must start with '/', got {prefix!r}")
    return prefix if prefix.endswith("/") else prefix + "/"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        return b""
    return base64.b64decode(text)


def _int(value: Any) -> int:
    # int64 come as strings; zero values are omitted.
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


class _Failed(Exception):
    """A request certainly not applied that may succeed when tried again (unreachable)."""


class _Refused(Exception):
    """A request the cluster refused for good (permission denied, invalid, auth off)."""


class _Unknown(Exception):
    """A request that may or may not have been applied: read again before deciding."""


class _Unauthenticated(Exception):
    """The token expired or is unknown to this member."""


@attrs.frozen
class _Kv:
    key: bytes
    value: bytes
    mod_revision: int


def _kvs(body: Mapping[str, Any]) -> list[_Kv]:
    return [
        _Kv(_unb64(kv.get("key")), _unb64(kv.get("value")), _int(kv.get("mod_revision")))
        for kv in body.get("kvs", ()) or ()
    ]


class _Body(httpx.AsyncByteStream):
    """A request body that is not an async generator.

    httpx sends a body by iterating it; a generator left suspended by a
    cancelled request is collected later, which trio reports. This one
    has nothing to finalize.
    """

    def __init__(self, data: bytes) -> None:
        self._data = data

    def __aiter__(self) -> AsyncIterator[bytes]:
        return _Once(self._data)


class _Once:
    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data

    def __aiter__(self) -> _Once:
        return self

    async def __anext__(self) -> bytes:
        data, self._data = self._data, None
        if data is None:
            raise StopAsyncIteration
        return data


def _request(
    client: httpx.AsyncClient,
    url: str,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    *,
    timeout: httpx.Timeout | None = None,
) -> httpx.Request:
    data = json.dumps(body).encode()
    extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
    request = client.build_request(
        "POST",
        url,
        content=data,
        headers={**headers, "Content-Type": "application/json"},
        **extra,
    )
    request.stream = _Body(data)
    return request


class EtcdSubscription(StreamSubscription):
    """A live watch of an :class:`EtcdTransport`; implements ``Subscription``.

    When the consumer falls more than ``buffer`` envelopes behind, newer
    deliveries are dropped and counted (``dropped_overflow``).
    """

    backend = "etcd"

    def __init__(
        self, transport: EtcdTransport, query: Query, buffer: int, backlog: Query | None
    ) -> None:
        super().__init__(transport, query, buffer, backlog)
        self.revision = 0
        """The last revision this subscription has seen (it resumes after it)."""

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"EtcdSubscription({self.query!r}, {state}, revision {self.revision})"


class EtcdTransport:
    """A provider's connection to one etcd cluster; ``RelayTransport`` and ``AtomicClaims``.

    ``endpoints`` are the client URLs of the cluster's members
    (``http://host:2379``); ``user`` and ``password`` log in to etcd (its
    auth must be enabled: the user name is the provider's identity).
    ``prefix`` is where every key lives (default ``/standby/``), ``name``
    names the one relay in results and envelopes (default: the first
    endpoint). Use it as an async context manager.

    Options: ``codec``, ``wall_clock`` (Unix seconds, stamps
    ``received_at``), ``connect_timeout``, ``reconnect_backoff`` (first and
    longest wait between watch reconnections), ``subscription_buffer``,
    ``live_backlog`` (how far back a subscription without ``since`` reads
    stored messages when the transport has seen no revision yet) and
    ``client`` (an ``httpx.AsyncClient``; the transport makes its own by
    default).
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        user: str,
        password: str,
        prefix: str = "/standby/",
        name: str | None = None,
        codec: Codec | None = None,
        wall_clock: Callable[[], float] = time.time,
        connect_timeout: float = 5.0,
        reconnect_backoff: tuple[float, float] = (0.05, 2.0),
        subscription_buffer: int = 1024,
        live_backlog: float = 60.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        urls = [url.rstrip("/") for url in endpoints]
        if not urls:
            raise ValueError("an etcd transport needs at least one endpoint URL")
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"etcd endpoints must start with http:// or https://, got {url!r}")
        first, longest = reconnect_backoff
        if not 0 < first <= longest:
            raise ValueError(
                "reconnect_backoff must be (first, longest) with 0 < first <= longest, "
                f"got {reconnect_backoff!r}"
            )
        self.endpoints: tuple[str, ...] = tuple(urls)
        self.user = canonical_identity(user)
        self._password = password
        self.prefix = _normal_prefix(prefix)
        self.name = name if name is not None else urls[0]
        self.codec = codec if codec is not None else Codec()
        self.wall_clock = wall_clock
        self.connect_timeout = connect_timeout
        self.reconnect_backoff = (first, longest)
        self.subscription_buffer = subscription_buffer
        self.live_backlog = live_backlog
        self._client = client
        self._own_client = client is None
        self._token: str | None = None
        self._token_lock: anyio.Lock | None = None
        self._current = 0
        self._counters: dict[str, int] = {}
        self._known: OrderedDict[bytes, _Kv | None] = OrderedDict()
        self._revision = 0
        self._last_watch_error = ""
        self._subscriptions: set[EtcdSubscription] = set()
        self._group: anyio.abc.TaskGroup | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._open = 0

    def __repr__(self) -> str:
        state = "running" if self._group is not None else "stopped"
        return f"EtcdTransport({self.user!r}, {list(self.endpoints)!r}, {state})"

    # ----------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> EtcdTransport:
        if self._stack is not None:
            raise TransportError("this EtcdTransport is already running")
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            if self._client is None:
                self._client = httpx.AsyncClient(
                    timeout=httpx.Timeout(self.connect_timeout),
                    limits=httpx.Limits(max_keepalive_connections=16),
                )
            if self._own_client:
                stack.push_async_callback(self._close_client)
            self._token_lock = anyio.Lock()
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

    def _stopped(self) -> None:
        self._group = None
        for subscription in list(self._subscriptions):
            subscription._end()
        self._subscriptions.clear()

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with anyio.CancelScope(shield=True):
                await client.aclose()

    def _require_running(self) -> httpx.AsyncClient:
        if self._group is None or self._client is None:
            raise TransportError(
                "the etcd transport is not running: use it as `async with EtcdTransport(...)`"
            )
        return self._client

    # ----------------------------------------------------------------- identity

    @property
    def identity(self) -> str:
        """The etcd user name this transport writes as (canonical)."""
        return self.user

    @property
    def relay_count(self) -> int:
        """One: the cluster is linearizable, so it counts as one relay."""
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
        """Counts of what happened: ``requests``, ``unknown_outcomes``, ``rereads``,
        ``reauthentications``, ``endpoint_switches``, ``watch_reconnects``,
        ``watch_compacted``, ``dropped_malformed``, ``dropped_misplaced``,
        ``dropped_overflow``, ``forged_claims`` (read-only view)."""
        return MappingProxyType(self._counters)

    def open_requests(self) -> int:
        """HTTP requests in flight (watches excluded): a leak check for cancellation."""
        return self._open

    def _count(self, name: str, amount: int = 1) -> None:
        self._counters[name] = self._counters.get(name, 0) + amount

    # ----------------------------------------------------------------- keys

    def _area(self, signer: str) -> str:
        return f"{self.prefix}p/{signer}/"

    def _message_key(self, signer: str, message: Message) -> bytes:
        return (self._area(signer) + field_of(message)).encode()

    def _claim_key(self, workload_id: str) -> bytes:
        return f"{self.prefix}claims/{quote_workload(workload_id)}".encode()

    def _proof_key(self, signer: str, workload_id: str) -> bytes:
        return (self._area(signer) + proof_field(workload_id)).encode()

    def _split(self, key: bytes) -> tuple[str, str] | None:
        """``(signer, field)`` of a message key, ``None`` for any other key."""
        try:
            text = key.decode()
        except UnicodeDecodeError:
            return None
        area = f"{self.prefix}p/"
        if not text.startswith(area):
            return None
        signer, _, field = text[len(area) :].partition("/")
        if not field.startswith(MESSAGE_FIELD_PREFIX):
            return None
        try:
            if canonical_identity(signer) != signer:
                return None
        except IdentityError:
            return None
        return signer, field

    def _envelope(self, kv: _Kv, query: Query | None) -> Envelope[Message] | None:
        split = self._split(kv.key)
        if split is None:
            return None
        signer, field = split
        return decode_stored(
            self.codec,
            signer=signer,
            field=field,
            data=kv.value,
            relay=self.name,
            received_at=self.wall_clock(),
            query=query,
            counters=self._counters,
        )

    # ----------------------------------------------------------------- requests

    async def _authenticate(self, client: httpx.AsyncClient, stale: str | None) -> str:
        assert self._token_lock is not None
        async with self._token_lock:
            if self._token is not None and self._token != stale:
                return self._token
            body = await self._post(
                client,
                "/v3/auth/authenticate",
                {"name": self.user, "password": self._password},
                token=None,
            )
            token = body.get("token")
            if not isinstance(token, str) or not token:
                raise _Refused("etcd answered the login without a token (is auth enabled?)")
            if stale is not None:
                self._count("reauthentications")
            self._token = token
            return token

    async def _post(
        self, client: httpx.AsyncClient, path: str, body: Mapping[str, Any], *, token: str | None
    ) -> dict[str, Any]:
        """One request to the current endpoint; moves to the next one when it fails."""
        url = self.endpoints[self._current] + path
        headers = {} if token is None else {"Authorization": token}
        self._count("requests")
        self._open += 1
        try:
            response = await client.send(_request(client, url, body, headers))
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            self._next_endpoint()
            raise _Failed(f"{url}: cannot connect: {exc}") from exc
        except httpx.HTTPError as exc:
            self._next_endpoint()
            raise _Unknown(f"{url}: {type(exc).__name__}: {exc}") from exc
        finally:
            self._open -= 1
        try:
            answer = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            self._next_endpoint()
            raise _Unknown(
                f"{url}: HTTP {response.status_code} with a body that is not JSON"
            ) from exc
        if not isinstance(answer, dict):
            raise _Unknown(f"{url}: HTTP {response.status_code}: unexpected answer {answer!r:.80}")
        if response.status_code == 200 and "error" not in answer:
            return answer
        code = _int(answer.get("code"))
        message = str(answer.get("message") or answer.get("error") or response.reason_phrase)
        reason = f"{url}: HTTP {response.status_code}: {message}"
        if code == _UNAUTHENTICATED:
            raise _Unauthenticated(reason)
        if code in (_PERMISSION_DENIED, _INVALID_ARGUMENT, _FAILED_PRECONDITION):
            raise _Refused(reason)
        # Unavailable, deadline exceeded, leader changed, no leader: the
        # member may have proposed the request; another member may do better.
        self._next_endpoint()
        raise _Unknown(reason)

    def _next_endpoint(self) -> None:
        if len(self.endpoints) > 1:
            self._current = (self._current + 1) % len(self.endpoints)
            self._count("endpoint_switches")

    async def _call(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """An authenticated request; logs in again once when the token expired."""
        client = self._require_running()
        token = self._token or await self._authenticate(client, None)
        try:
            return await self._post(client, path, body, token=token)
        except _Unauthenticated:
            token = await self._authenticate(client, token)
            try:
                return await self._post(client, path, body, token=token)
            except _Unauthenticated as exc:
                raise _Refused(str(exc)) from exc

    async def _until(
        self, deadline: float, attempt: Callable[[], Awaitable[_T]], *, what: str
    ) -> tuple[_T | None, str | None]:
        """Retry ``attempt`` until it returns or ``deadline`` passes.

        Returns ``(result, None)``, or ``(None, reason)`` when the deadline
        passed or the cluster refused the request for good.
        """
        error: str | None = None
        pause = 0.01
        with anyio.move_on_after(max(0.0, deadline - anyio.current_time())):
            while True:
                try:
                    return await attempt(), None
                except _Refused as exc:
                    return None, str(exc)
                except (_Failed, _Unknown) as exc:
                    error = str(exc)
                    self._count("retries")
                await anyio.sleep(pause)
                pause = min(pause * 2, 0.2)
        return None, f"{what} timed out" + (f" (last error: {error})" if error else "")

    def _seen(self, answer: Mapping[str, Any]) -> int:
        header = answer.get("header", {})
        revision = _int(header.get("revision")) if isinstance(header, dict) else 0
        self._revision = max(self._revision, revision)
        return revision

    async def _range(self, key: bytes, range_end: bytes | None = None) -> tuple[list[_Kv], int]:
        body: dict[str, Any] = {"key": _b64(key)}
        if range_end is not None:
            body["range_end"] = _b64(range_end)
        answer = await self._call("/v3/kv/range", body)
        return _kvs(answer), self._seen(answer)

    async def _get(self, key: bytes) -> _Kv | None:
        kvs, _revision = await self._range(key)
        return kvs[0] if kvs else None

    async def _txn(
        self, key: bytes, mod_revision: int, puts: Sequence[tuple[bytes, bytes | None]]
    ) -> tuple[int, _Kv | None]:
        """Apply ``puts`` (``None``: delete) iff ``key`` is at ``mod_revision`` (0: absent).

        Returns ``(revision written, None)`` when applied, else ``(0, key's
        current value or None when absent)``. Raises :class:`_Unknown` when the
        answer was lost: the caller reads again.
        """
        success: list[dict[str, Any]] = []
        for target, value in puts:
            if value is None:
                success.append({"request_delete_range": {"key": _b64(target)}})
            else:
                success.append({"request_put": {"key": _b64(target), "value": _b64(value)}})
        body = {
            "compare": [
                {
                    "target": "MOD",
                    "key": _b64(key),
                    "mod_revision": str(mod_revision),
                    "result": "EQUAL",
                }
            ],
            "success": success,
            "failure": [{"request_range": {"key": _b64(key)}}],
        }
        try:
            answer = await self._call("/v3/kv/txn", body)
        except _Unknown:
            self._count("unknown_outcomes")
            raise
        revision = self._seen(answer)
        if answer.get("succeeded"):  # omitted (false) when the compare failed
            return revision, None
        for response in answer.get("responses", ()) or ():
            found = _kvs(response.get("response_range", {}))
            if found:
                return 0, found[0]
        return 0, None

    # ----------------------------------------------------------------- RelayTransport

    def _encode(self, message: Message) -> bytes:
        try:
            message_kind(message)
            return self.codec.encode(message)
        except (TypeError, WireError) as exc:
            raise TransportError(f"cannot publish {message!r:.100}: {exc}") from exc

    def _remember(self, key: bytes, kv: _Kv | None) -> None:
        self._known[key] = kv
        self._known.move_to_end(key)
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
        key = self._message_key(self.user, message)
        deadline = anyio.current_time() + timeout
        # What the key held when last written here, or (never written) a guess
        # that it is absent. Either only guides the first transaction: when
        # it is wrong, the transaction fails and returns what is there.
        state: list[_Kv | None] = [self._known.get(key)]
        cached = [True]

        async def attempt() -> bool:
            if not state:
                self._count("rereads")
                state.append(await self._get(key))
            current = state[-1]
            fresh = not cached
            cached.clear()
            if current is not None and current.value != data:
                stored = self._decode_own(current)
                if stored is not None and not is_newer(message, stored):
                    state.clear()
                    if fresh:
                        return True  # a newer version is stored: nothing to write
                    # Only what was just read shows that; a remembered version
                    # only guides the transaction.
                    raise _Unknown("check the stored version")
            elif fresh and current is not None:
                return True  # the very same message is stored
            revision = 0 if current is None else current.mod_revision
            state.clear()
            self._known.pop(key, None)
            written, now_there = await self._txn(key, revision, [(key, data)])
            if written:
                self._remember(key, _Kv(key, data, written))
                return True
            state.append(now_there)
            raise _Unknown("the key changed meanwhile")

        done, error = await self._until(deadline, attempt, what="publish")
        if done:
            return PublishResult(frozenset({self.name}))
        return PublishResult(frozenset(), {self.name: error or "timed out"})

    def _decode_own(self, kv: _Kv) -> Message | None:
        envelope = self._envelope(kv, None)
        return None if envelope is None else envelope.message

    async def query(
        self,
        query: Query,
        *,
        timeout: float,  # noqa: ASYNC109 - part of the protocol
    ) -> QueryResult:
        """Read the stored messages matching ``query``; see ``RelayTransport.query``.

        With ``authors`` only their areas are read (one range each, in one
        transaction: a single snapshot); without, one range over every
        provider's area.
        """
        self._require_running()
        query = self._canonical_query(query)
        if query.authors is not None and not query.authors:
            return QueryResult((), frozenset({self.name}))
        deadline = anyio.current_time() + timeout
        ranges = self._ranges(query)

        async def attempt() -> list[_Kv]:
            if len(ranges) == 1:
                ((start, end),) = ranges
                return (await self._range(start, end))[0]
            body = {
                "success": [
                    {"request_range": {"key": _b64(start), "range_end": _b64(end)}}
                    for start, end in ranges
                ]
            }
            answer = await self._call("/v3/kv/txn", body)
            self._seen(answer)
            found: list[_Kv] = []
            for response in answer.get("responses", ()) or ():
                found.extend(_kvs(response.get("response_range", {})))
            return found

        kvs, error = await self._until(deadline, attempt, what="query")
        if kvs is None:
            return QueryResult((), frozenset(), {self.name: error or "timed out"})
        envelopes = [e for e in (self._envelope(kv, query) for kv in kvs) if e is not None]
        return QueryResult(newest_per_key(envelopes), frozenset({self.name}))

    def _canonical_query(self, query: Query) -> Query:
        if query.authors is None:
            return query
        try:
            authors = frozenset(canonical_identity(a) for a in query.authors)
        except IdentityError as exc:
            raise TransportError(f"query names a malformed author: {exc}") from exc
        return attrs.evolve(query, authors=authors)

    def _ranges(self, query: Query) -> list[tuple[bytes, bytes]]:
        if query.authors is None:
            start = f"{self.prefix}p/".encode()
            return [(start, prefix_end(start))]
        ranges = []
        for author in sorted(query.authors):
            start = (self._area(author) + MESSAGE_FIELD_PREFIX).encode()
            ranges.append((start, prefix_end(start)))
        return ranges

    def subscribe(self, query: Query) -> EtcdSubscription:
        """Watch for matching messages; see ``RelayTransport.subscribe``.

        With ``query.since`` the stored matching messages are delivered
        first. Without it, the watch starts at the last revision this
        transport saw (so nothing written after this call is missed; a few
        older messages may come too), or, before any, with the stored
        messages of the last ``live_backlog`` seconds. Raises :class:`~standby.TransportError`
        when the transport is not running or the query names a malformed
        author.
        """
        self._require_running()
        query = self._canonical_query(query)
        backlog: Query | None = None
        if query.since is not None:
            backlog = query
        elif not self._revision:
            # No revision seen yet to watch from: read what is stored first.
            backlog = attrs.evolve(query, since=self.wall_clock() - self.live_backlog)
        subscription = EtcdSubscription(self, query, self.subscription_buffer, backlog)
        subscription.revision = self._revision
        self._subscriptions.add(subscription)
        assert self._group is not None
        self._group.start_soon(self._watch, subscription, name=f"etcd-watch-{id(subscription)}")
        return subscription

    # ----------------------------------------------------------------- watching

    def _watch_range(self, query: Query) -> tuple[bytes, bytes]:
        if query.authors is not None and len(query.authors) == 1:
            (author,) = query.authors
            start = (self._area(author) + MESSAGE_FIELD_PREFIX).encode()
        else:
            start = f"{self.prefix}p/".encode()
        return start, prefix_end(start)

    async def _backlog(self, subscription: EtcdSubscription, query: Query) -> None:
        """Deliver the stored messages matching ``query``; resume after them."""
        start, end = self._watch_range(subscription.query)
        kvs, revision = await self._range(start, end)
        for kv in kvs:
            envelope = self._envelope(kv, query)
            if envelope is not None:
                subscription._deliver(envelope)
        subscription.revision = max(subscription.revision, revision)

    async def _watch(self, subscription: EtcdSubscription) -> None:
        first, longest = self.reconnect_backoff
        wait = first
        backlog = subscription.backlog
        with subscription._scope:
            while not subscription.closed:
                attempt_at = anyio.current_time()
                try:
                    if backlog is not None:
                        await self._backlog(subscription, backlog)
                        backlog = None
                    compacted = await self._stream(subscription)
                    if compacted:
                        # The revisions missed are gone: read what is stored.
                        self._count("watch_compacted")
                        backlog = subscription.query
                        continue
                except (_Failed, _Refused, _Unknown, httpx.HTTPError) as exc:
                    self._count("watch_errors")
                    self._last_watch_error = str(exc)
                except _Unauthenticated:
                    self._count("watch_errors")
                    self._token = None
                if subscription.connected_at >= attempt_at:
                    wait = first  # it was connected: start the backoff afresh
                self._count("watch_reconnects")
                await anyio.sleep(wait)
                wait = min(wait * 2, longest)

    async def _stream(self, subscription: EtcdSubscription) -> bool:
        """Run one watch until it ends; ``True`` when its start revision was compacted."""
        client = self._require_running()
        token = self._token or await self._authenticate(client, None)
        start, end = self._watch_range(subscription.query)
        create: dict[str, Any] = {
            "key": _b64(start),
            "range_end": _b64(end),
            "start_revision": str(subscription.revision + 1),
        }
        url = self.endpoints[self._current] + "/v3/watch"
        timeout = httpx.Timeout(self.connect_timeout, read=None)
        request = _request(
            client, url, {"create_request": create}, {"Authorization": token}, timeout=timeout
        )
        compacted = False
        stop: Exception | None = None
        try:
            response = await client.send(request, stream=True)
            try:
                if response.status_code != 200:
                    await response.aread()
                    if response.status_code == 401:
                        raise _Unauthenticated(f"{url}: HTTP 401")
                    raise _Failed(f"{url}: HTTP {response.status_code}")
                subscription.connected_at = anyio.current_time()
                # Never leave this loop early: httpx's chain of async
                # generators must run to its end (closing the response ends
                # it), or trio warns when they are collected.
                async for line in response.aiter_lines():
                    if compacted or stop is not None or not line.strip():
                        continue
                    try:
                        compacted = self._on_watch_line(subscription, line)
                    except (_Unknown, _Unauthenticated) as exc:
                        stop = exc
                    if compacted or stop is not None:
                        await response.aclose()
            finally:
                await response.aclose()
        except httpx.StreamClosed:
            pass
        except httpx.HTTPError:
            self._next_endpoint()
            raise
        if stop is not None:
            raise stop
        if not compacted:
            self._next_endpoint()  # the member ended the watch: try another
        return compacted

    def _on_watch_line(self, subscription: EtcdSubscription, line: str) -> bool:
        """Deliver one line of a watch; ``True`` when the watch was compacted away."""
        try:
            answer = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _Unknown(f"watch sent a line that is not JSON: {line[:80]!r}") from exc
        if not isinstance(answer, dict):
            raise _Unknown(f"watch sent {answer!r:.80}")
        if "error" in answer:
            error = answer["error"]
            code = _int(error.get("code")) if isinstance(error, dict) else 0
            text = error.get("message") if isinstance(error, dict) else error
            if code == _UNAUTHENTICATED:
                raise _Unauthenticated(f"watch: {text}")
            raise _Unknown(f"watch: {text}")
        result = answer.get("result", {})
        if not isinstance(result, dict):
            return False
        if _int(result.get("compact_revision")):
            return True
        if result.get("canceled"):
            raise _Unknown(f"watch canceled: {result.get('cancel_reason', '')}")
        self._seen(result)
        for event in result.get("events", ()) or ():
            kv_body = event.get("kv", {})
            revision = _int(kv_body.get("mod_revision"))
            subscription.revision = max(subscription.revision, revision)
            if event.get("type") == "DELETE":
                continue
            kv = _Kv(_unb64(kv_body.get("key")), _unb64(kv_body.get("value")), revision)
            envelope = self._envelope(kv, subscription.query)
            if envelope is not None:
                subscription._deliver(envelope)
        return False

    # ----------------------------------------------------------------- AtomicClaims

    async def _holder(self, kv: _Kv | None) -> PromotionClaim | None:
        """The live claim in a claim key: its claimant's proof must equal it."""
        if kv is None:
            return None
        held = decode_claim(self.codec, kv.value)
        if held is None:
            self._count("forged_claims")
            return None
        try:
            claimant = canonical_identity(held.claimant)
        except IdentityError:
            self._count("forged_claims")
            return None
        proof = await self._get(self._proof_key(claimant, held.workload_id))
        if proof is None or proof.value != kv.value:
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
        provider's proof are written in one transaction that compares the
        claim key's ``mod_revision`` with the one read.
        """
        self._require_running()
        claim = attrs.evolve(claim, claimant=self.user)
        data = self._encode(claim)
        key = self._claim_key(claim.workload_id)
        proof = self._proof_key(self.user, claim.workload_id)
        deadline = anyio.current_time() + timeout
        # First guess: nobody holds the key (create-if-absent). When wrong, the
        # transaction fails and returns the holder, and the rule decides.
        state: list[_Kv | None] = [None]

        async def attempt() -> ClaimOutcome:
            if not state:
                self._count("rereads")
                state.append(await self._get(key))
            current = state.pop()
            held = decode_claim(self.codec, None if current is None else current.value)
            if not claim_wins(claim, held):
                # Only a genuine claim (its claimant's proof matches) blocks.
                held = await self._holder(current)
                if not claim_wins(claim, held):
                    return ClaimOutcome(won=False, holder=held)
            revision = 0 if current is None else current.mod_revision
            written, now_there = await self._txn(key, revision, [(key, data), (proof, data)])
            if written:
                return ClaimOutcome(won=True)
            state.append(now_there)
            raise _Unknown("the claim key changed meanwhile")

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
        proof = self._proof_key(self.user, claim.workload_id)
        deadline = anyio.current_time() + timeout

        async def attempt() -> bool:
            current = await self._get(key)
            held = decode_claim(self.codec, None if current is None else current.value)
            if current is None or held is None or not claim_matches(held, claim):
                return True
            written, _now = await self._txn(key, current.mod_revision, [(key, None), (proof, None)])
            if not written:
                raise _Unknown("the claim key changed meanwhile")
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
