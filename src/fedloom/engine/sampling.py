"""Cohort sampling: which clients take part in a round.

Three rules, each a frozen dataclass whose ``sample`` draws from the generator it is given:
a fixed count without replacement, a fraction of the population, and Poisson sampling where each
client joins independently with probability ``q`` (the sampling that DP accountants assume for
amplification by subsampling, so it must be what the engine actually does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from fedloom.core import validate

Ids = npt.NDArray[np.int64]


class Sampler(Protocol):
    """Draw a round's cohort (sorted positions into the population) from a generator."""

    def sample(self, population: int, rng: np.random.Generator) -> Ids: ...

    def check(self, population: int) -> None:
        """Raise ValueError if this rule cannot sample from ``population`` clients."""
        ...


@dataclass(frozen=True)
class FixedCount:
    """Exactly ``count`` clients, uniformly without replacement."""

    count: int

    def __post_init__(self) -> None:
        validate.positive_int("cohort", self.count)

    def check(self, population: int) -> None:
        if self.count > population:
            raise ValueError(
                f"cohort={self.count} is larger than the population of {population} clients; "
                f"use a cohort between 1 and {population}"
            )

    def sample(self, population: int, rng: np.random.Generator) -> Ids:
        self.check(population)
        return np.sort(rng.choice(population, size=self.count, replace=False)).astype(np.int64)


@dataclass(frozen=True)
class Fraction:
    """``max(1, round(fraction · population))`` clients, uniformly without replacement."""

    fraction: float

    def __post_init__(self) -> None:
        validate.in_range("cohort fraction", self.fraction, 0.0, 1.0, low_open=True)

    def check(self, population: int) -> None:
        validate.positive_int("population", population)

    def sample(self, population: int, rng: np.random.Generator) -> Ids:
        count = max(1, round(self.fraction * population))
        return FixedCount(count).sample(population, rng)


@dataclass(frozen=True)
class Poisson:
    """Each client joins independently with probability ``rate``; the cohort size varies."""

    rate: float

    def __post_init__(self) -> None:
        validate.in_range("poisson rate", self.rate, 0.0, 1.0, low_open=True)

    def check(self, population: int) -> None:
        validate.positive_int("population", population)

    def sample(self, population: int, rng: np.random.Generator) -> Ids:
        return np.flatnonzero(rng.random(population) < self.rate).astype(np.int64)


def fixed(count: int) -> FixedCount:
    """A cohort of exactly ``count`` clients."""
    return FixedCount(count)


def fraction(share: float) -> Fraction:
    """A cohort of ``share`` of the population."""
    return Fraction(share)


def poisson(rate: float) -> Poisson:
    """Poisson sampling with inclusion probability ``rate``."""
    return Poisson(rate)


def as_sampler(cohort: int | float | Sampler) -> Sampler:
    """An int is a fixed count, a float in (0, 1] a fraction; samplers pass through."""
    if isinstance(cohort, bool):
        raise ValueError(
            f"cohort must be an int count, a float fraction or a sampler, got {cohort!r}"
        )
    if isinstance(cohort, int):
        return FixedCount(cohort)
    if isinstance(cohort, float):
        return Fraction(cohort)
    if hasattr(cohort, "sample") and hasattr(cohort, "check"):
        return cohort
    raise ValueError(
        "cohort must be an int count, a float fraction in (0, 1], or "
        f"fixed()/fraction()/poisson(), got {cohort!r}"
    )
