"""Argument checks that fail at construction time with a message a user can act on.

Every message names the argument, shows the bad value, and says what would be accepted.
"""

from __future__ import annotations

import math
from collections.abc import Collection


def positive(name: str, value: float) -> float:
    """``value > 0`` and finite."""
    if not _is_real(value) or not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def non_negative(name: str, value: float) -> float:
    """``value >= 0`` and finite."""
    if not _is_real(value) or not value >= 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def in_range(
    name: str,
    value: float,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``low <= value <= high``, with either end optionally open."""
    ok = _is_real(value) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (
            value < high if high_open else value <= high
        )
    if not ok:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        raise ValueError(f"{name} must be in {left}{low}, {high}{right}, got {value!r}")
    return float(value)


def positive_int(name: str, value: int, *, minimum: int = 1) -> int:
    """An integer (not a bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def one_of(name: str, value: str, accepted: Collection[str]) -> str:
    """``value`` is one of ``accepted``."""
    if value not in accepted:
        raise ValueError(f"{name} must be one of {sorted(accepted)}, got {value!r}")
    return value


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
