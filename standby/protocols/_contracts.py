"""Implementation of :mod:`standby.protocols` (see its docstring).

The transport, runtime and store protocols live here; the values and rules
about relay messages they share are in ``_relay_messages`` and re-exported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeAlias

import attrs
from typing_extensions import Protocol, runtime_checkable

from ..core._effects import DropReason
from ..core._models import Envelope, Message, PromotionClaim, StandbySlot
from ..core._records import NodeState
from ..core._relay_messages import (
    MESSAGE_KINDS,
    ClaimOutcome,
    MessageKind,
    PublishResult,
    Query,
    QueryResult,
    addressable_key,
    claim_wins,
    is_newer,
    message_kind,
    message_timestamp,
    newest_per_key,
    unexpected_author,
)

__all__ = [
    "MESSAGE_KINDS",
    "AtomicClaims",
    "ChecksSpecs",
    "ClaimOutcome",
    "ContainerRuntime",
    "ContainerStatus",
    "MessageKind",
    "PublishResult",
    "Query",
    "QueryResult",
    "RelayTransport",
    "ReportsDrops",
    "RunningWorkload",
    "SlotStore",
    "Subscription",
    "TransportDrop",
    "WaitsConnected",
    "addressable_key",
    "claim_wins",
    "is_newer",
    "message_kind",
    "message_timestamp",
    "newest_per_key",
    "unexpected_author",
]


ContainerStatus: TypeAlias = Literal["running", "stopped", "absent"]
"""What :meth:`ContainerRuntime.status` reports."""

# --------------------------------------------------------------------------
# The protocols
# --------------------------------------------------------------------------


@runtime_checkable
class Subscription(Protocol):
    """A live stream of envelopes, from :meth:`RelayTransport.subscribe`.

    Iterate it with ``async for``; close it with :meth:`aclose` (the node
    does so with :func:`contextlib.aclosing`).
    """

    def __aiter__(self) -> Subscription:
        """Return ``self``."""
        ...

    async def __anext__(self) -> Envelope[Message]:
        """The next matching envelope, waiting as long as needed.

        Raises :class:`StopAsyncIteration` once the subscription is closed and
        :class:`~standby.TransportError` when it broke for good (the node then
        subscribes again). Cancelling a waiting call loses no envelope that
        was already delivered to the subscription.
        """
        ...

    async def aclose(self) -> None:
        """Stop the subscription and release its resources. Idempotent."""
        ...


@runtime_checkable
class RelayTransport(Protocol):
    """How a provider talks to its peers through ``N`` relays.

    Every envelope a transport hands out carries the **authenticated**,
    canonical identity of its signer (for Nostr: the checked event signature),
    never an identity read from the message body. A transport signs what it
    publishes with :attr:`identity`.
    """

    @property
    def identity(self) -> str:
        """This provider's own identity, in canonical form. Never raises."""
        ...

    @property
    def relay_count(self) -> int:
        """How many relays this transport writes to and reads from (``N``).

        The node refuses a :class:`~standby.Timing` whose ``relay_count``
        differs, since its quorums are computed for ``N`` relays. A
        linearizable store (one etcd cluster, one Redis) counts as one relay.
        """
        ...

    def canonical(self, identity: str) -> str:
        """The canonical form of ``identity`` (for Nostr: lowercase hex of ``npub1...``).

        Pure and idempotent (``canonical(canonical(x)) == canonical(x)``).
        Raises :class:`~standby.IdentityError` for a malformed identity. The
        node compares identities only in this form (failure mode 2).
        """
        ...

    async def publish(self, message: Message, *, timeout: float) -> PublishResult:
        """Sign ``message`` and send it to every relay, concurrently.

        Returns within about ``timeout`` seconds with the relays that
        acknowledged storing it; a relay that is down, unreachable or slower
        than ``timeout`` appears in ``errors``, it is not an exception.
        Publishing the same message twice is harmless (relays and readers
        deduplicate). Raises :class:`~standby.TransportError` only when the
        message could not be sent at all (for example it cannot be encoded).
        On cancellation nothing is reported; relays that already stored the
        message keep it.
        """
        ...

    async def query(self, query: Query, *, timeout: float) -> QueryResult:
        """Read the stored messages matching ``query`` from every relay.

        Returns within about ``timeout`` seconds with what the relays that
        answered in time returned, reduced to the newest version per
        addressable key (:func:`newest_per_key`), and the set of relays that
        answered. Read-only, so it may be repeated freely. Raises
        :class:`~standby.TransportError` only when the query could not be sent
        at all. On cancellation nothing is returned and nothing is left
        running.
        """
        ...

    def subscribe(self, query: Query) -> Subscription:
        """Start receiving messages matching ``query`` as relays store them.

        Delivery is best effort: messages may arrive late, twice, out of
        order, or not at all (the node re-reads with :meth:`query` before any
        decision that matters). When ``query.since`` is set, stored messages
        at least that new are delivered first. Must not block; the
        subscription is closed with :meth:`Subscription.aclose`.
        """
        ...


