"""On digits with a fifth of the clients malicious, the plain mean breaks and robust reducers
hold. Small and fast: softmax regression, 20 clients, 10 rounds."""

from __future__ import annotations

import pytest

import fedloom as fl
from fedloom import robust
from fedloom.attacks import Backdoor, Scaling, SignFlip, simulate_under_attack
from fedloom.data import FederatedData
from fedloom.reducers import Reducer


@pytest.fixture(scope="module")
def digits() -> FederatedData:
    return fl.data.digits().split(fl.data.iid(), clients=20, seed=0)


def accuracy(data: FederatedData, reducer: Reducer | None, attack: object) -> dict[str, float]:
    work = fl.local_sgd(fl.SoftmaxRegression(features=64, classes=10), lr=0.05, batch_size=16)
    algorithm = fl.fedavg(work) if reducer is None else fl.fedavg(work).with_reducer(reducer)
    outcome = simulate_under_attack(
        algorithm,
        data,
        attack=attack,
        fraction=0.2,
        rounds=10,
        cohort=20,
        eval_every=10,  # type: ignore[arg-type]
    )
    assert len(outcome.malicious) == (0 if attack is None else 4)
    return dict(outcome.history.records[-1].metrics)


# Scaling by 1000: on this convex model a factor of 100 only overshoots by about 13 points.
@pytest.mark.parametrize("attack", [SignFlip(), Scaling(factor=1000.0)], ids=lambda a: a.name)
def test_the_mean_breaks_and_robust_reducers_hold(digits: FederatedData, attack: object) -> None:
    clean = accuracy(digits, None, None)["test_accuracy"]
    attacked_mean = accuracy(digits, None, attack)["test_accuracy"]
    assert clean > 0.8
    assert attacked_mean < clean - 0.15
    for reducer in (robust.median(attackers=4), robust.multi_krum(attackers=4)):
        held = accuracy(digits, reducer, attack)["test_accuracy"]
        assert held > clean - 0.07, reducer
        assert held > attacked_mean + 0.1, reducer


def test_model_replacement_plants_a_backdoor_that_the_median_refuses(
    digits: FederatedData,
) -> None:
    mean = accuracy(digits, None, Backdoor(target=0))
    median = accuracy(digits, robust.median(attackers=4), Backdoor(target=0))
    assert mean["test_backdoor_accuracy"] > 0.8
    assert median["test_backdoor_accuracy"] < 0.2
    assert median["test_accuracy"] > 0.75
