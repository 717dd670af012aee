"""Bad configuration fails before any training, naming the argument and what is accepted."""

from __future__ import annotations

import pytest

import fedloom as fl


@pytest.fixture(scope="module")
def data() -> fl.data.FederatedData:
    return fl.data.digits().split(fl.data.iid(), clients=5, seed=0)


def work(**kwargs: object) -> fl.LocalSGD:
    return fl.local_sgd(fl.SoftmaxRegression(64, 10), **{"lr": 0.1, **kwargs})  # type: ignore[arg-type]


def test_cohort_larger_than_population(data: fl.data.FederatedData) -> None:
    with pytest.raises(ValueError, match="cohort=6 is larger than the population of 5"):
        fl.simulate(fl.fedavg(work()), data, rounds=1, cohort=6)


def test_min_cohort_larger_than_population(data: fl.data.FederatedData) -> None:
    with pytest.raises(ValueError, match="min_cohort=9 exceeds the population of 5"):
        fl.simulate(fl.fedavg(work()), data, rounds=1, cohort=2, min_cohort=9)


def test_unknown_algorithm_name() -> None:
    with pytest.raises(
        ValueError, match=r"algorithm name must be one of \[.*'fedavg'.*\], got 'fedsgd'"
    ):
        fl.algorithm("fedsgd", work())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": -0.1}, "lr must be a finite number > 0, got -0.1"),
        ({"lr": 0.0}, "lr must be a finite number > 0"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
        ({"epochs": 1, "steps": 5}, "set exactly one of epochs or steps"),
        ({"optimizer": "rmsprop"}, r"optimizer must be one of \['adam', 'sgd'\]"),
        ({"momentum": 1.0}, r"momentum must be in \[0.0, 1.0\)"),
    ],
)
def test_bad_local_training(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        work(**kwargs)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: fl.fedadam(work(), server_lr=-1.0), "lr must be a finite number > 0, got -1.0"),
        (lambda: fl.fedprox(work(), mu=-0.1), "mu must be a finite number >= 0, got -0.1"),
        (lambda: fl.fedavgm(work(), momentum=1.5), r"beta must be in \[0.0, 1.0\)"),
        (lambda: fl.scaffold(work(momentum=0.9)), "SCAFFOLD's option-II control variate"),
        (
            lambda: fl.fedprox(fl.custom(fl.SoftmaxRegression(64, 10), lambda *a: a), mu=0.1),
            "fedprox changes fedloom's local training loop",
        ),
    ],
)
def test_bad_algorithm_options(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


def test_bad_run_options(data: fl.data.FederatedData) -> None:
    algorithm = fl.fedavg(work())
    with pytest.raises(ValueError, match="rounds must be an integer >= 1, got 0"):
        fl.simulate(algorithm, data, rounds=0, cohort=2)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        fl.simulate(algorithm, data, rounds=1, cohort=2, seed=-1)
    with pytest.raises(
        ValueError, match=r"executor must be one of \['inprocess', 'vectorized', 'process', 'ray'\]"
    ):
        fl.simulate(algorithm, data, rounds=1, cohort=2, executor="gpu-cluster")
