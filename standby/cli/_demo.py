"""``python -m standby demo``: a live failover on embedded in-memory relays.

One process runs a primary and ``N`` standbys, each a real
:class:`~standby.node.StandbyNode` on the in-memory adapters, at a scaled
timing (a few seconds in all). The primary crashes (or, with ``--handover``,
hands the workload over), and the demo prints what each node does: heartbeats,
the silence deadline, backoff, claim, spawn with its fencing token, the
announcement. It ends with the measured failover time against the configured
silence, and exits 0 only when exactly one standby took over and no two
containers ever ran at once.

The core is :func:`run_demo`, an async function the tests run on a virtual
clock.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from typing import Any, Final

import anyio
import anyio.abc
import attrs

from ..adapters.memory import MemoryRelayNetwork, MemoryRuntime, MemorySlotStore, RuntimeRecord
from ..core._effects import LifecycleState
from ..core._election import Phase
from ..core._models import Heartbeat, Topology
from ..core._timing import Timing
from ..node._events import (
    AnnouncementPublished,
    ClaimCompared,
    ClaimPublished,
    ContainerStarted,
    ContainerStarting,
    ContainerStopped,
    HeartbeatPublished,
    LifecycleChanged,
    NodeEvent,
    PrimaryFollowed,
    RevocationPublished,
    SlotPhaseChanged,
)
from ..node._node import StandbyNode
from ..node._types import SpawnRequest
from ._argtypes import integer_at_least, number_between

__all__ = ["DemoOptions", "DemoResult", "add_arguments", "run", "run_demo"]

WORKLOAD = "demo-workload"
PRIMARY = "primary"


#: The demo runs on the real clock: scales outside this range would make it
#: run for hours (or, past the floats, never end) or spin on sub-millisecond timers.
MIN_SCALE: Final = 0.001
MAX_SCALE: Final = 1.0


@attrs.frozen
class DemoOptions:
    """What the demo runs: ``standbys`` standbys at ``Timing().scaled(scale)``."""

    standbys: int = 2
    seed: int = 0
    handover: bool = False
    scale: float = 1 / 100
    relays: int = 3
    spawn_latency: float | None = None
    """Seconds a standby's spawn takes; default 1/20 of the scaled spawn timeout."""
    spawn_failures: int = 0
    """How many of each standby's first spawns fail (to show retries and re-arming)."""

    def __attrs_post_init__(self) -> None:
        if self.standbys < 1:
            raise ValueError(f"the demo needs at least one standby, got {self.standbys}")
        if not (MIN_SCALE <= self.scale <= MAX_SCALE):
            raise ValueError(
                f"scale must be between {MIN_SCALE:g} (silence 0.18 s) and {MAX_SCALE:g} "
                f"(the reference timing, silence 180 s), got {self.scale}"
            )
        if self.relays < 1:
            raise ValueError(f"the demo needs at least one relay, got {self.relays}")
        if self.spawn_failures < 0:
            raise ValueError(f"spawn_failures must be >= 0, got {self.spawn_failures}")

    @property
    def timing(self) -> Timing:
        """The scaled reference timing, with a quorum sized for ``relays``."""
        write = self.relays // 2 + 1
        return Timing(relay_count=self.relays, write_quorum=write).scaled(self.scale)


@attrs.frozen
class DemoResult:
    """Outcome of :func:`run_demo`."""

    exit_status: int
    takeovers: tuple[str, ...]
    failover: float | None
    """Seconds from the last primary heartbeat (or the handover request) to the new start."""
    max_concurrent: int


