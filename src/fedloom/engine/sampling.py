"""Cohort sampling: which clients take part in a round.

Three rules, each a frozen dataclass whose ``sample`` draws from the generator it is given:
a fixed count without replacement, a fraction of the population, and Poisson sampling where each
client joins independently with probability ``q`` (the sampling that DP accountants assume for
amplification by subsampling, so it must be what the engine actually does). A fourth,
:class:`Replay`, draws nothing: it replays a given cohort per round, so that a run can take part
in exactly the rounds another system (or an earlier run, or a trace) had.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

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


@dataclass(frozen=True, repr=False)
class Replay:
    """Round ``r``'s cohort is ``cohorts[r]``: positions into the population, given in advance.

    Each cohort is a non-empty sequence of distinct positions; a run may have at most
    ``len(cohorts)`` rounds. No randomness is drawn, so the same schedule gives the same cohorts
    whatever the run's seed. Differential privacy refuses it: no accountant knows its sampling.
    """

    cohorts: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        cohorts = tuple(tuple(_position(p, r) for p in cohort) for r, cohort in _rounds(self))
        object.__setattr__(self, "cohorts", cohorts)
        if not cohorts:
            raise ValueError("a replayed schedule needs at least one round's cohort, got none")
        for round_, cohort in enumerate(cohorts):
            if not cohort:
                raise ValueError(f"round {round_}'s cohort is empty; give every round a client")
            if len(set(cohort)) != len(cohort):
                raise ValueError(
                    f"round {round_}'s cohort lists a client more than once: {list(cohort)}"
                )

    def __repr__(self) -> str:
        sizes = sorted({len(c) for c in self.cohorts})
        return f"Replay({len(self.cohorts)} rounds, cohorts of {sizes[0]} to {sizes[-1]})"

    def check(self, population: int) -> None:
        validate.positive_int("population", population)
        largest = max(max(c) for c in self.cohorts)
        if largest >= population:
            raise ValueError(
                f"the replayed schedule names client position {largest}, but the population "
                f"has {population} clients (positions 0 to {population - 1})"
            )

    def cohort(self, round_: int, population: int) -> Ids:
        """Round ``round_``'s cohort, checked against ``population``."""
        if round_ >= len(self.cohorts):
            raise ValueError(
                f"the replayed schedule has cohorts for {len(self.cohorts)} rounds, and round "
                f"{round_} was asked for; give one cohort per round the run may take"
            )
        self.check(population)
        return np.array(self.cohorts[round_], dtype=np.int64)

    def sample(self, population: int, rng: np.random.Generator) -> Ids:
        raise TypeError(
            "a Replay depends on the round, not on a generator: draw its cohorts with "
            "fedloom.engine.sampling.draw(sampler, population, round_, seed)"
        )


def _rounds(replay: Replay) -> list[tuple[int, Sequence[int]]]:
    cohorts = replay.cohorts
    if isinstance(cohorts, np.ndarray):
        return list(enumerate(cohorts.tolist()))
    if isinstance(cohorts, str | bytes) or not isinstance(cohorts, Sequence):
        raise ValueError(
            f"cohorts must be a sequence of per-round sequences of client positions, got "
            f"{type(cohorts).__name__}"
        )
    out: list[tuple[int, Sequence[int]]] = []
    for round_, cohort in enumerate(cohorts):
        if isinstance(cohort, np.ndarray):
            cohort = cohort.tolist()
        if isinstance(cohort, str | bytes) or not isinstance(cohort, Sequence):
            raise ValueError(
                f"round {round_}'s cohort must be a sequence of client positions, got "
                f"{type(cohort).__name__}"
            )
        out.append((round_, cohort))
    return out


def _position(value: object, round_: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"round {round_}'s cohort holds {value!r}; positions are integers >= 0")
    return int(value)


def draw(sampler: Sampler, population: int, round_: int, seed: int) -> Ids:
    """Round ``round_``'s cohort of a run seeded ``seed``, as positions into the population.

    A :class:`Replay` looks its round up; every other sampler draws from a generator keyed by
    ``(seed, round_)``, so a round's cohort does not depend on earlier rounds (and a resumed run
    draws the cohorts it would have drawn).
    """
    if isinstance(sampler, Replay):
        return sampler.cohort(round_, population)
    return sampler.sample(population, np.random.default_rng([seed, round_, 0]))


def fixed(count: int) -> FixedCount:
    """A cohort of exactly ``count`` clients."""
    return FixedCount(count)


def fraction(share: float) -> Fraction:
    """A cohort of ``share`` of the population."""
    return Fraction(share)


def poisson(rate: float) -> Poisson:
    """Poisson sampling with inclusion probability ``rate``."""
    return Poisson(rate)


def replay(cohorts: Sequence[Sequence[int]] | npt.NDArray[np.integer[Any]]) -> Replay:
    """A cohort per round, given in advance: ``cohorts[r]`` lists round ``r``'s client
    positions (a ``[rounds, cohort]`` integer array works too)."""
    return Replay(cohorts)  # type: ignore[arg-type]  # __post_init__ normalizes to tuples


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
        f"fixed()/fraction()/poisson()/replay(), got {cohort!r}"
    )
