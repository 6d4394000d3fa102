"""Fault objects: things that go wrong at a given virtual time.

Each fault is a small frozen value with a readable ``repr``, so a failing
property test shrinks to a schedule a human can read. A
:class:`~standby.testing.Simulation` accepts them in its constructor or
through its verbs (``sim.crash(at, who)`` builds a :class:`Crash`).

``who`` names a provider of the simulation (``"primary"``, ``"standby-0"``,
...). The special name ``"@primary"`` means "whoever runs the workload as
primary when the fault fires", which is what a random schedule usually wants
after a failover has moved the workload.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, TypeAlias

import attrs

__all__ = [
    "CURRENT_PRIMARY",
    "FORGE_KINDS",
    "PAUSE_WORKLOADS",
    "REACCEPT_MODES",
    "Crash",
    "Delay",
    "Drop",
    "Duplicate",
    "FailSpawn",
    "Fault",
    "Forge",
    "ForgeKind",
    "Handover",
    "Heal",
    "Kill",
    "Partition",
    "Pause",
    "Reaccept",
    "RelayAmnesia",
    "Replay",
    "Restart",
    "SkewClock",
    "SlowSpawn",
    "StepClock",
    "WorkloadDuringPause",
]

CURRENT_PRIMARY = "@primary"
"""Stands for the provider that runs the workload as primary when the fault fires."""

ForgeKind: TypeAlias = Literal["revocation", "claim", "announcement", "heartbeat"]
"""What a :class:`Forge` forges."""
FORGE_KINDS: tuple[ForgeKind, ...] = ("revocation", "claim", "announcement", "heartbeat")
Reaccept: TypeAlias = Literal["with-created-at", "without-created-at"]
"""How the host sends the consumer's request again to a restarted node."""
REACCEPT_MODES: tuple[Reaccept, ...] = ("with-created-at", "without-created-at")
WorkloadDuringPause: TypeAlias = Literal["frozen", "running"]
"""Whether a paused node's containers are frozen with it or keep running."""
PAUSE_WORKLOADS: tuple[WorkloadDuringPause, ...] = ("frozen", "running")


