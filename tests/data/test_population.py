"""Populations made on demand: memory follows the cohort, not the population."""

from __future__ import annotations

import numpy as np
import pytest

import fedloom as fl
from fedloom.data import ClientData
from fedloom.data.population import LazyClients


def test_lazy_clients_make_each_client_once_and_forget_the_oldest() -> None:
    made: list[int] = []

    def make(i: int) -> ClientData:
        made.append(i)
        x = np.full((3, 2), i, np.float32)
        return ClientData(i, x, np.zeros(3, np.int64), x[:0], np.zeros(0, np.int64))

    clients = LazyClients(1_000_000, make, cache=3)
    assert len(clients) == 1_000_000
    assert made == []
    assert clients[7].x_train[0, 0] == 7
    assert clients[7] is clients[7]
    for i in (1, 2, 3):
        clients[i]
    assert made == [7, 1, 2, 3]
    clients[7]  # evicted by the three after it: made again, identically
    assert made == [7, 1, 2, 3, 7]
    assert clients[-1].client_id == 999_999
    with pytest.raises(IndexError, match="outside this population of 1000000"):
        clients[1_000_000]


def test_lazy_synthetic_devices_equal_the_eager_ones() -> None:
    eager = fl.data.synthetic(1.0, 1.0, clients=12, seed=4)
    lazy = fl.data.synthetic(1.0, 1.0, clients=12, seed=4, lazy=True, eval_devices=5)
    assert lazy.lazy
    assert not eager.lazy
    for k in (0, 5, 11):
        a, b = eager.clients[k], lazy.clients[k]
        np.testing.assert_array_equal(a.x_train, b.x_train)
        np.testing.assert_array_equal(a.y_test, b.y_test)
    # The lazy central test set is the held-out share of the first five devices.
    five = fl.data.synthetic(1.0, 1.0, clients=5, seed=4)
    np.testing.assert_array_equal(lazy.test_y, five.test_y)
    assert len(eager.test_y) > len(lazy.test_y)
    with pytest.raises(ValueError, match="would generate all 12 clients"):
        lazy.report()


def test_a_hundred_thousand_devices_train_with_memory_for_a_cohort() -> None:
    data = fl.data.synthetic(1.0, 1.0, clients=100_000, seed=0, lazy=True, eval_devices=20)
    assert "made on demand" in repr(data)
    work = fl.local_sgd(fl.SoftmaxRegression(60, 10), lr=0.05, epochs=1, batch_size=32)
    history = fl.simulate(fl.fedavg(work), data, rounds=2, cohort=50, seed=0, federated_eval=False)
    assert [len(r.accepted) for r in history.records] == [50, 50]
    clients = data.clients
    assert isinstance(clients, LazyClients)
    assert "100 in memory" in repr(clients)  # two cohorts of 50, out of 100,000


def test_executors_that_would_generate_everyone_say_so() -> None:
    from fedloom.executors.pool import PoolExecutor
    from fedloom.executors.vectorized import VectorizedExecutor

    data = fl.data.synthetic(1.0, 1.0, clients=100_000, seed=0, lazy=True, eval_devices=5)
    train = fl.torch.local_sgd(fl.torch.mlp(60, [8], 10), lr=0.1)
    program = fl.fedavg(train).client
    with pytest.raises(ValueError, match="made on demand"):
        PoolExecutor(program, data.clients)
    vectorized = VectorizedExecutor(program, data.clients)
    assert not vectorized.vectorized
    assert vectorized.fallback_reason is not None
    assert "made on demand" in vectorized.fallback_reason
    assert "0 in memory" in repr(data.clients)
