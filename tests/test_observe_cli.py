"""``python -m standby status`` and ``timeline``: a store read-only, event logs drawn."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import anyio
import pytest
from _failover import Failover
from trio.testing import MockClock

from standby import JsonFileStore, StandbySlot, StoreError, Timing
from standby.__main__ import main
from standby.core import NodeState, PrimaryRecord, PromotionIntent

SVG = "{http://www.w3.org/2000/svg}"
T0 = 1_700_000_000.0

# --------------------------------------------------------------------------- status


def saved_store(path: Path) -> Path:
    slot: StandbySlot[Any] = StandbySlot(
        workload_id="w-slot",
        primary="alice",
        standby_index=1,
        standby_count=2,
        spec={"image": "app:1"},
        expires_at=T0 + 3600,
        owner="consumer",
        created_at=T0,
        peers=("bob",),
        epoch=2,
    )
    intent = PromotionIntent(
        workload_id="w-intent", epoch=3, fencing_token=3 << 20, lease_end=T0 + 90, recorded_at=T0
    )
    primary = PrimaryRecord(
        workload_id="w-primary",
        epoch=1,
        fencing_token=1 << 20,
        standbys=("carol",),
        created_at=T0,
        expires_at=T0 + 7200,
        started=True,
    )
    store: JsonFileStore[Any] = JsonFileStore(path, offload=False)
    store.save_state_sync(NodeState([slot], [intent], [primary]))
    return path


def test_status_prints_every_table_of_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = saved_store(tmp_path / "node.json")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["status", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == (
        f"{path}: 1 standby slots, 1 promotion intents, 1 primary records (times in UTC)"
    )
    slot_row = next(line for line in out.splitlines() if "w-slot" in line)
    assert slot_row.split()[:6] == ["w-slot", "alice", "1", "of", "2", "2"]
    intent_row = next(line for line in out.splitlines() if "w-intent" in line)
    assert intent_row.split()[:3] == ["w-intent", "3", str(3 << 20)]
    assert "2023-11-14 22:14:50.000Z" in intent_row  # the lease end, T0 + 90
    primary_row = next(line for line in out.splitlines() if "w-primary" in line)
    assert primary_row.split()[:6] == ["w-primary", "1", str(1 << 20), "carol", "yes", "-"]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_status_json_holds_the_records_in_the_stores_own_form(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = saved_store(tmp_path / "node.json")
    assert main(["status", str(path), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["store"] == str(path)
    [slot] = document["slots"]
    assert (slot["workload_id"], slot["epoch"], slot["standby_index"]) == ("w-slot", 2, 1)
    assert "spec" not in slot
    [intent] = document["intents"]
    assert (intent["fencing_token"], intent["lease_end"]) == (3 << 20, T0 + 90)
    [primary] = document["primaries"]
    assert (primary["workload_id"], primary["fencing_token"]) == ("w-primary", 1 << 20)


def test_status_of_a_corrupt_store_is_a_store_error_and_moves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "node.json"
    path.write_text("{ not json", encoding="utf-8")
    leftover = tmp_path / ".node.json.abcd1234.tmp"
    leftover.write_text("half", encoding="utf-8")
    assert main(["status", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "is corrupt" in err
    assert "left untouched" in err
    # read-only: no quarantine, no clean-up of a running node's temporaries
    assert sorted(p.name for p in tmp_path.iterdir()) == [".node.json.abcd1234.tmp", "node.json"]


@pytest.mark.parametrize(
    ("arguments", "status", "says"),
    [
        (["status", "{tmp}/absent.json"], 2, "no store at"),
        (["status", "{tmp}"], 2, "is a directory"),
    ],
)
def test_status_refuses_a_path_that_holds_no_store_with_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    arguments: list[str],
    status: int,
    says: str,
) -> None:
    assert main([a.format(tmp=tmp_path) for a in arguments]) == status
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert says in err


def test_status_without_a_store_is_a_bad_argument(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["status"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_a_read_only_store_never_saves(tmp_path: Path) -> None:
    path = saved_store(tmp_path / "node.json")
    store: JsonFileStore[Any] = JsonFileStore(path, offload=False, read_only=True)
    state = store.load_state_sync()
    with pytest.raises(StoreError, match="read-only"):
        store.save_state_sync(state)


# --------------------------------------------------------------------------- timeline


@pytest.fixture(scope="module")
def failover_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The event logs of a crash failover on trio's virtual clock, with the reference timing."""
    where = tmp_path_factory.mktemp("logs")

    async def play() -> None:
        await Failover(Timing(), event_logs=where).run()

    anyio.run(play, backend="trio", backend_options={"clock": MockClock(autojump_threshold=0)})
    return where


