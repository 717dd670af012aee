"""What a client does with a broadcast: the :class:`ClientWork` contract, and user functions.

fedloom supplies the training loop (:class:`fedloom.client.LocalSGD`); a user with unusual
training code wraps their own function with :func:`custom` instead. Either way the result is a
:class:`~fedloom.core.messages.ClientResult` holding ``new - old``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from fedloom.core.layout import Vector
from fedloom.core.messages import Broadcast, ClientResult, ClientState
from fedloom.core.model import Model

Array = npt.NDArray[np.generic]


class ClientWork(Protocol):
    """Local work of one client in one round; also how the model is initialized and evaluated."""

    @property
    def model(self) -> Model: ...

    def train(
        self, broadcast: Broadcast, x: Array, y: Array, state: ClientState
    ) -> tuple[ClientResult, ClientState]:
        """Train on ``(x, y)`` from ``broadcast.params``; return the update and the new state."""
        ...


TrainFunction = Callable[[Vector, Array, Array, int], tuple[Vector, Mapping[str, float]]]
"""``(params, x, y, seed) → (new_params, metrics)``: a user's own local training."""


@dataclass(frozen=True)
class FunctionWork:
    """Client work from a user's function; see :func:`custom`."""

    model: Model
    fn: TrainFunction

    def train(
        self, broadcast: Broadcast, x: Array, y: Array, state: ClientState
    ) -> tuple[ClientResult, ClientState]:
        old = broadcast.params
        new, metrics = self.fn(old.copy(), x, y, broadcast.seed)
        new = self.model.layout.check(new, what="the training function's returned parameters")
        update = (new - old).astype(np.float32)
        return ClientResult(
            update, len(x), metrics={k: float(v) for k, v in metrics.items()}
        ), state


def custom(model: Model, fn: TrainFunction) -> FunctionWork:
    """Client work that calls ``fn(params, x, y, seed) → (new_params, metrics)``.

    ``fn`` receives its own copy of the broadcast parameters and a per-client, per-round seed; it
    may train any way it likes. FedProx, SCAFFOLD and FedNova need fedloom's own loop and refuse
    a custom function.
    """
    if not callable(fn):
        raise ValueError(f"fn must be callable as fn(params, x, y, seed), got {fn!r}")
    return FunctionWork(model=model, fn=fn)
