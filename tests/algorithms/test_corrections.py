"""Server halves of SCAFFOLD and FedNova against hand computation, and one FedNova round end to
end."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest

from fedloom.algorithms import Algorithm, fednova, scaffold
from fedloom.algorithms.corrections import FedNovaScale, ScaffoldControl
from fedloom.client import CONTROL, FEDNOVA_NORM, LocalSGD
from fedloom.core.layout import Field, Layout
from fedloom.core.messages import Broadcast, ClientResult
from fedloom.engine.rounds import apply_results, init_state, run_round
from fedloom.engine.sampling import FixedCount
from fedloom.engine.tasks import Reply, Task, TrainTask
from fedloom.linear import LinearRegression

AGGREGATE = np.array([0.4, -0.8, 1.2], dtype=np.float32)
LAYOUT = Layout((Field("w", (3,)),))


def result(n: int, **extras: list[float]) -> ClientResult:
    vectors = {k: np.array(v, dtype=np.float32) for k, v in extras.items()}
    return ClientResult(np.zeros(3, dtype=np.float32), n, extras=vectors)


def test_scaffold_control_adds_the_sum_of_changes_over_the_population() -> None:
    correction = ScaffoldControl()
    c = {CONTROL: np.array([0.5, -0.5, 1.0], dtype=np.float32)}
    results = [
        result(1, **{CONTROL: [1.0, 2.0, -3.0]}),
        result(7, **{CONTROL: [0.5, -1.0, 0.0]}),
    ]
    assert correction.summed == (CONTROL,)
    sums = {CONTROL: np.array([1.5, 1.0, -3.0])}  # what the engine folds from the results
    aggregate, extras = correction.apply(
        AGGREGATE, results, c, sums=sums, population=10, layout=LAYOUT
    )
    # c + (Δc_1 + Δc_2) / N, N = 10, whatever the example counts
    np.testing.assert_allclose(
        extras[CONTROL], [0.5 + 1.5 / 10, -0.5 + 1.0 / 10, 1.0 - 3.0 / 10], rtol=1e-6
    )
    np.testing.assert_array_equal(aggregate, AGGREGATE)
    np.testing.assert_array_equal(c[CONTROL], [0.5, -0.5, 1.0])


def test_scaffold_control_starts_at_zero_and_expects_a_full_vector() -> None:
    correction = ScaffoldControl()
    np.testing.assert_array_equal(correction.init(AGGREGATE)[CONTROL], np.zeros(3))
    assert correction.expected_extras(3) == {CONTROL: 3}


def test_a_scaffold_step_without_its_summed_control_changes_is_refused() -> None:
    algorithm = scaffold(LocalSGD(LinearRegression(2), lr=0.05, epochs=1, batch_size=1))
    state = init_state(algorithm, np.zeros(3, dtype=np.float32))
    results = [ClientResult(np.zeros(3, dtype=np.float32), 1)]
    weights = np.ones(1)
    with pytest.raises(ValueError, match=r"needs the summed extras \['control'\]"):
        apply_results(algorithm, state, results, weights, population=1, aggregate=AGGREGATE)


def test_fednova_scale_multiplies_by_the_weighted_mean_norm() -> None:
    correction = FedNovaScale()
    results = [result(1, **{FEDNOVA_NORM: [2.0]}), result(3, **{FEDNOVA_NORM: [4.25]})]
    aggregate, extras = correction.apply(
        AGGREGATE, results, {}, sums={}, population=10, layout=LAYOUT
    )
    # τ_eff = (1 · 2 + 3 · 4.25) / 4 = 14.75 / 4 = 3.6875
    np.testing.assert_allclose(aggregate, AGGREGATE.astype(np.float64) * 3.6875, rtol=1e-6)
    assert extras == {}
    assert correction.init(AGGREGATE) == {}
    assert correction.expected_extras(3) == {FEDNOVA_NORM: 1}


class InProcess:
    """Runs each task's client program on that client's data; records the broadcasts."""

    def __init__(self, algorithm: Algorithm, data: dict[int, tuple[np.ndarray, np.ndarray]]):
        self.algorithm = algorithm
        self.data = data
        self.broadcasts: dict[int, Broadcast] = {}

    def run(self, tasks: Sequence[Task]) -> list[Reply]:
        replies: list[Reply] = []
        for task in tasks:
            assert isinstance(task, TrainTask)
            self.broadcasts[task.client] = task.broadcast
            x, y = self.data[task.client]
            reply, _ = self.algorithm.client.run(task.broadcast, x, y, {})
            replies.append(reply)
        return replies


def clients(*sizes: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Client ``c`` holds ``sizes[c]`` random regression examples."""
    rng = np.random.default_rng(5)
    return {
        c: (
            rng.standard_normal((n, 2)).astype(np.float32),
            rng.standard_normal(n).astype(np.float32),
        )
        for c, n in enumerate(sizes)
    }


