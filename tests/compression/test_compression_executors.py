"""Every simulation executor carries payloads and error-feedback residuals the same way: the
process pool and Ray give the in-process run bit for bit, the vectorized executor up to
floating-point summation order; bytes on the wire are identical in all of them."""

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
    return (
        fl.fedavg(train)
        .with_stages(fl.compression.qsgd(levels=2, rotate=True, block=16, error_feedback=True))
        .with_broadcast(fl.compression.uniform(8))
    )


def run(executor: object, data: FederatedData) -> fl.History:
    return fl.simulate(
        algorithm(),
        data,
        rounds=3,
        cohort=4,
        executor=executor,
        federated_eval=False,  # type: ignore[arg-type]
    )


def wire(history: fl.History) -> list[tuple[float, float]]:
    return [(r.metrics["bytes_up"], r.metrics["bytes_down"]) for r in history.records]


def test_pool_and_vectorized_match_in_process(data: FederatedData) -> None:
    reference = InProcessExecutor(algorithm().client, data.clients)
    expected = run(reference, data)
    assert wire(expected)[0][0] < 4 * 1210 * 4 / 4  # at least 4x fewer bytes up than float32

    with PoolExecutor(algorithm().client, data.clients, workers=2) as pool:
        got = run(pool, data)
        np.testing.assert_array_equal(got.params, expected.params)
        assert wire(got) == wire(expected)
        for client, state in reference.states.items():
            np.testing.assert_array_equal(
                pool.states[client]["stages.qsgd.residual"], state["stages.qsgd.residual"]
            )

    from fedloom.executors.vectorized import VectorizedExecutor

    vectorized = VectorizedExecutor(algorithm().client, data.clients, strict=True)
    got = run(vectorized, data)
    assert vectorized.batched_tasks == 12
    assert wire(got) == wire(expected)
    np.testing.assert_allclose(got.params, expected.params, atol=1e-3)
    assert vectorized.states.keys() == reference.states.keys()


def test_ray_matches_in_process(data: FederatedData) -> None:
    pytest.importorskip("ray")
    from fedloom.executors.ray_executor import RayExecutor

    reference = InProcessExecutor(algorithm().client, data.clients)
    expected = run(reference, data)
    with RayExecutor(algorithm().client, data.clients, actors=2) as executor:
        got = run(executor, data)
        np.testing.assert_array_equal(got.params, expected.params)
        assert wire(got) == wire(expected)
        for client, state in reference.states.items():
            np.testing.assert_array_equal(
                executor.states[client]["stages.qsgd.residual"], state["stages.qsgd.residual"]
            )
