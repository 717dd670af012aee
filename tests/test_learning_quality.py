"""Learning quality on real data with fixed seeds: the core must actually train models."""

from __future__ import annotations

import pytest

import fedloom as fl

pytest.importorskip("torch")


@pytest.mark.slow
def test_fedavg_mlp_on_iid_digits_reaches_93_percent_within_30_rounds() -> None:
    data = fl.data.digits().split(fl.data.iid(), clients=20, seed=0)
    train = fl.torch.local_sgd(fl.torch.mlp(64, [64], 10), lr=0.3, epochs=2, batch_size=16)
    history = fl.simulate(
        fl.fedavg(train),
        data,
        rounds=30,
        cohort=20,
        seed=0,
        federated_eval=False,
        target=("test_accuracy", 0.93),
    )
    assert history.last("test_accuracy") >= 0.93, history.table()
    assert len(history) <= 30


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(fl.ALGORITHMS))
def test_every_recipe_learns_label_skewed_digits(recipe: str) -> None:
    """Dirichlet(0.5) over 20 clients, softmax regression: each recipe must reach 90% accuracy
    within 25 rounds (chance is 10%; FedAvg's first round gives about 40%)."""
    data = fl.data.digits().split(fl.data.dirichlet(0.5), clients=20, seed=1)
    train = fl.local_sgd(fl.SoftmaxRegression(64, 10), lr=0.5, epochs=1, batch_size=16)
    options: dict[str, float] = {
        "fedprox": {"mu": 0.01},
        "fedadam": {"server_lr": 0.03},
        "fedyogi": {"server_lr": 0.03},
        "fedadagrad": {"server_lr": 0.1},
        "fedavgm": {"server_lr": 0.5},
    }.get(recipe, {})
    history = fl.simulate(
        fl.algorithm(recipe, train, **options),
        data,
        rounds=25,
        cohort=10,
        seed=0,
        federated_eval=False,
        target=("test_accuracy", 0.90),
    )
    assert history.last("test_accuracy") >= 0.90, history.table()
