"""The distributed discrete Gaussian: integer shares, their sum's noise, the paper's ρ."""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting import rdp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fedloom as fl
from fedloom import privacy
from fedloom.data import FederatedData
from fedloom.privacy.discrete import conditional_round, discrete_gaussian, rounding_bound
from fedloom.reducers import Sum

POISSON = privacy.poisson_sampling(population=1000, rate=0.05)


@pytest.mark.parametrize("sigma", [0.8, 3.0, 40.0])
def test_discrete_gaussian_has_the_gaussian_shape(sigma: float) -> None:
    draws = discrete_gaussian(sigma, 400_000, np.random.default_rng(0))
    assert draws.dtype == np.int64
    assert abs(draws.mean()) < 5 * sigma / math.sqrt(draws.size)
    # The exact variance Σ x² e^{−x²/2σ²} / Σ e^{−x²/2σ²} over the integers.
    xs = np.arange(-int(20 * sigma) - 5, int(20 * sigma) + 6)
    weights = np.exp(-(xs**2) / (2 * sigma**2))
    variance = float((xs**2 * weights).sum() / weights.sum())
    assert draws.var() == pytest.approx(variance, rel=0.02)
    p0, p1 = np.mean(draws == 0), np.mean(draws == 1)
    assert p1 / p0 == pytest.approx(math.exp(-1 / (2 * sigma**2)), rel=0.03)


@settings(max_examples=50, deadline=None)
@given(
    hnp.arrays(np.float64, st.integers(1, 200), elements=st.floats(-50, 50)),
    st.integers(0, 2**32 - 1),
)
def test_conditional_rounding_is_within_the_bound(x: np.ndarray, seed: int) -> None:
    norm = max(float(np.linalg.norm(x)), 1e-3)
    bound = rounding_bound(norm, x.size, math.exp(-0.5))
    rounded = conditional_round(x, bound, np.random.default_rng(seed))
    assert np.linalg.norm(rounded.astype(np.float64)) <= bound
    assert np.all(np.abs(rounded - x) < 1)


def _ddg(**kwargs: object) -> privacy.DistributedGaussian:
    options: dict[str, object] = {
        "clip": 1.0, "noise_multiplier": 1.0, "sampling": POISSON, "min_clients": 40,
    }  # fmt: skip
    options.update(kwargs)
    return privacy.distributed_gaussian(**options)  # type: ignore[arg-type]


def _aggregate(stage: privacy.DistributedGaussian, updates: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shares = np.stack([stage.client(u.astype(np.float32), {}, rng)[0] for u in updates])
    assert np.all(shares == np.rint(shares))
    assert shares.min() >= 0
    assert shares.max() < stage.modulus
    total = Sum()(shares, np.ones(len(shares)))
    out, _, _ = stage.server(total, None, [{}] * len(shares))
    return out


def test_the_sum_of_shares_carries_the_configured_noise() -> None:
    stage = _ddg(noise_multiplier=2.0, clip=0.5)
    updates = np.zeros((40, 20_000))  # zero updates round to zero: all that is left is noise
    out = _aggregate(stage, updates, seed=1).astype(np.float64)
    configured = 2.0 * 0.5 / POISSON.expected_size
    assert np.std(out) == pytest.approx(configured, rel=0.02)


def test_the_decoded_average_is_the_clipped_sum_over_the_expected_cohort() -> None:
    stage = _ddg(noise_multiplier=1e-3, min_clients=10)
    rng = np.random.default_rng(0)
    updates = rng.normal(0, 0.1, size=(30, 50))  # norms ≈ 0.7, below the bound
    out = _aggregate(stage, updates, seed=2)
    # Rounding adds at most γ per coordinate and client, unbiased.
    np.testing.assert_allclose(out, updates.sum(0) / 50, atol=30 * stage.gamma / 50 + 1e-6)


def test_negative_sums_survive_the_modulus() -> None:
    stage = _ddg(noise_multiplier=1e-3, min_clients=5, bits=12)
    updates = np.full((5, 3), -0.5 / math.sqrt(3))
    out = _aggregate(stage, updates, seed=3)
    np.testing.assert_allclose(out, 5 * updates[0] / 50, atol=5 * stage.gamma / 50 + 1e-6)


def test_rho_approaches_the_continuous_gaussian_for_fine_granularity() -> None:
    # Kairouz et al.: with σ large and γ small, ρ → Δ₂² / (2nσ²) → 1 / (2z²).
    stage = _ddg(noise_multiplier=1.5, bits=24)
    assert stage.rho(1000) == pytest.approx(1 / (2 * 1.5**2), rel=0.01)
    assert stage.rho(1000) >= 1 / (2 * 1.5**2)
    coarse = _ddg(noise_multiplier=1.5, bits=8)
    assert coarse.rho(1000) > stage.rho(1000)  # rounding inflates the sensitivity


def test_run_epsilon_composes_zcdp_rounds_with_dp_accounting(
    digits_40: FederatedData, softmax_work: fl.LocalSGD
) -> None:
    sampling = privacy.fixed_sampling(population=40, count=10)
    stage = privacy.distributed_gaussian(
        clip=0.5, noise_multiplier=2.0, sampling=sampling, min_clients=8
    )
    history = fl.simulate(
        fl.fedavg(softmax_work).with_privacy(stage), digits_40, rounds=3, cohort=10,
        min_cohort=8, federated_eval=False,
        budget=privacy.budget(max_epsilon=1e3, delta=1e-3),
    )  # fmt: skip
    rho = stage.rho(softmax_work.model.layout.size)
    accountant = rdp.RdpAccountant(
        neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE
    )
    expected = [
        accountant.compose(dp_accounting.ZCDpEvent(rho)).get_epsilon(1e-3) for _ in range(3)
    ]
    assert history.metric("dp.epsilon") == pytest.approx(expected, rel=1e-9)
    # Three noisy rounds say nothing about accuracy (docs/privacy-utility.md does); the model
    # must still have moved and stayed finite.
    assert np.all(np.isfinite(history.params))
    assert not np.allclose(history.params, softmax_work.model.init(0))


def test_a_min_cohort_below_the_noise_shares_needed_is_refused(
    digits_40: FederatedData, softmax_work: fl.LocalSGD
) -> None:
    stage = privacy.distributed_gaussian(
        clip=0.5, noise_multiplier=1.0, sampling=privacy.fixed_sampling(population=40, count=10),
        min_clients=8,
    )  # fmt: skip
    with pytest.raises(ValueError, match="needs at least 8 clients' noise in every sum"):
        fl.simulate(
            fl.fedavg(softmax_work).with_privacy(stage), digits_40, rounds=1, cohort=10,
            min_cohort=2,
        )  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"noise_multiplier": 0.0}, "noise_multiplier must be a finite number > 0 when"),
        ({"bits": 30}, "bits must be at most 24"),
        ({"min_clients": 0}, "min_clients must be an integer >= 1"),
    ],
)
def test_bad_distributed_settings_are_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _ddg(**kwargs)
