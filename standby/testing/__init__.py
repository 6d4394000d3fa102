"""The testing kit: strategies, a deterministic failover simulator, a state machine.

* :mod:`standby.testing.strategies` -- hypothesis strategies for slots,
  timings, topologies, messages and fault schedules.
* :class:`Simulation` -- a deterministic simulation of one workload (a
  primary, its standbys and the relays) that runs the shipped
  :class:`~standby.node.StandbyNode` on a virtual-time loop, injects faults
  (kills at any step, freezes, restarts) and checks the guarantees of
  ``docs/safety.md``; :meth:`Simulation.run` returns a :class:`SimulationReport`,
  which :func:`timeline_svg` (or :meth:`SimulationReport.to_svg`) draws.
* :func:`run_campaign` -- many seeded simulations with random fault schedules.
* :func:`shrink` -- a failing schedule cut down to the fewest faults and the
  shortest run that still fail (a :class:`ShrunkSchedule`).
* :class:`StandbyStateMachine` -- a ``RuleBasedStateMachine`` to subclass.
* :func:`check_relay_transport`, :func:`check_atomic_claims`,
  :func:`check_container_runtime` -- conformance suites an adapter author
  points at a factory of their own.
* :class:`RelayCluster` and :func:`running_relays` -- local ``nostr-relay``
  processes on free ports (``pip install nostr-relay``), configured by
  :class:`RelaySettings` (:class:`RelayUnavailable` when they cannot start),
  and :func:`local_relay_timing`, the fast timing that suits them.

``Simulation`` and the campaign need nothing beyond ``standby`` itself;
``strategies`` and ``StandbyStateMachine`` need ``hypothesis`` (the
``testing`` extra) and are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._relay_process import (
    RelayCluster,
    RelaySettings,
    RelayUnavailable,
    local_relay_timing,
    running_relays,
)
from .conformance._claims import (
    CLAIM_CHECKS,
    ClaimsHarness,
    ClaimsHarnessFactory,
    check_atomic_claims,
)
from .conformance._runtime import (
    RUNTIME_CHECKS,
    RuntimeHarness,
    RuntimeHarnessFactory,
    check_container_runtime,
)
from .conformance._suites import (
    DEFAULT_MALFORMED_IDENTITIES,
    RELAY_CHECKS,
    ConformanceReport,
    RelayHarness,
    RelayHarnessFactory,
    check_relay_transport,
)
from .simulation._campaign import CampaignSummary, random_faults, run_campaign
from .simulation._faults import (
    CURRENT_PRIMARY,
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
    StepClock,
)
from .simulation._report import (
    BASE_TIME,
    VIOLATION_KINDS,
    FencedStorage,
    Promotion,
    SimulationReport,
    StorageWrite,
    Timeline,
    Violation,
)
from .simulation._shrink import ShrunkSchedule, shrink
from .simulation._simulation import (
    PRIMARY,
    STRANGER,
    Latencies,
    Simulation,
    memory_runtime,
    relay_name,
    standby_name,
)
from .simulation._svg import timeline_svg
from .simulation._world import SimulatedStore

if TYPE_CHECKING:
    # Declared for type checkers: the module-level __getattr__ below would
    # otherwise make every submodule (``_cli`` for ``__main__``) look like Any.
    from . import strategies
    from .simulation import _campaign_cli as _campaign_cli
    from .simulation import _cli as _cli
    from .simulation._stateful import StandbyStateMachine

__all__ = [
    "BASE_TIME",
    "CLAIM_CHECKS",
    "CURRENT_PRIMARY",
    "DEFAULT_MALFORMED_IDENTITIES",
    "PRIMARY",
    "RELAY_CHECKS",
    "RUNTIME_CHECKS",
    "STRANGER",
    "VIOLATION_KINDS",
    "CampaignSummary",
    "ClaimsHarness",
    "ClaimsHarnessFactory",
    "ConformanceReport",
    "Crash",
    "Delay",
    "Drop",
    "Duplicate",
    "FailSpawn",
    "Fault",
    "FencedStorage",
    "Forge",
    "Handover",
    "Heal",
    "Kill",
    "Latencies",
    "Partition",
    "Pause",
    "Promotion",
    "RelayAmnesia",
    "RelayCluster",
    "RelayHarness",
    "RelayHarnessFactory",
    "RelaySettings",
    "RelayUnavailable",
    "Replay",
    "Restart",
    "RuntimeHarness",
    "RuntimeHarnessFactory",
    "ShrunkSchedule",
    "SimulatedStore",
    "Simulation",
    "SimulationReport",
    "SkewClock",
    "SlowSpawn",
    "StandbyStateMachine",
    "StepClock",
    "StorageWrite",
    "Timeline",
    "Violation",
    "check_atomic_claims",
    "check_container_runtime",
    "check_relay_transport",
    "local_relay_timing",
    "memory_runtime",
    "random_faults",
    "relay_name",
    "run_campaign",
    "running_relays",
    "shrink",
    "standby_name",
    "strategies",
    "timeline_svg",
]


def __getattr__(name: str) -> Any:
    # Lazy: these two need hypothesis, the rest of the kit does not.
    if name == "StandbyStateMachine":
        from .simulation._stateful import StandbyStateMachine

        return StandbyStateMachine
    if name == "strategies":
        return importlib.import_module(f"{__name__}.strategies")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
