"""What the container runtimes here share: ``spawn`` taken as one order.

:class:`~standby.protocols.ContainerRuntime` spells ``spawn`` with five
arguments; :class:`OrderedRuntime` accepts them once, for every runtime of
this package, and hands each runtime's :meth:`OrderedRuntime._start` one
:class:`SpawnOrder`.
"""

from __future__ import annotations

import abc
from typing import Any, Generic, TypeVar

import attrs

__all__ = ["OrderedRuntime", "SpawnOrder"]

HandleT = TypeVar("HandleT")


@attrs.frozen
class SpawnOrder:
    """The arguments of one ``ContainerRuntime.spawn`` call."""

    spec: Any
    workload_id: str
    fencing_token: int
    lease_end: float
    restore_from: str | None = None


class OrderedRuntime(abc.ABC, Generic[HandleT]):
    """Base of this package's runtimes: :meth:`spawn` is :meth:`_start` of one order."""

    async def spawn(
        self,
        spec: Any,
        *,
        workload_id: str,
        fencing_token: int,
        lease_end: float,
        restore_from: str | None = None,
    ) -> HandleT:
        """Start ``spec`` as ``workload_id``; return its handle once it runs.

        The workload learns its ``fencing_token`` and lease end (and
        ``restore_from``, when given) and is stopped at ``lease_end`` unless
        renewed; see ``ContainerRuntime.spawn``. Each runtime's class
        documentation says what its spec is and how it starts one.
        """
        order = SpawnOrder(spec, workload_id, fencing_token, lease_end, restore_from)
        return await self._start(order)

    @abc.abstractmethod
    async def _start(self, order: SpawnOrder) -> HandleT:
        """Start what ``order`` asks for and return its handle."""
