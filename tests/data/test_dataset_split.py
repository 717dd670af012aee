"""Dataset.split: the central holdout, the per-client test split, determinism and validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedloom.data import (
    ClientData,
    Dataset,
    FederatedData,
    Partitioner,
    dirichlet,
    iid,
    natural,
    shards,
)


def indexed(n: int, classes: int = 3, seed: int = 0, groups: np.ndarray | None = None) -> Dataset:
    """Examples whose feature is their index, so every example can be traced after a split."""
    labels = np.random.default_rng(seed).integers(0, classes, n)
    return Dataset("indexed", np.arange(n, dtype=np.float32)[:, None], labels, classes, groups)


def ids(x: np.ndarray) -> np.ndarray:
    return x[:, 0].astype(np.int64)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(5, 200),
    classes=st.integers(1, 6),
    holdout=st.sampled_from([0.0, 0.1, 0.2, 0.5, 0.9]),
    test_fraction=st.sampled_from([0.0, 0.2, 0.5, 0.9]),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_split_places_every_example_exactly_once(
    n: int, classes: int, holdout: float, test_fraction: float, seed: int, data: st.DataObject
) -> None:
    dataset = indexed(n, classes, seed)
    per_class = np.bincount(dataset.y, minlength=classes)
    available = n - sum(math.floor(holdout * c + 1e-9) for c in per_class)
    clients = data.draw(st.integers(1, min(available, 20)))
    split = dataset.split(
        iid(), clients=clients, seed=seed, test_fraction=test_fraction, holdout=holdout
    )

    placed = [ids(split.test_x)]
    for client in split.clients:
        placed += [ids(client.x_train), ids(client.x_test)]
        m = client.num_train + client.num_test
        assert client.num_test == math.floor(test_fraction * m + 1e-9)
        assert client.num_train >= 1
        np.testing.assert_array_equal(client.y_train, dataset.y[ids(client.x_train)])
    np.testing.assert_array_equal(np.sort(np.concatenate(placed)), np.arange(n))
    held_per_class = np.bincount(split.test_y, minlength=classes)
    np.testing.assert_array_equal(held_per_class, np.floor(holdout * per_class + 1e-9))
    assert len(split) == clients
    assert [c.client_id for c in split.clients] == list(range(clients))


def test_split_is_deterministic_in_seed_and_holdout_ignores_partitioner() -> None:
    dataset = indexed(300, classes=5)

    def run(seed: int, partitioner: Partitioner | None = None) -> FederatedData:
        return dataset.split(partitioner or dirichlet(0.5), clients=6, seed=seed)

    first, again, other = run(1), run(1), run(2)
    for a, b in zip(first.clients, again.clients, strict=True):
        np.testing.assert_array_equal(a.x_train, b.x_train)
        np.testing.assert_array_equal(a.x_test, b.x_test)
    assert any(
        not np.array_equal(a.x_train, b.x_train)
        for a, b in zip(first.clients, other.clients, strict=True)
    )
    np.testing.assert_array_equal(run(1, shards()).test_x, first.test_x)


def test_pooled_is_the_union_of_client_training_data() -> None:
    split = indexed(100).split(iid(), clients=4, seed=0)
    x, y = split.pooled()
    assert len(x) == sum(c.num_train for c in split.clients)
    np.testing.assert_array_equal(
        np.sort(ids(x)), np.sort(np.concatenate([ids(c.x_train) for c in split.clients]))
    )
    np.testing.assert_array_equal(y, indexed(100).y[ids(x)])


def test_holdout_never_removes_a_whole_group() -> None:
    groups = np.concatenate([np.zeros(60, np.int64), np.arange(1, 21)])  # 20 single-example groups
    dataset = indexed(80, classes=1, groups=groups)
    split = dataset.split(natural(), clients=21, seed=0, holdout=0.5, test_fraction=0.0)
    assert [c.num_train for c in split.clients[1:]] == [1] * 20
    for group, client in enumerate(split.clients):
        assert set(groups[ids(client.x_train)].tolist()) == {group}
    assert len(split.test_y) + sum(c.num_train for c in split.clients) == 80
    assert len(split.test_y) >= 40 - 20


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"holdout": 1.0}, "holdout"),
        ({"holdout": -0.1}, "holdout"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"clients": 0}, "clients"),
        ({"clients": 2.5}, "clients"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_split_arguments_name_the_argument_and_value(
    kwargs: dict[str, float], argument: str
) -> None:
    options: dict[str, float] = {"clients": 2, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=f"{argument} must be .*, got {kwargs[argument]!r}"):
        indexed(20).split(iid(), **options)  # type: ignore[arg-type]


def test_more_clients_than_examples_is_refused() -> None:
    with pytest.raises(ValueError, match=r"clients=17 .* use at most 16 clients"):
        indexed(20, classes=1).split(iid(), clients=17, seed=0, holdout=0.2)


def test_natural_with_the_wrong_number_of_clients_names_both_numbers() -> None:
    dataset = indexed(30, groups=np.arange(30) % 4)
    with pytest.raises(ValueError, match=r"4 groups but clients=3"):
        dataset.split(natural(), clients=3, seed=0)


def test_an_empty_client_is_reported_by_number() -> None:
    def starve_client_one(
        dataset: Dataset, clients: int, rng: np.random.Generator
    ) -> list[np.ndarray]:
        everything = np.arange(len(dataset), dtype=np.int64)
        return [everything, np.empty(0, np.int64)]

    with pytest.raises(ValueError, match=r"client 1 gets no training examples.*fewer clients"):
        indexed(20).split(starve_client_one, clients=2, seed=0)


def test_a_partitioner_that_reuses_examples_is_refused() -> None:
    def overlapping(dataset: Dataset, clients: int, rng: np.random.Generator) -> list[np.ndarray]:
        return [np.arange(len(dataset), dtype=np.int64)] * clients

    with pytest.raises(ValueError, match="disjoint"):
        indexed(20).split(overlapping, clients=2, seed=0)


def test_dataset_validates_its_arrays() -> None:
    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match=r"labels must lie in 0..1"):
        Dataset("d", x, np.array([0, 1, 2, 1]), 2)
    with pytest.raises(ValueError, match=r"y must have shape \(4,\)"):
        Dataset("d", x, np.zeros(3, np.int64), 2)
    with pytest.raises(ValueError, match="num_classes"):
        Dataset("d", x, np.zeros(4, np.int64), 0)
    with pytest.raises(ValueError, match="groups"):
        Dataset("d", x, np.zeros(4, np.int64), 1, np.zeros(5))
    coerced = Dataset("d", x.astype(np.float64), np.array([0.0, 1.0, 1.0, 0.0]), 2)
    assert coerced.x.dtype == np.float32
    assert coerced.y.dtype == np.int64


def test_client_data_counts_its_splits() -> None:
    client = ClientData(0, np.zeros((3, 1)), np.zeros(3), np.zeros((1, 1)), np.zeros(1))
    assert (client.num_train, client.num_test) == (3, 1)
    with pytest.raises(ValueError, match="x_test has 1 rows but y_test has 2"):
        ClientData(0, np.zeros((3, 1)), np.zeros(3), np.zeros((1, 1)), np.zeros(2))


def test_reprs_summarize_instead_of_printing_arrays() -> None:
    dataset = indexed(50, classes=1, groups=np.arange(50) % 5)
    assert repr(dataset) == (
        "Dataset(name='indexed', x=<(50, 1) float32>, num_classes=1, groups=<5 groups>)"
    )
    split = dataset.split(iid(), clients=2, seed=0, holdout=0.2, test_fraction=0.0)
    assert repr(split) == (
        "FederatedData(name='indexed', clients=2, train=40, central_test=10, num_classes=1)"
    )
    assert repr(split.clients[0]) == "ClientData(client_id=0, train=20, test=0)"
