from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fedloom as fl
from fedloom.engine.privacy_guard import engine_sampling
from fedloom.engine.sampling import FixedCount, Fraction, Poisson, as_sampler, draw


@given(st.integers(1, 500), st.data())
def test_fixed_count_draws_distinct_sorted_clients(population: int, data: st.DataObject) -> None:
    count = data.draw(st.integers(1, population))
    ids = FixedCount(count).sample(population, np.random.default_rng(data.draw(st.integers(0, 99))))
    assert len(ids) == count
    assert len(set(ids.tolist())) == count
    assert np.all(np.diff(ids) > 0)
    assert ids.min() >= 0
    assert ids.max() < population


def test_fraction_rounds_and_never_samples_nobody() -> None:
    rng = np.random.default_rng(0)
    assert len(Fraction(0.25).sample(10, rng)) == 2  # round(2.5) to even
    assert len(Fraction(0.01).sample(10, rng)) == 1
    assert len(Fraction(1.0).sample(10, rng)) == 10


def test_poisson_includes_each_client_with_probability_q() -> None:
    rng = np.random.default_rng(0)
    population, q, rounds = 200, 0.1, 400
    counts = np.zeros(population)
    sizes = []
    for _ in range(rounds):
        ids = Poisson(q).sample(population, rng)
        counts[ids] += 1
        sizes.append(len(ids))
    # Binomial(200, 0.1) cohort sizes: mean 20, variance 18.
    assert np.mean(sizes) == pytest.approx(20, abs=0.7)
    assert np.var(sizes) == pytest.approx(18, rel=0.25)
    # Every client's inclusion frequency is near q (Binomial(400, 0.1): sd 0.015).
    assert np.all(np.abs(counts / rounds - q) < 0.08)


def test_bad_cohorts_are_refused_with_the_accepted_values() -> None:
    with pytest.raises(ValueError, match="cohort=11 is larger than the population of 10"):
        FixedCount(11).check(10)
    with pytest.raises(ValueError, match=r"cohort fraction must be in \(0.0, 1.0\]"):
        Fraction(1.5)
    with pytest.raises(ValueError, match=r"poisson rate must be in \(0.0, 1.0\]"):
        Poisson(0.0)
    with pytest.raises(ValueError, match="cohort must be an integer >= 1"):
        as_sampler(0)
    with pytest.raises(ValueError, match="cohort must be an int count"):
        as_sampler(True)


def test_replay_gives_each_round_its_given_cohort_whatever_the_seed() -> None:
    data = fl.data.synthetic(1.0, 1.0, clients=12, seed=0)
    work = fl.local_sgd(fl.SoftmaxRegression(60, 10), lr=0.01, batch_size=10)
    schedule = [[3, 7, 1], [0, 11], [5, 6, 7, 8]]
    histories = [
        fl.simulate(
            fl.fedavg(work),
            data,
            rounds=3,
            cohort=fl.replay(schedule),
            seed=seed,
            federated_eval=False,
        )
        for seed in (0, 1)
    ]
    for history in histories:
        assert [list(r.cohort) for r in history.records] == schedule
    # The cohorts are the schedule's; the clients' own seeds still follow the run's seed.
    assert not np.array_equal(histories[0].params, histories[1].params)


def test_replay_takes_a_rounds_by_cohort_array_and_checks_the_population() -> None:
    replay = fl.replay(np.array([[4, 2], [0, 1]]))
    assert replay.cohorts == ((4, 2), (0, 1))
    assert draw(replay, 5, 1, seed=0).tolist() == [0, 1]
    with pytest.raises(ValueError, match="names client position 4, but the population has 4"):
        replay.check(4)
    with pytest.raises(ValueError, match="cohorts for 2 rounds, and round 2 was asked for"):
        draw(replay, 5, 2, seed=0)
    with pytest.raises(ValueError, match="cohorts for 2 rounds, and round 2 was asked for"):
        fl.simulate(
            fl.fedavg(fl.local_sgd(fl.SoftmaxRegression(60, 10), lr=0.01)),
            fl.data.synthetic(1.0, 1.0, clients=5, seed=0),
            rounds=3, cohort=replay, federated_eval=False,
        )  # fmt: skip


@pytest.mark.parametrize(
    ("cohorts", "message"),
    [
        ([], "needs at least one round's cohort"),
        ([[1, 2], []], "round 1's cohort is empty"),
        ([[1, 1]], r"round 0's cohort lists a client more than once: \[1, 1\]"),
        ([[0, -1]], "round 0's cohort holds -1; positions are integers >= 0"),
        ([[0, 1.5]], "round 0's cohort holds 1.5"),
        ("0123", "cohorts must be a sequence of per-round sequences"),
        ([3], "round 0's cohort must be a sequence of client positions, got int"),
    ],
)
def test_bad_replayed_schedules_are_refused(cohorts: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fl.replay(cohorts)  # type: ignore[arg-type]


def test_differential_privacy_refuses_a_replayed_schedule() -> None:
    with pytest.raises(ValueError, match=r"got Replay\(1 rounds, cohorts of 2 to 2\)"):
        engine_sampling(fl.replay([[0, 1]]), 10)
