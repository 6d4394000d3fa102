"""rust-nostr's ``LocalRelay`` as a child process: a second, independent relay for tests.

The ``nostr-sdk`` wheel (``pip install 'nostr-sdk>=0.45,<0.46'``, in the
``dev`` extra) embeds rust-nostr's relay, which runs inside a Python process.
Run as a program, this module serves one such relay::

    python -m standby.testing._local_relay --port 40123 --data /tmp/relay-0

It listens on ``127.0.0.1`` (loopback only) on the given port, keeps its
events in an LMDB database under ``--data`` (so a restart on the same
directory keeps what it stored, as ``nostr-relay``'s SQLite file does),
prints one line ``ready ws://127.0.0.1:PORT`` on standard output once it
listens, and exits on SIGTERM or SIGINT. The parent (see
:class:`~standby.testing._relay_process.RelayProcess`) waits for that line
and stops the process by its PID.

The relay checks every event's signature itself; it has no "lax" mode.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

__all__ = ["READY_PREFIX", "main", "serve"]

#: The first word of the line the child prints once it listens.
READY_PREFIX = "ready"


async def serve(port: int, data: Path, rate: tuple[int, int] | None = None) -> None:
    """Serve one relay on ``127.0.0.1:port`` with its LMDB database in ``data``, until a signal.

    ``rate`` is ``(max_reqs, notes_per_minute)``, the relay's rate limit per
    connection (``None``: the relay's own default, which refuses events past
    about 60 a minute on one connection with ``rate-limited: slow down``).
    """
    import nostr_sdk

    database = await nostr_sdk.NostrLmdb.open(str(data / "lmdb"))
    builder = nostr_sdk.LocalRelayBuilder().addr("127.0.0.1").port(port).database(database)
    if rate is not None:
        max_reqs, notes_per_minute = rate
        builder = builder.rate_limit(
            nostr_sdk.RateLimit(max_reqs=max_reqs, notes_per_minute=notes_per_minute)
        )
    relay = builder.build()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # The relay calls the LMDB store through the binding's Python side from
    # its own threads: those calls need this loop named as theirs.
    nostr_sdk.uniffi_set_event_loop(loop)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await relay.run()
    print(f"{READY_PREFIX} ws://127.0.0.1:{port}", flush=True)
    await stop.wait()
    relay.shutdown()
    await asyncio.sleep(0.1)  # let the relay's threads finish their last store calls


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and serve until SIGTERM; 0 on a clean stop."""
    parser = argparse.ArgumentParser(
        prog="python -m standby.testing._local_relay",
        description="Serve rust-nostr's LocalRelay on 127.0.0.1 until SIGTERM.",
    )
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    parser.add_argument("--data", type=Path, required=True, help="directory of the LMDB database")
    parser.add_argument(
        "--rate-limit",
        nargs=2,
        type=int,
        metavar=("MAX_REQS", "NOTES_PER_MINUTE"),
        help="the relay's rate limit per connection (default: the relay's own)",
    )
    args = parser.parse_args(argv)
    args.data.mkdir(parents=True, exist_ok=True)
    if not 0 < args.port < 65536:
        parser.error(f"--port must be between 1 and 65535, not {args.port}")
    rate = None if args.rate_limit is None else (args.rate_limit[0], args.rate_limit[1])
    if rate is not None and min(rate) < 1:
        parser.error(f"--rate-limit takes two positive numbers, not {rate[0]} {rate[1]}")
    try:
        asyncio.run(serve(args.port, args.data, rate))
    except ImportError:
        print(
            "the `nostr-sdk` package is not installed: pip install 'nostr-sdk>=0.45,<0.46'",
            file=sys.stderr,
        )
        return 2
    # Leave without the interpreter's teardown: the binding's objects, freed
    # then from other threads, can crash the process after a clean stop.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
