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
    from ._transport_base import missing_extra

    raise missing_extra("etcd", "etcd", _exc) from _exc

import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import anyio
import attrs

from ..core._models import Envelope, Message
from ..protocols._contracts import Query
from ..wire import Codec
from ._stream import StreamSubscription
from ._transport_base import DEFAULT_RETENTION, check_urls, url_list
from .kv._etcd_http import (
    EtcdGateway,
    Failed,
    Kv,
    Refused,
    Unauthenticated,
    Unknown,
    as_int,
    b64,
    build_request,
    kvs_of,
    unb64,
    watch_result,
)
from .kv._names import (
    MESSAGE_FIELD_PREFIX,
    Slot,
    canonical_account,
    decode_stored,
    exact_account,
    field_of,
    proof_field,
    quote_workload,
)

__all__ = [
    "EtcdSubscription",
    "EtcdTransport",
    "canonical_identity",
    "prefix_end",
    "provider_permissions",
]


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


class EtcdTransport(EtcdGateway):
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

    ``retention`` (seconds, default 400 days; ``None``: for ever) is how long
    a key is kept after its last write: every put carries an etcd lease of
    that length. It must be longer than any reservation the provider sells
    (plus the longest a node may be down): see ``docs/backends.md``.

    A query with ``authors`` reads only their areas (one range each, in one
    transaction: a single snapshot); without, one range over every
    provider's area. A subscription with ``query.since`` gets the stored
    matching messages first. Without it, the watch starts at the last
    revision this transport saw (so nothing written after the call is
    missed; a few older messages may come too), or, before any, with the
    stored messages of the last ``live_backlog`` seconds. Claims write the
    claim key and this provider's proof in one transaction that compares
    the claim key's ``mod_revision`` with the one read.

    :attr:`counters` counts ``requests``, ``unknown_outcomes``, ``rereads``,
    ``reauthentications``, ``endpoint_switches``, ``watch_reconnects``,
    ``watch_compacted``, ``dropped_malformed``, ``dropped_misplaced``,
    ``dropped_overflow`` and ``forged_claims``.
    """

    _backend = "etcd"
    _scheme = "etcd"
    _reconnects = "watch_reconnects"
    _task = "etcd-watch"

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
        retention: float | None = DEFAULT_RETENTION,
    ) -> None:
        urls = [
            url.rstrip("/") if isinstance(url, str) else url
            for url in url_list(endpoints, "etcd endpoints")
        ]
        check_urls(
            urls,
            ("http://", "https://"),
            what="etcd endpoints",
            empty="an etcd transport needs at least one endpoint URL",
        )
        super().__init__(
            urls,
            client,
            user=user,
            password=password,
            name=name if name is not None else urls[0],
            codec=codec,
            wall_clock=wall_clock,
            connect_timeout=connect_timeout,
            reconnect_backoff=reconnect_backoff,
            subscription_buffer=subscription_buffer,
            live_backlog=live_backlog,
            retention=retention,
        )
        self.prefix = _normal_prefix(prefix)
        self._last_watch_error = ""

    def __repr__(self) -> str:
        state = "running" if self._group is not None else "stopped"
        return f"EtcdTransport({self.user!r}, {list(self.endpoints)!r}, {state})"

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
        if (
            not field.startswith(MESSAGE_FIELD_PREFIX)
            or exact_account(signer, scheme="etcd") is None
        ):
            return None
        return signer, field

    def _envelope(self, kv: Kv, query: Query | None) -> Envelope[Message] | None:
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

    # ----------------------------------------------------------------- KvTransport

    def _where(self, message: Message) -> bytes:
        return self._message_key(self.user, message)

    async def _read_message(self, where: Hashable) -> Slot:
        assert isinstance(where, bytes)
        return await self._get(where)

    def _decode_own(self, where: Hashable, value: bytes) -> Message | None:
        assert isinstance(where, bytes)
        envelope = self._envelope(Kv(where, value, 0), None)
        return None if envelope is None else envelope.message

    async def _swap_message(self, where: Hashable, current: Slot, data: bytes) -> tuple[bool, Slot]:
        assert isinstance(where, bytes)
        return await self._txn(where, current.revision, [(where, data)])

    async def _read_claim(self, workload_id: str) -> Slot:
        return await self._get(self._claim_key(workload_id))

    async def _read_proof(self, claimant: str, workload_id: str) -> Slot:
        return await self._get(self._proof_key(claimant, workload_id))

    async def _swap_claim(
        self, workload_id: str, current: Slot, data: bytes | None
    ) -> tuple[bool, Slot]:
        key = self._claim_key(workload_id)
        proof = self._proof_key(self.user, workload_id)
        return await self._txn(key, current.revision, [(key, data), (proof, data)])

    async def _stored(self, query: Query) -> list[Envelope[Message]]:
        ranges = self._ranges(query)
        if len(ranges) == 1:
            ((start, end),) = ranges
            kvs = (await self._range(start, end))[0]
        else:
            body = {
                "success": [
                    {"request_range": {"key": b64(start), "range_end": b64(end)}}
                    for start, end in ranges
                ]
            }
            answer = await self._call("/v3/kv/txn", body)
            self._seen(answer)
            kvs = []
            for response in answer.get("responses", ()) or ():
                kvs.extend(kvs_of(response.get("response_range", {})))
        return [e for e in (self._envelope(kv, query) for kv in kvs) if e is not None]

    def _ranges(self, query: Query) -> list[tuple[bytes, bytes]]:
        if query.authors is None:
            start = f"{self.prefix}p/".encode()
            return [(start, prefix_end(start))]
        ranges = []
        for author in sorted(query.authors):
            start = (self._area(author) + MESSAGE_FIELD_PREFIX).encode()
            ranges.append((start, prefix_end(start)))
        return ranges

    def _subscription(self, query: Query) -> EtcdSubscription:
        backlog: Query | None = None
        if query.since is not None:
            backlog = query
        elif not self._revision:
            # No revision seen yet to watch from: read what is stored first.
            backlog = attrs.evolve(query, since=self.wall_clock() - self.live_backlog)
        subscription = EtcdSubscription(self, query, self.subscription_buffer, backlog)
        subscription.revision = self._revision
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

    async def _probe(self, deadline: float) -> None:
        # Log in (once per token) and read one key this provider may read.
        await self._call("/v3/kv/range", {"key": b64(self.prefix.encode()), "keys_only": True})

    async def _connect_once(self, subscription: EtcdSubscription) -> bool:
        try:
            if subscription.backlog is not None:
                await self._backlog(subscription, subscription.backlog)
                subscription.backlog = None
            if await self._stream(subscription):
                # The revisions missed are gone: read what is stored.
                self._count("watch_compacted")
                subscription.backlog = subscription.query
                return True
        except (Failed, Refused, Unknown, httpx.HTTPError) as exc:
            self._count("watch_errors")
            self._last_watch_error = str(exc)
        except Unauthenticated:
            self._count("watch_errors")
            self._token = None
        return False

    async def _stream(self, subscription: EtcdSubscription) -> bool:
        """Run one watch until it ends; ``True`` when its start revision was compacted."""
        client = self._require_running()
        token = self._token or await self._authenticate(client, None)
        start, end = self._watch_range(subscription.query)
        create: dict[str, Any] = {
            "key": b64(start),
            "range_end": b64(end),
            "start_revision": str(subscription.revision + 1),
        }
        url = self.endpoints[self._current] + "/v3/watch"
        timeout = httpx.Timeout(self.connect_timeout, read=None)
        request = build_request(
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
                        raise Unauthenticated(f"{url}: HTTP 401")
                    raise Failed(f"{url}: HTTP {response.status_code}")
                subscription.connected_at = anyio.current_time()
                # Never leave this loop early: httpx's chain of async
                # generators must run to its end (closing the response ends
                # it), or trio warns when they are collected.
                async for line in response.aiter_lines():
                    if compacted or stop is not None or not line.strip():
                        continue
                    try:
                        compacted = self._on_watch_line(subscription, line)
                    except (Unknown, Unauthenticated) as exc:
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
        result = watch_result(line)
        if not isinstance(result, dict):
            return False
        if as_int(result.get("compact_revision")):
            return True
        if result.get("canceled"):
            raise Unknown(f"watch canceled: {result.get('cancel_reason', '')}")
        self._seen(result)
        for event in result.get("events", ()) or ():
            kv_body = event.get("kv", {})
            revision = as_int(kv_body.get("mod_revision"))
            subscription.revision = max(subscription.revision, revision)
            if event.get("type") == "DELETE":
                continue
            kv = Kv(unb64(kv_body.get("key")), unb64(kv_body.get("value")), revision)
            envelope = self._envelope(kv, subscription.query)
            if envelope is not None:
                subscription._deliver(envelope)
        return False
