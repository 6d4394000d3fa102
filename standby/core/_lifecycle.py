"""The primary side: a sans-I/O lifecycle machine for one workload.

``WorkloadLifecycle`` tracks the primary's lease from per-relay heartbeat
acknowledgements and decides when the workload must stop. Like the election
machine it takes ``now`` (Unix seconds) on every call, returns effects and
exposes :meth:`WorkloadLifecycle.next_deadline`.

States (``LifecycleState``)::

    PROVISIONING --started--> LIVE <--quorum back-- SUSPECT
         |                     |  \\--no quorum for suspect_after--^   |
         |                     |                                      |
         +----lease ended------+-------------lease ended--------------+--> FENCED
                               |                                            (stop, then revoke)
      (no standbys) exited --> RESTARTING --started--> LIVE
                               \\--attempts exhausted--> FAILED (reclaim a stopped container)

    any state --expires_at--> EXPIRED (stop)
    any state before an end --a standby's later epoch seen--> FENCED (stop, then revoke)

Only a workload with standbys fences on quorum loss (failure mode 6); one
without standbys stays up until it expires, restarting by its policy.

A primary that sees one of its standbys claim or announce a later epoch of
its workload fences at once, whatever its lease says (failure mode 25):
defence in depth for a timing outside the safety model, or a bug.
What the machine asked of the container, and whether it is known down, is
one state (:class:`Container`) moved by the table :data:`CONTAINER_MOVES`;
the revocation a fenced workload publishes moves through its own states
(:class:`Revocation`), by the table :data:`REVOCATION_MOVES`.

A replicated workload that runs reports, once per lease, that its lease is
at risk (:class:`~standby.core.AtRisk`) before it is lost: a heartbeat
missed its write quorum, or the lease remaining fell below the host's
``at_risk`` threshold. Whether it is reported is the table
:data:`RISK_MOVES` (:class:`LeaseRisk`): once reported, it is not reported
again until a heartbeat renews the lease above the threshold.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Literal

import attrs

from ._effects import (
    AtRisk,
    CheckContainer,
    LifecycleEffect,
    LifecycleState,
    PublishRevocation,
    ReclaimContainer,
    StartContainer,
    StateChanged,
    StopContainer,
)
from ._errors import StandbyError
from ._models import LeaseRevocation
from ._timing import Timing
from ._transitions import IllegalTransition

__all__ = ["Never", "OnFailure", "RestartPolicy", "WorkloadLifecycle"]

ContainerStatus = Literal["running", "stopped", "absent"]

# Tuples, not sets: a membership test by identity skips the enum's Python-level hash.
_ACTIVE = (LifecycleState.LIVE, LifecycleState.SUSPECT)
_TERMINAL = (LifecycleState.FENCED, LifecycleState.FAILED, LifecycleState.EXPIRED)

_S = LifecycleState
#: Every legal move of a workload's state: from a state to those it may
#: enter next. ``RESTARTING`` and ``FAILED`` are for a workload without
#: standbys, ``FENCED`` for one with; the reservation's expiry ends any state.
#: The machine refuses any other move (:class:`IllegalTransition`).
LIFECYCLE_MOVES: Mapping[LifecycleState, frozenset[LifecycleState]] = MappingProxyType(
    {
        _S.PROVISIONING: frozenset({_S.LIVE, _S.FENCED, _S.RESTARTING, _S.FAILED, _S.EXPIRED}),
        _S.LIVE: frozenset({_S.SUSPECT, _S.FENCED, _S.RESTARTING, _S.FAILED, _S.EXPIRED}),
        _S.SUSPECT: frozenset({_S.LIVE, _S.FENCED, _S.RESTARTING, _S.FAILED, _S.EXPIRED}),
        _S.RESTARTING: frozenset({_S.LIVE, _S.FAILED, _S.EXPIRED}),
        _S.FENCED: frozenset({_S.EXPIRED}),
        _S.FAILED: frozenset({_S.EXPIRED}),
        _S.EXPIRED: frozenset(),
    }
)


class Container(enum.Enum):
    """What this machine asked of the workload's container, and whether it is known down.

    A container can start without being asked (a restart of the host, a
    race); such a start is stopped at once, and the ``UNASKED`` states keep
    that apart from the container this machine started.
    """

    NOT_ASKED = "not asked"
    """No start asked for yet."""
    ASKED = "asked"
    """A start was asked for: the container is starting or running."""
    DOWN = "down"
    """Asked to start, then failed or exited without being asked to stop."""
    STOPPING = "stopping"
    """A stop was asked for; not yet known done."""
    STOPPED = "stopped"
    """A stop was asked for and the container is known down."""
    STOPPING_UNASKED = "stopping unasked"
    """No start asked for, but a stop was (a start nobody asked for, or a fence)."""
    STOPPED_UNASKED = "stopped unasked"
    """No start asked for; a stop was, and the container is known down."""
    DOWN_UNASKED = "down unasked"
    """No start or stop asked for, and the container is reported down."""


class ContainerEvent(enum.Enum):
    """What happens to the container, as this machine sees it."""

    ASK_START = "a start is asked for"
    ASK_STOP = "a stop is asked for"
    DOWN = "it is known not to run (stopped, exited, failed to start, or never started)"
    UP = "the start that was asked for succeeded"


_C = Container
_CE = ContainerEvent

#: Every move of the container's state: ``CONTAINER_MOVES[state][event]`` is
#: the next state. An event a state does not list changes nothing.
CONTAINER_MOVES: Mapping[Container, Mapping[ContainerEvent, Container]] = MappingProxyType(
    {
        _C.NOT_ASKED: MappingProxyType(
            {_CE.ASK_START: _C.ASKED, _CE.ASK_STOP: _C.STOPPING_UNASKED, _CE.DOWN: _C.DOWN_UNASKED}
        ),
        _C.ASKED: MappingProxyType({_CE.ASK_STOP: _C.STOPPING, _CE.DOWN: _C.DOWN}),
        _C.DOWN: MappingProxyType({_CE.ASK_STOP: _C.STOPPED, _CE.UP: _C.ASKED}),
        _C.STOPPING: MappingProxyType({_CE.DOWN: _C.STOPPED}),
        _C.STOPPED: MappingProxyType({_CE.UP: _C.STOPPING}),
        _C.STOPPING_UNASKED: MappingProxyType(
            {_CE.ASK_START: _C.STOPPING, _CE.DOWN: _C.STOPPED_UNASKED}
        ),
        _C.STOPPED_UNASKED: MappingProxyType({_CE.ASK_START: _C.STOPPED}),
        _C.DOWN_UNASKED: MappingProxyType(
            {_CE.ASK_START: _C.DOWN, _CE.ASK_STOP: _C.STOPPED_UNASKED}
        ),
    }
)
#: The container states in which a start was asked for.
_START_ASKED = (_C.ASKED, _C.DOWN, _C.STOPPING, _C.STOPPED)
#: The container states in which it is known not to run.
_KNOWN_DOWN = frozenset({_C.DOWN, _C.STOPPED, _C.STOPPED_UNASKED, _C.DOWN_UNASKED})


class Revocation(enum.Enum):
    """Where the lease revocation of a fenced replicated workload stands."""

    NOT_SENT = "not sent"
    """No revocation yet (the workload has not fenced, or its container still runs)."""
    SENT = "sent"
    """Published; waiting for the relays' acknowledgements."""
    RETRYING = "retrying"
    """Fewer than a write quorum acknowledged: publish it again at the retry time."""
    ACKNOWLEDGED = "acknowledged"
    """A write quorum acknowledged it: final."""
    ABANDONED = "abandoned"
    """The reservation expired before a write quorum acknowledged it: final, no retries."""


