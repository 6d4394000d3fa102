"""The wire codec: round trips, versioning, strictness, error paths, isolation."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import attrs
import cattrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import standby
import standby.wire
from standby import (
    Heartbeat,
    LeaseRevocation,
    PromotionAnnouncement,
    PromotionClaim,
    StandbySlot,
    WireError,
)
from standby.wire import (
    KINDS,
    MAX_BODY_BYTES,
    SUPPORTED_VERSIONS,
    Codec,
    WireMessage,
    decode,
    encode,
    kind_of,
)

# --------------------------------------------------------------------------- strategies

CODEC = Codec()

identities = st.text(min_size=1, max_size=12).filter(lambda s: s.strip() != "")
finite = st.floats(allow_nan=False, allow_infinity=False)
counts = st.integers(min_value=0, max_value=2**53)

json_scalars = st.none() | st.booleans() | st.integers() | finite | st.text(max_size=12)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)

heartbeats = st.builds(
    Heartbeat,
    provider=identities,
    timestamp=finite,
    active_workloads=counts,
    available_capacity=st.none() | st.integers(),
)
revocations = st.builds(
    LeaseRevocation,
    workload_id=identities,
    primary=identities,
    standbys=st.lists(identities, max_size=4).map(tuple),
    reason=st.text(max_size=20),
    revoked_at=finite,
    state_uri=st.none() | st.text(max_size=20),
    epoch=counts,
)
claims = st.builds(
    PromotionClaim,
    workload_id=identities,
    epoch=counts,
    fencing_token=counts,
    claimant=identities,
    standby_index=counts,
    claimed_at=finite,
    withdrawn=st.booleans(),
)
announcements = st.builds(
    PromotionAnnouncement,
    workload_id=identities,
    new_primary=identities,
    promoted_at=finite,
    epoch=st.none() | counts,
    fencing_token=st.none() | counts,
)
messages = heartbeats | revocations | claims | announcements


@attrs.frozen
class ContainerSpec:
    image: str
    cpus: float = 1.0
    env: dict[str, str] = attrs.field(factory=dict)
    ports: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class DataSpec:
    image: str
    replicas: int = 1


container_specs = st.builds(
    ContainerSpec,
    image=st.text(max_size=12),
    cpus=finite,
    env=st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3),
    ports=st.lists(st.integers(0, 65535), max_size=3).map(tuple),
)


@st.composite
def slots(draw: st.DrawFn, specs: st.SearchStrategy[Any] = json_values) -> StandbySlot[Any]:
    count = draw(st.integers(min_value=1, max_value=5))
    primary = draw(identities)
    peers = draw(
        st.lists(
            identities.filter(lambda s: s != primary),
            min_size=count - 1,
            max_size=count - 1,
            unique=True,
        )
    )
    created_at = draw(st.floats(min_value=1e-6, max_value=1e12))
    lease = draw(st.floats(min_value=1.0, max_value=1e9))
    return StandbySlot(
        workload_id=draw(identities),
        primary=primary,
        standby_index=draw(st.integers(min_value=0, max_value=count - 1)),
        standby_count=count,
        spec=draw(specs),
        expires_at=created_at + lease,
        owner=draw(identities),
        created_at=created_at,
        peers=tuple(peers),
        epoch=draw(counts),
        spec_id=draw(st.none() | identities),
        primary_since=draw(st.none() | st.floats(min_value=1e-6, max_value=1e12)),
    )


def valid_heartbeat_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"provider": "prov", "timestamp": 1700000000.5, "version": 1}
    body.update(changes)
    return body


def slot_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "workload_id": "w1",
        "primary": "p",
        "standby_index": 1,
        "standby_count": 3,
        "spec": {"image": "app:1"},
        "expires_at": 2000.0,
        "owner": "consumer",
        "created_at": 1000.0,
        "peers": ["a", "c"],
        "epoch": 0,
        "version": 1,
    }
    body.update(changes)
    return body


def a_slot(spec: Any = None) -> StandbySlot[Any]:
    fields = {k: v for k, v in slot_body().items() if k != "version"}
    return StandbySlot(**{**fields, "peers": ("a", "c"), "spec": spec})


def dumps(body: Any) -> bytes:
    return json.dumps(body).encode()


def decode_or_error(kind: str, data: bytes | str) -> WireMessage | WireError:
    """The decoded message, or the WireError; any other exception fails the test."""
    try:
        return decode(kind, data)
    except WireError as exc:
        return exc


def wire_error(kind: Any, body: Any, **kwargs: Any) -> WireError:
    data = body if isinstance(body, (bytes, str)) else dumps(body)
    with pytest.raises(WireError) as info:
        decode(kind, data, **kwargs)
    return info.value


# --------------------------------------------------------------------------- surface


def test_wire_is_a_submodule_not_a_top_level_name() -> None:
    assert standby.wire.encode is encode
    assert "wire" not in standby.__all__


def test_kinds_name_every_model_and_kind_of_inverts_them() -> None:
    assert dict(KINDS) == {
        "heartbeat": Heartbeat,
        "revocation": LeaseRevocation,
        "claim": PromotionClaim,
        "announcement": PromotionAnnouncement,
        "slot": StandbySlot,
    }
    assert kind_of(Heartbeat(provider="p", timestamp=1.0)) == "heartbeat"
    assert kind_of(a_slot()) == "slot"
    with pytest.raises(TypeError):
        kind_of({"provider": "p"})
    with pytest.raises(TypeError):
        KINDS["bogus"] = Heartbeat  # type: ignore[index]


def test_misuse_is_a_type_error_but_an_unknown_wire_name_is_a_wire_error() -> None:
    with pytest.raises(TypeError):
        encode({"provider": "p"})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        decode(dict, b"{}")  # type: ignore[type-var]
    with pytest.raises(TypeError):
        decode(Heartbeat, 42)  # type: ignore[call-overload]
    assert wire_error("gossip", valid_heartbeat_body()).path == "$"


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    "message",
    [
        Heartbeat(provider="prov", timestamp=1700000000.25, active_workloads=2),
        Heartbeat(provider="prov", timestamp=1.0, available_capacity=7),
        LeaseRevocation(
            workload_id="w",
            primary="p",
            standbys=("a", "b"),
            reason="lease lost",
            revoked_at=12.5,
            state_uri="s3://bucket/w",
            epoch=3,
        ),
        PromotionClaim(
            workload_id="w",
            epoch=2,
            fencing_token=standby.fencing_token(2, 1),
            claimant="b",
            standby_index=1,
            claimed_at=99.0,
            withdrawn=True,
        ),
        PromotionAnnouncement(workload_id="w", new_primary="b", promoted_at=100.0, epoch=2),
    ],
    ids=kind_of,
)
def test_each_message_kind_round_trips(message: WireMessage) -> None:
    data = encode(message)
    assert decode(type(message), data) == message
    assert decode(kind_of(message), data) == message
    assert decode(kind_of(message), data.decode()) == message
    assert json.loads(data)["version"] == 1


def test_slot_with_a_dict_spec_round_trips_as_plain_json() -> None:
    made = a_slot({"image": "app:1", "n": [1, 2]})
    data = encode(made)
    assert json.loads(data)["version"] == 1
    for kind in ("slot", StandbySlot, StandbySlot[Any]):
        back = decode(kind, data)
        assert back == made
        assert back.spec == {"image": "app:1", "n": [1, 2]}


def test_slot_with_an_attrs_spec_round_trips_when_named_in_the_kind() -> None:
    spec = ContainerSpec(image="app:1", cpus=2, env={"A": "1"}, ports=(80, 443))
    made = StandbySlot(
        workload_id="w1",
        primary="p",
        standby_index=0,
        standby_count=2,
        spec=spec,
        expires_at=2000.0,
        owner="consumer",
        created_at=1000.0,
        peers=("b",),
    )
    data = encode(made)
    assert json.loads(data)["spec"] == {
        "image": "app:1",
        "cpus": 2.0,
        "env": {"A": "1"},
        "ports": [80, 443],
    }
    back = decode(StandbySlot[ContainerSpec], data)
    assert back == made
    assert isinstance(back.spec, ContainerSpec)
    # Without a spec type the spec stays plain JSON.
    assert decode(StandbySlot, data).spec == json.loads(data)["spec"]


def test_register_spec_makes_slot_decode_into_the_spec_type() -> None:
    codec = Codec()
    codec.register_spec(ContainerSpec)
    made = attrs.evolve(
        decode(StandbySlot, dumps(slot_body())), spec=ContainerSpec(image="x", ports=(1,))
    )
    data = codec.encode(made)
    assert data == encode(made)
    for kind in ("slot", StandbySlot):
        back = codec.decode(kind, data)
        assert back == made
        assert isinstance(back.spec, ContainerSpec)
    assert codec.decode(StandbySlot[Any], data).spec == {
        "image": "x",
        "cpus": 1.0,
        "env": {},
        "ports": [1],
    }
    # The default codec and other codecs are unaffected.
    assert decode(StandbySlot, data).spec == json.loads(data)["spec"]
    assert Codec().decode(StandbySlot, data).spec == json.loads(data)["spec"]


def test_dataclass_specs_work_without_registration() -> None:
    made = a_slot(DataSpec(image="db", replicas=2))
    back = decode(StandbySlot[DataSpec], encode(made))
    assert back == made
    assert back.spec == DataSpec(image="db", replicas=2)


class Opaque:
    """A spec type cattrs knows nothing about."""

    def __init__(self, ref: str) -> None:
        self.ref = ref

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and other.ref == self.ref

    __hash__ = None  # type: ignore[assignment]


def _opaque_from_json(value: Any) -> Opaque:
    if not isinstance(value, str) or not value.startswith("ref:"):
        raise ValueError(f"not an opaque reference: {value!r}")
    return Opaque(value.removeprefix("ref:"))


def test_register_spec_hooks_handle_non_attrs_spec_types() -> None:
    codec = Codec()
    codec.register_spec(Opaque, unstructure=lambda o: f"ref:{o.ref}", structure=_opaque_from_json)
    made = a_slot(Opaque("abc"))
    data = codec.encode(made)
    assert json.loads(data)["spec"] == "ref:abc"
    assert codec.decode("slot", data) == made
    with pytest.raises(WireError) as info:
        codec.decode(StandbySlot[Opaque], dumps(slot_body(spec="nope")))
    assert info.value.path == "$.spec"
    assert "not an opaque reference" in str(info.value)


def test_to_dict_and_from_dict_skip_only_the_json_step() -> None:
    codec = Codec()
    made = decode("slot", dumps(slot_body()))
    body = codec.to_dict(made)
    assert body == slot_body()
    assert json.dumps(body)  # JSON-ready: lists, not tuples
    assert codec.from_dict("slot", body) == made
    beat = Heartbeat(provider="p", timestamp=3.0)
    assert codec.from_dict(Heartbeat, codec.to_dict(beat)) == beat
    with pytest.raises(WireError) as info:
        codec.from_dict("heartbeat", {"provider": "p", "timestamp": math.nan})
    assert info.value.path == "$.timestamp"
    with pytest.raises(WireError):
        codec.from_dict("heartbeat", [1, 2])  # type: ignore[call-overload]


# --------------------------------------------------------------------------- properties


@settings(max_examples=200)
@given(messages)
def test_every_message_round_trips(message: WireMessage) -> None:
    data = encode(message)
    assert decode(type(message), data) == message
    assert decode(kind_of(message), data) == message


@settings(max_examples=200)
@given(slots())
def test_every_slot_with_a_json_spec_round_trips(made: StandbySlot[Any]) -> None:
    assert decode(StandbySlot, encode(made)) == made


@settings(max_examples=100)
@given(slots(container_specs))
def test_every_slot_with_an_attrs_spec_round_trips(made: StandbySlot[ContainerSpec]) -> None:
    assert decode(StandbySlot[ContainerSpec], encode(made)) == made


@settings(max_examples=200)
@given(messages | slots())
def test_encoding_is_compact_sorted_and_repeatable(message: WireMessage) -> None:
    data = encode(message)
    assert data == encode(message)
    canonical = json.dumps(
        json.loads(data), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    assert data == canonical.encode("utf-8")


@settings(max_examples=200)
@given(st.sampled_from(sorted(KINDS)), st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_wire_error(kind: str, data: bytes) -> None:
    outcome = decode_or_error(kind, data)
    if isinstance(outcome, WireError):
        assert outcome.path.startswith("$")
    else:
        assert isinstance(outcome, KINDS[kind])


def _field_names(kind: str) -> list[str]:
    return [f.name for f in attrs.fields(KINDS[kind])] + ["version", "extra"]


small_json = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=4,
)


def _bodies_of(kind: str) -> st.SearchStrategy[tuple[str, Any]]:
    return st.tuples(
        st.just(kind),
        json_values | st.dictionaries(st.sampled_from(_field_names(kind)), small_json, max_size=10),
    )


@st.composite
def mutated_body(draw: st.DrawFn) -> tuple[str, Any]:
    """A valid body with one field (maybe unknown) set to an arbitrary JSON value."""
    message = draw(messages | slots())
    kind = kind_of(message)
    body = CODEC.to_dict(message)
    body[draw(st.sampled_from(_field_names(kind)))] = draw(small_json)
    return kind, body


kind_and_body = st.one_of([_bodies_of(kind) for kind in sorted(KINDS)]) | mutated_body()


@settings(max_examples=200)
@given(kind_and_body)
def test_arbitrary_json_raises_wire_error_or_decodes_a_valid_message(
    kind_body: tuple[str, Any],
) -> None:
    kind, body = kind_body
    outcome = decode_or_error(kind, json.dumps(body))
    if isinstance(outcome, WireError):
        assert outcome.path == "$" or outcome.path.startswith(("$.", "$["))
    else:
        assert isinstance(outcome, KINDS[kind])
        assert decode(kind, encode(outcome)) == outcome


_KNOWN_FIELDS = {name for kind in KINDS for name in _field_names(kind)}
unknown_fields = st.dictionaries(
    st.text(min_size=1, max_size=10).filter(lambda k: k not in _KNOWN_FIELDS),
    json_values,
    max_size=4,
)


@settings(max_examples=200)
@given(messages | slots(), unknown_fields)
def test_unknown_fields_never_change_the_decoded_value(
    message: WireMessage, extra: dict[str, Any]
) -> None:
    kind = kind_of(message)
    body = CODEC.to_dict(message)
    assert decode(kind, dumps({**extra, **body})) == message
    assert CODEC.from_dict(kind, {**body, **extra}) == message


# --------------------------------------------------------------------------- versions


def test_a_body_without_version_is_version_1() -> None:
    body = valid_heartbeat_body()
    del body["version"]
    assert decode(Heartbeat, dumps(body)).version == 1
    slot = slot_body()
    del slot["version"]
    assert decode("slot", dumps(slot)) == decode("slot", dumps(slot_body()))


@pytest.mark.parametrize("version", [max(SUPPORTED_VERSIONS) + 1, 0, -1, 1.0, "1", True, None])
def test_an_unknown_or_mistyped_version_is_refused_at_version(version: Any) -> None:
    assert wire_error(Heartbeat, valid_heartbeat_body(version=version)).path == "$.version"
    assert wire_error("slot", slot_body(version=version)).path == "$.version"


def test_the_version_is_checked_before_anything_else() -> None:
    error = wire_error("claim", {"version": 2})
    assert error.path == "$.version"
    assert "unsupported version 2" in str(error)


def test_encoding_an_unsupported_version_is_refused() -> None:
    with pytest.raises(WireError) as info:
        encode(Heartbeat(provider="p", timestamp=1.0, version=2))
    assert info.value.path == "$.version"


def test_a_slot_has_no_version_attribute_but_its_body_does() -> None:
    made = decode("slot", dumps(slot_body()))
    assert not hasattr(made, "version")
    assert json.loads(encode(made))["version"] == 1


# --------------------------------------------------------------------------- shape rules


def test_none_fields_are_omitted_on_the_wire() -> None:
    revocation = LeaseRevocation(workload_id="w", primary="p", revoked_at=1.0)
    assert "state_uri" not in json.loads(encode(revocation))
    assert b"null" not in encode(revocation)
    with_uri = attrs.evolve(revocation, state_uri="s3://x")
    assert json.loads(encode(with_uri))["state_uri"] == "s3://x"
    beat = json.loads(encode(Heartbeat(provider="p", timestamp=1.0)))
    assert "available_capacity" not in beat
    announcement = json.loads(
        encode(PromotionAnnouncement(workload_id="w", new_primary="b", promoted_at=1.0))
    )
    assert "epoch" not in announcement
    assert "fencing_token" not in announcement
    # A null spec is the spec, not an absent default: it stays.
    assert json.loads(encode(decode("slot", dumps(slot_body(spec=None)))))["spec"] is None


def test_a_slot_carries_the_id_of_the_offer_it_was_paid_for() -> None:
    plain = decode("slot", dumps(slot_body()))
    assert plain.spec_id is None
    assert "spec_id" not in json.loads(encode(plain))  # omitted when None
    paid = decode("slot", dumps(slot_body(spec_id="offer-42")))
    assert paid.spec_id == "offer-42"
    assert json.loads(encode(paid))["spec_id"] == "offer-42"
    assert decode("slot", encode(paid)) == paid
    assert wire_error("slot", slot_body(spec_id=42)).path == "$.spec_id"
    assert wire_error("slot", slot_body(spec_id="")).path == "$.spec_id"


def test_fm27_a_slot_carries_when_its_primary_took_over() -> None:
    plain = decode("slot", dumps(slot_body()))
    assert plain.primary_since is None  # a body from before the field reads as none
    assert "primary_since" not in json.loads(encode(plain))  # omitted when None
    followed = decode("slot", dumps(slot_body(epoch=1, primary_since=1700000600.25)))
    assert followed.primary_since == 1700000600.25
    assert json.loads(encode(followed))["primary_since"] == 1700000600.25
    assert decode("slot", encode(followed)) == followed
    assert wire_error("slot", slot_body(primary_since="soon")).path == "$.primary_since"
    assert wire_error("slot", slot_body(primary_since=True)).path == "$.primary_since"


def test_tuples_are_arrays_and_keys_are_sorted() -> None:
    revocation = LeaseRevocation(workload_id="w", primary="p", standbys=("b", "a"), revoked_at=1.0)
    data = encode(revocation)
    assert b'"standbys":["b","a"]' in data
    keys = list(json.loads(data))
    assert keys == sorted(keys)
    assert b" " not in data


def test_equal_values_encode_to_equal_bytes() -> None:
    assert encode(Heartbeat(provider="p", timestamp=5)) == encode(
        Heartbeat(provider="p", timestamp=5.0)
    )
    first = decode("slot", dumps(slot_body(spec={"b": 1, "a": 2})))
    second = decode("slot", dumps(slot_body(spec={"a": 2, "b": 1})))
    assert encode(first) == encode(second)


def test_non_ascii_text_is_utf8() -> None:
    beat = Heartbeat(provider="prövider-☃", timestamp=1.0)
    data = encode(beat)
    assert "prövider-☃".encode() in data
    assert decode(Heartbeat, data) == beat


# --------------------------------------------------------------------------- strictness


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (valid_heartbeat_body(timestamp="1700000000"), "$.timestamp"),
        (valid_heartbeat_body(timestamp=None), "$.timestamp"),
        (valid_heartbeat_body(provider=7), "$.provider"),
        (valid_heartbeat_body(active_workloads=1.5), "$.active_workloads"),
        (valid_heartbeat_body(active_workloads="2"), "$.active_workloads"),
        (valid_heartbeat_body(available_capacity="3"), "$.available_capacity"),
        (valid_heartbeat_body(provider=["p"]), "$.provider"),
    ],
)
def test_wrong_types_name_the_field(body: dict[str, Any], path: str) -> None:
    error = wire_error(Heartbeat, body)
    assert error.path == path
    assert path in str(error)


@pytest.mark.parametrize(
    ("kind", "body", "path"),
    [
        ("heartbeat", valid_heartbeat_body(timestamp=True), "$.timestamp"),
        ("heartbeat", valid_heartbeat_body(active_workloads=False), "$.active_workloads"),
        ("heartbeat", valid_heartbeat_body(available_capacity=True), "$.available_capacity"),
        ("slot", slot_body(standby_index=True), "$.standby_index"),
    ],
)
def test_booleans_are_not_numbers(kind: str, body: dict[str, Any], path: str) -> None:
    assert wire_error(kind, body).path == path


def test_integers_are_accepted_for_float_fields() -> None:
    beat = decode(Heartbeat, dumps(valid_heartbeat_body(timestamp=1700000000)))
    assert beat.timestamp == 1700000000
    assert isinstance(beat.timestamp, float)


def test_booleans_must_be_booleans() -> None:
    body = {
        "workload_id": "w",
        "epoch": 1,
        "fencing_token": 5,
        "claimant": "c",
        "standby_index": 0,
        "claimed_at": 1.0,
        "withdrawn": 1,
    }
    assert wire_error("claim", body).path == "$.withdrawn"


def test_a_string_is_not_an_array() -> None:
    assert wire_error("slot", slot_body(peers="ac")).path == "$.peers"


def test_array_elements_are_checked_with_their_index() -> None:
    error = wire_error("slot", slot_body(peers=["a", 3]))
    assert error.path == "$.peers[1]"


def test_a_spec_error_names_the_path_inside_the_spec() -> None:
    body = slot_body(spec={"image": "x", "ports": [80, "443"]})
    assert wire_error(StandbySlot[ContainerSpec], body).path == "$.spec.ports[1]"
    assert wire_error(StandbySlot[ContainerSpec], slot_body(spec=[1])).path == "$.spec"
    assert wire_error(StandbySlot[ContainerSpec], slot_body(spec={})).path == "$.spec.image"


def test_missing_fields_are_named() -> None:
    error = wire_error(Heartbeat, {"provider": "p"})
    assert error.path == "$.timestamp"
    assert "missing" in str(error)
    body = slot_body()
    del body["owner"]
    assert wire_error("slot", body).path == "$.owner"


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e400"])
def test_non_finite_numbers_are_refused_on_decode(token: bytes) -> None:
    data = b'{"provider":"p","timestamp":' + token + b"}"
    assert wire_error(Heartbeat, data).path == "$"
    data = dumps(slot_body(spec={"x": 1})).replace(b'{"x": 1}', b'{"x": ' + token + b"}")
    assert wire_error("slot", data).path == "$"


def test_non_finite_numbers_are_refused_on_encode() -> None:
    for value in (math.inf, -math.inf, math.nan):
        with pytest.raises(WireError):
            encode(a_slot({"load": value}))


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b"not json", b"\xff\xfe", b'{"a":1,"a":2}', b"[1, 2]", b'"text"', b"null", b"7"],
)
def test_whole_body_problems_are_at_the_root(data: bytes) -> None:
    for kind in KINDS:
        assert wire_error(kind, data).path == "$"


def test_model_validation_failures_become_wire_errors() -> None:
    error = wire_error("slot", slot_body(standby_index=3))
    assert error.path == "$"
    assert "standby_index" in str(error)
    assert isinstance(error.__cause__, Exception)
    assert wire_error("slot", slot_body(peers=["a", "p"])).path == "$"
    assert wire_error("slot", slot_body(created_at=3000.0)).path == "$"
    assert wire_error("slot", slot_body(peers=["a"])).path == "$"


def test_a_validator_that_refuses_one_field_names_it() -> None:
    assert wire_error(Heartbeat, valid_heartbeat_body(provider="  ")).path == "$.provider"
    assert wire_error("slot", slot_body(owner="")).path == "$.owner"
    assert wire_error("slot", slot_body(epoch=-1)).path == "$.epoch"


# --------------------------------------------------------------------------- size cap


def _body_of_size(size: int) -> bytes:
    base = dumps({**valid_heartbeat_body(), "pad": ""})
    data = base.replace(b'"pad": ""', b'"pad": "' + b"x" * (size - len(base)) + b'"')
    assert len(data) == size
    return data


def test_the_default_size_cap_is_64_kib() -> None:
    assert decode(Heartbeat, _body_of_size(MAX_BODY_BYTES)).provider == "prov"
    error = wire_error(Heartbeat, _body_of_size(MAX_BODY_BYTES + 1))
    assert error.path == "$"
    assert "larger than" in str(error)


def test_max_size_overrides_the_cap() -> None:
    data = _body_of_size(200)
    assert decode(Heartbeat, data, max_size=200).provider == "prov"
    assert wire_error(Heartbeat, data, max_size=199).path == "$"
    big = _body_of_size(MAX_BODY_BYTES + 10)
    assert decode(Heartbeat, big, max_size=MAX_BODY_BYTES + 10).provider == "prov"
    small_codec = Codec(max_size=100)
    with pytest.raises(WireError):
        small_codec.decode(Heartbeat, data)
    assert small_codec.decode(Heartbeat, data, max_size=200).provider == "prov"
    with pytest.raises(ValueError, match="max_size"):
        decode(Heartbeat, data, max_size=-1)


def test_the_cap_counts_utf8_bytes_of_str_input() -> None:
    text = json.dumps(valid_heartbeat_body(provider="☃" * 40), ensure_ascii=False)
    assert len(text) < 150 < len(text.encode())
    assert wire_error(Heartbeat, text, max_size=150).path == "$"
    assert decode(Heartbeat, text).provider == "☃" * 40


def test_oversized_input_is_refused_before_parsing() -> None:
    # Not JSON at all: the size check must come first.
    error = wire_error(Heartbeat, b"\xff" * (MAX_BODY_BYTES + 1))
    assert "larger than" in str(error)


# --------------------------------------------------------------------------- isolation


@attrs.frozen
class HijackedSpec:
    name: str


def test_the_global_cattrs_converter_is_not_used() -> None:
    cattrs.global_converter.register_structure_hook(
        HijackedSpec, lambda _value, _cls: HijackedSpec("from-global")
    )
    cattrs.global_converter.register_unstructure_hook(
        HijackedSpec, lambda _spec: {"name": "from-global"}
    )
    made = a_slot(HijackedSpec("mine"))
    data = encode(made)
    assert json.loads(data)["spec"] == {"name": "mine"}
    assert decode(StandbySlot[HijackedSpec], data).spec == HijackedSpec("mine")


def test_codecs_are_independent() -> None:
    first, second = Codec(), Codec()
    first.register_spec(Opaque, unstructure=lambda o: f"ref:{o.ref}", structure=_opaque_from_json)
    made = a_slot(Opaque("z"))
    assert first.decode("slot", first.encode(made)) == made
    assert second.decode(StandbySlot, first.encode(made)).spec == "ref:z"


# --------------------------------------------------------------------------- round trip


def nested(depth: int) -> Any:
    """A JSON value of arrays ``depth`` levels deep (``[]`` is one level)."""
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ({"image": "\ud800"}, "$.spec.image"),
        ({"\udfff": 1}, "$.spec"),
        (["ok", "bad \udc80 text"], "$.spec[1]"),
    ],
)
def test_a_lone_surrogate_anywhere_is_refused_at_its_path(spec: Any, path: str) -> None:
    data = json.dumps(slot_body(spec=spec))  # JSON escapes: valid JSON, not valid Unicode
    error = wire_error("slot", data)
    assert error.path == path
    assert "not valid Unicode" in str(error)
    with pytest.raises(WireError) as caught:
        CODEC.from_dict("slot", json.loads(data))
    assert caught.value.path == path
    with pytest.raises(WireError, match="not valid Unicode"):
        encode(a_slot(spec))


def test_nesting_up_to_the_limit_round_trips_and_deeper_is_refused() -> None:
    assert standby.wire.MAX_DEPTH == 64
    # the body is level 1, the spec level 2
    deepest = decode("slot", dumps(slot_body(spec=nested(63))))
    assert decode("slot", encode(deepest)) == deepest
    error = wire_error("slot", dumps(slot_body(spec=nested(64))))
    assert "nested deeper than 64 levels" in str(error)
    assert error.path.startswith("$.spec[0]")
    with pytest.raises(WireError, match="nested deeper than 64 levels"):
        encode(a_slot(nested(64)))


@pytest.mark.parametrize("depth", [340, 1000, 20_000])
def test_very_deep_specs_are_wire_errors_both_ways(depth: int) -> None:
    data = "[" * depth + "]" * depth
    body = dumps(slot_body(spec=None)).replace(b'"spec": null', b'"spec": ' + data.encode())
    assert isinstance(decode_or_error("slot", body), WireError)
    with pytest.raises(WireError):
        encode(a_slot(nested(min(depth, 900))))


# Characters around the surrogate block (U+D800-U+DFFF), surrogates included.
near_surrogates = st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010, exclude_categories=())
unicode_text = st.text(near_surrogates, max_size=3) | st.text(max_size=6)
unicode_json = st.recursive(
    st.none() | st.integers() | unicode_text,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(unicode_text, children, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=300)
@given(unicode_json, st.integers(min_value=1, max_value=80))
def test_whatever_decodes_encodes_again(spec: Any, depth: int) -> None:
    for _ in range(depth):
        spec = [spec]
    text = json.dumps(slot_body(spec=spec))  # ensure_ascii: surrogates become escapes
    outcome = decode_or_error("slot", text)
    if isinstance(outcome, WireError):
        return
    again = encode(outcome)
    assert decode("slot", again) == outcome
