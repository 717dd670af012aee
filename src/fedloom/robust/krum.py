"""Krum, Multi-Krum and Bulyan: keep the updates that sit closest to many others.

Blanchard, El Mhamdi, Guerraoui and Stainer, *Machine Learning with Adversaries: Byzantine
Tolerant Gradient Descent*, NeurIPS 2017 (Krum, Multi-Krum); El Mhamdi, Guerraoui and Rouault,
*The Hidden Vulnerability of Distributed Learning in Byzantium*, ICML 2018 (Bulyan).

Krum scores each update by the sum of squared distances to its ``n − f − 2`` nearest neighbours
and keeps the lowest. Ties go to the lexicographically smaller update, so the result never
depends on the order the clients arrived in. All three ignore the clients' weights
(self-reported counts).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedloom.core import validate
from fedloom.core.layout import Vector
from fedloom.reducers import check_cohort
from fedloom.robust.preconditions import attackers_count, require

Matrix = npt.NDArray[np.float64]


def squared_distances(points: Matrix) -> Matrix:
    """``[n, n]`` squared Euclidean distances, exactly symmetric (each pair computed alike)."""
    return np.stack([((points - row) ** 2).sum(axis=1) for row in points])


def krum_scores(distances: Matrix, attackers: int) -> Matrix:
    """Each point's sum of squared distances to its ``n − f − 2`` nearest other points
    (at least one neighbour, at most all of them)."""
    n = len(distances)
    neighbours = min(max(n - attackers - 2, 1), n - 1)
    if neighbours == 0:
        return np.zeros(n)
    scores = []
    for i in range(n):
        others = np.sort(np.delete(distances[i], i))
        scores.append(float(others[:neighbours].sum()))
    return np.asarray(scores)


def krum_order(points: Matrix, attackers: int) -> list[int]:
    """Indices of ``points`` from the best Krum score to the worst; equal scores go to the
    lexicographically smaller update, so the order never depends on the clients' order."""
    scores = krum_scores(squared_distances(points), attackers)
    order: list[int] = []
    for score in np.unique(scores):
        tied = np.flatnonzero(scores == score)
        order.extend(int(i) for i in tied[np.lexsort(points[tied].T[::-1])])
    return order


@dataclass(frozen=True)
class Krum:
    """The update with the lowest Krum score; ``select > 1`` averages the ``select`` best
    (Multi-Krum; ``select = n − f`` when 0). Needs ``n > 2f + 2``."""

    attackers: int = 0
    select: int = 1

    def __post_init__(self) -> None:
        attackers_count(self.attackers)
        validate.positive_int("select", self.select, minimum=0)

    @property
    def linear(self) -> bool:
        return False

    @property
    def min_cohort(self) -> int:
        """The fewest updates this reducer accepts: ``2f + 3``."""
        return 2 * self.attackers + 3

    def __call__(
        self, updates: npt.NDArray[np.float32], weights: npt.NDArray[np.float64]
    ) -> Vector:
        check_cohort(updates, weights)
        name = "krum" if self.select == 1 else "multi-krum"
        n = len(updates)
        require(name, n=n, attackers=self.attackers, minimum=self.min_cohort, rule="n > 2f + 2")
        keep = n - self.attackers if self.select == 0 else self.select
        if keep > n - self.attackers:
            raise ValueError(
                f"select must be at most n − f = {n - self.attackers} for a cohort of {n} with "
                f"attackers={self.attackers}, got {self.select}"
            )
        points = updates.astype(np.float64)
        chosen = krum_order(points, self.attackers)[:keep]
        result: Matrix = points[sorted(chosen)].mean(axis=0)
        return result.astype(np.float32)


@dataclass(frozen=True)
class Bulyan:
    """Bulyan: pick ``θ = n − 2f`` updates by Krum, one at a time (each pick leaves the pool),
    then average, per coordinate, the ``β = θ − 2f`` picked values closest to their median.
    Needs ``n >= 4f + 3``."""

    attackers: int = 0

    def __post_init__(self) -> None:
        attackers_count(self.attackers)

    @property
    def linear(self) -> bool:
        return False

    @property
    def min_cohort(self) -> int:
        """The fewest updates this reducer accepts: ``4f + 3``."""
        return 4 * self.attackers + 3

    def __call__(
        self, updates: npt.NDArray[np.float32], weights: npt.NDArray[np.float64]
    ) -> Vector:
        check_cohort(updates, weights)
        n, f = len(updates), self.attackers
        require("bulyan", n=n, attackers=f, minimum=self.min_cohort, rule="n >= 4f + 3")
        pool = updates.astype(np.float64)
        picked = []
        for _ in range(n - 2 * f):
            best = krum_order(pool, f)[0]
            picked.append(pool[best])
            pool = np.delete(pool, best, axis=0)
        selection = np.stack(picked)
        beta = len(selection) - 2 * f
        centre = np.median(selection, axis=0)
        # Per coordinate, the β values nearest the median; ties go to the smaller value.
        order = np.lexsort((selection, np.abs(selection - centre)), axis=0)
        nearest = np.take_along_axis(selection, order[:beta], axis=0)
        result: Matrix = np.sort(nearest, axis=0).mean(axis=0)
        return result.astype(np.float32)


def krum(*, attackers: int) -> Krum:
    """Krum (Blanchard et al. 2017); needs ``n > 2·attackers + 2``."""
    return Krum(attackers=attackers)


def multi_krum(*, attackers: int, select: int = 0) -> Krum:
    """Multi-Krum (Blanchard et al. 2017): the mean of the ``select`` best-scored updates
    (``n − attackers`` when 0); needs ``n > 2·attackers + 2``."""
    return Krum(attackers=attackers, select=select)


def bulyan(*, attackers: int) -> Bulyan:
    """Bulyan (El Mhamdi et al. 2018) over Krum; needs ``n >= 4·attackers + 3``."""
    return Bulyan(attackers=attackers)
