"""The public surface is pinned: adding or removing a name is a deliberate change."""

from __future__ import annotations

import importlib
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

import standby
import standby.core

ROOT = Path(__file__).resolve().parent.parent

EXPECTED = {
    "AdapterError",
    "AtomicClaims",
    "ContainerRuntime",
    "Envelope",
    "Heartbeat",
    "IdentityError",
    "InvalidRequest",
    "InvalidSlot",
    "JsonFileStore",
    "LeaseRevocation",
    "Message",
    "Never",
    "NodeError",
    "NodeEvent",
    "NodeMisuse",
    "NodeStatus",
    "NotAddressed",
    "NotAddressedError",
    "OnFailure",
    "Primary",
    "PrimaryStatus",
    "PromotionAnnouncement",
    "PromotionClaim",
    "QuorumUnavailable",
    "RelayTransport",
    "RequestRefused",
    "RestartPolicy",
    "RetryLater",
    "Role",
    "RuntimeFailure",
    "Sealer",
    "SlotStore",
    "SpawnError",
    "SpawnRequest",
    "Standby",
    "StandbyElection",
    "StandbyError",
    "StandbyNode",
    "StandbySlot",
    "StoreError",
    "StoreQuarantined",
    "Timing",
    "Topology",
    "TopologyError",
    "TransportError",
    "UnsafeTiming",
    "WireError",
    "WorkloadConflict",
    "WorkloadLifecycle",
    "__version__",
    "fencing_token",
    "primary_is_silent",
    "promotion_delay",
    "role_of",
    "select_expired",
    "silence_baseline",
}

#: What left the top level, and the face to import it from now.
MOVED_TO_CORE = {
    "NodeState",
    "Phase",
    "PrimaryRecord",
    "PromotionIntent",
    "SlotStatus",
}
MOVED_TO_PROTOCOLS = {
    "ClaimOutcome",
    "PublishResult",
    "Query",
    "QueryResult",
    "RunningWorkload",
    "Subscription",
}


def test_all_is_pinned() -> None:
    assert set(standby.__all__) == EXPECTED


def test_every_exported_name_exists() -> None:
    missing = [name for name in standby.__all__ if not hasattr(standby, name)]
    assert missing == []


EFFECTS = {
    "Announce",
    "AtRisk",
    "CannotStart",
    "CheckContainer",
    "CompareAndSetClaim",
    "DropReason",
    "Dropped",
    "ElectionEffect",
    "LifecycleEffect",
    "LifecycleState",
    "PhaseChanged",
    "PrimaryChanged",
    "Promoted",
    "PublishClaim",
    "PublishRevocation",
    "QueryClaims",
    "QueryHeartbeats",
    "QuorumShortfall",
    "ReclaimContainer",
    "SlotRemoved",
    "SlotSaved",
    "Spawn",
    "StartContainer",
    "StateChanged",
    "StopContainer",
    "StopOrphan",
    "WithdrawClaim",
}

ERRORS = {
    "AdapterError",
    "IdentityError",
    "InvalidRequest",
    "InvalidSlot",
    "NodeError",
    "NodeMisuse",
    "NotAddressedError",
    "QuorumUnavailable",
    "RequestRefused",
    "RetryLater",
    "RuntimeFailure",
    "SpawnError",
    "StandbyError",
    "StoreError",
    "StoreQuarantined",
    "TopologyError",
    "TransportError",
    "UnsafeTiming",
    "WireError",
    "WorkloadConflict",
}

#: Top-level names that need anyio: loaded on first use, homed in standby.node
#: when the node re-exports them.
LAZY = {
    "JsonFileStore",
    "NodeEvent",
    "NodeStatus",
    "PrimaryStatus",
    "Sealer",
    "SpawnRequest",
    "StandbyNode",
}
NODE_HOMED = {"NodeEvent", "NodeStatus", "PrimaryStatus", "SpawnRequest", "StandbyNode"}
#: The machines: at the top level (the API contract fixes them there) and homed
#: in standby.core, the face of the machine level.
CORE_HOMED = {"StandbyElection", "WorkloadLifecycle", *MOVED_TO_CORE}


def expected_home(name: str) -> str:
    import standby.protocols

    if name in set(standby.protocols.__all__) - {"Envelope"}:
        return "standby.protocols"
    if name in EFFECTS:
        return "standby.effects"
    if name in ERRORS:
        return "standby.errors"
    if name in NODE_HOMED:
        return "standby.node"
    if name in CORE_HOMED:
        return "standby.core"
    return "standby"