class RevocationEvent(enum.Enum):
    """What happens to a revocation."""

    PUBLISH = "the container is known stopped after the fence: publish"
    QUORUM = "a write quorum acknowledged it"
    SHORT = "fewer than a write quorum acknowledged it"
    RETRY_DUE = "its retry time came (the workload is fenced)"
    EXPIRED = "the reservation expired: no more retries"


#: Every move of a revocation: ``REVOCATION_MOVES[state][event]`` is the next
#: state. An event a state does not list changes nothing.
REVOCATION_MOVES: Mapping[Revocation, Mapping[RevocationEvent, Revocation]] = MappingProxyType(
    {
        Revocation.NOT_SENT: MappingProxyType({RevocationEvent.PUBLISH: Revocation.SENT}),
        Revocation.SENT: MappingProxyType(
            {
                RevocationEvent.QUORUM: Revocation.ACKNOWLEDGED,
                RevocationEvent.SHORT: Revocation.RETRYING,
                RevocationEvent.EXPIRED: Revocation.ABANDONED,
            }
        ),
        Revocation.RETRYING: MappingProxyType(
            {
                RevocationEvent.QUORUM: Revocation.ACKNOWLEDGED,
                RevocationEvent.SHORT: Revocation.RETRYING,
                RevocationEvent.RETRY_DUE: Revocation.SENT,
                RevocationEvent.EXPIRED: Revocation.ABANDONED,
            }
        ),
        Revocation.ACKNOWLEDGED: MappingProxyType({}),
        # A publish still in flight when the reservation expired may report a
        # shortfall afterwards: nothing is retried once the reservation is over.
        Revocation.ABANDONED: MappingProxyType({}),
    }
)


class LeaseRisk(enum.Enum):
    """Whether the lease of a running replicated workload was reported at risk."""

    SAFE = "safe"
    """Renewed as expected (or not reported yet)."""
    AT_RISK = "at risk"
    """Reported at risk; not reported again until a heartbeat renews the lease."""