@attrs.frozen
class TransportDrop:
    """An incoming message a transport dropped before it became an envelope.

    ``reason`` is :attr:`~standby.core.DropReason.BAD_SIGNATURE` (the signature or
    the event id does not verify), :attr:`~standby.core.DropReason.UNEXPECTED_AUTHOR`
    (see :func:`unexpected_author`) or :attr:`~standby.core.DropReason.MALFORMED`
    (the body or the envelope cannot be decoded). ``signer`` is the identity
    the message *claims* (unauthenticated for a bad signature; ``None`` when
    unknown), ``workload_id`` the workload it names when known.
    """

    reason: DropReason
    relay: str
    signer: str | None
    detail: str
    workload_id: str | None = None


@runtime_checkable
class ChecksSpecs(Protocol):
    """Optional capability of a runtime: it tells a spec that can never start.

    The node calls :meth:`check_spec` when it accepts a request, as primary
    and as standby, so a provider never holds a paid slot it cannot fulfil
    (failure mode 24): a missing executable or image is refused at once.
    """

    async def check_spec(self, spec: Any, *, workload_id: str) -> None:
        """Raise :class:`~standby.SpawnError` when ``spec`` could never start here.

        Starts nothing and changes nothing. Raises
        :class:`~standby.RuntimeFailure` when the runtime cannot be asked
        (the node then asks the host to try again).
        """
        ...


@runtime_checkable
class ReportsDrops(Protocol):
    """Optional capability of a transport: it reports the messages it drops.

    A transport checks every incoming message (signature, body, author)
    before it becomes an :class:`~standby.Envelope`; with this capability it
    tells the host about each one it drops, so forgery attempts are counted
    and visible. The node installs its hook while it runs (``isinstance(
    transport, ReportsDrops)``), counts the drops as ``transport_drops`` and
    emits an :class:`~standby.node.InputDropped` event for each.
    """

    def set_drop_hook(self, hook: Callable[[TransportDrop], None] | None) -> None:
        """Call ``hook`` with every dropped message from now on (``None``: stop).

        One hook at a time; a later call replaces it. The hook is called
        synchronously from the transport's own tasks and must not block; an
        exception it raises is swallowed by the transport.
        """
        ...


@runtime_checkable
class WaitsConnected(Protocol):
    """Optional capability of a transport: it connects ahead of the first request.

    A cold connection (a TCP and TLS handshake, a websocket upgrade, a login
    on the first request) can take longer than a ``query_timeout`` derived
    from the measured latency, and then the first real request fails with
    no fault at all. A transport with this capability starts connecting when
    it is entered; the node waits for :meth:`wait_connected` before its
    first request (bounded by its ``connect_timeout``).
    """

    async def wait_connected(self, *, timeout: float) -> frozenset[str]:
        """Open (and log in to) every relay; return those ready within ``timeout``.

        Ready means the next request to that relay pays no handshake: the
        connection is open and authenticated (a cheap request went through).
        A relay that is down or refuses the login is left out; nothing is
        raised for it. Cheap when everything is already connected.
        """
        ...


@runtime_checkable
class AtomicClaims(Protocol):
    """Optional capability of a transport: strict compare-and-set of a claim.

    With it, two standbys can never both hold one epoch, whatever the relays
    do (``docs/safety.md``, guarantee 2). The node detects it with
    ``isinstance(transport, AtomicClaims)``.
    """

    async def compare_and_set_claim(self, claim: PromotionClaim, *, timeout: float) -> ClaimOutcome:
        """Make ``claim`` the holder of ``(claim.workload_id, claim.epoch)`` unless taken.

        Wins when no live claim holds that epoch or a later one, or when the
        holder is the same claimant (so a retry after a lost answer wins
        again: idempotent). Otherwise returns the holder. Raises
        :class:`~standby.TransportError` when the store cannot be reached
        within ``timeout``; cancelled before the answer, the outcome is
        unknown and the node treats the claim as lost (it withdraws).
        """
        ...

    async def release_claim(self, claim: PromotionClaim, *, timeout: float) -> None:
        """Release ``claim`` if (and only if) it still holds its epoch. Idempotent.

        Raises :class:`~standby.TransportError` when the store cannot be
        reached.
        """
        ...


@attrs.frozen
class RunningWorkload:
    """One workload a runtime runs, as :meth:`ContainerRuntime.list` reports it.

    ``lease_end`` is the wall-clock instant (Unix seconds) after which the
    runtime stops it on its own; ``handle`` is what :meth:`ContainerRuntime.spawn`
    returned (or an equal value rebuilt from the runtime's own records).
    """

    workload_id: str
    fencing_token: int
    handle: Any = attrs.field(eq=False)
    lease_end: float


