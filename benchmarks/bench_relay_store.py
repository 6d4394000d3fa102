"""What a relay itself can store, and how long a read waits behind writes.

For each relay -- the Python ``nostr-relay``, rust-nostr's ``LocalRelay``
(both as local processes, as the tests start them) and the library's memory
relay -- this measures, with the library's own signed claim events:

* **store rate**: ``--events`` claims (one workload each, one claimant),
  sent pipelined on one websocket, from the first ``EVENT`` sent until the
  last ``OK`` came back; events per second and milliseconds per event;
* **read behind writes**: ``--events`` more claims sent pipelined and then,
  at once, one read of 100 workloads' claims (one ``REQ``, 100 ``#d`` tags):
  the time until its ``EOSE`` when the read goes on the *same* connection as
  the writes, and when it goes on a *second* connection.

For the memory relay the same mix goes through ``MemoryTransport`` (there
is no connection: its "same" and "second" are one figure). The load average
is printed with the figures, since the machine may be shared.

    python benchmarks/bench_relay_store.py [--events 500] [--runs 3]
        [--relay nostr-relay --relay rust-local --relay memory]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx
from httpx_ws import AsyncWebSocketSession, aconnect_ws

from standby import PromotionClaim, fencing_token
from standby.adapters.memory import MemoryRelayNetwork
from standby.adapters.nostr import NostrKeys, NostrProfile
from standby.adapters.nostr._events import Versions, sign_message
from standby.protocols import Query
from standby.testing._relay_process import (
    RELAY_IMPLEMENTATIONS,
    RelayCluster,
    RelaySettings,
    running_relays,
)
from standby.wire import Codec

#: The relays this benchmark knows: the two relay programs and the memory relay.
RELAYS = (*RELAY_IMPLEMENTATIONS, "memory")
#: LocalRelay's rate limit lifted, so the store itself is measured.
UNLIMITED = (1_000_000, 1_000_000)
#: Workloads a read asks for (one ``#d`` tag each).
READ_WIDTH = 100


def claims(keys: NostrKeys, count: int) -> list[PromotionClaim]:
    """``count`` claims by ``keys`` for fresh workloads, stamped now."""
    now = time.time()
    run = uuid.uuid4().hex[:8]
    return [
        PromotionClaim(
            workload_id=f"bench-{run}-{i}",
            epoch=1,
            fencing_token=fencing_token(1, 0),
            claimant=keys.public_key,
            standby_index=0,
            claimed_at=now,
        )
        for i in range(count)
    ]


def signed(keys: NostrKeys, messages: Sequence[PromotionClaim]) -> list[dict[str, Any]]:
    """The events that publish ``messages``, as relays exchange them."""
    profile, codec = NostrProfile(), Codec()
    versions: Versions = OrderedDict()
    return [
        event.to_json()
        for message in messages
        for event in sign_message(
            message, keys=keys, profile=profile, codec=codec, versions=versions
        )
    ]


async def send_events(ws: AsyncWebSocketSession, events: list[dict[str, Any]]) -> None:
    for event in events:
        await ws.send_text(json.dumps(["EVENT", event]))


async def wait_oks(ws: AsyncWebSocketSession, count: int) -> int:
    """Read until ``count`` ``OK``s arrived; the number of ``OK false``."""
    refused = 0
    seen = 0
    while seen < count:
        message = json.loads(await ws.receive_text())
        if message[0] == "OK":
            seen += 1
            refused += not message[2]
    return refused


async def wait_eose(ws: AsyncWebSocketSession, sub_id: str) -> int:
    """Read until ``EOSE`` of ``sub_id``; the number of its events."""
    found = 0
    while True:
        message = json.loads(await ws.receive_text())
        if message[0] == "EVENT" and message[1] == sub_id:
            found += 1
        elif message[0] in ("EOSE", "CLOSED") and message[1] == sub_id:
            return found


def read_request(sub_id: str, keys: NostrKeys, workloads: Sequence[str]) -> str:
    profile = NostrProfile()
    return json.dumps(
        [
            "REQ",
            sub_id,
            {
                "kinds": [profile.claim_kind],
                "authors": [keys.public_key],
                "#d": [profile.claim_d(w) for w in workloads],
            },
        ]
    )


async def on_relay(url: str, events: int) -> dict[str, float]:
    """One run of the three measures on the relay at ``url``."""
    keys = NostrKeys.from_secret(hashlib.sha256(uuid.uuid4().bytes).hexdigest())
    figures: dict[str, float] = {}
    async with (
        httpx.AsyncClient() as client,
        aconnect_ws(url, client) as writer,
        aconnect_ws(url, client) as reader,
    ):
        batch = signed(keys, claims(keys, events))
        started = time.perf_counter()
        await send_events(writer, batch)
        refused = await wait_oks(writer, len(batch))
        elapsed = time.perf_counter() - started
        figures["store_per_s"] = len(batch) / elapsed
        figures["ms_per_event"] = 1000 * elapsed / len(batch)
        figures["refused"] = refused
        for where in ("same", "second"):
            messages = claims(keys, events)
            batch = signed(keys, messages)
            wanted = [m.workload_id for m in messages[:READ_WIDTH]]
            await send_events(writer, batch)
            ws = writer if where == "same" else reader
            asked = time.perf_counter()
            await ws.send_text(read_request("r", keys, wanted))
            if where == "same":
                # Everything on this connection is answered in order: the
                # read's EOSE comes after the writes' OKs.
                got = 0
                oks = 0
                while True:
                    message = json.loads(await ws.receive_text())
                    if message[0] == "OK":
                        oks += 1
                    elif message[0] == "EVENT":
                        got += 1
                    elif message[0] in ("EOSE", "CLOSED"):
                        break
                figures[f"read_{where}_ms"] = 1000 * (time.perf_counter() - asked)
                figures[f"read_{where}_found"] = got
                await wait_oks(writer, len(batch) - oks)
            else:
                got = await wait_eose(ws, "r")
                figures[f"read_{where}_ms"] = 1000 * (time.perf_counter() - asked)
                figures[f"read_{where}_found"] = got
                await wait_oks(writer, len(batch))
    return figures


async def on_memory(events: int) -> dict[str, float]:
    """The same mix through the memory relay (one relay, no connection)."""
    network = MemoryRelayNetwork(1)
    keys = NostrKeys.from_secret(hashlib.sha256(uuid.uuid4().bytes).hexdigest())
    transport = network.transport(keys.public_key)

    async def put(message: PromotionClaim) -> None:
        await transport.publish(message, timeout=60.0)

    async def put_all(messages: Sequence[PromotionClaim]) -> None:
        async with anyio.create_task_group() as group:
            for message in messages:
                group.start_soon(put, message)

    started = time.perf_counter()
    await put_all(claims(keys, events))
    elapsed = time.perf_counter() - started
    messages = claims(keys, events)
    wanted = {m.workload_id for m in messages[:READ_WIDTH]}
    async with anyio.create_task_group() as group:
        group.start_soon(put_all, messages)
        asked = time.perf_counter()
        result = await transport.query(Query(kinds={"claim"}, workload_ids=wanted), timeout=60)
        read_ms = 1000 * (time.perf_counter() - asked)
    found = len(result.envelopes)
    return {
        "store_per_s": events / elapsed,
        "ms_per_event": 1000 * elapsed / events,
        "refused": 0,
        # No connection: the same figure for "same" and "second".
        "read_same_ms": read_ms,
        "read_same_found": found,
        "read_second_ms": read_ms,
        "read_second_found": found,
    }


def report(relay: str, runs: list[dict[str, float]]) -> None:
    def median(key: str) -> float:
        return statistics.median(run[key] for run in runs)

    def span(key: str) -> str:
        values = sorted(run[key] for run in runs)
        return f"{values[0]:.1f} to {values[-1]:.1f}"

    print(
        f"{relay:12} store {median('store_per_s'):7.0f} events/s ({span('store_per_s')}), "
        f"{median('ms_per_event'):.2f} ms each, refused {int(max(r['refused'] for r in runs))}; "
        f"read of {READ_WIDTH} behind the writes: same connection "
        f"{median('read_same_ms'):.0f} ms ({span('read_same_ms')}), "
        f"second connection {median('read_second_ms'):.0f} ms ({span('read_second_ms')})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=500, help="events per batch (default 500)")
    parser.add_argument("--runs", type=int, default=3, help="runs per relay (default 3)")
    parser.add_argument(
        "--relay", action="append", choices=RELAYS, help="a relay to measure (default: all)"
    )
    parser.add_argument(
        "--relay-default-rate",
        action="store_true",
        help="keep LocalRelay's own rate limit (about 60 events a minute per connection)",
    )
    args = parser.parse_args(argv)
    if args.events < READ_WIDTH:
        parser.error(f"--events must be at least {READ_WIDTH}, not {args.events}")
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, not {args.runs}")
    chosen = args.relay or list(RELAYS)
    print(
        f"{args.events} claim events per batch, {args.runs} runs per relay; "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    for relay in chosen:
        if relay == "memory":
            runs = [anyio.run(on_memory, args.events) for _ in range(args.runs)]
        else:
            with tempfile.TemporaryDirectory() as tmp:
                cluster = RelayCluster(
                    Path(tmp),
                    [
                        RelaySettings(
                            limits=(("message_timeout", 600),),
                            rate_limit=None if args.relay_default_rate else UNLIMITED,
                        )
                    ],
                    implementation=relay,
                )
                with running_relays(cluster):
                    runs = [
                        anyio.run(on_relay, cluster.urls[0], args.events) for _ in range(args.runs)
                    ]
        report(relay, runs)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
