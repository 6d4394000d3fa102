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
  surrogate ``"\ud800"`` written as a JSON escape, are refused on both sides,
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

import dataclasses
import json
import math
from collections.abc import Callable, Mapping, MutableMapping, MutableSequence, MutableSet, Sequence
from collections.abc import Set as AbstractSet
from types import MappingProxyType
from typing import Any, Final, TypeAlias, TypeVar, get_args, get_origin, overload

import attrs
import cattrs
from cattrs.errors import (
    BaseValidationError,
    ClassValidationError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from ._errors import StandbyError, WireError
from ._models import (
    Heartbeat,
    LeaseRevocation,
    PromotionAnnouncement,
    PromotionClaim,
    StandbySlot,
)

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

_Data: TypeAlias = bytes | bytearray | memoryview | str
#: A host spec type's (unstructure, structure) hooks.
_SpecHooks: TypeAlias = tuple[Callable[[Any], Any] | None, Callable[[Any], Any] | None]


def kind_of(message: object) -> str:
    """The wire name of ``message``'s kind (``"heartbeat"``, ..., ``"slot"``).

    Raises :class:`TypeError` when ``message`` is not a message or a slot.
    """
    for cls, name in _NAMES.items():
        if isinstance(message, cls):
            return name
    raise TypeError(f"not a wire message or slot: {type(message).__name__} {message!r:.80}")


# --------------------------------------------------------------------------- strict hooks


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _structure_str(value: object, cls: type[Any]) -> Any:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {_json_type(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"string is not valid Unicode: {exc.reason}") from None
    return value if cls is str else cls(value)


def _structure_int(value: object, cls: type[Any]) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {_json_type(value)}")
    return value if cls is int else cls(value)


def _structure_float(value: object, cls: type[Any]) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {_json_type(value)}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"expected a finite number, got {value!r}")
    return result if cls is float else cls(result)


def _structure_bool(value: object, _cls: type[Any]) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected a boolean, got {_json_type(value)}")
    return value


#: Collection origin -> the container built from a JSON array.
_ARRAYS: Final[Mapping[Any, Callable[[list[Any]], Any]]] = {
    list: list,
    tuple: tuple,
    Sequence: tuple,
    MutableSequence: list,
    set: set,
    frozenset: frozenset,
    AbstractSet: frozenset,
    MutableSet: set,
}
_OBJECTS: Final = (dict, Mapping, MutableMapping)


def _origin(tp: Any) -> Any:
    return get_origin(tp) or tp


def _add_note(exc: Exception, note: str) -> None:
    # ``add_note`` is Python 3.11+; cattrs reads ``__notes__`` either way.
    exc.__notes__ = [*getattr(exc, "__notes__", []), note]  # type: ignore[attr-defined]


def _array_hook(tp: Any, converter: cattrs.Converter) -> Callable[[Any, Any], Any]:
    """Structure a JSON array, and only an array, into ``tp``'s container."""
    build = _ARRAYS[_origin(tp)]
    args = get_args(tp)
    fixed: tuple[Any, ...] | None = None
    if _origin(tp) is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        fixed = args
    element = args[0] if args else Any

    def structure(value: Any, _tp: Any) -> Any:
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"expected an array, got {_json_type(value)}")
        if fixed is not None and len(value) != len(fixed):
            raise ValueError(f"expected an array of {len(fixed)} items, got {len(value)}")
        items: list[Any] = []
        errors: list[Exception] = []
        for index, item in enumerate(value):
            item_type = fixed[index] if fixed is not None else element
            try:
                items.append(converter.structure(item, item_type))
            except Exception as exc:
                _add_note(exc, IterableValidationNote(f"@ index {index}", index, item_type))
                errors.append(exc)
        if errors:
            raise IterableValidationError(f"While structuring {tp!r}", errors, tp)
        return build(items)

    return structure


def _object_hook(tp: Any, converter: cattrs.Converter) -> Callable[[Any, Any], Any]:
    """Structure a JSON object, and only an object, into a ``dict``."""
    args = get_args(tp)
    key_type, value_type = args if len(args) == 2 else (Any, Any)

    def structure(value: Any, _tp: Any) -> Any:
        if not isinstance(value, Mapping):
            raise TypeError(f"expected an object, got {_json_type(value)}")
        result: dict[Any, Any] = {}
        errors: list[Exception] = []
        for key, item in value.items():
            try:
                result[converter.structure(key, key_type)] = converter.structure(item, value_type)
            except Exception as exc:  # noqa: PERF203
                _add_note(exc, IterableValidationNote(f"@ key {key!r}", key, value_type))
                errors.append(exc)
        if errors:
            raise IterableValidationError(f"While structuring {tp!r}", errors, tp)
        return result

    return structure