def logs_of(where: Path) -> list[str]:
    return [str(where / f"{name}.events") for name in ("sb1", "prime", "sb0")]


def test_timeline_text_merges_the_logs_in_time_order(
    failover_logs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["timeline", *logs_of(failover_logs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("t=0 is 2023-11-14 ")
    times = [float(line.split("s", 1)[0]) for line in lines[1:]]
    assert times == sorted(times)
    promoted = [line for line in lines if "PromotedHere" in line]
    assert len(promoted) == 1
    assert promoted[0].split()[1:3] == ["sb0", "PromotedHere"]
    assert promoted[0].endswith(f"promoted: epoch 1, token {1 << 20}")


def test_timeline_draws_one_lane_per_provider_with_the_runs_and_their_tokens(
    failover_logs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    picture = tmp_path / "failover.svg"
    assert main(["timeline", *logs_of(failover_logs), "--svg", str(picture)]) == 0
    assert capsys.readouterr().out == f"{picture}: 3 lanes, 2 runs of w1\n"
    root = ET.fromstring(picture.read_text(encoding="utf-8"))
    lanes = {e.get("data-provider"): e for e in root.iter() if "lane" in e.get("class", "").split()}
    # the primary first, then the standbys in the order their logs were given
    assert list(lanes) == ["prime", "sb1", "sb0"]

    def runs(lane: str) -> list[str | None]:
        return [e.get("data-token") for e in lanes[lane].iter() if e.get("class") == "run"]

    def promoted(lane: str) -> list[str | None]:
        found = lanes[lane].iter()
        return [e.get("data-token") for e in found if e.get("class") == "run promoted"]

    assert runs("prime") == ["0"]
    assert promoted("sb0") == [str(1 << 20)]
    assert runs("sb1") == promoted("sb1") == []
    claims = [e.get("data-epoch") for e in lanes["sb0"].iter() if e.get("class") == "claim"]
    assert claims == ["1"]
    # the dead primary's run ends at the last lease end its runtime was handed
    leases = [e for e in lanes["prime"].iter() if e.get("class") == "lease"]
    [prime_run] = [e for e in lanes["prime"].iter() if e.get("class") == "run"]
    assert [e.get("data-at") for e in leases] == [prime_run.get("data-end")]
    [sb0_run] = [e for e in lanes["sb0"].iter() if e.get("class") == "run promoted"]
    assert float(prime_run.get("data-end", "")) < float(sb0_run.get("data-start", ""))
    assert not [e for e in root.iter() if e.get("class") == "two-live-window"]


def record(at: float, provider: str, event: str, **fields: Any) -> str:
    return json.dumps({"time": T0 + at, "provider": provider, "event": event, **fields})


def test_a_log_that_ends_without_a_clean_stop_is_drawn_as_a_killed_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    opened = {"timing": {"silence": 4.0, "lease": 3.0}}
    (tmp_path / "p.events").write_text(
        "\n".join(
            [
                record(0, "P", "LogOpened", **opened),
                record(1, "P", "ContainerStarting", workload="w", promotion=False),
                record(
                    1,
                    "P",
                    "ContainerStarted",
                    workload="w",
                    ok=True,
                    fencing_token=0,
                    lease_end=T0 + 4,
                ),
                record(2, "P", "HeartbeatPublished", workload=None, acked=["r1", "r2"]),
                record(2, "P", "LeaseRenewed", workload="w", fencing_token=0, lease_end=T0 + 5),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    (tmp_path / "s.events").write_text(
        "\n".join(
            [
                record(0, "S", "LogOpened", **opened),
                record(
                    7,
                    "S",
                    "ClaimPublished",
                    workload="w",
                    epoch=1,
                    fencing_token=1 << 20,
                    withdrawn=False,
                    acked=["r1", "r2"],
                ),
                record(
                    8,
                    "S",
                    "ContainerStarted",
                    workload="w",
                    ok=True,
                    fencing_token=1 << 20,
                    lease_end=T0 + 11,
                ),
                record(10, "S", "LogClosed"),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    picture = tmp_path / "kill.svg"
    logs = [str(tmp_path / "s.events"), str(tmp_path / "p.events")]
    assert main(["timeline", *logs, "--svg", str(picture)]) == 0
    root = ET.fromstring(picture.read_text(encoding="utf-8"))
    [kill] = [e for e in root.iter() if e.get("data-kind") == "kill"]
    assert kill.get("data-at") == "2.000"
    [old] = [e for e in root.iter() if e.get("class") == "run"]
    assert (old.get("data-start"), old.get("data-end")) == ("1.000", "5.000")
    [new] = [e for e in root.iter() if e.get("class") == "run promoted"]
    assert (new.get("data-start"), new.get("data-end")) == ("8.000", "")
    [silence] = [e for e in root.iter() if e.get("class") == "silence"]
    assert (silence.get("data-start"), silence.get("data-end")) == ("2.000", "6.000")
    assert "ran out" in picture.read_text(encoding="utf-8")
    assert not [e for e in root.iter() if e.get("class") == "two-live-window"]
    capsys.readouterr()
    assert main(["timeline", *logs]) == 0
    assert "p  (log ends without a clean stop)" in capsys.readouterr().out


def test_overlapping_runs_are_a_two_live_band(tmp_path: Path) -> None:
    lines = [
        record(0, "A", "ContainerStarted", workload="w", ok=True, fencing_token=0),
        record(3, "B", "ContainerStarted", workload="w", ok=True, fencing_token=1 << 20),
        record(5, "A", "ContainerStopped", workload="w", fencing_token=0),
        record(6, "B", "LogClosed"),
    ]
    log = tmp_path / "both.events"
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    picture = tmp_path / "two.svg"
    assert main(["timeline", str(log), "--svg", str(picture)]) == 0
    root = ET.fromstring(picture.read_text(encoding="utf-8"))
    [band] = [e for e in root.iter() if e.get("class") == "two-live-window"]
    assert (band.get("data-start"), band.get("data-end")) == ("3.000", "5.000")


@pytest.mark.parametrize(
    ("write", "extra", "says"),
    [
        (None, [], "cannot read"),
        ("not json at all\n" + record(1, "A", "X") + "\n", [], ":1: not a JSON line"),
        ("", [], "holds no event"),
        (record(1, "A", "PromotedHere", workload="w") + "\n", ["--workload", "v"], "no event of"),
        (
            record(1, "A", "PromotedHere", workload="w")
            + "\n"
            + record(2, "A", "PromotedHere", workload="v")
            + "\n",
            ["--svg", "{tmp}/x.svg"],
            "choose the workload",
        ),
    ],
)
def test_timeline_refuses_bad_input_with_one_line_and_status_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    write: str | None,
    extra: list[str],
    says: str,
) -> None:
    log = tmp_path / "n.events"
    if write is not None:
        log.write_text(write, encoding="utf-8")
    assert main(["timeline", str(log), *(a.format(tmp=tmp_path) for a in extra)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert says in err
    assert not (tmp_path / "x.svg").exists()


def test_timeline_needs_a_log(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["timeline"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1
