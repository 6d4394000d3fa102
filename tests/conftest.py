"""Shared fixtures.

``anyio_backend`` defaults to trio on a virtual clock
(``MockClock(autojump_threshold=0)``): an async test that waits an hour of
protocol time takes milliseconds, and no test sleeps for real. A test module
that must also run on asyncio overrides ``anyio_backend`` (see
``tests/test_node.py``'s smoke tests).
"""

from __future__ import annotations

import os
import random
from typing import Any

import pytest
from hypothesis import settings
from trio.testing import MockClock

# Hypothesis: `HYPOTHESIS_PROFILE=ci` (set by .ci/run) derandomizes every
# property test so CI is repeatable; locally each run explores anew.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def _campaign_seed() -> int:
    text = os.environ.get(CAMPAIGN_SEED_VARIABLE, "").strip()
    if not text:
        return random.SystemRandom().randrange(2**31)
    try:
        return int(text)
    except ValueError:
        raise pytest.UsageError(
            f"{CAMPAIGN_SEED_VARIABLE} must be an integer seed, got {text!r}"
        ) from None


#: The safety campaign (tests/test_campaign.py) draws a fresh base seed for
#: every pytest run, so CI keeps exploring; set the variable to replay one.
CAMPAIGN_SEED_VARIABLE = "STANDBY_CAMPAIGN_SEED"
CAMPAIGN_SEED = _campaign_seed()


def pytest_report_header() -> str:
    """The campaign's seed, at the top of every pytest run."""
    return (
        f"campaign seed: {CAMPAIGN_SEED} (replay: "
        f"{CAMPAIGN_SEED_VARIABLE}={CAMPAIGN_SEED} python -m pytest tests/test_campaign.py)"
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """A failed campaign repeats its seed at the end, next to the short summary."""
    failed = terminalreporter.stats.get("failed", [])
    if any("test_campaign.py::" in report.nodeid for report in failed):
        terminalreporter.write_sep("-", "safety campaign")
        terminalreporter.write_line(
            f"the campaign failed with seed {CAMPAIGN_SEED}; replay it with "
            f"{CAMPAIGN_SEED_VARIABLE}={CAMPAIGN_SEED} python -m pytest tests/test_campaign.py "
            "(each failure above names the command that reruns its run alone)"
        )


@pytest.fixture(scope="session")
def campaign_seed() -> int:
    """The base seed of this run's safety campaign (see ``CAMPAIGN_SEED``)."""
    return CAMPAIGN_SEED


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    """Trio with a fresh autojumping mock clock for every test."""
    return ("trio", {"clock": MockClock(autojump_threshold=0)})
