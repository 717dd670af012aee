"""Block-at-a-time checks and norms: the same answers as NumPy on the whole vector, including
vectors whose sum overflows and NaN or infinity in any block."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedloom.core.blocks import BLOCK, all_finite, norm64

floats32 = hnp.arrays(
    np.float32,
    st.integers(0, 300),
    elements=st.floats(width=32, allow_nan=True, allow_infinity=True),
)


@settings(max_examples=300, deadline=None)
@given(floats32)
def test_all_finite_says_what_isfinite_says(values: np.ndarray) -> None:
    assert all_finite(values) == bool(np.all(np.isfinite(values)))


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(np.float32, st.integers(1, 50), elements=st.floats(-1e3, 1e3, width=32)))
def test_norm64_is_numpys_float64_norm(values: np.ndarray) -> None:
    want = float(np.linalg.norm(values.astype(np.float64)))
    assert norm64(values) == pytest.approx(want, rel=1e-12, abs=1e-300)


def test_a_finite_vector_whose_sum_overflows_is_finite() -> None:
    # 3 × 3e38 overflows float32's sum to infinity; every entry is still finite
    values = np.full(2 * BLOCK + 5, 3e38, dtype=np.float32)
    with np.errstate(over="ignore"):
        assert not np.isfinite(values.sum())
    assert all_finite(values)
    for bad in (np.nan, np.inf, -np.inf):
        spoiled = values.copy()
        spoiled[BLOCK + 7] = bad  # in the second block
        assert not all_finite(spoiled)


def test_a_nan_or_infinity_in_the_last_partial_block_is_found() -> None:
    values = np.ones(3 * BLOCK + 1, dtype=np.float32)
    assert all_finite(values)
    for bad in (np.nan, np.inf):
        spoiled = values.copy()
        spoiled[-1] = bad
        assert not all_finite(spoiled)
    assert all_finite(np.zeros(0, np.float32))
    assert all_finite(np.arange(5))  # integers are always finite


def test_norm64_across_blocks_is_exact_on_integers() -> None:
    # Σ k² for k < n is n(n−1)(2n−1)/6, exact in float64 for this n
    n = 2 * BLOCK + 11
    values = np.arange(n, dtype=np.float32)
    assert norm64(values) ** 2 == pytest.approx(n * (n - 1) * (2 * n - 1) / 6, rel=1e-15)


def test_neither_allocates_a_vector_of_the_input_length() -> None:
    values = np.ones(40 * BLOCK, dtype=np.float32)  # 40 MB
    values[-1] = 3e38  # the float32 sum overflows: all_finite checks block by block
    values[-2] = 3e38
    tracemalloc.start()
    try:
        assert all_finite(values)
        assert norm64(values) > 0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 8 * BLOCK  # a few float64 blocks, against 40 MB (bool mask: 10 MB)
