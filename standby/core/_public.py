"""Where a public name says it lives.

Classes and functions are defined in private modules (``standby.core._effects``)
and re-exported by public ones (``standby``, ``standby.effects``). So that a
``repr``, a traceback, ``help()`` and the API reference show the import a
user should write, each public module hands its names to :func:`publish`,
which sets their ``__module__`` to the public module.

The first public module to publish a name is its home: ``standby`` imports
the effects from ``standby.effects`` and the errors from ``standby.errors``,
so those keep the more specific home. A name defined outside this package,
or already public, is left alone.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

__all__ = ["publish"]


def _is_private_home(module: object) -> bool:
    if not isinstance(module, str):
        return False
    parts = module.split(".")
    return parts[0] == "standby" and any(part.startswith("_") for part in parts[1:])


def publish(module: str, namespace: Mapping[str, Any], names: Iterable[str]) -> None:
    """Give every name of ``names`` in ``namespace`` the home ``module``.

    A class has its own annotations resolved first, in the module that
    defined it: they are strings (``from __future__ import annotations``),
    and ``typing.get_type_hints`` (which cattrs and attrs use) would
    otherwise look them up in the public module, where the type variables
    and private helpers they name do not exist. (So an annotation of a
    public class must name something its own module can see at run time,
    not only under ``TYPE_CHECKING``: ``import standby`` says which, with a
    ``NameError``.)
    """
    for name in names:
        value = namespace[name]
        if not (isinstance(value, type) or inspect.isfunction(value)):
            continue
        if not _is_private_home(getattr(value, "__module__", None)):
            continue
        if isinstance(value, type):
            _resolve_own_annotations(value)
        value.__module__ = module


def _resolve_own_annotations(cls: type) -> None:
    own = inspect.get_annotations(cls)
    if own:
        hints = typing.get_type_hints(cls, include_extras=True)
        cls.__annotations__ = {name: hints[name] for name in own}
    if attrs.has(cls):
        attrs.resolve_types(cls)
