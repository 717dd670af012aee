"""Shamir sharing over GF(2^31 - 1): any t shares reconstruct, t - 1 are consistent with every
secret, and the vectorized Lagrange weights equal a plain big-integer computation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedloom.secagg import shamir
from fedloom.secagg.shamir import PRIME

secrets_32 = st.binary(min_size=32, max_size=32)


@st.composite
def sharings(draw: st.DrawFn) -> tuple[int, int, list[int]]:
    parties = draw(st.integers(min_value=1, max_value=40))
    threshold = draw(st.integers(min_value=1, max_value=parties))
    subset = draw(st.permutations(range(parties)))[:threshold]
    return parties, threshold, subset


@settings(max_examples=60, deadline=None)
@given(secret=secrets_32, plan=sharings())
def test_any_t_shares_reconstruct_the_secret(
    secret: bytes, plan: tuple[int, int, list[int]]
) -> None:
    parties, threshold, subset = plan
    xs = np.arange(1, parties + 1)
    shares = shamir.share(shamir.to_limbs(secret), xs, threshold)
    chosen = np.array(subset)
    assert shamir.from_limbs(shamir.reconstruct(xs[chosen], shares[chosen]), 32) == secret


@settings(max_examples=40, deadline=None)
@given(
    secret=st.integers(min_value=0, max_value=PRIME - 1),
    other=st.integers(min_value=0, max_value=PRIME - 1),
    threshold=st.integers(min_value=2, max_value=12),
)
def test_t_minus_one_shares_are_consistent_with_any_secret(
    secret: int, other: int, threshold: int
) -> None:
    """For any other secret there is a polynomial of degree t - 1 through the t - 1 shares and
    ``(0, other)``: completing the shares with its value at one more point reconstructs
    ``other``, so the t - 1 shares rule out nothing."""
    xs = np.arange(1, threshold + 1)
    shares = shamir.share(np.array([secret], dtype=np.uint64), xs, threshold)
    known_x, known = xs[:-1], shares[:-1, 0]
    # Interpolate through (0, other) and the t - 1 known shares; evaluate at the last x.
    points = [0, *known_x.tolist()]
    values = [other, *known.tolist()]
    target = int(xs[-1])
    forged = 0
    for j, (xj, yj) in enumerate(zip(points, values, strict=True)):
        weight = 1
        for m, xm in enumerate(points):
            if m != j:
                weight = weight * (target - xm) * pow(xj - xm, -1, PRIME) % PRIME
        forged = (forged + yj * weight) % PRIME
    completed = np.append(known, forged).astype(np.uint64)[:, None]
    assert int(shamir.reconstruct(xs, completed)[0]) == other


@settings(max_examples=40, deadline=None)
@given(
    xs=st.lists(st.integers(min_value=1, max_value=PRIME - 1), min_size=1, max_size=20, unique=True)
)
def test_lagrange_weights_equal_big_integer_arithmetic(xs: list[int]) -> None:
    expected = []
    for j, xj in enumerate(xs):
        weight = 1
        for m, xm in enumerate(xs):
            if m != j:
                weight = weight * xm * pow(xm - xj, -1, PRIME) % PRIME
        expected.append(weight)
    assert shamir.lagrange_at_zero(np.array(xs, dtype=np.int64)).tolist() == expected


def test_a_batch_reconstructs_each_secret_from_its_own_parties() -> None:
    secrets = [bytes([i]) * 32 for i in range(6)]
    xs = np.arange(1, 31)
    threshold = 9
    limbs = np.concatenate([shamir.to_limbs(s) for s in secrets])
    shares = shamir.share(limbs, xs, threshold).reshape(30, 6, -1)
    rng = np.random.default_rng(0)
    picks = np.stack([rng.permutation(30)[:threshold] for _ in secrets])
    batch = np.stack([shares[picks[i], i] for i in range(len(secrets))])
    out = shamir.reconstruct(xs[picks], batch)
    assert [shamir.from_limbs(row, 32) for row in out] == secrets


def test_the_shares_of_two_secrets_are_alike_below_the_threshold() -> None:
    """t - 1 = 2 shares of secret 0 and of secret p - 1 both look uniform: their top bits fill
    16 buckets equally (a chi-square test at 1e-6)."""
    from scipy.stats import chisquare

    xs = np.arange(1, 4)
    for secret in (0, PRIME - 1):
        shares = shamir.share(np.full(20_000, secret, dtype=np.uint64), xs, 3)[:2]
        buckets = np.bincount((shares.ravel() >> np.uint64(27)).astype(np.int64), minlength=16)
        assert chisquare(buckets).pvalue > 1e-6


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="threshold must be in"):
        shamir.share(np.array([1], dtype=np.uint64), np.arange(1, 4), 4)
    with pytest.raises(ValueError, match="distinct"):
        shamir.share(np.array([1], dtype=np.uint64), np.array([1, 1]), 1)
    with pytest.raises(ValueError, match="field elements"):
        shamir.share(np.array([PRIME], dtype=np.uint64), np.arange(1, 4), 2)
    with pytest.raises(ValueError, match="x-coordinates must be integers"):
        shamir.lagrange_at_zero(np.array([0, 1]))
    with pytest.raises(ValueError, match="inconsistent"):
        shamir.from_limbs(np.array([1 << 24], dtype=np.uint64), 3)
