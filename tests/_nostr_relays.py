"""Real Nostr relay processes for the test suite.

The session fixture ``nostr_relays`` starts three ``nostr-relay`` processes
(the Python relay from PyPI) on ``127.0.0.1``, each on a free port with its
own SQLite database and config file, waits until each accepts connections
and stops them by PID at the end of the session, whatever happened.

Relay 0 is configured *without* signature checking (``lax``): it stores
forged events and hands them out, which is how the tests prove that the
transport verifies every event itself. Relays 1 and 2 check signatures like
public relays do.

A second, independent relay implementation runs beside it: rust-nostr's
``LocalRelay`` (the ``nostr-sdk`` wheel, in a child Python process with an
LMDB database). The session fixture ``local_relays`` starts three of those,
and ``any_relays`` is parametrised over both implementations, so a test that
takes it runs once on ``nostr-relay`` and once on ``LocalRelay``; an async
test marked ``on_relay_runs`` runs on asyncio and trio over ``nostr-relay``
and on asyncio over ``LocalRelay``. A ``LocalRelay`` always checks
signatures: no relay of that cluster is lax. Its own rate limit (about 60
events a minute per connection) is lifted for the tests, as ``nostr-relay``
has none.

If a relay cannot start (the ``nostr-relay`` program is missing, its port is
taken, it does not answer in time), every test that needs it fails with the
reason and the tail of the relay's log: it is never skipped.

Test modules import the fixtures they use::

    from _nostr_relays import any_relays, local_relays, nostr_relays, relays  # noqa: F401
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from standby.testing import _relay_process
from standby.testing._relay_process import (
    RELAY_IMPLEMENTATIONS,
    SIGNED,
    RelayImplementation,
    RelayProcess,
    RelaySettings,
    RelayUnavailable,
)

__all__ = [
    "RelayCluster",
    "RelayProcess",
    "any_relays",
    "local_relays",
    "nostr_relays",
    "relays",
]

RELAY_COUNT = 3

#: Relays 1 and 2: signatures checked, like public relays.
STRICT = RelaySettings(
    title="standby test relay",
    validators=(
        "nostr_relay.validators.is_not_too_large",
        SIGNED,
        "nostr_relay.validators.is_recent",
    ),
    limits=(("message_timeout", 600), ("subscription_limit", 64)),
    # LocalRelay's own default refuses events past about 60 a minute on one
    # connection; the tests publish faster (nostr-relay has no such limit).
    rate_limit=(100_000, 100_000),
)
#: Relay 0: stores forged events too.
LAX = RelaySettings(
    title=STRICT.title,
    validators=tuple(v for v in STRICT.validators or () if v != SIGNED),
    limits=STRICT.limits,
    rate_limit=STRICT.rate_limit,
)


class RelayCluster(_relay_process.RelayCluster):
    """The three relay processes of a test session; a failure fails the test.

    On ``nostr-relay`` relay 0 is lax; ``rust-local`` relays are all strict.
    """

    def __init__(
        self,
        directory: Path,
        count: int = RELAY_COUNT,
        *,
        implementation: RelayImplementation = "nostr-relay",
    ) -> None:
        try:
            super().__init__(
                directory,
                [LAX if i == 0 else STRICT for i in range(count)],
                implementation=implementation,
            )
        except RelayUnavailable as exc:
            pytest.fail(f"{exc}, so the real-relay tests cannot run", pytrace=False)

    def start(self, *indices: int) -> None:
        """Start the given relays (default: every stopped one); fail the test if one does not."""
        try:
            super().start(*indices)
        except RelayUnavailable as exc:
            pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def nostr_relays(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayCluster]:
    """Three running relay processes for the whole session (stopped at its end)."""
    with _relay_process.running_relays(RelayCluster(tmp_path_factory.mktemp("nostr-relays"))) as c:
        yield c


@pytest.fixture(scope="session")
def local_relays(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayCluster]:
    """Three running ``LocalRelay`` processes for the whole session (stopped at its end)."""
    cluster = RelayCluster(tmp_path_factory.mktemp("local-relays"), implementation="rust-local")
    with _relay_process.running_relays(cluster) as c:
        yield c


@pytest.fixture
def relays(nostr_relays: RelayCluster) -> RelayCluster:
    """The session's relays, every one of them running when the test starts."""
    nostr_relays.start()
    return nostr_relays


@pytest.fixture(params=RELAY_IMPLEMENTATIONS)
def any_relays(request: pytest.FixtureRequest) -> RelayCluster:
    """Each relay implementation's session cluster in turn, every relay running."""
    implementation: RelayImplementation = request.param
    name = "nostr_relays" if implementation == "nostr-relay" else "local_relays"
    cluster: RelayCluster = request.getfixturevalue(name)
    cluster.start()
    return cluster


#: (relay implementation, anyio backend) of a test on ``any_relays`` that is
#: async: both backends on ``nostr-relay``, asyncio alone on ``LocalRelay``
#: (what the second relay tests is the relay, not the event loop; this keeps
#: the suite's added time small).
RELAY_RUNS = [("nostr-relay", "asyncio"), ("nostr-relay", "trio"), ("rust-local", "asyncio")]


#: The mark that runs an async test taking ``any_relays`` over :data:`RELAY_RUNS`.
on_relay_runs = pytest.mark.parametrize(
    ("any_relays", "anyio_backend"),
    RELAY_RUNS,
    indirect=["any_relays"],
    ids=[f"{relay}-{backend}" for relay, backend in RELAY_RUNS],
)


def backends() -> list[Any]:
    """``anyio_backend`` params for tests on real sockets: asyncio and trio, real clocks."""
    return ["asyncio", "trio"]


_key_numbers = itertools.count(1)


def fixed_keys() -> Any:
    """A fresh key pair, derived from a counter: the same keys on every run.

    Tests use these instead of random keys, so a failure reproduces exactly.
    """
    from standby.adapters.nostr import NostrKeys

    seed = f"standby-test-key-{next(_key_numbers)}".encode()
    return NostrKeys.from_secret(hashlib.sha256(seed).hexdigest())
