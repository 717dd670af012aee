"""The round engine: rejection of bad updates, minimum cohort, determinism, stopping."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest

import fedloom as fl
from fedloom.core.messages import ClientResult
from fedloom.data import FederatedData
from fedloom.engine import Failure, Reply, Task, TrainTask
from fedloom.executors import InProcessExecutor


class Corrupting:
    """An executor whose chosen clients send back a damaged result, as a broken site would."""

    def __init__(self, inner: InProcessExecutor, damage: dict[int, str]):
        self.inner, self.damage = inner, damage

    def run(self, tasks: Sequence[Task]) -> list[Reply]:
        replies = self.inner.run(tasks)
        out: list[Reply] = []
        for task, reply in zip(tasks, replies, strict=True):
            kind = self.damage.get(task.client) if isinstance(task, TrainTask) else None
            if kind is not None and isinstance(reply, ClientResult):
                reply = _damage(reply, kind)
            out.append(reply)
        return out


def _damage(result: ClientResult, kind: str) -> Reply:
    if kind == "short":
        return replace(result, update=result.update[:-1])
    if kind == "nan":
        update = result.update.copy()
        update[3] = np.nan
        return replace(result, update=update)
    if kind == "inf":
        update = result.update.copy()
        update[0] = np.inf
        return replace(result, update=update)
    if kind == "zero":
        return replace(result, num_examples=0)
    if kind == "negative":
        return replace(result, num_examples=-5)
    if kind == "crash":
        return Failure("RuntimeError: disk full")
    raise AssertionError(kind)


def _run(
    data: FederatedData, work: fl.LocalSGD, damage: dict[int, str], *, min_cohort: int = 1
) -> fl.History:
    algorithm = fl.fedavg(work)
    executor = Corrupting(InProcessExecutor(algorithm.client, data.clients), damage)
    return fl.simulate(
        algorithm,
        data,
        rounds=1,
        cohort=len(data),
        seed=3,
        executor=executor,
        min_cohort=min_cohort,
        federated_eval=False,
    )


def test_bad_updates_are_rejected_by_name_and_the_round_goes_on(
    digits_iid: FederatedData, softmax: fl.SoftmaxRegression
) -> None:
    work = fl.local_sgd(softmax, lr=0.1, batch_size=64)
    damage = {0: "short", 1: "nan", 2: "inf", 3: "zero", 4: "negative", 5: "crash"}
    history = _run(digits_iid, work, damage)
    record = history.records[0]
    reasons = {r.client: r.reason for r in record.rejected}
    assert set(reasons) == set(damage)
    assert "shape" in reasons[0]
    assert "NaN" in reasons[1]
    assert "infinity" in reasons[2]
    assert "num_examples must be > 0" in reasons[3]
    assert "-5" in reasons[4]
    assert "disk full" in reasons[5]
    assert record.accepted == (6, 7, 8, 9)
    assert record.metrics["rejected"] == 6
    assert record.aborted is None

    # The result equals a round run with only the healthy clients.
    algorithm = fl.fedavg(work)
    clean = fl.engine.train(
        algorithm,
        InProcessExecutor(algorithm.client, digits_iid.clients),
        fl.engine.schedule(rounds=1, cohort=4, seed=3, federated_eval=False),
        population=[6, 7, 8, 9],
    )
    # Client seeds depend on (run seed, round, client id), not on who else was sampled.
    np.testing.assert_array_equal(history.params, clean.params)


def test_round_aborts_below_min_cohort_and_keeps_params(
    digits_iid: FederatedData, softmax: fl.SoftmaxRegression
) -> None:
    work = fl.local_sgd(softmax, lr=0.1, batch_size=64)
    damage = {c: "nan" for c in range(8)}
    history = _run(digits_iid, work, damage, min_cohort=3)
    record = history.records[0]
    assert record.aborted is not None
    assert "min_cohort=3" in record.aborted
    np.testing.assert_array_equal(history.params, softmax.init(3))


def test_client_exception_becomes_a_failure_not_a_crash(
    digits_iid: FederatedData, softmax: fl.SoftmaxRegression
) -> None:
    def train(params, x, y, seed):  # type: ignore[no-untyped-def]
        if seed % 2 == 0:
            raise RuntimeError("out of memory")
        return params - 0.01, {}

    algorithm = fl.fedavg(fl.custom(softmax, train))
    history = fl.simulate(algorithm, digits_iid, rounds=2, cohort=10, seed=0, federated_eval=False)
    for record in history.records:
        assert len(record.accepted) + len(record.rejected) == 10
        assert all("RuntimeError: out of memory" in r.reason for r in record.rejected)


@pytest.mark.parametrize("recipe", ["fedavg", "fedadam", "scaffold", "fednova", "fedprox"])
def test_same_seed_gives_bit_identical_parameters(
    digits_iid: FederatedData, softmax: fl.SoftmaxRegression, recipe: str
) -> None:
    work = fl.local_sgd(softmax, lr=0.1, batch_size=16)
    options = {"mu": 0.1} if recipe == "fedprox" else {}
    algorithm = fl.algorithm(recipe, work, **options)

    def run(seed: int) -> np.ndarray:
        return fl.simulate(
            algorithm, digits_iid, rounds=3, cohort=fl.poisson(0.5), seed=seed, federated_eval=False
        ).params

    first, second, other = run(7), run(7), run(8)
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


def test_target_stops_early(digits_iid: FederatedData, softmax: fl.SoftmaxRegression) -> None:
    work = fl.local_sgd(softmax, lr=0.5, batch_size=32)
    history = fl.simulate(
        fl.fedavg(work), digits_iid, rounds=50, cohort=10, target=("test_accuracy", 0.85)
    )
    assert len(history) < 50
    assert history.records[-1].metrics["test_accuracy"] >= 0.85
    assert all(r.metrics["test_accuracy"] < 0.85 for r in history.records[:-1])
    assert "test_accuracy reached 0.85" in history.stopped


def test_federated_evaluation_is_example_weighted(
    digits_iid: FederatedData, softmax: fl.SoftmaxRegression
) -> None:
    work = fl.local_sgd(softmax, lr=0.5, batch_size=32)
    history = fl.simulate(fl.fedavg(work), digits_iid, rounds=1, cohort=3, seed=1)
    params = history.params
    correct = sum(
        softmax.evaluate(params, c.x_test, c.y_test)["accuracy"] * c.num_test
        for c in digits_iid.clients
    )
    total = sum(c.num_test for c in digits_iid.clients)
    assert history.records[0].metrics["client_test_accuracy"] == pytest.approx(correct / total)
    central = softmax.evaluate(params, digits_iid.test_x, digits_iid.test_y)
    assert history.records[0].metrics["test_accuracy"] == pytest.approx(central["accuracy"])


def test_scaffold_clients_keep_their_control_variates_between_rounds(
    digits_iid: FederatedData, softmax: fl.SoftmaxRegression
) -> None:
    algorithm = fl.scaffold(fl.local_sgd(softmax, lr=0.1, batch_size=64))
    executor = InProcessExecutor(algorithm.client, digits_iid.clients)
    history = fl.simulate(
        algorithm, digits_iid, rounds=2, cohort=4, seed=0, executor=executor, federated_eval=False
    )
    joined = {c for r in history.records for c in r.accepted}
    assert set(executor.states) == joined
    for client in joined:
        control = executor.states[client][fl.client.CONTROL]
        assert control.shape == (softmax.layout.size,)
        assert np.abs(control).sum() > 0


def test_resuming_from_a_server_state_continues_exactly(
    digits_iid: FederatedData, softmax: fl.SoftmaxRegression
) -> None:
    algorithm = fl.fedadam(fl.local_sgd(softmax, lr=0.1, batch_size=32), server_lr=0.05)
    population = [c.client_id for c in digits_iid.clients]
    plan = fl.engine.schedule(rounds=4, cohort=fl.poisson(0.5), seed=11, federated_eval=False)

    def executor() -> InProcessExecutor:
        return InProcessExecutor(algorithm.client, digits_iid.clients)

    straight = fl.engine.train(algorithm, executor(), plan, population=population)
    saved: list[fl.engine.ServerState] = []
    fl.engine.train(
        algorithm, executor(), replace(plan, rounds=2), population=population,
        on_round=lambda record, state: saved.append(state),
    )  # fmt: skip
    resumed = fl.engine.train(algorithm, executor(), plan, population=population, state=saved[-1])
    assert [r.round for r in resumed.records] == [2, 3]
    assert [r.cohort for r in resumed.records] == [r.cohort for r in straight.records[2:]]
    np.testing.assert_array_equal(resumed.params, straight.params)


def test_bytes_moved_count_every_vector_each_way(
    digits_iid: FederatedData, softmax: fl.SoftmaxRegression
) -> None:
    size = softmax.layout.size  # 64 * 10 + 10 = 650 float32 entries
    assert size == 650
    work = fl.local_sgd(softmax, lr=0.1, batch_size=64)
    plain = fl.simulate(fl.fedavg(work), digits_iid, rounds=1, cohort=4, federated_eval=False)
    assert plain.records[0].metrics["bytes_down"] == 4 * 650 * 4
    assert plain.records[0].metrics["bytes_up"] == 4 * 650 * 4
    # SCAFFOLD sends the server control variate down and the control change up: twice each way.
    both = fl.simulate(fl.scaffold(work), digits_iid, rounds=1, cohort=4, federated_eval=False)
    assert both.records[0].metrics["bytes_down"] == 4 * 2 * 650 * 4
    assert both.records[0].metrics["bytes_up"] == 4 * 2 * 650 * 4
