"""The vectorized executor trains a cohort as one batch and must match the in-process executor.

Digits split over 12 clients by Dirichlet(0.5) holds 32 to 184 training examples per client, so
with batch 16 the clients take unequal numbers of local steps and most end an epoch on a
partial batch: exactly the cases the padded, masked batch has to get right.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import fedloom as fl
from fedloom.core.messages import Broadcast
from fedloom.data import FederatedData
from fedloom.engine.tasks import EvaluateTask, Evaluation, Failure, Task, TrainTask
from fedloom.executors import InProcessExecutor, _batched
from fedloom.executors._batched import _buckets
from fedloom.executors.vectorized import VectorizedExecutor
from fedloom.torch import local_sgd, mlp

ROUNDS = 3


@pytest.fixture(scope="module")
def data() -> FederatedData:
    return fl.data.digits().split(fl.data.dirichlet(0.5), clients=12, seed=0)


def work(**options: Any) -> fl.LocalSGD:
    config: dict[str, Any] = {"lr": 0.1, "epochs": 2, "batch_size": 16, **options}
    return local_sgd(mlp(64, [32], 10), **config)


def assert_same_history(expected: fl.History, got: fl.History) -> None:
    np.testing.assert_allclose(got.params, expected.params, rtol=1e-4, atol=1e-5)
    assert [r.accepted for r in got.records] == [r.accepted for r in expected.records]
    np.testing.assert_allclose(got.metric("train_loss"), expected.metric("train_loss"), rtol=1e-5)
    np.testing.assert_allclose(got.metric("local_steps"), expected.metric("local_steps"))
    np.testing.assert_allclose(
        got.metric("client_test_accuracy"), expected.metric("client_test_accuracy"), atol=1e-9
    )


def both(
    algorithm: fl.Algorithm, data: FederatedData, **executor_options: Any
) -> tuple[fl.History, fl.History, VectorizedExecutor]:
    expected = fl.simulate(algorithm, data, rounds=ROUNDS, cohort=12, seed=0)
    executor = VectorizedExecutor(algorithm.client, data.clients, **executor_options)
    got = fl.simulate(algorithm, data, rounds=ROUNDS, cohort=12, seed=0, executor=executor)
    return expected, got, executor


RECIPES = {
    "fedavg-sgd": lambda: fl.fedavg(work()),
    "fedavg-steps": lambda: fl.fedavg(work(epochs=None, steps=7)),
    "momentum": lambda: fl.fedavg(work(momentum=0.9)),
    "adam": lambda: fl.fedavg(work(optimizer="adam", lr=0.01)),
    "weight-decay": lambda: fl.fedavg(work(weight_decay=0.01)),
    "fedprox": lambda: fl.fedprox(work(), mu=0.1),
    "scaffold": lambda: fl.scaffold(work()),
    "scaffold-steps": lambda: fl.scaffold(work(epochs=None, steps=5)),
    "fednova": lambda: fl.fednova(work()),
    "fednova-momentum": lambda: fl.fednova(work(momentum=0.5)),
    "fednova-prox": lambda: fl.fednova(replace(work(), prox_mu=0.1)),
    "fedadam-clipped": lambda: fl.fedadam(work()).with_stages(fl.clip_by_norm(0.5)),
}


class TanhNet(nn.Module):
    """Not an ``nn.Sequential``, so it trains through the general vmap path, not the MLP one."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(64, 16)
        self.out = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(x)))


@pytest.mark.parametrize("recipe", ["fedprox", "fedavg"])
def test_the_general_vmap_path_matches_in_process(recipe: str, data: FederatedData) -> None:
    # FedProx steps through LocalSGD's NumPy arithmetic, FedAvg's plain SGD in place in torch.
    train = local_sgd(TanhNet, lr=0.1, epochs=2, batch_size=16)
    algorithm = fl.fedprox(train, mu=0.1) if recipe == "fedprox" else fl.fedavg(train)
    expected, got, executor = both(algorithm, data)
    assert executor.vectorized
    assert executor.batched_tasks == ROUNDS * 12
    assert_same_history(expected, got)


def test_plain_mlps_take_the_hand_written_path(data: FederatedData) -> None:
    executor = VectorizedExecutor(fl.fedavg(work()).client, data.clients)
    assert executor._batched is not None
    assert executor._batched.model.dense is not None


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_matches_in_process(recipe: str, data: FederatedData) -> None:
    expected, got, executor = both(RECIPES[recipe](), data)
    assert executor.vectorized
    assert executor.fallback_reason is None
    # Every training task really went through the batched path, first rounds included.
    assert executor.batched_tasks == ROUNDS * 12
    assert_same_history(expected, got)


