"""Robust reducers on small cohorts worked by hand from the papers' definitions."""

from __future__ import annotations

import numpy as np
import pytest

from fedloom import robust
from fedloom.reducers import Reducer, reduce_with_state
from fedloom.robust import CohortTooSmall


def f32(rows: list[list[float]]) -> np.ndarray:
    return np.array(rows, dtype=np.float32)


ONES = np.ones(5)
FIVE = f32([[1, 10], [2, 20], [3, 30], [4, 40], [100, -100]])


def test_coordinate_median_by_hand() -> None:
    # column 0 sorted: 1 2 3 4 100 → 3; column 1 sorted: -100 10 20 30 40 → 20
    np.testing.assert_array_equal(robust.median(attackers=2)(FIVE, ONES), [3, 20])
    # four rows: the mean of the middle two, (2 + 3) / 2 and (20 + 30) / 2
    np.testing.assert_array_equal(robust.median()(FIVE[:4], np.ones(4)), [2.5, 25])


def test_trimmed_mean_by_hand() -> None:
    # drop one at each end: column 0 keeps 2 3 4 → 3; column 1 keeps 10 20 30 → 20
    np.testing.assert_array_equal(robust.trimmed_mean(attackers=1)(FIVE, ONES), [3, 20])
    # trim 0 is the plain mean: (1+2+3+4+100)/5 = 22, (10+20+30+40-100)/5 = 0
    np.testing.assert_array_equal(robust.trimmed_mean(attackers=0)(FIVE, ONES), [22, 0])


# Five points on a line at 0, 1, 2, 3 and 50. With f = 1, each point's score is the sum of
# squared distances to its n − f − 2 = 2 nearest neighbours:
# 0: 1 + 4 = 5; 1: 1 + 1 = 2; 2: 1 + 1 = 2; 3: 1 + 4 = 5; 50: 47² + 48² = 4513.
LINE = f32([[0], [1], [2], [3], [50]])


def test_krum_by_hand() -> None:
    # 1 and 2 tie at score 2; the tie goes to the lexicographically smaller update, 1.
    assert robust.krum(attackers=1)(LINE, ONES)[0] == 1.0
    assert robust.krum(attackers=1)(LINE[::-1], ONES)[0] == 1.0
    # With f = 0 the score sums the 3 nearest: 1 and 2 tie again at 1 + 1 + 4 = 6.
    assert robust.krum(attackers=0)(LINE, ONES)[0] == 1.0


def test_multi_krum_by_hand() -> None:
    # select = n − f = 4: the four points with scores 2, 2, 5, 5 → mean of 0, 1, 2, 3 = 1.5
    np.testing.assert_array_equal(robust.multi_krum(attackers=1)(LINE, ONES), [1.5])
    # select = 2: scores 2 and 2 → mean of 1 and 2
    np.testing.assert_array_equal(robust.multi_krum(attackers=1, select=2)(LINE, ONES), [1.5])


def test_bulyan_by_hand() -> None:
    # n = 7, f = 1: θ = n − 2f = 5 picks by repeated Krum (each pick leaves the pool), then the
    # β = θ − 2f = 3 picked values nearest the picks' median are averaged. The outlier 1000 is
    # never picked while a tight cluster remains.
    points = f32([[0], [1], [2], [3], [4], [5], [1000]])
    result = robust.bulyan(attackers=1)(points, np.ones(7))[0]
    # The same rule, written out with Python integers:
    pool = list(range(6))
    picks = []
    for _ in range(5):
        scores = {
            p: sum(sorted((p - q) ** 2 for q in [*pool, 1000] if q != p)[: len(pool) + 1 - 1 - 2])
            for p in pool
        }
        best = min(pool, key=lambda p: (scores[p], p))
        picks.append(best)
        pool.remove(best)
    median = float(np.median(picks))
    nearest = sorted(picks, key=lambda p: (abs(p - median), p))[:3]
    assert result == pytest.approx(np.mean(nearest))


def test_geometric_median_of_a_square_and_an_outlier() -> None:
    # The geometric median of the corners of a square is its centre; one far point among five
    # moves it only slightly (the objective's pull from each point is a unit vector).
    square = f32([[1, 1], [1, -1], [-1, 1], [-1, -1]])
    np.testing.assert_allclose(robust.geometric_median()(square, np.ones(4)), [0, 0], atol=1e-6)
    outlier = np.vstack([square, f32([[1000, 1000]])])
    result = robust.geometric_median(attackers=2)(outlier, ONES)
    # By symmetry z = (t, t). The unit pulls towards (1, 1) and (−1, −1) cancel; those towards
    # (1, −1) and (−1, 1) sum to −2t(1, 1)/√(2 + 2t²); the outlier's is (1, 1)/√2. Balance:
    # 2t/√(2 + 2t²) = 1/√2 → t² = 1/3.
    np.testing.assert_allclose(result, [3**-0.5, 3**-0.5], atol=1e-5)
    pulls = (outlier - result) / np.linalg.norm(outlier - result, axis=1, keepdims=True)
    np.testing.assert_allclose(pulls.sum(axis=0), [0, 0], atol=1e-3)


