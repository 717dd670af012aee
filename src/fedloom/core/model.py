"""The contract between fedloom's training loop and a machine-learning framework.

A :class:`Model` is stateless: it computes with whatever flat parameter vector it is handed. The
PyTorch adapter (:mod:`fedloom.torch`) and the NumPy models (:mod:`fedloom.linear`) implement it,
and so can a user's own framework adapter. Everything above this layer (local SGD, FedProx,
SCAFFOLD, FedNova, evaluation) is written once against it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from fedloom.core.layout import Layout, Vector


@runtime_checkable
class Model(Protocol):
    """A differentiable model whose parameters live in one flat ``float32`` vector."""

    @property
    def layout(self) -> Layout:
        """Names and shapes of the tensors in the parameter vector."""
        ...

    def init(self, seed: int) -> Vector:
        """Fresh parameters, deterministic in ``seed``."""
        ...

    def loss_and_grad(
        self, params: Vector, x: npt.NDArray[np.generic], y: npt.NDArray[np.generic]
    ) -> tuple[float, Vector]:
        """Mean loss over the batch and its gradient with respect to ``params``.

        The gradient is zero on non-trainable entries. A model with running statistics (BatchNorm)
        writes their new values into the non-trainable entries of ``params`` in place, as the
        framework itself would during a training-mode forward pass.
        """
        ...

    def evaluate(
        self, params: Vector, x: npt.NDArray[np.generic], y: npt.NDArray[np.generic]
    ) -> dict[str, float]:
        """Metrics averaged over the examples: always ``loss``; ``accuracy`` for classifiers."""
        ...
