"""Reducers: pure functions from a stacked cohort ``[clients, dims]`` and weights to one vector.

A reducer is *linear* when its output is a weighted sum of the inputs; only linear reducers can
run behind secure aggregation, which reveals nothing but a sum. Robust reducers (median, Krum…)
are non-linear and are refused there at build time.

The linear built-ins are also *foldable* (:class:`FoldableReducer`): they compute their result one
update at a time in a float64 running sum (:class:`Fold`), so the engine can fold each client's
update in as it arrives and drop it, holding one float64 vector instead of the cohort
(:func:`fedloom.engine.rounds.run_round`). Their ``__call__`` folds the stacked rows in order, so
both paths give the same bits for the same order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from fedloom.core.blocks import BLOCK
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


FOLD_BLOCK = BLOCK
"""Entries converted to float64 at a time while folding (:data:`fedloom.core.blocks.BLOCK`): the
temporary stays 2 MB whatever the model's size."""

_SPENT = np.zeros(0, dtype=np.float64)


class Fold:
    """``Σ cᵢ uᵢ`` kept in float64 as updates arrive, ``cᵢ`` the client's weight (``weighted``)
    or 1; :meth:`result` divides by ``Σ cᵢ`` (``mean``) or not, and rounds to float32.

    A float32 entry times an integer weight below 2**29 is exact in float64, so the running sum
    rounds only when it adds; the float32 result is the same for any order of the clients
    except, rarely, in the last bit of an entry whose float64 sum falls within rounding error
    of a float32 rounding boundary.
    """

    def __init__(self, size: int, *, weighted: bool, mean: bool) -> None:
        self.total = np.zeros(size, dtype=np.float64)
        self.weights = 0.0
        self.count = 0
        self.weighted = weighted
        self.mean = mean

    def add(self, update: npt.ArrayLike, weight: float) -> None:
        """Fold in one client's ``update`` of this fold's size with its positive ``weight``."""
        vector = np.asarray(update)
        if self.total is _SPENT:
            raise ValueError("this fold's result was already taken; start a new fold")
        if vector.shape != self.total.shape:
            raise ValueError(f"update has shape {vector.shape}, expected {self.total.shape}")
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"weight must be finite and > 0, got {weight!r}")
        c = float(weight) if self.weighted else 1.0
        for start in range(0, vector.shape[0], FOLD_BLOCK):
            part = vector[start : start + FOLD_BLOCK].astype(np.float64)
            if c != 1.0:
                part *= c
            self.total[start : start + FOLD_BLOCK] += part
        self.weights += c
        self.count += 1

    def result(self) -> Vector:
        """The sum, or the mean, as float32; ValueError if nothing was folded in.

        The float64 sum is let go once rounded, so the caller's next steps do not hold it: a
        fold gives its result once, and another call is a ValueError."""
        return self.result64().astype(np.float32)

    def result64(self) -> npt.NDArray[np.float64]:
        """:meth:`result` before it is rounded to float32 (the fold's own float64 array)."""
        if self.count == 0:
            raise ValueError("no update was folded in; a reduction needs at least one")
        if self.total is _SPENT:
            raise ValueError("this fold's result was already taken; start a new fold")
        total = self.total
        self.total = _SPENT
        if self.mean:
            total /= self.weights
        return total


@runtime_checkable
class FoldableReducer(Reducer, Protocol):
    """A linear reducer that can run one update at a time: ``fold(size)`` starts a
    :class:`Fold` whose result is what ``__call__`` returns on the stacked updates."""

    def fold(self, size: int) -> Fold: ...


def _folded(
    fold: Fold, updates: npt.NDArray[np.float32], weights: npt.NDArray[np.float64]
) -> Vector:
    check_cohort(updates, weights)
    for row, weight in zip(updates, weights, strict=True):
        fold.add(row, float(weight))
    return fold.result()


@dataclass(frozen=True)
class WeightedMean:
    """``Σ wᵢ uᵢ / Σ wᵢ``: FedAvg's reducer, weighting each client by its example count.

    The sum runs in float64 (:class:`Fold`), so the float32 result is exact to its last bit for
    any realistic cohort and barely depends on the order of the clients.
    """

    @property
    def linear(self) -> bool:
        return True

    def fold(self, size: int) -> Fold:
        return Fold(size, weighted=True, mean=True)

    def __call__(
        self, updates: npt.NDArray[np.float32], weights: npt.NDArray[np.float64]
    ) -> Vector:
        return _folded(self.fold(updates.shape[-1]), updates, weights)


@dataclass(frozen=True)
class Mean:
    """``Σ uᵢ / n``: every client counts the same, whatever its size."""

    @property
    def linear(self) -> bool:
        return True

    def fold(self, size: int) -> Fold:
        return Fold(size, weighted=False, mean=True)

    def __call__(
        self, updates: npt.NDArray[np.float32], weights: npt.NDArray[np.float64]
    ) -> Vector:
        return _folded(self.fold(updates.shape[-1]), updates, weights)


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

    def fold(self, size: int) -> Fold:
        return Fold(size, weighted=False, mean=False)

    def __call__(
        self, updates: npt.NDArray[np.float32], weights: npt.NDArray[np.float64]
    ) -> Vector:
        return _folded(self.fold(updates.shape[-1]), updates, weights)


def weighted_mean() -> WeightedMean:
    """The example-weighted mean (FedAvg)."""
    return WeightedMean()


def mean() -> Mean:
    """The unweighted mean."""
    return Mean()