class RiskEvent(enum.Enum):
    """What happens to a running replicated workload's lease."""

    QUORUM_MISSED = "a heartbeat did not reach its write quorum"
    RUNNING_LOW = "the lease remaining fell below the host's threshold"
    RENEWED = "a heartbeat reached its write quorum, leaving the lease above the threshold"


#: Every move of the lease's risk: ``RISK_MOVES[state][event]`` is the next
#: state. Entering ``AT_RISK`` reports :class:`~standby.core.AtRisk`; an event
#: a state does not list changes nothing (so it is reported once per lease).
RISK_MOVES: Mapping[LeaseRisk, Mapping[RiskEvent, LeaseRisk]] = MappingProxyType(
    {
        LeaseRisk.SAFE: MappingProxyType(
            {
                RiskEvent.QUORUM_MISSED: LeaseRisk.AT_RISK,
                RiskEvent.RUNNING_LOW: LeaseRisk.AT_RISK,
            }
        ),
        LeaseRisk.AT_RISK: MappingProxyType({RiskEvent.RENEWED: LeaseRisk.SAFE}),
    }
)


@attrs.frozen
class Never:
    """Do not restart a container that stopped unexpectedly: the workload fails."""


@attrs.frozen
class OnFailure:
    """Restart up to ``max_attempts`` times, waiting ``backoff * 2**(n-1)`` before try ``n``."""

    max_attempts: int = attrs.field(default=3)
    backoff: float = attrs.field(default=5.0)

    def __attrs_post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if not (self.backoff >= 0 and math.isfinite(self.backoff)):
            raise ValueError(f"backoff must be a finite number >= 0, got {self.backoff}")


RestartPolicy = Never | OnFailure


def check_at_risk(at_risk: float | None, timing: Timing) -> None:
    """Refuse an ``at_risk`` threshold a healthy lease would cross.

    It must be above 0 and below ``lease - heartbeat_interval``: the lease
    remaining just before a heartbeat that arrives on time. A higher
    threshold would report every lease at risk at every interval.
    """
    if at_risk is None:
        return
    most = timing.lease - timing.heartbeat_interval
    if isinstance(at_risk, bool) or not (isinstance(at_risk, (int, float)) and 0 < at_risk < most):
        raise ValueError(
            f"at_risk must be a number of seconds of lease remaining above 0 and below "
            f"lease - heartbeat_interval ({most:g} s, what is left just before a heartbeat "
            f"on time), got {at_risk!r}"
        )


