"""Checks for the numbers and names users pass in (``--param``, benchmark settings).

A value is checked where it enters, so a run never records a result under settings that
cannot be right (a negative step cap, an empty message, a negative training size).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from interlat_bench.harness.core.errors import UserError


@dataclass(frozen=True)
class Check:
    test: Callable[[Any], bool]
    expected: str


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def int_range(lo: int, hi: int | None = None) -> Check:
    """An integer in [lo, hi] (no upper bound when hi is None)."""
    if hi is None:
        return Check(lambda v: _int(v) and v >= lo, f"an integer >= {lo}")
    return Check(lambda v: _int(v) and lo <= v <= hi, f"an integer {lo}..{hi}")


POSITIVE_INT = int_range(1)
OPTIONAL_POSITIVE_INT = Check(lambda v: v is None or (_int(v) and v >= 1), "an integer >= 1 or null")
BOOL = Check(lambda v: isinstance(v, bool), "true or false")
OPTIONAL_POSITIVE_FLOAT = Check(lambda v: v is None or (_number(v) and v > 0), "a number > 0 or null")
POSITIVE_NUMBER = Check(lambda v: _number(v) and v > 0, "a number > 0")
UNIT_INTERVAL = Check(lambda v: _number(v) and 0 <= v <= 1, "a number from 0 to 1")


def one_of(*names: str) -> Check:
    return Check(lambda v: v in names, "one of " + ", ".join(names))


def check_params(where: str, params: dict[str, Any], checks: dict[str, Check], owner: str) -> None:
    """Raise a one-line UserError for the first value its check rejects."""
    for name, value in params.items():
        check = checks.get(name)
        if check is not None and not check.test(value):
            raise UserError(f"{where} {name}={value!r} ({owner}): expected {check.expected}")


# Values as the command line and grid files give them.


def split_csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def key_values(values: list[str], flag: str = "--param") -> dict:
    """``key=value`` pairs; a value is JSON where it parses (numbers, lists), else text."""
    import json

    out = {}
    for v in values:
        if "=" not in v:
            raise UserError(f"{flag} {v!r}: expected key=value")
        k, raw = v.split("=", 1)
        try:
            out[k.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[k.strip()] = raw
    return out


TAG = r"[A-Za-z0-9][A-Za-z0-9_.:-]*"


def tags(values: list[str], flag: str = "--tag") -> list[str]:
    """Run labels, comma-separated or repeated."""
    import re

    found = [t for v in values for t in v.split(",") if t]
    for tag in found:
        if not re.fullmatch(TAG, tag):
            raise UserError(f"{flag} {tag!r}: expected letters, digits, '_', '.', ':' or '-'")
    return found
