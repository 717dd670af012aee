"""The FedProx Synthetic(alpha, beta) generator (Li et al., 2020)."""

from __future__ import annotations

import numpy as np
import pytest

from fedloom.data import FederatedData, synthetic


def device_sizes(data: FederatedData) -> np.ndarray:
    return np.array([c.num_train + c.num_test for c in data.clients])


@pytest.mark.parametrize(("alpha", "beta"), [(0.0, 0.0), (1.0, 1.0)])
def test_devices_have_power_law_sizes_and_valid_labels(alpha: float, beta: float) -> None:
    data = synthetic(alpha, beta, clients=30, seed=0)
    sizes = device_sizes(data)
    assert len(data) == 30
    # floor(LogNormal(4, 2)) + 50 per device, less a floor(0.2 m) central holdout: >= 40 each
    assert sizes.min() >= 40
    assert sizes.max() / sizes.min() > 5
    assert data.name == f"synthetic({alpha:g}, {beta:g})"
    assert data.num_classes == 10
    for client in data.clients:
        assert client.x_train.shape[1] == 60
        assert client.x_train.dtype == np.float32
        assert client.y_train.min() >= 0
        assert client.y_train.max() < 10
        assert client.num_test == int(0.2 * (client.num_train + client.num_test))
    total = sizes.sum() + len(data.test_y)
    # each device gives floor(0.2 m_k) examples to the central test set
    assert 0.2 * total - 30 < len(data.test_y) <= 0.2 * total


def test_synthetic_is_deterministic_in_seed() -> None:
    first, again, other = synthetic(1, 1, seed=5), synthetic(1, 1, seed=5), synthetic(1, 1, seed=6)
    for a, b in zip(first.clients, again.clients, strict=True):
        np.testing.assert_array_equal(a.x_train, b.x_train)
        np.testing.assert_array_equal(a.y_test, b.y_test)
    np.testing.assert_array_equal(first.test_x, again.test_x)
    assert not np.array_equal(device_sizes(first), device_sizes(other))


def test_beta_skews_labels_more_on_average() -> None:
    """(1, 1) devices are more label-skewed than (0, 0) ones, averaged over 40 seeds.

    The effect is small (about 0.02 in mean TV distance; its per-seed spread is about 0.03):
    each device's own random W_k already concentrates its labels, and alpha cannot add to that
    (see the next test), so only beta's spread of input means adds skew.
    """
    seeds = range(40)
    iid_like = np.mean([synthetic(0, 0, seed=s).report().skew for s in seeds])
    heterogeneous = np.mean([synthetic(1, 1, seed=s).report().skew for s in seeds])
    assert heterogeneous > iid_like + 0.01


def test_alpha_shifts_all_logits_together_so_labels_do_not_change() -> None:
    plain, shifted = synthetic(0, 0.5, seed=2), synthetic(3, 0.5, seed=2)
    for a, b in zip(plain.clients, shifted.clients, strict=True):
        np.testing.assert_array_equal(a.y_train, b.y_train)


def test_beta_spreads_the_devices_input_means() -> None:
    def spread(beta: float) -> float:
        data = synthetic(0, beta, clients=40, seed=0)
        return float(np.std([c.x_train.mean() for c in data.clients]))

    assert spread(0.0) < 0.4
    assert spread(2.0) > 3 * spread(0.0)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"alpha": -1.0}, "alpha"),
        ({"beta": float("nan")}, "beta"),
        ({"clients": 0}, "clients"),
        ({"classes": 1}, "classes"),
        ({"holdout": 1.0}, "holdout"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict[str, float], argument: str) -> None:
    options: dict[str, float] = {"alpha": 0.0, "beta": 0.0} | kwargs
    with pytest.raises(ValueError, match=argument):
        synthetic(**options)  # type: ignore[arg-type]
