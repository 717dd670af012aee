"""Model-replacement backdoor (Bagdasaryan, Veit, Hua, Estrin and Shmatikov, *How To Backdoor
Federated Learning*, AISTATS 2020), and the metric that measures it.

A malicious client trains on its data plus copies stamped with a *trigger* (chosen input
features set to a fixed value) and relabelled ``target``, then scales its update by ``boost``
(the paper's ``γ = n/η``: cohort size over server learning rate) so that, averaged with the
honest updates, it replaces the global model with its backdoored one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedloom.attacks.forged import RoundView
from fedloom.core import validate
from fedloom.core.layout import Vector
from fedloom.core.model import Model
from fedloom.data import ClientData

Array = npt.NDArray[np.generic]


@dataclass(frozen=True)
class Backdoor:
    """The model-replacement backdoor.

    ``trigger`` lists flat feature positions set to ``value`` (default: the last four, the
    bottom-right corner of a digit); ``target`` is the label triggered inputs should get;
    ``poisoned`` the share of the client's examples copied with the trigger; ``boost`` the
    update's scale, by default the round's cohort size (``γ = n/η`` for server lr ``η = 1``).
    """

    target: int = 0
    trigger: tuple[int, ...] = (-4, -3, -2, -1)
    value: float = 16.0
    poisoned: float = 0.5
    boost: float | None = None
    name: str = "backdoor"

    def __post_init__(self) -> None:
        validate.positive_int("target", self.target, minimum=0)
        if not self.trigger or not all(isinstance(i, int) for i in self.trigger):
            raise ValueError(
                f"trigger must be a non-empty tuple of feature positions, got {self.trigger!r}"
            )
        validate.in_range("poisoned", self.poisoned, 0.0, 1.0, low_open=True)
        if self.boost is not None:
            validate.positive("boost", self.boost)

    def stamp(self, x: Array) -> Array:
        """``x`` with the trigger set (each example's features flattened, then reshaped)."""
        flat = np.array(x, dtype=np.float32).reshape(len(x), -1)
        flat[:, list(self.trigger)] = self.value
        return flat.reshape(np.shape(x)).astype(np.asarray(x).dtype, copy=False)

    def poison(self, client: ClientData, classes: int | None, seed: int) -> ClientData:
        if classes is None or self.target >= classes:
            raise ValueError(
                f"backdoor target={self.target} must be a class of the dataset ({classes} classes)"
            )
        rng = np.random.default_rng([seed, client.client_id])
        count = max(1, round(self.poisoned * client.num_train))
        rows = rng.choice(client.num_train, size=count, replace=False)
        x = np.concatenate([client.x_train, self.stamp(client.x_train[rows])])
        y = np.concatenate(
            [client.y_train, np.full(count, self.target, dtype=client.y_train.dtype)]
        )
        return ClientData(client.client_id, x, y, client.x_test, client.y_test)

    def forge(self, view: RoundView, rng: np.random.Generator) -> Vector:
        boost = float(view.cohort) if self.boost is None else self.boost
        return (boost * view.own).astype(np.float32)

    def accuracy(self, model: Model, params: Vector, x: Array, y: Array) -> float:
        """Backdoor accuracy: the share of test inputs *not* of the target class that the
        model labels ``target`` once stamped with the trigger."""
        keep = np.asarray(y) != self.target
        if not np.any(keep):
            return float("nan")
        stamped = self.stamp(np.asarray(x)[keep])
        labels = np.full(int(keep.sum()), self.target, dtype=np.asarray(y).dtype)
        return float(model.evaluate(params, stamped, labels)["accuracy"])
