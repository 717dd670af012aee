"""Training rounds through SecAgg+: the same result as plain FedAvg within quantization error,
exact sums of the survivors when clients vanish between the protocol's rounds, clean aborts,
and refusals at build time."""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass

import numpy as np
import pytest

import fedloom as fl
from fedloom.core.layout import Vector
from fedloom.core.messages import Broadcast
from fedloom.data import FederatedData
from fedloom.engine.rounds import client_seed, init_state, run_round
from fedloom.engine.sampling import FixedCount
from fedloom.engine.secure_rounds import SecureTaskKind
from fedloom.engine.tasks import Failure
from fedloom.executors import InProcessExecutor
from fedloom.executors.devices import DeviceExecutor, DeviceProfile, Fleet
from fedloom.secagg import SecureSum
from fedloom.secagg.messages import (
    KeyRoster,
    MaskingRequest,
    SecureReply,
    SecureTrainTask,
    UnmaskRequest,
)
from fedloom.stages import StageTraits


def phase_of(task: SecureTaskKind) -> str:
    if isinstance(task, SecureTrainTask):
        return "advertise"
    request = task.request
    if isinstance(request, KeyRoster):
        return "share"
    if isinstance(request, MaskingRequest):
        return "mask"
    assert isinstance(request, UnmaskRequest)
    return "unmask"


class Vanishing:
    """An in-process executor whose chosen clients stop answering from a chosen round on, as a
    phone that loses its connection would."""

    def __init__(self, inner: InProcessExecutor, vanish: Mapping[str, Set[int]]):
        self.inner, self.vanish = inner, vanish
        self.gone: set[int] = set()

    def run_secure(self, tasks: Sequence[SecureTaskKind]) -> list[SecureReply | Failure]:
        if tasks:
            self.gone |= set(self.vanish.get(phase_of(tasks[0]), ()))
        live = [t for t in tasks if t.client not in self.gone]
        answers = dict(zip([t.client for t in live], self.inner.run_secure(live), strict=True))
        return [answers.get(t.client, Failure("connection lost")) for t in tasks]


def train(softmax: fl.SoftmaxRegression) -> fl.LocalSGD:
    return fl.local_sgd(softmax, lr=0.1, epochs=1, batch_size=16)


