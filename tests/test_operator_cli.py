"""The operator commands ``inspect``, ``drain`` and ``stop``: bad input, a real redis-server."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from _redis import RedisServer, redis, redis_server  # noqa: F401
from test_node import wait_until

from standby import (
    Heartbeat,
    JsonFileStore,
    LeaseRevocation,
    PromotionAnnouncement,
    PromotionClaim,
    fencing_token,
)
from standby.__main__ import main
from standby.adapters.redis import RedisTransport

ROOT = Path(__file__).resolve().parent.parent


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``python -m standby ARGV`` in-process: (status, stdout, stderr)."""
    try:
        status = main(list(argv))
    except SystemExit as exc:  # argparse refuses a bad argument this way
        status = int(exc.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


# --------------------------------------------------------------------------- bad input

REDIS = ("--transport", "redis", "--host", "127.0.0.1", "--user", "u")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("inspect", "w1"), "--transport"),
        (("inspect", "--transport", "ftp", "w1"), "invalid choice"),
        (("inspect", "--transport", "nostr", "w1"), "needs at least one --relay"),
        (("inspect", "--transport", "etcd", "w1"), "needs at least one --endpoint"),
        (("inspect", "--transport", "redis", "w1"), "needs --host"),
        (("inspect", "--transport", "redis", "--host", "h", "w1"), "needs --user"),
        (("inspect", *REDIS, "w1"), "needs --password-file or $STANDBY_PASSWORD"),
        (("inspect", *REDIS, "--port", "0", "w1"), "port between 1 and 65535"),
        (("inspect", *REDIS, "--password-file", "/nonexistent/pw", "w1"), "cannot read"),
        (("inspect", "--transport", "nostr", "--relay", "http://x", "w1"), "ws://"),
        (
            (
                "drain",
                "--transport",
                "nostr",
                "--relay",
                "ws://x",
                "--store",
                "s",
                "--state-dir",
                "d",
            ),
            "needs --key-file",
        ),
        (("drain", *REDIS, "--store", "s", "--state-dir", "d", "--within", "-1"), ">= 0"),
        (("stop", *REDIS, "--state-dir", "d"), "--store"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], says: str
) -> None:
    status, out, err = run(capsys, *argv)
    assert status == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert says in err


@pytest.mark.parametrize(
    ("timing", "says"),
    [
        ("heartbeat_interval", "NAME=VALUE"),
        ("no_such_field=1", "NAME=VALUE"),
        ("lease=soon", "expected a number"),
        ("lease=1000", "silence"),  # the rule it breaks is named
        ("scale=-1", "factor"),
    ],
)
def test_a_bad_or_unsafe_timing_is_refused_with_exit_2(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    timing: str,
    says: str,
) -> None:
    monkeypatch.setenv("STANDBY_PASSWORD", "pw")
    status, _, err = run(capsys, "inspect", *REDIS, "--timing", timing, "w1")
    assert status == 2
    assert len(err.strip().splitlines()) == 1, err
    assert says in err


# --------------------------------------------------------------------------- a real redis-server


def _transport(server: RedisServer, label: str, prefix: str) -> RedisTransport:
    user, password = server.provider(label, prefix)
    return RedisTransport(
        "127.0.0.1", server.port, user=user, password=password, prefix=prefix, name="redis"
    )


def _flags(server: RedisServer, label: str, prefix: str, tmp_path: Path) -> list[str]:
    user, password = server.provider(label, prefix)
    secret = tmp_path / f"{label}.password"
    secret.write_text(password + "\n", encoding="utf-8")
    return [
        "--transport", "redis", "--host", "127.0.0.1", "--port", str(server.port),
        "--user", user, "--password-file", str(secret), "--prefix", prefix,
    ]  # fmt: skip


async def _failed_over(server: RedisServer, prefix: str) -> tuple[str, str, float]:
    """What a handover leaves on the relay: prime ran epoch 0, revoked it, sb0 took epoch 1."""
    prime = _transport(server, "prime", prefix)
    standby = _transport(server, "sb0", prefix)
    now = time.time()
    token = fencing_token(1, 0)
    async with prime, standby:
        p, s = prime.identity, standby.identity
        sent: list[tuple[RedisTransport, Any]] = [
            (prime, PromotionClaim(
                workload_id="w1", epoch=0, fencing_token=0, claimant=p, standby_index=0,
                claimed_at=now - 50,
            )),
            (prime, Heartbeat(provider=p, timestamp=now - 40, active_workloads=1)),
            (prime, LeaseRevocation(
                workload_id="w1", primary=p, standbys=(s,), reason="drain", revoked_at=now - 30,
            )),
            (standby, PromotionClaim(
                workload_id="w1", epoch=1, fencing_token=token, claimant=s, standby_index=0,
                claimed_at=now - 20,
            )),
            (standby, PromotionAnnouncement(
                workload_id="w1", new_primary=s, promoted_at=now - 10, epoch=1,
                fencing_token=token,
            )),
            (standby, Heartbeat(provider=s, timestamp=now - 5, active_workloads=1)),
        ]  # fmt: skip
        for transport, message in sent:
            result = await transport.publish(message, timeout=2.0)
            assert result.acked == {"redis"}
    return p, s, now - 5


