"""Real containers through the podman CLI, under a lease supervisor: :class:`PodmanRuntime`.

One container per workload, started detached with ``--network none`` and
``--pull never`` (images must already be present) and labelled with the
provider, workload id, fencing token, run id and initial lease end. A
supervisor process (the same one :class:`~standby.adapters.process.ProcessRuntime`
uses, in its *container* mode) starts the container, watches it with
``podman wait`` and, at the lease end, sends ``SIGTERM`` and then
``SIGKILL`` through ``podman kill`` and removes the container: a node that is
killed or frozen leaves nothing running past the lease (``docs/safety.md``,
guarantee 4). See ``docs/runtimes.md``.

Tested against podman 4 with runc. What it shares with
:class:`~standby.adapters.docker.DockerRuntime` (everything but the CLI's
name) is in ``standby/adapters/supervised/_engine.py``.
"""

from __future__ import annotations

import attrs

from .supervised._engine import CONTAINER_LEASE_FILE, ContainerHandle, EngineRuntime

__all__ = ["CONTAINER_LEASE_FILE", "PodmanHandle", "PodmanRuntime"]


@attrs.frozen
class PodmanHandle(ContainerHandle):
    """A container started by :class:`PodmanRuntime` (``container`` is its engine id)."""


class PodmanRuntime(EngineRuntime[PodmanHandle]):
    """A :class:`~standby.protocols.ContainerRuntime` running podman containers.

    ``state_dir`` holds one run directory per container (the supervisor's
    record and the lease file); ``list()`` asks the engine for this
    provider's running containers by label, so a fresh object finds them.
    ``cli`` is the engine's command (``podman`` unless given),
    ``cli_args`` global options put before every command (``--root``,
    ``--runroot``, ``--url``...), ``env`` extra variables for the CLI (for
    example ``CONTAINERS_CONF``).

    A spec is a mapping: ``image`` (present locally: nothing is pulled),
    optional ``command`` (a list of strings) and ``env``. The container
    gets ``STANDBY_WORKLOAD_ID``, ``STANDBY_FENCING_TOKEN``,
    ``STANDBY_LEASE_END``, ``STANDBY_STOP_GRACE``, ``STANDBY_RESTORE_FROM``
    (when given) and ``STANDBY_LEASE_FILE`` (``/run/standby/lease``, kept
    current on renewal through a read-only mount).
    """

    _NAME = "PodmanRuntime"
    _HANDLE = PodmanHandle
    _CLI = "podman"