class _Timeline:
    """Turns node events into readable lines, stamped relative to the start."""

    def __init__(self, out: Callable[[str], object], names: list[str], timing: Timing) -> None:
        self.out = out
        self.start = anyio.current_time()
        self.width = max(len(n) for n in names)
        self.timing = timing
        self.heartbeats: dict[str, int] = {}
        self.quiet: set[str] = set()
        self.nodes: dict[str, StandbyNode[Any]] = {}

    def index_of(self, who: str, workload_id: str) -> int:
        node = self.nodes.get(who)
        slot = None if node is None else node.election.slots.get(workload_id)
        return 0 if slot is None else slot.standby_index

    def line(self, who: str, text: str) -> None:
        elapsed = anyio.current_time() - self.start
        self.out(f"[{elapsed:7.2f}s] {who:<{self.width}}  {text}")

    def hook(self, who: str, relays: int) -> Callable[[NodeEvent], None]:
        def on_event(event: NodeEvent) -> None:
            text = self.describe(who, event, relays)
            if text is not None:
                self.line(who, text)

        return on_event

    def describe(self, who: str, event: NodeEvent, relays: int) -> str | None:
        if isinstance(event, HeartbeatPublished):
            count = self.heartbeats[who] = self.heartbeats.get(who, 0) + 1
            if who in self.quiet and count > 1:
                return None
            return f"heartbeat #{count} acknowledged by {len(event.acked)}/{relays} relays"
        if isinstance(event, SlotPhaseChanged):
            return self._phase(who, event)
        if isinstance(event, ClaimPublished):
            verb = "withdrew claim" if event.withdrawn else "claimed"
            return (
                f"{verb} epoch {event.epoch} (fencing token {event.fencing_token}): "
                f"{len(event.acked)}/{relays} relays acknowledged"
            )
        if isinstance(event, ClaimCompared):
            outcome = "won" if event.won else f"lost to {event.holder}"
            return f"compare-and-set claim of epoch {event.epoch}: {outcome}"
        if isinstance(event, ContainerStarting):
            if not event.promotion:
                return f"starting the container (fencing token {event.fencing_token})"
            return f"SPAWN with fencing token {event.fencing_token}"
        if isinstance(event, ContainerStarted):
            if event.ok:
                return f"container running (started in {event.elapsed:.2f}s)"
            return f"spawn FAILED: {event.error}"
        if isinstance(event, AnnouncementPublished):
            self.quiet.add(who)
            return (
                f"announced itself as primary of epoch {event.epoch}: "
                f"{len(event.acked)}/{relays} relays acknowledged"
            )
        if isinstance(event, PrimaryFollowed):
            return f"{event.new_primary} took over (epoch {event.epoch}): now standing by for it"
        if isinstance(event, LifecycleChanged):
            if event.new is LifecycleState.LIVE and event.old is LifecycleState.PROVISIONING:
                return None
            return f"workload {event.old.value} -> {event.new.value} ({event.reason})"
        if isinstance(event, ContainerStopped):
            return f"container stopped ({event.reason})"
        if isinstance(event, RevocationPublished):
            return f"signed lease revocation published: {len(event.acked)}/{relays} relays"
        return None

    def _phase(self, who: str, event: SlotPhaseChanged) -> str | None:
        timing = self.timing
        old, new = event.old, event.new
        if new is Phase.CONFIRMING:
            return "silence deadline passed: asking a read quorum for heartbeats"
        if new is Phase.BACKOFF:
            index = self.index_of(who, event.workload_id)
            backoff = f"backoff {index} x {timing.promotion_delay:.2f}s"
            if event.revoked and old is not Phase.CONFIRMING:
                return f"lease REVOKED by the primary: no silence wait; {backoff}"
            return f"primary SILENT for {timing.silence:.2f}s (read quorum agrees); {backoff}"
        if new is Phase.PREREAD and old is Phase.BACKOFF:
            return "backoff over: reading peer claims"
        if new is Phase.DEFERRED:
            return "a peer holds the claim: standing down"
        if new is Phase.SETTLING:
            return f"claim reached its quorum: settling {timing.claim_settle:.2f}s"
        if new is Phase.REREAD:
            return "settle re-read of peer claims"
        if new is Phase.RETRY_WATCH:
            return "confirmation missed its quorum: watching again after a retry interval"
        if new is Phase.RETRY_CLAIM:
            return "holding before retrying the claim"
        if old is None and new is Phase.WATCHING:
            return "reserved a standby slot; watching the primary's heartbeats"
        return None


