"""The hand-written MLP path must give the general vmap path's losses and gradients."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fedloom.executors._batched import BatchedModel
from fedloom.torch import TorchModel

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


class Stack:
    """A picklable make_model for an MLP with the given widths, activation and bias."""

    def __init__(self, widths: list[int], activation: str, bias: bool) -> None:
        self.widths, self.activation, self.bias = widths, activation, bias

    def __call__(self) -> nn.Module:
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(self.widths, self.widths[1:], strict=False)):
            if i:
                layers.append(ACTIVATIONS[self.activation]())
            layers.append(nn.Linear(a, b, bias=self.bias))
        return nn.Sequential(*layers)


@settings(max_examples=40, deadline=None)
@given(
    widths=st.lists(st.integers(1, 9), min_size=2, max_size=4),
    activation=st.sampled_from(sorted(ACTIVATIONS)),
    bias=st.booleans(),
    loss=st.sampled_from(["cross_entropy", "mse"]),
    clients=st.integers(1, 5),
    batch=st.integers(1, 6),
    seed=st.integers(0, 1000),
)
def test_dense_path_equals_vmap_and_autograd(
    widths: list[int],
    activation: str,
    bias: bool,
    loss: str,
    clients: int,
    batch: int,
    seed: int,
) -> None:
    if loss == "cross_entropy" and widths[-1] < 2:
        widths = [*widths[:-1], 2]
    model = BatchedModel(TorchModel(Stack(widths, activation, bias), loss=loss))
    assert model.dense is not None
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(clients, model.dense.size, generator=g)
    x = torch.randn(clients, batch, widths[0], generator=g)
    if loss == "cross_entropy":
        y = torch.randint(0, widths[-1], (clients, batch), generator=g)
    else:
        y = torch.randn(clients, batch, widths[-1], generator=g)
    mask = torch.rand(clients, batch, generator=g) < 0.6
    mask[:, 0] = True
    fast = model.loss_and_grad(theta, x, y, mask)
    general = model.general_loss_and_grad(theta, x, y, mask)
    torch.testing.assert_close(fast[0], general[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast[1], general[1], rtol=1e-4, atol=1e-5)


def frozen_first_layer() -> nn.Module:
    module = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    module[0].weight.requires_grad_(False)
    return module


def with_dropout() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.1), nn.Linear(4, 2))


def double_precision() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 2)).double()


class NotSequential(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.layer(x))


@pytest.mark.parametrize(
    ("make_model", "loss"),
    [
        (frozen_first_layer, "cross_entropy"),
        (with_dropout, "cross_entropy"),
        (double_precision, "cross_entropy"),
        (NotSequential, "cross_entropy"),
        (Stack([3, 1], "relu", True), "bce_with_logits"),
    ],
)
def test_other_modules_and_losses_take_the_general_path(make_model: object, loss: str) -> None:
    model = BatchedModel(TorchModel(make_model, loss=loss))  # type: ignore[arg-type]
    assert model.dense is None
