"""Properties of the robust reducers on random cohorts: order does not matter, they agree with
straightforward reference computations, and f arbitrary outliers cannot move them far."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedloom import robust
from fedloom.reducers import Reducer

# The trusted references; SciPy arrives with scikit-learn (the data extra).
stats = pytest.importorskip("scipy.stats")
optimize = pytest.importorskip("scipy.optimize")

SETTINGS = settings(max_examples=60, deadline=None)
values = st.floats(-100, 100, allow_nan=False, width=32)


def by_name(name: str, attackers: int) -> Reducer:
    if name == "centered_clipping":
        return robust.centered_clipping(radius=1.0, iterations=3, attackers=attackers)
    if name == "norm_bounded_mean":
        return robust.norm_bounded_mean(bound=1.0)
    return robust.reducer(name, attackers=attackers)


ROBUST = [n for n in robust.REDUCERS if n not in ("mean", "weighted_mean")]


@st.composite
def cohorts(draw: st.DrawFn, minimum: int = 1) -> tuple[np.ndarray, int]:
    """``[n, d]`` float32 updates and an attacker count ``f`` that Bulyan accepts."""
    f = draw(st.integers(0, 2))
    n = draw(st.integers(max(minimum, 4 * f + 3), 4 * f + 6))
    d = draw(st.integers(1, 4))
    return draw(hnp.arrays(np.float32, (n, d), elements=values)), f


@pytest.mark.parametrize("name", ROBUST)
@SETTINGS
@given(cohort=cohorts(), data=st.data())
def test_the_order_of_the_clients_does_not_matter(
    name: str, cohort: tuple[np.ndarray, int], data: st.DataObject
) -> None:
    updates, f = cohort
    reducer = by_name(name, f)
    order = np.array(data.draw(st.permutations(range(len(updates)))))
    ones = np.ones(len(updates))
    np.testing.assert_allclose(
        reducer(updates[order], ones), reducer(updates, ones), rtol=1e-5, atol=1e-4
    )


@SETTINGS
@given(cohort=cohorts())
def test_median_and_trimmed_mean_agree_with_numpy_and_scipy(cohort: tuple[np.ndarray, int]) -> None:
    updates, f = cohort
    n = len(updates)
    ones = np.ones(n)
    x = updates.astype(np.float64)
    # float32 output: relative rounding for normal numbers, half a step among subnormals
    np.testing.assert_allclose(
        robust.median(attackers=f)(updates, ones),
        np.median(x, axis=0),
        rtol=1e-7,
        atol=float(np.finfo(np.float32).smallest_subnormal),
    )
    # scipy cuts int(proportion · n) from each end; (f + 0.5) / n gives exactly f.
    expected = stats.trim_mean(x, (f + 0.5) / n, axis=0)
    np.testing.assert_allclose(
        robust.trimmed_mean(attackers=f)(updates, ones), expected, rtol=1e-5, atol=1e-4
    )


def reference_krum_scores(x: np.ndarray, f: int) -> list[float]:
    """Blanchard et al.'s score, written as plainly as possible."""
    scores = []
    for i in range(len(x)):
        d = sorted(float(np.sum((x[i] - x[j]) ** 2)) for j in range(len(x)) if j != i)
        scores.append(sum(d[: len(x) - f - 2]))
    return scores


@SETTINGS
@given(cohort=cohorts())
def test_krum_and_multi_krum_agree_with_the_plain_definition(
    cohort: tuple[np.ndarray, int],
) -> None:
    updates, f = cohort
    x = updates.astype(np.float64)
    ones = np.ones(len(x))
    scores = reference_krum_scores(x, f)
    best = min(scores)
    krum = robust.krum(attackers=f)(updates, ones)
    # Krum returns one of the updates with the lowest score.
    candidates = [x[i] for i, s in enumerate(scores) if s <= best * (1 + 1e-9) + 1e-9]
    assert any(np.allclose(krum, c, rtol=1e-6, atol=1e-5) for c in candidates)
    # Multi-Krum averages the n − f best; where the cut is not a tie, that set is unique.
    ranked = sorted(scores)
    m = len(x) - f
    if m == len(x) or ranked[m - 1] < ranked[m] * (1 - 1e-9) - 1e-9:
        chosen = [i for i, s in enumerate(scores) if s <= ranked[m - 1]]
        np.testing.assert_allclose(
            robust.multi_krum(attackers=f)(updates, ones),
            x[chosen].mean(axis=0),
            rtol=1e-5,
            atol=1e-4,
        )


@settings(max_examples=30, deadline=None)
@given(cohort=cohorts())
def test_geometric_median_minimizes_the_sum_of_distances(cohort: tuple[np.ndarray, int]) -> None:
    updates, f = cohort
    x = updates.astype(np.float64)

    def objective(z: np.ndarray) -> float:
        return float(np.linalg.norm(x - z, axis=1).sum())

    ours = robust.geometric_median(attackers=f, iterations=2000)(updates, np.ones(len(x)))
    reference = optimize.minimize(
        objective,
        np.median(x, axis=0),
        method="Nelder-Mead",
        options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 20000},
    )
    scale = 1.0 + np.abs(x).max()
    assert objective(ours.astype(np.float64)) <= reference.fun + 1e-4 * scale


