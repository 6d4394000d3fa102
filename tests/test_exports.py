"""The public surface is pinned: adding or removing a name is a deliberate change."""

from __future__ import annotations

import standby

EXPECTED = {
    "Announce",
    "CheckContainer",
    "CompareAndSetClaim",
    "DropReason",
    "Dropped",
    "ElectionEffect",
    "Envelope",
    "Heartbeat",
    "InvalidSlot",
    "LeaseRevocation",
    "LifecycleEffect",
    "LifecycleState",
    "Message",
    "Never",
    "NotAddressed",
    "OnFailure",
    "Phase",
    "Primary",
    "PrimaryChanged",
    "Promoted",
    "PromotionAnnouncement",
    "PromotionClaim",
    "PublishClaim",
    "PublishRevocation",
    "QueryClaims",
    "QueryHeartbeats",
    "QuorumShortfall",
    "ReclaimContainer",
    "RestartPolicy",
    "Role",
    "SlotRemoved",
    "SlotSaved",
    "SlotStatus",
    "Spawn",
    "Standby",
    "StandbyElection",
    "StandbyError",
    "StandbySlot",
    "StartContainer",
    "StateChanged",
    "StopContainer",
    "StopOrphan",
    "StoreError",
    "Timing",
    "Topology",
    "TopologyError",
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
