"""Types for the `arbiter` command's options: each refuses a value the option cannot use.

argparse turns what they raise (ArgumentTypeError, or the ValueError of `int` and `float`) into
exit status 2 and `error: argument --NAME: ...`. Floats are always finite: `nan` and `inf` parse
as floats and would otherwise run a benchmark forever or fail deep inside it.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def integer(low: int, high: int | None = None) -> Callable[[str], int]:
    """An int of at least `low` (and at most `high`)."""
    def parse(text: str) -> int:
        value = int(text)
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be at least {low}" if high is None else
                                             f"must be from {low} to {high}")
        return value

    parse.__name__ = "integer"  # (argparse names the type in "invalid integer value: 'x'")
    return parse


def number(low: float, high: float | None = None, *, above: bool = False) -> Callable[[str], float]:
    """A finite float of at least `low` (more than `low` with `above`), and at most `high`."""
    def parse(text: str) -> float:
        value = float(text)
        if not math.isfinite(value) or value < low or (above and value == low) or (high is not None and value > high):
            bound = f"more than {low:g}" if above else f"{low:g} or more"
            raise argparse.ArgumentTypeError(f"must be a finite number {bound}" if high is None else
                                             f"must be a finite number {bound}, at most {high:g}")
        return value

    parse.__name__ = "number"
    return parse


positive_int = integer(1)
non_negative_int = integer(0)
positive_float = number(0, above=True)
non_negative_float = number(0)