def test_centered_clipping_by_hand() -> None:
    # Centre 0, radius 1: (3, 4) has norm 5 → (0.6, 0.8); (0, 0.5) is kept; the mean is
    # (0.3, 0.65), which is also the next state.
    updates = f32([[3, 4], [0, 0.5]])
    reducer = robust.centered_clipping(radius=1.0)
    aggregate, state = reduce_with_state(reducer, None, updates, np.ones(2))
    np.testing.assert_allclose(aggregate, [0.3, 0.65], rtol=1e-6)
    np.testing.assert_array_equal(state, aggregate)
    # Next round from centre (0.3, 0.65): both differences are within the radius... the first
    # is (2.7, 3.35), norm 4.30, clipped to unit length; the second (−0.3, −0.15) is kept.
    aggregate2, _ = reduce_with_state(reducer, state, updates, np.ones(2))
    first = np.array([2.7, 3.35]) / np.hypot(2.7, 3.35)
    expected = np.array([0.3, 0.65]) + (first + np.array([-0.3, -0.15])) / 2
    np.testing.assert_allclose(aggregate2, expected, rtol=1e-5)


def test_norm_bounded_mean_by_hand() -> None:
    # (3, 4) clipped to norm 1 → (0.6, 0.8); (0, 0.5) kept; weights 1 and 3:
    # (0.6 + 0, 0.8 + 1.5) / 4 = (0.15, 0.575)
    updates = f32([[3, 4], [0, 0.5]])
    result = robust.norm_bounded_mean(bound=1.0)(updates, np.array([1.0, 3.0]))
    np.testing.assert_allclose(result, [0.15, 0.575], rtol=1e-6)


PRECONDITIONS = [
    (robust.median(attackers=2), 5, "n >= 2f \\+ 1"),
    (robust.trimmed_mean(attackers=2), 5, "n >= 2·trim \\+ 1"),
    (robust.krum(attackers=2), 7, "n > 2f \\+ 2"),
    (robust.multi_krum(attackers=2), 7, "n > 2f \\+ 2"),
    (robust.bulyan(attackers=2), 11, "n >= 4f \\+ 3"),
    (robust.geometric_median(attackers=2), 5, "n >= 2f \\+ 1"),
    (robust.centered_clipping(radius=1.0, attackers=2), 5, "n >= 2f \\+ 1"),
]


@pytest.mark.parametrize(("reducer", "minimum", "rule"), PRECONDITIONS, ids=repr)
def test_each_reducer_refuses_a_cohort_too_small_for_its_attackers(
    reducer: Reducer, minimum: int, rule: str
) -> None:
    assert reducer.min_cohort == minimum
    rng = np.random.default_rng(0)
    enough = rng.normal(size=(minimum, 3)).astype(np.float32)
    reducer(enough, np.ones(minimum))
    with pytest.raises(CohortTooSmall, match=f"attackers=2 needs at least {minimum} .*{rule}"):
        reducer(enough[:-1], np.ones(minimum - 1))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: robust.krum(attackers=-1), "attackers must be an integer >= 0, got -1"),
        (lambda: robust.trimmed_mean(attackers=2, trim=1), "trim must be >= attackers=2"),
        (lambda: robust.norm_bounded_mean(bound=0.0), "bound must be a finite number > 0"),
        (lambda: robust.centered_clipping(radius=-1.0), "radius must be a finite number > 0"),
        (lambda: robust.geometric_median(iterations=0), "iterations must be an integer >= 1"),
        (lambda: robust.reducer("krun", attackers=1), "reducer must be one of"),
    ],
)
def test_bad_arguments_are_refused_at_construction(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


def test_multi_krum_refuses_to_select_more_than_the_honest_count() -> None:
    with pytest.raises(ValueError, match="select must be at most n − f = 4"):
        robust.multi_krum(attackers=1, select=5)(LINE, ONES)


def test_robust_reducers_are_not_linear() -> None:
    for name, factory in robust.REDUCERS.items():
        if name in ("mean", "weighted_mean"):
            continue
        options = {"radius": 1.0} if name == "centered_clipping" else {}
        options = {"bound": 1.0} if name == "norm_bounded_mean" else options
        if name in ("trimmed_mean", "krum", "multi_krum", "bulyan"):
            options = {"attackers": 0}
        assert not factory(**options).linear, name
