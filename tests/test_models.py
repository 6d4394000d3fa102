"""Models: construction-time validation, topology rules, fencing tokens."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from standby import (
    Envelope,
    Heartbeat,
    InvalidSlot,
    LeaseRevocation,
    NotAddressed,
    PromotionClaim,
    Standby,
    StandbyError,
    StandbySlot,
    Topology,
    TopologyError,
    fencing_token,
)


def slot(**changes: Any) -> StandbySlot[dict[str, str]]:
    fields: dict[str, Any] = {
        "workload_id": "w1",
        "primary": "p",
        "standby_index": 1,
        "standby_count": 3,
        "spec": {"image": "app:1"},
        "expires_at": 2000.0,
        "owner": "consumer",
        "created_at": 1000.0,
        "peers": ("a", "c"),
    }
    fields.update(changes)
    return StandbySlot(**fields)


def reserve(me: str, topology: Topology, **options: Any) -> StandbySlot[Any]:
    """``me``'s slot for workload ``w`` on ``topology``, reserved at 10.0 until 20.0."""
    fields: dict[str, Any] = {
        "spec": None,
        "owner": "consumer",
        "created_at": 10.0,
        "expires_at": 20.0,
    }
    fields.update(options)
    return StandbySlot.reserve(me=me, workload_id="w", topology=topology, **fields)


class TestStandbySlot:
    def test_valid_slot(self) -> None:
        made = slot()
        assert made.epoch == 0
        assert made.peers == ("a", "c")
        assert "w1" in repr(made)

    def test_is_frozen(self) -> None:
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            slot().primary = "x"  # type: ignore[misc]

    @pytest.mark.parametrize(
        ("changes", "fragment"),
        [
            ({"standby_index": 3}, "standby_index < standby_count"),
            ({"standby_index": -1}, "standby_index"),
            ({"expires_at": 1000.0}, "expires_at > created_at > 0"),
            ({"created_at": 0.0, "expires_at": 10.0}, "expires_at > created_at > 0"),
            ({"peers": ("p", "c")}, "primary 'p' is a peer"),
            ({"peers": ("a", "a")}, "duplicate peers"),
            ({"peers": ("a",)}, "standby_count - 1 = 2"),
            ({"peers": ("a", "")}, "empty peer"),
            ({"workload_id": ""}, "workload_id"),
            ({"primary": "  "}, "primary"),
            ({"expires_at": float("nan")}, "finite"),
            ({"standby_index": True}, "standby_index"),
        ],
    )
    def test_rejects_invalid(self, changes: dict[str, Any], fragment: str) -> None:
        with pytest.raises(InvalidSlot, match=fragment.replace("(", r"\(")) as caught:
            slot(**changes)
        assert isinstance(caught.value, StandbyError)
        assert isinstance(caught.value, ValueError)

    def test_expires_one_second_after_creation_is_valid(self) -> None:
        assert slot(expires_at=1001.0).expires_at == 1001.0

    def test_reserve_leaves_this_provider_out_of_peers(self) -> None:
        topology = Topology("p", ("a", "b", "c"))
        made = reserve("b", topology)
        assert (made.standby_index, made.standby_count, made.peers) == (1, 3, ("a", "c"))
        assert made.standbys("b") == ("a", "b", "c")
        assert made.peer_index("a") == 0
        assert made.peer_index("c") == 2
        assert made.peer_index("p") is None

    def test_fm30_a_claimant_followed_from_epoch_1_on_may_stay_a_peer(self) -> None:
        followed = slot(primary="a", epoch=1)
        assert followed.peer_index("a") == 0  # the claimant keeps its place in the order
        assert followed.standbys("b") == ("a", "b", "c")

    def test_primary_since_is_an_optional_finite_time(self) -> None:
        assert slot().primary_since is None
        assert slot().origin == 1000.0
        assert slot(epoch=1, primary_since=1500.0).origin == 1500.0
        for bad in (float("nan"), float("inf"), "soon", True):
            with pytest.raises(InvalidSlot, match="primary_since"):
                slot(primary_since=bad)

    def test_reserve_uses_the_canonical_comparison(self) -> None:
        topology = Topology("p", ("aa", "bb"))
        made = reserve("BB", topology, same=lambda x, y: x.lower() == y.lower())
        assert made.standby_index == 1

    def test_spec_id_is_optional_and_kept_by_reserve(self) -> None:
        made = reserve("b", Topology("p", ("a", "b")), spec={"image": "x"}, spec_id="offer-7")
        assert made.spec_id == "offer-7"
        assert attrs.evolve(made, epoch=1).spec_id == "offer-7"
        assert attrs.evolve(made, spec_id=None).spec_id is None
        for bad in ("", " ", 7):
            with pytest.raises(InvalidSlot, match="spec_id"):
                attrs.evolve(made, spec_id=bad)

    def test_reserve_rejects_a_provider_that_is_not_a_standby(self) -> None:
        with pytest.raises(TopologyError, match="not a standby"):
            reserve("p", Topology("p", ("a",)))


