"""Properties of the partitioners: disjoint, covering, deterministic, and skewed as claimed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedloom.data import (
    Dataset,
    dirichlet,
    dirichlet_mixture,
    iid,
    natural,
    quantity_skew,
    shards,
)
from fedloom.data.partition import Partitioner

SETTINGS = settings(max_examples=60, deadline=None)


def labelled(n: int, classes: int, seed: int) -> Dataset:
    """n examples whose single feature is their index, with random labels."""
    labels = np.random.default_rng(seed).integers(0, classes, n)
    return Dataset("toy", np.arange(n, dtype=np.float32)[:, None], labels, classes)


@st.composite
def datasets_and_clients(draw: st.DrawFn) -> tuple[Dataset, int]:
    n = draw(st.integers(1, 300))
    data = labelled(n, draw(st.integers(1, 12)), draw(st.integers(0, 2**32 - 1)))
    return data, draw(st.integers(1, min(n, 40)))


COVERING: list[Partitioner] = [
    iid(),
    dirichlet(0.3, min_size=0),
    dirichlet(5.0, min_size=0),
    dirichlet_mixture(0.1),
    dirichlet_mixture(10.0),
    shards(per_client=1),
    quantity_skew(exponent=1.5, min_size=1),
    quantity_skew(exponent=0.0, min_size=0),
]


def partition(p: Partitioner, data: Dataset, clients: int, seed: int) -> list[np.ndarray]:
    return p(data, clients, np.random.default_rng(seed))


@pytest.mark.parametrize("partitioner", COVERING, ids=repr)
@SETTINGS
@given(case=datasets_and_clients(), seed=st.integers(0, 2**32 - 1))
def test_partitions_are_disjoint_covering_and_deterministic(
    partitioner: Partitioner, case: tuple[Dataset, int], seed: int
) -> None:
    data, clients = case
    parts = partition(partitioner, data, clients, seed)
    assert len(parts) == clients
    assert all(p.dtype == np.int64 and p.ndim == 1 for p in parts)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(len(data)))
    again = partition(partitioner, data, clients, seed)
    for first, second in zip(parts, again, strict=True):
        np.testing.assert_array_equal(first, second)


@SETTINGS
@given(case=datasets_and_clients(), seed=st.integers(0, 2**32 - 1))
def test_iid_sizes_differ_by_at_most_one(case: tuple[Dataset, int], seed: int) -> None:
    data, clients = case
    sizes = [len(p) for p in partition(iid(), data, clients, seed)]
    assert max(sizes) - min(sizes) <= 1


@SETTINGS
@given(
    clients=st.integers(1, 12),
    per_client=st.integers(1, 4),
    shard_size=st.integers(1, 6),
    classes=st.integers(1, 8),
    seed=st.integers(0, 2**32 - 1),
)
def test_aligned_shards_give_each_client_at_most_per_client_labels(
    clients: int, per_client: int, shard_size: int, classes: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    shard_labels = np.sort(rng.integers(0, classes, clients * per_client))
    labels = rng.permutation(np.repeat(shard_labels, shard_size))
    data = Dataset("aligned", np.zeros((len(labels), 1)), labels, classes)
    parts = partition(shards(per_client=per_client), data, clients, seed)
    assert all(len(p) == per_client * shard_size for p in parts)
    assert all(len(np.unique(labels[p])) <= per_client for p in parts)


@SETTINGS
@given(case=datasets_and_clients(), min_size=st.integers(0, 3), seed=st.integers(0, 2**32 - 1))
def test_quantity_skew_respects_min_size_and_power_law_order(
    case: tuple[Dataset, int], min_size: int, seed: int
) -> None:
    data, clients = case
    if min_size * clients > len(data):
        with pytest.raises(ValueError, match="min_size"):
            partition(quantity_skew(min_size=min_size), data, clients, seed)
        return
    sizes = np.array(
        [len(p) for p in partition(quantity_skew(min_size=min_size), data, clients, seed)]
    )
    assert sizes.min() >= min_size
    share = np.sort(sizes - min_size)[::-1]
    ideal = (len(data) - min_size * clients) / np.sum(np.arange(1, clients + 1) ** -1.5)
    np.testing.assert_allclose(share, ideal * np.arange(1, clients + 1) ** -1.5, atol=1.0)


@SETTINGS
@given(case=datasets_and_clients(), alpha=st.floats(0.05, 50), seed=st.integers(0, 2**32 - 1))
def test_dirichlet_meets_min_size_or_says_to_raise_alpha(
    case: tuple[Dataset, int], alpha: float, seed: int
) -> None:
    data, clients = case
    partitioner = dirichlet(alpha, min_size=1)
    try:
        parts = partition(partitioner, data, clients, seed)
    except ValueError:
        with pytest.raises(ValueError, match=r"in 1000 draws .* raise alpha"):
            partition(partitioner, data, clients, seed)
        return
    assert min(len(p) for p in parts) >= 1


@SETTINGS
@given(n=st.integers(1, 200), groups=st.integers(1, 15), seed=st.integers(0, 2**32 - 1))
def test_natural_reproduces_groups_exactly(n: int, groups: int, seed: int) -> None:
    names = np.array([f"user{g}" for g in np.random.default_rng(seed).integers(0, groups, n)])
    data = Dataset("grouped", np.zeros((n, 2)), np.zeros(n, np.int64), 1, names)
    distinct = np.unique(names)
    parts = partition(natural(), data, len(distinct), seed)
    for name, part in zip(distinct, parts, strict=True):
        np.testing.assert_array_equal(part, np.flatnonzero(names == name))


def balanced(n_per_class: int = 200, classes: int = 10) -> Dataset:
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(classes), n_per_class))
    return Dataset("balanced", np.zeros((len(labels), 1)), labels, classes)


def skew_of(p: Partitioner, data: Dataset, clients: int = 5) -> float:
    return data.split(p, clients=clients, seed=0, holdout=0.0, test_fraction=0.0).report().skew


def test_dirichlet_alpha_controls_label_skew() -> None:
    data = balanced()
    uniform = skew_of(iid(), data)
    assert uniform < 0.1
    assert skew_of(dirichlet(0.05), data) > 0.5
    # Dir(1000) gives each client almost exactly 1/clients of every class: no more skew than a
    # random IID split, whose skew is pure sampling noise.
    assert skew_of(dirichlet(1000.0), data) < uniform + 0.01


@SETTINGS
@given(case=datasets_and_clients(), alpha=st.floats(0.01, 100), seed=st.integers(0, 2**32 - 1))
def test_dirichlet_mixture_gives_every_client_an_equal_share(
    case: tuple[Dataset, int], alpha: float, seed: int
) -> None:
    data, clients = case
    sizes = [len(p) for p in partition(dirichlet_mixture(alpha), data, clients, seed)]
    assert max(sizes) - min(sizes) <= 1
    assert min(sizes) >= 1


def test_dirichlet_mixture_alpha_controls_label_skew() -> None:
    data = balanced()
    assert skew_of(dirichlet_mixture(0.05), data) > 0.5
    assert skew_of(dirichlet_mixture(1000.0), data) < skew_of(iid(), data) + 0.02


def test_dirichlet_mixture_splits_where_per_class_shares_cannot() -> None:
    """1,000 clients over 1,500 examples: per-class Dirichlet shares leave clients empty."""
    data = labelled(1500, 10, 0)
    with pytest.raises(ValueError, match="fewer than min_size=1"):
        partition(dirichlet(0.5), data, 1000, 0)
    parts = partition(dirichlet_mixture(0.5), data, 1000, 0)
    assert sorted({len(p) for p in parts}) == [1, 2]


def test_shards_are_pathologically_skewed() -> None:
    assert skew_of(shards(per_client=2), balanced(), clients=10) > 0.7


def test_quantity_skew_spreads_sizes_more_than_iid() -> None:
    data = balanced()

    def ratio(p: Partitioner) -> float:
        sizes = [len(part) for part in partition(p, data, 10, 0)]
        return max(sizes) / min(sizes)

    assert ratio(iid()) <= 1.01
    assert ratio(quantity_skew(exponent=1.5)) > 10
    assert skew_of(quantity_skew(exponent=1.5), data, clients=10) < 0.35


@pytest.mark.parametrize(
    ("build", "argument"),
    [
        (lambda: dirichlet(0.0), "alpha"),
        (lambda: dirichlet(-1.0), "alpha"),
        (lambda: dirichlet(float("nan")), "alpha"),
        (lambda: dirichlet(float("inf")), "alpha"),
        (lambda: dirichlet(0.5, min_size=-1), "min_size"),
        (lambda: dirichlet_mixture(0.0), "alpha"),
        (lambda: shards(per_client=0), "per_client"),
        (lambda: quantity_skew(exponent=-0.5), "exponent"),
        (lambda: quantity_skew(min_size=True), "min_size"),
    ],
)
def test_bad_partitioner_config_names_the_argument(build: object, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        build()  # type: ignore[operator]


def test_partitioners_print_as_the_call_that_built_them() -> None:
    assert repr(dirichlet(0.5)) == "dirichlet(alpha=0.5, min_size=1)"
    assert repr(dirichlet_mixture(0.5)) == "dirichlet_mixture(alpha=0.5)"
    assert repr(shards()) == "shards(per_client=2)"
    assert repr(quantity_skew(exponent=2.0)) == "quantity_skew(exponent=2.0, min_size=1)"
    assert repr(iid()) == "iid()"
    assert repr(natural()) == "natural()"
    assert dirichlet(0.5) == dirichlet(0.5)


def test_partitioner_errors_name_the_problem() -> None:
    data = labelled(10, 2, 0)
    with pytest.raises(ValueError, match="clients=11"):
        partition(iid(), data, 11, 0)
    grouped = Dataset("g", data.x, data.y, 2, np.arange(10) % 3)
    with pytest.raises(ValueError, match=r"3 groups but clients=2; pass clients=3"):
        partition(natural(), grouped, 2, 0)
    with pytest.raises(ValueError, match="has none"):
        partition(natural(), data, 2, 0)
    regression = Dataset("r", data.x, data.y.astype(np.float32), None)
    with pytest.raises(ValueError, match="regression"):
        partition(dirichlet(1.0), regression, 2, 0)
    with pytest.raises(ValueError, match="per_client"):
        partition(shards(per_client=3), data, 4, 0)
    with pytest.raises(ValueError, match="raise alpha"):
        partition(dirichlet(1e-4, min_size=5), labelled(60, 1, 0), 10, 0)
