"""Streamed aggregation: a linear reducer's float64 running sum (``Fold``), the engine folding
each reply in as it arrives and dropping its update, and the same parameters as stacking."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fedloom as fl
from fedloom.algorithms import Algorithm, ClientProgram
from fedloom.auditing import AuditingExecutor
from fedloom.core.layout import Vector
from fedloom.data import ClientData, FederatedData
from fedloom.engine import Executor, Reply, Task, init_state, run_round
from fedloom.engine.rounds import ServerState
from fedloom.engine.tasks import Consume, StreamingExecutor
from fedloom.executors import InProcessExecutor
from fedloom.reducers import FOLD_BLOCK, Fold, Mean, Reducer, Sum, WeightedMean
from fedloom.robust import median
from fedloom.testing import ContractError, check_executor


@pytest.mark.parametrize(
    ("reducer", "want"),
    [(WeightedMean(), [2.5, 5.0]), (Mean(), [2.0, 4.0]), (Sum(), [4.0, 8.0])],
)
def test_a_fold_gives_the_hand_computed_reduction(reducer: WeightedMean, want: list[float]) -> None:
    # (1·[1, 2] + 3·[3, 6]) / 4 = [2.5, 5]; the plain mean [2, 4]; the sum [4, 8]
    fold = reducer.fold(2)
    fold.add(np.array([1, 2], np.float32), 1)
    fold.add(np.array([3, 6], np.float32), 3)
    out = fold.result()
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, want)


def test_a_fold_spans_its_blocks() -> None:
    size = 2 * FOLD_BLOCK + 3
    a = np.arange(size, dtype=np.float32)
    fold = WeightedMean().fold(size)
    fold.add(a, 1)
    fold.add(-a, 3)  # (a - 3a) / 4 = -a / 2, exact in float32 for these integers
    np.testing.assert_array_equal(fold.result(), -a / 2)


def test_a_fold_gives_its_result_once_and_lets_its_float64_sum_go() -> None:
    fold = Mean().fold(3)
    fold.add(np.array([1, 2, 3], np.float32), 1)
    total = weakref.ref(fold.total)
    np.testing.assert_array_equal(fold.result(), [1, 2, 3])
    assert total() is None  # the 8-bytes-an-entry sum is gone once the result is out
    with pytest.raises(ValueError, match="already taken"):
        fold.result()
    with pytest.raises(ValueError, match="already taken"):
        fold.add(np.zeros(3, np.float32), 1)


def test_a_fold_refuses_bad_input_by_name() -> None:
    fold = WeightedMean().fold(3)
    with pytest.raises(ValueError, match="no update was folded in"):
        fold.result()
    with pytest.raises(ValueError, match=r"shape \(2,\), expected \(3,\)"):
        fold.add(np.zeros(2, np.float32), 1)
    for weight in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="weight must be finite and > 0"):
            fold.add(np.zeros(3, np.float32), weight)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.lists(st.floats(-1e6, 1e6, width=32, allow_subnormal=False), min_size=3, max_size=3),
            st.integers(1, 5000),
        ),
        min_size=1,
        max_size=8,
    ),
    order=st.randoms(use_true_random=False),
)
def test_any_order_is_within_one_ulp_of_the_exact_weighted_mean(
    rows: list[tuple[list[float], int]], order: object
) -> None:
    updates = np.array([r for r, _ in rows], dtype=np.float32)
    weights = [w for _, w in rows]
    total = sum(weights)
    exact = [
        float(sum(Fraction(float(u[j])) * w for u, w in zip(updates, weights, strict=True)) / total)
        for j in range(3)
    ]
    positions = list(range(len(rows)))
    order.shuffle(positions)  # type: ignore[attr-defined]
    fold = WeightedMean().fold(3)
    for i in positions:
        fold.add(updates[i], weights[i])
    np.testing.assert_array_max_ulp(fold.result(), np.array(exact, dtype=np.float32), maxulp=1)


# ---- the engine ----


@dataclass(frozen=True)
class Stacking:
    """``inner`` without its fold: the engine stacks the cohort and calls it."""

    inner: WeightedMean | Mean

    @property
    def linear(self) -> bool:
        return True

    def __call__(
        self, updates: npt.NDArray[np.float32], weights: npt.NDArray[np.float64]
    ) -> Vector:
        return self.inner(updates, weights)


class Handing:
    """An in-process executor that hands each reply over on its own, in the order given, as
    a fresh update, and notes which updates handed over earlier are still alive."""

    def __init__(self, inner: InProcessExecutor, *, backwards: bool = False) -> None:
        self.inner = inner
        self.backwards = backwards
        self.alive_when_handed: list[int] = []
        self.refs: list[weakref.ref[npt.NDArray[np.float32]]] = []
        self.extras_alive_when_handed: list[int] = []
        self.extras_refs: list[weakref.ref[npt.NDArray[np.float32]]] = []

    def run(self, tasks: Sequence[Task]) -> list[Reply]:
        return self.inner.run(tasks)

    def run_each(self, tasks: Sequence[Task], consume: Consume) -> None:
        replies = self.inner.run(tasks)
        positions = range(len(tasks))
        for i in reversed(positions) if self.backwards else positions:
            reply = replies[i]
            if isinstance(reply, fl.ClientResult):
                extras = {k: np.array(v, copy=True) for k, v in reply.extras.items()}
                reply = replace(reply, update=reply.update.copy(), extras=extras)
                self.alive_when_handed.append(sum(r() is not None for r in self.refs))
                self.refs.append(weakref.ref(reply.update))
                alive = sum(r() is not None for r in self.extras_refs)
                self.extras_alive_when_handed.append(alive)
                self.extras_refs.extend(weakref.ref(v) for v in extras.values())
            consume(i, reply)
            del reply


ALGORITHMS = {
    "fedavg": lambda work: fl.fedavg(work),
    "fedprox": lambda work: fl.fedprox(work, mu=0.1),
    "fedadam": lambda work: fl.fedadam(work, server_lr=0.05),
    "scaffold": lambda work: fl.scaffold(work),
}


def _rounds(
    algorithm: Algorithm, data: FederatedData, executor: object, rounds: int
) -> tuple[ServerState, list[dict[str, float]]]:
    state = init_state(algorithm, algorithm.work.model.init(0))
    metrics = []
    for _ in range(rounds):
        state, record = run_round(
            algorithm,
            state,
            executor,  # type: ignore[arg-type]
            population=range(len(data)),
            sampler=fl.engine.fixed(6),
            seed=4,
        )
        metrics.append(dict(record.metrics))
    return state, metrics


def _timeless(metrics: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in m.items() if k != "seconds"} for m in metrics]


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_streamed_rounds_give_the_stacked_rounds_parameters_bit_for_bit(
    name: str, digits_iid: FederatedData, softmax: fl.SoftmaxRegression
) -> None:
    work = fl.local_sgd(softmax, lr=0.1, batch_size=32)
    streamed = ALGORITHMS[name](work)
    reducer = streamed.reducer
    assert isinstance(reducer, WeightedMean | Mean)
    stacked = replace(streamed, reducer=Stacking(reducer))
    handing = Handing(InProcessExecutor(streamed.client, digits_iid.clients))
    got, got_metrics = _rounds(streamed, digits_iid, handing, 3)
    want, want_metrics = _rounds(
        stacked, digits_iid, InProcessExecutor(stacked.client, digits_iid.clients), 3
    )
    np.testing.assert_array_equal(got.params, want.params)
    for key, vector in want.extras.items():
        np.testing.assert_array_equal(got.extras[key], vector)
    assert _timeless(got_metrics) == _timeless(want_metrics)
    # every update was gone before the next one was handed over
    assert len(handing.alive_when_handed) == 18
    assert set(handing.alive_when_handed) == {0}
    # and so was SCAFFOLD's Δc, a vector of the model's size: summed as it arrived
    assert set(handing.extras_alive_when_handed) == {0}
    assert bool(handing.extras_refs) == (name == "scaffold")


def test_replies_in_another_order_move_the_parameters_by_at_most_one_ulp(
    digits_iid: FederatedData, softmax: fl.SoftmaxRegression
) -> None:
    algorithm = fl.fedavg(fl.local_sgd(softmax, lr=0.1, batch_size=32))
    inner = InProcessExecutor(algorithm.client, digits_iid.clients)
    forwards, forwards_metrics = _rounds(algorithm, digits_iid, Handing(inner), 1)
    inner = InProcessExecutor(algorithm.client, digits_iid.clients)
    backwards, backwards_metrics = _rounds(algorithm, digits_iid, Handing(inner, backwards=True), 1)
    np.testing.assert_array_max_ulp(forwards.params, backwards.params, maxulp=1)
    # the round's record keeps cohort order whatever the arrival order
    assert _timeless(forwards_metrics) == _timeless(backwards_metrics)


def test_a_robust_reducer_keeps_the_stacked_path(
    digits_iid: FederatedData, softmax: fl.SoftmaxRegression
) -> None:
    algorithm = replace(
        fl.fedavg(fl.local_sgd(softmax, lr=0.1, batch_size=32)), reducer=median(attackers=1)
    )
    handing = Handing(InProcessExecutor(algorithm.client, digits_iid.clients))
    _rounds(algorithm, digits_iid, handing, 1)
    # a median needs the whole cohort: each update is still held when the next arrives
    assert handing.alive_when_handed == [0, 1, 2, 3, 4, 5]


def _poison(position: int, reply: Reply) -> Reply:
    if position != 2 or not isinstance(reply, fl.ClientResult):
        return reply
    update = reply.update.copy()
    update[5] = np.nan
    return replace(reply, update=update)


class Poisoning(Handing):
    """:class:`Handing`, the third task's update with a NaN in it."""

    def run(self, tasks: Sequence[Task]) -> list[Reply]:
        return [_poison(i, r) for i, r in enumerate(self.inner.run(tasks))]

    def run_each(self, tasks: Sequence[Task], consume: Consume) -> None:
        super().run_each(tasks, lambda i, reply: consume(i, _poison(i, reply)))


