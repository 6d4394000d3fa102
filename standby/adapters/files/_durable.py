"""Writing files so that a crash leaves the old content or the new, never a mix.

The slot store's file operations: an atomic replace (temporary file,
fsync, rename, fsync of the directory), a durable append, the clean-up of
temporaries a killed writer left behind, and a free name to move a corrupt
file aside to. The two writers raise :class:`~standby.StoreError` when
the write fails; the others never raise.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Final

from ...core._errors import StoreError

__all__ = ["append_durably", "atomic_write", "free_name", "fsync_directory", "remove_leftovers"]

_log = logging.getLogger("standby.store")


def append_durably(path: Path, data: bytes, *, created: bool) -> None:
    """Append ``data`` to ``path`` and fsync it (and the directory when it is new)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot write journal {path}: {exc}") from exc
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except OSError as exc:
        raise StoreError(f"cannot write journal {path}: {exc}") from exc
    finally:
        os.close(fd)
    if created:
        fsync_directory(path.parent)


def free_name(path: Path) -> Path:
    """The first ``<name>.corrupt-<n>`` beside ``path`` that does not exist yet."""
    n = 1
    while True:
        candidate = path.with_name(f"{path.name}.corrupt-{n}")
        if not candidate.exists():
            return candidate
        n += 1


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}."


#: Temporary names of :func:`atomic_write`: ``tempfile.mkstemp`` puts 8
#: characters of ``[a-z0-9_]`` between the prefix and the suffix.
_TEMPORARY_SUFFIX: Final = ".tmp"


def remove_leftovers(path: Path) -> None:
    """Delete temporary files that a killed :func:`atomic_write` of ``path`` left behind."""
    own = re.compile(
        re.escape(_temporary_prefix(path)) + r"[a-z0-9_]{8}" + re.escape(_TEMPORARY_SUFFIX)
    )
    try:
        names = os.listdir(path.parent)
    except OSError:
        return  # no directory yet, or unreadable: the load reports what matters
    for name in names:
        if own.fullmatch(name):
            with contextlib.suppress(OSError):
                os.unlink(path.parent / name)
                _log.info("removed %s, left behind by an interrupted write", name)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old or the new content."""
    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(
            prefix=_temporary_prefix(path), suffix=_TEMPORARY_SUFFIX, dir=directory
        )
    except OSError as exc:
        raise StoreError(f"cannot write slot file {path}: {exc}") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(exc, OSError):
            raise StoreError(f"cannot write slot file {path}: {exc}") from exc
        raise
    fsync_directory(directory)


def fsync_directory(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` durable (where the platform can)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(directory, flags)
    except OSError:
        return  # platforms that cannot open a directory (Windows)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
