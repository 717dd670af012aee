"""How a round's cohort is drawn, as the privacy accountant must know it.

Amplification by subsampling depends on the exact sampling procedure, so every noise stage is
built with a :class:`PoissonSampling` or a :class:`FixedSampling` that states it, and the engine
refuses to train unless its own sampler draws cohorts exactly that way
(:func:`fedloom.engine.privacy_guard.check_sampling`).

- Poisson sampling (each client joins independently with probability ``q``) is what the
  DP-FedAvg analysis assumes (McMahan et al., *Learning Differentially Private Recurrent
  Language Models*, ICLR 2018). Neighbouring populations differ by adding or removing one client.
- Fixed-size sampling (exactly ``m`` of ``N`` clients, uniformly without replacement) is
  accounted as sampling without replacement (Wang, Balle and Kasiviswanathan, *Subsampled Rényi
  Differential Privacy and Analytical Moments Accountant*, AISTATS 2019), whose neighbouring
  relation is *replacing* one client: the sum's sensitivity is then twice the clipping bound.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedloom.core import validate

ADD_OR_REMOVE = "add_or_remove_one"
REPLACE = "replace_one"


@dataclass(frozen=True)
class PoissonSampling:
    """Each of ``population`` clients joins a round independently with probability ``rate``."""

    population: int
    rate: float

    def __post_init__(self) -> None:
        validate.positive_int("population", self.population)
        validate.in_range("rate", self.rate, 0.0, 1.0, low_open=True)

    @property
    def expected_size(self) -> float:
        """``q · N``: the fixed denominator of DP-FedAvg's estimator."""
        return self.rate * self.population

    @property
    def relation(self) -> str:
        """The neighbouring relation the accounting of this sampling is stated for."""
        return ADD_OR_REMOVE

    @property
    def sensitivity_factor(self) -> float:
        """How many clipping bounds one client can move the sum by under :attr:`relation`."""
        return 1.0

    def describe(self) -> str:
        return f"Poisson sampling with rate {self.rate:g} from {self.population} clients"


@dataclass(frozen=True)
class FixedSampling:
    """Exactly ``count`` of ``population`` clients a round, uniformly without replacement."""

    population: int
    count: int

    def __post_init__(self) -> None:
        validate.positive_int("population", self.population)
        validate.positive_int("count", self.count)
        if self.count > self.population:
            raise ValueError(
                f"count must be at most the population of {self.population}, got {self.count}"
            )

    @property
    def expected_size(self) -> float:
        return float(self.count)

    @property
    def relation(self) -> str:
        return REPLACE

    @property
    def sensitivity_factor(self) -> float:
        return 2.0

    def describe(self) -> str:
        return f"{self.count} of {self.population} clients without replacement"


Sampling = PoissonSampling | FixedSampling
"""A cohort sampling procedure the accountant understands."""


def poisson_sampling(*, population: int, rate: float) -> PoissonSampling:
    """Poisson sampling: each client joins with probability ``rate``."""
    return PoissonSampling(population=population, rate=rate)


def fixed_sampling(*, population: int, count: int) -> FixedSampling:
    """Fixed-size sampling: ``count`` clients without replacement."""
    return FixedSampling(population=population, count=count)