def _is_record(tp: Any) -> bool:
    origin = _origin(tp)
    return isinstance(origin, type) and (attrs.has(origin) or dataclasses.is_dataclass(origin))


def _record_hook(tp: Any, converter: cattrs.Converter) -> Callable[[Any, Any], Any]:
    """Structure a JSON object, and only an object, into an attrs class or dataclass."""
    inner = make_dict_structure_fn(tp, converter)

    def structure(value: Any, cls: Any) -> Any:
        if not isinstance(value, Mapping):
            raise TypeError(f"expected an object, got {_json_type(value)}")
        return inner(value, cls)

    return structure


# --------------------------------------------------------------------------- error paths


def _locate(exc: BaseException) -> tuple[str, BaseException]:
    """The JSON path and the leaf exception of the first error in ``exc``."""
    path = "$"
    while True:
        if isinstance(exc, ClassValidationError):
            noted, plain = exc.group_exceptions()
            if noted:
                exc, note = noted[0]
                path = f"{path}.{note.name}"
                continue
        elif isinstance(exc, IterableValidationError):
            noted_items, plain = exc.group_exceptions()
            if noted_items:
                exc, item_note = noted_items[0]
                path = f"{path}[{item_note.index!r}]"
                continue
        elif isinstance(exc, BaseValidationError):
            plain = list(exc.exceptions)
        else:
            return path, exc
        if not plain:
            return path, exc
        exc = plain[0]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return "required field missing"
    text = str(exc)
    if not text:
        return type(exc).__name__
    if isinstance(exc, WireError):
        return exc.reason
    if type(exc) in (TypeError, ValueError) or isinstance(exc, StandbyError):
        return text
    return f"{type(exc).__name__}: {text}"


def _blame(cls: type[Any], body: Mapping[str, Any], converter: cattrs.Converter) -> str | None:
    """The first field of one of our models whose own validator refuses its value.

    Used when constructing the model failed without a field-level structuring
    error, to turn "the validator said no" into a field path. Our validators
    never look at the instance, so each can run on its own.
    """
    for field in attrs.fields(attrs.resolve_types(cls)):
        if field.validator is None or field.name not in body:
            continue
        try:
            value = converter.structure(body[field.name], field.type)
        except Exception:  # reported by the structuring step already
            continue
        try:
            field.validator(None, field, value)
        except Exception:
            return f"$.{field.name}"
    return None


# --------------------------------------------------------------------------- JSON step


def _check_tree(value: object, max_depth: int = MAX_DEPTH) -> None:
    """Refuse what cannot make the round trip: deep nesting, strings that are not Unicode.

    Walks the plain JSON value iteratively (no recursion, whatever the depth)
    and raises :class:`~standby.WireError` at the first offending path.
    """
    stack: list[tuple[object, int, str]] = [(value, 1, "$")]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, str):
            _check_text(item, path)
            continue
        if isinstance(item, Mapping):
            children: list[tuple[object, str]] = []
            for key, child in item.items():
                if isinstance(key, str):
                    _check_text(key, path, what="key")
                children.append((child, f"{path}.{key}"))
        elif isinstance(item, (list, tuple)):
            children = [(child, f"{path}[{index}]") for index, child in enumerate(item)]
        else:
            continue
        if depth > max_depth:
            raise WireError(f"nested deeper than {max_depth} levels", path=path)
        for child, child_path in reversed(children):
            if isinstance(child, (str, Mapping, list, tuple)):
                stack.append((child, depth + 1, child_path))


def _check_text(text: str, path: str, *, what: str = "string") -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise WireError(f"{what} is not valid Unicode: {exc.reason}", path=path) from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed on the wire")


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]!r} is out of range")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return result


