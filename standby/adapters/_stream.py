"""Live subscriptions over a bounded in-memory stream (etcd, Redis, Nostr).

:class:`BufferedSubscription` is what the consumer iterates. For etcd and
Redis, the transport's reader task calls :meth:`StreamSubscription._deliver`
for each envelope and :meth:`StreamSubscription._end` when it stops. What
differs per backend (how it resumes, what it names itself) stays in the
subclass.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import anyio
import anyio.lowlevel

from ..core._errors import TransportError
from ..core._models import Envelope, Message
from ..protocols._contracts import Query

__all__ = ["BufferedSubscription", "StreamSubscription"]


class BufferedSubscription:
    """Implements ``Subscription`` over a bounded in-memory stream.

    The transport pushes envelopes with :meth:`_push`; when the consumer
    falls more than ``buffer`` envelopes behind, newer deliveries are
    dropped and counted (``dropped_overflow``) on the transport: delivery
    is best effort and the node re-reads before any decision.
    """

    #: The backend's name, for the error raised when its transport closes.
    backend: ClassVar[str] = "the"

    def __init__(self, transport: Any, query: Query, buffer: int) -> None:
        self._transport = transport
        self.query = query
        self._send, self._receive = anyio.create_memory_object_stream[Envelope[Message]](buffer)
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed

    def __aiter__(self) -> BufferedSubscription:
        return self

    async def __anext__(self) -> Envelope[Message]:
        """The next envelope; see :meth:`standby.protocols.Subscription.__anext__`."""
        if self._closed:
            raise StopAsyncIteration
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            if self._closed:
                raise StopAsyncIteration from None
            raise TransportError(f"the {self.backend} transport was closed") from None

    async def aclose(self) -> None:
        """Stop the live feed. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._detach()
        self._send.close()
        self._receive.close()
        await anyio.lowlevel.checkpoint()

    def _detach(self) -> None:
        """Stop what feeds this subscription (called once, by :meth:`aclose`)."""

    def _push(self, envelope: Envelope[Message]) -> None:
        try:
            self._send.send_nowait(envelope)
        except anyio.WouldBlock:
            self._transport._count("dropped_overflow")
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass


class StreamSubscription(BufferedSubscription):
    """A subscription fed by one background task of its transport (etcd, Redis)."""

    def __init__(self, transport: Any, query: Query, buffer: int, backlog: Query | None) -> None:
        super().__init__(transport, query, buffer)
        self.backlog = backlog
        """What to read from the store when (re)connected (``None``: nothing)."""
        self._scope = anyio.CancelScope()
        self.connected_at = -math.inf
        """When its live connection last (re)started (anyio time)."""

    def _detach(self) -> None:
        self._scope.cancel()
        self._transport._subscriptions.discard(self)

    def _deliver(self, envelope: Envelope[Message]) -> None:
        self._push(envelope)

    def _end(self) -> None:
        self._scope.cancel()
        self._send.close()