def test_effects_and_errors_modules_are_pinned() -> None:
    import standby.effects
    import standby.errors

    assert set(standby.effects.__all__) == EFFECTS
    assert set(standby.errors.__all__) == ERRORS
    assert set(standby.__all__) >= ERRORS
    assert not set(standby.__all__) & EFFECTS
    for name in standby.errors.__all__:
        assert standby.errors.__dict__[name] is standby.__dict__[name], name
    for name in standby.effects.__all__:
        assert standby.effects.__dict__[name] is standby.core.__dict__[name], name


def test_the_machine_level_is_pinned_at_standby_core() -> None:
    assert set(standby.core.__all__) == EFFECTS | MOVED_TO_CORE | {
        "TRANSITIONS",
        "StandbyElection",
        "WorkloadLifecycle",
    }
    for name in standby.core.__all__:
        value = getattr(standby.core, name)
        if isinstance(value, type) or inspect.isfunction(value):
            assert value.__module__ == expected_home(name), (name, value.__module__)


def test_the_top_level_stays_small() -> None:
    assert len(standby.__all__) <= 60


def test_names_that_left_the_top_level_resolve_with_a_warning_naming_the_new_import() -> None:
    moved = dict.fromkeys(EFFECTS | MOVED_TO_CORE, "standby.core")
    moved |= dict.fromkeys(MOVED_TO_PROTOCOLS, "standby.protocols")
    assert moved == standby._MOVED
    for name, face in sorted(moved.items()):
        with pytest.warns(DeprecationWarning, match=f"from {face} import {name}`"):
            value = getattr(standby, name)
        assert value is getattr(importlib.import_module(face), name)
        assert name not in dir(standby)


def test_every_class_and_function_names_its_public_home() -> None:
    for name in standby.__all__:
        value = getattr(standby, name)
        if isinstance(value, type) or inspect.isfunction(value):
            assert value.__module__ == expected_home(name), (name, value.__module__)
            home = importlib.import_module(value.__module__)
            assert getattr(home, value.__qualname__) is value, name


def test_submodules_name_their_own_public_home() -> None:
    import standby.node
    import standby.protocols

    for module in (standby.node, standby.protocols):
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, type) or inspect.isfunction(value):
                assert not value.__module__.rsplit(".", 1)[-1].startswith("_"), name
                assert value.__module__ in {"standby", module.__name__}, name
    assert standby.protocols.ReportsDrops.__module__ == "standby.protocols"
    assert standby.protocols.WaitsConnected.__module__ == "standby.protocols"
    assert standby.protocols.Envelope.__module__ == "standby"


def test_rehomed_models_still_resolve_their_annotations() -> None:
    import typing

    from standby import wire

    for cls in (standby.StandbySlot, standby.Heartbeat, standby.core.Spawn, standby.Timing):
        typing.get_type_hints(cls)
    slot = standby.StandbySlot(
        workload_id="w",
        primary="p",
        standby_index=0,
        standby_count=1,
        spec={"image": "x"},
        expires_at=2_000.0,
        owner="c",
        created_at=1_000.0,
        peers=(),
    )
    assert wire.decode("slot", wire.encode(slot)) == slot


def test_rehomed_values_pickle_by_their_public_name() -> None:
    import pickle

    for value in (standby.core.DropReason.FUTURE_DATED, standby.Timing.fast()):
        assert pickle.loads(pickle.dumps(value)) == value
    error = pickle.loads(pickle.dumps(standby.TopologyError("bad")))
    assert type(error) is standby.TopologyError


