"""Small module recipes that pickle by reference, to pass as ``TorchModel(make_model=...)``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from torch import nn


@dataclass(frozen=True)
class MLP:
    """A recipe for ``Linear → ReLU → … → Linear``; calling it builds a fresh module.

    A frozen dataclass rather than a closure, so that it prints, compares and pickles.
    """

    in_features: int
    hidden: tuple[int, ...]
    out_features: int

    def __post_init__(self) -> None:
        _check_width("in_features", self.in_features)
        _check_width("out_features", self.out_features)
        object.__setattr__(self, "hidden", _widths(self.hidden))

    def __call__(self) -> nn.Sequential:
        widths = (self.in_features, *self.hidden, self.out_features)
        layers: list[nn.Module] = []
        for fan_in, fan_out in pairwise(widths):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        return nn.Sequential(*layers[:-1])


def mlp(in_features: int, hidden: Sequence[int], out_features: int) -> MLP:
    """A picklable ``make_model`` for a multilayer perceptron with ReLU between layers.

    ``mlp(64, [32], 10)`` builds ``Linear(64, 32), ReLU(), Linear(32, 10)``; ``hidden=[]`` gives
    a single linear layer (multinomial logistic regression).
    """
    return MLP(in_features=in_features, hidden=_widths(hidden), out_features=out_features)


def _widths(hidden: object) -> tuple[int, ...]:
    if isinstance(hidden, str | bytes) or not isinstance(hidden, Sequence):
        raise ValueError(
            f"hidden must be a sequence of positive integers (layer widths), got {hidden!r}"
        )
    for width in hidden:
        _check_width("hidden", width)
    return tuple(hidden)


def _check_width(argument: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{argument} must hold positive integers, got {value!r}")
