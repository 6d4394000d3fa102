"""Argument types shared by the command lines (``python -m standby demo|simulate``).

Each raises :class:`argparse.ArgumentTypeError` with a one-line message that
says what was expected and what was given; argparse then prints it on one
line and exits with status 2.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["integer_at_least", "number_between", "seconds"]


def integer_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum``, with a one-line error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


def seconds(text: str, *, positive: bool = False) -> float:
    """A time in seconds: a finite number ``>= 0`` (``> 0`` when ``positive``).

    ``inf``, ``nan``, negative numbers and non-numbers are refused with a
    one-line :class:`argparse.ArgumentTypeError`.
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds, got {text!r}")
    if positive and value <= 0:
        raise argparse.ArgumentTypeError(f"expected a duration > 0 in seconds, got {text!r}")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a time >= 0 in seconds, got {text!r}")
    return value


def number_between(low: float, high: float) -> Callable[[str], float]:
    """An argparse type: a finite number in ``[low, high]``, with a one-line error."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(
                f"expected a finite number between {low:g} and {high:g}, got {text!r}"
            )
        return value

    return parse
