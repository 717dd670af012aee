"""Coordinate-wise robust statistics: the median and the trimmed mean.

Yin, Chen, Ramchandran and Bartlett, *Byzantine-Robust Distributed Learning: Towards Optimal
Statistical Rates*, ICML 2018. Each coordinate of the result is computed from that coordinate
alone, so ``f`` arbitrary updates can move it at most to the edge of the honest values there.
Both ignore the clients' weights: a client's example count is its own claim, which an attacker
can inflate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedloom.core import validate
from fedloom.core.layout import Vector
from fedloom.reducers import check_cohort
from fedloom.robust.preconditions import attackers_count, require


@dataclass(frozen=True)
class CoordinateMedian:
    """The median of every coordinate (the mean of the middle two when ``n`` is even).

    With ``attackers = f`` it needs ``n >= 2f + 1`` updates, an honest majority in every
    coordinate.
    """

    attackers: int = 0

    def __post_init__(self) -> None:
        attackers_count(self.attackers)

    @property
    def linear(self) -> bool:
        return False

    @property
    def min_cohort(self) -> int:
        """The fewest updates this reducer accepts."""
        return 2 * self.attackers + 1

    def __call__(
        self, updates: npt.NDArray[np.float32], weights: npt.NDArray[np.float64]
    ) -> Vector:
        check_cohort(updates, weights)
        require(
            "coordinate median", n=len(updates), attackers=self.attackers,
            minimum=self.min_cohort, rule="n >= 2f + 1",
        )  # fmt: skip
        median: npt.NDArray[np.float64] = np.median(updates.astype(np.float64), axis=0)
        return median.astype(np.float32)


@dataclass(frozen=True)
class TrimmedMean:
    """Per coordinate, drop the ``trim`` largest and ``trim`` smallest values and average the
    rest (Yin et al.'s β-trimmed mean with ``β = trim / n``).

    ``trim`` defaults to ``attackers``; it must be at least ``attackers`` for the guarantee and
    leave at least one value: ``n >= 2·trim + 1``.
    """

    attackers: int = 0
    trim: int | None = None

    def __post_init__(self) -> None:
        attackers_count(self.attackers)
        if self.trim is not None:
            trim = validate.positive_int("trim", self.trim, minimum=0)
            if trim < self.attackers:
                raise ValueError(
                    f"trim must be >= attackers={self.attackers} (each side must drop at least "
                    f"as many values as there may be attackers), got {trim}"
                )

    @property
    def linear(self) -> bool:
        return False

    @property
    def cut(self) -> int:
        """How many values are dropped at each end of every coordinate."""
        return self.attackers if self.trim is None else self.trim

    @property
    def min_cohort(self) -> int:
        """The fewest updates this reducer accepts."""
        return 2 * self.cut + 1

    def __call__(
        self, updates: npt.NDArray[np.float32], weights: npt.NDArray[np.float64]
    ) -> Vector:
        check_cohort(updates, weights)
        require(
            "trimmed mean", n=len(updates), attackers=self.attackers, minimum=self.min_cohort,
            rule=f"n >= 2·trim + 1 with trim={self.cut}",
        )  # fmt: skip
        ordered = np.sort(updates.astype(np.float64), axis=0)
        kept = ordered[self.cut : len(updates) - self.cut]
        result: npt.NDArray[np.float64] = kept.mean(axis=0)
        return result.astype(np.float32)


def median(*, attackers: int = 0) -> CoordinateMedian:
    """The coordinate-wise median (Yin et al. 2018); needs ``n >= 2·attackers + 1``."""
    return CoordinateMedian(attackers=attackers)


def trimmed_mean(*, attackers: int, trim: int | None = None) -> TrimmedMean:
    """The coordinate-wise trimmed mean (Yin et al. 2018), dropping ``trim`` (default
    ``attackers``) values at each end; needs ``n >= 2·trim + 1``."""
    return TrimmedMean(attackers=attackers, trim=trim)
