from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fedloom as fl
from fedloom.stages import ClipByNorm, StageTraits, check_pipeline


@given(
    hnp.arrays(np.float32, st.integers(1, 50), elements=st.floats(-100, 100, width=32)),
    st.floats(0.01, 10),
)
def test_clip_bounds_the_norm_and_keeps_the_direction(update: np.ndarray, bound: float) -> None:
    clipped, metrics = ClipByNorm(bound).client(update, {"bound": bound}, np.random.default_rng(0))
    norm = np.linalg.norm(update.astype(np.float64))
    assert np.linalg.norm(clipped.astype(np.float64)) <= bound * (1 + 1e-6)
    assert metrics["norm"] == pytest.approx(norm)
    if norm <= bound:
        np.testing.assert_array_equal(clipped, update)
        assert metrics["clipped"] == 0.0
    else:
        np.testing.assert_allclose(clipped * norm / bound, update, rtol=1e-5, atol=1e-4)
        assert metrics["clipped"] == 1.0


def test_clipping_runs_on_clients_and_bounds_the_aggregate() -> None:
    data = fl.data.digits().split(fl.data.iid(), clients=6, seed=0)
    work = fl.local_sgd(fl.SoftmaxRegression(64, 10), lr=1.0, batch_size=16)
    algorithm = fl.fedavg(work).with_stages(fl.clip_by_norm(0.05))
    history = fl.simulate(algorithm, data, rounds=2, cohort=6, federated_eval=False)
    for record in history.records:
        assert record.metrics["update_norm"] <= 0.05 * (1 + 1e-5)
        assert record.metrics["clip.clipped_fraction"] == 1.0
        assert record.metrics["clip.median_norm"] > 0.05


@dataclass(frozen=True)
class Median:
    """A non-linear reducer, as robust aggregation will bring."""

    @property
    def linear(self) -> bool:
        return False

    def __call__(
        self, updates: npt.NDArray[np.float32], weights: npt.NDArray[np.float64]
    ) -> np.ndarray:
        return np.median(updates, axis=0).astype(np.float32)


@dataclass(frozen=True)
class SumOnly(ClipByNorm):
    """Stands for a stage decodable only from a sum (secure aggregation, quantizers)."""

    @property
    def traits(self) -> StageTraits:
        return StageTraits(needs_linear_reducer=True)


def test_pipeline_refuses_a_sum_only_stage_before_a_nonlinear_reducer() -> None:
    with pytest.raises(
        ValueError, match=r"stage 'masked' can only be decoded from a \(weighted\) sum"
    ):
        check_pipeline([SumOnly(1.0, name="masked")], Median())
    check_pipeline([SumOnly(1.0, name="masked")], fl.reducers.weighted_mean())
    work = fl.local_sgd(fl.SoftmaxRegression(4, 2), lr=0.1)
    with pytest.raises(ValueError, match="stage 'masked'"):
        fl.fedavg(work).with_stages(SumOnly(1.0, name="masked")).with_reducer(Median())


def test_pipeline_refuses_duplicate_stage_names() -> None:
    with pytest.raises(ValueError, match=r"repeated: \['clip'\]"):
        check_pipeline([ClipByNorm(1.0), ClipByNorm(2.0)], fl.reducers.mean())
