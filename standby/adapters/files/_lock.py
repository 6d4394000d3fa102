"""One holder at a time for a store: an exclusive ``flock`` on ``<file>.lock``.

Two nodes (or a node and an operator's command that acts as one) writing the
same store would each save their own view over the other's: slots, intents
and primary records would be lost, and a fencing token could be handed out
twice. The holder takes an exclusive, non-blocking lock on a file beside the
store; a second would-be holder gets a :class:`~standby.StoreError` naming
the lock file. The kernel drops the lock when its holder's process dies, so
a crashed node never leaves the store locked.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ...core._errors import StoreError

__all__ = ["StoreLock"]


class StoreLock:
    """An exclusive lock on ``path`` (created if missing), held until :meth:`release`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def acquire(self, owner: str) -> None:
        """Take the lock for ``owner`` (named in the error another holder would get).

        Raises :class:`~standby.StoreError` when someone else holds it, or the
        lock file cannot be opened. Taking a lock this object holds is a no-op.
        """
        if self._fd is not None:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot open the store's lock file {self.path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_owner(fd)
            os.close(fd)
            raise StoreError(
                f"the store is in use: {self.path} is locked by another holder ({holder}); "
                "stop the node that uses it first (read-only tools open it with read_only=True)"
            ) from exc
        os.ftruncate(fd, 0)
        os.write(fd, f"{owner} (pid {os.getpid()})\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Let the lock go (a no-op when not held)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the flock


def _read_owner(fd: int) -> str:
    """Who wrote the lock file last (a hint for the error message)."""
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "unknown"
