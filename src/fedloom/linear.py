"""Linear models in plain NumPy that implement :class:`~fedloom.core.model.Model`.

They need no framework, so the whole training core runs and is tested with NumPy alone, and they
are the right model for tabular data of modest dimension. Parameters are ``weight [features,
outputs]`` and ``bias [outputs]``; the loss is the mean over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from fedloom.core import validate
from fedloom.core.layout import Field, Layout, Vector

Array = npt.NDArray[np.generic]


@dataclass(frozen=True)
class SoftmaxRegression:
    """Multinomial logistic regression: ``p = softmax(x W + b)``, cross-entropy loss."""

    features: int
    classes: int
    init_scale: float = 0.01

    def __post_init__(self) -> None:
        validate.positive_int("features", self.features)
        validate.positive_int("classes", self.classes, minimum=2)
        validate.non_negative("init_scale", self.init_scale)

    @cached_property
    def layout(self) -> Layout:
        return Layout(
            (Field("weight", (self.features, self.classes)), Field("bias", (self.classes,)))
        )

    def init(self, seed: int) -> Vector:
        rng = np.random.default_rng(seed)
        return (rng.standard_normal(self.layout.size) * self.init_scale).astype(np.float32)

    def _probabilities(self, params: Vector, x: Array) -> npt.NDArray[np.float64]:
        named = self.layout.unflatten(params)
        logits = _features(x, self.features) @ named["weight"].astype(np.float64) + named["bias"]
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return np.asarray(exp / exp.sum(axis=1, keepdims=True), dtype=np.float64)

    def loss_and_grad(self, params: Vector, x: Array, y: Array) -> tuple[float, Vector]:
        xs = _features(x, self.features)
        labels = _labels(y, self.classes)
        probs = self._probabilities(params, xs)
        n = len(labels)
        loss = -np.log(np.clip(probs[np.arange(n), labels], 1e-12, None)).mean()
        residual = probs
        residual[np.arange(n), labels] -= 1.0
        residual /= n
        grad = {"weight": xs.T @ residual, "bias": residual.sum(axis=0)}
        return float(loss), self.layout.flatten(grad)

    def evaluate(self, params: Vector, x: Array, y: Array) -> dict[str, float]:
        labels = _labels(y, self.classes)
        probs = self._probabilities(params, x)
        n = len(labels)
        loss = -np.log(np.clip(probs[np.arange(n), labels], 1e-12, None)).mean()
        return {"loss": float(loss), "accuracy": float((probs.argmax(axis=1) == labels).mean())}


@dataclass(frozen=True)
class LinearRegression:
    """``ŷ = x w + b`` with mean squared error ``mean((ŷ − y)²)``."""

    features: int
    init_scale: float = 0.0

    def __post_init__(self) -> None:
        validate.positive_int("features", self.features)
        validate.non_negative("init_scale", self.init_scale)

    @cached_property
    def layout(self) -> Layout:
        return Layout((Field("weight", (self.features,)), Field("bias", (1,))))

    def init(self, seed: int) -> Vector:
        rng = np.random.default_rng(seed)
        return (rng.standard_normal(self.layout.size) * self.init_scale).astype(np.float32)

    def _residual(self, params: Vector, x: Array, y: Array) -> npt.NDArray[np.float64]:
        named = self.layout.unflatten(params)
        xs = _features(x, self.features)
        pred = xs @ named["weight"].astype(np.float64) + float(named["bias"][0])
        return np.asarray(pred - np.asarray(y, dtype=np.float64).reshape(-1), dtype=np.float64)

    def loss_and_grad(self, params: Vector, x: Array, y: Array) -> tuple[float, Vector]:
        xs = _features(x, self.features)
        r = self._residual(params, xs, y)
        n = len(r)
        grad = {"weight": 2.0 * xs.T @ r / n, "bias": np.array([2.0 * r.mean()])}
        return float((r * r).mean()), self.layout.flatten(grad)

    def evaluate(self, params: Vector, x: Array, y: Array) -> dict[str, float]:
        r = self._residual(params, x, y)
        return {"loss": float((r * r).mean())}


def _features(x: Array, features: int) -> npt.NDArray[np.float64]:
    xs = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    if xs.shape[1] != features:
        raise ValueError(f"x has {xs.shape[1]} features per example, the model expects {features}")
    return xs


def _labels(y: Array, classes: int) -> npt.NDArray[np.int64]:
    labels = np.asarray(y).astype(np.int64).reshape(-1)
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"labels must lie in [0, {classes}), got [{labels.min()}, {labels.max()}]")
    return labels