class PoisoningByRun(Poisoning):
    """The same, with only ``run``: the engine gets the whole cohort at once."""

    run_each = None  # type: ignore[assignment]


def test_a_streamed_round_checks_each_reply_before_folding_it(
    digits_iid: FederatedData, softmax: fl.SoftmaxRegression
) -> None:
    streamed = fl.fedavg(fl.local_sgd(softmax, lr=0.1, batch_size=32))
    stacked = replace(streamed, reducer=Stacking(WeightedMean()))
    clients = digits_iid.clients
    got, got_metrics = _rounds(
        streamed, digits_iid, Poisoning(InProcessExecutor(streamed.client, clients)), 1
    )
    want, want_metrics = _rounds(
        stacked, digits_iid, PoisoningByRun(InProcessExecutor(stacked.client, clients)), 1
    )
    assert got_metrics[0]["rejected"] == 1
    assert got_metrics[0]["accepted"] == 5
    assert np.all(np.isfinite(got.params))
    np.testing.assert_array_equal(got.params, want.params)
    assert _timeless(got_metrics) == _timeless(want_metrics)


def test_reducers_say_whether_they_fold() -> None:
    reducers: list[Reducer] = [WeightedMean(), Mean(), Sum(), median(attackers=1)]
    folds = [callable(getattr(r, "fold", None)) for r in reducers]
    assert folds == [True, True, True, False]
    assert isinstance(WeightedMean().fold(4), Fold)