async def run_demo(
    options: DemoOptions,
    *,
    out: Callable[[str], object] = print,
    wall_clock: Callable[[], float] = time.time,
) -> DemoResult:
    """Run the demo; see the module docstring. Returns its outcome."""
    timing = options.timing
    names = [PRIMARY, *(f"standby-{i}" for i in range(options.standbys))]
    network = MemoryRelayNetwork(options.relays, seed=options.seed, wall_clock=wall_clock)
    record = RuntimeRecord()
    latency = timing.spawn_timeout / 20 if options.spawn_latency is None else options.spawn_latency
    runtimes = {
        name: MemoryRuntime(
            name,
            record=record,
            spawn_latency=0.0 if name == PRIMARY else latency,
            wall_clock=wall_clock,
        )
        for name in names
    }
    for name in names[1:]:
        if options.spawn_failures:
            runtimes[name].fail_spawns(options.spawn_failures, error="injected by the demo")
    timeline = _Timeline(out, names, timing)
    nodes: dict[str, StandbyNode[Any]] = {
        name: StandbyNode(
            transport=network.transport(name),
            runtime=runtimes[name],
            store=MemorySlotStore(),
            timing=timing,
            wall_clock=wall_clock,
            on_event=timeline.hook(name, options.relays),
        )
        for name in names
    }
    timeline.nodes = nodes
    mode = "graceful handover" if options.handover else "primary crash"
    out(
        f"standby demo: {mode}, 1 primary + {options.standbys} standbys, "
        f"{options.relays} in-memory relays (seed {options.seed})"
    )
    out(
        f"timing (reference x {options.scale:g}): heartbeat {timing.heartbeat_interval:.2f}s, "
        f"silence {timing.silence:.2f}s, promotion delay {timing.promotion_delay:.2f}s per index, "
        f"claim settle {timing.claim_settle:.2f}s, spawn takes {latency:.2f}s; "
        f"write quorum {timing.write_quorum}/{timing.relay_count}"
    )
    scopes = {name: anyio.CancelScope() for name in names}
    reference: float | None = None
    async with anyio.create_task_group() as group:
        for name in names:
            await group.start(_serve, nodes[name], scopes[name])
        request: SpawnRequest[Any] = SpawnRequest(
            workload_id=WORKLOAD,
            topology=Topology(primary=PRIMARY, standbys=tuple(names[1:])),
            spec={"image": "example/worker:1"},
            owner="consumer",
            expires_at=wall_clock() + 3600 * max(options.scale, 1.0),
        )
        for name in names:
            await nodes[name].accept(request)
        await _wait(lambda: bool(record.of_kind("started", WORKLOAD)), timing.heartbeat_interval)
        await anyio.sleep(timing.heartbeat_interval * 2.5)
        if options.handover:
            timeline.line(PRIMARY, "operator asks for a HANDOVER")
            reference = wall_clock()
            await nodes[PRIMARY].handover(WORKLOAD, state_uri="memory://snapshots/demo")
        else:
            reference = _last_heartbeat(nodes[PRIMARY], network)
            runtimes[PRIMARY].crash()
            scopes[PRIMARY].cancel()
            timeline.line(PRIMARY, "CRASHED (host and container gone)")
        limit = (
            timing.silence
            + options.standbys * timing.promotion_delay
            + timing.claim_settle
            + timing.spawn_timeout
            + 4 * timing.query_timeout
        ) * 2
        await _wait(lambda: len(record.of_kind("started", WORKLOAD)) >= 2, limit)
        await anyio.sleep(timing.heartbeat_interval * 1.5)
        group.cancel_scope.cancel()

    starts = record.of_kind("started", WORKLOAD)
    takeovers = tuple(e.host for e in starts if e.host != PRIMARY)
    concurrent = record.max_concurrent(WORKLOAD)
    failover: float | None = None
    if takeovers and reference is not None:
        first = next(e for e in starts if e.host != PRIMARY)
        # runtime times are anyio times: shift them onto the wall clock
        failover = first.at + (wall_clock() - anyio.current_time()) - reference
    ok = len(takeovers) == 1 and concurrent == 1
    out("")
    if failover is not None:
        since = "the handover request" if options.handover else "the last heartbeat"
        out(
            f"{takeovers[0]} runs {WORKLOAD} (fencing token {starts[-1].fencing_token}): "
            f"failover took {failover:.2f}s after {since}; configured silence is "
            f"{timing.silence:.2f}s"
            + ("" if options.handover else f" (+ claim settle {timing.claim_settle:.2f}s)")
        )
    else:
        out(f"no standby took over {WORKLOAD}")
    out(
        f"result: {'OK' if ok else 'FAILED'}: {len(takeovers)} standby took over, "
        f"at most {concurrent} container(s) ran at once"
    )
    return DemoResult(
        exit_status=0 if ok else 1,
        takeovers=takeovers,
        failover=failover,
        max_concurrent=concurrent,
    )