def test_import_standby_loads_neither_the_node_nor_anyio() -> None:
    code = (
        "import standby, sys\n"
        "assert 'anyio' not in sys.modules\n"
        "assert 'standby.node._node' not in sys.modules\n"
        "assert 'standby.adapters.files._store' not in sys.modules\n"
        "import standby.effects, standby.errors, standby.wire, standby.protocols\n"
        "assert 'anyio' not in sys.modules\n"
        "from standby import StandbyNode\n"
        "assert 'anyio' in sys.modules and StandbyNode is standby.node.StandbyNode\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT)


def test_lazy_names_are_listed_and_loaded_on_demand() -> None:
    assert set(standby._LAZY) == LAZY
    assert set(standby.__all__) >= LAZY
    assert set(dir(standby)) >= LAZY
    for name in sorted(LAZY):
        assert getattr(standby, name) is getattr(importlib.import_module(expected_home(name)), name)
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = standby.no_such_name  # type: ignore[attr-defined]


def test_errors_share_one_base() -> None:
    for error in (
        standby.UnsafeTiming,
        standby.WireError,
        standby.TopologyError,
        standby.InvalidSlot,
        standby.StoreError,
    ):
        assert issubclass(error, standby.StandbyError)


def test_submodule_surfaces_are_pinned() -> None:
    import standby.adapters.memory
    import standby.node
    import standby.protocols
    import standby.wire

    for module in (standby.node, standby.protocols, standby.wire, standby.adapters.memory):
        missing = [name for name in module.__all__ if not hasattr(module, name)]
        assert missing == [], module.__name__
    assert {"StandbyNode", "SpawnRequest", "NodeEvent"} <= set(standby.node.__all__)
    assert {"RelayTransport", "ContainerRuntime", "AtomicClaims", "SlotStore", "Query"} <= set(
        standby.protocols.__all__
    )
    # what an adapter builds or implements is importable from standby.protocols
    assert {
        "Envelope",
        "ReportsDrops",
        "TransportDrop",
        "WaitsConnected",
        "unexpected_author",
    } <= set(standby.protocols.__all__)
    assert standby.protocols.Envelope is standby.Envelope
    assert {"MemoryRelayNetwork", "MemoryRuntime"} <= set(standby.adapters.memory.__all__)
    assert {"encode", "decode", "Codec"} <= set(standby.wire.__all__)


def test_container_engine_surfaces_are_pinned() -> None:
    import standby.adapters.docker
    import standby.adapters.podman

    assert standby.adapters.podman.__all__ == [
        "CONTAINER_LEASE_FILE",
        "PodmanHandle",
        "PodmanRuntime",
    ]
    assert standby.adapters.docker.__all__ == [
        "CONTAINER_LEASE_FILE",
        "DockerHandle",
        "DockerRuntime",
    ]


NODE_EVENTS = {
    "AnnouncementPublished",
    "ClaimCompared",
    "ClaimPublished",
    "ClockJumped",
    "ContainerExited",
    "ContainerStarted",
    "ContainerStarting",
    "ContainerStopped",
    "HeartbeatPublished",
    "InputDropped",
    "LeaseAtRisk",
    "LeaseRenewed",
    "LifecycleChanged",
    "OperationFailed",
    "PrimaryFollowed",
    "PromotedHere",
    "QuorumMissed",
    "Reconciled",
    "RevocationPublished",
    "SlotPhaseChanged",
    "SlotsNotPersisted",
    "SteppedDown",
    "SubscriptionLost",
    "StandbyGivenUp",
    "WorkloadCannotStart",
}


def test_node_events_are_pinned() -> None:
    import typing

    import standby.node

    names = {kind.__name__ for kind in typing.get_args(standby.node.NodeEvent)}
    assert names == NODE_EVENTS
    assert set(standby.node.__all__) >= NODE_EVENTS


def test_the_testing_kit_offers_local_relays() -> None:
    import standby.testing

    # what examples/process_failover.py needs, without a private module
    assert {
        "RelayCluster",
        "RelaySettings",
        "RelayUnavailable",
        "local_relay_timing",
        "running_relays",
    } <= set(standby.testing.__all__)
    missing = [n for n in standby.testing.__all__ if not hasattr(standby.testing, n)]
    assert missing == []


def test_examples_import_no_private_module() -> None:
    # examples/process_failover.py imported standby.testing._relay_process
    import ast

    private = []
    for path in sorted((ROOT / "examples").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                parts = name.split(".")
                if parts[0] == "standby" and any(p.startswith("_") for p in parts[1:]):
                    private.append(f"{path.name}: {name}")
    assert private == []


def test_library_logging_is_silent_by_default() -> None:
    import logging

    handlers = logging.getLogger("standby").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)


def _all_modules() -> list[str]:
    import pkgutil

    names = ["standby"]
    names.extend(info.name for info in pkgutil.walk_packages(standby.__path__, "standby."))
    return sorted(names)


def test_every_docstring_encodes_as_utf8() -> None:
    # print(standby.wire.__doc__) raised UnicodeEncodeError: a lone surrogate
    # ("\ud800" in a docstring that is not raw) cannot be written anywhere.
    bad: list[str] = []
    for module_name in _all_modules():
        module = importlib.import_module(module_name)
        objects: list[tuple[str, object]] = [(module_name, module)]
        for name, value in vars(module).items():
            if getattr(value, "__module__", None) != module_name:
                continue
            objects.append((f"{module_name}.{name}", value))
            if inspect.isclass(value):
                objects.extend((f"{module_name}.{name}.{k}", v) for k, v in vars(value).items())
        for where, value in objects:
            doc = getattr(value, "__doc__", None)
            if not isinstance(doc, str):
                continue
            try:
                doc.encode("utf-8")
            except UnicodeEncodeError as exc:
                bad.append(f"{where}: {exc}")
    assert bad == []
