"""Every executor a run file can name gives the one-process result."""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest

import fedloom as fl
from fedloom.executors import EXECUTORS


@pytest.mark.parametrize("name", EXECUTORS)
def test_named_executor_matches_in_process(name: str) -> None:
    data = fl.data.digits().split(fl.data.dirichlet(0.5), clients=6, seed=2)
    train = fl.torch.local_sgd(fl.torch.mlp(64, [16], 10), lr=0.1, epochs=1, batch_size=32)
    algorithm = fl.scaffold(train)

    def run(executor: str) -> fl.History:
        return fl.simulate(algorithm, data, rounds=2, cohort=4, seed=5, executor=executor)

    expected, got = run("inprocess"), run(name)
    if name == "process":  # simulate closes the executors it makes: no worker outlives it
        assert multiprocessing.active_children() == []
    np.testing.assert_allclose(got.params, expected.params, rtol=1e-4, atol=1e-5)
    assert [r.accepted for r in got.records] == [r.accepted for r in expected.records]
    assert got.last("client_test_accuracy") == pytest.approx(
        expected.last("client_test_accuracy"), abs=1e-6
    )
