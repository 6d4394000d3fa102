"""The runtime half that :class:`ProcessRuntime` and the container runtimes share.

:class:`SupervisedRuntime` holds the :class:`~._supervised.Supervision` of a
runtime's ``state_dir`` and answers what does not depend on how the
workload runs: who the provider is, the stop grace, renewals, checking a
handle, the ``STANDBY_*`` environment of a workload and the first checks of
a spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

from ...core._errors import RuntimeFailure, SpawnError
from .._runtime import OrderedRuntime, SpawnOrder
from ._runs import (
    ENV_FENCING_TOKEN,
    ENV_LEASE_END,
    ENV_LEASE_FILE,
    ENV_RESTORE_FROM,
    ENV_RUN_ID,
    ENV_STOP_GRACE,
    ENV_WORKLOAD_ID,
    RunHandle,
    Supervision,
)

__all__ = ["SupervisedRuntime", "bad_spec", "open_spec", "spec_env"]

HandleT = TypeVar("HandleT", bound=RunHandle)


def bad_spec(workload_id: str, problem: str) -> SpawnError:
    """The error for a spec that cannot start ``workload_id``."""
    return SpawnError(f"cannot start workload {workload_id!r}: {problem}", workload_id=workload_id)


def open_spec(
    spec: Any, workload_id: str, *, known: frozenset[str], needs: str
) -> Mapping[str, Any]:
    """``spec`` as a mapping of ``known`` keys only (``needs``: the key it must have)."""
    if not isinstance(spec, Mapping):
        raise bad_spec(workload_id, f"the spec must be a mapping with {needs!r}, got {spec!r}")
    unknown = set(spec) - known
    if unknown:
        raise bad_spec(
            workload_id,
            f"unknown spec keys {sorted(map(str, unknown))}; known: {sorted(known)}",
        )
    return spec


def spec_env(spec: Mapping[str, Any], workload_id: str) -> dict[str, str]:
    """The spec's ``env``: variable names (non-empty, no ``=``) to strings."""
    env = spec.get("env", {})
    if not isinstance(env, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) and k and "=" not in k for k, v in env.items()
    ):
        raise bad_spec(workload_id, f"spec 'env' must map variable names to strings, got {env!r}")
    return dict(env)


class SupervisedRuntime(OrderedRuntime[HandleT]):
    """A runtime whose workloads each run under a lease supervisor process."""

    #: The runtime's public name (for its ``repr`` and its errors).
    _NAME: ClassVar[str]
    #: The class of its handles.
    _HANDLE: ClassVar[type[Any]]

    #: Its runs; each runtime sets it up in its ``__init__``.
    _runs: Supervision

    def __repr__(self) -> str:
        return f"{self._NAME}({str(self._runs.state_dir)!r}, provider={self.provider!r})"

    @property
    def provider(self) -> str:
        """Whose workloads these are: :meth:`list` reports only this provider's."""
        return self._runs.provider

    @property
    def stop_grace(self) -> float:
        """Seconds after a lease end by which the workload is stopped, at most."""
        return self._runs.stop_grace

    def _check(self, handle: Any) -> HandleT:
        if not isinstance(handle, self._HANDLE):
            raise RuntimeFailure(f"not a handle of a {self._NAME}: {handle!r}")
        checked: HandleT = handle
        return checked

    def _admit(self, order: SpawnOrder) -> tuple[str, float]:
        """A new run id for ``order``, and its lease end once checked."""
        lease_end = self._runs.check_lease_end(order.lease_end, order.workload_id)
        return self._runs.new_run_id(order.workload_id, order.fencing_token), lease_end

    def _standby_env(
        self, order: SpawnOrder, run_id: str, lease_end: float, lease_file: str
    ) -> dict[str, str]:
        """The ``STANDBY_*`` variables of the workload that ``order`` starts as ``run_id``."""
        env = {
            ENV_WORKLOAD_ID: order.workload_id,
            ENV_FENCING_TOKEN: str(order.fencing_token),
            ENV_LEASE_FILE: lease_file,
            ENV_LEASE_END: repr(lease_end),
            ENV_STOP_GRACE: repr(self.stop_grace),
            ENV_RUN_ID: run_id,
        }
        if order.restore_from is not None:
            env[ENV_RESTORE_FROM] = order.restore_from
        return env

    async def renew(self, handle: Any, lease_end: float) -> None:
        """Move the lease end later (an earlier one, or a workload that ended: no-op)."""
        await self._runs.renew(self._check(handle).run_id, lease_end)
