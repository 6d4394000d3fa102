"""etcd's v3 JSON gateway as the etcd transport speaks it: requests, answers, errors.

Private to :mod:`standby.adapters.etcd`. Keys and values travel base64
encoded, int64 as strings (zero values omitted); an answer says how it
failed in a gRPC status ``code``. :func:`answer_of` maps a response to a
body or to one of the outcomes the transport acts on: certainly not
applied (:class:`Failed`), refused for good (:class:`Refused`), maybe
applied (:class:`Unknown`) or logged out (:class:`Unauthenticated`).
:class:`EtcdGateway` sends the requests: logged in, to one member at a
time, moving to the next member when one fails.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Final

import anyio
import attrs
import httpx

from .._transport_base import close_shielded
from ._names import Slot
from ._transport import KvTransport, Refused, Retry

__all__ = [
    "EtcdGateway",
    "Failed",
    "Kv",
    "Refused",
    "Unauthenticated",
    "Unknown",
    "answer_of",
    "as_int",
    "b64",
    "build_request",
    "kvs_of",
    "slot_of",
    "unb64",
    "watch_result",
]

#: gRPC status codes the gateway reports in ``code``.
_UNAUTHENTICATED: Final = 16
_PERMISSION_DENIED: Final = 7
_INVALID_ARGUMENT: Final = 3
_FAILED_PRECONDITION: Final = 9


class Failed(Retry):
    """A request certainly not applied that may succeed when tried again (unreachable)."""


class Unknown(Retry):
    """A request that may or may not have been applied: read again before deciding."""


class Unauthenticated(Exception):
    """The token expired or is unknown to this member."""


def b64(raw: bytes) -> str:
    """``raw`` as the gateway's base64 text."""
    return base64.b64encode(raw).decode("ascii")


def unb64(text: Any) -> bytes:
    """The bytes of a base64 field (empty when it is missing)."""
    if not isinstance(text, str):
        return b""
    return base64.b64decode(text)


