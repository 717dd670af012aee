"""Argument checks shared by the data layer.

Every error names the argument, the bad value and what would be accepted, so that a user who
mistypes a configuration learns how to fix it from the message alone.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable


def check_int(name: str, value: object, *, minimum: int) -> int:
    """Return ``value`` as an ``int`` if it is an integer (not a bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_number(name: str, value: object, *, accepted: str, ok: Callable[[float], bool]) -> float:
    """Return ``value`` as a finite ``float`` for which ``ok`` holds; ``accepted`` describes it."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(float(value))
        or not ok(float(value))
    ):
        raise ValueError(f"{name} must be {accepted}, got {value!r}")
    return float(value)


def check_fraction(name: str, value: object) -> float:
    """Return ``value`` as a float in ``[0, 1)``: a share of examples that leaves some behind."""
    return check_number(name, value, accepted="a number in [0, 1)", ok=lambda v: 0.0 <= v < 1.0)


def check_clients(clients: object, available: int) -> int:
    """Return ``clients`` if it is an integer between 1 and the ``available`` examples."""
    count = check_int("clients", clients, minimum=1)
    if count > available:
        raise ValueError(
            f"clients={count} is more than the {available} examples to share out; "
            f"use at most {available} clients"
        )
    return count
