from __future__ import annotations

import dataclasses
import pickle
import threading
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fedloom.core.model import Model
from fedloom.torch import TorchModel, module_to_vector, vector_to_module

RNG = np.random.default_rng(0)
X = RNG.standard_normal((16, 4)).astype(np.float32)
LABELS = RNG.integers(0, 3, size=16)
TARGETS = RNG.standard_normal((16, 3)).astype(np.float32)


def small_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))


def with_batchnorm() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))


def with_frozen_bias() -> nn.Sequential:
    module = with_batchnorm()
    module[0].bias.requires_grad_(False)
    return module


def double_with_batchnorm() -> nn.Module:
    return with_batchnorm().double()


def linear_2x2() -> nn.Module:
    return nn.Linear(2, 2)


def linear_2x1() -> nn.Module:
    return nn.Linear(2, 1)


def not_a_module() -> object:
    return "oops"


def reference(
    make_model: Callable[[], nn.Module],
    params: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> tuple[float, np.ndarray, nn.Module]:
    """Plain PyTorch: load params, forward in train mode, backward, flatten the .grad fields."""
    module = make_model()
    vector_to_module(params, module)
    module.train()
    dtype = next(module.parameters()).dtype
    value = loss(module(torch.from_numpy(x).to(dtype)).float(), torch.from_numpy(y))
    torch.autograd.backward(value)
    grads = [
        (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float()
        for _, p in module.named_parameters()
    ]
    size = params.size - sum(g.numel() for g in grads)
    flat = torch.cat([*grads, torch.zeros(size)]).numpy()
    return value.item(), flat, module


def cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out, y)


def mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(out, y)


def test_implements_the_model_protocol() -> None:
    assert isinstance(TorchModel(small_mlp), Model)


@pytest.mark.parametrize(
    ("make_model", "loss", "y", "plain_loss"),
    [
        (small_mlp, "cross_entropy", LABELS, cross_entropy),
        (with_batchnorm, "cross_entropy", LABELS, cross_entropy),
        (with_frozen_bias, "cross_entropy", LABELS, cross_entropy),
        (double_with_batchnorm, "cross_entropy", LABELS, cross_entropy),
        (small_mlp, "mse", TARGETS, mse),
    ],
)
def test_loss_and_grad_match_plain_pytorch(
    make_model: Callable[[], nn.Module],
    loss: str,
    y: np.ndarray,
    plain_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> None:
    model = TorchModel(make_model, loss=loss)
    params = model.init(3)
    expected_loss, expected_grad, _ = reference(make_model, params, X, y, plain_loss)
    value, grad = model.loss_and_grad(params, X, y)
    assert grad.dtype == np.float32
    assert grad.shape == (model.layout.size,)
    assert value == pytest.approx(expected_loss, abs=1e-6)
    assert torch.allclose(torch.from_numpy(grad), torch.from_numpy(expected_grad), atol=1e-6)
    assert np.abs(grad[model.layout.trainable_mask]).sum() > 0
    assert np.all(grad[~model.layout.trainable_mask] == 0.0)


def test_frozen_parameter_gets_exactly_zero_gradient() -> None:
    model = TorchModel(with_frozen_bias)
    params = model.init(0)
    _, grad = model.loss_and_grad(params, X, LABELS)
    bias = model.layout.unflatten(grad)["0.bias"]
    assert not model.layout.fields[1].trainable
    assert np.all(bias == 0.0)


@pytest.mark.parametrize("make_model", [with_batchnorm, double_with_batchnorm])
def test_training_writes_running_statistics_into_params(
    make_model: Callable[[], nn.Module],
) -> None:
    model = TorchModel(make_model)
    params = model.init(0)
    before = params.copy()
    model.loss_and_grad(params, X, LABELS)
    _, _, plain = reference(make_model, before, X, LABELS, cross_entropy)
    after = model.layout.unflatten(params)
    for name in ("running_mean", "running_var"):
        expected = getattr(plain.get_submodule("1"), name).float()
        assert not np.allclose(model.layout.unflatten(before)[f"1.{name}"], after[f"1.{name}"])
        assert torch.allclose(torch.from_numpy(after[f"1.{name}"]), expected, atol=1e-6)
    # Everything else in params is untouched.
    mask = np.ones(model.layout.size, dtype=bool)
    start = model.layout.offsets[model.layout.names.index("1.running_mean")]
    stop = model.layout.offsets[model.layout.names.index("1.running_var") + 1]
    mask[start:stop] = False
    np.testing.assert_array_equal(params[mask], before[mask])


def test_params_that_cannot_take_running_statistics_are_refused() -> None:
    model = TorchModel(with_batchnorm)
    params = model.init(0)
    with pytest.raises(ValueError, match="writable, contiguous float32"):
        model.loss_and_grad(params.astype(np.float64), X, LABELS)
    params.flags.writeable = False
    with pytest.raises(ValueError, match="writable=False"):
        model.loss_and_grad(params, X, LABELS)


def test_read_only_params_are_fine_without_buffers() -> None:
    model = TorchModel(small_mlp)
    params = model.init(0)
    expected = model.loss_and_grad(params.copy(), X, LABELS)
    params.flags.writeable = False
    value, grad = model.loss_and_grad(params, X, LABELS)
    assert value == expected[0]
    np.testing.assert_array_equal(grad, expected[1])


def test_init_is_deterministic_in_the_seed_and_leaves_global_rng_alone() -> None:
    model = TorchModel(with_batchnorm)
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    first = model.init(7)
    assert torch.equal(torch.rand(3), expected_draw)
    np.testing.assert_array_equal(model.init(7), first)
    assert not np.array_equal(model.init(8), first)
    torch.manual_seed(7)
    np.testing.assert_array_equal(module_to_vector(with_batchnorm()), first)


def test_evaluate_hand_checked_cross_entropy() -> None:
    model = TorchModel(linear_2x2, eval_batch_size=3)
    params = np.array([1, 0, 0, 1, 0, 0], dtype=np.float32)  # identity weight, zero bias
    x = np.array([[2, 0], [0, 1], [3, 1], [0, 0.5]], dtype=np.float32)
    y = np.array([0, 1, 1, 1])  # predicted classes: 0, 1, 0, 1
    expected_loss = np.mean(np.log(np.exp(x).sum(axis=1)) - x[np.arange(4), y])
    metrics = model.evaluate(params, x, y)
    assert metrics == pytest.approx({"loss": expected_loss, "accuracy": 0.75}, abs=1e-6)
    assert all(type(v) is float for v in metrics.values())


def test_evaluate_hand_checked_binary() -> None:
    model = TorchModel(linear_2x1, loss="bce_with_logits")
    params = np.array([1, -1, 0], dtype=np.float32)  # logit = x0 - x1
    x = np.array([[2, 0], [0, 1], [3, 1]], dtype=np.float32)
    y = np.array([1.0, 1.0, 1.0], dtype=np.float32)
    logits = x[:, 0] - x[:, 1]
    expected_loss = np.mean(np.log1p(np.exp(-logits)))
    metrics = model.evaluate(params, x, y)
    assert metrics == pytest.approx({"loss": expected_loss, "accuracy": 2 / 3}, abs=1e-6)


def test_evaluate_mse_is_the_mean_over_all_outputs_in_any_batch_size() -> None:
    params = TorchModel(small_mlp, loss="mse").init(0)
    whole = TorchModel(small_mlp, loss="mse").evaluate(params, X, TARGETS)
    batched = TorchModel(small_mlp, loss="mse", eval_batch_size=5).evaluate(params, X, TARGETS)
    assert set(whole) == {"loss"}
    module = small_mlp()
    vector_to_module(params, module)
    with torch.no_grad():
        expected = float(((module(torch.from_numpy(X)) - torch.from_numpy(TARGETS)) ** 2).mean())
    assert whole["loss"] == pytest.approx(expected, abs=1e-6)
    assert batched["loss"] == pytest.approx(expected, abs=1e-6)


def test_evaluate_uses_running_statistics_and_changes_nothing() -> None:
    model = TorchModel(with_batchnorm, eval_batch_size=5)
    params = model.init(0)
    model.loss_and_grad(params, X, LABELS)
    before = params.copy()
    metrics = model.evaluate(params, X, LABELS)
    np.testing.assert_array_equal(params, before)
    module = with_batchnorm()
    vector_to_module(params, module)
    module.eval()
    with torch.no_grad():
        logits = module(torch.from_numpy(X))
    expected = F.cross_entropy(logits, torch.from_numpy(LABELS)).item()
    accuracy = (logits.argmax(dim=1).numpy() == LABELS).mean()
    assert metrics == pytest.approx({"loss": expected, "accuracy": accuracy}, abs=1e-6)


def test_pickles_its_configuration_only() -> None:
    model = TorchModel(with_batchnorm, loss="cross_entropy", eval_batch_size=7)
    params = model.init(0)
    expected = model.loss_and_grad(params.copy(), X, LABELS)
    restored = pickle.loads(pickle.dumps(model))
    assert restored == model
    assert "_runtime" not in restored.__dict__
    value, grad = restored.loss_and_grad(params.copy(), X, LABELS)
    assert value == expected[0]
    np.testing.assert_array_equal(grad, expected[1])
    assert dataclasses.asdict(model) == {
        "make_model": with_batchnorm,
        "loss": "cross_entropy",
        "eval_batch_size": 7,
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.loss = "mse"  # type: ignore[misc]


def test_threads_sharing_one_model_get_their_own_results() -> None:
    model = TorchModel(with_batchnorm)
    starts = [model.init(seed) for seed in range(8)]
    expected = [model.loss_and_grad(p.copy(), X, LABELS)[1] for p in starts]
    results: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        for _ in range(20):
            results[i] = model.loss_and_grad(starts[i].copy(), X, LABELS)[1]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(8):
        np.testing.assert_array_equal(results[i], expected[i])


def test_arguments_are_validated() -> None:
    with pytest.raises(ValueError, match=r"loss must be one of .*'hinge'"):
        TorchModel(small_mlp, loss="hinge")
    with pytest.raises(ValueError, match="eval_batch_size must be a positive integer, got 0"):
        TorchModel(small_mlp, eval_batch_size=0)
    with pytest.raises(ValueError, match="eval_batch_size"):
        TorchModel(small_mlp, eval_batch_size=True)
    with pytest.raises(TypeError, match="make_model must be a callable"):
        TorchModel(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"must return a torch\.nn\.Module, got str"):
        _ = TorchModel(not_a_module).layout  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"seed must be an integer.*-1"):
        TorchModel(small_mlp).init(-1)


def test_batches_are_validated() -> None:
    model = TorchModel(small_mlp)
    params = model.init(0)
    with pytest.raises(ValueError, match=r"integer class labels.*float32"):
        model.loss_and_grad(params, X, LABELS.astype(np.float32))
    with pytest.raises(ValueError, match=r"one label per example.*\(16, 4\).*\(15,\)"):
        model.loss_and_grad(params, X, LABELS[:15])
    with pytest.raises(ValueError, match="at least one example"):
        model.evaluate(params, X[:0], LABELS[:0])
    with pytest.raises(ValueError, match=r"params has shape \(3,\)"):
        model.loss_and_grad(params[:3], X, LABELS)
    regression = TorchModel(small_mlp, loss="mse")
    with pytest.raises(ValueError, match=r"shape of the module's output \(16, 3\).*\(16, 2\)"):
        regression.loss_and_grad(params, X, TARGETS[:, :2])
    binary = TorchModel(small_mlp, loss="bce_with_logits")
    with pytest.raises(ValueError, match=r"one output per example.*\(16, 3\)"):
        binary.loss_and_grad(params, X, LABELS.astype(np.float32))
