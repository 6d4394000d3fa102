"""rust-nostr's ``LocalRelay`` in a child process: the second relay of the test suite.

What ``standby.testing._local_relay`` and ``RelayCluster(implementation=
"rust-local")`` promise: bad arguments are refused with one line, the relay
says ``ready`` once it listens, keeps what it stored across a restart on the
same directory (LMDB), and exits cleanly on SIGTERM.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from _nostr_relays import RelayCluster

from standby import PromotionClaim, fencing_token
from standby.adapters.nostr import NostrKeys, NostrTransport
from standby.protocols import Query
from standby.testing import _local_relay
from standby.testing._relay_process import free_port, relay_program


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--port", "0", "--data", "x"], "--port must be between 1 and 65535, not 0"),
        (["--port", "70000", "--data", "x"], "--port must be between 1 and 65535, not 70000"),
        (["--port", "4000"], "the following arguments are required: --data"),
        (
            ["--port", "4000", "--data", "x", "--rate-limit", "0", "5"],
            "--rate-limit takes two positive numbers, not 0 5",
        ),
    ],
)
def test_bad_arguments_are_refused_with_one_line_and_exit_2(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = [str(tmp_path / a) if a == "x" else a for a in argv]
    with pytest.raises(SystemExit) as exited:
        _local_relay.main(argv)
    assert exited.value.code == 2
    assert says in capsys.readouterr().err


def test_free_port_never_hands_out_a_port_twice() -> None:
    # Servers of one cluster get their ports before any of them listens: a
    # port offered twice gave an etcd cluster one peer URL for two members.
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)


def test_an_unknown_implementation_is_refused_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown relay implementation 'strfry': one of"):
        relay_program("strfry")  # type: ignore[arg-type]


def claim(keys: NostrKeys) -> PromotionClaim:
    return PromotionClaim(
        workload_id=f"kept-{uuid.uuid4().hex[:8]}",
        epoch=3,
        fencing_token=fencing_token(3, 0),
        claimant=keys.public_key,
        standby_index=0,
        claimed_at=1_800_000_000.0,
    )


async def publish_and_read(url: str, keys: NostrKeys, message: PromotionClaim | None) -> Any:
    async with NostrTransport([url], keys, reconnect_backoff=(0.05, 0.5)) as transport:
        assert await transport.wait_connected(timeout=5.0) == frozenset({url})
        if message is not None:
            assert (await transport.publish(message, timeout=5.0)).acked == frozenset({url})
        return await transport.query(Query(kinds={"claim"}, authors={keys.public_key}), timeout=5.0)


def test_the_relay_says_ready_keeps_its_events_across_a_restart_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    cluster = RelayCluster(tmp_path, 1, implementation="rust-local")
    keys = NostrKeys.from_secret(hashlib.sha256(b"local-relay-restart").hexdigest())
    message = claim(keys)
    relay = cluster.relays[0]
    try:
        cluster.start()
        assert relay.lax is False  # LocalRelay always checks signatures
        first = anyio.run(publish_and_read, cluster.urls[0], keys, message)
        cluster.stop(0)
        assert relay.proc is not None
        assert relay.proc.returncode == 0, relay.log_tail()
        cluster.start(0)
        again = anyio.run(publish_and_read, cluster.urls[0], keys, None)
    finally:
        cluster.stop_all()
    ready = [line for line in relay.log_path.read_text().splitlines() if line.startswith("ready")]
    assert ready == [f"ready ws://127.0.0.1:{relay.port}"] * 2
    assert [e.message for e in first.envelopes] == [message]
    assert [e.message for e in again.envelopes] == [message]
