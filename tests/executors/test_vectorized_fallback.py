"""What the vectorized executor cannot batch runs in process, with the reason on record."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import numpy as np
import pytest
from torch import nn

import fedloom as fl
from fedloom.core.layout import Vector
from fedloom.data import FederatedData
from fedloom.executors.vectorized import VectorizedExecutor
from fedloom.torch import TorchModel, local_sgd, mlp


@pytest.fixture(scope="module")
def data() -> FederatedData:
    return fl.data.digits().split(fl.data.dirichlet(0.5), clients=6, seed=0)


def batch_norm_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10))


def batch_statistics_mlp() -> nn.Module:
    """BatchNorm normalizing with each batch's own statistics: padding would change them."""
    return nn.Sequential(
        nn.Linear(64, 16), nn.BatchNorm1d(16, track_running_stats=False), nn.Linear(16, 10)
    )


def dropout_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 16), nn.Dropout(0.5), nn.ReLU(), nn.Linear(16, 10))


def local(make_model: Callable[[], nn.Module]) -> fl.LocalSGD:
    return local_sgd(make_model, lr=0.1, epochs=1, batch_size=16)


def test_batch_norm_running_statistics_fall_back_with_the_same_results(
    data: FederatedData, caplog: pytest.LogCaptureFixture
) -> None:
    algorithm = fl.fedavg(local(batch_norm_mlp))
    with caplog.at_level(logging.WARNING, logger="fedloom.executors.vectorized"):
        executor = VectorizedExecutor(algorithm.client, data.clients)
    assert executor.vectorized is False
    assert executor.fallback_reason is not None
    assert "1.running_mean" in executor.fallback_reason
    assert "BatchNorm" in executor.fallback_reason
    assert executor.fallback_reason in caplog.text
    expected = fl.simulate(algorithm, data, rounds=2, cohort=6, seed=0)
    got = fl.simulate(algorithm, data, rounds=2, cohort=6, seed=0, executor=executor)
    np.testing.assert_array_equal(got.params, expected.params)
    assert got.metric("train_loss") == expected.metric("train_loss")


def test_strict_raises_with_the_reason(data: FederatedData) -> None:
    algorithm = fl.fedavg(local(batch_norm_mlp))
    with pytest.raises(ValueError, match=r"cannot vectorize .*running_mean.*BatchNorm"):
        VectorizedExecutor(algorithm.client, data.clients, strict=True)


def test_a_module_that_mixes_examples_is_caught_by_the_trial_step(data: FederatedData) -> None:
    executor = VectorizedExecutor(fl.fedavg(local(batch_statistics_mlp)).client, data.clients)
    assert executor.vectorized is False
    assert executor.fallback_reason is not None
    assert "differ from TorchModel.loss_and_grad" in executor.fallback_reason


def test_dropout_falls_back(data: FederatedData) -> None:
    with pytest.raises(ValueError, match="random"):
        VectorizedExecutor(fl.fedavg(local(dropout_mlp)).client, data.clients, strict=True)


def gradient_step(
    params: Vector, x: np.ndarray, y: np.ndarray, seed: int
) -> tuple[Vector, Mapping[str, float]]:
    loss, grad = MODEL.loss_and_grad(params, x, y)
    return params - np.float32(0.1) * grad, {"train_loss": loss}


MODEL = TorchModel(mlp(64, [16], 10))


def test_a_custom_training_function_falls_back(data: FederatedData) -> None:
    algorithm = fl.fedavg(fl.custom(MODEL, gradient_step))
    executor = VectorizedExecutor(algorithm.client, data.clients)
    assert executor.vectorized is False
    assert executor.fallback_reason is not None
    assert "FunctionWork" in executor.fallback_reason
    expected = fl.simulate(algorithm, data, rounds=2, cohort=6, seed=0)
    got = fl.simulate(algorithm, data, rounds=2, cohort=6, seed=0, executor=executor)
    np.testing.assert_array_equal(got.params, expected.params)


def test_a_numpy_model_falls_back(data: FederatedData) -> None:
    work = fl.LocalSGD(fl.SoftmaxRegression(features=64, classes=10), lr=0.1)
    executor = VectorizedExecutor(fl.fedavg(work).client, data.clients)
    assert (
        executor.fallback_reason
        == "the model is a SoftmaxRegression, not a fedloom.torch.TorchModel"
    )
