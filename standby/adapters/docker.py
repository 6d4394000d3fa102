"""Real containers through the docker CLI, under a lease supervisor: :class:`DockerRuntime`.

The same runtime as :class:`~standby.adapters.podman.PodmanRuntime` (one
container per workload, ``--network none``, ``--pull never``, labels, a
lease supervisor and its guard that stop the container at the lease end
even when the node is killed or frozen), driving ``docker`` instead. The
two share one implementation (``standby/adapters/supervised/_engine.py``);
this module only adds ``host``, the daemon the CLI talks to. See
``docs/runtimes.md``.

Tested against Debian's ``docker.io`` (dockerd 20.10 with containerd and
runc) driven by the docker CLI 28, on a daemon of its own reached through a
unix socket.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import attrs
from typing_extensions import Unpack

from .supervised._engine import CONTAINER_LEASE_FILE, ContainerHandle, EngineOptions, EngineRuntime

__all__ = ["CONTAINER_LEASE_FILE", "DockerHandle", "DockerRuntime"]

#: The address schemes the docker CLI takes for ``--host``.
_SCHEMES = ("unix://", "tcp://", "ssh://", "fd://")


@attrs.frozen
class DockerHandle(ContainerHandle):
    """A container started by :class:`DockerRuntime` (``container`` is its engine id)."""


def host_args(host: str | None) -> list[str]:
    """The CLI's global options that reach the daemon at ``host`` (none for the default).

    ``ValueError`` for an address the docker CLI would not take: a unix
    socket is ``unix:///absolute/path``; ``tcp://``, ``ssh://`` and
    ``fd://`` addresses pass as given.
    """
    if host is None:
        return []
    if not isinstance(host, str) or not host.startswith(_SCHEMES) or host != host.strip():
        raise ValueError(
            f"host must be the daemon's address, such as 'unix:///run/docker.sock' "
            f"(or {', '.join(s + '...' for s in _SCHEMES[1:])}), got {host!r}"
        )
    rest = host.split("://", 1)[1]
    if host.startswith("unix://") and not rest.startswith("/"):
        raise ValueError(f"host needs the socket's absolute path: unix:///path, got {host!r}")
    if not rest:
        raise ValueError(f"host names no address after its scheme, got {host!r}")
    return ["--host", host]


class DockerRuntime(EngineRuntime[DockerHandle]):
    """A :class:`~standby.protocols.ContainerRuntime` running docker containers.

    ``host`` is the daemon's address (``unix:///run/docker.sock``, or the
    socket of a daemon of one's own); without it the CLI uses its own
    default (``DOCKER_HOST``, the current context). ``cli`` is the command
    (``docker`` unless given), ``cli_args`` further global options, ``env``
    extra variables for the CLI (for example ``DOCKER_CONFIG``). Every other
    option, the spec (``image``, ``command``, ``env``), the labels and what
    the container sees are those of
    :class:`~standby.adapters.podman.PodmanRuntime`.
    """

    _NAME = "DockerRuntime"
    _HANDLE = DockerHandle
    _CLI = "docker"

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        host: str | None = None,
        cli_args: Sequence[str] = (),
        **options: Unpack[EngineOptions],
    ) -> None:
        if isinstance(cli_args, str | bytes):
            raise TypeError(f"cli_args must be a list of strings, got the string {cli_args!r}")
        super().__init__(state_dir, cli_args=[*host_args(host), *cli_args], **options)
        self.host = host
