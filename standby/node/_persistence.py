"""The node's durable state: saved in the background, flushed before what must be durable."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import anyio

from ..core._errors import StoreError
from ..core._models import StandbySlot
from ..core._records import NodeState
from ..core._timing import Timing
from ..protocols._contracts import SlotStore
from ._events import OperationFailed, SlotsNotPersisted
from ._observe import Observer

__all__ = ["Persistence"]


class Persistence:
    """Keeps the store up to date with a version counter and one saving task.

    Every change bumps the version (:meth:`mark_dirty`); the task saves the
    state ``collect()`` returns whenever the saved version lags, retrying
    after ``retry_interval`` on failure. :meth:`flush` waits until the
    version of now is saved, and raises when a save after the call failed.
    """

    def __init__(
        self,
        store: SlotStore | None,
        timing: Timing,
        observer: Observer,
        collect: Callable[[], NodeState[Any]],
    ) -> None:
        self.store = store
        self.timing = timing
        self.observer = observer
        self.collect = collect
        self.version = 0
        self.saved_version = 0
        self._attempts = 0
        self._failure: tuple[int, int, BaseException] | None = None
        self._withheld: frozenset[str] = frozenset()
        self._dirty: anyio.Event | None = None
        self._saved: anyio.Event | None = None

    def open(self, owner: str) -> None:
        """Take the store for ``owner`` alone and create the events the saving task waits on.

        A store with ``acquire`` and ``release`` (``JsonFileStore``) is locked
        until :meth:`close`; another holder makes this raise
        :class:`~standby.StoreError`. Any other store is trusted to be used by
        one node.
        """
        acquire = getattr(self.store, "acquire", None)
        if acquire is not None:
            acquire(owner)
        self._dirty = anyio.Event()
        self._saved = anyio.Event()

    def close(self) -> None:
        """Let the store go (after the last save)."""
        release = getattr(self.store, "release", None)
        if release is not None:
            release()

    async def load(self) -> NodeState[Any]:
        """The state saved before (empty without a store)."""
        if self.store is None:
            return NodeState()
        return await self.store.load_state()

    def check_slot(self, slot: StandbySlot[Any]) -> None:
        """Raise :class:`~standby.StoreError` when the store could not save ``slot``.

        Stores with a ``check_slot`` method (``JsonFileStore``) are asked; any
        other store is trusted to save whatever it is given.
        """
        check = getattr(self.store, "check_slot", None)
        if check is not None:
            check(slot)

    def replace(self) -> None:
        """What is in memory replaces what was saved (a restore that dropped something)."""
        self.version += 1

    def mark_dirty(self) -> None:
        """The state changed: save it soon."""
        self.version += 1
        if self._dirty is not None:
            self._dirty.set()

    async def flush(self) -> None:
        """Wait until the state as it is now has been saved (raises StoreError on failure)."""
        if self.store is None:
            return
        target = self.version
        attempts = self._attempts
        while self.saved_version < target:
            failure = self._failure
            if failure is not None and failure[0] > attempts and failure[1] >= target:
                raise StoreError(f"slot table not saved: {failure[2]}") from failure[2]
            assert self._saved is not None
            await self._saved.wait()

    async def loop(self) -> None:
        """The saving task."""
        if self.store is None:
            await anyio.sleep_forever()
        while True:
            if self.saved_version >= self.version:
                self._dirty = dirty = anyio.Event()
                await dirty.wait()
            if not await self.save_once():
                await anyio.sleep(self.timing.retry_interval)

    async def save_once(self) -> bool:
        """Save the state once; whether that worked."""
        store = self.store
        if store is None:
            return True
        version = self.version
        state = self.collect()
        self._attempts += 1
        attempt = self._attempts
        try:
            withheld = await store.save_state(state)
        except Exception as exc:
            self._failure = (attempt, version, exc)
            self.observer.report(
                OperationFailed(self.observer.clock(), "save", None, str(exc)), exc_info=exc
            )
            ok = False
        else:
            self.saved_version = max(self.saved_version, version)
            self.observer.count("saves")
            self._report_withheld(withheld)
            ok = True
        saved, self._saved = self._saved, anyio.Event()
        if saved is not None:
            saved.set()
        return ok

    def _report_withheld(self, withheld: Sequence[str]) -> None:
        current = frozenset(withheld)
        fresh = current - self._withheld
        self._withheld = current
        if fresh:
            self.observer.report(SlotsNotPersisted(self.observer.clock(), tuple(sorted(fresh))))

    async def final_save(self) -> None:
        """One last save on the way out, bounded in time."""
        if self.store is None or self.saved_version >= self.version:
            return
        with anyio.move_on_after(max(self.timing.query_timeout, 1.0)):
            await self.save_once()
