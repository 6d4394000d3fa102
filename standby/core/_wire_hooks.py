"""The strict cattrs converter of the wire codec, and how its errors become paths.

:func:`build_converter` makes the private converter a :class:`~standby.wire.Codec`
owns: strings, integers, floats and booleans are checked strictly (``true``
is not ``1``), arrays must be arrays and objects objects, and every model
is written without its ``None`` defaults. :func:`locate` turns a structuring
error into the JSON path of the first offending field.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import (
    Callable,
    Iterable,
    Mapping,
    MutableMapping,
    MutableSequence,
    MutableSet,
    Sequence,
)
from collections.abc import Set as AbstractSet
from typing import Any, Final, TypeAlias, get_args, get_origin

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    BaseValidationError,
    ClassValidationError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from ._errors import StandbyError, WireError

__all__ = [
    "SpecHooks",
    "blame",
    "build_converter",
    "describe",
    "json_type",
    "locate",
    "type_origin",
    "unicode_problem",
]

#: A host spec type's (unstructure, structure) hooks.
SpecHooks: TypeAlias = tuple[Callable[[Any], Any] | None, Callable[[Any], Any] | None]


def unicode_problem(text: str) -> str | None:
    """Why ``text`` is not valid Unicode (a lone surrogate, say); ``None`` when it is."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.reason
    return None


def json_type(value: object) -> str:
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
        raise TypeError(f"expected a string, got {json_type(value)}")
    problem = unicode_problem(value)
    if problem is not None:
        raise ValueError(f"string is not valid Unicode: {problem}")
    return value if cls is str else cls(value)


def _structure_int(value: object, cls: type[Any]) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {json_type(value)}")
    return value if cls is int else cls(value)


def _structure_float(value: object, cls: type[Any]) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {json_type(value)}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"expected a finite number, got {value!r}")
    return result if cls is float else cls(result)


def _structure_bool(value: object, _cls: type[Any]) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected a boolean, got {json_type(value)}")
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


def type_origin(tp: Any) -> Any:
    return get_origin(tp) or tp


def _add_note(exc: Exception, note: str) -> None:
    # ``add_note`` is Python 3.11+; cattrs reads ``__notes__`` either way.
    exc.__notes__ = [*getattr(exc, "__notes__", []), note]  # type: ignore[attr-defined]


def _array_hook(tp: Any, converter: cattrs.Converter) -> Callable[[Any, Any], Any]:
    """Structure a JSON array, and only an array, into ``tp``'s container."""
    build = _ARRAYS[type_origin(tp)]
    args = get_args(tp)
    fixed: tuple[Any, ...] | None = None
    if type_origin(tp) is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        fixed = args
    element = args[0] if args else Any

    def structure(value: Any, _tp: Any) -> Any:
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"expected an array, got {json_type(value)}")
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
            raise TypeError(f"expected an object, got {json_type(value)}")
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
    origin = type_origin(tp)
    return isinstance(origin, type) and (attrs.has(origin) or dataclasses.is_dataclass(origin))


def _record_hook(tp: Any, converter: cattrs.Converter) -> Callable[[Any, Any], Any]:
    """Structure a JSON object, and only an object, into an attrs class or dataclass."""
    inner = make_dict_structure_fn(tp, converter)

    def structure(value: Any, cls: Any) -> Any:
        if not isinstance(value, Mapping):
            raise TypeError(f"expected an object, got {json_type(value)}")
        return inner(value, cls)

    return structure


# --------------------------------------------------------------------------- error paths


def _step(note: AttributeValidationNote | IterableValidationNote) -> str:
    """The path step a cattrs note names: ``.field`` or ``[index]``."""
    if isinstance(note, IterableValidationNote):
        return f"[{note.index!r}]"
    return f".{note.name}"


def locate(exc: BaseException) -> tuple[str, BaseException]:
    """The JSON path and the leaf exception of the first error in ``exc``."""
    path = "$"
    while True:
        if isinstance(exc, (ClassValidationError, IterableValidationError)):
            noted, plain = exc.group_exceptions()
            if noted:
                exc, note = noted[0]
                path += _step(note)
                continue
        elif isinstance(exc, BaseValidationError):
            plain = list(exc.exceptions)
        else:
            return path, exc
        if not plain:
            return path, exc
        exc = plain[0]


def describe(exc: BaseException) -> str:
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


def blame(cls: type[Any], body: Mapping[str, Any], converter: cattrs.Converter) -> str | None:
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


def build_converter(
    kinds: Iterable[type[Any]], specs: Mapping[type[Any], SpecHooks]
) -> cattrs.Converter:
    """A fresh strict converter for the model classes ``kinds`` and the host's ``specs``."""
    converter = cattrs.Converter(detailed_validation=True)
    converter.register_structure_hook(str, _structure_str)
    converter.register_structure_hook(int, _structure_int)
    converter.register_structure_hook(float, _structure_float)
    converter.register_structure_hook(bool, _structure_bool)
    # ``5`` and ``5.0`` are equal values: write both as ``5.0``.
    converter.register_unstructure_hook(float, float)
    converter.register_structure_hook_factory(
        lambda tp: type_origin(tp) in _ARRAYS, lambda tp: _array_hook(tp, converter)
    )
    converter.register_structure_hook_factory(
        lambda tp: type_origin(tp) in _OBJECTS, lambda tp: _object_hook(tp, converter)
    )
    converter.register_structure_hook_factory(_is_record, lambda tp: _record_hook(tp, converter))
    for cls in kinds:
        # ``None`` defaults are omitted; every other field (``version``
        # included) is always written.
        omit: dict[str, Any] = {
            field.name: override(omit_if_default=True)
            for field in attrs.fields(cls)
            if field.default is None
        }
        converter.register_unstructure_hook(cls, make_dict_unstructure_fn(cls, converter, **omit))
    for spec_type, (unstructure, structure) in specs.items():
        if unstructure is not None:
            converter.register_unstructure_hook(spec_type, unstructure)
        if structure is not None:
            converter.register_structure_hook(spec_type, _two_arguments(structure))
    return converter


def _two_arguments(hook: Callable[[Any], Any]) -> Callable[[Any, Any], Any]:
    """A host's one-argument structure hook in the shape cattrs calls."""

    def structure(value: Any, _cls: Any) -> Any:
        return hook(value)

    return structure
