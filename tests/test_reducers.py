"""Properties of the linear reducers, and the checks they make on a cohort."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedloom.reducers import Mean, Reducer, WeightedMean, mean, weighted_mean

SETTINGS = settings(max_examples=80, deadline=None)
REDUCERS: list[Reducer] = [WeightedMean(), Mean()]

values = st.floats(-1e3, 1e3, allow_nan=False, width=32)
weight_values = st.floats(1e-3, 1e3, allow_nan=False)


@st.composite
def cohorts(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """``[n, d]`` float32 updates and ``[n]`` positive float64 weights."""
    n = draw(st.integers(1, 8))
    d = draw(st.integers(1, 6))
    updates = draw(hnp.arrays(np.float32, (n, d), elements=values))
    weights = draw(hnp.arrays(np.float64, (n,), elements=weight_values))
    return updates, weights


def close(actual: np.ndarray, expected: np.ndarray) -> None:
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("reducer", REDUCERS, ids=repr)
@SETTINGS
@given(cohort=cohorts(), data=st.data())
def test_the_order_of_the_clients_does_not_matter(
    reducer: Reducer, cohort: tuple[np.ndarray, np.ndarray], data: st.DataObject
) -> None:
    updates, weights = cohort
    order = np.array(data.draw(st.permutations(range(len(weights)))))
    close(reducer(updates[order], weights[order]), reducer(updates, weights))


@SETTINGS
@given(
    update=hnp.arrays(np.float32, st.integers(1, 6), elements=values),
    weights=hnp.arrays(np.float64, st.integers(1, 8), elements=weight_values),
)
def test_identical_updates_reduce_to_themselves(update: np.ndarray, weights: np.ndarray) -> None:
    updates = np.tile(update, (len(weights), 1))
    np.testing.assert_array_equal(Mean()(updates, weights), update)
    close(WeightedMean()(updates, weights), update)


@pytest.mark.parametrize("reducer", REDUCERS, ids=repr)
@SETTINGS
@given(cohort=cohorts(), scale=st.floats(1e-3, 1e3))
def test_scaling_every_weight_changes_nothing(
    reducer: Reducer, cohort: tuple[np.ndarray, np.ndarray], scale: float
) -> None:
    updates, weights = cohort
    close(reducer(updates, weights * scale), reducer(updates, weights))


@SETTINGS
@given(
    u=hnp.arrays(np.float32, (2, 3), elements=values),
    w1=weight_values,
    w2=weight_values,
)
def test_two_clients_by_hand(u: np.ndarray, w1: float, w2: float) -> None:
    u1, u2 = u.astype(np.float64)
    weights = np.array([w1, w2])
    close(WeightedMean()(u, weights), (w1 * u1 + w2 * u2) / (w1 + w2))
    close(Mean()(u, weights), (u1 + u2) / 2)


def test_a_small_example_by_hand() -> None:
    updates = np.array([[1.0, -2.0, 0.5], [3.0, 0.0, -1.5]], dtype=np.float32)
    weights = np.array([1.0, 3.0])
    # (1·1 + 3·3) / 4, (1·-2 + 3·0) / 4, (1·0.5 + 3·-1.5) / 4
    np.testing.assert_array_equal(weighted_mean()(updates, weights), [2.5, -0.5, -1.0])
    np.testing.assert_array_equal(mean()(updates, weights), [2.0, -1.0, -0.5])


def test_results_are_float32_and_the_reducers_are_linear() -> None:
    updates = np.ones((2, 3), dtype=np.float32)
    for reducer in REDUCERS:
        assert reducer(updates, np.ones(2)).dtype == np.float32
        assert reducer.linear


BAD_COHORTS = [
    pytest.param(np.zeros((0, 3), np.float32), np.zeros(0), id="empty cohort"),
    pytest.param(np.zeros(3, np.float32), np.ones(1), id="updates not a matrix"),
    pytest.param(np.zeros((2, 3), np.float32), np.ones(3), id="too many weights"),
    pytest.param(np.zeros((2, 3), np.float32), np.ones(1), id="too few weights"),
    pytest.param(np.zeros((2, 3), np.float32), np.ones((2, 1)), id="weights not a vector"),
    pytest.param(np.zeros((2, 3), np.float32), np.array([1.0, 0.0]), id="zero weight"),
    pytest.param(np.zeros((2, 3), np.float32), np.array([1.0, -2.0]), id="negative weight"),
    pytest.param(np.zeros((2, 3), np.float32), np.array([1.0, np.nan]), id="NaN weight"),
    pytest.param(np.zeros((2, 3), np.float32), np.array([np.inf, 1.0]), id="infinite weight"),
]


@pytest.mark.parametrize("reducer", REDUCERS, ids=repr)
@pytest.mark.parametrize(("updates", "weights"), BAD_COHORTS)
def test_a_bad_cohort_raises_value_error(
    reducer: Reducer, updates: np.ndarray, weights: np.ndarray
) -> None:
    with pytest.raises(ValueError, match=r"^(updates|weights) must"):
        reducer(updates, weights)
