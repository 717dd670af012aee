"""Server optimizers against values worked out by hand from Reddi et al. 2021, Algorithm 2.

One two-client, three-parameter cohort drives every test: client updates Δ¹ = [1, -2, 0.5] with
n = 1 and Δ² = [3, 0, -1.5] with n = 3 give the weighted mean Δ_0 = [2.5, -0.5, -1.0]; a second
round's cohort gives Δ_1 = [0.1, -1.0, 0.05]. Expected values are written out from the paper's
equations in float64, never by calling the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedloom import optimizers
from fedloom.client import LocalSGD
from fedloom.linear import LinearRegression
from fedloom.optimizers import SGD, Adaptive, Momentum, Optimizer
from fedloom.reducers import WeightedMean

X0 = np.array([0.5, 1.0, -2.0])
ROUND_0 = (np.array([[1.0, -2.0, 0.5], [3.0, 0.0, -1.5]]), np.array([1.0, 3.0]))
ROUND_1 = (np.array([[0.4, -1.0, 0.2], [0.0, -1.0, 0.0]]), np.array([1.0, 3.0]))
# (1·[1, -2, 0.5] + 3·[3, 0, -1.5]) / 4 and (1·[0.4, -1, 0.2] + 3·[0, -1, 0]) / 4
DELTA_0 = np.array([(1 + 9) / 4, (-2 + 0) / 4, (0.5 - 4.5) / 4])
DELTA_1 = np.array([0.4 / 4, (-1 - 3) / 4, 0.2 / 4])
TAU = 1e-3


def server_rounds(opt: Optimizer, rounds: int) -> list[np.ndarray]:
    """x after each of ``rounds`` rounds: weighted mean of the cohort, then the optimizer step."""
    params = X0.astype(np.float32)
    state = opt.init(params)
    out = []
    for updates, weights in (ROUND_0, ROUND_1)[:rounds]:
        delta = WeightedMean()(updates.astype(np.float32), weights)
        step, state = opt.update(delta, state)
        params = params + step
        out.append(params.astype(np.float64))
    return out


def test_the_cohort_mean_is_the_weighted_mean_by_hand() -> None:
    np.testing.assert_array_equal(DELTA_0, [2.5, -0.5, -1.0])
    np.testing.assert_allclose(WeightedMean()(ROUND_0[0].astype(np.float32), ROUND_0[1]), DELTA_0)
    np.testing.assert_allclose(
        WeightedMean()(ROUND_1[0].astype(np.float32), ROUND_1[1]), DELTA_1, rtol=1e-6
    )


def test_sgd_adds_lr_times_the_mean_update() -> None:
    x1, x2 = server_rounds(optimizers.sgd(lr=0.5), rounds=2)
    # x0 + 0.5 Δ_0 = [0.5 + 1.25, 1.0 - 0.25, -2.0 - 0.5]
    np.testing.assert_allclose(x1, [1.75, 0.75, -2.5], rtol=1e-5)
    # x1 + 0.5 Δ_1 = [1.75 + 0.05, 0.75 - 0.5, -2.5 + 0.025]
    np.testing.assert_allclose(x2, [1.8, 0.25, -2.475], rtol=1e-5)


def test_momentum_accumulates_the_updates_fedavgm() -> None:
    x1, x2 = server_rounds(optimizers.momentum(lr=1.0, beta=0.9), rounds=2)
    # v_0 = Δ_0; x1 = x0 + v_0
    np.testing.assert_allclose(x1, [3.0, 0.5, -3.0], rtol=1e-5)
    # v_1 = 0.9 v_0 + Δ_1 = [2.25 + 0.1, -0.45 - 1.0, -0.9 + 0.05]; x2 = x1 + v_1
    np.testing.assert_allclose(x2, [3.0 + 2.35, 0.5 - 1.45, -3.0 - 0.85], rtol=1e-5)


def test_nesterov_momentum_steps_along_delta_plus_beta_v() -> None:
    x1, x2 = server_rounds(optimizers.momentum(lr=1.0, beta=0.9, nesterov=True), rounds=2)
    # v_0 = Δ_0, direction Δ_0 + 0.9 v_0 = 1.9 Δ_0
    np.testing.assert_allclose(x1, X0 + 1.9 * DELTA_0, rtol=1e-5)
    v_1 = 0.9 * DELTA_0 + DELTA_1
    np.testing.assert_allclose(x2, X0 + 1.9 * DELTA_0 + DELTA_1 + 0.9 * v_1, rtol=1e-5)


def test_adam_two_rounds_by_hand() -> None:
    x1, x2 = server_rounds(optimizers.adam(lr=0.1, beta1=0.9, beta2=0.99, tau=TAU), rounds=2)
    m_0 = 0.9 * 0.0 + 0.1 * DELTA_0
    v_0 = 0.99 * TAU**2 + 0.01 * DELTA_0**2
    expected_x1 = X0 + 0.1 * m_0 / (np.sqrt(v_0) + TAU)
    m_1 = 0.9 * m_0 + 0.1 * DELTA_1
    v_1 = 0.99 * v_0 + 0.01 * DELTA_1**2
    expected_x2 = expected_x1 + 0.1 * m_1 / (np.sqrt(v_1) + TAU)
    np.testing.assert_allclose(x1, expected_x1, rtol=1e-5)
    np.testing.assert_allclose(x2, expected_x2, rtol=1e-5)


def test_adams_first_step_is_about_lr_times_the_sign() -> None:
    # m_0 = 0.1 Δ and √v_0 ≈ 0.1 |Δ|, so the first step is η sign(Δ), shrunk a little by τ.
    (x1,) = server_rounds(optimizers.adam(lr=0.1, beta1=0.9, beta2=0.99, tau=TAU), rounds=1)
    step = x1 - X0
    np.testing.assert_allclose(step, 0.1 * np.sign(DELTA_0), rtol=0.03)
    assert np.all(np.abs(step) < 0.1)


def test_yogi_two_rounds_by_hand_with_the_sign_term_of_both_signs() -> None:
    opt = optimizers.yogi(lr=0.1, beta1=0.9, beta2=0.99, tau=TAU)
    x1, x2 = server_rounds(opt, rounds=2)
    # Round 0: τ² - Δ_0² < 0 everywhere, so v grows: v_0 = τ² + 0.01 Δ_0².
    v_0 = np.array([1e-6 + 0.0625, 1e-6 + 0.0025, 1e-6 + 0.01])
    # Round 1: Δ_1² = [0.01, 1.0, 0.0025] and v_0 - Δ_1² has signs [+, -, +]:
    # v_1 = v_0 - 0.01 Δ_1² sign(v_0 - Δ_1²).
    assert list(np.sign(v_0 - DELTA_1**2)) == [1.0, -1.0, 1.0]
    v_1 = np.array([0.062501 - 0.0001, 0.002501 + 0.01, 0.010001 - 0.000025])
    m_0 = 0.1 * DELTA_0
    m_1 = 0.9 * m_0 + 0.1 * DELTA_1
    expected_x1 = X0 + 0.1 * m_0 / (np.sqrt(v_0) + TAU)
    expected_x2 = expected_x1 + 0.1 * m_1 / (np.sqrt(v_1) + TAU)
    np.testing.assert_allclose(x1, expected_x1, rtol=1e-5)
    np.testing.assert_allclose(x2, expected_x2, rtol=1e-5)

    params = X0.astype(np.float32)
    state = opt.init(params)
    _, state = opt.update(DELTA_0.astype(np.float32), state)
    assert state.v is not None
    np.testing.assert_allclose(state.v, v_0, rtol=1e-5)
    _, state = opt.update(DELTA_1.astype(np.float32), state)
    assert state.v is not None
    np.testing.assert_allclose(state.v, v_1, rtol=1e-5)


def test_yogi_and_adam_differ_where_the_paper_says_they_do() -> None:
    _, yogi_x2 = server_rounds(optimizers.yogi(lr=0.1, tau=TAU), rounds=2)
    _, adam_x2 = server_rounds(optimizers.adam(lr=0.1, tau=TAU), rounds=2)
    # Adam's v_1 on the first coordinate: 0.99 · 0.062501 + 0.01 · 0.01 = 0.06197599,
    # Yogi's: 0.062401; the steps differ by ~0.35 %, far more than float32 rounding.
    assert abs(yogi_x2[0] - adam_x2[0]) > 1e-4


def test_adagrad_two_rounds_by_hand() -> None:
    x1, x2 = server_rounds(optimizers.adagrad(lr=0.1, beta1=0.9, tau=TAU), rounds=2)
    m_0 = 0.1 * DELTA_0
    v_0 = TAU**2 + DELTA_0**2
    expected_x1 = X0 + 0.1 * m_0 / (np.sqrt(v_0) + TAU)
    m_1 = 0.9 * m_0 + 0.1 * DELTA_1
    v_1 = v_0 + DELTA_1**2
    expected_x2 = expected_x1 + 0.1 * m_1 / (np.sqrt(v_1) + TAU)
    np.testing.assert_allclose(x1, expected_x1, rtol=1e-5)
    np.testing.assert_allclose(x2, expected_x2, rtol=1e-5)


def test_plain_adagrad_has_no_first_moment() -> None:
    (x1,) = server_rounds(optimizers.adagrad(lr=0.1, tau=TAU), rounds=1)
    # β1 = 0: m_0 = Δ_0, and the step is 0.1 Δ / (√(τ² + Δ²) + τ).
    np.testing.assert_allclose(
        x1, X0 + 0.1 * DELTA_0 / (np.sqrt(TAU**2 + DELTA_0**2) + TAU), rtol=1e-5
    )


def first_step(opt: Adaptive) -> np.ndarray:
    step, _ = opt.update(DELTA_0.astype(np.float32), opt.init(X0.astype(np.float32)))
    return step.astype(np.float64)


@pytest.mark.parametrize("rule", ["adam", "yogi", "adagrad"])
def test_a_large_tau_makes_the_step_lr_m_over_tau(rule: str) -> None:
    tau = 1e4
    m_0 = 0.1 * DELTA_0
    # With v_{-1} = 0, √v_0 ≤ |Δ| ≪ τ: step → η m_0 / τ.
    step = first_step(Adaptive(rule, lr=0.1, beta1=0.9, tau=tau, initial_v=0.0))  # type: ignore[arg-type]
    np.testing.assert_allclose(step, 0.1 * m_0 / tau, rtol=1e-3)
    # With the paper's v_{-1} = τ², Adagrad's √v_0 = √(τ² + Δ²) ≈ τ as well: step → η m_0 / 2τ.
    if rule == "adagrad":
        step = first_step(Adaptive("adagrad", lr=0.1, beta1=0.9, tau=tau))
        np.testing.assert_allclose(step, 0.1 * m_0 / (2 * tau), rtol=1e-3)


def test_a_tiny_tau_leaves_the_plain_adaptive_ratio() -> None:
    step = first_step(Adaptive("adagrad", lr=0.1, beta1=0.0, tau=1e-9))
    # m_0 = Δ, v_0 = Δ² (+ 1e-18): the step is η sign(Δ).
    np.testing.assert_allclose(step, 0.1 * np.sign(DELTA_0), rtol=1e-6)


def test_bias_corrected_adam_matches_torch_adam() -> None:
    torch = pytest.importorskip("torch")
    grads = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    start = np.array([0.3, -1.2, 2.0, 0.0], dtype=np.float32)

    ours = Adaptive(
        "adam", lr=0.01, beta1=0.9, beta2=0.999, tau=1e-8, initial_v=0.0, bias_correction=True
    )
    # The client's local Adam must be the same optimizer.
    local = LocalSGD(LinearRegression(3), lr=0.01, optimizer="adam").local_optimizer()
    for opt in (ours, local):
        param = torch.nn.Parameter(torch.tensor(start))
        reference = torch.optim.Adam([param], lr=0.01, betas=(0.9, 0.999), eps=1e-8)
        params = start.copy()
        state = opt.init(params)
        for g in grads:
            param.grad = torch.tensor(g)
            reference.step()
            step, state = opt.update(-g, state)
            params = params + step
            np.testing.assert_allclose(params, param.detach().numpy(), rtol=1e-5, atol=1e-7)


def test_state_is_returned_not_kept() -> None:
    opt = optimizers.adam(lr=0.1)
    state = opt.init(X0.astype(np.float32))
    first, _ = opt.update(DELTA_0.astype(np.float32), state)
    again, _ = opt.update(DELTA_0.astype(np.float32), state)
    np.testing.assert_array_equal(first, again)


@pytest.mark.parametrize(
    ("build", "name"),
    [
        (lambda: SGD(lr=0.0), "lr"),
        (lambda: SGD(lr=-1.0), "lr"),
        (lambda: Momentum(lr=0.0), "lr"),
        (lambda: Momentum(beta=1.0), "beta"),
        (lambda: Adaptive("adam", lr=0.0), "lr"),
        (lambda: Adaptive("yogi", lr=-0.1), "lr"),
        (lambda: Adaptive("adam", lr=0.1, beta1=1.0), "beta1"),
        (lambda: Adaptive("adam", lr=0.1, beta2=1.0), "beta2"),
        (lambda: Adaptive("adam", lr=0.1, beta1=-0.1), "beta1"),
        (lambda: Adaptive("adam", lr=0.1, tau=-1e-3), "tau"),
        (lambda: Adaptive("adam", lr=0.1, initial_v=-1.0), "initial_v"),
        (lambda: Adaptive("foo", lr=0.1), "rule"),  # type: ignore[arg-type]
        (lambda: Adaptive("yogi", lr=0.1, bias_correction=True), "bias_correction"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_argument(build: object, name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        build()  # type: ignore[operator]
