"""The neighbour graph and the choice of degree and threshold (Bell et al. 2020, §3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import hypergeom

from fedloom.secagg.graph import (
    _hypergeometric_tail,
    choose_parameters,
    harary,
    log2_disconnected,
)


@pytest.mark.parametrize(("n", "k"), [(7, 2), (30, 6), (101, 22), (10, 9)])
def test_harary_graph_is_k_regular_and_symmetric(n: int, k: int) -> None:
    graph = harary(n, k)
    assert all(len(neighbours) == k for neighbours in graph)
    assert all(i not in graph[i] for i in range(n))
    assert all(i in graph[j] for i in range(n) for j in graph[i])


def test_harary_refuses_an_odd_degree() -> None:
    with pytest.raises(ValueError, match="degree must be even"):
        harary(10, 3)


@pytest.mark.parametrize(
    ("population", "marked", "draws", "at_least"),
    [(499, 150, 142, 71), (999, 100, 46, 26), (99, 30, 99, 70), (50, 5, 10, 0)],
)
def test_the_hypergeometric_tail_matches_scipy(
    population: int, marked: int, draws: int, at_least: int
) -> None:
    ours = _hypergeometric_tail(population, marked, min(draws, population), at_least)
    theirs = hypergeom.sf(at_least - 1, population, marked, min(draws, population))
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-300)


def test_disconnection_bound_holds_against_simulation() -> None:
    """Remove 12 random nodes from a random H(4, 40): the observed disconnection rate stays
    below the bound (which is loose, not tight)."""
    rng = np.random.default_rng(0)
    n, k, removed, trials = 40, 4, 12, 400
    disconnected = 0
    for _ in range(trials):
        graph = harary(n, k, rng.bytes(32))
        gone = set(rng.choice(n, removed, replace=False).tolist())
        alive = [i for i in range(n) if i not in gone]
        seen, stack = {alive[0]}, [alive[0]]
        while stack:
            for j in graph[stack.pop()]:
                if j not in gone and j not in seen:
                    seen.add(j)
                    stack.append(j)
        disconnected += len(seen) != len(alive)
    bound = 2 ** log2_disconnected(n, k, removed)
    assert disconnected / trials <= bound
    assert disconnected > 0  # the case is not vacuous


@pytest.mark.parametrize(
    ("n", "rate", "corrupt"), [(200, 0.1, 0.1), (500, 0.3, 0.1), (1000, 0.05, 0.05)]
)
def test_chosen_parameters_meet_both_failure_bounds(n: int, rate: float, corrupt: float) -> None:
    p = choose_parameters(n, dropout_rate=rate, corrupt_fraction=corrupt)
    assert p.degree < n - 1
    assert p.degree % 2 == 0
    assert p.degree // 2 < p.threshold <= p.degree + 1
    assert p.log2_privacy_failure <= -40
    assert p.log2_correctness_failure <= -20
    dropped, bad = math.ceil(rate * n), math.ceil(corrupt * n)
    # correctness: n · P[more than k - t dropped neighbours] ≤ 2^-20 (scipy's tail)
    assert n * hypergeom.sf(p.degree - p.threshold, n - 1, dropped, p.degree) <= 2**-20
    # privacy: n · P[t or more corrupt neighbours] + P[honest survivors split] ≤ 2^-40
    corrupted = n * hypergeom.sf(p.threshold - 1, n - 1, bad, p.degree)
    assert corrupted + 2 ** log2_disconnected(n, p.degree, dropped + bad) <= 2**-40
    # and it is the sparsest: with two fewer neighbours no threshold meets all three
    k = p.degree - 2
    if k >= 2:
        split = 2 ** log2_disconnected(n, k, dropped + bad)
        works = [
            n * hypergeom.sf(k - t, n - 1, dropped, k) <= 2**-20
            and n * hypergeom.sf(t - 1, n - 1, bad, k) + split <= 2**-40
            for t in range(k // 2 + 1, k + 2)
        ]
        assert not any(works)


def test_small_cohorts_use_the_complete_graph() -> None:
    p = choose_parameters(10, dropout_rate=0.3, corrupt_fraction=0.1)
    assert p.complete
    assert p.degree == 9
    # the threshold leaves room for 3 dropouts and exceeds half the cohort
    assert p.threshold == 5
    assert choose_parameters(50, dropout_rate=0.1, corrupt_fraction=0.1).complete
    assert not choose_parameters(51, dropout_rate=0.1, corrupt_fraction=0.1).complete
    assert choose_parameters(51, dropout_rate=0.1, corrupt_fraction=0.1, complete_up_to=51).complete


def test_an_impossible_cohort_is_refused_with_its_numbers() -> None:
    with pytest.raises(ValueError, match=r"3 clients tolerates dropout_rate=0.3 \(1 clients\)"):
        choose_parameters(3, dropout_rate=0.3, corrupt_fraction=0.0)
    with pytest.raises(ValueError, match=r"dropout_rate must be in \[0.0, 1.0\)"):
        choose_parameters(10, dropout_rate=1.0, corrupt_fraction=0.0)
