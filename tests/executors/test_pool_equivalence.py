"""The process pool must give exactly the in-process executor's results: same parameters bit for
bit, same per-round metrics, same kept client states.

Digits over 12 Dirichlet(0.5) clients, half of them sampled a round, so clients join in
different rounds and SCAFFOLD's kept control variates have to travel between rounds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
from client_fns import assert_same_replies, scaffold_tasks, softmax_sgd

import fedloom as fl
from fedloom.core.messages import ClientResult
from fedloom.data import FederatedData
from fedloom.engine.tasks import EvaluateTask, Failure, Task, TrainTask
from fedloom.executors import InProcessExecutor
from fedloom.executors.pool import PoolExecutor
from fedloom.torch import local_sgd, mlp

ROUNDS = 3
COHORT = 6


@pytest.fixture(scope="module")
def data() -> FederatedData:
    return fl.data.digits().split(fl.data.dirichlet(0.5), clients=12, seed=0)


RECIPES: dict[str, Callable[[], fl.Algorithm]] = {
    "fedavg": lambda: fl.fedavg(softmax_sgd()),
    "scaffold": lambda: fl.scaffold(softmax_sgd()),
    "fednova": lambda: fl.fednova(softmax_sgd()),
    "fedprox": lambda: fl.fedprox(softmax_sgd(), mu=0.1),
    "fedavg-torch-mlp": lambda: fl.fedavg(
        local_sgd(mlp(64, [16], 10), lr=0.1, epochs=1, batch_size=16)
    ),
}


def assert_same_run(expected: fl.History, got: fl.History) -> None:
    np.testing.assert_array_equal(got.params, expected.params)
    assert [r.cohort for r in got.records] == [r.cohort for r in expected.records]
    assert [r.accepted for r in got.records] == [r.accepted for r in expected.records]
    assert [r.metrics for r in got.records] == [r.metrics for r in expected.records]


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_simulation_matches_in_process_bit_for_bit(recipe: str, data: FederatedData) -> None:
    algorithm = RECIPES[recipe]()
    reference = InProcessExecutor(algorithm.client, data.clients)
    expected = fl.simulate(algorithm, data, rounds=ROUNDS, cohort=COHORT, executor=reference)
    with PoolExecutor(algorithm.client, data.clients, workers=2) as pool:
        got = fl.simulate(algorithm, data, rounds=ROUNDS, cohort=COHORT, executor=pool)
        assert pool.states.keys() == reference.states.keys()
        for client, state in reference.states.items():
            assert pool.states[client].keys() == state.keys()
            for name, vector in state.items():
                np.testing.assert_array_equal(pool.states[client][name], vector)
    assert_same_run(expected, got)
    assert got.records[-1].accepted, "the comparison needs clients that trained"


@pytest.fixture(scope="module")
def scaffold_pool(data: FederatedData) -> Iterator[PoolExecutor]:
    with PoolExecutor(fl.scaffold(softmax_sgd()).client, data.clients, workers=2) as pool:
        yield pool


def test_a_client_listed_twice_trains_from_its_own_new_state(
    data: FederatedData, scaffold_pool: PoolExecutor
) -> None:
    tasks = scaffold_tasks([1, 2, 1, 5, 1])
    reference = InProcessExecutor(fl.scaffold(softmax_sgd()).client, data.clients)
    scaffold_pool.states.clear()
    expected, got = reference.run(tasks), scaffold_pool.run(tasks)
    assert_same_replies(expected, got)
    # The third task starts from the control variate the first two left, so its change differs.
    assert isinstance(got[0], ClientResult)
    assert isinstance(got[4], ClientResult)
    assert not np.array_equal(got[0].extras["control"], got[4].extras["control"])
    np.testing.assert_array_equal(
        scaffold_pool.states[1]["control"], reference.states[1]["control"]
    )


def test_unknown_clients_and_evaluations_answer_as_in_process(
    data: FederatedData, scaffold_pool: PoolExecutor
) -> None:
    params = fl.SoftmaxRegression(64, 10).init(1)
    tasks: list[Task] = [
        EvaluateTask(0, params),
        *scaffold_tasks([99]),
        EvaluateTask(11, params),
        EvaluateTask(-1, params),
    ]
    reference = InProcessExecutor(fl.scaffold(softmax_sgd()).client, data.clients)
    got = scaffold_pool.run(tasks)
    assert got == reference.run(tasks)
    assert got[1] == Failure("unknown client 99")


def test_the_broadcast_is_written_once_per_round_not_once_per_client(
    data: FederatedData, scaffold_pool: PoolExecutor
) -> None:
    scaffold_pool.states.clear()
    tasks = scaffold_tasks(list(range(12)))
    scaffold_pool.run(tasks)
    assert isinstance(tasks[0], TrainTask)
    vector_bytes = tasks[0].broadcast.params.nbytes
    # The parameters and the server control variate, once each, for all twelve clients.
    assert scaffold_pool._resources.blocks["inputs"].size < 12 * vector_bytes
