"""An algorithm is a value: client work, update stages, a reducer, a server optimizer.

It holds no state and no transport, so the same value runs in one process, in the simulator and
over gRPC. The engine drives it; :class:`ClientProgram` is the part that runs on a client.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import numpy.typing as npt

from fedloom.client.work import Array, ClientWork
from fedloom.compression.codec import Codec
from fedloom.compression.stage import Compress
from fedloom.core.layout import Layout, Vector
from fedloom.core.messages import Broadcast, ClientResult, ClientState
from fedloom.optimizers import SGD, Optimizer
from fedloom.reducers import Reducer, Sum, WeightedMean
from fedloom.stages import Encoding, Stage, check_pipeline


class ServerCorrection(Protocol):
    """Server-side algorithm state beyond the model (SCAFFOLD's ``c``, FedNova's rescaling).

    ``init`` returns the named vectors broadcast with the model every round; ``apply`` turns the
    reduced update and the cohort's results into the final update and the next vectors.
    """

    def init(self, params: Vector) -> dict[str, Vector]: ...

    def expected_extras(self, size: int) -> dict[str, int]:
        """Names and lengths of the extra vectors every client result must carry."""
        ...

    @property
    def summed(self) -> tuple[str, ...]:
        """The extras ``apply`` needs only as their sum over the accepted results: the engine
        adds each into a float64 total as its reply arrives and drops it from the result, so a
        round holds one such vector, not one per client (SCAFFOLD's ``Δc``)."""
        ...

    def apply(
        self,
        aggregate: Vector,
        results: Sequence[ClientResult],
        extras: Mapping[str, Vector],
        *,
        sums: Mapping[str, npt.NDArray[np.float64]],
        population: int,
        layout: Layout,
    ) -> tuple[Vector, dict[str, Vector]]:
        """``sums``: each of :attr:`summed`'s extras summed over ``results`` (which no longer
        carry them)."""
        ...


@dataclass(frozen=True)
class ClientProgram:
    """What runs on a client each round: local work, then the client halves of the stages."""

    work: ClientWork
    stages: tuple[Stage, ...] = ()

    def run(
        self, broadcast: Broadcast, x: Array, y: Array, state: ClientState
    ) -> tuple[ClientResult, ClientState]:
        result, state = self.work.train(broadcast, x, y, state)
        return self.finish(broadcast, result, state)

    def finish(
        self, broadcast: Broadcast, result: ClientResult, state: ClientState
    ) -> tuple[ClientResult, ClientState]:
        """``result`` through the client halves of the stages, in pipeline order, and the
        client's next ``state`` (a codec stage's error-feedback residual lives there, under
        ``"stages.<name>."``). A last stage that encodes (:class:`~fedloom.stages.Encoding`) turns
        the update into the result's ``payload``."""
        if not self.stages:
            return result, state
        # The stages draw from their own stream so adding one never shifts training's randomness.
        rng = np.random.default_rng([broadcast.seed, 1])
        update = result.update
        metrics = dict(result.metrics)
        payload: bytes | None = None
        for position, stage in enumerate(self.stages):
            config = broadcast.stage_config.get(stage.name, {})
            if isinstance(stage, Encoding):
                prefix = f"stages.{stage.name}."
                kept = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
                payload, memory, stage_metrics = stage.encode(update, config, rng, kept)
                state = {k: v for k, v in state.items() if not k.startswith(prefix)} | {
                    prefix + k: v for k, v in memory.items()
                }
                if position < len(self.stages) - 1:
                    update, payload = stage.decode(payload, len(update)), None
            else:
                update, stage_metrics = stage.client(update, config, rng)
            metrics.update({f"{stage.name}.{k}": v for k, v in stage_metrics.items()})
        if payload is not None:
            update = np.empty(0, dtype=np.float32)
        return replace(result, update=update, metrics=metrics, payload=payload), state

    def evaluate(self, params: Vector, x: Array, y: Array) -> dict[str, float]:
        """The model's metrics on ``(x, y)``."""
        return self.work.model.evaluate(params, x, y)


@dataclass(frozen=True)
class Algorithm:
    """A federated algorithm, assembled from parts; build one with a recipe such as ``fedavg``."""

    name: str
    work: ClientWork
    server_optimizer: Optimizer = field(default_factory=SGD)
    reducer: Reducer = field(default_factory=WeightedMean)
    stages: tuple[Stage, ...] = ()
    correction: ServerCorrection | None = None
    broadcast: Codec | None = None
    """How the server sends the model each round (:mod:`fedloom.compression`); None: float32."""
    broadcast_window: int | None = None
    """Set for a delta broadcast: how many rounds of links the server keeps, so a client that
    held a model at most this many rounds ago is sent the changes since (docs/compression.md)."""

    def __post_init__(self) -> None:
        check_pipeline(self.stages, self.reducer)
        if self.broadcast_window is not None:
            _check_delta(self.broadcast, self.broadcast_window)

    @property
    def client(self) -> ClientProgram:
        """The client-side program of this algorithm."""
        return ClientProgram(self.work, self.stages)

    def with_stages(self, *stages: Stage) -> Algorithm:
        """This algorithm with ``stages`` appended to its pipeline (in data order)."""
        return replace(self, stages=self.stages + tuple(stages))

    def with_broadcast(
        self, codec: Codec | Compress | None, *, delta_window: int | None = None
    ) -> Algorithm:
        """This algorithm with the model broadcast through ``codec`` (None: as float32), such as
        ``fl.compression.float16()``; every client of a round starts from its decoding.

        With ``delta_window`` the codec encodes each round's change of a public model the server
        keeps (error fed back into the next change), and a client that received one of the last
        ``delta_window`` rounds' models is sent only the changes since (docs/compression.md)."""
        if isinstance(codec, Compress):
            if codec.error_feedback:
                raise ValueError(
                    f"broadcast codec {codec.name!r} has error_feedback=True, which applies to "
                    "client updates only; pass it without error feedback"
                )
            codec = codec.codec
        return replace(self, broadcast=codec, broadcast_window=delta_window)

    def with_privacy(self, stage: Stage) -> Algorithm:
        """This algorithm with a differential-privacy stage (:mod:`fedloom.privacy`) first in
        its pipeline and the plain sum as its reducer: its client half clips the raw update
        before any other stage, and its server half turns the (noised) sum into the average."""
        return replace(self, reducer=Sum(), stages=(stage, *self.stages))

    def with_reducer(self, reducer: Reducer) -> Algorithm:
        """This algorithm with another reducer, checked against its stages."""
        return replace(self, reducer=reducer)

    def with_server_optimizer(self, optimizer: Optimizer) -> Algorithm:
        """This algorithm with another server optimizer."""
        return replace(self, server_optimizer=optimizer)


def _check_delta(codec: Codec | None, window: object) -> None:
    """Raise ValueError unless a delta broadcast with ``window`` can run with these parts."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(
            f"delta_window must be an integer >= 1 (rounds of changes the server keeps), "
            f"got {window!r}"
        )
    if codec is None:
        raise ValueError(
            "a delta broadcast needs a codec for its changes, such as "
            "fl.compression.uniform(8) or fl.compression.float32() (lossless)"
        )
