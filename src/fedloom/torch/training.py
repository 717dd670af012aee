"""``local_sgd`` for PyTorch models: fedloom's local training loop around a :class:`TorchModel`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from torch import nn

from fedloom.client.local_sgd import LocalSGD
from fedloom.torch.model import TorchModel


def local_sgd(
    make_model: Callable[[], nn.Module],
    *,
    lr: float,
    epochs: int | None = None,
    steps: int | None = None,
    batch_size: int = 32,
    optimizer: Literal["sgd", "adam"] = "sgd",
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    loss: str = "cross_entropy",
) -> LocalSGD:
    """Client work that trains ``make_model()`` with minibatch SGD (or Adam) on each client.

    ``make_model`` builds the module (a picklable callable such as :func:`fedloom.torch.mlp`, so
    the same value can later be sent to worker processes); ``loss`` is ``"cross_entropy"``,
    ``"bce_with_logits"`` or ``"mse"``. Set ``epochs`` or ``steps``, not both; with neither,
    one epoch.
    """
    return LocalSGD(
        TorchModel(make_model, loss=loss),
        lr=lr,
        epochs=epochs,
        steps=steps,
        batch_size=batch_size,
        optimizer=optimizer,
        momentum=momentum,
        weight_decay=weight_decay,
    )
