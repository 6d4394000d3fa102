"""The names of a simulation's participants: its providers, its relays, its stranger."""

from __future__ import annotations

__all__ = [
    "PRIMARY",
    "STRANGER",
    "provider_names",
    "relay_name",
    "relay_names",
    "standby_name",
]

PRIMARY = "primary"
"""Name of the provider that runs the workload at virtual time 0."""
STRANGER = "mallory"
"""Default signer of forged messages: not a participant of the workload."""


def standby_name(index: int) -> str:
    """Name of standby ``index`` in a simulation (``"standby-0"``, ...)."""
    return f"standby-{index}"


def relay_name(index: int) -> str:
    """Name of relay ``index`` in a simulation (``"relay-0"``, ...)."""
    return f"relay-{index}"


def provider_names(standbys: int) -> list[str]:
    """The providers of a simulation with ``standbys`` standbys: the primary first."""
    return [PRIMARY, *(standby_name(i) for i in range(standbys))]


def relay_names(count: int) -> list[str]:
    """The names of ``count`` relays, in order."""
    return [relay_name(i) for i in range(count)]
