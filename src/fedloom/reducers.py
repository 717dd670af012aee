"""Reducers: pure functions from a stacked cohort ``[clients, dims]`` and weights to one vector.

A reducer is *linear* when its output is a weighted sum of the inputs; only linear reducers can
run behind secure aggregation, which reveals nothing but a sum. Robust reducers (median, Krum…)
are non-linear and are refused there at build time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from fedloom.core.layout import Vector


class Reducer(Protocol):
    """``(updates [n, d], weights [n]) → vector [d]``.

    ``linear`` says whether the result is a weighted sum of the updates.
    """

    @property
    def linear(self) -> bool: ...

    def __call__(
        self, updates: npt.NDArray[np.float32], weights: npt.NDArray[np.float64]
    ) -> Vector: ...


@runtime_checkable
class StatefulReducer(Reducer, Protocol):
    """A reducer that carries explicit state from one round to the next (centered clipping's
    previous aggregate).

    ``init(size)`` gives the state before the first round; ``reduce(state, updates, weights)``
    returns the aggregate and the next state. The state is one ``float32`` vector, so the engine
    keeps it in its server state and checkpoints it like any other vector.
    """

    def init(self, size: int) -> Vector: ...

    def reduce(
        self, state: Vector, updates: npt.NDArray[np.float32], weights: npt.NDArray[np.float64]
    ) -> tuple[Vector, Vector]: ...


def reduce_with_state(
    reducer: Reducer,
    state: Vector | None,
    updates: npt.NDArray[np.float32],
    weights: npt.NDArray[np.float64],
) -> tuple[Vector, Vector | None]:
    """Reduce a cohort; a :class:`StatefulReducer` reads ``state`` (``init`` when ``None``) and
    returns its next one, any other reducer returns ``None`` as its state."""
    if isinstance(reducer, StatefulReducer):
        current = reducer.init(updates.shape[1]) if state is None else state
        return reducer.reduce(current, updates, weights)
    return reducer(updates, weights), None


def check_cohort(updates: npt.NDArray[np.float32], weights: npt.NDArray[np.float64]) -> None:
    """Raise ValueError unless ``updates`` is ``[n >= 1, d]`` and ``weights`` is ``[n]``, > 0."""
    if updates.ndim != 2 or updates.shape[0] == 0:
        raise ValueError(f"updates must be a non-empty [clients, dims] matrix, got {updates.shape}")
    if weights.shape != (updates.shape[0],):
        raise ValueError(f"weights must have shape ({updates.shape[0]},), got {weights.shape}")
    if not np.all(np.isfinite(weights)) or np.any(weights <= 0):
        raise ValueError(f"weights must be finite and > 0, got {weights.tolist()}")


@dataclass(frozen=True)
class WeightedMean:
    """``Σ wᵢ uᵢ / Σ wᵢ``: FedAvg's reducer, weighting each client by its example count.

    The sum runs in float64, so the float32 result is exact to its last bit for any realistic
    cohort and barely depends on the order of the clients.
    """

    @property
    def linear(self) -> bool:
        return True

    def __call__(
        self, updates: npt.NDArray[np.float32], weights: npt.NDArray[np.float64]
    ) -> Vector:
        check_cohort(updates, weights)
        w = weights.astype(np.float64)
        total: npt.NDArray[np.float64] = w @ updates.astype(np.float64)
        mean: npt.NDArray[np.float64] = total / w.sum()
        return mean.astype(np.float32)


@dataclass(frozen=True)
class Mean:
    """``Σ uᵢ / n``: every client counts the same, whatever its size."""

    @property
    def linear(self) -> bool:
        return True

    def __call__(
        self, updates: npt.NDArray[np.float32], weights: npt.NDArray[np.float64]
    ) -> Vector:
        check_cohort(updates, weights)
        total: npt.NDArray[np.float64] = updates.mean(axis=0, dtype=np.float64)
        return total.astype(np.float32)


@dataclass(frozen=True)
class Sum:
    """``Σ uᵢ``: the plain sum, every client weighing one whatever its size.

    What differential privacy's noise is calibrated to (each client moves it by at most its
    clipping bound) and what secure aggregation reveals; a stage after it (DP-FedAvg's) turns it
    into an average. ``unweighted_sum`` says so to :func:`fedloom.stages.check_pipeline`.
    """

    @property
    def linear(self) -> bool:
        return True

    @property
    def unweighted_sum(self) -> bool:
        return True

    def __call__(
        self, updates: npt.NDArray[np.float32], weights: npt.NDArray[np.float64]
    ) -> Vector:
        check_cohort(updates, weights)
        total: npt.NDArray[np.float64] = updates.sum(axis=0, dtype=np.float64)
        return total.astype(np.float32)


def weighted_mean() -> WeightedMean:
    """The example-weighted mean (FedAvg)."""
    return WeightedMean()


def mean() -> Mean:
    """The unweighted mean."""
    return Mean()
