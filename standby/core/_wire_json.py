"""The JSON step of the wire codec: bytes to a plain value, and the round-trip checks.

:func:`parse` reads bounded, strict UTF-8 JSON (no NaN, no infinities, no
duplicate keys); :func:`check_tree` refuses what could not make the round
trip (nesting too deep, strings that are not valid Unicode). Every problem
is a :class:`~standby.WireError`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, TypeAlias

from ._errors import WireError
from ._wire_hooks import describe, unicode_problem

__all__ = ["Data", "check_tree", "dump", "parse"]

Data: TypeAlias = bytes | bytearray | memoryview | str


def check_tree(value: object, max_depth: int) -> None:
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
    problem = unicode_problem(text)
    if problem is not None:
        raise WireError(f"{what} is not valid Unicode: {problem}", path=path)


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


def parse(data: Data, max_size: int) -> Any:
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
        raise WireError(f"body is not valid JSON: {describe(exc)}") from exc


def dump(body: Mapping[str, Any]) -> bytes:
    """``body`` as compact UTF-8 JSON with sorted keys: one value, one byte string."""
    text = json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode("utf-8")