def test_clients_take_unequal_steps_on_partial_batches(data: FederatedData) -> None:
    sizes = [c.num_train for c in data.clients]
    steps = {work().num_steps(n) for n in sizes}
    assert len(steps) > 3
    assert any(n % 16 for n in sizes)


def test_scaffold_keeps_the_same_client_control_variates(data: FederatedData) -> None:
    algorithm = fl.scaffold(work())
    in_process = InProcessExecutor(algorithm.client, data.clients)
    fl.simulate(algorithm, data, rounds=ROUNDS, cohort=12, seed=0, executor=in_process)
    vectorized = VectorizedExecutor(algorithm.client, data.clients)
    fl.simulate(algorithm, data, rounds=ROUNDS, cohort=12, seed=0, executor=vectorized)
    assert sorted(vectorized.states) == sorted(in_process.states) == list(range(12))
    for client, state in in_process.states.items():
        np.testing.assert_allclose(
            vectorized.states[client]["control"], state["control"], rtol=1e-4, atol=1e-5
        )


@pytest.mark.parametrize("recipe", ["fedavg-sgd", "scaffold"])
def test_chunks_give_the_unchunked_result(recipe: str, data: FederatedData) -> None:
    algorithm = RECIPES[recipe]()
    whole = VectorizedExecutor(algorithm.client, data.clients)
    chunked = VectorizedExecutor(algorithm.client, data.clients, max_batch_clients=5)
    runs = [
        fl.simulate(algorithm, data, rounds=ROUNDS, cohort=12, seed=0, executor=executor)
        for executor in (whole, chunked)
    ]
    np.testing.assert_allclose(runs[1].params, runs[0].params, rtol=1e-5, atol=1e-6)
    assert runs[1].metric("train_loss") == pytest.approx(runs[0].metric("train_loss"), rel=1e-6)


def test_a_diverging_client_does_not_poison_the_others(data: FederatedData) -> None:
    poisoned = data.clients[3]
    x = poisoned.x_train.astype(np.float32)
    x[0, 0] = np.nan
    clients = list(data.clients)
    clients[3] = replace(poisoned, x_train=x)
    bad = replace(data, clients=tuple(clients))
    expected, got, _ = both(fl.fedavg(work()), bad)
    assert all(3 not in r.accepted and len(r.accepted) == 11 for r in got.records)
    assert all("NaN" in r.rejected[0].reason for r in got.records)
    assert_same_history(expected, got)


