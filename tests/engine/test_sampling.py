from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedloom.engine.sampling import FixedCount, Fraction, Poisson, as_sampler


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
