"""Which slot specs hold secrets, and the sealer that may encrypt them.

A slot whose spec holds a secret (failure mode 11) is never written to disk
in clear: :class:`~standby.JsonFileStore` seals it with a :class:`Sealer`
or keeps it in memory only. :func:`looks_secret` is the default guess of
which specs those are; both are re-exported by the store's module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Final

import attrs
from typing_extensions import Protocol, runtime_checkable

__all__ = ["SECRET_KEY_WORDS", "Sealer", "looks_secret"]

#: Key fragments that mark a spec entry as secret (compared case-insensitively,
#: with ``-`` read as ``_``).
SECRET_KEY_WORDS: Final = (
    "secret",
    "private_key",
    "privkey",
    "password",
    "passwd",
    "passphrase",
    "token",
    "nsec",
    "api_key",
    "apikey",
    "credential",
)


@runtime_checkable
class Sealer(Protocol):
    """Encrypts slot bodies that hold secrets before they reach the disk.

    ``unseal(seal(data)) == data``. Both raise any exception to refuse (the
    store reports it as a :class:`~standby.StoreError`).
    """

    def seal(self, data: bytes) -> bytes:
        """Encrypt (and authenticate) ``data``."""
        ...

    def unseal(self, data: bytes) -> bytes:
        """Decrypt what :meth:`seal` produced."""
        ...


def _secret_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    name = key.lower().replace("-", "_")
    return any(word in name for word in SECRET_KEY_WORDS)


def _secret_value(value: object) -> bool:
    if not isinstance(value, str):
        return False
    text = value.strip()
    return text.startswith("nsec1") or ("-----BEGIN" in text and "PRIVATE KEY" in text)


def _present(value: object) -> bool:
    if value is None:
        return False
    return not (isinstance(value, (str, Mapping, list, tuple)) and len(value) == 0)


def looks_secret(spec: Any) -> bool:
    """Default guess of whether a spec holds a secret.

    Walks mappings, sequences, attrs classes and dataclasses. A spec holds a
    secret when any key contains one of :data:`SECRET_KEY_WORDS` (``"secret"``,
    ``"private_key"``, ``"password"``, ``"token"``, ``"nsec"``, ...) with a
    non-empty value, or when any string looks like key material (``nsec1...``,
    a PEM private key). Hosts with other conventions pass their own predicate.
    """
    stack: list[Any] = [spec]
    seen = 0
    while stack:
        value = stack.pop()
        seen += 1
        if seen > 10_000:
            return True  # absurdly large spec: err on the safe side
        if attrs.has(type(value)):
            value = attrs.asdict(value, recurse=False)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        if isinstance(value, Mapping):
            for key, item in value.items():
                if _secret_key(key) and _present(item):
                    return True
                stack.append(item)
        elif isinstance(value, (list, tuple, set, frozenset)):
            stack.extend(value)
        elif _secret_value(value):
            return True
    return False
