"""JsonFileStore: versioned file, atomic writes, corruption handling, secrets (FM 11)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import attrs
import pytest

from standby import StandbySlot, StoreError, StoreQuarantined
from standby.adapters.files import _store
from standby.adapters.files._store import (
    FORMAT,
    FORMAT_VERSION,
    JsonFileStore,
    Sealer,
    looks_secret,
)
from standby.core._records import NodeState, PrimaryRecord, PromotionIntent, primary_to_json
from standby.protocols import SlotStore
from standby.wire import Codec

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """File I/O needs no virtual time: run every store test on both event loops."""
    return str(request.param)


EPOCH = 1_700_000_000.0
SECRET = "nsec1v8w6cf3x0qqz8example0secret0material"


@attrs.frozen
class Spec:
    image: str
    cpu: int = 1


def make_slot(
    workload_id: str = "w1", *, spec: Any = None, expires_in: float = 3600
) -> StandbySlot[Any]:
    return StandbySlot(
        workload_id=workload_id,
        primary="alice",
        standby_index=0,
        standby_count=2,
        spec=Spec("app:1") if spec is None else spec,
        expires_at=EPOCH + expires_in,
        owner="carol",
        created_at=EPOCH,
        peers=("dave",),
    )


class XorSealer:
    """A toy sealer for tests (never use XOR for real secrets)."""

    def __init__(self, key: int = 0x5A) -> None:
        self.key = key

    def seal(self, data: bytes) -> bytes:
        return b"sealed:" + bytes(b ^ self.key for b in data)

    def unseal(self, data: bytes) -> bytes:
        if not data.startswith(b"sealed:"):
            raise ValueError("not sealed by this sealer")
        return bytes(b ^ self.key for b in data[len(b"sealed:") :])


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --------------------------------------------------------------------------- format


async def test_round_trip_with_the_host_spec_type(tmp_path: Path) -> None:
    store = JsonFileStore(tmp_path / "slots.json", spec_type=Spec)
    assert isinstance(store, SlotStore)
    slots = [make_slot("w1"), make_slot("w2", spec=Spec("db:2", cpu=4))]
    assert await store.save(slots) == []
    loaded = await JsonFileStore(tmp_path / "slots.json", spec_type=Spec).load()
    assert loaded == slots
    assert isinstance(loaded[1].spec, Spec)


async def test_the_offer_id_survives_a_restart(tmp_path: Path) -> None:
    paid = attrs.evolve(make_slot("w1"), spec_id="offer-42")
    slots = [paid, make_slot("w2")]
    await JsonFileStore(tmp_path / "slots.json", spec_type=Spec).save(slots)
    loaded = await JsonFileStore(tmp_path / "slots.json", spec_type=Spec).load()
    assert [slot.spec_id for slot in loaded] == ["offer-42", None]
    assert loaded == slots


async def test_fm27_a_followed_primarys_takeover_time_survives_a_restart(tmp_path: Path) -> None:
    followed = attrs.evolve(make_slot("w1"), epoch=1, primary_since=EPOCH + 600.25)
    slots = [followed, make_slot("w2")]
    await JsonFileStore(tmp_path / "slots.json", spec_type=Spec).save(slots)
    loaded = await JsonFileStore(tmp_path / "slots.json", spec_type=Spec).load()
    assert loaded == slots
    assert [slot.origin for slot in loaded] == [EPOCH + 600.25, EPOCH]


async def test_fm27_a_slot_file_without_the_takeover_time_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "slots.json"
    await JsonFileStore(path, spec_type=Spec, journal=False).save([make_slot("w1")])
    document = json.loads(path.read_text())
    [body] = document["slots"]
    assert "primary_since" not in body  # never written while unset: old files look the same
    body["epoch"] = 1  # a slot that followed, saved by a version without the field
    path.write_text(json.dumps(document))
    [loaded] = await JsonFileStore(path, spec_type=Spec).load()
    assert (loaded.epoch, loaded.primary_since, loaded.origin) == (1, None, EPOCH)


async def test_file_is_versioned(tmp_path: Path) -> None:
    path = tmp_path / "slots.json"
    await JsonFileStore(path).save([make_slot(spec={"image": "app"})])
    document = json.loads(path.read_text())
    assert document["format"] == FORMAT == "standby.slots"
    assert document["version"] == FORMAT_VERSION == 3
    assert (document["intents"], document["primaries"]) == ([], [])
    [body] = document["slots"]
    assert (body["workload_id"], body["version"], body["spec"]) == ("w1", 1, {"image": "app"})


async def test_missing_file_means_nothing_saved(tmp_path: Path) -> None:
    assert await JsonFileStore(tmp_path / "absent.json").load() == []


async def test_load_with_now_leaves_out_expired_slots(tmp_path: Path) -> None:
    store = JsonFileStore(tmp_path / "slots.json", spec_type=Spec)
    await store.save([make_slot("old", expires_in=10), make_slot("new", expires_in=1000)])
    assert [s.workload_id for s in await store.load(now=EPOCH + 10)] == ["new"]
    assert [s.workload_id for s in await store.load(now=EPOCH + 5)] == ["old", "new"]


async def test_io_can_run_inline(tmp_path: Path) -> None:
    store = JsonFileStore(tmp_path / "slots.json", spec_type=Spec, offload=False)
    await store.save([make_slot()])
    assert await store.load() == [make_slot()]


# --------------------------------------------------------------------------- atomic writes


async def test_failed_rename_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "slots.json"
    store = JsonFileStore(path, spec_type=Spec, journal=False)  # every save rewrites
    await store.save([make_slot("w1")])
    before = path.read_bytes()

    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(StoreError, match="No space left"):
        await store.save([make_slot("w1"), make_slot("w2")])
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert files(tmp_path) == ["slots.json"]
    assert [s.workload_id for s in await store.load()] == ["w1"]


async def test_crash_between_temp_write_and_rename_keeps_the_old_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "slots.json"
    store = JsonFileStore(path, spec_type=Spec, offload=False, journal=False)
    await store.save([make_slot("w1")])

    class PowerLoss(BaseException):
        pass

    def lose_power(src: Any, dst: Any) -> None:
        raise PowerLoss

    monkeypatch.setattr(os, "replace", lose_power)
    monkeypatch.setattr(os, "unlink", lambda p: None)  # the process dies: nothing cleans up
    with pytest.raises(PowerLoss):
        await store.save([make_slot("w2")])
    monkeypatch.undo()
    leftovers = [name for name in files(tmp_path) if name != "slots.json"]
    assert len(leftovers) == 1
    assert leftovers[0].startswith(".slots.json.")
    assert b'"w2"' in (tmp_path / leftovers[0]).read_bytes()  # the new table was written...
    reloaded = JsonFileStore(path, spec_type=Spec)  # ...but after "reboot" the old one is read
    assert [s.workload_id for s in await reloaded.load()] == ["w1"]


def test_save_fsyncs_the_file_and_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[bool] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.path.isdir(f"/proc/self/fd/{fd}") if os.path.exists("/proc") else False)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    JsonFileStore(tmp_path / "slots.json").save_sync([make_slot()])
    assert len(synced) == 2
    if os.path.exists("/proc/self/fd"):
        assert synced == [False, True]  # the temporary file first, then the directory


async def test_load_removes_temporary_files_a_killed_write_left_behind(tmp_path: Path) -> None:
    path = tmp_path / "slots.json"
    store = JsonFileStore(path, spec_type=Spec)
    await store.save([make_slot()])
    # What a writer killed between creating and renaming its temporary file
    # leaves: the same mkstemp call the store makes.
    leftovers = []
    for _ in range(3):
        fd, name = tempfile.mkstemp(prefix=".slots.json.", suffix=".tmp", dir=tmp_path)
        os.write(fd, b'{"half": ')
        os.close(fd)
        leftovers.append(Path(name).name)
    others = [
        ".other.json.abcd1234.tmp",  # another store's temporary file
        ".slots.json.bak.abcd1234.tmp",  # the temporary file of a store at slots.json.bak
        ".slots.json.abc.tmp",  # not a name the store makes
        "slots.json.tmp",
        "notes.tmp",
    ]
    for name in others:
        (tmp_path / name).write_bytes(b"keep")
    assert await JsonFileStore(path, spec_type=Spec).load() == [make_slot()]
    assert files(tmp_path) == sorted(["slots.json", *others])
    # A store whose file does not exist yet cleans up too (and its directory may be absent).
    fd, name = tempfile.mkstemp(prefix=".fresh.json.", suffix=".tmp", dir=tmp_path)
    os.close(fd)
    assert await JsonFileStore(tmp_path / "fresh.json").load() == []
    assert Path(name).name not in files(tmp_path)
    assert await JsonFileStore(tmp_path / "absent" / "slots.json").load() == []


# --------------------------------------------------------------------------- corruption


async def test_corrupt_file_raises_and_is_moved_aside_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "slots.json"
    path.write_bytes(b'{"format": "standby.slots", "version": 1, "slots": [')
    store = JsonFileStore(path, spec_type=Spec)
    with pytest.raises(StoreError, match=r"corrupt .*moved to .*slots\.json\.corrupt-1"):
        await store.load()
    aside = tmp_path / "slots.json.corrupt-1"
    assert aside.read_bytes().endswith(b"[")
    assert not path.exists()
    assert store.accept_loss() is not None
    await store.save([make_slot()])  # a new table never touches the corrupt copy
    assert aside.read_bytes().endswith(b"[")
    path.write_text("[]")
    with pytest.raises(StoreError, match="corrupt-2"):
        await store.load()


async def test_fm23_a_quarantined_file_refuses_every_load_and_save_until_the_loss_is_accepted(
    tmp_path: Path,
) -> None:
    path = tmp_path / "slots.json"
    store: JsonFileStore[Any] = JsonFileStore(path, spec_type=Spec)
    await store.save_state(
        NodeState(
            (make_slot("w1"), make_slot("w2", expires_in=7200)),
            (PromotionIntent("w3", 1, 5, EPOCH + 60, EPOCH, expires_at=EPOCH + 100),),
            (),
        )
    )
    await store.save([make_slot("w1"), make_slot("w2", expires_in=7200), make_slot("w4")])
    assert store.journal_path.exists()
    path.write_bytes(path.read_bytes().replace(b'"app:1"', b"[" * 400 + b"]" * 400, 1))
    marker = tmp_path / "slots.json.quarantined"
    for attempt in range(3):  # every start, not only the first
        fresh: JsonFileStore[Any] = JsonFileStore(path, spec_type=Spec)
        with pytest.raises(StoreQuarantined) as caught:
            await fresh.load_state()
        error = caught.value
        assert error.quarantined == str(tmp_path / "slots.json.corrupt-1"), attempt
        assert error.marker == str(marker)
        assert error.lost.startswith("3 slot(s), 1 promotion intent(s), 0 primary record(s)")
        assert f"{EPOCH + 7200:.3f}" in error.lost
        assert "accept-loss" in str(error)
        with pytest.raises(StoreQuarantined):
            await fresh.save([make_slot("w9")])
    assert not path.exists()
    # the journal went with the file: nothing of the old state lies next to the new one
    assert files(tmp_path) == [
        "slots.json.corrupt-1",
        "slots.json.corrupt-1.journal",
        "slots.json.quarantined",
    ]
    accepted = JsonFileStore(path).accept_loss()
    assert accepted is not None
    assert "3 slot(s), 1 promotion intent(s)" in accepted
    assert JsonFileStore(path).accept_loss() is None
    after: JsonFileStore[Any] = JsonFileStore(path, spec_type=Spec)
    assert await after.load_state() == NodeState()
    await after.save([make_slot("w9")])
    assert [s.workload_id for s in await JsonFileStore(path, spec_type=Spec).load()] == ["w9"]
    assert (tmp_path / "slots.json.corrupt-1.journal").exists()


async def test_a_crash_between_marker_and_move_still_refuses(tmp_path: Path) -> None:
    path = tmp_path / "slots.json"
    path.write_text("{not json")
    with pytest.raises(StoreQuarantined):
        await JsonFileStore(path).load()
    os.replace(tmp_path / "slots.json.corrupt-1", path)  # as if the move never happened
    with pytest.raises(StoreQuarantined, match="quarantined earlier"):
        await JsonFileStore(path).load()
    (tmp_path / "slots.json.quarantined").write_text("garbage")
    with pytest.raises(StoreQuarantined, match="marker unreadable"):
        await JsonFileStore(path).load()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"\xff\xfe", "not valid JSON"),
        (b"[]", "not a 'standby.slots' document"),
        (b'{"format": "other", "version": 1, "slots": []}', "not a 'standby.slots'"),
        (b'{"format": "standby.slots", "version": "1", "slots": []}', "bad format version"),
        (b'{"format": "standby.slots", "version": 1, "slots": {}}', "`slots` is not a list"),
        (
            b'{"format": "standby.slots", "version": 1, "slots": [{"workload_id": "w"}]}',
            "slot #0",
        ),
    ],
)
async def test_every_kind_of_corruption_is_a_store_error(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "slots.json"
    path.write_bytes(content)
    with pytest.raises(StoreError, match=reason):
        await JsonFileStore(path).load()
    assert (tmp_path / "slots.json.corrupt-1").read_bytes() == content


async def test_a_slot_that_could_not_be_saved_again_is_never_loaded(tmp_path: Path) -> None:
    # A lone surrogate (as a JSON escape) and a very deep spec decode as JSON
    # but cannot be encoded again: loading them would make every save fail.
    for bad in ('"\\ud800"', "[" * 400 + "]" * 400):
        path = tmp_path / "slots.json"
        await JsonFileStore(path).save([make_slot(spec={"image": "app:1"})])
        path.write_bytes(path.read_bytes().replace(b'"app:1"', bad.encode()))
        with pytest.raises(StoreError, match=r"corrupt.*slot #0"):
            await JsonFileStore(path).load()
        assert not path.exists()  # moved aside; once the loss is accepted, a clean table
        store: JsonFileStore[Any] = JsonFileStore(path)
        assert store.accept_loss() is not None
        assert await store.load() == []
        assert await store.save([make_slot()]) == []
        path.unlink()


async def test_newer_format_is_refused_and_left_in_place(tmp_path: Path) -> None:
    path = tmp_path / "slots.json"
    path.write_text('{"format": "standby.slots", "version": 4, "slots": []}')
    with pytest.raises(StoreError, match="format version 4"):
        await JsonFileStore(path).load()
    assert files(tmp_path) == ["slots.json"]


# --------------------------------------------------------------------------- secrets (FM 11)


async def test_fm11_secret_slot_never_written_in_clear(tmp_path: Path) -> None:
    path = tmp_path / "slots.json"
    secret_spec = {"image": "relay:1", "env": {"NOSTR_NSEC": SECRET}}
    store: JsonFileStore[Any] = JsonFileStore(path)
    withheld = await store.save(
        [make_slot("plain", spec={"image": "x"}), make_slot("keyed", spec=secret_spec)]
    )
    assert withheld == ["keyed"]
    assert store.memory_only == ("keyed",)
    raw = path.read_bytes()
    assert SECRET.encode() not in raw
    assert b"keyed" not in raw
    # the same process still has it; a restarted one does not
    assert sorted(s.workload_id for s in await store.load()) == ["keyed", "plain"]
    assert [s.workload_id for s in await JsonFileStore(path).load()] == ["plain"]

    # with a sealer the slot is persisted, but never in clear
    sealed_store: JsonFileStore[Any] = JsonFileStore(path, sealer=XorSealer())
    assert await sealed_store.save([make_slot("keyed", spec=secret_spec)]) == []
    raw = path.read_bytes()
    assert SECRET.encode() not in raw
    assert b"keyed" not in raw
    assert "sealed" in json.loads(raw)["slots"][0]
    [restored] = await JsonFileStore(path, sealer=XorSealer()).load()
    assert restored.spec["env"]["NOSTR_NSEC"] == SECRET
    # without the sealer it cannot be read, and the file is left alone
    with pytest.raises(StoreError, match="no sealer"):
        await JsonFileStore(path).load()
    with pytest.raises(StoreError, match="cannot be unsealed"):
        await JsonFileStore(path, sealer=XorSealer(key=1)).load()
    assert files(tmp_path) == ["slots.json"]


async def test_host_supplied_secret_predicate(tmp_path: Path) -> None:
    path = tmp_path / "slots.json"

    def vaulted(spec: Any) -> bool:
        return bool(spec.get("tier") == "vault")

    store: JsonFileStore[Any] = JsonFileStore(path, holds_secret=vaulted)
    withheld = await store.save(
        [
            make_slot("a", spec={"tier": "vault", "blob": "opaque"}),
            make_slot("b", spec={"password": "x"}),
        ]
    )
    assert withheld == ["a"]
    assert b"opaque" not in path.read_bytes()
    assert b"password" in path.read_bytes()  # the host's predicate decides, not the heuristic


def test_sealer_protocol_is_runtime_checkable() -> None:
    assert isinstance(XorSealer(), Sealer)


@pytest.mark.parametrize(
    ("spec", "secret"),
    [
        ({"image": "app", "cpu": 2}, False),
        ({"env": {"DB_PASSWORD": "hunter2"}}, True),
        ({"env": {"db-password": ""}}, False),
        ({"api_token": "abc"}, True),
        ({"privateKey": None, "private_key": "k"}, True),
        ({"args": ["--key", SECRET]}, True),
        ({"cert": "-----BEGIN EC PRIVATE KEY-----\nabc"}, True),
        (Spec("app"), False),
        ({"nested": [{"client_secret": "s"}]}, True),
        ("plain string", False),
    ],
)
def test_default_secret_heuristic(spec: Any, secret: bool) -> None:
    assert looks_secret(spec) is secret


async def test_node_state_round_trips_with_intents_and_primaries(tmp_path: Path) -> None:
    from standby.core import NodeState, PrimaryRecord, PromotionIntent

    path = tmp_path / "slots.json"
    state = NodeState(
        slots=(make_slot("w1"),),
        intents=(PromotionIntent("w2", 1, 1 << 20, EPOCH + 120, EPOCH, ("b",), EPOCH + 900, True),),
        primaries=(PrimaryRecord("w3", 0, 0, ("a", "b"), EPOCH, math.inf, started=True),),
    )
    store: JsonFileStore[Any] = JsonFileStore(path, offload=False)
    assert await store.save_state(state) == []
    loaded = await JsonFileStore(path, spec_type=Spec, offload=False).load_state()
    assert loaded == state
    assert [s.workload_id for s in await JsonFileStore(path).load()] == ["w1"]


async def test_a_version_1_file_migrates_to_a_state_without_intents(tmp_path: Path) -> None:
    path = tmp_path / "slots.json"
    JsonFileStore(path, offload=False).save_sync([make_slot("w1")])
    document = json.loads(path.read_text())
    document["version"] = 1
    del document["intents"], document["primaries"]
    path.write_text(json.dumps(document))
    store: JsonFileStore[Any] = JsonFileStore(path, offload=False)
    state = await store.load_state()
    assert ([s.workload_id for s in state.slots], state.intents, state.primaries) == (
        ["w1"],
        (),
        (),
    )
    await store.save_state(state)
    assert json.loads(path.read_text())["version"] == FORMAT_VERSION


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ({"intents": [{"workload_id": "w"}]}, "epoch"),
        ({"primaries": [{"workload_id": "w", "epoch": 0, "fencing_token": 0}]}, "standbys"),
        ({"intents": {}}, "not a list"),
    ],
)
async def test_malformed_intents_or_primaries_are_corruption(
    tmp_path: Path, entry: dict[str, Any], why: str
) -> None:
    path = tmp_path / "slots.json"
    document = {"format": "standby.slots", "version": 2, "slots": [], **entry}
    path.write_text(json.dumps(document))
    with pytest.raises(StoreError, match=why):
        await JsonFileStore(path).load_state()


# --------------------------------------------------------------------------- journal


async def test_saves_after_the_first_append_only_what_changed(tmp_path: Path) -> None:
    path = tmp_path / "slots.json"
    store = JsonFileStore(path, spec_type=Spec, offload=False)
    slots = [make_slot(f"w{i:03d}") for i in range(50)]
    await store.save(slots[:1])
    base = path.read_bytes()
    for n in range(2, 51):
        await store.save(slots[:n])
    assert path.read_bytes() == base  # the file itself was not rewritten
    lines = (tmp_path / "slots.json.journal").read_bytes().splitlines()
    assert len(lines) == 49
    assert all(len(line) < 2 * len(lines[0]) for line in lines)  # one slot each, not all
    await store.save(slots[10:])  # removals are journalled too
    reloaded = JsonFileStore(path, spec_type=Spec)
    assert [s.workload_id for s in await reloaded.load()] == [s.workload_id for s in slots[10:]]


async def test_journal_keeps_intents_and_primaries(tmp_path: Path) -> None:
    path = tmp_path / "slots.json"
    store = JsonFileStore(path, spec_type=Spec, offload=False)
    await store.save_state(NodeState(slots=[make_slot("w1")]))
    intent = PromotionIntent("w1", 1, 2, EPOCH + 60, EPOCH)
    record = PrimaryRecord("p1", 0, 0, ("sb0",), EPOCH, EPOCH + 100, True)
    await store.save_state(NodeState(slots=[make_slot("w1")], intents=[intent], primaries=[record]))
    state = await JsonFileStore(path, spec_type=Spec).load_state()
    assert (state.intents, state.primaries) == ((intent,), (record,))
    await store.save_state(NodeState(slots=[make_slot("w1")], primaries=[record]))
    state = await JsonFileStore(path, spec_type=Spec).load_state()
    assert (state.intents, state.primaries) == ((), (record,))


async def test_fm29_an_ended_primary_record_is_kept_with_its_reason(tmp_path: Path) -> None:
    path = tmp_path / "slots.json"
    store = JsonFileStore(path, spec_type=Spec, offload=False)
    running = PrimaryRecord("p1", 0, 0, ("sb0",), EPOCH, EPOCH + 100, True)
    ended = attrs.evolve(running, ended="fenced")
    await store.save_state(NodeState(primaries=[running]))
    await store.save_state(NodeState(primaries=[ended]))  # journalled
    state = await JsonFileStore(path, spec_type=Spec).load_state()
    assert state.primaries == (ended,)
    assert "ended" not in primary_to_json(running)  # older files read the same


async def test_a_torn_journal_tail_is_ignored_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "slots.json"
    store = JsonFileStore(path, spec_type=Spec, offload=False)
    await store.save([make_slot("w1")])
    await store.save([make_slot("w1"), make_slot("w2")])
    journal = tmp_path / "slots.json.journal"
    whole = journal.read_bytes()
    # A crash in the middle of the next append: half a line, no newline.
    journal.write_bytes(whole + whole[: len(whole) // 2].replace(b"w2", b"w3"))
    reloaded = JsonFileStore(path, spec_type=Spec, offload=False)
    assert [s.workload_id for s in await reloaded.load()] == ["w1", "w2"]
    # The restarted store compacts before appending again: nothing lands after the tear.
    await reloaded.save([make_slot("w1"), make_slot("w2"), make_slot("w4")])
    assert not journal.exists()
    assert [s.workload_id for s in await JsonFileStore(path, spec_type=Spec).load()] == [
        "w1",
        "w2",
        "w4",
    ]


async def test_a_corrupt_line_before_the_tail_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "slots.json"
    store = JsonFileStore(path, spec_type=Spec, offload=False)
    await store.save([make_slot("w1")])
    await store.save([make_slot("w1"), make_slot("w2")])
    await store.save([make_slot("w2")])
    journal = tmp_path / "slots.json.journal"
    _first, second = journal.read_bytes().splitlines()
    journal.write_bytes(b"{not json\n" + second + b"\n")
    with pytest.raises(StoreError, match="line 1 is corrupt"):
        await JsonFileStore(path, spec_type=Spec).load()
    assert journal.exists()  # left for inspection


async def test_compaction_starts_a_new_generation_and_old_lines_are_ignored(
    tmp_path: Path,
) -> None:
    path = tmp_path / "slots.json"
    journal = tmp_path / "slots.json.journal"
    store = JsonFileStore(path, spec_type=Spec, offload=False)
    await store.save([make_slot("w1")])
    old = b""
    for n in range(5_000):  # the journal grows past JOURNAL_MIN_COMPACT, then compacts
        if journal.exists():
            old = journal.read_bytes()
        await store.save([make_slot("w1"), make_slot(f"x{n}")])
        if old and not journal.exists():
            break
    assert old
    assert len(old) > _store.JOURNAL_MIN_COMPACT
    assert not journal.exists()
    # A crash after the compacted file was renamed into place but before the
    # old journal was removed: its lines belong to the previous generation.
    journal.write_bytes(old)
    reloaded = JsonFileStore(path, spec_type=Spec)
    assert [s.workload_id for s in await reloaded.load()] == ["w1", f"x{n}"]


async def test_version_2_file_migrates_on_the_next_save(tmp_path: Path) -> None:
    path = tmp_path / "slots.json"
    body = Codec().to_dict(make_slot("w1", spec={"image": "app"}))
    path.write_text(
        json.dumps(
            {"format": FORMAT, "version": 2, "slots": [body], "intents": [], "primaries": []}
        )
    )
    store: JsonFileStore[Any] = JsonFileStore(path, offload=False)
    [slot] = await store.load()
    await store.save([slot, make_slot("w2", spec={"image": "app"})])
    document = json.loads(path.read_text())
    assert document["version"] == 3
    assert isinstance(document["journal"], str)
    assert [s.workload_id for s in await JsonFileStore(path).load()] == ["w1", "w2"]


def test_journal_append_is_fsynced_before_save_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "slots.json"
    store = JsonFileStore(path, spec_type=Spec, offload=False)
    store.save_sync([make_slot("w1")])
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc") else "?")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    store.save_sync([make_slot("w1"), make_slot("w2")])
    if os.path.exists("/proc/self/fd"):
        assert synced[0].endswith("slots.json.journal")
    assert synced


def test_the_accept_loss_command_names_the_loss_and_refuses_bad_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from standby.__main__ import main

    path = tmp_path / "slots.json"
    assert main(["store", "accept-loss", str(path)]) == 1
    assert "nothing is quarantined" in capsys.readouterr().err
    path.write_text("{not json")
    with pytest.raises(StoreQuarantined):
        JsonFileStore(path).load_sync()
    assert main(["store", "accept-loss", str(path)]) == 0
    out = capsys.readouterr().out
    assert "slots.json.corrupt-1" in out
    assert "an unknown number of slots" in out
    for argv in (["store"], ["store", "accept-loss"], ["store", "forget", str(path)]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, argv
        assert "error:" in err, argv
