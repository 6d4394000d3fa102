"""Waiting primitives shared by the node and the adapters.

A layer of its own, beside :mod:`standby.protocols`: the node and the
adapters sit side by side and never import each other, and the core and the
protocols do no I/O, so a wait both need lives here. Everything here keeps a
simulated run on a virtual clock exactly as the anyio form would make it.
"""

from __future__ import annotations

from ._at_once import at_once, at_once_steps
from ._clock import LoopClock, monotonic, sleeper
from ._deadline import fail_after
from ._steps import StepLeg, Steps, run_steps
from ._wakeup import Wakeup

__all__ = [
    "LoopClock",
    "StepLeg",
    "Steps",
    "Wakeup",
    "at_once",
    "at_once_steps",
    "fail_after",
    "monotonic",
    "run_steps",
    "sleeper",
]