class WorkloadLifecycle:
    """Lifecycle of one workload on its primary.

    Build it with the constructor for a workload this provider was asked to
    run as primary (then call :meth:`start`), or with :meth:`promoted` for a
    workload a standby just took over (its container already runs).

    ``standbys`` are the workload's standbys in order; an empty tuple means
    the workload is not replicated: it never fences on quorum loss and
    restarts by ``restart`` instead.

    ``created_at`` is the reservation time the standbys' slots carry (pass
    the same value). A replicated workload that has not started by
    ``created_at + silence - max_clock_skew`` gives up instead of starting
    late: by then a standby may already have found it silent. When omitted,
    the time of :meth:`start` is used.

    ``at_risk`` (seconds, ``0 < at_risk < lease - heartbeat_interval``) is the lease
    remaining below which a running replicated workload reports
    :class:`~standby.core.AtRisk`; ``None`` reports only a heartbeat that
    missed its write quorum (:meth:`heartbeat_published`).
    """

    def __init__(
        self,
        *,
        workload_id: str,
        me: str,
        timing: Timing,
        standbys: Sequence[str] = (),
        epoch: int = 0,
        fencing_token: int = 0,
        expires_at: float = math.inf,
        restart: RestartPolicy = Never(),
        created_at: float | None = None,
        at_risk: float | None = None,
    ) -> None:
        if not workload_id:
            raise ValueError("workload_id must be non-empty")
        check_at_risk(at_risk, timing)
        self.at_risk = at_risk
        #: Whether the lease was reported at risk (:data:`RISK_MOVES`).
        self.risk = LeaseRisk.SAFE
        self.workload_id = workload_id
        self.me = me
        self.timing = timing
        self.standbys = tuple(standbys)
        # Read on every step: kept, not worked out each time (see ``replicated``).
        self._replicated = bool(self.standbys)
        self.epoch = epoch
        self.fencing_token = fencing_token
        self.expires_at = expires_at
        self.restart = restart
        self.state = LifecycleState.PROVISIONING
        self.reason = "created"
        self._acks: dict[str, float] = {}
        #: ``(timing, quorum_timestamp(), lease_end())`` as last worked out: read
        #: on every deadline, dropped when ``_acks``, ``_lease_floor`` or
        #: ``_lease_cap`` changes (and not used once ``timing`` is another).
        self._lease_known: tuple[Timing, float | None, float | None] | None = None
        #: Acknowledgements ignored because their heartbeat was stamped after the lease end.
        self.late_acks = 0
        #: The later epoch, and the standby that claimed or announced it, that made
        #: this primary step down (``None``: it did not).
        self.superseded: tuple[int, str] | None = None
        #: Claims and announcements ignored: not a later epoch, or not by a standby.
        self.ignored_takeovers = 0
        self._lease_floor = -math.inf
        #: No lease ends after this (on the current wall clock): set when the
        #: clock steps back (failure mode 31).
        self._lease_cap = math.inf
        self._live_since = -math.inf
        #: What was asked of the container, and whether it is known down
        #: (:data:`CONTAINER_MOVES`).
        self._container = Container.NOT_ASKED
        self._restart_at: float | None = None
        self._restarts = 0
        #: Where the revocation stands (:data:`REVOCATION_MOVES`), the message
        #: once built, and when to publish it again (in ``RETRYING`` only).
        self._revocation_state = Revocation.NOT_SENT
        self._revocation: LeaseRevocation | None = None
        self._revocation_due: float | None = None
        self._reclaimed = False
        self._state_uri: str | None = None
        self._created_at = created_at
        self._queued: list[LifecycleEffect] = []
        self.history: list[tuple[float, LifecycleState]] = []

    @classmethod
    def promoted(
        cls,
        *,
        workload_id: str,
        me: str,
        timing: Timing,
        now: float,
        standbys: Sequence[str],
        epoch: int,
        fencing_token: int,
        lease_from: float,
        expires_at: float = math.inf,
        restart: RestartPolicy = Never(),
        at_risk: float | None = None,
    ) -> WorkloadLifecycle:
        """A workload this provider just took over; its container is running.

        The lease starts at ``lease_from`` (the claim's timestamp, which every
        follower's silence baseline is at least), so it never outlives what
        the standbys allow.
        """
        machine = cls(
            workload_id=workload_id,
            me=me,
            timing=timing,
            standbys=standbys,
            epoch=epoch,
            fencing_token=fencing_token,
            expires_at=expires_at,
            restart=restart,
            at_risk=at_risk,
        )
        machine._lease_floor = lease_from
        machine._lease_known = None
        machine._container_moves(ContainerEvent.ASK_START)
        machine._created_at = lease_from
        # Effects of the first step (a stop, if the lease is already over) wait
        # for the first call; next_deadline() asks for it at once.
        machine._become(now, LifecycleState.LIVE, "promoted", [])
        machine._advance(now, machine._queued)
        return machine

    # ------------------------------------------------------------------
    # Queries
    # ------------------------------------------------------------------

    @property
    def replicated(self) -> bool:
        """Whether the workload has standbys (and so fences on quorum loss)."""
        return self._replicated

    @property
    def revocation_state(self) -> Revocation:
        """Where a fenced replicated workload's revocation stands (:data:`REVOCATION_MOVES`)."""
        return self._revocation_state

    def quorum_timestamp(self) -> float | None:
        """Newest heartbeat timestamp that a write quorum of relays has acknowledged.

        Each relay counts with its own newest acknowledgement (a sliding window
        per relay), so the answer never depends on which batch arrived last.
        """
        known = self._lease_known
        if known is None or known[0] is not self.timing:
            known = self._work_out_lease()
        return known[1]

    def lease_end(self) -> float | None:
        """When the lease runs out, or ``None`` before it was ever granted."""
        known = self._lease_known
        if known is None or known[0] is not self.timing:
            known = self._work_out_lease()
        return known[2]

    def _work_out_lease(self) -> tuple[Timing, float | None, float | None]:
        """Work out :meth:`quorum_timestamp` and :meth:`lease_end`, and keep them."""
        timing = self.timing
        quorum = timing.write_quorum
        stamp = None
        if len(self._acks) >= quorum:
            # The quorum-th newest; a sort of a handful of relays beats heapq.nlargest.
            stamp = sorted(self._acks.values(), reverse=True)[quorum - 1]
        # max() and min() of two spelled out as the comparisons they make (the
        # builtins cost several times as much).
        floor = self._lease_floor
        base = floor if stamp is None or floor > stamp else stamp  # max(stamp, floor)
        end = None
        if base != -math.inf:
            end = base + timing.lease
            cap = self._lease_cap
            end = cap if cap < end else end  # min(end, cap)
        self._lease_known = known = (timing, stamp, end)
        return known

    def holds_lease(self, now: float) -> bool:
        """Whether the lease is valid at ``now``."""
        end = self.lease_end()
        return end is not None and now < end

    @property
    def ended(self) -> bool:
        """Whether the lifecycle reached a terminal state (FENCED, FAILED, EXPIRED)."""
        return self.state in _TERMINAL

    def runtime_bound(self) -> float:
        """The lease end a runtime enforces for this workload's container.

        A replicated workload runs under its lease (``-inf`` before one was
        granted); one without standbys does not fence on quorum loss
        (failure mode 6) and is bounded by its reservation's expiry only.
        """
        if not self._replicated:
            return self.expires_at
        end = self.lease_end()
        return -math.inf if end is None else end

    def renews(self, now: float) -> bool:
        """Whether the runtime's lease is renewed to :meth:`runtime_bound` after a heartbeat.

        Only a container that runs (LIVE or SUSPECT) is renewed, and a
        replicated one only while its lease holds at ``now``.
        """
        return self.state in _ACTIVE and (not self._replicated or self.holds_lease(now))

    def next_deadline(self) -> float | None:
        """The earliest instant at which :meth:`tick` has work to do."""
        # The earliest of the candidates below, as min() would pick it, without
        # building a list of them: each replaces ``best`` only when earlier (the
        # comparison spelled out, as in _work_out_lease). Effects waiting for the
        # first call make it due at once.
        best = -math.inf if self._queued else math.inf
        state = self.state
        if state is LifecycleState.PROVISIONING and self._container not in _START_ASKED:
            give_up = self._start_deadline()
            if give_up is not None:
                best = give_up if give_up < best else best
        if state not in _TERMINAL:
            expires_at = self.expires_at
            best = expires_at if expires_at < best else best
            if self._replicated and self._container in _START_ASKED:
                end = self.lease_end()
                if end is not None:
                    best = end if end < best else best
        if state is LifecycleState.LIVE:
            suspect_at = self._suspect_at()
            best = suspect_at if suspect_at < best else best
        low = self._running_low_at()
        if low is not None:
            best = low if low < best else best
        restart_at = self._restart_at
        if state is LifecycleState.RESTARTING and restart_at is not None:
            best = restart_at if restart_at < best else best
        if self._revocation_state is Revocation.RETRYING:
            due = self._revocation_due
            assert due is not None
            best = due if due < best else best
        if best == -math.inf:
            return self.history[-1][0] if self.history else -math.inf
        return None if best == math.inf else best

    # ------------------------------------------------------------------
    # Inputs
    # ------------------------------------------------------------------

    def start(self, now: float) -> list[LifecycleEffect]:
        """Begin provisioning. A replicated workload starts only once it holds a lease."""
        effects: list[LifecycleEffect] = []
        self._advance(now, effects)
        return effects

    def tick(self, now: float) -> list[LifecycleEffect]:
        """Handle every deadline due at ``now``."""
        effects: list[LifecycleEffect] = []
        self._advance(now, effects)
        return effects

    def heartbeat_acked(self, now: float, relay: str, timestamp: float) -> list[LifecycleEffect]:
        """A relay acknowledged our heartbeat stamped ``timestamp``.

        The machine first catches up with ``now`` (a lease that ran out while
        the process was paused fences before anything else happens), and an
        acknowledgement of a heartbeat stamped at or after the lease end never
        renews a replicated workload's lease (failure mode 17): by then a
        standby may already have found the primary silent.
        """
        effects: list[LifecycleEffect] = []
        self._advance(now, effects)
        if self._record_ack(now, relay, timestamp):
            # Only a counted acknowledgement can move the machine on again at ``now``.
            self._advance(now, effects)
        return effects

    def heartbeat_published(
        self, now: float, timestamp: float, acknowledged: Sequence[str]
    ) -> list[LifecycleEffect]:
        """Our heartbeat stamped ``timestamp`` was published; ``acknowledged`` relays stored it.

        Each acknowledgement counts as in :meth:`heartbeat_acked`. A running
        replicated workload whose lease this heartbeat did not renew (fewer
        than a write quorum acknowledged it) reports its lease at risk
        (:class:`~standby.core.AtRisk`, once per lease).
        """
        effects: list[LifecycleEffect] = []
        self._advance(now, effects)
        # Caught up with ``now``, the machine can only be moved on by what the
        # acknowledgements change: they move the quorum timestamp, and with it
        # the lease end and the time to suspect, later, never earlier. What that
        # does at ``now`` (ask a replicated workload's container to start, bring
        # a SUSPECT workload back to LIVE) comes out the same whether the
        # machine catches up after each acknowledgement or once after them all.
        relays = set(acknowledged)
        for relay in sorted(relays):
            self._record_ack(now, relay, timestamp)
        self._advance(now, effects)
        if not self._lease_watched():
            return effects
        stamp = self.quorum_timestamp()
        if stamp is None or stamp < timestamp:
            got, needed = len(relays), self.timing.write_quorum
            reason = f"a heartbeat stored by {got} relays, below the write quorum of {needed}"
            self._risk_moves(now, RiskEvent.QUORUM_MISSED, reason, effects)
        else:
            end = self.lease_end()
            if end is not None and (self.at_risk is None or end - now > self.at_risk):
                self._risk_moves(now, RiskEvent.RENEWED, "renewed", effects)
        return effects

    def clock_stepped_back(self, now: float, seconds: float) -> list[LifecycleEffect]:
        """The wall clock fell ``seconds`` behind the monotonic clock (failure mode 31).

        Read on the stepped clock, the lease held so far would end
        ``seconds`` later in true time than it was granted for; from now on
        it ends ``seconds`` earlier on this clock, that is when it would
        have ended without the step, and no later heartbeat moves it past
        that: the standbys measured the silence on their own clocks, which
        did not step. A primary whose clock stepped back therefore gives up
        each replicated workload when the lease it held runs out.
        """
        effects: list[LifecycleEffect] = []
        end = self.lease_end()
        if seconds > 0 and end is not None:
            self._lease_cap = min(self._lease_cap, end - seconds)
            self._lease_known = None
        self._advance(now, effects)
        return effects

    def container_started(self, now: float) -> list[LifecycleEffect]:
        """The runtime reports the container (re)started."""
        effects: list[LifecycleEffect] = []
        self._advance(now, effects)
        if self._container not in _START_ASKED:
            # Nobody asked for this start (a replicated workload waits for its lease).
            self._stop(now, "started without a lease", effects)
        elif self.state in (LifecycleState.PROVISIONING, LifecycleState.RESTARTING):
            self._container_moves(ContainerEvent.UP)
            self._become(now, LifecycleState.LIVE, "container started", effects)
            self._advance(now, effects)
        elif self.state in _TERMINAL:
            # A start that raced the stop: stop it again (stop is idempotent).
            self._stop(now, "started after the workload ended", effects)
        return effects

    def container_failed(self, now: float, error: str = "") -> list[LifecycleEffect]:
        """A requested start failed."""
        effects: list[LifecycleEffect] = []
        self._advance(now, effects)
        if self.state in (LifecycleState.PROVISIONING, LifecycleState.RESTARTING):
            self._container_moves(ContainerEvent.DOWN)
            self._on_container_down(
                now, f"start failed: {error}" if error else "start failed", effects
            )
        return effects

    def container_exited(self, now: float, reason: str = "exited") -> list[LifecycleEffect]:
        """The container stopped without being asked to."""
        effects: list[LifecycleEffect] = []
        self._advance(now, effects)
        self._container_moves(ContainerEvent.DOWN)
        if self.state in _ACTIVE:
            self._on_container_down(now, f"container {reason}", effects)
        elif self.state is LifecycleState.FENCED:
            self._maybe_revoke(now, effects)
        return effects

    def container_stopped(self, now: float) -> list[LifecycleEffect]:
        """A :class:`~standby.core.StopContainer` completed: the container no longer runs."""
        effects: list[LifecycleEffect] = []
        self._advance(now, effects)
        self._container_moves(ContainerEvent.DOWN)
        if self.state is LifecycleState.FENCED:
            self._maybe_revoke(now, effects)
        return effects

    def container_status(self, now: float, status: ContainerStatus) -> list[LifecycleEffect]:
        """Answer to a :class:`~standby.core.CheckContainer`.

        A failed workload reclaims its container only when it is stopped, never
        while it runs.
        """
        effects: list[LifecycleEffect] = []
        self._advance(now, effects)
        if self.state is LifecycleState.FAILED and status == "stopped" and not self._reclaimed:
            self._reclaimed = True
            effects.append(ReclaimContainer(self.workload_id))
        return effects

    def revocation_published(
        self, now: float, acknowledged: Sequence[str]
    ) -> list[LifecycleEffect]:
        """Report which relays acknowledged the revocation; it is retried below a quorum."""
        effects: list[LifecycleEffect] = []
        if len(set(acknowledged)) >= self.timing.write_quorum:
            self._revocation_moves(RevocationEvent.QUORUM)
        elif self._revocation_moves(RevocationEvent.SHORT):
            self._revocation_due = now + self.timing.heartbeat_interval
        self._advance(now, effects)
        return effects

    def takeover_seen(self, now: float, epoch: int, by: str) -> list[LifecycleEffect]:
        """Standby ``by`` claimed or announced ``epoch`` of this workload (signed by ``by``).

        A later epoch than this primary's, from one of its standbys, means
        the workload is being (or was) taken over: the primary fences at
        once, whatever its lease says (failure mode 25). Under a safe timing
        the lease has ended before any standby may claim, so this changes
        nothing there; outside it (a lease longer than the silence, a
        partition that heals, a bug) it ends the overlap as soon as the
        primary hears of the takeover. Like every fence it stops the
        container and then publishes the revocation: a claim can still be
        withdrawn (its spawn failed) and this provider's heartbeat goes on
        for its other workloads, so the remaining standbys need the
        revocation to take over. Anything else (an epoch not later than
        this one, a signer that is not one of the standbys) is ignored and
        counted in :attr:`ignored_takeovers`; so is nothing once the
        workload has ended.
        """
        effects: list[LifecycleEffect] = []
        self._advance(now, effects)
        if self.state in _TERMINAL:
            return effects
        if by not in self.standbys or epoch <= self.epoch:
            self.ignored_takeovers += 1
            return effects
        self.superseded = (epoch, by)
        self._fence(now, f"{by} claimed or announced the later epoch {epoch}", effects)
        return effects

    def stop(self, now: float, reason: str = "stopped by the host") -> list[LifecycleEffect]:
        """The host stops the workload for good (a provider that shuts down).

        The workload fences, with or without standbys: its container is
        stopped, and a replicated workload's revocation follows so a standby
        takes over at once. A workload that already ended changes nothing.
        """
        effects: list[LifecycleEffect] = []
        self._advance(now, effects)
        if self.state not in _TERMINAL:
            self._fence(now, reason, effects)
        return effects

    def handover(
        self, now: float, *, state_uri: str | None = None, reason: str = "handover"
    ) -> list[LifecycleEffect]:
        """Planned switchover: fence now, then revoke so a standby takes over at once.

        Raises :class:`StandbyError` when the workload has no standbys or has
        already ended.
        """
        effects: list[LifecycleEffect] = []
        self._advance(now, effects)
        if not self._replicated:
            raise StandbyError(f"workload {self.workload_id!r} has no standbys to hand over to")
        if self.state in _TERMINAL:
            raise StandbyError(f"workload {self.workload_id!r} is already {self.state.value}")
        self._state_uri = state_uri
        self._fence(now, reason, effects)
        return effects

    # ------------------------------------------------------------------
    # Internals
    # ------------------------------------------------------------------

    def _record_ack(self, now: float, relay: str, timestamp: float) -> bool:
        """Count ``relay``'s acknowledgement of the heartbeat stamped ``timestamp``.

        One stamped at or after the lease end of a replicated workload is late
        and only counted in :attr:`late_acks`. Whether it renewed anything
        (a newer acknowledgement of that relay, stamped no later than ``now``).
        """
        end = self.lease_end()
        if self._replicated and end is not None and timestamp >= end:
            self.late_acks += 1
            return False
        if timestamp <= now and timestamp > self._acks.get(relay, -math.inf):
            self._acks[relay] = timestamp
            self._lease_known = None
            return True
        return False

    def _lease_watched(self) -> bool:
        """Whether the lease is one whose risk is reported: a replicated workload that runs."""
        return (
            self._replicated
            and self.state in _ACTIVE
            and self._container in _START_ASKED
            and self.lease_end() is not None
        )

    def _running_low_at(self) -> float | None:
        """When the lease remaining falls below ``at_risk`` (``None``: not watched now)."""
        if self.at_risk is None or self.risk is not LeaseRisk.SAFE or not self._lease_watched():
            return None
        end = self.lease_end()
        assert end is not None
        return end - self.at_risk

    def _risk_moves(
        self, now: float, event: RiskEvent, reason: str, effects: list[LifecycleEffect]
    ) -> None:
        """Move the lease's risk as :data:`RISK_MOVES` says; report entering ``AT_RISK``."""
        new = RISK_MOVES[self.risk].get(event)
        if new is None:
            return
        self.risk = new
        if new is LeaseRisk.AT_RISK:
            end = self.lease_end()
            assert end is not None
            effects.append(AtRisk(self.workload_id, self.epoch, end, end - now, reason))

    def _start_deadline(self) -> float | None:
        """Last instant a replicated workload may still start (see the class doc)."""
        if not self._replicated or self._created_at is None:
            return None
        return self._created_at + self.timing.silence - self.timing.max_clock_skew

    def _suspect_at(self) -> float:
        stamp = self.quorum_timestamp()
        floor, live = self._lease_floor, self._live_since
        base = live if live > floor else floor  # max(floor, live), as in lease_end
        if stamp is not None and stamp > base:
            base = stamp
        return base + self.timing.suspect_after

    def _become(
        self, now: float, state: LifecycleState, reason: str, effects: list[LifecycleEffect]
    ) -> None:
        if state is self.state:
            return
        if state not in LIFECYCLE_MOVES[self.state]:
            raise IllegalTransition(
                f"workload {self.workload_id!r}: no move from {self.state.name} to "
                f"{state.name} in LIFECYCLE_MOVES (a bug in the lifecycle machine)"
            )
        if state is LifecycleState.LIVE and self._live_since == -math.inf:
            self._live_since = now
        old = self.state
        self.state = state
        self.reason = reason
        self.history.append((now, state))
        effects.append(StateChanged(self.workload_id, old, state, reason))

    def _stop(self, now: float, reason: str, effects: list[LifecycleEffect]) -> None:
        self._container_moves(ContainerEvent.ASK_STOP)
        effects.append(StopContainer(self.workload_id, reason))

    def _fence(self, now: float, reason: str, effects: list[LifecycleEffect]) -> None:
        self._become(now, LifecycleState.FENCED, reason, effects)
        self._restart_at = None
        # Stop first, always (stopping a container that never started is a no-op).
        self._stop(now, reason, effects)
        if self._container not in _START_ASKED:
            self._container_moves(ContainerEvent.DOWN)
        self._maybe_revoke(now, effects)

    def _container_moves(self, event: ContainerEvent) -> None:
        """Move the container's state as :data:`CONTAINER_MOVES` says."""
        self._container = CONTAINER_MOVES[self._container].get(event, self._container)

    def _revocation_moves(self, event: RevocationEvent) -> bool:
        """Move the revocation as :data:`REVOCATION_MOVES` says; whether ``event`` applied."""
        new = REVOCATION_MOVES[self._revocation_state].get(event)
        if new is None:
            return False
        self._revocation_state = new
        if new is not Revocation.RETRYING:
            self._revocation_due = None
        return True

    def _maybe_revoke(self, now: float, effects: list[LifecycleEffect]) -> None:
        if (
            self._revocation_state is not Revocation.NOT_SENT
            or self._container not in _KNOWN_DOWN
            or not self._replicated
        ):
            return
        self._revocation_moves(RevocationEvent.PUBLISH)
        self._revocation = LeaseRevocation(
            workload_id=self.workload_id,
            primary=self.me,
            standbys=self.standbys,
            reason=self.reason,
            revoked_at=now,
            state_uri=self._state_uri,
            epoch=self.epoch,
        )
        effects.append(PublishRevocation(self._revocation))

    def _on_container_down(self, now: float, reason: str, effects: list[LifecycleEffect]) -> None:
        if self._replicated:
            # A standby is ready: hand the workload over instead of restarting.
            self._fence(now, reason, effects)
            return
        policy = self.restart
        if isinstance(policy, OnFailure) and self._restarts < policy.max_attempts:
            self._restarts += 1
            self._restart_at = now + policy.backoff * 2 ** (self._restarts - 1)
            self._become(now, LifecycleState.RESTARTING, reason, effects)
            return
        self._become(now, LifecycleState.FAILED, reason, effects)
        effects.append(CheckContainer(self.workload_id))

    def _advance(self, now: float, effects: list[LifecycleEffect]) -> None:
        if self._queued and effects is not self._queued:
            effects.extend(self._queued)
            self._queued.clear()
        if self._created_at is None:
            self._created_at = now
        state = self.state
        if state is not LifecycleState.EXPIRED and now >= self.expires_at:
            self._become(now, LifecycleState.EXPIRED, "reservation expired", effects)
            self._revocation_moves(RevocationEvent.EXPIRED)
            if self._container is Container.ASKED:
                self._stop(now, "reservation expired", effects)
            return
        if state in _TERMINAL:
            if (
                state is LifecycleState.FENCED
                and self._revocation_state is Revocation.RETRYING
                and self._revocation_due is not None
                and now >= self._revocation_due
            ):
                self._revocation_moves(RevocationEvent.RETRY_DUE)
                assert self._revocation is not None
                effects.append(PublishRevocation(attrs.evolve(self._revocation)))
            return
        if self._replicated:
            end = self.lease_end()
            if self._container in _START_ASKED and end is not None and now >= end:
                self._fence(now, "lease expired", effects)
                return
            if self._container not in _START_ASKED:
                give_up = self._start_deadline()
                if give_up is not None and now >= give_up:
                    # Too late to start: a standby may have found us silent.
                    self._fence(now, "no lease before the standbys' grace ended", effects)
                    return
                if end is not None and now < end:
                    self._container_moves(ContainerEvent.ASK_START)
                    effects.append(StartContainer(self.workload_id, self.fencing_token, 1))
        elif self._container not in _START_ASKED:
            self._container_moves(ContainerEvent.ASK_START)
            effects.append(StartContainer(self.workload_id, self.fencing_token, 1))
        if state is LifecycleState.RESTARTING:
            if self._restart_at is not None and now >= self._restart_at:
                self._restart_at = None
                effects.append(
                    StartContainer(self.workload_id, self.fencing_token, self._restarts + 1)
                )
            return
        low = self._running_low_at()
        if low is not None and now >= low:
            self._risk_moves(
                now, RiskEvent.RUNNING_LOW, f"lease remaining below {self.at_risk:g} s", effects
            )
        if state in _ACTIVE:
            if now >= self._suspect_at():
                self._become(now, LifecycleState.SUSPECT, "no write quorum", effects)
            else:
                self._become(now, LifecycleState.LIVE, "write quorum is back", effects)
