"""The geometric median by the smoothed Weiszfeld algorithm (RFA).

Pillutla, Kakade and Harchaoui, *Robust Aggregation for Federated Learning*, IEEE Transactions
on Signal Processing, 2022. The geometric median ``argmin_z Σ αᵢ ‖z − xᵢ‖`` has breakdown point
1/2: fewer than half the updates, however chosen, cannot move it arbitrarily far. Weiszfeld's
iteration ``z ← Σ βᵢ xᵢ / Σ βᵢ`` with ``βᵢ = αᵢ / max(ν, ‖z − xᵢ‖)`` approximates it; the
smoothing ``ν`` keeps a step defined when ``z`` lands on an update.
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
class GeometricMedian:
    """The (approximate) geometric median of the updates.

    ``weighted`` uses the clients' example counts as the ``αᵢ`` (the paper's choice); by default
    every update counts the same, since a count is a client's own claim. Iterates at most
    ``iterations`` times, stopping once a step moves the estimate by less than ``tolerance``
    times its norm. Needs ``n >= 2f + 1`` for ``attackers = f``.
    """

    attackers: int = 0
    iterations: int = 100
    smoothing: float = 1e-6
    tolerance: float = 1e-7
    weighted: bool = False

    def __post_init__(self) -> None:
        attackers_count(self.attackers)
        validate.positive_int("iterations", self.iterations)
        validate.positive("smoothing", self.smoothing)
        validate.non_negative("tolerance", self.tolerance)
        if not isinstance(self.weighted, bool):
            raise ValueError(f"weighted must be true or false, got {self.weighted!r}")

    @property
    def linear(self) -> bool:
        return False

    @property
    def min_cohort(self) -> int:
        """The fewest updates this reducer accepts: ``2f + 1``."""
        return 2 * self.attackers + 1

    def __call__(
        self, updates: npt.NDArray[np.float32], weights: npt.NDArray[np.float64]
    ) -> Vector:
        check_cohort(updates, weights)
        require(
            "geometric median", n=len(updates), attackers=self.attackers,
            minimum=self.min_cohort, rule="n >= 2f + 1",
        )  # fmt: skip
        return weiszfeld(
            updates.astype(np.float64),
            weights.astype(np.float64) if self.weighted else np.ones(len(updates)),
            iterations=self.iterations,
            smoothing=self.smoothing,
            tolerance=self.tolerance,
        ).astype(np.float32)


def weiszfeld(
    points: npt.NDArray[np.float64],
    alphas: npt.NDArray[np.float64],
    *,
    iterations: int,
    smoothing: float,
    tolerance: float,
) -> npt.NDArray[np.float64]:
    """Smoothed Weiszfeld iterations from the weighted mean (Pillutla et al. 2022, Alg. 2)."""
    alphas = alphas / alphas.sum()
    z: npt.NDArray[np.float64] = alphas @ points
    for _ in range(iterations):
        distances = np.linalg.norm(points - z, axis=1)
        betas = alphas / np.maximum(smoothing, distances)
        step = (betas @ points) / betas.sum() - z
        z = z + step
        if np.linalg.norm(step) <= tolerance * max(float(np.linalg.norm(z)), smoothing):
            break
    return z


def geometric_median(
    *, attackers: int = 0, iterations: int = 100, smoothing: float = 1e-6, weighted: bool = False
) -> GeometricMedian:
    """The geometric median by smoothed Weiszfeld (RFA, Pillutla et al. 2022)."""
    return GeometricMedian(
        attackers=attackers, iterations=iterations, smoothing=smoothing, weighted=weighted
    )
