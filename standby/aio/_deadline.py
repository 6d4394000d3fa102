"""``anyio.fail_after`` without the two generator-based context managers it is built from.

``anyio.fail_after(delay)`` wraps ``anyio.fail_at``, which wraps a cancel
scope, each in a ``contextlib.contextmanager``: a generator, its wrapper
object and two resumptions apiece, about as much again as the cancel scope
itself. The node bounds its runtime's spawns and stops this way (calls that
may shield their clean-up, which a cancel scope lets finish), so
:class:`fail_after` enters the same :class:`anyio.CancelScope` directly and
raises the same ``TimeoutError`` when the scope caught its own deadline's
cancellation: the same scope, the same cancellation, on every backend.
"""

from __future__ import annotations

from types import TracebackType

import anyio

__all__ = ["fail_after"]


class fail_after:  # noqa: N801 - named after the anyio function it stands in for
    """``with fail_after(delay):`` raises ``TimeoutError`` when the block outlasts ``delay`` s."""

    __slots__ = ("_scope",)

    def __init__(self, delay: float) -> None:
        self._scope = anyio.CancelScope(deadline=anyio.current_time() + delay)

    def __enter__(self) -> anyio.CancelScope:
        return self._scope.__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        # Typed as anyio's fail_after is (a context manager made of a generator),
        # so that type checkers know the block's exceptions go on.
        scope = self._scope
        handled = scope.__exit__(exc_type, exc, tb)
        if scope.cancelled_caught and anyio.current_time() >= scope.deadline:
            raise TimeoutError
        return handled
