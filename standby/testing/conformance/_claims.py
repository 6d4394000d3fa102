"""Conformance suite for :class:`~standby.protocols.AtomicClaims`: ``check_atomic_claims``.

Like :func:`~standby.testing.check_relay_transport`, it takes a *factory*: a
zero-argument callable returning an async context manager that yields a
:class:`ClaimsHarness`. Each check enters a fresh harness and uses fresh
workload ids, so nothing leaks from one check to the next. The expected
outcome of every claim is computed with
:func:`~standby.protocols.claim_wins`, the one compare-and-set rule.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeAlias

import anyio
import anyio.lowlevel
import attrs

from ...core._errors import TransportError
from ...core._models import PromotionClaim, fencing_token
from ...protocols._contracts import AtomicClaims, ClaimOutcome, RelayTransport, claim_wins
from ._base import ConformanceReport, fail, probe, run_suite, unique

__all__ = [
    "CLAIM_CHECKS",
    "ClaimsHarness",
    "ClaimsHarnessFactory",
    "check_atomic_claims",
]


@attrs.frozen(kw_only=True)
class ClaimsHarness:
    """What :func:`check_atomic_claims` needs from one harness.

    Required:

    ``transports``
        At least three running transports with distinct identities that
        implement both :class:`~standby.protocols.RelayTransport` (for
        ``identity``) and :class:`~standby.protocols.AtomicClaims`, all on
        the same claim store.

    Optional probes (a check that needs a missing one is skipped):

    ``forge_claim(claim)``
        Put ``claim`` into the store as the holder of its epoch *without*
        the credentials of ``claim.claimant`` (written by another account,
        straight into the shared key). The check then requires that no
        transport ever reports it as that claimant's claim.
    ``store_down()`` / ``store_up()``
        Make the claim store unreachable and bring it back (data intact).

    ``timeout`` is passed to every call; ``race_rounds`` is how many times
    each transport tries in the concurrent race.
    """

    transports: Sequence[Any]
    forge_claim: Callable[[PromotionClaim], Awaitable[None]] | None = None
    store_down: Callable[[], Awaitable[None]] | None = None
    store_up: Callable[[], Awaitable[None]] | None = None
    wall_clock: Callable[[], float] = time.time
    timeout: float = 2.0
    race_rounds: int = 3


ClaimsHarnessFactory: TypeAlias = Callable[[], AbstractAsyncContextManager[ClaimsHarness]]
"""Zero-argument callable returning an async context manager yielding a :class:`ClaimsHarness`."""


def _pick(harness: ClaimsHarness, check: str) -> list[Any]:
    transports = list(harness.transports)
    if len(transports) < 3:
        raise fail(check, f"the harness must offer at least 3 transports, got {len(transports)}")
    for transport in transports:
        if not isinstance(transport, AtomicClaims) or not isinstance(transport, RelayTransport):
            raise fail(check, f"{transport!r} is not a RelayTransport with AtomicClaims")
    identities = [t.identity for t in transports]
    if len(set(identities)) != len(identities):
        raise fail(check, f"the harness's transports must have distinct identities: {identities}")
    return transports


def _workload(what: str) -> str:
    return unique(what, suite="claims")


def _claim(
    harness: ClaimsHarness, transport: Any, workload: str, epoch: int, index: int = 0
) -> PromotionClaim:
    return PromotionClaim(
        workload_id=workload,
        epoch=epoch,
        fencing_token=fencing_token(epoch, index),
        claimant=transport.identity,
        standby_index=index,
        claimed_at=harness.wall_clock(),
    )


async def _cas(harness: ClaimsHarness, transport: Any, claim: PromotionClaim) -> ClaimOutcome:
    with anyio.fail_after(harness.timeout * 2 + 1):
        outcome = await transport.compare_and_set_claim(claim, timeout=harness.timeout)
    if not isinstance(outcome, ClaimOutcome):
        raise fail("outcome", f"compare_and_set_claim returned {outcome!r}, not a ClaimOutcome")
    return outcome


async def _release(harness: ClaimsHarness, transport: Any, claim: PromotionClaim) -> None:
    with anyio.fail_after(harness.timeout * 2 + 1):
        await transport.release_claim(claim, timeout=harness.timeout)


def _expect(
    check: str,
    what: str,
    outcome: ClaimOutcome,
    claim: PromotionClaim,
    held: PromotionClaim | None,
) -> None:
    """``outcome`` must be what :func:`claim_wins` says against ``held``."""
    expected = claim_wins(claim, held)
    if outcome.won != expected:
        raise fail(
            check,
            f"{what}: expected won={expected} against {held!r}, got {outcome!r}",
        )
    if not outcome.won and outcome.holder is not None:
        assert held is not None
        if (outcome.holder.claimant, outcome.holder.epoch) != (held.claimant, held.epoch):
            raise fail(check, f"{what}: the holder must be {held!r}, got {outcome.holder!r}")


async def _claim_as_expected(
    harness: ClaimsHarness,
    check: str,
    what: str,
    transport: Any,
    claim: PromotionClaim,
    held: PromotionClaim | None,
) -> ClaimOutcome:
    """``transport`` claims ``claim``: the outcome must be what ``claim_wins`` says."""
    outcome = await _cas(harness, transport, claim)
    _expect(check, what, outcome, claim, held)
    return outcome


async def _check_first_wins(harness: ClaimsHarness) -> None:
    check = "first_wins"
    alice, bob, _carol = _pick(harness, check)[:3]
    workload = _workload("first")
    first = _claim(harness, alice, workload, 1, 0)
    await _claim_as_expected(harness, check, "the first claim of an epoch", alice, first, None)
    rival = _claim(harness, bob, workload, 1, 1)
    outcome = await _claim_as_expected(
        harness, check, "a rival claim of the same epoch", bob, rival, first
    )
    if outcome.holder is None:
        raise fail(check, "a lost claim must name the holder when the store knows it")
    again = attrs.evolve(first, claimed_at=first.claimed_at + 0.5)
    await _claim_as_expected(
        harness, check, "the holder claiming its epoch again (a retry)", alice, again, first
    )


async def _check_epochs(harness: ClaimsHarness) -> None:
    check = "epochs"
    alice, bob, carol = _pick(harness, check)[:3]
    workload = _workload("epochs")
    one = _claim(harness, alice, workload, 1, 0)
    await _claim_as_expected(harness, check, "epoch 1", alice, one, None)
    two = _claim(harness, bob, workload, 2, 1)
    await _claim_as_expected(harness, check, "a later epoch over a held one", bob, two, one)
    late = _claim(harness, alice, workload, 2, 0)
    await _claim_as_expected(harness, check, "the same epoch, another claimant", alice, late, two)
    stale = _claim(harness, carol, workload, 1, 2)
    await _claim_as_expected(harness, check, "an earlier epoch", carol, stale, two)
    other = _claim(harness, carol, _workload("other"), 1, 2)
    await _claim_as_expected(harness, check, "another workload is independent", carol, other, None)


async def _check_release(harness: ClaimsHarness) -> None:
    check = "release"
    alice, bob, carol = _pick(harness, check)[:3]
    workload = _workload("release")
    held = _claim(harness, alice, workload, 1, 0)
    await _claim_as_expected(harness, check, "epoch 1", alice, held, None)
    # Releasing someone else's epoch, or a claim that does not hold, changes nothing.
    await _release(harness, bob, _claim(harness, bob, workload, 1, 1))
    rival = _claim(harness, carol, workload, 1, 2)
    await _claim_as_expected(harness, check, "after a release by a non-holder", carol, rival, held)
    await _release(harness, alice, held)
    await _release(harness, alice, held)  # idempotent
    await _claim_as_expected(harness, check, "after the holder released", carol, rival, None)
    retry = _claim(harness, alice, workload, 1, 0)
    await _claim_as_expected(
        harness, check, "the old holder after its release", alice, retry, rival
    )


async def _check_claimant(harness: ClaimsHarness) -> None:
    check = "claimant"
    alice, bob, carol = _pick(harness, check)[:3]
    workload = _workload("claimant")
    # A body naming bob, sent by alice, is alice's claim.
    lying = attrs.evolve(_claim(harness, alice, workload, 1, 0), claimant=bob.identity)
    outcome = await _cas(harness, alice, lying)
    if not outcome.won:
        raise fail(check, f"the first claim of an epoch must win, got {outcome!r}")
    by_bob = _claim(harness, bob, workload, 1, 1)
    outcome = await _cas(harness, bob, by_bob)
    if outcome.won:
        raise fail(
            check,
            "alice's claim whose body named bob was stored as bob's: bob then 'won' an epoch "
            "alice holds",
        )
    if outcome.holder is not None and outcome.holder.claimant != alice.identity:
        raise fail(check, f"the holder must be alice (who sent it), got {outcome.holder!r}")
    other = _claim(harness, carol, workload, 1, 2)
    if (await _cas(harness, carol, other)).won:
        raise fail(check, "a third claimant won an epoch alice holds")


async def _check_forged(harness: ClaimsHarness) -> None:
    check = "forged"
    forge_claim = probe(harness.forge_claim, "forge_claim probe")
    alice, bob, _carol = _pick(harness, check)[:3]
    workload = _workload("forged")
    forged = _claim(harness, alice, workload, 5, 0)
    await forge_claim(forged)
    claim = _claim(harness, bob, workload, 5, 1)
    outcome = await _cas(harness, bob, claim)
    if not outcome.won and outcome.holder is not None and outcome.holder.claimant == alice.identity:
        raise fail(
            check,
            f"a claim forged in alice's name blocked bob and was reported as alice's: {outcome!r}",
        )
    retry = _claim(harness, alice, workload, 5, 0)
    outcome_alice = await _cas(harness, alice, retry)
    if outcome.won and outcome_alice.won:
        raise fail(check, "after the forgery, both alice and bob won epoch 5")


async def _check_race(harness: ClaimsHarness) -> None:
    check = "race"
    transports = _pick(harness, check)
    workload = _workload("race")
    results: list[tuple[str, ClaimOutcome]] = []

    async def contend(index: int, transport: Any) -> None:
        for _round in range(harness.race_rounds):
            claim = _claim(harness, transport, workload, 1, index)
            results.append((transport.identity, await _cas(harness, transport, claim)))
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as group:
        for index, transport in enumerate(transports):
            group.start_soon(contend, index, transport)
    winners = {identity for identity, outcome in results if outcome.won}
    if len(winners) != 1:
        raise fail(check, f"exactly one claimant must win the epoch, got {sorted(winners)}")
    (winner,) = winners
    for identity, outcome in results:
        if outcome.won:
            continue
        if outcome.holder is not None and outcome.holder.claimant != winner:
            raise fail(
                check, f"{identity} lost to {outcome.holder.claimant}, but {winner} won the epoch"
            )


async def _check_cancellation(harness: ClaimsHarness) -> None:
    check = "cancellation"
    alice, bob, _carol = _pick(harness, check)[:3]
    # Warm up: connections and long-lived tasks exist before the baseline.
    warm = _workload("warm")
    await _cas(harness, alice, _claim(harness, alice, warm, 1, 0))
    await _cas(harness, bob, _claim(harness, bob, warm, 1, 1))
    await anyio.sleep(0.05)
    tasks = len(anyio.get_running_tasks())
    for delay in (0.0, 0.0005, 0.002, 0.008):
        workload = _workload("cancel")
        claim = _claim(harness, alice, workload, 1, 0)
        with anyio.move_on_after(delay):
            await alice.compare_and_set_claim(claim, timeout=harness.timeout)
        # Whatever the cancelled call did, a retry by the same claimant wins
        # (it either holds the epoch already or nobody does) and bob loses.
        again = attrs.evolve(claim, claimed_at=claim.claimed_at + 0.001)
        outcome = await _cas(harness, alice, again)
        if not outcome.won:
            raise fail(check, f"after a cancelled claim, alice's retry lost: {outcome!r}")
        rival = _claim(harness, bob, workload, 1, 1)
        if (await _cas(harness, bob, rival)).won:
            raise fail(check, "after a cancelled claim and a retry, a rival won the same epoch")
    with anyio.move_on_after(harness.timeout):
        while len(anyio.get_running_tasks()) > tasks:  # noqa: ASYNC110 - waits for other tasks
            await anyio.sleep(0.01)
    left = len(anyio.get_running_tasks()) - tasks
    if left > 0:
        raise fail(check, f"cancelled claims left {left} task(s) running")


async def _check_store_down(harness: ClaimsHarness) -> None:
    check = "store_down"
    store_down = probe(harness.store_down, "store_down/store_up")
    store_up = probe(harness.store_up, "store_down/store_up")
    alice, bob, _carol = _pick(harness, check)[:3]
    workload = _workload("down")
    held = _claim(harness, alice, workload, 1, 0)
    await _claim_as_expected(harness, check, "epoch 1", alice, held, None)
    await store_down()
    try:
        rival = _claim(harness, bob, workload, 1, 1)
        try:
            outcome = await _cas(harness, bob, rival)
        except TransportError:
            pass
        else:
            raise fail(
                check,
                f"with the store unreachable, a claim must raise TransportError, got {outcome!r}",
            )
        try:
            await _release(harness, alice, held)
        except TransportError:
            pass
        else:
            raise fail(check, "with the store unreachable, release_claim must raise TransportError")
    finally:
        await store_up()
    last: TransportError | None = None
    with anyio.move_on_after(harness.timeout * 4):
        while True:
            try:
                result = await _cas(harness, bob, _claim(harness, bob, workload, 1, 1))
            except TransportError as exc:
                last = exc
                await anyio.sleep(0.05)
                continue
            _expect(check, "after the store came back", result, rival, held)
            return
    raise fail(check, f"the store is back but claims still fail: {last}")


_CLAIM_CHECKS: tuple[tuple[str, Callable[[ClaimsHarness], Awaitable[None]]], ...] = (
    ("first_wins", _check_first_wins),
    ("epochs", _check_epochs),
    ("release", _check_release),
    ("claimant", _check_claimant),
    ("forged", _check_forged),
    ("race", _check_race),
    ("cancellation", _check_cancellation),
    ("store_down", _check_store_down),
)

#: Names of the checks of :func:`check_atomic_claims`, in the order they run.
CLAIM_CHECKS: tuple[str, ...] = tuple(name for name, _check in _CLAIM_CHECKS)


async def check_atomic_claims(
    factory: ClaimsHarnessFactory, *, only: Collection[str] | None = None
) -> ConformanceReport:
    """Check an :class:`~standby.protocols.AtomicClaims` implementation against its contract.

    ``factory()`` must return an async context manager yielding a fresh
    :class:`ClaimsHarness`; every check enters its own. Every expected
    outcome follows :func:`~standby.protocols.claim_wins`. The checks:

    ``first_wins``
        the first claim of an epoch wins; a rival's claim of that epoch
        loses and names the holder; the holder's retry wins again.
    ``epochs``
        a later epoch beats a held one; the same or an earlier epoch by
        another claimant loses; workloads are independent.
    ``release``
        only the holder's release frees the epoch; release is idempotent.
    ``claimant``
        a claim is held in the name of the transport that made it, never
        the claimant written in its body.
    ``forged``
        (needs ``forge_claim``) a claim forged in someone's name is never
        reported as theirs, and never gives an epoch to two claimants.
    ``race``
        every transport claims one epoch at once, several times: exactly one
        wins, and every loser that names a holder names the winner.
    ``cancellation``
        a claim cancelled at any moment leaves no task behind; the same
        claimant's retry then wins and a rival loses.
    ``store_down``
        (needs ``store_down``/``store_up``) an unreachable store raises
        :class:`~standby.TransportError` (never a made-up outcome); once it
        is back, the held epoch is still held.

    ``only`` restricts the run to some checks. Raises
    :class:`AssertionError` at the first failure; returns a
    :class:`~standby.testing.ConformanceReport` otherwise.
    """
    return await run_suite("atomic claims", _CLAIM_CHECKS, factory, only)