# ---- the executor contract ----


def test_an_auditing_executor_streams_and_passes_the_executor_checks() -> None:
    def make(program: ClientProgram, clients: Sequence[ClientData]) -> Executor:
        return AuditingExecutor(InProcessExecutor(program, clients))

    assert isinstance(make(*_tiny()), StreamingExecutor)
    check_executor(make)


class Repeating(InProcessExecutor):
    """Hands the first reply over twice and never the last."""

    def run_each(self, tasks: Sequence[Task], consume: Consume) -> None:
        replies = self.run(tasks)
        for i in [0, *range(len(tasks) - 1)]:
            consume(i, replies[i])


class Shuffling(InProcessExecutor):
    """Hands every reply over once, but under another task's position."""

    def run_each(self, tasks: Sequence[Task], consume: Consume) -> None:
        replies = self.run(tasks)
        for i in range(len(tasks)):
            consume(i, replies[(i + 1) % len(tasks)])


def test_the_executor_checks_catch_a_stream_that_breaks_the_contract() -> None:
    with pytest.raises(ContractError, match="position 0 twice"):
        check_executor(Repeating)
    with pytest.raises(ContractError, match=r"run_each: reply 0"):
        check_executor(Shuffling)


def _tiny() -> tuple[ClientProgram, list[ClientData]]:
    x = np.zeros((4, 4), np.float32)
    y = np.zeros(4, np.int64)
    program = ClientProgram(fl.local_sgd(fl.SoftmaxRegression(features=4, classes=3), lr=0.1))
    return program, [ClientData(0, x, y, x, y)]