def as_int(value: Any) -> int:
    """An int64 field (they come as strings; zero values are omitted)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


@attrs.frozen
class Kv:
    """One key as a range or a watch returned it."""

    key: bytes
    value: bytes
    mod_revision: int


def kvs_of(body: Mapping[str, Any]) -> list[Kv]:
    """The keys of a range answer."""
    return [
        Kv(unb64(kv.get("key")), unb64(kv.get("value")), as_int(kv.get("mod_revision")))
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


def build_request(
    client: httpx.AsyncClient,
    url: str,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    *,
    timeout: httpx.Timeout | None = None,
) -> httpx.Request:
    """A JSON ``POST`` of ``body`` to ``url``."""
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


def answer_of(
    response: httpx.Response, url: str, *, unavailable: Callable[[], None]
) -> dict[str, Any]:
    """The body of a successful answer; else raise what the failure means.

    ``unavailable`` is called first when another member may do better
    (the answer was unreadable, or the member could not serve it).
    """
    try:
        answer = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        unavailable()
        raise Unknown(f"{url}: HTTP {response.status_code} with a body that is not JSON") from exc
    if not isinstance(answer, dict):
        raise Unknown(f"{url}: HTTP {response.status_code}: unexpected answer {answer!r:.80}")
    if response.status_code == 200 and "error" not in answer:
        return answer
    code = as_int(answer.get("code"))
    message = str(answer.get("message") or answer.get("error") or response.reason_phrase)
    reason = f"{url}: HTTP {response.status_code}: {message}"
    if code == _UNAUTHENTICATED:
        raise Unauthenticated(reason)
    if code in (_PERMISSION_DENIED, _INVALID_ARGUMENT, _FAILED_PRECONDITION):
        raise Refused(reason)
    # Unavailable, deadline exceeded, leader changed, no leader: the
    # member may have proposed the request; another member may do better.
    unavailable()
    raise Unknown(reason)


def slot_of(kv: Kv | None) -> Slot:
    """What a read key held (``kv`` is ``None`` when it was absent)."""
    return Slot(None) if kv is None else Slot(kv.value, kv.mod_revision)


def watch_result(line: str) -> Any:
    """The ``result`` of one line of a watch stream; raise when it reports an error."""
    try:
        answer = json.loads(line)
    except json.JSONDecodeError as exc:
        raise Unknown(f"watch sent a line that is not JSON: {line[:80]!r}") from exc
    if not isinstance(answer, dict):
        raise Unknown(f"watch sent {answer!r:.80}")
    if "error" in answer:
        error = answer["error"]
        code = as_int(error.get("code")) if isinstance(error, dict) else 0
        text = error.get("message") if isinstance(error, dict) else error
        if code == _UNAUTHENTICATED:
            raise Unauthenticated(f"watch: {text}")
        raise Unknown(f"watch: {text}")
    return answer.get("result", {})


class EtcdGateway(KvTransport):
    """The requests of an etcd transport: logged in, one member at a time."""

    def __init__(self, urls: Sequence[str], client: httpx.AsyncClient | None, **kv: Any) -> None:
        super().__init__(**kv)
        self.endpoints: tuple[str, ...] = tuple(urls)
        self._client = client
        self._own_client = client is None
        self._token: str | None = None
        self._token_lock: anyio.Lock | None = None
        self._current = 0
        self._revision = 0
        #: The lease new writes are attached to, and when (monotonic) it was granted.
        self._lease: tuple[int, float] | None = None

    # ----------------------------------------------------------------- lifecycle

    async def _open_resources(self, stack: contextlib.AsyncExitStack) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.connect_timeout),
                limits=httpx.Limits(max_keepalive_connections=16),
            )
        if self._own_client:
            stack.push_async_callback(self._close_client)
        self._token_lock = anyio.Lock()

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        await close_shielded(client)

    def _require_running(self) -> httpx.AsyncClient:
        client = self._client
        if self._group is None or client is None:
            raise self._not_running()
        return client

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
                raise Refused("etcd answered the login without a token (is auth enabled?)")
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
            response = await client.send(build_request(client, url, body, headers))
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            self._next_endpoint()
            raise Failed(f"{url}: cannot connect: {exc}") from exc
        except httpx.HTTPError as exc:
            self._next_endpoint()
            raise Unknown(f"{url}: {type(exc).__name__}: {exc}") from exc
        finally:
            self._open -= 1
        return answer_of(response, url, unavailable=self._next_endpoint)

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
        except Unauthenticated:
            token = await self._authenticate(client, token)
            try:
                return await self._post(client, path, body, token=token)
            except Unauthenticated as exc:
                raise Refused(str(exc)) from exc

    def _seen(self, answer: Mapping[str, Any]) -> int:
        header = answer.get("header", {})
        revision = as_int(header.get("revision")) if isinstance(header, dict) else 0
        self._revision = max(self._revision, revision)
        return revision

    async def _range(self, key: bytes, range_end: bytes | None = None) -> tuple[list[Kv], int]:
        body: dict[str, Any] = {"key": b64(key)}
        if range_end is not None:
            body["range_end"] = b64(range_end)
        answer = await self._call("/v3/kv/range", body)
        return kvs_of(answer), self._seen(answer)

    async def _get(self, key: bytes) -> Slot:
        kvs, _revision = await self._range(key)
        return slot_of(kvs[0] if kvs else None)

    async def _write_lease(self) -> int:
        """The lease to attach a write to (``0``: none, the key is kept for ever).

        One lease serves every write of a stretch of ``retention / 16``; its
        TTL is ``retention`` plus that stretch, so a key lives at least
        ``retention`` after its last write and at most 1/16 longer. A new
        lease is granted for the next stretch (etcd deletes a lease's keys
        when it expires; a key written again moves to the newer lease).
        """
        if self.retention is None:
            return 0
        stretch = self.retention / 16
        now = anyio.current_time()
        if self._lease is not None and now - self._lease[1] < stretch:
            return self._lease[0]
        ttl = math.ceil(self.retention + stretch)
        answer = await self._call("/v3/lease/grant", {"TTL": str(ttl)})
        lease = as_int(answer.get("ID"))
        if not lease:
            raise Unknown(f"lease grant answered without an ID: {answer!r:.80}")
        self._lease = (lease, now)
        return lease

    async def _txn(
        self, key: bytes, mod_revision: int, puts: Sequence[tuple[bytes, bytes | None]]
    ) -> tuple[bool, Slot]:
        """Apply ``puts`` (``None``: delete) iff ``key`` is at ``mod_revision`` (0: absent).

        Returns ``(True, what ``key`` holds now)`` when applied, else
        ``(False, key's current value)``. Raises :class:`Unknown` when the
        answer was lost: the caller reads again.
        """
        lease = await self._write_lease() if any(v is not None for _, v in puts) else 0
        success: list[dict[str, Any]] = []
        for target, value in puts:
            if value is None:
                success.append({"request_delete_range": {"key": b64(target)}})
                continue
            put: dict[str, Any] = {"key": b64(target), "value": b64(value)}
            if lease:
                put["lease"] = str(lease)
            success.append({"request_put": put})
        compare = {"target": "MOD", "key": b64(key), "mod_revision": str(mod_revision)}
        body = {
            "compare": [{**compare, "result": "EQUAL"}],
            "success": success,
            "failure": [{"request_range": {"key": b64(key)}}],
        }
        try:
            answer = await self._call("/v3/kv/txn", body)
        except Unknown as exc:
            if "lease not found" in str(exc):
                self._lease = None  # revoked or expired early: grant another one
            self._count("unknown_outcomes")
            raise
        revision = self._seen(answer)
        if answer.get("succeeded") and revision:  # omitted (false) when the compare failed
            return True, Slot(puts[0][1], revision)
        for response in answer.get("responses", ()) or ():
            found = kvs_of(response.get("response_range", {}))
            if found:
                return False, slot_of(found[0])
        return False, Slot(None)
