"""Plain PyTorch pieces shared by the framework-free loop and the Flower client: no fedloom here.

The same model, minibatch SGD loop and accuracy the two non-fedloom systems run, so that they
differ only in what surrounds the local training (nothing, or Flower and Ray).
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn
from torch.nn import functional


def one_thread() -> None:
    """Every system computes on one thread per process (the machine has two cores)."""
    torch.set_num_threads(1)


def mlp(in_features: int, hidden: tuple[int, ...], out_features: int) -> nn.Sequential:
    """``Linear → ReLU → … → Linear``, as ``fedloom.torch.mlp`` builds it."""
    widths = (in_features, *hidden, out_features)
    layers: list[nn.Module] = []
    for fan_in, fan_out in pairwise(widths):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def train_locally(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
) -> None:
    """``epochs`` passes of minibatch SGD, reshuffled every epoch; the last batch may be short."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        for lo in range(0, len(y), batch_size):
            batch = order[lo : lo + batch_size]
            optimizer.zero_grad()
            functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((model(x).argmax(dim=1) == y).float().mean())
