"""The public surface is pinned: adding or removing a name is a deliberate change."""

from __future__ import annotations

import standby

EXPECTED = {
    "AdapterError",
    "NodeState",
    "PrimaryRecord",
    "PromotionIntent",
    "RunningWorkload",
    "Announce",
    "AtomicClaims",
    "CheckContainer",
    "ClaimOutcome",
    "CompareAndSetClaim",
    "ContainerRuntime",
    "DropReason",
    "Dropped",
    "ElectionEffect",
    "Envelope",
    "Heartbeat",
    "IdentityError",
    "InvalidSlot",
    "JsonFileStore",
    "LeaseRevocation",
    "LifecycleEffect",
    "LifecycleState",
    "Message",
    "Never",
    "NodeError",
    "NodeStatus",
    "NotAddressed",
    "NotAddressedError",
    "OnFailure",
    "Phase",
    "Primary",
    "PrimaryChanged",
    "PrimaryStatus",
    "Promoted",
    "PromotionAnnouncement",
    "PromotionClaim",
    "PublishClaim",
    "PublishResult",
    "PublishRevocation",
    "Query",
    "QueryClaims",
    "QueryHeartbeats",
    "QueryResult",
    "QuorumShortfall",
    "ReclaimContainer",
    "RelayTransport",
    "RestartPolicy",
    "Role",
    "RuntimeFailure",
    "Sealer",
    "SlotRemoved",
    "SlotSaved",
    "SlotStatus",
    "SlotStore",
    "Spawn",
    "SpawnError",
    "SpawnRequest",
    "Standby",
    "StandbyElection",
    "StandbyError",
    "StandbyNode",
    "StandbySlot",
    "StartContainer",
    "StateChanged",
    "StopContainer",
    "StopOrphan",
    "StoreError",
    "Subscription",
    "Timing",
    "Topology",
    "TopologyError",
    "TransportError",
    "UnsafeTiming",
    "WireError",
    "WithdrawClaim",
    "WorkloadLifecycle",
    "__version__",
    "fencing_token",
    "primary_is_silent",
    "promotion_delay",
    "role_of",
    "select_expired",
    "silence_baseline",
}


def test_all_is_pinned() -> None:
    assert set(standby.__all__) == EXPECTED


def test_every_exported_name_exists() -> None:
    missing = [name for name in standby.__all__ if not hasattr(standby, name)]
    assert missing == []


def test_exported_classes_live_in_private_modules() -> None:
    for name in standby.__all__:
        value = getattr(standby, name)
        module = getattr(value, "__module__", None)
        if isinstance(value, type) and module is not None:
            tail = module.rsplit(".", 1)[-1]
            assert module == "standby" or tail.startswith("_"), (name, module)


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
    assert {"MemoryRelayNetwork", "MemoryRuntime"} <= set(standby.adapters.memory.__all__)
    assert {"encode", "decode", "Codec"} <= set(standby.wire.__all__)


def test_library_logging_is_silent_by_default() -> None:
    import logging

    handlers = logging.getLogger("standby").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)