# Breakdown: f updates anywhere (here far away and in any direction) cannot push the result
# outside a region fixed by the honest updates alone.


@st.composite
def attacked(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int]:
    """Honest updates in [-1, 1]^d plus f arbitrary ones of magnitude up to 1e4."""
    f = draw(st.integers(1, 2))
    n = draw(st.integers(4 * f + 3, 4 * f + 6))
    d = draw(st.integers(1, 4))
    honest = draw(hnp.arrays(np.float32, (n - f, d), elements=st.floats(-1, 1, width=32)))
    evil = draw(hnp.arrays(np.float32, (f, d), elements=st.floats(-1e4, 1e4, width=32)))
    return honest, evil, f


def mixed(honest: np.ndarray, evil: np.ndarray, seed: int) -> np.ndarray:
    rows = np.vstack([honest, evil])
    return rows[np.random.default_rng(seed).permutation(len(rows))]


@SETTINGS
@given(case=attacked(), seed=st.integers(0, 9))
def test_coordinate_statistics_stay_within_the_honest_range(
    case: tuple[np.ndarray, np.ndarray, int], seed: int
) -> None:
    honest, evil, f = case
    updates = mixed(honest, evil, seed)
    low, high = honest.min(axis=0), honest.max(axis=0)
    for reducer in (robust.median(attackers=f), robust.trimmed_mean(attackers=f)):
        result = reducer(updates, np.ones(len(updates)))
        assert np.all(result >= low - 1e-6), reducer
        assert np.all(result <= high + 1e-6), reducer


@SETTINGS
@given(case=attacked(), seed=st.integers(0, 9))
def test_krum_family_stays_near_the_honest_updates(
    case: tuple[np.ndarray, np.ndarray, int], seed: int
) -> None:
    honest, evil, f = case
    updates = mixed(honest, evil, seed)
    n = len(updates)
    h = honest.astype(np.float64)
    diameter = max(
        (float(np.linalg.norm(a - b)) for a, b in itertools.combinations(h, 2)), default=0.0
    )
    # Any point Krum keeps has a score no worse than an honest point's, (n − f − 2)·D², and at
    # least one honest point among its n − f − 2 nearest: it lies within √(n − f − 2)·D of one.
    radius = np.sqrt(n - f - 2) * diameter + 1e-4
    krum = robust.krum(attackers=f)(updates, np.ones(n)).astype(np.float64)
    assert min(np.linalg.norm(h - krum, axis=1)) <= radius
    multi = robust.multi_krum(attackers=f)(updates, np.ones(n)).astype(np.float64)
    assert np.linalg.norm(multi - h.mean(axis=0)) <= radius + diameter
    # Bulyan per coordinate: within the honest range widened by its width on either side.
    low, high = h.min(axis=0), h.max(axis=0)
    width = high - low
    bulyan = robust.bulyan(attackers=f)(updates, np.ones(n)).astype(np.float64)
    assert np.all(bulyan >= low - width - 1e-4)
    assert np.all(bulyan <= high + width + 1e-4)


@SETTINGS
@given(case=attacked(), seed=st.integers(0, 9))
def test_geometric_median_breakdown_bound(
    case: tuple[np.ndarray, np.ndarray, int], seed: int
) -> None:
    honest, evil, f = case
    updates = mixed(honest, evil, seed)
    n = len(updates)
    h = honest.astype(np.float64)
    centre = h.mean(axis=0)
    spread = max(float(np.linalg.norm(h - centre, axis=1).max()), 1e-3)
    # For α = f/n < 1/2: ‖GM − z‖ ≤ (2(1 − α)/(1 − 2α)) · maxᵢ honest ‖xᵢ − z‖ (Minsker 2015;
    # Pillutla et al. 2022, Theorem 1's robustness), with z the honest mean.
    alpha = f / n
    bound = 2 * (1 - alpha) / (1 - 2 * alpha) * spread
    result = robust.geometric_median(attackers=f, iterations=1000)(updates, np.ones(n))
    assert np.linalg.norm(result.astype(np.float64) - centre) <= bound * 1.01 + 1e-3


@SETTINGS
@given(cohort=cohorts(), radius=st.floats(0.01, 10), iterations=st.integers(1, 4))
def test_clipping_reducers_bound_every_update_s_influence(
    cohort: tuple[np.ndarray, int], radius: float, iterations: int
) -> None:
    updates, _ = cohort
    ones = np.ones(len(updates))
    # Centered clipping from 0 moves at most the radius per iteration.
    cc = robust.centered_clipping(radius=radius, iterations=iterations)(updates, ones)
    assert np.linalg.norm(cc.astype(np.float64)) <= iterations * radius * (1 + 1e-5)
    nbm = robust.norm_bounded_mean(bound=radius)(updates, ones)
    assert np.linalg.norm(nbm.astype(np.float64)) <= radius * (1 + 1e-5)
    # Updates already within the bound pass through: the plain mean.
    small = updates / max(1.0, float(np.abs(updates).max())) * (radius / 4) / np.sqrt(4)
    small = small.astype(np.float32)
    np.testing.assert_allclose(
        robust.norm_bounded_mean(bound=radius)(small, ones),
        small.astype(np.float64).mean(axis=0),
        rtol=1e-5,
        atol=1e-6,
    )