def _parse(data: _Data, max_size: int) -> Any:
    """UTF-8 JSON text (bounded by ``max_size`` bytes) to a Python value."""
    if isinstance(data, str):
        if len(data) > max_size:
            raise WireError(f"body is larger than {max_size} bytes")
        try:
            size = len(data.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise WireError(f"body is not valid Unicode: {exc.reason}") from exc
        text = data
    elif isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
        size = len(raw)
        if size > max_size:
            raise WireError(f"body is larger than {max_size} bytes ({size} bytes)")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WireError(f"body is not valid UTF-8: {exc.reason} at byte {exc.start}") from exc
    else:
        raise TypeError(f"data must be bytes or str, got {type(data).__name__}")
    if size > max_size:
        raise WireError(f"body is larger than {max_size} bytes ({size} bytes)")
    try:
        return json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_float=_parse_float,
            object_pairs_hook=_unique_keys,
        )
    except Exception as exc:
        raise WireError(f"body is not valid JSON: {_describe(exc)}") from exc


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
        self._specs: dict[type[Any], _SpecHooks] = {}
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
        converter = cattrs.Converter(detailed_validation=True)
        converter.register_structure_hook(str, _structure_str)
        converter.register_structure_hook(int, _structure_int)
        converter.register_structure_hook(float, _structure_float)
        converter.register_structure_hook(bool, _structure_bool)
        # ``5`` and ``5.0`` are equal values: write both as ``5.0``.
        converter.register_unstructure_hook(float, float)
        converter.register_structure_hook_factory(
            lambda tp: _origin(tp) in _ARRAYS, lambda tp: _array_hook(tp, converter)
        )
        converter.register_structure_hook_factory(
            lambda tp: _origin(tp) in _OBJECTS, lambda tp: _object_hook(tp, converter)
        )
        converter.register_structure_hook_factory(
            _is_record, lambda tp: _record_hook(tp, converter)
        )
        for cls in KINDS.values():
            # ``None`` defaults are omitted; every other field (``version``
            # included) is always written.
            omit: dict[str, Any] = {
                field.name: override(omit_if_default=True)
                for field in attrs.fields(cls)
                if field.default is None
            }
            converter.register_unstructure_hook(
                cls, make_dict_unstructure_fn(cls, converter, **omit)
            )
        for spec_type, (unstructure, structure) in self._specs.items():
            if unstructure is not None:
                converter.register_unstructure_hook(spec_type, unstructure)
            if structure is not None:
                converter.register_structure_hook(spec_type, _two_arguments(structure))
        return converter

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
            raise WireError(f"cannot encode {kind}: {_describe(exc)}") from exc
        if not isinstance(body, dict):
            raise WireError(f"cannot encode {kind}: unstructured to {type(body).__name__}")
        _check_tree(body)
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
            text = json.dumps(
                body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
            )
            return text.encode("utf-8")
        except Exception as exc:
            raise WireError(f"cannot encode {kind_of(message)}: {_describe(exc)}") from exc

    # ----------------------------------------------------------------- decoding

    @overload
    def from_dict(self, kind: type[_M], obj: Mapping[str, Any]) -> _M: ...
    @overload
    def from_dict(self, kind: str, obj: Mapping[str, Any]) -> WireMessage: ...
    def from_dict(self, kind: type[_M] | str, obj: Mapping[str, Any]) -> _M | WireMessage:
        """Decode an already parsed JSON object, with the rules of :meth:`decode`."""
        target, cls = self._target(kind)
        if not isinstance(obj, Mapping):
            raise WireError(f"expected a JSON object, got {_json_type(obj)}")
        _check_tree(obj)
        body = dict(obj)
        if "version" in body:
            version = body["version"]
            if isinstance(version, bool) or not isinstance(version, int):
                raise WireError(
                    f"version must be an integer, got {_json_type(version)}", path="$.version"
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
            path, leaf = _locate(exc)
            if path == "$":
                path = _blame(cls, body, self._converter) or path
            raise WireError(f"invalid {_NAMES[cls]}: {_describe(leaf)}", path=path) from exc
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
        return self.from_dict(kind, _parse(data, limit))

    def _target(self, kind: Any) -> tuple[Any, type[Any]]:
        """The type to structure into, and its model class."""
        if isinstance(kind, str):
            cls = KINDS.get(kind)
            if cls is None:
                raise WireError(f"unknown kind {kind!r}; known: {sorted(KINDS)}")
            target: Any = cls
        else:
            cls = _origin(kind)
            if cls not in _NAMES or (cls is not kind and cls is not StandbySlot):
                raise TypeError(f"not a wire kind: {kind!r}; kinds are {sorted(KINDS)}")
            target = kind
        if target is StandbySlot:
            generic: Any = StandbySlot
            target = generic[self._spec_type]
        return target, cls


def _two_arguments(hook: Callable[[Any], Any]) -> Callable[[Any, Any], Any]:
    """A host's one-argument structure hook in the shape cattrs calls."""

    def structure(value: Any, _cls: Any) -> Any:
        return hook(value)

    return structure


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