def updates_of(
    algorithm: fl.Algorithm, data: FederatedData, params: Vector, clients: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Each client's own update for round 0 and its example count, computed in the open."""
    program = algorithm.client
    rows, weights = [], []
    for c in clients:
        d = data.clients[c]
        result, _ = program.run(
            Broadcast(0, params, client_seed(0, 0, c)), d.x_train, d.y_train, {}
        )
        rows.append(result.update)
        weights.append(result.num_examples)
    return np.stack(rows), np.array(weights, dtype=np.float64)


def test_secure_fedavg_equals_plain_fedavg_within_quantization(
    digits_iid: FederatedData, softmax: fl.SoftmaxRegression
) -> None:
    plain = fl.fedavg(train(softmax))
    secure = plain.with_stages(fl.secure_sum(clip=50.0))
    run = {"rounds": 3, "cohort": 6, "seed": 0, "federated_eval": False}
    a = fl.simulate(plain, digits_iid, **run)
    b = fl.simulate(secure, digits_iid, **run)
    assert all(r.aborted is None for r in b.records)
    assert [r.accepted for r in b.records] == [r.cohort for r in b.records]
    # quantization: ±1/scale per client and entry, averaged over the example weights
    np.testing.assert_allclose(b.params, a.params, atol=1e-4)
    assert not np.array_equal(b.params, a.params)  # it really went through the ring
    again = fl.simulate(secure, digits_iid, **run)
    np.testing.assert_array_equal(again.params, b.params)  # fresh keys, same exact sums
    metrics = b.records[0].metrics
    assert metrics["secagg.survivors"] == 6
    assert metrics["secagg.dropped"] == 0
    # six clients: the complete graph; t = 3 > 5/2 leaves room for one dropout and one corrupt
    assert metrics["secagg.threshold"] == 3
    assert metrics["secagg.degree"] == 5


@pytest.mark.parametrize(
    "vanish",
    [
        {"advertise": {0}, "share": {3}, "mask": {5}, "unmask": {7}},
        {"mask": {1, 2}},
        {"unmask": {0, 4, 9}},
    ],
)
def test_the_update_is_the_survivors_weighted_mean_when_clients_vanish(
    digits_iid: FederatedData, softmax: fl.SoftmaxRegression, vanish: dict[str, set[int]]
) -> None:
    algorithm = fl.fedavg(train(softmax)).with_stages(fl.secure_sum(clip=50.0, dropout_rate=0.3))
    executor = Vanishing(InProcessExecutor(algorithm.client, digits_iid.clients), vanish)
    state = init_state(algorithm, softmax.init(0))
    after, record = run_round(
        algorithm, state, executor, population=range(10), sampler=FixedCount(10), seed=0
    )
    assert record.aborted is None
    lost = vanish.get("advertise", set()) | vanish.get("share", set()) | vanish.get("mask", set())
    survivors = sorted(set(range(10)) - lost)
    assert list(record.accepted) == survivors
    assert {r.client for r in record.rejected} == lost
    assert record.metrics["secagg.dropped"] == len(lost)
    for phase in ("advertise", "share", "mask", "unmask"):
        assert record.metrics[f"secagg.dropped.{phase}"] == len(vanish.get(phase, ()))
    updates, weights = updates_of(algorithm, digits_iid, state.params, survivors)
    expected = state.params + (weights @ updates) / weights.sum()
    np.testing.assert_allclose(after.params, expected, atol=1e-5)


@pytest.mark.parametrize("reducer", ["weighted_mean", "mean"])
def test_updates_are_clipped_and_weights_capped_before_the_sum(
    digits_iid: FederatedData, softmax: fl.SoftmaxRegression, reducer: str
) -> None:
    stage = SecureSum(clip=0.05, max_weight=60)
    algorithm = fl.fedavg(train(softmax)).with_stages(stage)
    if reducer == "mean":
        algorithm = algorithm.with_reducer(fl.reducers.mean())
    state = init_state(algorithm, softmax.init(0))
    executor = InProcessExecutor(algorithm.client, digits_iid.clients)
    after, record = run_round(
        algorithm, state, executor, population=range(10), sampler=FixedCount(10), seed=0
    )
    updates, counts = updates_of(algorithm, digits_iid, state.params, list(range(10)))
    norms = np.linalg.norm(updates.astype(np.float64), axis=1)
    assert np.all(norms > 0.05), "every update is clipped"
    assert counts.min() > 60, "every weight is capped"
    clipped = updates * (0.05 / norms)[:, None]
    weights = np.minimum(counts, 60) if reducer == "weighted_mean" else np.ones(10)
    assert record.metrics["secagg.total_weight"] == weights.sum()
    expected = state.params + (weights @ clipped) / weights.sum()
    np.testing.assert_allclose(after.params, expected, atol=1e-6)


def test_a_client_whose_update_is_not_finite_drops_out_of_the_sum(
    digits_iid: FederatedData, softmax: fl.SoftmaxRegression
) -> None:
    def diverge(params: Vector, x: object, y: object, seed: int) -> tuple[Vector, dict[str, float]]:
        return np.full_like(params, np.nan if seed % 3 == 0 else 0.5), {}

    algorithm = fl.fedavg(fl.custom(softmax, diverge)).with_stages(
        fl.secure_sum(clip=50.0, dropout_rate=0.3)
    )
    executor = InProcessExecutor(algorithm.client, digits_iid.clients)
    state = init_state(algorithm, softmax.init(0))
    after, record = run_round(
        algorithm, state, executor, population=range(10), sampler=FixedCount(10), seed=0
    )
    bad = {c for c in range(10) if client_seed(0, 0, c) % 3 == 0}
    assert 0 < len(bad) <= 3
    assert record.aborted is None
    assert set(record.accepted) == set(range(10)) - bad
    for rejection in record.rejected:
        assert rejection.client in bad
        assert "contains NaN or infinity" in rejection.reason
    np.testing.assert_allclose(after.params, 0.5, atol=1e-5)  # every good client says 0.5


def test_too_few_survivors_abort_the_round_and_leave_the_model(
    digits_iid: FederatedData, softmax: fl.SoftmaxRegression
) -> None:
    algorithm = fl.fedavg(train(softmax)).with_stages(fl.secure_sum(clip=50.0))
    executor = Vanishing(
        InProcessExecutor(algorithm.client, digits_iid.clients), {"mask": {0, 1, 2, 3, 4, 5}}
    )
    state = init_state(algorithm, softmax.init(0))
    after, record = run_round(
        algorithm, state, executor, population=range(10), sampler=FixedCount(10), seed=0
    )
    assert record.aborted == (
        "secure aggregation aborted: 4 masked inputs arrived, fewer than the threshold t=5"
    )
    assert record.accepted == ()
    assert after.round == 1
    np.testing.assert_array_equal(after.params, state.params)
    assert record.metrics["secagg.dropped.mask"] == 6


def test_min_cohort_aborts_before_any_mask_is_removed(
    digits_iid: FederatedData, softmax: fl.SoftmaxRegression
) -> None:
    algorithm = fl.fedavg(train(softmax)).with_stages(fl.secure_sum(clip=50.0))
    executor = Vanishing(InProcessExecutor(algorithm.client, digits_iid.clients), {"mask": {1, 2}})
    state = init_state(algorithm, softmax.init(0))
    after, record = run_round(
        algorithm,
        state,
        executor,
        population=range(10),
        sampler=FixedCount(10),
        seed=0,
        min_cohort=9,
    )
    assert record.aborted == "secure aggregation aborted: 8 masked inputs, fewer than min_cohort=9"
    np.testing.assert_array_equal(after.params, state.params)
    sessions = executor.inner.secure.sessions
    assert {sessions[c].phase for c in range(10) if c not in (1, 2)} == {"unmask"}, (
        "no unmasking request was sent"
    )
    _, next_record = run_round(
        algorithm, after, executor, population=range(5, 10), sampler=FixedCount(5), seed=0
    )
    assert next_record.aborted is None
    assert executor.inner.secure.sessions == {}, "stale sessions are dropped"


def test_a_cohort_the_graph_cannot_cover_aborts_instead_of_falling_back(
    digits_iid: FederatedData, softmax: fl.SoftmaxRegression
) -> None:
    algorithm = fl.fedavg(train(softmax)).with_stages(fl.secure_sum(clip=1.0, dropout_rate=0.3))
    history = fl.simulate(algorithm, digits_iid, rounds=1, cohort=3, federated_eval=False)
    aborted = history.records[0].aborted
    assert aborted is not None
    assert aborted.startswith("secure aggregation cannot start")
    assert "3 clients tolerates dropout_rate=0.3" in aborted


def test_the_vectorized_executor_runs_the_same_protocol(digits_iid: FederatedData) -> None:
    from fedloom.executors.vectorized import VectorizedExecutor

    work = fl.torch.local_sgd(fl.torch.mlp(64, [16], 10), lr=0.1, epochs=1, batch_size=16)
    algorithm = fl.fedavg(work).with_stages(fl.clip_by_norm(5.0), fl.secure_sum(clip=5.0))
    run = {"rounds": 1, "cohort": 6, "seed": 0, "federated_eval": False}
    vectorized = VectorizedExecutor(algorithm.client, digits_iid.clients, strict=True)
    a = fl.simulate(algorithm, digits_iid, executor=vectorized, **run)
    b = fl.simulate(algorithm, digits_iid, executor="inprocess", **run)
    assert vectorized.batched_tasks == 6
    assert all(r.aborted is None for r in a.records)
    np.testing.assert_allclose(a.params, b.params, atol=1e-4)
    plain = fl.simulate(fl.fedavg(work).with_stages(fl.clip_by_norm(5.0)), digits_iid, **run)
    np.testing.assert_allclose(a.params, plain.params, atol=1e-3)


def test_the_process_executor_gives_the_in_process_result(
    digits_iid: FederatedData, softmax: fl.SoftmaxRegression
) -> None:
    """Training on worker processes, the protocol's client sessions in the pool's own process:
    the same exact sums, so the same parameters bit for bit."""
    algorithm = fl.fedavg(train(softmax)).with_stages(fl.secure_sum(clip=50.0))
    run = {"rounds": 2, "cohort": 6, "seed": 0, "federated_eval": False}
    pool = fl.simulate(algorithm, digits_iid, executor="process", **run)
    here = fl.simulate(algorithm, digits_iid, executor="inprocess", **run)
    assert all(r.aborted is None for r in pool.records)
    np.testing.assert_array_equal(pool.params, here.params)


def test_an_executor_without_the_protocol_refuses_clearly(
    digits_iid: FederatedData, softmax: fl.SoftmaxRegression
) -> None:
    algorithm = fl.fedavg(train(softmax)).with_stages(fl.secure_sum(clip=1.0))
    inner = InProcessExecutor(algorithm.client, digits_iid.clients)
    fleet = Fleet({c.client_id: DeviceProfile() for c in digits_iid.clients})
    devices = DeviceExecutor(inner, fleet, program=algorithm.client, clients=digits_iid.clients)
    with pytest.raises(ValueError, match="DeviceExecutor cannot run secure aggregation"):
        fl.simulate(algorithm, digits_iid, rounds=1, cohort=5, executor=devices)


def test_secure_fedavg_on_digits_reaches_the_plain_accuracy() -> None:
    data = fl.data.digits().split(fl.data.dirichlet(0.5), clients=20, seed=0)
    work = fl.local_sgd(fl.SoftmaxRegression(64, 10), lr=0.2, epochs=2, batch_size=16)
    run = {"rounds": 10, "cohort": 10, "seed": 0, "federated_eval": False}
    plain = fl.simulate(fl.fedavg(work), data, **run).last("test_accuracy")
    secure = fl.simulate(fl.fedavg(work).with_stages(fl.secure_sum(clip=100.0)), data, **run).last(
        "test_accuracy"
    )
    assert plain > 0.8
    assert abs(secure - plain) <= 0.01


@dataclass(frozen=True)
class CoordinateMedian:
    """A robust (non-linear) reducer."""

    @property
    def linear(self) -> bool:
        return False

    def __call__(self, updates: np.ndarray, weights: np.ndarray) -> Vector:
        return np.median(updates, axis=0).astype(np.float32)


@dataclass(frozen=True)
class TopK:
    """A codec whose decoder needs each client's indices: it cannot sit before a secure sum."""

    k: int = 5
    name: str = "topk"

    @property
    def traits(self) -> StageTraits:
        return StageTraits()

    def init(self, layout: object) -> None:
        return None

    def config(self, state: object) -> dict[str, float]:
        return {}

    def client(
        self, update: Vector, config: object, rng: object
    ) -> tuple[Vector, dict[str, float]]:
        keep = np.argsort(np.abs(update))[-self.k :]
        out = np.zeros_like(update)
        out[keep] = update[keep]
        return out, {}

    def server(
        self, aggregate: Vector, state: object, metrics: object
    ) -> tuple[Vector, None, dict[str, float]]:
        return aggregate, None, {}


def test_pipelines_that_cannot_be_summed_securely_are_refused_when_built(
    softmax: fl.SoftmaxRegression,
) -> None:
    secure = fl.fedavg(train(softmax)).with_stages(fl.secure_sum(clip=1.0))
    with pytest.raises(ValueError, match="stage 'secure_sum' can only be decoded from a"):
        secure.with_reducer(CoordinateMedian())
    with pytest.raises(ValueError, match="stage 'topk' cannot run before the secure sum"):
        fl.fedavg(train(softmax)).with_stages(TopK(), fl.secure_sum(clip=1.0))
    with pytest.raises(ValueError, match="stage 'clip' comes after the secure sum"):
        secure.with_stages(fl.clip_by_norm(1.0))


def test_scaffold_is_refused_with_its_reason(
    digits_iid: FederatedData, softmax: fl.SoftmaxRegression
) -> None:
    algorithm = fl.scaffold(train(softmax)).with_stages(fl.secure_sum(clip=1.0))
    with pytest.raises(ValueError, match="needs each client's own vectors"):
        fl.simulate(algorithm, digits_iid, rounds=1, cohort=5)


def test_the_stage_validates_its_arguments() -> None:
    with pytest.raises(ValueError, match="bits must be an integer in \\[8, 32\\], got 64"):
        SecureSum(clip=1.0, bits=64)
    with pytest.raises(ValueError, match="clip must be a finite number > 0, got -1"):
        fl.secure_sum(clip=-1)
    with pytest.raises(RuntimeError, match="runs only inside the engine's secure aggregation"):
        SecureSum(clip=1.0).server(np.zeros(3, dtype=np.float32), None, [])


def test_fedbuff_refuses_secure_aggregation(
    digits_iid: FederatedData, softmax: fl.SoftmaxRegression
) -> None:
    from fedloom.engine import Buffered, train_buffered

    algorithm = fl.fedavg(train(softmax)).with_stages(fl.secure_sum(clip=1.0))
    executor = InProcessExecutor(algorithm.client, digits_iid.clients)
    with pytest.raises(ValueError, match=r"FedBuff.*cannot run secure aggregation"):
        train_buffered(
            algorithm,
            executor,
            Buffered(concurrency=4, buffer_size=2, updates=1),
            population=list(range(10)),
            clock=lambda c, b: 1.0,
        )
