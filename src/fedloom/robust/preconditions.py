"""The cohort-size conditions robust reducers need, checked with one kind of error.

A robust reducer tolerates at most ``f`` Byzantine (arbitrary, possibly colluding) updates in a
cohort of ``n`` only when ``n`` is large enough; below that its guarantee is void, so it refuses
to run rather than returning a number that means nothing.
"""

from __future__ import annotations

from fedloom.core import validate


class CohortTooSmall(ValueError):
    """A robust reducer received fewer updates than its guarantee needs for ``attackers``."""


def attackers_count(value: int) -> int:
    """``attackers`` as a validated integer ``>= 0``."""
    return validate.positive_int("attackers", value, minimum=0)


def require(name: str, *, n: int, attackers: int, minimum: int, rule: str) -> None:
    """Raise :class:`CohortTooSmall` unless ``n >= minimum``.

    ``rule`` is the paper's condition in words (``"n > 2f + 2"``), quoted in the message.
    """
    if n < minimum:
        raise CohortTooSmall(
            f"{name} with attackers={attackers} needs at least {minimum} updates ({rule}), "
            f"got {n}; sample a larger cohort (and set min_cohort >= {minimum}) or assume "
            "fewer attackers"
        )
