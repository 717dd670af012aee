"""DP-FedAvg's stage: clipping bound, noise scale, fixed denominator, adaptive clipping."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fedloom as fl
from fedloom import privacy
from fedloom.data import FederatedData
from fedloom.reducers import Sum, WeightedMean

POISSON = privacy.poisson_sampling(population=1000, rate=0.05)  # expected cohort 50


def _stage(**kwargs: object) -> privacy.CentralGaussian:
    options: dict[str, object] = {"clip": 1.0, "noise_multiplier": 1.0, "sampling": POISSON}
    options.update(kwargs)
    return privacy.central_gaussian(**options)  # type: ignore[arg-type]


@given(
    hnp.arrays(np.float32, st.integers(1, 60), elements=st.floats(-1e3, 1e3, width=32)),
    st.floats(1e-3, 100.0),
)
def test_every_update_is_within_the_bound_after_clipping(update: np.ndarray, clip: float) -> None:
    stage = _stage(clip=clip)
    clipped, _ = stage.client(update, stage.config(stage.init(None)), np.random.default_rng(0))  # type: ignore[arg-type]
    assert np.linalg.norm(clipped.astype(np.float64)) <= clip * (1 + 1e-6)
    if np.linalg.norm(update.astype(np.float64)) <= clip:
        np.testing.assert_array_equal(clipped, update)


@pytest.mark.parametrize(
    ("sampling", "z", "clip"),
    [
        (POISSON, 1.0, 1.0),
        (POISSON, 0.5, 3.0),
        (privacy.fixed_sampling(population=100, count=20), 2.0, 0.5),
    ],
)
def test_added_noise_has_std_z_times_clip_over_the_expected_cohort(
    sampling: privacy.Sampling, z: float, clip: float
) -> None:
    stage = _stage(sampling=sampling, noise_multiplier=z, clip=clip, seed=3)
    total = np.full(200_000, 2.0, dtype=np.float32)  # the clipped clients' sum
    out, _, metrics = stage.server(total, stage.init(None), [{}] * 7)  # type: ignore[arg-type]
    noise = out.astype(np.float64) - 2.0 / sampling.expected_size
    configured = z * clip / sampling.expected_size
    assert metrics["noise_std"] == pytest.approx(configured)
    assert np.std(noise) == pytest.approx(configured, rel=0.01)
    assert abs(np.mean(noise)) < 5 * configured / np.sqrt(noise.size)


def test_the_denominator_is_the_expected_cohort_not_the_actual_one() -> None:
    # 30 clients arrive though 50 were expected: the estimate is 30·u/50, not u.
    stage = _stage(noise_multiplier=1e-6, seed=0)
    u = np.array([0.3, -0.4], dtype=np.float32)  # norm 0.5, below the bound
    cohort = np.stack([u] * 30)
    clipped = np.stack(
        [stage.client(row, {"clip": 1.0}, np.random.default_rng(0))[0] for row in cohort]
    )
    total = Sum()(clipped, np.ones(30))
    out, _, _ = stage.server(total, stage.init(None), [{}] * 30)  # type: ignore[arg-type]
    np.testing.assert_allclose(out, 30 * u / 50, rtol=1e-5)


def _adaptive_rounds(
    stage: privacy.CentralGaussian, norms_of_round: object, rounds: int, cohort: int
) -> list[float]:
    rng = np.random.default_rng(0)
    state = stage.init(None)  # type: ignore[arg-type]
    bounds = [float(state["clip"])]
    for _ in range(rounds):
        norms = norms_of_round(rng, cohort)  # type: ignore[operator]
        directions = rng.normal(size=(cohort, 4))
        updates = directions / np.linalg.norm(directions, axis=1, keepdims=True) * norms[:, None]
        outputs = [stage.client(u.astype(np.float32), stage.config(state), rng) for u in updates]
        total = Sum()(np.stack([o[0] for o in outputs]), np.ones(cohort))
        _, state, _ = stage.server(total, state, [o[1] for o in outputs])
        bounds.append(float(state["clip"]))
    return bounds


def test_adaptive_clipping_converges_to_the_median_of_n_1_01() -> None:
    # The setting: norms ~ N(1, 0.1), C₀ = 0.1, η = 0.2, γ = 0.5, no noise, 60 rounds.
    adaptive = privacy.AdaptiveClipping(target_quantile=0.5, learning_rate=0.2, count_stddev=0.0)
    stage = privacy.central_gaussian(
        clip=0.1, noise_multiplier=1.0, sampling=privacy.fixed_sampling(population=100, count=100),
        adaptive=adaptive, seed=0,
    )  # fmt: skip
    bounds = _adaptive_rounds(stage, lambda rng, n: rng.normal(1.0, 0.1, n), 60, 100)
    assert 0.9 <= bounds[-1] <= 1.1


def test_the_bound_rises_when_most_updates_are_clipped_and_falls_otherwise() -> None:
    adaptive = privacy.AdaptiveClipping(target_quantile=0.5, learning_rate=0.2)
    stage = privacy.central_gaussian(
        clip=1.0, noise_multiplier=1.0, sampling=privacy.fixed_sampling(population=20, count=20),
        adaptive=adaptive, seed=0,
    )  # fmt: skip
    rising = _adaptive_rounds(stage, lambda rng, n: np.full(n, 5.0), 1, 20)
    # Every update clipped: b̄ = 0, so C ← C·exp(η·γ) (Andrew et al. 2021, eq. 2's sign).
    assert rising[1] == pytest.approx(np.exp(0.2 * 0.5))
    falling = _adaptive_rounds(stage, lambda rng, n: np.full(n, 0.1), 1, 20)
    assert falling[1] == pytest.approx(np.exp(-0.2 * 0.5))


def test_adaptive_clipping_tracks_the_90th_percentile_with_count_noise() -> None:
    adaptive = privacy.AdaptiveClipping(target_quantile=0.9, learning_rate=0.2, count_stddev=2.5)
    stage = privacy.central_gaussian(
        clip=0.5, noise_multiplier=1.0, sampling=privacy.fixed_sampling(population=200, count=200),
        adaptive=adaptive, seed=1,
    )  # fmt: skip
    bounds = _adaptive_rounds(stage, lambda rng, n: rng.exponential(1.0, n), 150, 200)
    # The 90th percentile of Exp(1) is ln 10 ≈ 2.30.
    assert np.mean(bounds[-30:]) == pytest.approx(np.log(10), rel=0.15)


def test_client_measurements_of_a_private_stage_stay_out_of_round_metrics(
    digits_40: FederatedData, softmax_work: fl.LocalSGD
) -> None:
    stage = privacy.central_gaussian(
        clip=0.5, noise_multiplier=1.0, sampling=privacy.fixed_sampling(population=40, count=10),
        adaptive=privacy.AdaptiveClipping(count_stddev=1.0), seed=0,
    )  # fmt: skip
    history = fl.simulate(
        fl.fedavg(softmax_work).with_privacy(stage), digits_40, rounds=1, cohort=10,
        federated_eval=False,
    )  # fmt: skip
    metrics = history.records[0].metrics
    assert "dp.unclipped" not in metrics  # each client's bit, seen only by the stage
    assert "dp.unclipped_fraction" in metrics  # the noisy release
    assert metrics["dp.noise_std"] == pytest.approx(stage.update_noise_multiplier * 0.5 / 10)
    assert "dp.epsilon" in metrics


def test_the_pipeline_refuses_a_weighted_mean_behind_dp(softmax_work: fl.LocalSGD) -> None:
    algorithm = fl.fedavg(softmax_work)
    with pytest.raises(ValueError, match=r"stage 'dp'.*fedloom.reducers.Sum\(\)"):
        fl.Algorithm("x", softmax_work, reducer=WeightedMean(), stages=(_stage(),))
    assert isinstance(algorithm.with_privacy(_stage()).reducer, Sum)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"noise_multiplier": 0.0}, "noise_multiplier must be a finite number > 0 when"),
        ({"noise_multiplier": -1.0}, "noise_multiplier"),
        ({"clip": 0.0}, "clip must be a finite number > 0"),
        (
            {"adaptive": privacy.AdaptiveClipping(count_stddev=0.4)},
            r"2·count_stddev must exceed noise_multiplier=1.0",
        ),
    ],
)
def test_bad_dp_settings_are_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _stage(**kwargs)


def test_adaptive_clipping_without_count_noise_claims_no_epsilon() -> None:
    stage = _stage(adaptive=privacy.AdaptiveClipping(count_stddev=0.0))
    with pytest.raises(ValueError, match="count_stddev > 0"):
        stage.round_event()


@given(
    update=hnp.arrays(np.float32, st.integers(1, 40), elements=st.floats(-1e3, 1e3, width=32)),
    bound=st.floats(1e-3, 1e3),
)
def test_dp_clips_exactly_as_the_clip_stage_does(update: np.ndarray, bound: float) -> None:
    """One clipping for every client stage: DP's client half and ``clip_by_norm`` give the
    same bits, so a run that swaps one for the other changes only the noise."""
    rng = np.random.default_rng(0)
    private, _ = _stage(clip=bound).client(update, {"clip": bound}, rng)
    plain, metrics = fl.clip_by_norm(bound).client(update, {"bound": bound}, rng)
    np.testing.assert_array_equal(private, plain)
    assert private.dtype == plain.dtype == np.float32
    assert metrics["clipped"] == float(np.linalg.norm(update.astype(np.float64)) > bound)
