"""The budget: refused plans, stops before a round that would exceed it, and bad input."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import dp_accounting
import pytest
from dp_accounting import rdp

import fedloom as fl
from fedloom import privacy
from fedloom.data import FederatedData
from fedloom.engine import ServerState, train
from fedloom.engine.tasks import Executor, Task
from fedloom.executors.inprocess import InProcessExecutor

Z, RATE, N = 1.0, 0.25, 40


class CountingExecutor:
    """A real in-process executor that counts the training tasks it ran."""

    def __init__(self, inner: Executor) -> None:
        self.inner = inner
        self.tasks = 0

    def run(self, tasks: Sequence[Task]) -> list[object]:
        self.tasks += len(tasks)
        return self.inner.run(tasks)  # type: ignore[return-value]


def _eps(rounds: int, delta: float = 1e-3) -> float:
    event = dp_accounting.PoissonSampledDpEvent(RATE, dp_accounting.GaussianDpEvent(Z))
    return float(rdp.RdpAccountant().compose(event, rounds).get_epsilon(delta))


def _algorithm(work: fl.LocalSGD) -> fl.Algorithm:
    stage = privacy.central_gaussian(
        clip=1.0, noise_multiplier=Z, sampling=privacy.poisson_sampling(population=N, rate=RATE),
        seed=0,
    )  # fmt: skip
    return fl.fedavg(work).with_privacy(stage)


def _executor(algorithm: fl.Algorithm, data: FederatedData) -> CountingExecutor:
    return CountingExecutor(InProcessExecutor(algorithm.client, data.clients))


def test_a_plan_beyond_the_budget_is_refused_before_any_training(
    digits_40: FederatedData, softmax_work: fl.LocalSGD
) -> None:
    algorithm = _algorithm(softmax_work)
    executor = _executor(algorithm, digits_40)
    limit = (_eps(3) + _eps(4)) / 2  # three rounds fit, four do not
    plan = fl.engine.schedule(
        rounds=4, cohort=fl.poisson(RATE), federated_eval=False,
        budget=privacy.budget(max_epsilon=limit, delta=1e-3),
    )  # fmt: skip
    with pytest.raises(
        ValueError, match=r"plan of 4 rounds would spend epsilon=.*noise multiplier"
    ):
        train(algorithm, executor, plan, population=range(N))
    assert executor.tasks == 0
    three = replace(plan, rounds=3)
    history = train(algorithm, executor, three, population=range(N))
    assert history.metric("dp.epsilon")[-1] <= limit


def test_the_run_stops_before_the_round_that_would_exceed_the_budget(
    digits_40: FederatedData, softmax_work: fl.LocalSGD
) -> None:
    algorithm = _algorithm(softmax_work)
    limit = (_eps(5) + _eps(6)) / 2
    history = fl.simulate(
        algorithm, digits_40, rounds=20, cohort=fl.poisson(RATE), federated_eval=False,
        budget=privacy.budget(max_epsilon=limit, delta=1e-3, stop_early=True),
    )  # fmt: skip
    assert len(history.records) == 5
    assert history.metric("dp.epsilon") == pytest.approx([_eps(r) for r in range(1, 6)])
    assert history.stopped.startswith("privacy budget: round 5 would spend epsilon=")
    assert f"{_eps(6):.4g}" in history.stopped


def test_a_spent_budget_refuses_to_resume(
    digits_40: FederatedData, softmax_work: fl.LocalSGD
) -> None:
    algorithm = _algorithm(softmax_work)
    plan = fl.engine.schedule(
        rounds=2, cohort=fl.poisson(RATE), federated_eval=False,
        budget=privacy.budget(max_epsilon=(_eps(2) + _eps(3)) / 2, delta=1e-3),
    )  # fmt: skip
    executor = _executor(algorithm, digits_40)
    states: list[ServerState] = []
    train(algorithm, executor, plan, population=range(N), on_round=lambda r, s: states.append(s))
    more = replace(plan, rounds=5)
    with pytest.raises(ValueError, match="budget is already spent: 2 rounds spent epsilon="):
        train(algorithm, executor, more, population=range(N), state=states[-1])


def test_a_budget_smaller_than_one_round_is_refused(
    digits_40: FederatedData, softmax_work: fl.LocalSGD
) -> None:
    with pytest.raises(ValueError, match="a single round spends more than the whole budget"):
        fl.simulate(
            _algorithm(softmax_work), digits_40, rounds=3, cohort=fl.poisson(RATE),
            budget=privacy.budget(max_epsilon=_eps(1) / 2, delta=1e-3, stop_early=True),
        )  # fmt: skip


def test_a_delta_not_below_one_over_population_warns_loudly(
    digits_40: FederatedData, softmax_work: fl.LocalSGD
) -> None:
    with pytest.warns(UserWarning, match=r"delta=0.05 is not smaller than 1/population = 0.025"):
        fl.simulate(
            _algorithm(softmax_work), digits_40, rounds=1, cohort=fl.poisson(RATE),
            federated_eval=False, budget=privacy.budget(max_epsilon=100.0, delta=0.05),
        )  # fmt: skip


def test_a_budget_without_a_noise_stage_is_refused(
    digits_40: FederatedData, softmax_work: fl.LocalSGD
) -> None:
    clipped_only = fl.fedavg(softmax_work).with_stages(fl.clip_by_norm(1.0))
    with pytest.raises(ValueError, match="clipping alone, or clipping on the server, gives no"):
        fl.simulate(
            clipped_only, digits_40, rounds=1, cohort=10,
            budget=privacy.budget(max_epsilon=1.0, delta=1e-5),
        )  # fmt: skip


@pytest.mark.parametrize("cohort", [10, 0.5, fl.poisson(0.5)])
def test_sampling_the_accountant_does_not_assume_is_refused(
    digits_40: FederatedData, softmax_work: fl.LocalSGD, cohort: object
) -> None:
    with pytest.raises(
        ValueError, match=r"is accounted for Poisson sampling with rate 0.25 .* but"
    ):
        fl.simulate(
            _algorithm(softmax_work), digits_40, rounds=1,
            cohort=cohort,  # type: ignore[arg-type]
        )  # fmt: skip


def test_buffered_aggregation_refuses_a_noise_stage(softmax_work: fl.LocalSGD) -> None:
    from fedloom.engine.buffered import Buffered, train_buffered

    with pytest.raises(ValueError, match="buffered asynchronous aggregation"):
        train_buffered(
            _algorithm(softmax_work), None, Buffered(updates=1, concurrency=2, buffer_size=1),  # type: ignore[arg-type]
            population=range(N), clock=None,  # type: ignore[arg-type]
        )  # fmt: skip
