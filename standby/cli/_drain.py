"""``python -m standby drain`` and ``stop``: an operator moves or stops a node's workloads.

Both act as the node: they open its store (taking the store's lock, so the
node's own process must be stopped first: a running node makes them exit
with status 1), restore it against the runtime and the relays as a
restarted node would (adopting what still runs under a valid lease), then

- ``drain`` hands every workload it runs as primary to its standbys and
  waits until a read quorum shows each taken over (``--within`` seconds at
  most), printing what was taken over and why the rest was not;
- ``stop`` stops every workload it runs for good (a host shutting the
  provider down), revoking the replicated ones so their standbys take over.

Exit status 0 when everything was handed over (or stopped), 1 when something
was not or the node could not start, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import anyio
import attrs

from ..core._errors import StandbyError
from ._argtypes import seconds
from ._transports import BadArguments, add_transport_arguments, open_transport, timing_for

__all__ = ["add_drain_arguments", "add_stop_arguments", "run_drain", "run_stop"]


def _common(parser: argparse.ArgumentParser, doc: str) -> None:
    parser.description = doc
    add_transport_arguments(parser)
    parser.add_argument("--store", type=Path, required=True, help="the node's JsonFileStore file")
    parser.add_argument(
        "--state-dir", type=Path, required=True, help="the node's ProcessRuntime state directory"
    )
    parser.add_argument("--provider", default="default", help="the ProcessRuntime provider name")
    parser.add_argument(
        "--within", type=seconds, default=None, help="seconds to wait at most (default: a bound)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def add_drain_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``drain`` command's arguments."""
    _common(parser, "Hand every workload a stopped node ran as primary to its standbys.")


def add_stop_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``stop`` command's arguments."""
    _common(parser, "Stop every workload a stopped node ran as primary, for good.")


def run_drain(args: argparse.Namespace) -> int:
    """Carry out ``drain``; returns the exit status."""
    return _act(args, "drain")


def run_stop(args: argparse.Namespace) -> int:
    """Carry out ``stop``; returns the exit status."""
    return _act(args, "stop")


def _act(args: argparse.Namespace, command: str) -> int:
    prog = f"python -m standby {command}"
    try:
        transport = open_transport(args, act=True)
        timing = timing_for(args, transport.relay_count)
    except BadArguments as exc:
        print(f"{prog}: error: {exc} (see --help)", file=sys.stderr)
        return 2
    from ..adapters.files._store import JsonFileStore
    from ..adapters.process import ProcessRuntime
    from ..node._node import StandbyNode

    async def main() -> Any:
        grace = min(2.0, timing.fence_grace)  # the runtime may not outlast the fence
        runtime = ProcessRuntime(args.state_dir, provider=args.provider, stop_grace=grace)
        store: JsonFileStore[Any] = JsonFileStore(args.store)
        node: StandbyNode[Any] = StandbyNode(
            transport=transport, runtime=runtime, store=store, timing=timing
        )
        async with transport, node:
            if command == "drain":
                return await node.drain(args.within)
            return await node.stop_workloads(args.within)

    try:
        report = anyio.run(main)
    except (StandbyError, OSError) as exc:
        print(f"{prog}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if command == "drain":
        done = [f"{t.workload_id}: epoch {t.new_epoch} by {t.by}" for t in report.taken_over]
        left = report.not_handed_over
        heads = ("taken over", "not handed over")
    else:
        done, left = list(report.stopped), report.not_stopped
        heads = ("stopped", "not stopped")
    if args.json:
        print(json.dumps(attrs.asdict(report, value_serializer=_plain), sort_keys=True))
    else:
        print(f"{heads[0]}: {len(done)}")
        print("".join(f"  {line}\n" for line in done), end="")
        print(f"{heads[1]}: {len(left)}")
        print("".join(f"  {w}: {why}\n" for w, why in left.items()), end="")
    return 1 if left else 0


def _plain(_inst: Any, _field: Any, value: Any) -> Any:
    """Mappings (read-only proxies) as plain dicts, for JSON."""
    return dict(value) if hasattr(value, "items") else value
