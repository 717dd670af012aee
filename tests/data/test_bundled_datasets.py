"""Datasets that ship with an install: shapes, scaling, determinism, no global side effects."""

from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import pytest

from fedloom.data import breast_cancer, digits, mnist1d


def test_importing_fedloom_data_leaves_the_optional_extras_unimported() -> None:
    code = (
        "import sys, fedloom.data; "
        "print(sorted(m for m in ('sklearn', 'mnist1d', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_digits_is_scaled_to_the_unit_interval() -> None:
    pytest.importorskip("sklearn")
    data = digits()
    assert data.x.shape == (1797, 64)
    assert data.x.dtype == np.float32
    assert data.y.dtype == np.int64
    assert data.num_classes == 10
    assert data.x.min() == 0.0
    assert data.x.max() == 1.0
    np.testing.assert_array_equal(np.unique(data.y), np.arange(10))
    np.testing.assert_allclose(data.x * 16, np.round(data.x * 16), atol=1e-5)


def test_breast_cancer_is_standardized() -> None:
    pytest.importorskip("sklearn")
    data = breast_cancer()
    assert data.x.shape == (569, 30)
    assert data.num_classes == 2
    np.testing.assert_allclose(data.x.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(data.x.std(axis=0), 1.0, atol=1e-4)
    assert np.bincount(data.y).tolist() == [212, 357]


def test_mnist1d_is_generated_deterministically_without_touching_global_rngs() -> None:
    pytest.importorskip("mnist1d")
    # mnist1d's generator seeds the legacy global streams; the loader must restore them.
    numpy_before = np.random.get_state(legacy=False)  # noqa: NPY002
    python_before = random.getstate()
    first = mnist1d(num_samples=200, seed=3)
    numpy_after = np.random.get_state(legacy=False)  # noqa: NPY002
    assert random.getstate() == python_before
    np.testing.assert_array_equal(numpy_after["state"]["key"], numpy_before["state"]["key"])
    assert numpy_after["state"]["pos"] == numpy_before["state"]["pos"]
    again, other = mnist1d(num_samples=200, seed=3), mnist1d(num_samples=200, seed=4)
    assert first.x.shape == (200, 40)
    assert first.x.dtype == np.float32
    assert first.num_classes == 10
    np.testing.assert_array_equal(np.bincount(first.y), [20] * 10)
    np.testing.assert_array_equal(first.x, again.x)
    np.testing.assert_array_equal(first.y, again.y)
    assert not np.array_equal(first.x, other.x)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"num_samples": 205}, "num_samples"),
        ({"num_samples": 0}, "num_samples"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**32}, "seed"),
    ],
)
def test_mnist1d_rejects_bad_arguments(kwargs: dict[str, int], argument: str) -> None:
    with pytest.raises(ValueError, match=f"{argument} must be .*got {kwargs[argument]}"):
        mnist1d(**kwargs)