def test_one_fednova_round_by_hand() -> None:
    # Batch size 1 and one epoch: client 0 (2 examples) takes τ = 2 steps, client 1 takes 3.
    work = LocalSGD(LinearRegression(2), lr=0.05, epochs=1, batch_size=1)
    algorithm = fednova(work)
    data = clients(2, 3)
    executor = InProcess(algorithm, data)
    start = np.array([0.2, -0.1, 0.05], dtype=np.float32)
    state = init_state(algorithm, start)
    new_state, record = run_round(
        algorithm, state, executor, population=[0, 1], sampler=FixedCount(2), seed=3
    )
    assert record.accepted == (0, 1)

    # Each client's own unnormalized update, from the very broadcast it received.
    delta = {c: work.train(executor.broadcasts[c], *data[c], {})[0].update for c in (0, 1)}
    d0, d1 = (delta[c].astype(np.float64) for c in (0, 1))
    assert np.all(d0 != 0)
    assert np.all(d1 != 0)
    # p = [2/5, 3/5], ‖a‖₁ = τ = [2, 3]:
    # τ_eff = 0.4 · 2 + 0.6 · 3 = 2.6; mean of normalized updates = 0.4 d0 / 2 + 0.6 d1 / 3
    expected = start + 2.6 * (0.2 * d0 + 0.2 * d1)
    np.testing.assert_allclose(new_state.params, expected, rtol=1e-5, atol=1e-7)
    # FedAvg would have moved to start + 0.4 d0 + 0.6 d1 instead.
    assert not np.allclose(new_state.params, start + 0.4 * d0 + 0.6 * d1, rtol=1e-3)
    assert new_state.round == 1


def test_one_fednova_round_with_momentum_by_hand() -> None:
    work = LocalSGD(LinearRegression(2), lr=0.05, epochs=1, batch_size=1, momentum=0.5)
    algorithm = fednova(work)
    data = clients(2, 3)
    executor = InProcess(algorithm, data)
    start = np.zeros(3, dtype=np.float32)
    new_state, _ = run_round(
        algorithm,
        init_state(algorithm, start),
        executor,
        population=[0, 1],
        sampler=FixedCount(2),
        seed=4,
    )
    delta = {c: work.train(executor.broadcasts[c], *data[c], {})[0].update for c in (0, 1)}
    d0, d1 = (delta[c].astype(np.float64) for c in (0, 1))
    # ‖a‖₁ = Σ_{k=1..τ} (1 - 0.5ᵏ) / 0.5: τ = 2 → 1 + 1.5 = 2.5, τ = 3 → 4.25
    tau_eff = 0.4 * 2.5 + 0.6 * 4.25
    expected = start + tau_eff * (0.4 * d0 / 2.5 + 0.6 * d1 / 4.25)
    np.testing.assert_allclose(new_state.params, expected, rtol=1e-5, atol=1e-7)


def test_one_scaffold_round_updates_the_server_control_by_hand() -> None:
    work = LocalSGD(LinearRegression(2), lr=0.05, epochs=1, batch_size=1)
    algorithm = scaffold(work)
    data = clients(2, 3, 4, 1)
    executor = InProcess(algorithm, data)
    start = np.array([0.2, -0.1, 0.05], dtype=np.float32)
    c = np.array([0.1, 0.0, -0.2], dtype=np.float32)
    state = replace(init_state(algorithm, start), extras={CONTROL: c})
    new_state, _ = run_round(
        algorithm, state, executor, population=[0, 1, 2, 3], sampler=FixedCount(2), seed=0
    )
    cohort = sorted(executor.broadcasts)
    assert len(cohort) == 2
    outcomes = [algorithm.work.train(executor.broadcasts[k], *data[k], {})[0] for k in cohort]
    d0, d1 = (r.update.astype(np.float64) for r in outcomes)
    # Unweighted mean for the model; c + (Δc_0 + Δc_1) / N with N = 4 for the control.
    np.testing.assert_allclose(new_state.params, start + (d0 + d1) / 2, rtol=1e-5, atol=1e-7)
    dc0, dc1 = (r.extras[CONTROL].astype(np.float64) for r in outcomes)
    np.testing.assert_allclose(new_state.extras[CONTROL], c + (dc0 + dc1) / 4, rtol=1e-5)


def test_fednova_scale_leaves_running_statistics_unscaled() -> None:
    layout = Layout((Field("w", (2,)), Field("running_mean", (1,), trainable=False)))
    results = [result(1, **{FEDNOVA_NORM: [2.0]}), result(3, **{FEDNOVA_NORM: [4.25]})]
    aggregate, _ = FedNovaScale().apply(
        AGGREGATE, results, {}, sums={}, population=10, layout=layout
    )
    np.testing.assert_allclose(aggregate, [0.4 * 3.6875, -0.8 * 3.6875, 1.2], rtol=1e-6)