def _steps(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        _count(_inst, attribute, value)


def _time(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{attribute.name}` must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"`{attribute.name}` must be a finite number >= 0, got {value!r}")


def _positive(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    _time(_inst, attribute, value)
    if value <= 0:
        raise ValueError(f"`{attribute.name}` must be > 0, got {value!r}")


def _probability(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"`{attribute.name}` must be a probability in [0, 1], got {value!r}")


def _finite(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"`{attribute.name}` must be a finite number, got {value!r}")


def _name(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"`{attribute.name}` must be a non-empty name, got {value!r}")


def _count(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{attribute.name}` must be an integer >= 1, got {value!r}")


def _relays(value: Sequence[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    return tuple(value)


@attrs.frozen
class Crash:
    """The host of ``who`` dies at ``at``: its node process and its containers stop.

    What its store had made durable survives for a later :class:`Restart`.
    Same as ``Kill(at, who, host=True)``.
    """

    at: float = attrs.field(validator=_time)
    who: str = attrs.field(default=CURRENT_PRIMARY, validator=_name)


@attrs.frozen
class Kill:
    """``kill -9`` of ``who``'s node process; its containers keep running.

    With ``steps=k`` the kill lands right after the process's ``k``-th step
    (a callback of the event loop: a resumed await, a timer, a delivery)
    counted from ``at``, so a seed can stop the node at any point its code
    reaches: between a spawn and the save that records it, in the middle of
    a publish, halfway through a save. Nothing more comes from that process:
    no ``finally``, no final save, no message still in flight. With
    ``host=True`` the host dies with it (its containers stop too).
    """

    at: float = attrs.field(validator=_time)
    who: str = attrs.field(default=CURRENT_PRIMARY, validator=_name)
    steps: int | None = attrs.field(default=None, validator=_steps)
    host: bool = False


@attrs.frozen
class Restart:
    """The host of ``who`` starts its node process again, from its durable store.

    The new incarnation gets a fresh transport and a fresh runtime object for
    the same host, so it sees the containers that survived the old process
    only through the runtime (``list()``). ``reaccept`` makes the host send
    the consumer's request again once the node runs, with the request's
    original ``created_at`` or without one; ``None`` sends nothing. A node
    still running is crashed (host and all) first.
    """

    at: float = attrs.field(validator=_time)
    who: str = attrs.field(validator=_name)
    reaccept: Reaccept | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.in_(REACCEPT_MODES))
    )


@attrs.frozen
class Partition:
    """Cut ``who`` off from ``relays`` (all of them when ``None``).

    ``who="*"`` cuts every provider off from those relays (a relay outage).
    With ``duration`` the cut heals by itself; otherwise use :class:`Heal`.
    """

    at: float = attrs.field(validator=_time)
    who: str = attrs.field(default=CURRENT_PRIMARY, validator=_name)
    relays: tuple[str, ...] | None = attrs.field(default=None, converter=_relays)
    duration: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(_positive)
    )


@attrs.frozen
class Heal:
    """Restore links cut by :class:`Partition` (every link when ``who`` is ``None``)."""

    at: float = attrs.field(validator=_time)
    who: str | None = None
    relays: tuple[str, ...] | None = attrs.field(default=None, converter=_relays)


@attrs.frozen
class SkewClock:
    """Set ``who``'s wall clock to read ``offset`` seconds ahead of true time.

    The model allows any two clocks to differ by up to ``max_clock_skew``;
    the simulation notes in its report when a skew goes beyond that.
    """

    at: float = attrs.field(validator=_time)
    who: str = attrs.field(validator=_name)
    offset: float = attrs.field(validator=_finite)


@attrs.frozen
class StepClock:
    """Step ``who``'s wall clock by ``delta`` seconds (negative: back) at ``at``.

    A clock step as NTP or an operator makes it: the host's clock jumps,
    its monotonic clock does not. The new offset from true time counts as
    :class:`SkewClock`'s does: a spread beyond ``max_clock_skew`` is noted
    as outside the model.
    """

    at: float = attrs.field(validator=_time)
    who: str = attrs.field(validator=_name)
    delta: float = attrs.field(validator=_finite)


@attrs.frozen
class Drop:
    """Lose each message to or from ``who`` (everyone when ``None``) with ``probability``.

    Active during ``[at, at + duration)``. Applies to every hop between a
    provider and a relay: publishes, acknowledgements, deliveries, queries.
    """

    at: float = attrs.field(validator=_time)
    duration: float = attrs.field(validator=_positive)
    probability: float = attrs.field(default=1.0, validator=_probability)
    who: str | None = None


@attrs.frozen
class Delay:
    """Add up to ``extra`` seconds (uniformly drawn) to each hop of ``who``."""

    at: float = attrs.field(validator=_time)
    duration: float = attrs.field(validator=_positive)
    extra: float = attrs.field(validator=_positive)
    who: str | None = None


@attrs.frozen
class Duplicate:
    """Deliver each message to ``who`` twice with ``probability``."""

    at: float = attrs.field(validator=_time)
    duration: float = attrs.field(validator=_positive)
    probability: float = attrs.field(default=1.0, validator=_probability)
    who: str | None = None


@attrs.frozen
class Replay:
    """A relay re-sends ``count`` old genuine messages to ``who`` (everyone when ``None``)."""

    at: float = attrs.field(validator=_time)
    count: int = attrs.field(default=1, validator=_count)
    who: str | None = None


@attrs.frozen
class Forge:
    """``signer`` publishes a message it has no authority for.

    * ``"revocation"``: a revocation whose body names the current primary;
    * ``"claim"`` / ``"announcement"``: a claim on (or announcement of) the
      next epoch by someone who is not a standby of the workload;
    * ``"heartbeat"``: a heartbeat whose body names the current primary.

    The signer is authenticated as itself (the transport proves it), so only
    a core that trusted the body would act on it.
    """

    at: float = attrs.field(validator=_time)
    kind: ForgeKind = attrs.field(default="revocation", validator=attrs.validators.in_(FORGE_KINDS))
    signer: str = attrs.field(default="mallory", validator=_name)


@attrs.frozen
class SlowSpawn:
    """The next ``count`` container starts on ``who`` take ``extra`` seconds longer.

    A start slower than ``spawn_timeout`` is cancelled by the driver and
    reported as failed.
    """

    at: float = attrs.field(validator=_time)
    who: str = attrs.field(validator=_name)
    extra: float = attrs.field(validator=_positive)
    count: int = attrs.field(default=1, validator=_count)


@attrs.frozen
class FailSpawn:
    """The next ``count`` container starts on ``who`` fail."""

    at: float = attrs.field(validator=_time)
    who: str = attrs.field(validator=_name)
    count: int = attrs.field(default=1, validator=_count)


@attrs.frozen
class Pause:
    """Freeze ``who``'s node process for ``duration`` seconds (``SIGSTOP``, a paused VM).

    Its timers do not run and nothing it receives is handled; on thaw, what
    it had started goes on late, in its original order, as a real paused
    process's would (a heartbeat stamped before the pause reaches the relays
    after it). With ``workload="frozen"`` (a paused VM) its containers are
    frozen too and do not act; on thaw each writes to storage at once with
    the fencing token it was started with, and must be stopped within
    ``fence_grace`` if a newer primary exists. With ``workload="running"``
    (only the node process stopped) they keep running, and only what the
    runtime enforces on its own (the lease end) stops them.
    """

    at: float = attrs.field(validator=_time)
    who: str = attrs.field(default=CURRENT_PRIMARY, validator=_name)
    duration: float = attrs.field(default=600.0, validator=_positive)
    workload: WorkloadDuringPause = attrs.field(
        default="frozen", validator=attrs.validators.in_(PAUSE_WORKLOADS)
    )


@attrs.frozen
class RelayAmnesia:
    """``relay`` loses every event it stored.

    With ``duration`` it goes on losing for that long: it acknowledges each
    new event, then neither keeps it nor passes it to subscribers. Outside the
    model for publish-and-settle claims (an acknowledged claim must stay
    readable): it is how two standbys can both win one epoch over relays
    without atomic claims.
    """

    at: float = attrs.field(validator=_time)
    relay: str = attrs.field(validator=_name)
    duration: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(_positive)
    )


@attrs.frozen
class Handover:
    """``who`` hands the workload over on purpose (fence, then a signed revocation)."""

    at: float = attrs.field(validator=_time)
    who: str = attrs.field(default=CURRENT_PRIMARY, validator=_name)


Fault: TypeAlias = (
    Crash
    | Kill
    | Restart
    | Partition
    | Heal
    | SkewClock
    | StepClock
    | Drop
    | Delay
    | Duplicate
    | Replay
    | Forge
    | SlowSpawn
    | FailSpawn
    | Pause
    | RelayAmnesia
    | Handover
)
"""Any fault the simulation knows how to inject."""
