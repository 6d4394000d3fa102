"""What every conformance suite shares: the runner, its report, skips and failures.

A suite is a table of named checks; :func:`run_suite` enters a fresh harness
for each, records the ones that pass and the ones a missing probe skips, and
lets the first failure (an :class:`AssertionError` naming its check) through.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

import attrs

__all__ = ["ConformanceReport", "Skip", "fail", "probe", "run_suite", "unique"]

T = TypeVar("T")


@attrs.frozen
class ConformanceReport:
    """What a suite did: the checks that passed and the skipped ones, with why."""

    passed: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...] = ()


class Skip(Exception):
    """A check cannot run with this harness (a probe is missing)."""


def fail(check: str, text: str) -> AssertionError:
    """The failure of ``check``: its message starts with the check's name in brackets."""
    return AssertionError(f"[{check}] {text}")


def unique(what: str, *, suite: str = "conformance") -> str:
    """A fresh name (a workload id) no earlier check or run has used."""
    return f"{suite}-{what}-{uuid.uuid4().hex[:12]}"


async def run_suite(
    suite: str,
    checks: Sequence[tuple[str, Callable[[Any], Awaitable[None]]]],
    factory: Callable[[], AbstractAsyncContextManager[Any]],
    only: Collection[str] | None,
) -> ConformanceReport:
    """Run ``checks`` (or the ``only`` ones), each in a fresh harness from ``factory``."""
    names = [name for name, _check in checks]
    if only is not None:
        unknown = set(only) - set(names)
        if unknown:
            raise ValueError(f"unknown {suite} checks {sorted(unknown)}; known: {names}")
    passed: list[str] = []
    skipped: list[tuple[str, str]] = []
    for name, check in checks:
        if only is not None and name not in only:
            continue
        async with factory() as harness:
            try:
                await check(harness)
            except Skip as why:
                skipped.append((name, str(why)))
                continue
        passed.append(name)
    return ConformanceReport(tuple(passed), tuple(skipped))


def probe(value: T | None, what: str) -> T:
    """An optional probe of a harness; the check is skipped when it is missing.

    ``what`` completes the reason: "the harness offers no {what}".
    """
    if value is None:
        raise Skip(f"the harness offers no {what}")
    return value
