"""A delta broadcast in every simulation executor: the process pool and Ray give the in-process
run bit for bit, the vectorized executor up to summation order; bytes down are identical."""

from __future__ import annotations

import numpy as np
import pytest

import fedloom as fl
from fedloom.data import FederatedData
from fedloom.executors import InProcessExecutor
from fedloom.executors.pool import PoolExecutor

pytest.importorskip("torch")
from fedloom.torch import local_sgd, mlp


@pytest.fixture(scope="module")
def data() -> FederatedData:
    return fl.data.digits().split(fl.data.dirichlet(0.5), clients=8, seed=0)


def algorithm() -> fl.Algorithm:
    train = local_sgd(mlp(64, [16], 10), lr=0.1, epochs=1, batch_size=16)
    return fl.fedavg(train).with_broadcast(fl.compression.uniform(4), delta_window=2)


def run(executor: object, data: FederatedData) -> fl.History:
    return fl.simulate(
        algorithm(), data, rounds=4, cohort=5, executor=executor,  # type: ignore[arg-type]
        federated_eval=False,
    )  # fmt: skip


def down(history: fl.History) -> list[float]:
    return [r.metrics["bytes_down"] for r in history.records]


def test_every_executor_moves_the_same_bytes_down(data: FederatedData) -> None:
    expected = run(InProcessExecutor(algorithm().client, data.clients), data)
    entries = 64 * 16 + 16 + 16 * 10 + 10
    assert down(expected)[0] == 5 * 4 * entries
    assert all(d < 5 * 4 * entries for d in down(expected)[1:]), "some chains are sent"

    with PoolExecutor(algorithm().client, data.clients, workers=2) as pool:
        got = run(pool, data)
        np.testing.assert_array_equal(got.params, expected.params)
        assert down(got) == down(expected)

    from fedloom.executors.vectorized import VectorizedExecutor

    vectorized = VectorizedExecutor(algorithm().client, data.clients, strict=True)
    got = run(vectorized, data)
    assert vectorized.batched_tasks == 20
    assert down(got) == down(expected)
    np.testing.assert_allclose(got.params, expected.params, atol=1e-3)


def test_ray_moves_the_same_bytes_down(data: FederatedData) -> None:
    pytest.importorskip("ray")
    from fedloom.executors.ray_executor import RayExecutor

    expected = run(InProcessExecutor(algorithm().client, data.clients), data)
    with RayExecutor(algorithm().client, data.clients, actors=2) as executor:
        got = run(executor, data)
        np.testing.assert_array_equal(got.params, expected.params)
        assert down(got) == down(expected)
