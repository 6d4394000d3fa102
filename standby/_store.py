"""A slot store in one JSON file, written atomically.

File layout (UTF-8 JSON)::

    {"format": "standby.slots", "version": 2, "slots": [<slot>, ...],
     "intents": [<intent>, ...], "primaries": [<primary>, ...]}

Version 1 files (slots only) are read as a state with no intents and no
primaries; the next save writes version 2.

Each ``<slot>`` is the slot's wire body (:meth:`standby.wire.Codec.to_dict`),
or ``{"sealed": "<base64>"}`` for a slot whose spec holds a secret, sealed by
the host's :class:`Sealer`.

Writes go to a temporary file in the same directory, which is flushed and
fsynced, renamed over the old file, and then the directory is fsynced: after
a crash at any point the file holds the old table or the new one.

A slot whose spec holds a secret (failure mode 11) is never written in clear:
with a sealer it is sealed, without one it is kept in memory only, a warning
is logged and :meth:`JsonFileStore.save` returns its workload id so the host
is told (the node turns that into a ``SlotsNotPersisted`` event).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Generic, TypeVar

import anyio
import anyio.to_thread
import attrs
from typing_extensions import Protocol, runtime_checkable

from ._errors import StoreError
from ._models import StandbySlot
from ._state import (
    NodeState,
    PrimaryRecord,
    PromotionIntent,
    intent_from_json,
    intent_to_json,
    primary_from_json,
    primary_to_json,
)
from .wire import Codec

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "JsonFileStore",
    "Sealer",
    "looks_secret",
]

SpecT = TypeVar("SpecT")

#: The ``format`` marker of a slot file.
FORMAT: Final = "standby.slots"
#: The file layout version this store reads and writes.
FORMAT_VERSION: Final = 2

_log = logging.getLogger("standby.store")

#: Key fragments that mark a spec entry as secret (compared case-insensitively,
#: with ``-`` read as ``_``).
SECRET_KEY_WORDS: Final = (
    "secret",
    "private_key",
    "privkey",
    "password",
    "passwd",
    "passphrase",
    "token",
    "nsec",
    "api_key",
    "apikey",
    "credential",
)


@runtime_checkable
class Sealer(Protocol):
    """Encrypts slot bodies that hold secrets before they reach the disk.

    ``unseal(seal(data)) == data``. Both raise any exception to refuse (the
    store reports it as a :class:`~standby.StoreError`).
    """

    def seal(self, data: bytes) -> bytes:
        """Encrypt (and authenticate) ``data``."""
        ...

    def unseal(self, data: bytes) -> bytes:
        """Decrypt what :meth:`seal` produced."""
        ...


def _secret_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    name = key.lower().replace("-", "_")
    return any(word in name for word in SECRET_KEY_WORDS)


def _secret_value(value: object) -> bool:
    if not isinstance(value, str):
        return False
    text = value.strip()
    return text.startswith("nsec1") or ("-----BEGIN" in text and "PRIVATE KEY" in text)


def _present(value: object) -> bool:
    if value is None:
        return False
    return not (isinstance(value, (str, Mapping, list, tuple)) and len(value) == 0)


def looks_secret(spec: Any) -> bool:
    """Default guess of whether a spec holds a secret.

    Walks mappings, sequences, attrs classes and dataclasses. A spec holds a
    secret when any key contains one of :data:`SECRET_KEY_WORDS` (``"secret"``,
    ``"private_key"``, ``"password"``, ``"token"``, ``"nsec"``, ...) with a
    non-empty value, or when any string looks like key material (``nsec1...``,
    a PEM private key). Hosts with other conventions pass their own predicate.
    """
    stack: list[Any] = [spec]
    seen = 0
    while stack:
        value = stack.pop()
        seen += 1
        if seen > 10_000:
            return True  # absurdly large spec: err on the safe side
        if attrs.has(type(value)):
            value = attrs.asdict(value, recurse=False)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        if isinstance(value, Mapping):
            for key, item in value.items():
                if _secret_key(key) and _present(item):
                    return True
                stack.append(item)
        elif isinstance(value, (list, tuple, set, frozenset)):
            stack.extend(value)
        elif _secret_value(value):
            return True
    return False


class JsonFileStore(Generic[SpecT]):
    """A :class:`~standby.protocols.SlotStore` in one JSON file at ``path``.

    ``codec`` encodes slot bodies; by default a fresh
    :class:`~standby.wire.Codec`, with ``spec_type`` registered when given (so
    loaded slots carry the host's spec objects). ``holds_secret`` decides
    which specs hold secrets (default :func:`looks_secret`); ``sealer``, when
    given, seals those slots instead of keeping them in memory only.

    File I/O runs in a worker thread (``offload=True``); ``offload=False``
    does it inline, briefly blocking the event loop (handy on a virtual clock).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        codec: Codec | None = None,
        spec_type: type[SpecT] | None = None,
        holds_secret: Callable[[Any], bool] = looks_secret,
        sealer: Sealer | None = None,
        offload: bool = True,
    ) -> None:
        self.path = Path(path)
        if codec is None:
            codec = Codec()
            if spec_type is not None:
                codec.register_spec(spec_type)
        elif spec_type is not None:
            codec.register_spec(spec_type)
        self.codec = codec
        self.holds_secret = holds_secret
        self.sealer = sealer
        self.offload = offload
        self._memory_only: dict[str, StandbySlot[SpecT]] = {}
        self._intents: tuple[PromotionIntent, ...] = ()
        self._primaries: tuple[PrimaryRecord, ...] = ()
        self._warned: set[str] = set()
        self._lock: anyio.Lock | None = None

    def __repr__(self) -> str:
        return f"JsonFileStore({str(self.path)!r})"

    @property
    def memory_only(self) -> tuple[str, ...]:
        """Workload ids of the slots kept in memory only (secrets, no sealer)."""
        return tuple(sorted(self._memory_only))

    async def _run(self, func: Callable[[], Any]) -> Any:
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            if self.offload:
                return await anyio.to_thread.run_sync(func)
            return func()

    # ------------------------------------------------------------------ load

    async def load(self, *, now: float | None = None) -> list[StandbySlot[SpecT]]:
        """Read the saved slots (and those kept in memory by this instance).

        With ``now``, slots that expired (``expires_at <= now``) are left out.
        A missing file means nothing was saved: an empty list. A file that
        cannot be parsed is moved aside to ``<name>.corrupt-<n>`` and a
        :class:`~standby.StoreError` naming both paths is raised; a file
        written by a newer version, or sealed slots that cannot be unsealed,
        raise :class:`~standby.StoreError` and stay where they are.
        """
        slots: list[StandbySlot[SpecT]] = await self._run(self.load_sync)
        if now is not None:
            slots = [slot for slot in slots if slot.expires_at > now]
        return slots

    def load_sync(self) -> list[StandbySlot[SpecT]]:
        """Blocking version of :meth:`load` (without the expiry filter)."""
        return list(self.load_state_sync().slots)

    async def load_state(self) -> NodeState[SpecT]:
        """Read the whole saved node state (slots, promotion intents, primaries).

        Raises :class:`~standby.StoreError` like :meth:`load`.
        """
        state: NodeState[SpecT] = await self._run(self.load_state_sync)
        return state

    def load_state_sync(self) -> NodeState[SpecT]:
        """Blocking version of :meth:`load_state`."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = None
        except OSError as exc:
            raise StoreError(f"cannot read slot file {self.path}: {exc}") from exc
        slots: dict[str, StandbySlot[SpecT]] = {}
        intents: tuple[PromotionIntent, ...] = ()
        primaries: tuple[PrimaryRecord, ...] = ()
        if data is not None:
            parsed, intents, primaries = self._parse(data)
            for slot in parsed:
                slots[slot.workload_id] = slot
            self._intents, self._primaries = intents, primaries
        for workload_id, slot in self._memory_only.items():
            slots.setdefault(workload_id, slot)
        return NodeState(tuple(slots.values()), intents, primaries)

    def _parse(
        self, data: bytes
    ) -> tuple[list[StandbySlot[SpecT]], tuple[PromotionIntent, ...], tuple[PrimaryRecord, ...]]:
        try:
            document = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise self._corrupt(f"not valid JSON: {exc}") from exc
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise self._corrupt(f"not a {FORMAT!r} document")
        version = document.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise self._corrupt(f"bad format version {version!r}")
        if version > FORMAT_VERSION:
            raise StoreError(
                f"slot file {self.path} has format version {version}, this store reads "
                f"up to {FORMAT_VERSION}: upgrade standby (the file is left untouched)"
            )
        entries = document.get("slots")
        if not isinstance(entries, list):
            raise self._corrupt("`slots` is not a list")
        slots: list[StandbySlot[SpecT]] = []
        for position, entry in enumerate(entries):
            if isinstance(entry, dict) and set(entry) == {"sealed"}:
                slots.append(self._unseal(position, entry["sealed"]))
                continue
            try:
                slot: Any = self.codec.from_dict("slot", entry)
            except Exception as exc:
                raise self._corrupt(f"slot #{position}: {exc}") from exc
            slots.append(slot)
        # Version 1 held slots only: it migrates to a state without intents.
        raw_intents = document.get("intents", []) if version >= 2 else []
        raw_primaries = document.get("primaries", []) if version >= 2 else []
        if not isinstance(raw_intents, list) or not isinstance(raw_primaries, list):
            raise self._corrupt("`intents` or `primaries` is not a list")
        try:
            intents = tuple(intent_from_json(e, i) for i, e in enumerate(raw_intents))
            primaries = tuple(primary_from_json(e, i) for i, e in enumerate(raw_primaries))
        except StoreError as exc:
            raise self._corrupt(str(exc)) from exc
        return slots, intents, primaries

    def _unseal(self, position: int, blob: object) -> StandbySlot[SpecT]:
        if self.sealer is None:
            raise StoreError(
                f"slot #{position} in {self.path} is sealed but this store has no sealer: "
                "configure the same sealer that wrote it (the file is left untouched)"
            )
        if not isinstance(blob, str):
            raise self._corrupt(f"slot #{position}: sealed body is not a string")
        try:
            sealed = base64.b64decode(blob.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise self._corrupt(f"slot #{position}: sealed body is not base64") from exc
        try:
            body = self.sealer.unseal(sealed)
        except Exception as exc:
            raise StoreError(
                f"slot #{position} in {self.path} cannot be unsealed ({exc}); wrong sealer? "
                "(the file is left untouched)"
            ) from exc
        try:
            slot: Any = self.codec.decode("slot", body)
        except Exception as exc:
            # Garbage after unsealing usually means the wrong key (a sealer that
            # does not authenticate): a configuration problem, not corruption.
            raise StoreError(
                f"slot #{position} in {self.path} cannot be unsealed into a slot ({exc}); "
                "wrong sealer? (the file is left untouched)"
            ) from exc
        return slot  # type: ignore[no-any-return]

    def _corrupt(self, reason: str) -> StoreError:
        """Move the unreadable file aside and build the error to raise."""
        aside = _free_name(self.path)
        try:
            os.replace(self.path, aside)
        except OSError as exc:
            return StoreError(
                f"slot file {self.path} is corrupt ({reason}) and could not be moved aside: {exc}"
            )
        _log.error("slot file %s is corrupt (%s); moved to %s", self.path, reason, aside)
        return StoreError(
            f"slot file {self.path} is corrupt ({reason}); moved to {aside} for inspection. "
            "Nothing was loaded."
        )

    # ------------------------------------------------------------------ save

    async def save(self, slots: Sequence[StandbySlot[SpecT]]) -> list[str]:
        """Replace the saved table with ``slots``, atomically.

        Returns the workload ids of the slots kept in memory only (their spec
        holds a secret and there is no sealer). Raises
        :class:`~standby.StoreError` when the file cannot be written (the old
        one is then intact).
        """
        snapshot = list(slots)
        withheld: list[str] = await self._run(lambda: self.save_sync(snapshot))
        return withheld

    async def save_state(self, state: NodeState[SpecT]) -> list[str]:
        """Replace the whole saved node state with ``state``, atomically.

        Returns what :meth:`save` returns; raises :class:`~standby.StoreError`
        when the file cannot be written (the old one is then intact).
        """
        withheld: list[str] = await self._run(lambda: self.save_state_sync(state))
        return withheld

    def save_state_sync(self, state: NodeState[SpecT]) -> list[str]:
        """Blocking version of :meth:`save_state`."""
        return self._write(state.slots, state.intents, state.primaries)

    def save_sync(self, slots: Iterable[StandbySlot[SpecT]]) -> list[str]:
        """Blocking version of :meth:`save` (intents and primaries are kept as they were)."""
        return self._write(slots, self._intents, self._primaries)

    def _write(
        self,
        slots: Iterable[StandbySlot[SpecT]],
        intents: tuple[PromotionIntent, ...],
        primaries: tuple[PrimaryRecord, ...],
    ) -> list[str]:
        entries: list[Any] = []
        memory_only: dict[str, StandbySlot[SpecT]] = {}
        for slot in slots:
            try:
                secret = self.holds_secret(slot.spec)
            except Exception as exc:
                raise StoreError(f"secret predicate failed on {slot.workload_id!r}: {exc}") from exc
            try:
                if not secret:
                    entries.append(self.codec.to_dict(slot))
                elif self.sealer is not None:
                    sealed = self.sealer.seal(self.codec.encode(slot))
                    entries.append({"sealed": base64.b64encode(sealed).decode("ascii")})
                else:
                    memory_only[slot.workload_id] = slot
            except StoreError:
                raise
            except Exception as exc:
                raise StoreError(f"cannot encode slot {slot.workload_id!r}: {exc}") from exc
        document = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "slots": entries,
            "intents": [intent_to_json(i) for i in intents],
            "primaries": [primary_to_json(p) for p in primaries],
        }
        try:
            data = json.dumps(document, sort_keys=True, indent=1, allow_nan=False).encode("utf-8")
        except ValueError as exc:
            raise StoreError(f"cannot encode the slot table: {exc}") from exc
        _atomic_write(self.path, data)
        self._intents, self._primaries = tuple(intents), tuple(primaries)
        self._memory_only = memory_only
        for workload_id in sorted(set(memory_only) - self._warned):
            _log.warning(
                "slot %s holds a secret and no sealer is configured: kept in memory only, "
                "it will not survive a restart",
                workload_id,
            )
        self._warned = set(memory_only)
        return sorted(memory_only)


def _free_name(path: Path) -> Path:
    n = 1
    while True:
        candidate = path.with_name(f"{path.name}.corrupt-{n}")
        if not candidate.exists():
            return candidate
        n += 1


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old or the new content."""
    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
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
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
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