def test_inspect_shows_what_a_read_quorum_sees(
    redis: RedisServer,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    prefix = f"cli-{uuid.uuid4().hex[:8]}"
    prime, sb0, beat = anyio.run(_failed_over, redis, prefix)
    flags = _flags(redis, "operator", prefix, tmp_path)

    status, out, err = run(capsys, "inspect", *flags, "--json", "w1")
    assert (status, err) == (0, "")
    found = json.loads(out)
    assert (found["epoch"], found["holder"], found["reached"]) == (1, sb0, True)
    assert found["answered"] == [f"redis://127.0.0.1:{redis.port}"]
    assert [(c["signer"], c["epoch"]) for c in found["claims"]] == [(prime, 0), (sb0, 1)]
    assert [(a["signer"], a["epoch"]) for a in found["announcements"]] == [(sb0, 1)]
    assert [(r["signer"], r["reason"]) for r in found["revocations"]] == [(prime, "drain")]
    assert found["last_heartbeat"] == pytest.approx(beat)

    status, out, _ = run(capsys, "inspect", *flags, "w1")
    assert status == 0
    assert out.splitlines()[0] == f"workload w1: epoch 1, held by {sb0}"
    assert "claims: 2" in out
    assert "announcements: 1" in out

    status, out, _ = run(capsys, "inspect", *flags, "--json", "unknown")
    assert status == 0
    assert (json.loads(out)["holder"], json.loads(out)["epoch"]) == (None, 0)


def test_drain_refuses_a_store_a_running_node_holds_and_drains_an_idle_one(
    redis: RedisServer,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    prefix = f"cli-{uuid.uuid4().hex[:8]}"
    flags = _flags(redis, "prime", prefix, tmp_path)
    timing = ["--timing", "scale=0.1"]
    where = ["--store", str(tmp_path / "slots.json"), "--state-dir", str(tmp_path / "runs")]
    holder: JsonFileStore[Any] = JsonFileStore(tmp_path / "slots.json")
    holder.acquire("the host's node")
    try:
        for command in ("drain", "stop"):
            status, out, err = run(capsys, command, *flags, *timing, *where, "--within", "1")
            assert status == 1
            assert out == ""
            assert "in use" in err
            assert "the host's node" in err
    finally:
        holder.release()
    status, out, err = run(capsys, "drain", *flags, *timing, *where, "--json", "--within", "1")
    assert (status, err) == (0, "")
    assert json.loads(out) == {"taken_over": [], "not_handed_over": {}}
    status, out, _ = run(capsys, "stop", *flags, *timing, *where, "--within", "1")
    assert status == 0
    assert out.splitlines() == ["stopped: 0", "not stopped: 0"]


# --------------------------------------------------------------------------- drain, end to end


def _runs(node: Any, workload_id: str) -> bool:
    status = node.status().primary(workload_id)
    return status is not None and bool(status.running)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # real processes and a real server: real time


@pytest.mark.anyio
async def test_the_drain_command_hands_a_stopped_nodes_workload_to_its_standby(
    redis: RedisServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    import argparse
    import os
    import sys

    from standby import SpawnRequest, Topology
    from standby.adapters.process import ProcessRuntime
    from standby.cli._transports import timing_for
    from standby.node import StandbyNode

    prefix = f"cli-{uuid.uuid4().hex[:8]}"
    timing = timing_for(argparse.Namespace(timing=["scale=0.1"]), 1)
    grace = min(2.0, timing.fence_grace)
    flags = _flags(redis, "prime", prefix, tmp_path)
    prime_user = flags[flags.index("--user") + 1]
    sb_user, sb_password = redis.provider("sb0", prefix)
    store, runs = tmp_path / "prime.json", tmp_path / "prime-runs"
    request: SpawnRequest[Any] = SpawnRequest(
        workload_id="job",
        topology=Topology(primary=prime_user, standbys=(sb_user,)),
        spec={"argv": ["sleep", "600"]},
        owner="consumer",
        expires_at=time.time() + 3600,
    )
    standby_link = RedisTransport(
        "127.0.0.1", redis.port, user=sb_user, password=sb_password, prefix=prefix
    )
    standby_runtime = ProcessRuntime(tmp_path / "sb-runs", provider="sb0", stop_grace=grace)
    standby: StandbyNode[Any] = StandbyNode(
        transport=standby_link, runtime=standby_runtime, timing=timing
    )
    async with standby_link, standby:
        await standby.accept(request)
        password = (tmp_path / "prime.password").read_text(encoding="utf-8").strip()
        prime_link = RedisTransport(
            "127.0.0.1", redis.port, user=prime_user, password=password, prefix=prefix
        )
        prime_runtime = ProcessRuntime(runs, provider="prime", stop_grace=grace)
        prime: StandbyNode[Any] = StandbyNode(
            transport=prime_link,
            runtime=prime_runtime,
            store=JsonFileStore(store),
            timing=timing,
        )
        async with prime_link, prime:
            await prime.accept(request)
            await wait_until(lambda: _runs(prime, "job"), within=30, step=0.05)
        # The node left; its workload runs on under its supervisor until the lease ends.
        assert [r.workload_id for r in await prime_runtime.list()] == ["job"]
        command = [sys.executable, "-m", "standby", "drain", *flags, "--timing", "scale=0.1"]
        command += ["--store", str(store), "--state-dir", str(runs), "--provider", "prime"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = await anyio.run_process([*command, "--json"], check=False, env=env)
        assert done.returncode == 0, done.stderr.decode()
        report = json.loads(done.stdout)
        assert report == {
            "taken_over": [{"workload_id": "job", "epoch": 0, "new_epoch": 1, "by": sb_user}],
            "not_handed_over": {},
        }
        assert await prime_runtime.list() == []  # the drained run was stopped
        took = standby.status().primary("job")
        assert took is not None
        assert (took.epoch, took.running) == (1, True)
        stopped = await standby.stop_workloads()
        assert stopped.stopped == ("job",)
