from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedloom.core.layout import Field, Layout

shapes = st.lists(hnp.array_shapes(min_dims=0, max_dims=3, max_side=4), min_size=1, max_size=5)


@given(shapes, st.data())
def test_flatten_unflatten_round_trip(
    shape_list: list[tuple[int, ...]], data: st.DataObject
) -> None:
    arrays = {
        f"p{i}": data.draw(hnp.arrays(np.float32, s, elements=st.floats(-1e6, 1e6, width=32)))
        for i, s in enumerate(shape_list)
    }
    layout = Layout.from_arrays(arrays)
    flat = layout.flatten(arrays)
    assert flat.dtype == np.float32
    assert flat.shape == (sum(a.size for a in arrays.values()),)
    back = layout.unflatten(flat)
    assert list(back) == list(arrays)
    for name, value in arrays.items():
        np.testing.assert_array_equal(back[name], value)


def test_offsets_and_order_follow_fields() -> None:
    layout = Layout((Field("w", (2, 3)), Field("b", (3,)), Field("s", ())))
    assert layout.offsets == (0, 6, 9, 10)
    flat = layout.flatten({"b": [7, 8, 9], "w": np.arange(6).reshape(2, 3), "s": 5})
    np.testing.assert_array_equal(flat, [0, 1, 2, 3, 4, 5, 7, 8, 9, 5])


def test_unflatten_returns_views_not_copies() -> None:
    layout = Layout((Field("a", (2,)), Field("b", (2,))))
    flat = np.zeros(4, dtype=np.float32)
    layout.unflatten(flat)["b"][:] = 3
    np.testing.assert_array_equal(flat, [0, 0, 3, 3])


def test_trainable_mask_marks_frozen_fields() -> None:
    layout = Layout.from_arrays(
        {"w": np.zeros(3), "running_mean": np.zeros(2)}, frozen=frozenset({"running_mean"})
    )
    np.testing.assert_array_equal(layout.trainable_mask, [True, True, True, False, False])


def test_errors_name_the_problem() -> None:
    layout = Layout((Field("w", (2, 2)),))
    with pytest.raises(ValueError, match=r"'w' has shape \(4,\), the layout expects \(2, 2\)"):
        layout.flatten({"w": np.zeros(4)})
    with pytest.raises(ValueError, match=r"missing \['w'\], unexpected \['v'\]"):
        layout.flatten({"v": np.zeros((2, 2))})
    with pytest.raises(ValueError, match=r"expects \(4,\)"):
        layout.unflatten(np.zeros(5))
    with pytest.raises(ValueError, match="unique"):
        Layout((Field("w", (1,)), Field("w", (2,))))
    with pytest.raises(ValueError, match="dtype 'int64'"):
        Field("steps", (1,), dtype="int64")
    with pytest.raises(ValueError, match="frozen names"):
        Layout.from_arrays({"w": np.zeros(1)}, frozen=frozenset({"nope"}))
