"""A privacy budget: the most (ε, δ) a run may spend, and the accountant that measures it."""

from __future__ import annotations

from dataclasses import dataclass

from fedloom.core import validate

ACCOUNTANT_NAMES = ("rdp", "pld")


@dataclass(frozen=True)
class PrivacyBudget:
    """At most ``max_epsilon`` at ``delta``, measured by ``accountant`` (``"rdp"`` or ``"pld"``).

    A run whose plan (every scheduled round) would exceed the budget is refused before it
    starts, unless ``stop_early`` is set: then it trains and stops before the first round that
    would exceed it. Either way no round that would exceed the budget ever runs.
    """

    max_epsilon: float
    delta: float
    accountant: str = "rdp"
    stop_early: bool = False

    def __post_init__(self) -> None:
        validate.positive("max_epsilon", self.max_epsilon)
        validate.in_range("delta", self.delta, 0.0, 1.0, low_open=True, high_open=True)
        validate.one_of("accountant", self.accountant, ACCOUNTANT_NAMES)
        if not isinstance(self.stop_early, bool):
            raise ValueError(f"stop_early must be true or false, got {self.stop_early!r}")


def budget(
    *, max_epsilon: float, delta: float, accountant: str = "rdp", stop_early: bool = False
) -> PrivacyBudget:
    """A :class:`PrivacyBudget`."""
    return PrivacyBudget(max_epsilon, delta, accountant, stop_early)


def default_delta(population: int) -> float:
    """``1 / N^1.1``: a δ comfortably below ``1 / N``, used to report ε when no budget is set."""
    validate.positive_int("population", population)
    return float(population**-1.1)
