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


PRIVACY_FEATURE = "dp.central.v1"
"""The Hello feature of a site that runs the client half of central DP (:class:`PrivacyOptions`);
a run with privacy refuses sites without it."""


@dataclass(frozen=True)
class PrivacyOptions:
    """The client half of a run's differential privacy: central DP-FedAvg's clipping.

    ``clip`` is the initial L2 bound (each round's travels with the task); ``noise_multiplier``
    is the server's; the adaptive-clipping options, all three or none, make the site report
    whether its update was within the bound."""

    mechanism: str
    clip: float
    noise_multiplier: float
    target_quantile: float | None = None
    clip_learning_rate: float | None = None
    count_stddev: float | None = None

    def __post_init__(self) -> None:
        if self.mechanism != "gaussian":
            raise ValueError(
                f"privacy mechanism {self.mechanism!r} does not run at sites; accepted: 'gaussian'"
            )
        for name in ("clip", "noise_multiplier", *ADAPTIVE):
            value = getattr(self, name)
            if value is None and name in ADAPTIVE:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"privacy {name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0 or (value == 0 and name != "count_stddev"):
                raise ValueError(f"privacy {name} must be a finite number > 0, got {value!r}")
        given = [name for name in ADAPTIVE if getattr(self, name) is not None]
        if given and len(given) != len(ADAPTIVE):
            raise ValueError(f"adaptive clipping needs all of {', '.join(ADAPTIVE)}; got {given}")


ADAPTIVE = ("target_quantile", "clip_learning_rate", "count_stddev")


@dataclass(frozen=True)
class TrainingConfig:
    """An experiment's ``[train]``, ``[algorithm]``, ``[[stages]]`` and ``[privacy]`` settings,
    and the loss.

    ``train`` holds :class:`fedloom.LocalSGD`'s options (``lr``, ``epochs`` or ``steps``,
    ``batch_size``, ``optimizer``, ``momentum``, ``weight_decay``); ``loss`` names the PyTorch
    loss (``None`` for a model with its own, such as the NumPy ones).
    """

    algorithm: str
    train: Mapping[str, Scalar]
    algorithm_options: Mapping[str, Scalar] = field(default_factory=dict)
    stages: tuple[StageOptions, ...] = ()
    loss: str | None = None
    privacy: PrivacyOptions | None = None
    """Differential privacy's client half, run before the stages; None: no DP."""

    def __post_init__(self) -> None:
        if not isinstance(self.algorithm, str) or not self.algorithm:
            raise ValueError(f"algorithm must be a recipe name, got {self.algorithm!r}")
        object.__setattr__(self, "train", check_scalars("train", self.train))
        options = check_scalars(f"algorithm {self.algorithm!r}", self.algorithm_options)
        object.__setattr__(self, "algorithm_options", options)
        object.__setattr__(self, "stages", tuple(self.stages))
