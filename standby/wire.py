"""The wire codec: messages and standby slots to and from JSON bytes.

Everything that crosses a host boundary (a relay, a slot store) goes through
one :class:`Codec`. It owns a private :class:`cattrs.Converter`; the global
cattrs converter is never used or modified, so a host's own cattrs hooks
cannot change what goes on the wire.

Wire rules
----------

- **Kinds.** Five kinds of body, named on the wire and in :data:`KINDS`:
  ``"heartbeat"`` (:class:`~standby.Heartbeat`), ``"revocation"``
  (:class:`~standby.LeaseRevocation`), ``"claim"``
  (:class:`~standby.PromotionClaim`), ``"announcement"``
  (:class:`~standby.PromotionAnnouncement`) and ``"slot"``
  (:class:`~standby.StandbySlot`). The kind is never read from the body: the
  transport knows what it asked for.
- **Versions.** Every body carries ``"version"``. A body without it is
  version 1 (it predates versioning); a version outside
  :data:`SUPPORTED_VERSIONS` is refused at ``$.version`` before any other
  field is looked at. A slot has no ``version`` attribute: the codec adds
  ``"version": 1`` when encoding and checks and strips it when decoding.
- **Forward compatibility.** Unknown fields are ignored.
- **Shape.** A JSON object whose keys are the attribute names. Fields whose
  value is ``None`` and whose default is ``None`` are omitted; tuples are
  arrays. The bytes are compact UTF-8 JSON with sorted keys, so one value
  always encodes to the same bytes.
- **Strict types.** Strings must be strings, integers must be integers
  (``true`` is not ``1``), floats accept integers but not booleans, arrays
  must be arrays and objects must be objects. NaN and the infinities are
  refused on both sides.
- **Size.** A body larger than :data:`MAX_BODY_BYTES` (or the ``max_size``
  given to :func:`decode`) is refused before it is parsed.
- **Round trip.** Whatever decodes encodes again. So arrays and objects
  nested deeper than :data:`MAX_DEPTH` levels (the body itself is level 1)
  and strings (keys included) that are not valid Unicode, such as a lone
  surrogate ``"\\ud800"`` written as a JSON escape, are refused on both sides,
  at the path where they occur.
- **Errors.** Anything wrong with a body -- bad UTF-8, bad JSON, a top level
  that is not an object, a missing field, a wrong type, a value the model's
  own validation refuses, an unknown version, an oversized body -- raises
  :class:`~standby.WireError` and nothing else. Its ``path`` names the first
  offending field (``$.timestamp``, ``$.peers[1]``, ``$.spec.image``) or
  ``$`` for the body as a whole. Decoding gives no authority: the signer of a
  message comes from the transport's envelope, never from the body.

Host spec types
---------------

:class:`~standby.StandbySlot` is generic over the host's container spec. By
default a slot's ``spec`` is decoded as the plain JSON value. Decode into
``StandbySlot[MySpec]`` to get a ``MySpec`` back: attrs classes and
dataclasses work out of the box; other types need hooks, given to
:meth:`Codec.register_spec`, which also makes ``MySpec`` the spec type that
``"slot"`` and bare ``StandbySlot`` decode into for that codec::

    codec = Codec()
    codec.register_spec(MySpec)
    slot = codec.decode("slot", body)  # slot.spec is a MySpec

Misuse by the calling code (encoding something that is not a message, asking
for a class that is not a kind) raises :class:`TypeError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final, TypeAlias, TypeVar, overload

import cattrs

from .core._errors import WireError
from .core._models import (
    Heartbeat,
    LeaseRevocation,
    PromotionAnnouncement,
    PromotionClaim,
    StandbySlot,
)
from .core._wire_hooks import (
    SpecHooks,
    blame,
    build_converter,
    describe,
    json_type,
    locate,
    type_origin,
)
from .core._wire_json import Data as _Data
from .core._wire_json import check_tree, dump, parse

__all__ = [
    "KINDS",
    "MAX_BODY_BYTES",
    "MAX_DEPTH",
    "SUPPORTED_VERSIONS",
    "Codec",
    "WireMessage",
    "decode",
    "encode",
    "kind_of",
]

#: The largest body :func:`decode` accepts by default, in bytes (UTF-8).
MAX_BODY_BYTES: Final = 64 * 1024

#: The deepest nesting of arrays and objects in a body (the body is level 1).
MAX_DEPTH: Final = 64

#: The body versions this codec reads and writes.
SUPPORTED_VERSIONS: Final = frozenset({1})

#: The version written into a slot body (slots carry no ``version`` attribute).
_SLOT_VERSION: Final = 1

#: Wire name -> model class, for every kind of body.
KINDS: Final[Mapping[str, type[Any]]] = MappingProxyType(
    {
        "heartbeat": Heartbeat,
        "revocation": LeaseRevocation,
        "claim": PromotionClaim,
        "announcement": PromotionAnnouncement,
        "slot": StandbySlot,
    }
)

_NAMES: Final[Mapping[type[Any], str]] = MappingProxyType({cls: n for n, cls in KINDS.items()})

#: Everything :func:`decode` can return.
WireMessage: TypeAlias = (
    Heartbeat | LeaseRevocation | PromotionClaim | PromotionAnnouncement | StandbySlot[Any]
)

_M = TypeVar("_M", bound=WireMessage)
_S = TypeVar("_S")


def kind_of(message: object) -> str:
    """The wire name of ``message``'s kind (``"heartbeat"``, ..., ``"slot"``).

    Raises :class:`TypeError` when ``message`` is not a message or a slot.
    """
    for cls, name in _NAMES.items():
        if isinstance(message, cls):
            return name
    raise TypeError(f"not a wire message or slot: {type(message).__name__} {message!r:.80}")


# --------------------------------------------------------------------------- the codec


class Codec:
    """Encodes and decodes wire bodies with a converter of its own.

    Instances are independent: :meth:`register_spec` on one codec never
    changes another, nor the default codec that the module-level
    :func:`encode` and :func:`decode` use.

    ``max_size`` is the default body limit of :meth:`decode`, in bytes.
    """

    def __init__(self, *, max_size: int = MAX_BODY_BYTES) -> None:
        _check_max_size(max_size)
        self._max_size = max_size
        self._spec_type: Any = Any
        self._specs: dict[type[Any], SpecHooks] = {}
        self._converter = self._build()

    def __repr__(self) -> str:
        spec = getattr(self._spec_type, "__qualname__", repr(self._spec_type))
        return f"Codec(max_size={self._max_size}, spec_type={spec})"

    @property
    def max_size(self) -> int:
        """The default body limit of :meth:`decode`, in bytes."""
        return self._max_size

    def register_spec(
        self,
        spec_type: type[_S],
        *,
        unstructure: Callable[[_S], Any] | None = None,
        structure: Callable[[Any], _S] | None = None,
    ) -> None:
        """Teach this codec the host's container spec type.

        ``unstructure`` turns a spec into a JSON value and ``structure`` turns
        a JSON value back into a spec (raise any exception to refuse it; it
        becomes a :class:`~standby.WireError` at ``$.spec``). Neither is needed
        for attrs classes and dataclasses. From now on ``"slot"`` and bare
        ``StandbySlot`` decode into ``StandbySlot[spec_type]``; the latest
        registration wins. ``StandbySlot[Any]`` still gives the plain JSON.
        """
        if not isinstance(spec_type, type):
            raise TypeError(f"spec_type must be a class, got {spec_type!r}")
        self._specs[spec_type] = (unstructure, structure)
        self._spec_type = spec_type
        # A fresh converter, so no hook generated before this call goes stale.
        self._converter = self._build()

    def _build(self) -> cattrs.Converter:
        return build_converter(KINDS.values(), self._specs)

    # ----------------------------------------------------------------- encoding

    def to_dict(self, message: WireMessage) -> dict[str, Any]:
        """``message`` as the JSON object that goes on the wire (no JSON step).

        Raises :class:`TypeError` for a non-message and
        :class:`~standby.WireError` when the spec cannot be unstructured.
        """
        kind = kind_of(message)
        version: object = _SLOT_VERSION if kind == "slot" else getattr(message, "version", None)
        if version not in SUPPORTED_VERSIONS:
            raise WireError(
                f"cannot encode version {version!r}; supported: {sorted(SUPPORTED_VERSIONS)}",
                path="$.version",
            )
        try:
            body = self._converter.unstructure(message)
        except Exception as exc:
            raise WireError(f"cannot encode {kind}: {describe(exc)}") from exc
        if not isinstance(body, dict):
            raise WireError(f"cannot encode {kind}: unstructured to {type(body).__name__}")
        check_tree(body, MAX_DEPTH)
        if kind == "slot":
            body["version"] = version
        return body

    def encode(self, message: WireMessage) -> bytes:
        """``message`` as compact UTF-8 JSON with sorted keys.

        Raises :class:`~standby.WireError` when it cannot be represented (for
        example a NaN inside a slot's spec) and :class:`TypeError` for a
        non-message.
        """
        body = self.to_dict(message)
        try:
            return dump(body)
        except Exception as exc:
            raise WireError(f"cannot encode {kind_of(message)}: {describe(exc)}") from exc

    # ----------------------------------------------------------------- decoding

    @overload
    def from_dict(self, kind: type[_M], obj: Mapping[str, Any]) -> _M: ...
    @overload
    def from_dict(self, kind: str, obj: Mapping[str, Any]) -> WireMessage: ...
    def from_dict(self, kind: type[_M] | str, obj: Mapping[str, Any]) -> _M | WireMessage:
        """Decode an already parsed JSON object, with the rules of :meth:`decode`."""
        target, cls = self._target(kind)
        if not isinstance(obj, Mapping):
            raise WireError(f"expected a JSON object, got {json_type(obj)}")
        check_tree(obj, MAX_DEPTH)
        body = dict(obj)
        if "version" in body:
            version = body["version"]
            if isinstance(version, bool) or not isinstance(version, int):
                raise WireError(
                    f"version must be an integer, got {json_type(version)}", path="$.version"
                )
            if version not in SUPPORTED_VERSIONS:
                raise WireError(
                    f"unsupported version {version}; supported: {sorted(SUPPORTED_VERSIONS)}",
                    path="$.version",
                )
            if cls is StandbySlot:
                del body["version"]
        try:
            result: WireMessage = self._converter.structure(body, target)
        except Exception as exc:
            path, leaf = locate(exc)
            if path == "$":
                path = blame(cls, body, self._converter) or path
            raise WireError(f"invalid {_NAMES[cls]}: {describe(leaf)}", path=path) from exc
        return result

    @overload
    def decode(self, kind: type[_M], data: _Data, *, max_size: int | None = None) -> _M: ...
    @overload
    def decode(self, kind: str, data: _Data, *, max_size: int | None = None) -> WireMessage: ...
    def decode(
        self, kind: type[_M] | str, data: _Data, *, max_size: int | None = None
    ) -> _M | WireMessage:
        """Decode a body of ``kind`` (a class from :data:`KINDS` or its wire name).

        ``data`` is UTF-8 bytes or a str; ``max_size`` overrides the codec's
        body limit. Any problem with the body raises
        :class:`~standby.WireError`; an unknown wire name too (transports may
        read it off the wire), while a class that is not a kind raises
        :class:`TypeError`.
        """
        self._target(kind)
        limit = self._max_size if max_size is None else _check_max_size(max_size)
        return self.from_dict(kind, parse(data, limit))

    def _target(self, kind: Any) -> tuple[Any, type[Any]]:
        """The type to structure into, and its model class."""
        if isinstance(kind, str):
            cls = KINDS.get(kind)
            if cls is None:
                raise WireError(f"unknown kind {kind!r}; known: {sorted(KINDS)}")
            target: Any = cls
        else:
            cls = type_origin(kind)
            if cls not in _NAMES or (cls is not kind and cls is not StandbySlot):
                raise TypeError(f"not a wire kind: {kind!r}; kinds are {sorted(KINDS)}")
            target = kind
        if target is StandbySlot:
            generic: Any = StandbySlot
            target = generic[self._spec_type]
        return target, cls


def _check_max_size(max_size: int) -> int:
    if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 0:
        raise ValueError(f"max_size must be an integer >= 0, got {max_size!r}")
    return max_size


_default_codec: Final = Codec()


def encode(message: WireMessage, *, codec: Codec | None = None) -> bytes:
    """``message`` (or a slot) as compact, deterministic UTF-8 JSON.

    Uses ``codec`` or, by default, a codec with no spec types registered.
    See :meth:`Codec.encode`.
    """
    return (codec or _default_codec).encode(message)


@overload
def decode(
    kind: type[_M], data: _Data, *, codec: Codec | None = None, max_size: int | None = None
) -> _M: ...
@overload
def decode(
    kind: str, data: _Data, *, codec: Codec | None = None, max_size: int | None = None
) -> WireMessage: ...
def decode(
    kind: type[_M] | str,
    data: _Data,
    *,
    codec: Codec | None = None,
    max_size: int | None = None,
) -> _M | WireMessage:
    """Decode a body of ``kind``; raises :class:`~standby.WireError` for bad input.

    ``kind`` is a class from :data:`KINDS` (``decode(Heartbeat, body)`` is
    typed as a ``Heartbeat``), ``StandbySlot[MySpec]``, or a wire name.
    ``max_size`` defaults to the codec's limit (:data:`MAX_BODY_BYTES`).
    See :meth:`Codec.decode`.
    """
    return (codec or _default_codec).decode(kind, data, max_size=max_size)