class TestTopology:
    def test_valid(self) -> None:
        topology = Topology("p", ["a", "b"])
        assert topology.standbys == ("a", "b")
        assert topology.role_of("b") == Standby(index=1, count=2)
        assert topology.role_of("x") == NotAddressed()

    def test_duplicate_standbys(self) -> None:
        with pytest.raises(TopologyError, match="listed twice"):
            Topology("p", ("a", "b", "a"))

    def test_primary_listed_as_standby(self) -> None:
        with pytest.raises(TopologyError, match="also listed as standby #1"):
            Topology("p", ("a", "p"))

    def test_empty_primary(self) -> None:
        with pytest.raises(TopologyError, match="non-empty"):
            Topology("", ("a",))

    def test_empty_standby(self) -> None:
        with pytest.raises(TopologyError, match="empty identity"):
            Topology("p", ("a", " "))

    @pytest.mark.parametrize("standbys", ["ab", b"ab", ""])
    def test_a_string_is_not_a_list_of_standbys(self, standbys: Any) -> None:
        with pytest.raises(TopologyError, match="not a single string"):
            Topology("p", standbys)

    def test_standbys_must_be_iterable(self) -> None:
        with pytest.raises(TopologyError, match="sequence of identities, got int"):
            Topology("p", 3)  # type: ignore[arg-type]

    def test_missing_arguments_are_named(self) -> None:
        with pytest.raises(TypeError, match=r"Topology needs primary and standbys: Topology\("):
            Topology()  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="Topology needs standbys"):
            Topology("p")  # type: ignore[call-arg]

    def test_keywords_and_evolve_still_work(self) -> None:
        topology = Topology(primary="p", standbys=["a"])
        assert attrs.evolve(topology, standbys=("b", "c")) == Topology("p", ("b", "c"))


class TestMessages:
    def test_revocation_defaults(self) -> None:
        revocation = LeaseRevocation(
            workload_id="w", primary="p", standbys=["a"], reason="handover", revoked_at=5.0
        )
        assert revocation.version == 1
        assert revocation.state_uri is None
        assert revocation.epoch == 0
        assert revocation.standbys == ("a",)

    def test_heartbeat_rejects_non_finite_timestamp(self) -> None:
        with pytest.raises(ValueError, match="timestamp"):
            Heartbeat(provider="p", timestamp=float("inf"))

    def test_version_must_be_positive(self) -> None:
        with pytest.raises(ValueError, match="version"):
            Heartbeat(provider="p", timestamp=1.0, version=0)

    def test_claim_carries_epoch_and_token(self) -> None:
        claim = PromotionClaim(
            workload_id="w",
            epoch=1,
            fencing_token=fencing_token(1, 0),
            claimant="a",
            standby_index=0,
            claimed_at=3.0,
        )
        assert not claim.withdrawn
        assert claim.fencing_token == fencing_token(1, 0)

    def test_envelope_keeps_the_authenticated_signer(self) -> None:
        envelope = Envelope(Heartbeat(provider="claimed", timestamp=1.0), "real", "r1", 2.0)
        assert envelope.signer == "real"
        assert envelope.message.provider == "claimed"


class TestFencingToken:
    def test_epoch_dominates_index(self) -> None:
        assert fencing_token(1, 999) < fencing_token(2, 0)

    def test_unique_per_claimant_within_an_epoch(self) -> None:
        tokens = {fencing_token(3, i) for i in range(50)}
        assert len(tokens) == 50

    def test_rejects_negative(self) -> None:
        with pytest.raises(ValueError, match="epoch"):
            fencing_token(-1, 0)
        with pytest.raises(ValueError, match="index"):
            fencing_token(1, -1)
