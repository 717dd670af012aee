"""What the server tells a site about training: plain values, never code.

A site builds its client program from a :class:`TrainingConfig` and the model it chose itself;
nothing in a config is imported, evaluated or unpickled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

Scalar = float | int | bool | str
"""An option value that can cross the wire: a number, an integer, a flag or a string."""


def check_scalars(what: str, options: Mapping[str, object]) -> dict[str, Scalar]:
    """``options`` if every value is a :data:`Scalar` (finite when a float), else a ValueError."""
    checked: dict[str, Scalar] = {}
    for key, value in options.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"{what}: option names must be non-empty strings, got {key!r}")
        if not isinstance(value, float | int | bool | str):
            raise ValueError(
                f"{what}: option {key!r} must be a number, integer, flag or string to cross "
                f"the wire, got {value!r} ({type(value).__name__})"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{what}: option {key!r} must be finite, got {value!r}")
        checked[key] = value
    return checked


@dataclass(frozen=True)
class StageOptions:
    """One update stage by kind (``clip``, …) and its keyword options."""

    kind: str
    options: Mapping[str, Scalar] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not self.kind:
            raise ValueError(f"stage kind must be a non-empty string, got {self.kind!r}")
        object.__setattr__(self, "options", check_scalars(f"stage {self.kind!r}", self.options))


@dataclass(frozen=True)
class TrainingConfig:
    """An experiment's ``[train]``, ``[algorithm]`` and ``[[stages]]`` settings, and the loss.

    ``train`` holds :class:`fedloom.LocalSGD`'s options (``lr``, ``epochs`` or ``steps``,
    ``batch_size``, ``optimizer``, ``momentum``, ``weight_decay``); ``loss`` names the PyTorch
    loss (``None`` for a model with its own, such as the NumPy ones).
    """

    algorithm: str
    train: Mapping[str, Scalar]
    algorithm_options: Mapping[str, Scalar] = field(default_factory=dict)
    stages: tuple[StageOptions, ...] = ()
    loss: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.algorithm, str) or not self.algorithm:
            raise ValueError(f"algorithm must be a recipe name, got {self.algorithm!r}")
        object.__setattr__(self, "train", check_scalars("train", self.train))
        options = check_scalars(f"algorithm {self.algorithm!r}", self.algorithm_options)
        object.__setattr__(self, "algorithm_options", options)
        object.__setattr__(self, "stages", tuple(self.stages))
