"""The node's request and status values, and the live state of a workload it runs."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import anyio
import attrs

from ..core._effects import LifecycleState
from ..core._election import SlotStatus
from ..core._errors import InvalidRequest
from ..core._lifecycle import Never, OnFailure, RestartPolicy, WorkloadLifecycle
from ..core._models import Topology, finite_field, identity_field
from ..core._records import PrimaryRecord

__all__ = ["RUNNING", "TERMINAL", "NodeStatus", "PrimaryStatus", "PrimaryWorkload", "SpawnRequest"]

SpecT = TypeVar("SpecT")

_Check = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def _request(check: _Check) -> _Check:
    """``check`` (a field rule shared with the models), failing as :class:`InvalidRequest`."""

    def run(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        try:
            check(inst, attribute, value)
        except ValueError as exc:
            raise InvalidRequest(str(exc), field=attribute.name) from None

    return run


def _instance_of(kind: type | tuple[type, ...], what: str) -> _Check:
    def check(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, kind):
            raise InvalidRequest(
                f"`{attribute.name}` must be {what}, got {value!r}", field=attribute.name
            )

    return check


#: Lifecycle states a primary record never leaves.
TERMINAL = (LifecycleState.FENCED, LifecycleState.FAILED, LifecycleState.EXPIRED)
#: Lifecycle states in which the workload's container runs.
RUNNING = (LifecycleState.LIVE, LifecycleState.SUSPECT)


@attrs.frozen
class SpawnRequest(Generic[SpecT]):
    """A consumer's request, sent alike to the primary and to every standby.

    ``topology`` names the primary and the ordered standbys in whatever
    encoding the consumer used; the node canonicalises them through its
    transport. ``created_at`` defaults to the moment each node accepts it;
    consumers should set it, so the primary and the standbys agree on when the
    reservation began (a primary that has no lease by ``created_at + silence -
    max_clock_skew`` never starts the workload, as the standbys may promote).
    ``restart`` applies when this node runs the workload as primary without
    standbys (``None``: the node's default). ``spec_id`` is the id of the
    offer the consumer paid for; a standby keeps it in its slot (and store).

    Every field is checked on construction (:class:`~standby.InvalidRequest`
    names the field), so a malformed request never reaches a node.
    """

    workload_id: str = attrs.field(validator=_request(identity_field))
    topology: Topology = attrs.field(validator=_instance_of(Topology, "a Topology"))
    spec: SpecT
    owner: str = attrs.field(validator=_request(identity_field))
    expires_at: float = attrs.field(validator=_request(finite_field))
    created_at: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(_request(finite_field))
    )
    restart: RestartPolicy | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(
            _instance_of((Never, OnFailure), "a restart policy (Never or OnFailure)")
        ),
    )
    spec_id: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(_request(identity_field))
    )

    def __attrs_post_init__(self) -> None:
        created_at = self.created_at
        if created_at is not None and not self.expires_at > created_at > 0:
            raise InvalidRequest(
                f"need expires_at > created_at > 0, got expires_at={self.expires_at}, "
                f"created_at={created_at}",
                field="created_at",
            )
        if self.expires_at <= 0:
            raise InvalidRequest(
                f"must be a Unix time (seconds) after 0, got {self.expires_at}",
                field="expires_at",
            )


@attrs.frozen
class PrimaryStatus:
    """A snapshot of one workload this node runs (or ran) as primary."""

    workload_id: str
    state: LifecycleState
    epoch: int
    fencing_token: int
    lease_end: float | None
    standbys: tuple[str, ...]
    running: bool


@attrs.frozen
class NodeStatus:
    """A snapshot of the whole node, from :meth:`StandbyNode.status`."""

    identity: str
    running: bool
    slots: tuple[SlotStatus, ...]
    primaries: tuple[PrimaryStatus, ...]
    counters: Mapping[str, int] = attrs.field(eq=False)
    #: The node's wall-clock time of the snapshot (Unix seconds; 0: not known).
    at: float = 0.0
    #: The newest heartbeat timestamp heard from each primary of a slot here.
    heartbeats: Mapping[str, float] = attrs.field(factory=dict, eq=False)

    def slot(self, workload_id: str) -> SlotStatus | None:
        """The slot of ``workload_id``, if this node holds one."""
        return next((s for s in self.slots if s.workload_id == workload_id), None)

    def primary(self, workload_id: str) -> PrimaryStatus | None:
        """The primary record of ``workload_id``, if this node runs it."""
        return next((p for p in self.primaries if p.workload_id == workload_id), None)


class PrimaryWorkload(Generic[SpecT]):
    """A workload this node runs as primary, live: its lifecycle and its container (private).

    What the store keeps of it is a :class:`~standby.core._records.PrimaryRecord`
    (:meth:`saved`); a restarted node builds a new one from that record.
    """

    __slots__ = (
        "busy",
        "created_at",
        "expires_at",
        "handle",
        "lifecycle",
        "renewed",
        "spec",
        "started",
        "starting",
        "stopped",
    )

    def __init__(
        self,
        lifecycle: WorkloadLifecycle,
        spec: SpecT | None,
        handle: Any = None,
        *,
        created_at: float,
        expires_at: float,
    ) -> None:
        self.lifecycle = lifecycle
        #: ``None`` for a workload adopted after a restart until the host re-accepts it.
        self.spec = spec
        self.handle = handle
        self.created_at = created_at
        self.expires_at = expires_at
        self.busy = 0
        self.starting: anyio.Event | None = None
        self.started = handle is not None
        self.stopped = False
        #: The lease end the runtime was last given.
        self.renewed = -math.inf

    @property
    def ended(self) -> bool:
        """Whether the lifecycle reached a terminal state."""
        return self.lifecycle.ended

    @property
    def container_up(self) -> bool:
        """Whether a container of it was started here and not stopped since."""
        return self.started and not self.stopped

    def saved(self) -> PrimaryRecord:
        """What the store keeps of this workload."""
        lifecycle = self.lifecycle
        return PrimaryRecord(
            workload_id=lifecycle.workload_id,
            epoch=lifecycle.epoch,
            fencing_token=lifecycle.fencing_token,
            standbys=lifecycle.standbys,
            created_at=self.created_at,
            expires_at=self.expires_at,
            started=self.started,
        )
