"""Adapters implementing :mod:`standby.protocols`.

- :mod:`standby.adapters.memory`: in-memory relays with fault injection, a
  fake container runtime that records what ran when, and an in-memory slot
  store. No extra dependencies; meant for tests and demos.

- :mod:`standby.adapters.nostr`: :class:`NostrTransport`, a real
  :class:`~standby.RelayTransport` over Nostr relays (NIP-01), with signed
  and verified events. Needs the ``nostr`` extra
  (``pip install 'standby[nostr]'``).

- :mod:`standby.adapters.process`: :class:`ProcessRuntime`, real OS
  processes, each under a lease supervisor process that stops it at its
  lease end even when the node is killed or frozen. No extra dependency.

- :mod:`standby.adapters.podman`: :class:`PodmanRuntime`, real containers
  through the podman CLI under the same supervisor; images must be present
  locally. No Python dependency; needs the engine installed. See
  ``docs/runtimes.md``.

- :mod:`standby.adapters.docker`: :class:`DockerRuntime`, the same through
  the docker CLI, pointed at a daemon by ``host`` (``unix://...``).

- :mod:`standby.adapters.etcd`: :class:`EtcdTransport`, one etcd cluster as
  one relay, with atomic claims by transaction. Needs the ``etcd`` extra.

- :mod:`standby.adapters.redis`: :class:`RedisTransport`, one Redis server
  as one relay, with atomic claims by Lua compare-and-swap. Needs the
  ``redis`` extra.

Adapters for real systems live in their own submodules behind optional
extras, so importing this package pulls in nothing.
"""

from __future__ import annotations

__all__: list[str] = []