def _last_heartbeat(node: StandbyNode[Any], network: MemoryRelayNetwork) -> float:
    stamps = [
        message.timestamp
        for _at, signer, message, acked in network.published
        if signer == node.me and acked and isinstance(message, Heartbeat)
    ]
    return max(stamps)


async def _serve(
    node: StandbyNode[Any],
    scope: anyio.CancelScope,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    with scope:
        async with node:
            task_status.started()
            await anyio.sleep_forever()


async def _wait(predicate: Callable[[], bool], limit: float) -> None:
    with anyio.move_on_after(limit):
        while True:
            if predicate():
                return
            await anyio.sleep(limit / 200)


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _log_level(text: str) -> str:
    level = text.strip().upper()
    if level not in _LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"unknown log level {text!r}; choose from {', '.join(_LOG_LEVELS)}"
        )
    return level


_scale = number_between(MIN_SCALE, MAX_SCALE)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the demo's options to ``parser``.

    Bad values are refused by the parser (one line on stderr, exit status 2).
    """
    parser.add_argument(
        "--standbys", type=integer_at_least(1), default=2, help="number of standbys (default 2)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the relays' randomness")
    parser.add_argument(
        "--handover",
        action="store_true",
        help="graceful path: the primary hands over instead of crashing",
    )
    parser.add_argument(
        "--scale",
        type=_scale,
        default=1 / 100,
        help="multiply the reference timing by this, from "
        f"{MIN_SCALE:g} to {MAX_SCALE:g} (default 0.01: silence 1.8 s)",
    )
    parser.add_argument(
        "--relays", type=integer_at_least(1), default=3, help="number of relays (default 3)"
    )
    parser.add_argument(
        "--spawn-failures",
        type=integer_at_least(0),
        default=0,
        help="make each standby's first N spawns fail (shows retries; default 0)",
    )
    parser.add_argument(
        "--backend", choices=("asyncio", "trio"), default="asyncio", help="event loop to use"
    )
    parser.add_argument(
        "--log-level",
        type=_log_level,
        default=None,
        help=f"also print the nodes' log records at this level ({', '.join(_LOG_LEVELS)})",
    )


def run(args: argparse.Namespace) -> int:
    """Run the demo for parsed command-line ``args``; returns the exit status.

    Options the demo cannot run with (for example a scale that makes the
    timing overflow) print one line on stderr and return 2.
    """
    try:
        options = DemoOptions(
            standbys=args.standbys,
            seed=args.seed,
            handover=args.handover,
            scale=args.scale,
            relays=args.relays,
            spawn_failures=args.spawn_failures,
        )
        options.timing  # noqa: B018 - a scale can overflow or underflow the timing
        level = None if args.log_level is None else _log_level(args.log_level)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    _configure_logging(level)
    result: DemoResult = anyio.run(_main, options, backend=args.backend)
    return result.exit_status


async def _main(options: DemoOptions) -> DemoResult:
    return await run_demo(options)


def _configure_logging(level: str | None) -> None:
    node_logger = logging.getLogger("standby")
    if level is None:
        if not logging.getLogger().handlers and not node_logger.handlers:
            node_logger.addHandler(logging.NullHandler())
        return
    handler = logging.StreamHandler()
    handler.setFormatter(
        logging.Formatter("    log %(levelname)s %(node)s/%(role)s [%(workload_id)s] %(message)s")
    )
    node_logger.addHandler(handler)
    node_logger.setLevel(level.upper())
