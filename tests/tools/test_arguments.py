"""The option types of the `arbiter` command: what each refuses, and that the CLI exits 2 naming
the option instead of running with nan, inf or a value out of range."""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tools.arguments import integer, number

ROOT = Path(__file__).resolve().parents[2]


@given(st.integers(-10**6, 10**6), st.integers(-100, 100), st.one_of(st.none(), st.integers(-100, 100)))
def test_integer_accepts_exactly_its_range(value, low, high):
    parse = integer(low, high)
    if value < low or (high is not None and value > high):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(str(value))
    else:
        assert parse(str(value)) == value


@given(st.one_of(st.floats(), st.sampled_from([0.0, -0.0, 5.0, 600.0, 600.0000001])), st.booleans())
def test_number_accepts_only_finite_values_in_range(value, above):
    parse = number(0, 600, above=above)
    ok = math.isfinite(value) and 0 <= value <= 600 and not (above and value == 0)
    if ok:
        assert parse(repr(value)) == value
    else:
        with pytest.raises(argparse.ArgumentTypeError):
            parse(repr(value))


@pytest.mark.parametrize("arguments", [
    ["bench", "arena", "--warmup", "nan"], ["bench", "sweep", "--duration", "inf"], ["bench", "sweep", "--start", "0"],
    ["bench", "sweep", "--cpu-pct", "nan"], ["bench", "attack", "--rest", "-1"], ["bench", "attack", "--matches", "0"],
    ["soak", "--duration", "inf"], ["faults", "crash", "--kills", "1"], ["up", "--token-ttl", "nan"],
    ["bench", "replay", "--ticks", "x"]])
def test_the_cli_refuses_with_exit_2_naming_the_option(arguments):
    done = subprocess.run([sys.executable, "-m", "tools.cli", *arguments], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2, (arguments, done.stderr[-300:])
    assert f"error: argument {arguments[-2]}" in done.stderr and "Traceback" not in done.stderr