def test_mixed_and_malformed_tasks_reply_as_in_process(data: FederatedData) -> None:
    algorithm = fl.scaffold(work())
    params = algorithm.work.model.init(0)
    control = {"control": np.zeros_like(params)}
    tasks: list[Task] = [
        TrainTask(0, Broadcast(0, params, 11, control)),
        EvaluateTask(1, params),
        TrainTask(99, Broadcast(0, params, 12, control)),  # unknown client
        TrainTask(2, Broadcast(0, params, 13)),  # no server control variate
        TrainTask(0, Broadcast(0, params, 14, control)),  # second time: from the first's state
        TrainTask(4, Broadcast(0, params[:5], 15, control)),  # wrong length
        TrainTask(5, Broadcast(0, params, 16, control)),
    ]
    expected = InProcessExecutor(algorithm.client, data.clients).run(tasks)
    got = VectorizedExecutor(algorithm.client, data.clients).run(tasks)
    assert [type(r) for r in got] == [type(r) for r in expected]
    for want, reply in zip(expected, got, strict=True):
        if isinstance(want, Failure):
            assert isinstance(reply, Failure)
            assert reply.reason == want.reason
        elif isinstance(want, Evaluation):
            assert reply == want
        else:
            assert isinstance(reply, fl.ClientResult)
            np.testing.assert_allclose(reply.update, want.update, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(
                reply.extras["control"], want.extras["control"], rtol=1e-4, atol=1e-5
            )
            assert reply.metrics == pytest.approx(want.metrics, rel=1e-5)
            assert reply.num_examples == want.num_examples


def test_rejects_a_bad_chunk_size(data: FederatedData) -> None:
    with pytest.raises(ValueError, match="max_batch_clients must be a positive integer, got 0"):
        VectorizedExecutor(fl.fedavg(work()).client, data.clients, max_batch_clients=0)


def test_restored_client_states_are_used(data: FederatedData) -> None:
    """A checkpoint restores ``executor.states`` in place; training must start from them."""
    algorithm = fl.scaffold(work())
    params = algorithm.work.model.init(0)
    rng = np.random.default_rng(0)
    restored = {
        c: {"control": rng.normal(0, 0.01, params.size).astype(np.float32)} for c in range(12)
    }
    server = {"control": rng.normal(0, 0.01, params.size).astype(np.float32)}
    tasks: list[Task] = [TrainTask(c, Broadcast(4, params, 100 + c, server)) for c in range(12)]
    in_process = InProcessExecutor(algorithm.client, data.clients)
    vectorized = VectorizedExecutor(algorithm.client, data.clients, max_batch_clients=7)
    for executor in (in_process, vectorized):
        executor.states.update(restored)
    expected, got = in_process.run(tasks), vectorized.run(tasks)
    for want, reply in zip(expected, got, strict=True):
        assert isinstance(want, fl.ClientResult)
        assert isinstance(reply, fl.ClientResult)
        np.testing.assert_allclose(reply.update, want.update, rtol=1e-4, atol=1e-5)
    for client in range(12):
        new = vectorized.states[client]["control"]
        np.testing.assert_allclose(new, in_process.states[client]["control"], atol=1e-4)
        assert not np.allclose(new, restored[client]["control"])


def test_a_client_that_breaks_the_batch_fails_alone(data: FederatedData) -> None:
    """A label out of range makes the batched step raise; the chunk reruns one by one."""
    clients = list(data.clients)
    y = clients[2].y_train.copy()
    y[0] = 10
    clients[2] = replace(clients[2], y_train=y)
    bad = replace(data, clients=tuple(clients))
    expected, got, executor = both(fl.fedavg(work()), bad, max_batch_clients=5)
    assert executor.vectorized
    assert all(2 not in r.accepted and len(r.accepted) == 11 for r in got.records)
    assert [r.rejected for r in got.records] == [r.rejected for r in expected.records]
    assert_same_history(expected, got)


@pytest.mark.parametrize("recipe", ["fedavg-sgd", "fedprox", "adam"])
def test_many_small_clients_split_into_padded_buckets_match_in_process(
    recipe: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 100 clients of 2 to 26 examples, batch 32: one minibatch per epoch, as large as the client,
    # so every step is cut into padded buckets (see _buckets), by SGD in place in torch (fedavg)
    # and by LocalSGD's NumPy arithmetic (fedprox, adam).
    many = fl.data.digits().split(fl.data.dirichlet(0.5, min_size=1), clients=100, seed=0)
    algorithm = {
        "fedavg-sgd": lambda: fl.fedavg(work(batch_size=32)),
        "fedprox": lambda: fl.fedprox(work(batch_size=32), mu=0.1),
        "adam": lambda: fl.fedavg(work(batch_size=32, optimizer="adam", lr=0.01)),
    }[recipe]()
    cuts: list[list[tuple[int, int]]] = []

    def recorded(lengths: np.ndarray) -> list[tuple[int, int]]:
        cuts.append(_buckets(lengths))
        return cuts[-1]

    monkeypatch.setattr(_batched, "_buckets", recorded)
    expected = fl.simulate(algorithm, many, rounds=2, cohort=100, seed=0)
    executor = VectorizedExecutor(algorithm.client, many.clients)
    got = fl.simulate(algorithm, many, rounds=2, cohort=100, seed=0, executor=executor)
    assert executor.batched_tasks == 2 * 100
    assert cuts
    assert all(len(ranges) > 1 for ranges in cuts)
    assert_same_history(expected, got)


def test_buckets_cut_padding_only_where_it_pays() -> None:
    # Ten clients with 32-example minibatches and thirty with 4: one padded batch would be
    # 40 x 32 = 1,280 rows; [0, 10) at width 32 and [10, 40) at width 4 are 440.
    lengths = np.array([32] * 10 + [4] * 30)
    assert _buckets(lengths) == [(0, 10), (10, 40)]
    # Equal sizes, or too few clients for two buckets of eight: one batch.
    assert _buckets(np.array([16] * 40)) == [(0, 40)]
    assert _buckets(np.array([32] * 7 + [1] * 8)) == [(0, 15)]
    # A cut that saves less than a quarter of the padded rows is not worth a second batch.
    assert _buckets(np.array([32] * 20 + [26] * 20)) == [(0, 40)]
    # The ranges tile the rows in order, at most four, and never pad more than one batch.
    for seed in range(20):
        rng = np.random.default_rng(seed)
        lengths = np.sort(np.minimum(rng.geometric(rng.uniform(0.02, 0.5), size=100), 32))[::-1]
        ranges = _buckets(lengths)
        assert ranges[0][0] == 0
        assert ranges[-1][1] == 100
        assert len(ranges) <= 4
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
        padded = sum((high - low) * lengths[low:high].max() for low, high in ranges)
        assert padded <= 100 * lengths.max()
