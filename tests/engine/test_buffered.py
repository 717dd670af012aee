"""FedBuff: buffered asynchronous aggregation on a virtual clock."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

import fedloom as fl
from fedloom.core.messages import Broadcast
from fedloom.data import FederatedData
from fedloom.engine import Buffered, Reply, Task, train_buffered
from fedloom.executors import InProcessExecutor
from fedloom.executors.devices import Fleet, LogNormal, fleet_clock

MODEL = fl.LinearRegression(features=2)  # 3 parameters
UPDATES = {0: [1.0, 0.0, 0.0], 1: [0.0, 2.0, 0.0], 2: [0.0, 0.0, 4.0]}


def constant_update(params: np.ndarray, x: np.ndarray, y: np.ndarray, seed: int):  # type: ignore[no-untyped-def]
    client = int(x[0, 0])  # each client's data says who it is
    return params + np.array(UPDATES[client], dtype=np.float32), {}


def three_clients() -> FederatedData:
    clients = tuple(
        fl.data.ClientData(c, np.full((2, 2), c, np.float32), np.zeros(2, np.float32),
                           np.zeros((0, 2), np.float32), np.zeros(0, np.float32))
        for c in range(3)
    )  # fmt: skip
    empty = np.zeros((0, 2), np.float32)
    return fl.data.FederatedData("three", clients, empty, np.zeros(0, np.float32), None)


def test_staleness_weighted_steps_match_a_hand_trace() -> None:
    data = three_clients()
    algorithm = fl.fedavg(fl.custom(MODEL, constant_update))
    durations = {0: 1.0, 1: 2.0, 2: 3.0}

    def clock(client: int, broadcast: Broadcast) -> float:
        return durations[client]

    start = np.zeros(3, np.float32)
    history = train_buffered(
        algorithm, InProcessExecutor(algorithm.client, data.clients),
        Buffered(concurrency=3, buffer_size=2, updates=2), population=[0, 1, 2], clock=clock,
        params=start,
    )  # fmt: skip
    # t=1: client 0 (version 0) → buffer; it restarts from version 0, due at t=2.
    # t=2: client 1 (version 0) fills the buffer → step 1 = (u0 + u1) / 2; client 1 restarts.
    # t=2: client 0's second update (started on version 0, staleness 1) → buffer.
    # t=3: client 2 (version 0, staleness 1) → step 2 = (u0 + u2) / (2 √2).
    u = {c: np.array(v) for c, v in UPDATES.items()}
    expected = (u[0] + u[1]) / 2 + (u[0] + u[2]) / (2 * math.sqrt(2))
    np.testing.assert_allclose(history.params, expected, rtol=1e-6)
    first, second = history.records
    assert first.accepted == (0, 1)
    assert second.accepted == (0, 2)
    assert first.metrics["staleness_mean"] == 0
    assert second.metrics["staleness_max"] == 1
    assert first.metrics["sim_clock"] == 2.0
    assert second.metrics["sim_clock"] == 3.0
    # Bytes since the previous step, 12 a model or an update (3 float32): step 1 saw the first
    # three launches and client 0's relaunch go down and two updates come up; step 2 the
    # relaunches of clients 1 and 0 and two updates.
    assert (first.metrics["bytes_down"], first.metrics["bytes_up"]) == (48.0, 24.0)
    assert (second.metrics["bytes_down"], second.metrics["bytes_up"]) == (24.0, 24.0)


def test_constant_weights_and_max_staleness() -> None:
    data = three_clients()
    algorithm = fl.fedavg(fl.custom(MODEL, constant_update))
    durations = {0: 1.0, 1: 2.0, 2: 3.0}
    history = train_buffered(
        algorithm, InProcessExecutor(algorithm.client, data.clients),
        Buffered(concurrency=3, buffer_size=2, updates=2, staleness="constant", max_staleness=0),
        population=[0, 1, 2], clock=lambda c, b: durations[c], params=np.zeros(3, np.float32),
    )  # fmt: skip
    # Stale updates are refused: after step 1 only updates started on version 1 count.
    assert all(r.metrics["staleness_max"] == 0 for r in history.records)
    assert any("too stale" in r.reason for record in history.records for r in record.rejected)


class Counting:
    def __init__(self, inner: InProcessExecutor):
        self.inner, self.calls, self.tasks = inner, 0, 0

    def run(self, tasks: Sequence[Task]) -> list[Reply]:
        self.calls += 1
        self.tasks += len(tasks)
        return self.inner.run(tasks)


def test_fedbuff_learns_digits_and_batches_its_clients() -> None:
    data = fl.data.digits().split(fl.data.dirichlet(0.5), clients=40, seed=0)
    work = fl.local_sgd(fl.SoftmaxRegression(64, 10), lr=0.3, epochs=1, batch_size=16)
    algorithm = fl.fedavg(work)
    fleet = Fleet.sample(40, seed=0, speed=LogNormal(1.0, 1.0), seconds_per_example=0.01)
    executor = Counting(InProcessExecutor(algorithm.client, data.clients))
    model = algorithm.work.model
    history = train_buffered(
        algorithm, executor, Buffered(concurrency=20, buffer_size=10, updates=60, seed=1),
        population=list(range(40)), clock=fleet_clock(fleet, work, data.clients),
        evaluate=lambda p: model.evaluate(p, data.test_x, data.test_y),
    )  # fmt: skip
    assert len(history) == 60
    assert history.last("test_accuracy") >= 0.85, history.table()
    assert history.records[-1].metrics["sim_clock"] > history.records[0].metrics["sim_clock"]
    assert any(r.metrics["staleness_max"] > 0 for r in history.records)
    assert executor.tasks >= 600
    assert executor.calls < executor.tasks / 3  # clients started on one version train together


def test_configuration_errors() -> None:
    work = fl.local_sgd(fl.SoftmaxRegression(64, 10), lr=0.1)
    with pytest.raises(ValueError, match="buffer_size=5 can never fill with concurrency=3"):
        Buffered(concurrency=3, buffer_size=5, updates=1)
    data = three_clients()
    with pytest.raises(ValueError, match="scaffold keeps server-side state"):
        train_buffered(
            fl.scaffold(work), InProcessExecutor(fl.scaffold(work).client, data.clients),
            Buffered(concurrency=2, buffer_size=1, updates=1), population=[0, 1, 2],
            clock=lambda c, b: 1.0,
        )  # fmt: skip
    with pytest.raises(ValueError, match="concurrency=3 exceeds the population of 2"):
        train_buffered(
            fl.fedavg(work), InProcessExecutor(fl.fedavg(work).client, data.clients),
            Buffered(concurrency=3, buffer_size=1, updates=1), population=[0, 1],
            clock=lambda c, b: 1.0,
        )  # fmt: skip
