"""Reducers that bound each update's influence by its norm: centered clipping and the
norm-bounded mean.

Centered clipping: Karimireddy, He and Jaggi, *Learning from History for Byzantine Robust
Optimization*, ICML 2021. Norm-bounded mean: Sun, Kairouz, Suresh and McMahan, *Can You Really
Backdoor Federated Learning?*, 2019.
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


def clip_rows(rows: Matrix, bound: float) -> Matrix:
    """Each row scaled to L2 norm at most ``bound``: ``r · min(1, bound / ‖r‖)``."""
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    scale = np.minimum(1.0, bound / np.maximum(norms, 1e-300))
    clipped: Matrix = rows * scale
    return clipped


@dataclass(frozen=True)
class CenteredClipping:
    """``v ← v + (1/n) Σ clip_τ(xᵢ − v)``, repeated ``iterations`` times from a centre ``v₀``.

    The paper's centre is the previous aggregate (the server's momentum), which is what makes it
    robust over time: this reducer is *stateful*. Its state is that previous aggregate, a
    ``float32`` vector the engine keeps in ``ServerState.reducer`` (checkpointed with the run):
    :meth:`init` gives zeros, :meth:`reduce` returns the aggregate and the next state, which is
    the aggregate itself. Called as a plain reducer it starts from zero every time.

    ``radius`` is τ. Needs ``n >= 2f + 1`` for ``attackers = f`` (an honest majority; the paper's
    guarantee asks for a smaller attacker share still).
    """

    radius: float
    iterations: int = 1
    attackers: int = 0

    def __post_init__(self) -> None:
        validate.positive("radius", self.radius)
        validate.positive_int("iterations", self.iterations)
        attackers_count(self.attackers)

    @property
    def linear(self) -> bool:
        return False

    @property
    def min_cohort(self) -> int:
        """The fewest updates this reducer accepts: ``2f + 1``."""
        return 2 * self.attackers + 1

    def init(self, size: int) -> Vector:
        """The first centre: zeros, as the paper's momentum starts."""
        return np.zeros(size, dtype=np.float32)

    def reduce(
        self, state: Vector, updates: npt.NDArray[np.float32], weights: npt.NDArray[np.float64]
    ) -> tuple[Vector, Vector]:
        """The clipped aggregate around ``state``, and the next state (that aggregate)."""
        check_cohort(updates, weights)
        require(
            "centered clipping", n=len(updates), attackers=self.attackers,
            minimum=self.min_cohort, rule="n >= 2f + 1",
        )  # fmt: skip
        if state.shape != (updates.shape[1],):
            raise ValueError(
                f"centered clipping's state must have shape ({updates.shape[1]},), got "
                f"{state.shape}; was the reducer's state kept from another model?"
            )
        points = updates.astype(np.float64)
        centre = state.astype(np.float64)
        for _ in range(self.iterations):
            centre = centre + clip_rows(points - centre, self.radius).mean(axis=0)
        result = centre.astype(np.float32)
        return result, result.copy()

    def __call__(
        self, updates: npt.NDArray[np.float32], weights: npt.NDArray[np.float64]
    ) -> Vector:
        check_cohort(updates, weights)
        return self.reduce(self.init(updates.shape[1]), updates, weights)[0]


@dataclass(frozen=True)
class NormBoundedMean:
    """Clip every update to L2 norm ``bound``, then take the example-weighted mean.

    Sun et al. (2019) show this blunts model-replacement backdoors, whose updates must be large.
    It takes no ``attackers``: its guarantee is on each update's influence, ``bound · wᵢ / Σ w``,
    whatever their number. The weights are the clients' own example counts, as in FedAvg.
    """

    bound: float

    def __post_init__(self) -> None:
        validate.positive("bound", self.bound)

    @property
    def linear(self) -> bool:
        return False

    @property
    def min_cohort(self) -> int:
        """The fewest updates this reducer accepts."""
        return 1

    def __call__(
        self, updates: npt.NDArray[np.float32], weights: npt.NDArray[np.float64]
    ) -> Vector:
        check_cohort(updates, weights)
        clipped = clip_rows(updates.astype(np.float64), self.bound)
        result: Matrix = (weights @ clipped) / weights.sum()
        return result.astype(np.float32)


def centered_clipping(
    *, radius: float, iterations: int = 1, attackers: int = 0
) -> CenteredClipping:
    """Centered clipping (Karimireddy et al. 2021) with clipping radius ``radius``."""
    return CenteredClipping(radius=radius, iterations=iterations, attackers=attackers)


def norm_bounded_mean(*, bound: float) -> NormBoundedMean:
    """The mean of updates clipped to norm ``bound`` (Sun et al. 2019)."""
    return NormBoundedMean(bound=bound)