@runtime_checkable
class ContainerRuntime(Protocol):
    """How a provider runs the workload's container, bounded by a lease.

    Handles are opaque to the node: it keeps what :meth:`spawn` returned and
    passes it back. Every workload runs under a **lease end**, a wall-clock
    instant (Unix seconds) after which it must not run. The runtime enforces
    it with something that does not share the node's fate (a supervisor
    process, the engine's own deadline), so a node that is killed or frozen
    never leaves a workload running past its lease (``docs/safety.md``, guarantee
    4): the workload is stopped no later than ``lease_end + stop_grace``.
    The node refuses a runtime whose ``stop_grace`` exceeds its timing's
    ``fence_grace``.
    """

    @property
    def stop_grace(self) -> float:
        """Seconds after a lease end by which the workload is stopped, at most."""
        ...

    async def spawn(
        self,
        spec: Any,
        *,
        workload_id: str,
        fencing_token: int,
        lease_end: float,
        restore_from: str | None = None,
    ) -> Any:
        """Start the workload and return a handle once it runs.

        The runtime must hand ``fencing_token``, ``workload_id`` and the
        current lease end to the workload (so storage that rejects lower
        tokens can fence a stale writer, and a cooperative workload can stop
        by itself) and, when given, restore state from ``restore_from``. It
        stops the workload at ``lease_end`` unless :meth:`renew` extends it.
        Not idempotent: every call starts a container. Raises
        :class:`~standby.SpawnError` when the container could not be started
        (a bad spec, a missing executable or image, a lease end already
        past). When cancelled it must leave no running container behind.
        """
        ...

    async def renew(self, handle: Any, lease_end: float) -> None:
        """Move the workload's lease end to ``lease_end`` if that is later.

        An earlier or equal ``lease_end`` is ignored (a lease never shrinks
        through renewal). Renewing a stopped or absent workload does nothing.
        Raises :class:`~standby.RuntimeFailure` when the runtime cannot be
        told; the old bound then still holds.
        """
        ...

    async def status(self, handle: Any) -> ContainerStatus:
        """``"running"``, ``"stopped"`` (exited or stopped) or ``"absent"`` (unknown/removed).

        Read-only. Raises :class:`~standby.RuntimeFailure` when the runtime
        cannot be asked.
        """
        ...

    async def stop(self, handle: Any) -> None:
        """Stop the container; return once it no longer runs.

        Idempotent: stopping a stopped or absent container succeeds. Raises
        :class:`~standby.RuntimeFailure` when the container may still run.
        """
        ...

    async def list(self) -> Sequence[RunningWorkload]:
        """Every workload this runtime runs now for this provider.

        Works from a fresh runtime object too (after the node process
        restarted), so a node can adopt or stop what its previous incarnation
        left running. Read-only. Raises :class:`~standby.RuntimeFailure` when
        the runtime cannot be asked.
        """
        ...


@runtime_checkable
class SlotStore(Protocol):
    """Where the node's state survives a restart.

    The node saves and loads its whole state (:class:`~standby.core.NodeState`:
    slots, promotion intents, primary records) through :meth:`save_state`
    and :meth:`load_state`; :meth:`load` and :meth:`save` are the slot-table
    view of the same store, for hosts and tools.

    Durability is what the safety of a restart rests on: once
    :meth:`save_state` returns, the state must survive a crash of the
    process (and of the host, for a disk store). A store that acknowledges
    before its write is durable lets a restarted node promote twice into one
    epoch (failure mode 15).
    """

    async def load(self) -> Sequence[StandbySlot[Any]]:
        """Every slot saved last time (possibly expired ones: the node drops them).

        An empty sequence when nothing was ever saved. Raises
        :class:`~standby.StoreError` when saved data exists but cannot be read;
        it must never pretend the table is empty then.
        """
        ...

    async def save(self, slots: Sequence[StandbySlot[Any]]) -> Sequence[str]:
        """Replace the saved slot table with ``slots``, atomically (the rest stays).

        After a crash at any point, :meth:`load` returns either the old table
        or the new one. Returns the workload ids of the slots it chose not to
        write durably (for example slots holding secrets it cannot seal);
        empty when every slot was written. Raises :class:`~standby.StoreError`
        on failure. Idempotent. When cancelled, the saved table is the old or
        the new one.
        """
        ...

    async def load_state(self) -> NodeState[Any]:
        """The whole state saved last time; an empty state when nothing was saved.

        Raises :class:`~standby.StoreError` like :meth:`load`.
        """
        ...

    async def save_state(self, state: NodeState[Any]) -> Sequence[str]:
        """Replace the whole saved state with ``state``, atomically and durably.

        Returns what :meth:`save` returns. When it returns, the state
        survives a crash. Raises :class:`~standby.StoreError` on failure; when
        cancelled, the saved state is the old or the new one.
        """
        ...
