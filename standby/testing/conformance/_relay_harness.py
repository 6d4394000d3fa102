"""What :func:`~standby.testing.check_relay_transport` gets from a harness, and its tools.

:class:`RelayHarness` is what an adapter author builds; the helpers below
are what every relay check uses: picking three transports from it, reading
a subscription, describing what came back, and building the messages the
checks publish.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TypeAlias

import anyio
import attrs

from ...core._models import (
    Envelope,
    LeaseRevocation,
    Message,
    PromotionAnnouncement,
    PromotionClaim,
    fencing_token,
)
from ...protocols._contracts import RelayTransport, Subscription
from ._base import DEFAULT_MAX_BLOCKING, fail

__all__ = [
    "DEFAULT_MALFORMED_IDENTITIES",
    "RelayHarness",
    "RelayHarnessFactory",
    "collect",
    "describe",
    "make_announcement",
    "make_claim",
    "make_revocation",
    "pick",
]

#: Strings that no transport may accept as an identity.
DEFAULT_MALFORMED_IDENTITIES: tuple[str, ...] = ("", "   ", "not an identity!", "\x00")


def _no_aliases(_identity: str) -> Sequence[str]:
    return ()


@attrs.frozen(kw_only=True)
class RelayHarness:
    """What :func:`check_relay_transport` needs from one harness.

    Required:

    ``transports``
        At least three running transports with distinct identities, all
        talking to the same relays (the checks use them as a publisher, a
        reader and a stranger).
    ``relays``
        The relay names as the transports report them (in ``acked``,
        ``answered``, ``errors`` and ``Envelope.relay``).
    ``forge(message, as_signer)``
        Offer ``message`` to the relays (at least one must store it) *as if*
        signed by ``as_signer`` but without that identity's key: a Nostr
        event with ``as_signer``'s pubkey and a wrong signature, a message
        injected by a stranger, ... The check then requires that no
        transport ever attributes it to ``as_signer``.

    Optional probes (a check that needs a missing one is skipped):

    ``aliases(identity)``
        Other spellings of ``identity`` that ``canonical()`` must map to it
        (``npub1...`` for a hex key, upper case, surrounding blanks...).
    ``malformed_identities``
        Strings ``canonical()`` must refuse with ``IdentityError`` (on top of
        :data:`DEFAULT_MALFORMED_IDENTITIES`).
    ``open_requests()``
        The number of operations the transports still hold (sockets,
        subscriptions on the relays, waiters); it must come back to its
        value before a cancelled publish or query. Without it the check
        counts the event loop's tasks only.
    ``relay_down(name)`` / ``relay_up(name)``
        Make one relay unreachable and bring it back (kept data intact).

    Settings: ``wall_clock`` stamps the messages the checks publish;
    ``timeout`` is passed to ``publish`` and ``query``; ``delivery_timeout``
    bounds how long a subscription delivery (or a reconnection) may take;
    ``cancel_latency`` is how soon a cancelled ``publish`` or ``query`` must
    return (the best of three tries counts); ``max_blocking`` is how long
    one call of a transport (or of a subscription it returned) may keep the
    event loop from running anything else, in real seconds (``None``: not
    checked).
    """

    transports: Sequence[RelayTransport]
    relays: Sequence[str]
    forge: Callable[[Message, str], Awaitable[None]]
    aliases: Callable[[str], Sequence[str]] = _no_aliases
    malformed_identities: Sequence[str] = ()
    open_requests: Callable[[], int] | None = None
    relay_down: Callable[[str], Awaitable[None]] | None = None
    relay_up: Callable[[str], Awaitable[None]] | None = None
    wall_clock: Callable[[], float] = time.time
    timeout: float = 2.0
    delivery_timeout: float = 5.0
    cancel_latency: float = 0.03
    max_blocking: float | None = DEFAULT_MAX_BLOCKING


RelayHarnessFactory: TypeAlias = Callable[[], AbstractAsyncContextManager[RelayHarness]]
"""Zero-argument callable returning an async context manager that yields a :class:`RelayHarness`."""


def pick(
    harness: RelayHarness, check: str
) -> tuple[RelayTransport, RelayTransport, RelayTransport]:
    """The first three transports of ``harness`` (checked: distinct, with relays)."""
    transports = list(harness.transports)
    if len(transports) < 3:
        raise fail(check, f"the harness must offer at least 3 transports, got {len(transports)}")
    identities = [t.identity for t in transports]
    if len(set(identities)) != len(identities):
        raise fail(check, f"the harness's transports must have distinct identities: {identities}")
    if not harness.relays:
        raise fail(check, "the harness names no relays")
    return transports[0], transports[1], transports[2]


def describe(envelopes: Sequence[Envelope[Message]]) -> str:
    """``envelopes`` in a failure message: each message's type, signer and relay."""
    return (
        "["
        + ", ".join(f"{type(e.message).__name__} by {e.signer} via {e.relay}" for e in envelopes)
        + "]"
    )


async def collect(
    subscription: Subscription,
    *,
    until: Callable[[list[Envelope[Message]]], bool],
    within: float,
    check: str = "subscribe",
) -> list[Envelope[Message]]:
    """Read ``subscription`` until ``until(got)`` or ``within`` seconds passed.

    An open subscription must keep waiting: one that ends
    (``StopAsyncIteration``) or raises fails ``check``.
    """
    got: list[Envelope[Message]] = []
    with anyio.move_on_after(within):
        while not until(got):
            try:
                envelope = await subscription.__anext__()
            except StopAsyncIteration:
                raise fail(
                    check,
                    "an open subscription ended (StopAsyncIteration) before it was closed; "
                    f"received so far: {describe(got)}",
                ) from None
            except Exception as exc:
                raise fail(
                    check,
                    f"reading an open subscription raised {type(exc).__name__}: {exc}",
                ) from exc
            got.append(envelope)
    return got


def make_announcement(
    workload: str, primary: RelayTransport, at: float, epoch: int = 1
) -> PromotionAnnouncement:
    """``primary`` announces itself for ``workload`` in ``epoch`` (standby index 0)."""
    return PromotionAnnouncement(
        workload_id=workload,
        new_primary=primary.identity,
        promoted_at=at,
        epoch=epoch,
        fencing_token=fencing_token(epoch, 0),
    )


def make_revocation(
    workload: str, primary: RelayTransport, standby: RelayTransport, at: float, reason: str
) -> LeaseRevocation:
    """A revocation of ``workload`` naming ``primary`` and addressed to ``standby``."""
    return LeaseRevocation(
        workload_id=workload,
        primary=primary.identity,
        standbys=(standby.identity,),
        revoked_at=at,
        reason=reason,
    )


def make_claim(workload: str, claimant: RelayTransport, at: float) -> PromotionClaim:
    """``claimant``'s claim on epoch 1 of ``workload`` as standby 0."""
    return PromotionClaim(
        workload_id=workload,
        epoch=1,
        fencing_token=fencing_token(1, 0),
        claimant=claimant.identity,
        standby_index=0,
        claimed_at=at,
    )
