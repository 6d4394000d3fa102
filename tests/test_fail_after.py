"""standby.aio.fail_after: anyio's fail_after, entered without its generator wrappers.

On trio (mock clock) and on asyncio it lets a block that ends in time go on,
raises ``TimeoutError`` when the block outlasts its delay, lets the block's
own exceptions through, and hands out the cancel scope it enters, like
``anyio.fail_after``.
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest
from trio.testing import MockClock

from standby.aio import fail_after

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    if request.param == "trio":
        return ("trio", {"clock": MockClock(autojump_threshold=0)})
    return "asyncio"


async def test_a_block_that_ends_in_time_goes_on() -> None:
    with fail_after(1.0) as scope:
        await anyio.sleep(0.01)
    assert not scope.cancel_called
    assert not scope.cancelled_caught


async def test_a_block_that_outlasts_its_delay_raises_timeout_error() -> None:
    start = anyio.current_time()
    with pytest.raises(TimeoutError), fail_after(0.05):
        await anyio.sleep(3600)
    assert anyio.current_time() - start < 1.0


async def test_the_blocks_own_errors_go_through() -> None:
    async def fail() -> None:
        with fail_after(1.0):
            await anyio.lowlevel.checkpoint()
            raise KeyError("own")

    with pytest.raises(KeyError):
        await fail()


async def test_a_scope_cancelled_by_hand_ends_the_block_without_an_error() -> None:
    with fail_after(1.0) as scope:
        scope.cancel()
        await anyio.sleep(3600)
    assert scope.cancelled_caught


async def test_an_outer_cancellation_goes_through() -> None:
    with anyio.move_on_after(0.05) as outer:
        with fail_after(1.0):
            await anyio.sleep(3600)
    assert outer.cancelled_caught
