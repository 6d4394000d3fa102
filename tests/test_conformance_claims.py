"""``check_atomic_claims`` against the in-memory compare-and-set store.

The etcd and Redis transports run the same suite against real servers (see
``tests/test_etcd.py`` and ``tests/test_redis.py``). Deliberately broken
claim stores show that the suite catches what it says it catches.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
import attrs
import pytest
from _crash import ForwardingTransport

from standby import PromotionClaim
from standby.adapters.memory import MemoryAtomicTransport, MemoryRelayNetwork
from standby.protocols import ClaimOutcome, claim_wins
from standby.testing import CLAIM_CHECKS, ClaimsHarness, check_atomic_claims

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


@contextlib.asynccontextmanager
async def memory_claims(wrap: Any = None) -> AsyncIterator[ClaimsHarness]:
    network = MemoryRelayNetwork(relays=3, atomic_claims=True)
    transports: list[Any] = [network.transport(n) for n in ("alice", "bob", "carol")]
    if wrap is not None:
        transports = [wrap(t) for t in transports]

    async def down() -> None:
        network.relay_down(network.relays[0])

    async def up() -> None:
        network.relay_up(network.relays[0])

    yield ClaimsHarness(transports=transports, store_down=down, store_up=up, timeout=1.0)


async def test_the_memory_store_passes_the_claims_suite() -> None:
    report = await check_atomic_claims(memory_claims)
    assert report.passed == tuple(name for name in CLAIM_CHECKS if name != "forged")
    assert [name for name, _why in report.skipped] == ["forged"]


def test_the_rule_is_the_one_of_the_protocol() -> None:
    held = PromotionClaim(
        workload_id="w", epoch=2, fencing_token=9, claimant="a", standby_index=0, claimed_at=1.0
    )
    assert claim_wins(attrs.evolve(held, claimant="b"), None)
    assert claim_wins(attrs.evolve(held, claimed_at=5.0), held)  # the holder's retry
    assert claim_wins(attrs.evolve(held, claimant="b", epoch=3), held)
    assert not claim_wins(attrs.evolve(held, claimant="b"), held)
    assert not claim_wins(attrs.evolve(held, claimant="b", epoch=1), held)
    assert claim_wins(attrs.evolve(held, claimant="b"), attrs.evolve(held, withdrawn=True))


class _Broken(ForwardingTransport):
    """A memory atomic transport with its compare-and-set broken by a subclass."""

    inner: MemoryAtomicTransport

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def compare_and_set_claim(
        self,
        claim: PromotionClaim,
        *,
        timeout: float,  # noqa: ASYNC109
    ) -> ClaimOutcome:
        return await self.inner.compare_and_set_claim(claim, timeout=timeout)

    async def release_claim(self, claim: PromotionClaim, *, timeout: float) -> None:  # noqa: ASYNC109
        await self.inner.release_claim(claim, timeout=timeout)

    def _decide(self, claim: PromotionClaim, held: PromotionClaim | None) -> ClaimOutcome:
        """Store ``claim`` if it wins against ``held``, as read earlier (when is the bug)."""
        if claim_wins(claim, held):
            self.inner.network._cas[claim.workload_id] = claim
            return ClaimOutcome(won=True)
        return ClaimOutcome(won=False, holder=held)


class _ReadThenWrite(_Broken):
    """Decides on a read, then writes after a pause: not atomic."""

    async def compare_and_set_claim(
        self,
        claim: PromotionClaim,
        *,
        timeout: float,  # noqa: ASYNC109
    ) -> ClaimOutcome:
        network = self.inner.network
        claim = attrs.evolve(claim, claimant=self.identity)
        held = network.holder(claim.workload_id)
        await anyio.sleep(0.01)
        return self._decide(claim, held)


class _BodyClaimant(_Broken):
    """Stores the claim under the claimant its body names."""

    async def compare_and_set_claim(
        self,
        claim: PromotionClaim,
        *,
        timeout: float,  # noqa: ASYNC109
    ) -> ClaimOutcome:
        network = self.inner.network
        held = network.holder(claim.workload_id)
        await anyio.lowlevel.checkpoint()
        return self._decide(claim, held)


class _NoRelease(_Broken):
    """Never frees an epoch."""

    async def release_claim(self, claim: PromotionClaim, *, timeout: float) -> None:  # noqa: ASYNC109
        await anyio.lowlevel.checkpoint()


@pytest.mark.parametrize(
    ("broken", "check", "message"),
    [
        (_ReadThenWrite, "race", "exactly one claimant must win"),
        (_BodyClaimant, "claimant", "stored as bob's"),
        (_NoRelease, "release", "after the holder released"),
    ],
)
async def test_the_suite_catches_broken_claim_stores(broken: Any, check: str, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        await check_atomic_claims(lambda: memory_claims(broken), only={check})
