"""A secure sum over ring inputs (``SecureSum.setup(ring=True)``): the protocol's encoding
carries any vector of ring integers unchanged, with weight one, under a finite setup."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedloom.secagg import SecureSum
from fedloom.secagg.quantize import encode


@given(
    bits=st.integers(min_value=8, max_value=24),
    data=st.data(),
)
def test_ring_integers_pass_through_the_encoding_unchanged(bits: int, data: st.DataObject) -> None:
    dims = data.draw(st.integers(min_value=1, max_value=300))
    top = (1 << bits) - 1
    values = data.draw(
        hnp.arrays(np.int64, dims, elements=st.integers(min_value=0, max_value=top))
        | st.just(np.full(dims, top, dtype=np.int64))  # the longest vector in the ring
    )
    setup = SecureSum(clip=1.0, bits=bits).setup(
        3, [4, 1, 9, 2, 7, 5], dims=dims, weighted=False, ring=True
    )
    assert (setup.scale, setup.max_weight, setup.weighted) == (1.0, 1, False)
    assert math.isfinite(setup.clip)
    encoded = encode(
        values.astype(np.float32), 1, clip=setup.clip, scale=setup.scale, bits=bits,
        rng=np.random.default_rng(0),
    )  # fmt: skip
    np.testing.assert_array_equal(encoded[:-1].astype(np.int64), values)
    assert encoded[-1] == 1


def test_a_weighted_ring_setup_is_refused() -> None:
    with pytest.raises(ValueError, match="ring integers are summed unweighted"):
        SecureSum(clip=1.0, bits=16).setup(0, [1, 2, 3, 4, 5, 6], dims=4, weighted=True, ring=True)
