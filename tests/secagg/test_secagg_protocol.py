"""The protocol's output is exactly the modular sum of the survivors' inputs, whoever drops out
in whichever round, and it aborts exactly when fewer than the threshold survive."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from secagg_driver import make_setup, plain_sum, random_inputs, run_protocol

from fedloom.secagg.server import PHASES

# Cohorts of 10 use the complete graph; 100 and 500 a sparse Harary graph.
SCENARIOS = [
    *[(10, 1_000, rate) for rate in (0.0, 0.1, 0.3)],
    *[(10, 100_000, rate) for rate in (0.0, 0.1, 0.3)],
    *[(100, 1_000, rate) for rate in (0.0, 0.1, 0.3)],
    (100, 100_000, 0.1),
    *[(500, 1_000, rate) for rate in (0.0, 0.1, 0.3)],
    (500, 100_000, 0.1),
]


@pytest.mark.parametrize(("clients", "dims", "rate"), SCENARIOS)
def test_sum_of_survivors_is_exact_with_dropouts_in_every_round(
    clients: int, dims: int, rate: float
) -> None:
    setup = make_setup(clients, dims, dropout_rate=max(rate, 0.01))
    inputs = random_inputs(setup, seed=clients + dims)
    rng = np.random.default_rng(1)
    # ``rate`` of the cohort vanishes, spread over the four rounds.
    leaving = rng.permutation(setup.cohort)[: int(rate * clients)]
    vanish = {phase: set(leaving[i :: len(PHASES)].tolist()) for i, phase in enumerate(PHASES)}
    total, aborted, server = run_protocol(setup, inputs, vanish)
    assert aborted is None
    expected_survivors = set(setup.cohort) - vanish["advertise"] - vanish["share"] - vanish["mask"]
    assert set(server.survivors) == expected_survivors
    assert total is not None
    np.testing.assert_array_equal(total, plain_sum(setup, inputs, expected_survivors))


@pytest.mark.parametrize("phase", PHASES)
def test_a_single_round_losing_thirty_percent_still_sums_exactly(phase: str) -> None:
    setup = make_setup(150, 200, dropout_rate=0.3)
    assert setup.degree < 149, "150 clients use a sparse graph"
    inputs = random_inputs(setup, seed=7)
    leaving = set(np.random.default_rng(2).permutation(setup.cohort)[:45].tolist())
    total, aborted, server = run_protocol(setup, inputs, {phase: leaving})
    assert aborted is None
    survivors = set(setup.cohort) - (leaving if phase != "unmask" else set())
    assert set(server.survivors) == survivors
    np.testing.assert_array_equal(total, plain_sum(setup, inputs, survivors))


def test_a_small_ring_wraps_exactly() -> None:
    setup = make_setup(10, 50, bits=8)
    inputs = random_inputs(setup, seed=3)
    total, aborted, _ = run_protocol(setup, inputs, {"mask": {101, 105}})
    assert aborted is None
    np.testing.assert_array_equal(total, plain_sum(setup, inputs, set(setup.cohort) - {101, 105}))


@settings(max_examples=25, deadline=None)
@given(phase=st.sampled_from(PHASES), leaving=st.integers(min_value=0, max_value=10))
def test_aborts_if_and_only_if_fewer_than_the_threshold_survive(phase: str, leaving: int) -> None:
    setup = make_setup(10, 20)  # complete graph, t = 5
    assert setup.threshold == 5
    inputs = random_inputs(setup)
    vanish = {phase: set(setup.cohort[:leaving])}
    total, aborted, _server = run_protocol(setup, inputs, vanish)
    remaining = 10 - leaving
    if remaining < setup.threshold:
        assert total is None
        assert aborted is not None
        assert "fewer than the threshold t=5" in aborted
    else:
        assert aborted is None
        survivors = set(setup.cohort) if phase == "unmask" else set(setup.cohort[leaving:])
        np.testing.assert_array_equal(total, plain_sum(setup, inputs, survivors))
