"""Local training against trajectories worked out by hand.

Most tests train ``LinearRegression(2)`` on two examples, full-batch, from w = 0, b = 0::

    x = [[1, 2], [3, -1]], y = [1, 2], lr η = 0.1
    loss = mean(r²) with r = x w + b - y;  ∇w = 2 xᵀ r / n = xᵀ r,  ∇b = 2 mean(r)

Step 1: r = [-1, -2], so ∇ = [1·-1 + 3·-2, 2·-1 + -1·-2, -3] = [-7, 0, -3] and the first SGD
step lands on [0.7, 0, 0.3]. Step 2 there: r = [0.7 + 0.3 - 1, 2.1 + 0.3 - 2] = [0, 0.4], so
∇ = [3·0.4, -1·0.4, 0.4] = [1.2, -0.4, 0.4].
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pytest

from fedloom.client import CONTROL, FEDNOVA_NORM, LocalSGD
from fedloom.core.layout import Field, Layout, Vector
from fedloom.core.messages import Broadcast, ClientState
from fedloom.linear import LinearRegression

X = np.array([[1.0, 2.0], [3.0, -1.0]], dtype=np.float32)
Y = np.array([1.0, 2.0], dtype=np.float32)
ZERO = np.zeros(3, dtype=np.float32)
MODEL = LinearRegression(2)


def local(**options: Any) -> LocalSGD:
    """Two full-batch steps with η = 0.1 unless ``options`` say otherwise."""
    model = options.pop("model", MODEL)
    config: dict[str, Any] = {"lr": 0.1, "epochs": None, "steps": 2, "batch_size": 2}
    return LocalSGD(model, **{**config, **options})


def train(
    work: LocalSGD,
    params: np.ndarray = ZERO,
    *,
    x: np.ndarray = X,
    y: np.ndarray = Y,
    extras: dict[str, Vector] | None = None,
    state: ClientState | None = None,
    seed: int = 0,
) -> tuple[Any, ClientState]:
    broadcast = Broadcast(0, params.astype(np.float32), seed, extras or {})
    return work.train(broadcast, x, y, state or {})


def test_plain_sgd_two_steps_by_hand() -> None:
    result, state = train(local())
    # [0.7, 0, 0.3] - 0.1 · [1.2, -0.4, 0.4]
    np.testing.assert_allclose(result.update, [0.58, 0.04, 0.26], rtol=1e-6)
    assert result.num_examples == 2
    # Losses at the two steps: mean([1, 4]) = 2.5 and mean([0, 0.16]) = 0.08.
    assert result.metrics["train_loss"] == pytest.approx((2.5 + 0.08) / 2)
    assert result.metrics["local_steps"] == 2.0
    assert result.extras == {}
    assert state == {}


def test_the_update_is_new_minus_old_from_any_start() -> None:
    start = np.array([0.7, 0.0, 0.3], dtype=np.float32)
    result, _ = train(local(steps=1), start)
    # One step from [0.7, 0, 0.3] is -0.1 · [1.2, -0.4, 0.4].
    np.testing.assert_allclose(result.update, [-0.12, 0.04, -0.04], rtol=1e-5)


def test_momentum_two_steps_by_hand() -> None:
    result, _ = train(local(momentum=0.5))
    # m1 = [7, 0, 3] → [0.7, 0, 0.3]; m2 = 0.5 m1 - [1.2, -0.4, 0.4] = [2.3, 0.4, 1.1].
    np.testing.assert_allclose(result.update, [0.93, 0.04, 0.41], rtol=1e-6)


def test_adam_first_step_is_lr_times_the_sign_of_minus_the_gradient() -> None:
    result, _ = train(local(optimizer="adam", steps=1))
    # Bias-corrected: m̂ = -g, v̂ = g², step = η (-g) / (|g| + 1e-8) with g = [-7, 0, -3].
    np.testing.assert_allclose(result.update, [0.1, 0.0, 0.1], rtol=1e-5)


def test_fedprox_adds_mu_times_the_distance_from_the_start() -> None:
    result, _ = train(local(prox_mu=0.5))
    # Step 1 starts at w_t: no prox term. Step 2 adds 0.5 · ([0.7, 0, 0.3] - 0):
    # [0.7, 0, 0.3] - 0.1 · ([1.2, -0.4, 0.4] + [0.35, 0, 0.15])
    np.testing.assert_allclose(result.update, [0.545, 0.04, 0.245], rtol=1e-6)


def test_fedprox_with_mu_zero_is_plain_sgd() -> None:
    plain, _ = train(local())
    prox, _ = train(local(prox_mu=0.0))
    np.testing.assert_array_equal(prox.update, plain.update)


def test_weight_decay_adds_lambda_w() -> None:
    start = np.array([1.0, -1.0, 0.5], dtype=np.float32)
    result, _ = train(local(steps=1, weight_decay=0.2), start)
    # r = [1 - 2 + 0.5 - 1, 3 + 1 + 0.5 - 2] = [-1.5, 2.5]; ∇ = [-1.5 + 7.5, -3 - 2.5, 1.0]
    # plus 0.2 · [1, -1, 0.5]; the bias decays as well.
    np.testing.assert_allclose(result.update, [-0.62, 0.57, -0.11], rtol=1e-5)


C_SERVER = np.array([0.1, -0.2, 0.0], dtype=np.float32)
C_CLIENT = np.array([0.3, 0.1, -0.1], dtype=np.float32)


def test_scaffold_option_two_by_hand() -> None:
    state: ClientState = {CONTROL: C_CLIENT, "other": np.ones(1, dtype=np.float32)}
    result, new_state = train(local(control_variates=True), extras={CONTROL: C_SERVER}, state=state)
    # y ← y - η (g(y) - c_i + c), and c - c_i = [-0.2, -0.3, 0.1].
    # Step 1: g + c - c_i = [-7.2, -0.3, -2.9] → y1 = [0.72, 0.03, 0.29].
    # Step 2: r = [0.72 + 0.06 + 0.29 - 1, 2.16 - 0.03 + 0.29 - 2] = [0.07, 0.42],
    #   g = [0.07 + 1.26, 0.14 - 0.42, 0.49] → g + c - c_i = [1.13, -0.58, 0.59].
    update = [0.72 - 0.113, 0.03 + 0.058, 0.29 - 0.059]
    np.testing.assert_allclose(result.update, update, rtol=1e-5)
    # c_i⁺ = c_i - c + (x - y) / (K η) = [0.2, 0.3, -0.1] - update / 0.2
    control = [0.2 - 3.035, 0.3 - 0.44, -0.1 - 1.155]
    np.testing.assert_allclose(new_state[CONTROL], control, rtol=1e-5)
    # Δc = c_i⁺ - c_i
    np.testing.assert_allclose(result.extras[CONTROL], [-3.135, -0.24, -1.155], rtol=1e-5)
    np.testing.assert_array_equal(new_state["other"], state["other"])
    np.testing.assert_array_equal(state[CONTROL], C_CLIENT)


def test_scaffold_first_round_starts_from_a_zero_client_control() -> None:
    result, new_state = train(local(control_variates=True), extras={CONTROL: C_SERVER})
    explicit, _ = train(
        local(control_variates=True), extras={CONTROL: C_SERVER}, state={CONTROL: ZERO}
    )
    np.testing.assert_array_equal(result.update, explicit.update)
    # c_i = 0: Δc = c_i⁺ = -c - update / (K η)
    expected = -C_SERVER.astype(np.float64) - result.update.astype(np.float64) / 0.2
    np.testing.assert_allclose(new_state[CONTROL], expected, rtol=1e-5)
    np.testing.assert_allclose(result.extras[CONTROL], expected, rtol=1e-5)


def test_scaffold_needs_the_server_control_in_the_broadcast() -> None:
    with pytest.raises(ValueError, match=CONTROL):
        train(local(control_variates=True))


def test_fednova_norms_by_hand() -> None:
    assert local(steps=3).fednova_norm(3) == 3.0
    # Σ_{k=1..3} (1 - 0.5ᵏ) / 0.5 = 1 + 1.5 + 1.75
    assert local(momentum=0.5).fednova_norm(3) == pytest.approx(4.25)
    # Σ_{k=0..2} (1 - 0.1 · 0.5)ᵏ = 1 + 0.95 + 0.9025
    assert local(prox_mu=0.5).fednova_norm(3) == pytest.approx(2.8525)


@pytest.mark.parametrize(
    ("options", "norm"),
    [({}, 3.0), ({"momentum": 0.5}, 4.25), ({"prox_mu": 0.5}, 2.8525)],
    ids=["sgd", "momentum", "prox"],
)
def test_fednova_sends_the_update_divided_by_its_norm(
    options: dict[str, float], norm: float
) -> None:
    work = local(steps=3, **options)
    plain, _ = train(work)
    normalized, _ = train(replace(work, normalized=True))
    np.testing.assert_allclose(normalized.extras[FEDNOVA_NORM], [norm], rtol=1e-6)
    assert normalized.extras[FEDNOVA_NORM].shape == (1,)
    np.testing.assert_allclose(normalized.update, plain.update / norm, rtol=1e-5)


@dataclass(frozen=True)
class ConstantSlope:
    """``loss = g · w`` on trainable ``w``, beside a non-trainable ``stat`` entry.

    The gradient is the same ``g`` everywhere, which makes every local trajectory a closed form.
    With ``counting``, each forward pass adds 1 to ``stat`` in place, as BatchNorm updates its
    running statistics. ``seen`` records each batch's ``x`` (the examples' indices).
    """

    slope: tuple[float, float] = (1.0, -2.0)
    counting: bool = False
    seen: list[list[int]] = field(default_factory=list, compare=False)

    @property
    def layout(self) -> Layout:
        return Layout((Field("w", (2,)), Field("stat", (1,), trainable=False)))

    def init(self, seed: int) -> Vector:
        return np.zeros(3, dtype=np.float32)

    def loss_and_grad(self, params: Vector, x: Any, y: Any) -> tuple[float, Vector]:
        self.seen.append([int(i) for i in np.asarray(x).reshape(-1)])
        if self.counting:
            params[2] += 1.0
        g = np.array([*self.slope, 0.0], dtype=np.float32)
        return float(g[:2] @ params[:2]), g

    def evaluate(self, params: Vector, x: Any, y: Any) -> dict[str, float]:
        return {"loss": float(np.array(self.slope) @ params[:2])}


INDEX_X = np.arange(4, dtype=np.float32)[:, None]
INDEX_Y = np.zeros(4, dtype=np.float32)


@pytest.mark.parametrize(
    "options",
    [{}, {"momentum": 0.5}, {"prox_mu": 0.5}, {"prox_mu": 2.0}],
    ids=["sgd", "momentum", "prox", "strong-prox"],
)
def test_fednova_normalized_update_of_a_constant_gradient_is_minus_lr_g(
    options: dict[str, float],
) -> None:
    # Wang et al. 2020: Δ = -η Σ_k a_k g_k, so with g_k ≡ g, Δ / ‖a‖₁ = -η g for every a.
    work = local(model=ConstantSlope(), steps=4, normalized=True, **options)
    start = np.array([0.5, -1.0, 7.0], dtype=np.float32)
    result, _ = train(work, start, x=INDEX_X, y=INDEX_Y)
    np.testing.assert_allclose(result.update, [-0.1, 0.2, 0.0], rtol=1e-5, atol=1e-7)


def test_all_corrections_at_once_by_hand_and_non_trainable_entries_stay() -> None:
    work = local(model=ConstantSlope(), weight_decay=0.1, prox_mu=0.5, control_variates=True)
    start = np.array([0.5, -1.0, 7.0], dtype=np.float32)
    c = np.array([0.1, 0.2, 3.0], dtype=np.float32)
    c_i = np.array([0.05, -0.1, 0.0], dtype=np.float32)
    result, new_state = train(
        work, start, x=INDEX_X, y=INDEX_Y, extras={CONTROL: c}, state={CONTROL: c_i}
    )
    # g = [1, -2], c - c_i = [0.05, 0.3] on w; the stat entry gets no term at all.
    # Step 1: [1 + 0.05 + 0.05, -2 - 0.1 + 0.3] = [1.1, -1.8] → w1 = [0.39, -0.82]
    # Step 2: [1 + 0.039 - 0.055 + 0.05, -2 - 0.082 + 0.09 + 0.3] = [1.034, -1.692]
    #   → w2 = [0.2866, -0.6508]
    np.testing.assert_allclose(result.update, [-0.2134, 0.3492, 0.0], rtol=1e-5, atol=0)
    # c_i⁺ = c_i - c - update / 0.2 on w, 0 on stat
    np.testing.assert_allclose(new_state[CONTROL], [1.017, -2.046, 0.0], rtol=1e-5, atol=0)
    np.testing.assert_allclose(result.extras[CONTROL], [0.967, -1.946, 0.0], rtol=1e-5, atol=0)


@pytest.mark.parametrize(
    "options",
    [
        {"weight_decay": 0.3},
        {"prox_mu": 0.5},
        {"control_variates": True},
        {"momentum": 0.9, "weight_decay": 0.3},
        {"optimizer": "adam", "weight_decay": 0.3, "prox_mu": 0.5},
        {"normalized": True, "prox_mu": 0.5, "weight_decay": 0.3},
    ],
    ids=["decay", "prox", "scaffold", "momentum", "adam", "fednova"],
)
def test_non_trainable_entries_never_move(options: dict[str, Any]) -> None:
    work = local(model=ConstantSlope(), steps=3, **options)
    start = np.array([0.5, -1.0, 7.0], dtype=np.float32)
    c = np.array([0.1, 0.2, 3.0], dtype=np.float32)
    result, new_state = train(
        work, start, x=INDEX_X, y=INDEX_Y, extras={CONTROL: c}, state={CONTROL: ZERO}
    )
    assert result.update[2] == 0.0
    assert np.all(result.update[:2] != 0.0)
    if options.get("control_variates"):
        assert new_state[CONTROL][2] == 0.0
        assert result.extras[CONTROL][2] == 0.0


def test_epochs_count_steps_as_ceil_n_over_batch_size() -> None:
    model = ConstantSlope()
    work = LocalSGD(model, lr=0.1, epochs=3, batch_size=2)
    assert work.num_steps(5) == 3 * 3
    assert work.num_steps(4) == 3 * 2
    x = np.arange(5, dtype=np.float32)[:, None]
    result, _ = work.train(Broadcast(0, ZERO, 7), x, np.zeros(5), {})
    assert result.metrics["local_steps"] == 9.0
    # Each epoch is a reshuffled pass over every example, its last batch the remainder.
    assert [len(b) for b in model.seen] == [2, 2, 1] * 3
    for epoch in range(3):
        batches = model.seen[3 * epoch : 3 * epoch + 3]
        assert sorted(i for b in batches for i in b) == [0, 1, 2, 3, 4]


def test_steps_may_stop_inside_an_epoch_and_run_past_it() -> None:
    model = ConstantSlope()
    work = LocalSGD(model, lr=0.1, epochs=None, steps=4, batch_size=3)
    assert work.num_steps(5) == 4
    x = np.arange(5, dtype=np.float32)[:, None]
    result, _ = work.train(Broadcast(0, ZERO, 7), x, np.zeros(5), {})
    assert result.metrics["local_steps"] == 4.0
    assert [len(b) for b in model.seen] == [3, 2, 3, 2]
    # 4 constant-gradient steps: -4 η g
    np.testing.assert_allclose(result.update, [-0.4, 0.8, 0.0], rtol=1e-6)


def test_the_same_seed_gives_the_same_update_and_another_seed_another() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 2)).astype(np.float32)
    y = rng.standard_normal(6).astype(np.float32)
    work = LocalSGD(MODEL, lr=0.1, epochs=2, batch_size=2)
    first, _ = train(work, x=x, y=y, seed=11)
    again, _ = train(work, x=x, y=y, seed=11)
    other, _ = train(work, x=x, y=y, seed=12)
    np.testing.assert_array_equal(first.update, again.update)
    assert not np.allclose(first.update, other.update)


def test_full_batch_training_ignores_the_seed() -> None:
    first, _ = train(local(), seed=1)
    other, _ = train(local(), seed=2)
    np.testing.assert_array_equal(first.update, other.update)


def test_steps_alone_or_neither_is_enough() -> None:
    assert LocalSGD(MODEL, lr=0.1, steps=3).num_steps(100) == 3
    default = LocalSGD(MODEL, lr=0.1, batch_size=10)
    assert default.epochs == 1
    assert default.num_steps(25) == 3


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"epochs": 2, "steps": 3}, "epochs"),
        ({"epochs": 0}, "epochs"),
        ({"epochs": None, "steps": 0}, "steps"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": 0.0}, "lr"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"momentum": 1.0}, "momentum"),
        ({"optimizer": "adam", "momentum": 0.9}, "momentum"),
        ({"control_variates": True, "momentum": 0.9}, "SCAFFOLD"),
        ({"control_variates": True, "optimizer": "adam"}, "SCAFFOLD"),
        ({"normalized": True, "optimizer": "adam"}, "FedNova"),
        ({"normalized": True, "momentum": 0.5, "prox_mu": 0.1}, "FedNova"),
        ({"prox_mu": -0.1}, "prox_mu"),
        ({"weight_decay": -0.1}, "weight_decay"),
    ],
)
def test_invalid_configurations_raise_value_error(options: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        LocalSGD(MODEL, **{"lr": 0.1, **options})


def test_a_client_without_examples_cannot_train() -> None:
    with pytest.raises(ValueError, match="no training examples"):
        train(local(), x=X[:0], y=Y[:0])


@pytest.mark.parametrize(
    "options",
    [
        {"weight_decay": 0.3},
        {"prox_mu": 0.5},
        {"control_variates": True},
        {"momentum": 0.9, "weight_decay": 0.3, "prox_mu": 0.5},
        {"optimizer": "adam", "weight_decay": 0.3, "prox_mu": 0.5},
    ],
    ids=["decay", "prox", "scaffold", "momentum", "adam"],
)
def test_non_trainable_entries_move_only_as_the_model_moves_them(options: dict[str, Any]) -> None:
    work = local(model=ConstantSlope(counting=True), steps=3, **options)
    start = np.array([0.5, -1.0, 7.0], dtype=np.float32)
    c = np.array([0.1, 0.2, 3.0], dtype=np.float32)
    result, new_state = train(
        work, start, x=INDEX_X, y=INDEX_Y, extras={CONTROL: c}, state={CONTROL: ZERO}
    )
    # Three forward passes, each adding 1; no optimizer, decay, prox or control term on top.
    assert result.update[2] == 3.0
    if options.get("control_variates"):
        assert new_state[CONTROL][2] == 0.0
        assert result.extras[CONTROL][2] == 0.0
