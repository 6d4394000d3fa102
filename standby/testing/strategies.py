"""Hypothesis strategies for ``standby``'s models, timings and fault schedules.

Every function returns a :class:`hypothesis.strategies.SearchStrategy` of a
``standby`` type. The values shrink towards small, readable examples (short
identities, the default timing, few faults), and every model has a ``repr``
that reads like the code that builds it, so a failing property test prints a
case you can paste back into a test.

Requires ``hypothesis`` (the ``testing`` extra).
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any, TypeVar

import attrs

try:
    from hypothesis import assume
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "standby.testing.strategies needs hypothesis: pip install 'standby[testing]'"
    ) from exc

from ..core._models import (
    Envelope,
    Heartbeat,
    LeaseRevocation,
    Message,
    PromotionAnnouncement,
    PromotionClaim,
    StandbySlot,
    Topology,
    fencing_token,
)
from ..core._timing import Timing
from ._timing_draws import drawn_timing
from .simulation._faults import (
    CURRENT_PRIMARY,
    FORGE_KINDS,
    PAUSE_WORKLOADS,
    REACCEPT_MODES,
    Crash,
    Delay,
    Drop,
    Duplicate,
    FailSpawn,
    Fault,
    Forge,
    Handover,
    Heal,
    Kill,
    Partition,
    Pause,
    RelayAmnesia,
    Replay,
    Restart,
    SkewClock,
    SlowSpawn,
)
from .simulation._names import STRANGER, provider_names, relay_names

__all__ = [
    "announcements",
    "claims",
    "envelopes",
    "fault_schedules",
    "faults",
    "heartbeats",
    "identities",
    "message_streams",
    "messages",
    "revocations",
    "slots",
    "timestamps",
    "timings",
    "topologies",
    "unsafe_timings",
    "workload_ids",
]

T = TypeVar("T")

_HEX = "0123456789abcdef"
_NAME = string.ascii_lowercase + string.digits + "-"


def identities() -> st.SearchStrategy[str]:
    """Canonical provider identities: short names or 64-digit hex keys."""
    names = st.text(alphabet=_NAME, min_size=1, max_size=12).filter(lambda s: s[0] != "-")
    keys = st.text(alphabet=_HEX, min_size=64, max_size=64)
    return st.one_of(names, keys)


def workload_ids() -> st.SearchStrategy[str]:
    """Workload identifiers."""
    return st.text(alphabet=_NAME, min_size=1, max_size=16).filter(lambda s: s[0] != "-")


def timestamps(
    *, min_value: float = 1_600_000_000.0, max_value: float = 2_000_000_000.0
) -> st.SearchStrategy[float]:
    """Wall-clock instants (Unix seconds), finite and positive."""
    return st.floats(
        min_value=min_value, max_value=max_value, allow_nan=False, allow_subnormal=False
    )


def topologies(*, min_standbys: int = 0, max_standbys: int = 4) -> st.SearchStrategy[Topology]:
    """Valid topologies: a primary and up to ``max_standbys`` distinct standbys."""
    if not 0 <= min_standbys <= max_standbys:
        raise ValueError(
            f"need 0 <= min_standbys <= max_standbys, got {min_standbys}, {max_standbys}"
        )
    return st.lists(
        identities(), min_size=1 + min_standbys, max_size=1 + max_standbys, unique=True
    ).map(lambda ids: Topology(primary=ids[0], standbys=tuple(ids[1:])))


@st.composite
def _slots(
    draw: st.DrawFn,
    specs: st.SearchStrategy[Any],
    topologies_: st.SearchStrategy[Topology],
    epochs: st.SearchStrategy[int],
) -> StandbySlot[Any]:
    topology = draw(topologies_)
    assume(topology.standbys)
    index = draw(st.integers(min_value=0, max_value=len(topology.standbys) - 1))
    created_at = draw(timestamps())
    lifetime = draw(st.floats(min_value=1.0, max_value=90 * 86400.0, allow_subnormal=False))
    slot: StandbySlot[Any] = StandbySlot.reserve(
        me=topology.standbys[index],
        workload_id=draw(workload_ids()),
        topology=topology,
        spec=draw(specs),
        owner=draw(identities()),
        created_at=created_at,
        expires_at=created_at + lifetime,
        spec_id=draw(st.none() | workload_ids()),
    )
    epoch = draw(epochs)
    return attrs.evolve(slot, epoch=epoch) if epoch else slot


def slots(
    *,
    specs: st.SearchStrategy[Any] | None = None,
    topologies: st.SearchStrategy[Topology] | None = None,
    epochs: st.SearchStrategy[int] | None = None,
) -> st.SearchStrategy[StandbySlot[Any]]:
    """Valid standby slots (built with :meth:`StandbySlot.reserve`).

    ``specs`` draws the host's container spec (default ``None``), ``topologies``
    the workload's topology (at least one standby is required), ``epochs`` the
    slot's epoch (default 0 to 5).
    """
    return _slots(
        st.none() if specs is None else specs,
        _topologies_with_standbys() if topologies is None else topologies,
        st.integers(min_value=0, max_value=5) if epochs is None else epochs,
    )


def _topologies_with_standbys() -> st.SearchStrategy[Topology]:
    return topologies(min_standbys=1, max_standbys=4)


def timings(
    *,
    safe: bool = True,
    min_heartbeat: float = 0.5,
    max_heartbeat: float = 300.0,
    min_relays: int = 1,
    max_relays: int = 7,
) -> st.SearchStrategy[Timing]:
    """Timings; valid by default (the default and fast presets among them).

    With ``safe=False`` the relations between knobs are drawn freely, so many
    values break a rule of ``docs/safety.md`` (built with
    :meth:`Timing.unsafe_unchecked`). Every value stays well-formed either way:
    durations are positive and finite, quorums lie in ``[1, relay_count]``.
    """
    if not 0 < min_heartbeat <= max_heartbeat:
        raise ValueError(
            f"need 0 < min_heartbeat <= max_heartbeat, got {min_heartbeat}, {max_heartbeat}"
        )
    if not 1 <= min_relays <= max_relays:
        raise ValueError(f"need 1 <= min_relays <= max_relays, got {min_relays}, {max_relays}")
    if not safe:
        return drawn_timing(min_heartbeat, max_heartbeat, min_relays, max_relays, safe=False)
    presets = [
        t
        for t in (Timing(), Timing.fast())
        if min_heartbeat <= t.heartbeat_interval <= max_heartbeat
        and min_relays <= t.relay_count <= max_relays
    ]
    drawn = drawn_timing(min_heartbeat, max_heartbeat, min_relays, max_relays, safe=True)
    return st.one_of(*(st.just(t) for t in presets), drawn) if presets else drawn


def unsafe_timings(**kwargs: Any) -> st.SearchStrategy[Timing]:
    """Timings that break at least one safety rule (see :func:`timings`)."""
    return timings(safe=False, **kwargs).filter(lambda t: not t.is_safe)


# ----------------------------------------------------------------------
# Messages
# ----------------------------------------------------------------------


def heartbeats(*, providers: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Heartbeat]:
    """Heartbeats of ``providers`` (any identity by default)."""
    return st.builds(
        Heartbeat,
        provider=identities() if providers is None else providers,
        timestamp=timestamps(),
        active_workloads=st.integers(min_value=0, max_value=100),
        available_capacity=st.none() | st.integers(min_value=0, max_value=1000),
    )


def _about(
    workloads: st.SearchStrategy[str] | None, people: st.SearchStrategy[str] | None
) -> tuple[st.SearchStrategy[str], st.SearchStrategy[str]]:
    """What a message is about: ``workloads`` and ``people``, any of them by default."""
    return (
        workload_ids() if workloads is None else workloads,
        identities() if people is None else people,
    )


def revocations(
    *,
    workloads: st.SearchStrategy[str] | None = None,
    primaries: st.SearchStrategy[str] | None = None,
) -> st.SearchStrategy[LeaseRevocation]:
    """Lease revocations (the body's ``primary`` is informative only)."""
    workload_id, primary = _about(workloads, primaries)
    return st.builds(
        LeaseRevocation,
        workload_id=workload_id,
        primary=primary,
        standbys=st.lists(identities(), max_size=3, unique=True).map(tuple),
        reason=st.sampled_from(["lease expired", "handover", "container exited", ""]),
        revoked_at=timestamps(),
        state_uri=st.none() | st.just("s3://bucket/state"),
        epoch=st.integers(min_value=0, max_value=5),
    )


@st.composite
def _claim(
    draw: st.DrawFn, workloads: st.SearchStrategy[str], claimants: st.SearchStrategy[str]
) -> PromotionClaim:
    epoch = draw(st.integers(min_value=1, max_value=6))
    index = draw(st.integers(min_value=0, max_value=4))
    return PromotionClaim(
        workload_id=draw(workloads),
        epoch=epoch,
        fencing_token=fencing_token(epoch, index),
        claimant=draw(claimants),
        standby_index=index,
        claimed_at=draw(timestamps()),
        withdrawn=draw(st.booleans()),
    )


def claims(
    *,
    workloads: st.SearchStrategy[str] | None = None,
    claimants: st.SearchStrategy[str] | None = None,
) -> st.SearchStrategy[PromotionClaim]:
    """Promotion claims whose fencing token matches their epoch and index."""
    return _claim(*_about(workloads, claimants))


@st.composite
def _announcement(
    draw: st.DrawFn, workloads: st.SearchStrategy[str], primaries: st.SearchStrategy[str]
) -> PromotionAnnouncement:
    legacy = draw(st.booleans())
    epoch = None if legacy else draw(st.integers(min_value=1, max_value=6))
    token = None if epoch is None else fencing_token(epoch, draw(st.integers(0, 4)))
    return PromotionAnnouncement(
        workload_id=draw(workloads),
        new_primary=draw(primaries),
        promoted_at=draw(timestamps()),
        epoch=epoch,
        fencing_token=token,
    )


def announcements(
    *,
    workloads: st.SearchStrategy[str] | None = None,
    primaries: st.SearchStrategy[str] | None = None,
) -> st.SearchStrategy[PromotionAnnouncement]:
    """Promotion announcements, some without epoch/token (older providers)."""
    return _announcement(*_about(workloads, primaries))


def messages(
    *, topology: Topology | None = None, workload_id: str | None = None
) -> st.SearchStrategy[Message]:
    """Any wire message; about ``topology``/``workload_id`` when given."""
    people = _people(topology)
    workloads = workload_ids() if workload_id is None else st.just(workload_id)
    return st.one_of(
        heartbeats(providers=people),
        revocations(workloads=workloads, primaries=people),
        claims(workloads=workloads, claimants=people),
        announcements(workloads=workloads, primaries=people),
    )


_all_messages = messages


def _people(topology: Topology | None) -> st.SearchStrategy[str]:
    if topology is None:
        return identities()
    members = [topology.primary, *topology.standbys]
    return st.one_of(st.sampled_from(members), identities())


def envelopes(
    messages: st.SearchStrategy[Message] | None = None,
    *,
    signers: st.SearchStrategy[str] | None = None,
    relays: st.SearchStrategy[str] | None = None,
    received_at: st.SearchStrategy[float] | None = None,
) -> st.SearchStrategy[Envelope[Message]]:
    """Envelopes: a message, an authenticated signer, a relay and a receive time.

    The signer is drawn independently of the body, so most envelopes are
    "signed by the wrong identity" from the core's point of view.
    """
    return st.builds(
        Envelope,
        _all_messages() if messages is None else messages,
        identities() if signers is None else signers,
        st.sampled_from(relay_names(3)) if relays is None else relays,
        timestamps() if received_at is None else received_at,
    )


@st.composite
def _stream(
    draw: st.DrawFn,
    topology: Topology | None,
    workload_id: str | None,
    start: float,
    min_size: int,
    max_size: int,
    max_gap: float,
) -> list[Envelope[Message]]:
    count = draw(st.integers(min_value=min_size, max_value=max_size))
    signers = _people(topology)
    bodies = messages(topology=topology, workload_id=workload_id)
    now = start
    out: list[Envelope[Message]] = []
    for _ in range(count):
        now += draw(st.floats(min_value=0.0, max_value=max_gap, allow_subnormal=False))
        out.append(
            Envelope(
                draw(bodies),
                draw(signers),
                draw(st.sampled_from(relay_names(3))),
                now,
            )
        )
    return out


def message_streams(
    *,
    topology: Topology | None = None,
    workload_id: str | None = None,
    start: float = 1_700_000_000.0,
    min_size: int = 0,
    max_size: int = 20,
    max_gap: float = 120.0,
) -> st.SearchStrategy[list[Envelope[Message]]]:
    """Lists of envelopes in receive order (``received_at`` never goes down).

    With ``topology`` the signers are mostly its members (so some messages are
    genuine and many are signed by the wrong member) plus strangers.
    """
    return _stream(topology, workload_id, start, min_size, max_size, max_gap)


# ----------------------------------------------------------------------
# Faults
# ----------------------------------------------------------------------


def _choose(names: Sequence[str]) -> st.SearchStrategy[str]:
    return st.sampled_from(list(names))


def faults(
    *,
    standbys: int = 2,
    relays: int = 3,
    horizon: float = 3600.0,
    timing: Timing | None = None,
    within_model: bool = True,
) -> st.SearchStrategy[Fault]:
    """One fault for a :class:`~standby.testing.Simulation` of this shape.

    ``within_model=True`` keeps to what the safety model allows (no relay
    that loses events, clocks within ``max_clock_skew`` of each other), so a
    correct node shows no violation under any schedule of them: node
    processes killed at any step (their containers surviving or not),
    restarted with or without the request sent again, frozen with their
    workload or without it, are all inside the model.
    """
    timing = Timing() if timing is None else timing
    providers = provider_names(standbys)
    relay_ids = relay_names(relays)
    who = _choose([CURRENT_PRIMARY, *providers])
    anyone = st.none() | _choose(providers)
    at = st.floats(min_value=0.0, max_value=horizon, allow_subnormal=False).map(
        lambda x: round(x, 3)
    )
    span = st.floats(
        min_value=0.1, max_value=max(3 * timing.silence, 0.2), allow_subnormal=False
    ).map(lambda x: round(x, 3))
    probability = st.floats(min_value=0.0, max_value=1.0, allow_subnormal=False).map(
        lambda x: round(x, 3)
    )
    half = timing.max_clock_skew / 2
    subsets = st.lists(_choose(relay_ids), min_size=1, unique=True).map(
        lambda rs: tuple(sorted(rs))
    )
    choices: list[st.SearchStrategy[Fault]] = [
        st.builds(Crash, at, who),
        st.builds(
            Kill, at, who, st.none() | st.integers(min_value=1, max_value=400), st.booleans()
        ),
        st.builds(
            Restart,
            at,
            _choose(providers),
            st.sampled_from([None, *REACCEPT_MODES]),
        ),
        st.builds(Pause, at, who, span, st.sampled_from(PAUSE_WORKLOADS)),
        st.builds(Partition, at, who, st.none() | subsets, st.none() | span),
        st.builds(Heal, at, st.none() | _choose(providers), st.none() | subsets),
        st.builds(
            SkewClock,
            at,
            _choose(providers),
            st.floats(min_value=-half, max_value=half, allow_subnormal=False),
        ),
        st.builds(Drop, at, span, probability, anyone),
        st.builds(
            Delay,
            at,
            span,
            st.floats(
                min_value=0.001,
                max_value=max(2 * timing.query_timeout, 0.002),
                allow_subnormal=False,
            ),
            anyone,
        ),
        st.builds(Duplicate, at, span, probability, anyone),
        st.builds(Replay, at, st.integers(min_value=1, max_value=5), anyone),
        st.builds(
            Forge,
            at,
            st.sampled_from(FORGE_KINDS),
            st.just(STRANGER),
        ),
        st.builds(
            SlowSpawn,
            at,
            _choose(providers),
            st.floats(min_value=0.01, max_value=2 * timing.spawn_timeout, allow_subnormal=False),
            st.integers(min_value=1, max_value=3),
        ),
        st.builds(FailSpawn, at, _choose(providers), st.integers(min_value=1, max_value=3)),
        st.builds(Handover, at, who),
    ]
    if not within_model:
        choices += [
            st.builds(RelayAmnesia, at, _choose(relay_ids), st.none() | span),
            st.builds(
                SkewClock,
                at,
                _choose(providers),
                st.floats(
                    min_value=-10 * timing.silence,
                    max_value=10 * timing.silence,
                    allow_subnormal=False,
                ),
            ),
        ]
    return st.one_of(*choices)


def fault_schedules(
    *,
    standbys: int = 2,
    relays: int = 3,
    horizon: float = 3600.0,
    timing: Timing | None = None,
    within_model: bool = True,
    max_faults: int = 8,
) -> st.SearchStrategy[list[Fault]]:
    """Lists of faults sorted by time, for ``Simulation(faults=...)``.

    Shrinks towards fewer and earlier faults. See :func:`faults` for
    ``within_model``.
    """
    one = faults(
        standbys=standbys,
        relays=relays,
        horizon=horizon,
        timing=timing,
        within_model=within_model,
    )
    return st.lists(one, max_size=max_faults).map(lambda fs: sorted(fs, key=lambda f: f.at))
