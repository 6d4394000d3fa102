"""Shared fixtures.

``anyio_backend`` defaults to trio on a virtual clock
(``MockClock(autojump_threshold=0)``): an async test that waits an hour of
protocol time takes milliseconds, and no test sleeps for real. A test module
that must also run on asyncio overrides ``anyio_backend`` (see
``tests/test_node.py``'s smoke tests).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import settings
from trio.testing import MockClock

# Hypothesis: `HYPOTHESIS_PROFILE=ci` (set by .ci/run) derandomizes every
# property test so CI is repeatable; locally each run explores anew.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    """Trio with a fresh autojumping mock clock for every test."""
    return ("trio", {"clock": MockClock(autojump_threshold=0)})
