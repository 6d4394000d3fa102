"""A TCP proxy on loopback that a test can cut and restore.

Conformance checks need to take a "relay" down and bring it back with its
data intact. For a store such as etcd or Redis the test puts this proxy
between the transports and the server: :meth:`TcpProxy.cut` closes every
proxied connection and refuses new ones (connections are accepted and closed
at once, so clients fail fast), :meth:`TcpProxy.restore` lets them through
again. :meth:`TcpProxy.lose_next_answer` lets a request through and then
resets its connection instead of delivering the answer: the request took
effect, the client cannot know. It runs in the test's own event loop
(asyncio or trio).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio
import anyio.abc

__all__ = ["TcpProxy", "tcp_proxy"]


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to ``127.0.0.1:target_port`` while it is up."""

    def __init__(self, listener: anyio.abc.SocketListener, target_port: int) -> None:
        self._listener = listener
        self.target_port = target_port
        self.up = True
        self.answers_to_lose = 0
        """Answers (server to client) to drop, each by resetting its connection."""
        self.lost_answers = 0
        self._scopes: set[anyio.CancelScope] = set()

    def __repr__(self) -> str:
        state = "up" if self.up else "cut"
        return f"TcpProxy(:{self.port} -> :{self.target_port}, {state})"

    @property
    def port(self) -> int:
        return int(self._listener.extra(anyio.abc.SocketAttribute.local_port))

    def cut(self) -> None:
        """Close every proxied connection and refuse new ones until :meth:`restore`."""
        self.up = False
        for scope in list(self._scopes):
            scope.cancel()

    def restore(self) -> None:
        self.up = True

    async def _handle(self, client: anyio.abc.SocketStream) -> None:
        async with client:
            if not self.up:
                return
            scope = anyio.CancelScope()
            self._scopes.add(scope)
            try:
                with scope:
                    try:
                        server = await anyio.connect_tcp("127.0.0.1", self.target_port)
                    except OSError:
                        return
                    async with server, anyio.create_task_group() as group:
                        group.start_soon(self._pump, client, server, group.cancel_scope)
                        group.start_soon(self._answer, server, client, group.cancel_scope)
            finally:
                self._scopes.discard(scope)

    def lose_next_answer(self) -> None:
        """Let the next request through, then reset its connection instead of answering.

        The server has done what was asked; the client cannot know (an
        unknown outcome, as when a connection breaks after sending).
        """
        self.answers_to_lose += 1

    async def _answer(
        self, source: anyio.abc.SocketStream, sink: anyio.abc.SocketStream, scope: anyio.CancelScope
    ) -> None:
        try:
            async for chunk in source:
                if self.answers_to_lose:
                    self.answers_to_lose -= 1
                    self.lost_answers += 1
                    break
                await sink.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        scope.cancel()

    @staticmethod
    async def _pump(
        source: anyio.abc.SocketStream, sink: anyio.abc.SocketStream, scope: anyio.CancelScope
    ) -> None:
        try:
            async for chunk in source:
                await sink.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        scope.cancel()


@contextlib.asynccontextmanager
async def tcp_proxy(target_port: int) -> AsyncIterator[TcpProxy]:
    """A running :class:`TcpProxy` to ``target_port`` (stopped on exit)."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    proxy = TcpProxy(listener, target_port)
    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, proxy._handle)
        try:
            yield proxy
        finally:
            proxy.cut()
            group.cancel_scope.cancel()
