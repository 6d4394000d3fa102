"""Roles a provider can have in one workload's topology."""

from __future__ import annotations

from typing import TypeAlias

import attrs

__all__ = ["NotAddressed", "Primary", "Role", "Standby"]


@attrs.frozen
class Primary:
    """This provider runs the workload."""


@attrs.frozen
class Standby:
    """This provider holds standby slot ``index`` of ``count``."""

    index: int
    count: int

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(
                f"standby index must satisfy 0 <= index < count, got {self.index} of {self.count}"
            )


@attrs.frozen
class NotAddressed:
    """This provider is neither the primary nor one of the standbys."""


Role: TypeAlias = Primary | Standby | NotAddressed
