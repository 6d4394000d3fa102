"""A slot store in one JSON file, written atomically, with an append-only journal.

File layout (UTF-8 JSON)::

    {"format": "standby.slots", "version": 3, "journal": "<generation>",
     "slots": [<slot>, ...], "intents": [<intent>, ...], "primaries": [<primary>, ...]}

Version 1 files (slots only) are read as a state with no intents and no
primaries, version 2 files as a state without a journal; the next save
writes version 3.

Saves are incremental: the store remembers what it last wrote, and a save
appends one line to ``<name>.journal`` with only the records that changed
(``{"g": "<generation>", "slots": {"put": [...], "del": [...]}, ...}``),
then fsyncs it. Loading reads the file and replays the journal lines of its
generation in order. Once the journal outgrows the file (and 64 KiB), the
next save compacts: it writes the whole state into a new file under a new
generation (atomically, as below) and starts a new journal; lines of an
older generation are ignored, so a crash in the middle of a compaction
loses nothing. A torn last line (a crash during an append) is ignored: that
save never returned, so nothing was promised for it. Saving ``N`` slots one
at a time thus writes O(N) bytes in all instead of O(N²).

Each ``<slot>`` is the slot's wire body (:meth:`standby.wire.Codec.to_dict`),
or ``{"sealed": "<base64>"}`` for a slot whose spec holds a secret, sealed by
the host's :class:`Sealer`.

Writes go to a temporary file in the same directory, which is flushed and
fsynced, renamed over the old file, and then the directory is fsynced: after
a crash at any point the file holds the old table or the new one. A process
killed mid-write leaves its temporary file behind (``.<name>.<8 chars>.tmp``);
:meth:`JsonFileStore.load` deletes such leftovers of its own file, and only
those (other files in the directory, including other stores' temporaries, are
never touched).

A slot whose spec holds a secret (failure mode 11) is never written in clear:
with a sealer it is sealed, without one it is kept in memory only, a warning
is logged and :meth:`JsonFileStore.save` returns its workload id so the host
is told (the node turns that into a ``SlotsNotPersisted`` event).

A file that cannot be parsed is quarantined (failure mode 23): a marker,
``<name>.quarantined``, is written first, then the file is moved aside to
``<name>.corrupt-<n>`` and its journal to ``<name>.corrupt-<n>.journal``.
While the marker exists every load and save raises
:class:`~standby.StoreQuarantined` (on every start, not only the first), so
a supervisor that restarts the node never brings it up silently empty: the
host must accept the loss first, with :meth:`JsonFileStore.accept_loss` or
``python -m standby store accept-loss PATH``.

One node at a time: a node takes the store's lock (:meth:`JsonFileStore.acquire`,
an exclusive ``flock`` on ``<name>.lock``) while it runs, and a second node
or command that tries gets a :class:`~standby.StoreError`. A store opened
with ``read_only=True`` (an operator's view) never takes the lock and
refuses to save.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final, Generic, TypeVar

import anyio
import anyio.to_thread

from ...core._errors import StoreError
from ...core._models import StandbySlot
from ...core._records import (
    NodeState,
    PrimaryRecord,
    PromotionIntent,
    intent_from_json,
    intent_to_json,
    primary_from_json,
    primary_to_json,
)
from ...wire import Codec
from ._durable import append_durably, atomic_write, remove_leftovers
from ._lock import StoreLock
from ._quarantine import accept_loss, quarantine, refuse_if_quarantined
from ._secrets import Sealer, looks_secret

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
FORMAT_VERSION: Final = 3
#: The journal is compacted into the file once it is larger than the file and this.
JOURNAL_MIN_COMPACT: Final = 64 * 1024

_TABLES: Final = ("slots", "intents", "primaries")

_log = logging.getLogger("standby.store")


class JsonFileStore(Generic[SpecT]):
    """A :class:`~standby.protocols.SlotStore` in one JSON file at ``path``.

    ``codec`` encodes slot bodies; by default a fresh
    :class:`~standby.wire.Codec`, with ``spec_type`` registered when given (so
    loaded slots carry the host's spec objects). ``holds_secret`` decides
    which specs hold secrets (default :func:`looks_secret`); ``sealer``, when
    given, seals those slots instead of keeping them in memory only.

    File I/O runs in a worker thread (``offload=True``); ``offload=False``
    does it inline, briefly blocking the event loop (handy on a virtual clock).
    ``journal=False`` rewrites the whole file on every save instead of
    appending the changes to the journal.

    ``read_only=True`` opens the store to look at it (an operator's command
    beside a running node): it never takes the lock, never removes leftover
    temporary files, never quarantines an unreadable file (it reports it with
    a :class:`~standby.StoreError` and leaves it where it is), and every
    save raises :class:`~standby.StoreError`.
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
        journal: bool = True,
        read_only: bool = False,
    ) -> None:
        self.path = Path(path)
        self.read_only = read_only
        #: The lock a node holds while it uses this store (``<name>.lock``).
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._holder = StoreLock(self.lock_path)
        self.journal_path = self.path.with_name(self.path.name + ".journal")
        #: Exists while unreadable data is quarantined and the loss not accepted.
        self.quarantine_path = self.path.with_name(self.path.name + ".quarantined")
        self.journal = journal
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
        #: What the file and journal hold now, per table: workload id -> (object, JSON).
        #: ``None`` until this instance wrote (or read) a version 3 file.
        self._written: dict[str, dict[str, tuple[Any, Any]]] | None = None
        self._generation = ""
        self._base_bytes = 0
        self._journal_bytes = 0

    def __repr__(self) -> str:
        return f"JsonFileStore({str(self.path)!r})"

    def acquire(self, owner: str = "a node") -> None:
        """Take the store for ``owner`` alone until :meth:`release` (the node does, on entry).

        Raises :class:`~standby.StoreError` when another holder (a node in
        this or another process) has it, or for a read-only store.
        """
        if self.read_only:
            raise StoreError(f"{self.path} is opened read-only: it cannot be taken by {owner}")
        self._holder.acquire(owner)

    def release(self) -> None:
        """Let the store go (the node does, on exit); a no-op when not held."""
        self._holder.release()

    @property
    def held(self) -> bool:
        """Whether this instance holds the store's lock."""
        return self._holder.held

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
        self._refuse_if_quarantined()
        if not self.read_only:
            remove_leftovers(self.path)
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
            parsed, intents, primaries, generation = self._parse(data)
            tables: dict[str, dict[str, Any]] = {
                "slots": {s.workload_id: s for s in parsed},
                "intents": {i.workload_id: i for i in intents},
                "primaries": {p.workload_id: p for p in primaries},
            }
            if generation is not None:
                self._replay(generation, tables)
            slots = dict(tables["slots"])
            intents = tuple(tables["intents"].values())
            primaries = tuple(tables["primaries"].values())
            self._intents, self._primaries = intents, primaries
        for workload_id, slot in self._memory_only.items():
            slots.setdefault(workload_id, slot)
        return NodeState(tuple(slots.values()), intents, primaries)

    def _replay(self, generation: str, tables: dict[str, dict[str, Any]]) -> None:
        """Apply the journal lines of ``generation`` to ``tables``, in order."""
        try:
            data = self.journal_path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StoreError(f"cannot read journal {self.journal_path}: {exc}") from exc
        lines = data.split(b"\n")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            record: Any
            try:
                record = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as error:
                record = error
            if not isinstance(record, dict):
                problem = record if isinstance(record, Exception) else "not an object"
                if all(not rest.strip() for rest in lines[number:]):
                    # A torn tail: the save it belonged to never returned.
                    _log.warning("ignoring a torn last line in %s", self.journal_path)
                    return
                raise StoreError(
                    f"journal {self.journal_path} line {number} is corrupt ({problem}); "
                    "it is left untouched"
                )
            if record.get("g") != generation:
                continue  # written before the last compaction
            for table in _TABLES:
                change = record.get(table)
                if change is None:
                    continue
                if not isinstance(change, dict):
                    raise StoreError(f"journal {self.journal_path} line {number}: bad {table!r}")
                for workload_id in change.get("del", []):
                    tables[table].pop(workload_id, None)
                for position, entry in enumerate(change.get("put", [])):
                    item = self._decode(table, entry, position)
                    tables[table][item.workload_id] = item

    def _decode(self, table: str, entry: Any, position: int) -> Any:
        try:
            if table == "intents":
                return intent_from_json(entry, position)
            if table == "primaries":
                return primary_from_json(entry, position)
        except StoreError as exc:
            raise StoreError(f"journal {self.journal_path}: {exc}") from exc
        if isinstance(entry, dict) and set(entry) == {"sealed"}:
            return self._unseal(position, entry["sealed"])
        try:
            return self.codec.from_dict("slot", entry)
        except Exception as exc:
            raise StoreError(f"journal {self.journal_path}: slot #{position}: {exc}") from exc

    def _parse(
        self, data: bytes
    ) -> tuple[
        list[StandbySlot[SpecT]],
        tuple[PromotionIntent, ...],
        tuple[PrimaryRecord, ...],
        str | None,
    ]:
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
        generation = document.get("journal") if version >= 3 else None
        if generation is not None and not isinstance(generation, str):
            raise self._corrupt(f"bad journal generation {generation!r}")
        return slots, intents, primaries, generation

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
        """Quarantine the unreadable file (and its journal); the error to raise.

        A read-only store leaves the file where it is.
        """
        if self.read_only:
            return StoreError(
                f"slot file {self.path} is corrupt ({reason}); opened read-only, it is left "
                "untouched (a node opening it would quarantine it)"
            )
        return quarantine(self.path, self.journal_path, self.quarantine_path, reason)

    def _refuse_if_quarantined(self) -> None:
        refuse_if_quarantined(self.path, self.quarantine_path)

    def accept_loss(self) -> str | None:
        """Accept the loss of the quarantined data: the store starts empty from now on.

        Removes the quarantine marker (the quarantined files stay where they
        are, for inspection) and returns a one-line account of what was lost;
        ``None`` when nothing was quarantined. Call it only once nothing the
        lost data recorded can matter any more (its reservations ended, or no
        container this node promoted is running): the lost promotion intents
        are what kept a restarted node from reusing a fencing token.
        """
        return accept_loss(self.path, self.quarantine_path)

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
        self._refuse_if_read_only()
        return self._write(state.slots, state.intents, state.primaries)

    def save_sync(self, slots: Iterable[StandbySlot[SpecT]]) -> list[str]:
        """Blocking version of :meth:`save` (intents and primaries are kept as they were)."""
        self._refuse_if_read_only()
        return self._write(slots, self._intents, self._primaries)

    def _refuse_if_read_only(self) -> None:
        if self.read_only:
            raise StoreError(f"{self.path} is opened read-only: nothing is saved")

    def check_slot(self, slot: StandbySlot[SpecT]) -> None:
        """Raise :class:`~standby.StoreError` when ``slot`` could not be saved.

        The node calls it before it registers a slot, so a spec that does
        not encode as JSON is refused at ``accept`` instead of failing every
        later save. Nothing is written.
        """
        self._encode_slot(slot)

    def _encode_slot(self, slot: StandbySlot[SpecT]) -> Any:
        """The JSON body of ``slot``, or ``None`` when it is kept in memory only."""
        workload_id = slot.workload_id
        try:
            secret = self.holds_secret(slot.spec)
        except Exception as exc:
            raise StoreError(f"secret predicate failed on {workload_id!r}: {exc}") from exc
        try:
            if not secret:
                body: Any = self.codec.to_dict(slot)
                json.dumps(body, allow_nan=False)
                return body
            if self.sealer is not None:
                sealed = self.sealer.seal(self.codec.encode(slot))
                return {"sealed": base64.b64encode(sealed).decode("ascii")}
        except Exception as exc:
            raise StoreError(f"cannot encode slot {workload_id!r}: {exc}") from exc
        return None

    def _encode_slots(
        self, slots: Iterable[StandbySlot[SpecT]]
    ) -> tuple[dict[str, tuple[Any, Any]], dict[str, StandbySlot[SpecT]]]:
        """Slots as ``workload id -> (slot, JSON)``, and those kept in memory only.

        A slot already written as the very same object is not encoded again.
        A slot that cannot be encoded is kept in memory only (and logged): one
        bad record never stops the others from being saved (failure mode 22).
        """
        previous = {} if self._written is None else self._written["slots"]
        encoded: dict[str, tuple[Any, Any]] = {}
        memory_only: dict[str, StandbySlot[SpecT]] = {}
        for slot in slots:
            workload_id = slot.workload_id
            known = previous.get(workload_id)
            if known is not None and known[0] is slot:
                encoded[workload_id] = known
                continue
            try:
                body = self._encode_slot(slot)
            except StoreError as exc:
                _log.error("slot %s is kept in memory only: %s", workload_id, exc)
                body = None
            if body is None:
                memory_only[workload_id] = slot
            else:
                encoded[workload_id] = (slot, body)
        return encoded, memory_only

    def _write(
        self,
        slots: Iterable[StandbySlot[SpecT]],
        intents: tuple[PromotionIntent, ...],
        primaries: tuple[PrimaryRecord, ...],
    ) -> list[str]:
        encoded, memory_only = self._encode_slots(slots)
        tables: dict[str, dict[str, tuple[Any, Any]]] = {
            "slots": encoded,
            "intents": {i.workload_id: (i, None) for i in intents},
            "primaries": {p.workload_id: (p, None) for p in primaries},
        }
        written = self._written
        if (
            written is None
            or not self.journal
            or self._journal_bytes > max(JOURNAL_MIN_COMPACT, self._base_bytes)
        ):
            self._write_full(tables)
        else:
            self._append(written, tables)
        self._intents, self._primaries = tuple(intents), tuple(primaries)
        self._memory_only = memory_only
        for workload_id in sorted(set(memory_only) - self._warned):
            _log.warning(
                "slot %s is kept in memory only (its spec holds a secret and no sealer is "
                "configured, or it could not be encoded): it will not survive a restart",
                workload_id,
            )
        self._warned = set(memory_only)
        return sorted(memory_only)

    def _write_full(self, tables: dict[str, dict[str, tuple[Any, Any]]]) -> None:
        """Write the whole state under a new journal generation (a compaction)."""
        self._refuse_if_quarantined()
        generation = os.urandom(8).hex()
        document = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "journal": generation,
            "slots": [body for _, body in tables["slots"].values()],
            "intents": [intent_to_json(i) for i, _ in tables["intents"].values()],
            "primaries": [primary_to_json(p) for p, _ in tables["primaries"].values()],
        }
        try:
            data = json.dumps(document, sort_keys=True, indent=1, allow_nan=False).encode("utf-8")
        except ValueError as exc:
            raise StoreError(f"cannot encode the slot table: {exc}") from exc
        atomic_write(self.path, data)
        # The old journal belongs to the old generation: it is dead weight now.
        try:
            os.unlink(self.journal_path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            _log.warning("cannot remove old journal %s: %s", self.journal_path, exc)
        self._written = tables
        self._generation = generation
        self._base_bytes = len(data)
        self._journal_bytes = 0

    def _append(
        self,
        written: dict[str, dict[str, tuple[Any, Any]]],
        tables: dict[str, dict[str, tuple[Any, Any]]],
    ) -> None:
        """Append what changed since the last save as one journal line, and fsync it."""
        record: dict[str, Any] = {"g": self._generation}
        for table in _TABLES:
            old, new = written[table], tables[table]
            put = []
            for workload_id, (item, body) in new.items():
                known = old.get(workload_id)
                if known is not None and (known[0] is item or known[0] == item):
                    continue
                put.append(body if table == "slots" else _record_json(table, item))
            gone = [w for w in old if w not in new]
            if put or gone:
                record[table] = {"put": put, "del": gone}
        if len(record) > 1:
            try:
                line = json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False)
            except ValueError as exc:
                raise StoreError(f"cannot encode the slot table: {exc}") from exc
            data = line.encode("utf-8") + b"\n"
            try:
                append_durably(self.journal_path, data, created=self._journal_bytes == 0)
            except StoreError:
                # A partial line may be on disk: never append after it; the
                # next save compacts into a new generation instead.
                self._written = None
                raise
            self._journal_bytes += len(data)
        self._written = tables


def _record_json(table: str, item: Any) -> dict[str, Any]:
    if table == "intents":
        return intent_to_json(item)
    return primary_to_json(item)
