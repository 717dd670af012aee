"""A codec as an update stage, with optional error feedback.

The client half encodes the update into the codec's payload; when the stage ends the pipeline,
that payload is all the client sends, and the engine decodes it per client before reducing (so
codecs with per-client positions or scales work with any reducer). The server half passes the
aggregate through and reports the cohort's payload sizes and residual norms.

Error feedback keeps, on each client, what compression dropped and adds it to the next update
the client sends: ``target = update + residual``, ``send C(target)``,
``residual ← target − decode(C(target))`` (Stich, Cordonnier, Jaggi, *Sparsified SGD with
Memory*, NeurIPS 2018; Karimireddy, Rebjock, Stich, Jaggi, *Error Feedback Fixes SignSGD and other
Gradient Compression Schemes*, ICML 2019). Nothing is lost, only delayed, which is what makes
biased codecs (top-k, low-bit casts) converge. The residual lives in the client's kept state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedloom.compression.codec import Codec
from fedloom.core.layout import Layout, Vector
from fedloom.core.messages import ClientState
from fedloom.stages import StageState, StageTraits

RESIDUAL = "residual"
"""The key of error feedback's residual in the stage's part of a client's kept state."""


@dataclass(frozen=True)
class Compress:
    """Encode each client's update with ``codec``; ``error_feedback`` keeps the residual."""

    codec: Codec
    error_feedback: bool = False
    name: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.error_feedback, bool):
            raise ValueError(f"error_feedback must be true or false, got {self.error_feedback!r}")
        if not self.name:
            object.__setattr__(self, "name", self.codec.kind)

    @property
    def traits(self) -> StageTraits:
        # Decoded on the client when a secure sum follows: fine where clients share one grid.
        return StageTraits(sum_compatible=self.codec.traits.summable)

    def init(self, layout: Layout) -> StageState:
        try:
            self.codec.check(layout.size)
        except ValueError as error:
            raise ValueError(f"stage {self.name!r}: {error}") from None
        return None

    def config(self, state: StageState) -> Mapping[str, float]:
        return {}

    def client(
        self, update: Vector, config: Mapping[str, float], rng: np.random.Generator
    ) -> tuple[Vector, dict[str, float]]:
        """The update after a trip through the codec (no error feedback: that needs the
        client's kept state, which :meth:`encode` gets)."""
        payload, _, metrics = self.encode(update, config, rng, {})
        return self.decode(payload, len(update)), metrics

    def encode(
        self,
        update: Vector,
        config: Mapping[str, float],
        rng: np.random.Generator,
        memory: ClientState,
    ) -> tuple[bytes, ClientState, dict[str, float]]:
        target = np.asarray(update, dtype=np.float32)
        residual = memory.get(RESIDUAL) if self.error_feedback else None
        if residual is not None:
            if np.shape(residual) != target.shape:
                raise ValueError(
                    f"stage {self.name!r}: the kept residual has shape {np.shape(residual)}, "
                    f"the update {target.shape}"
                )
            target = target + residual
        try:
            payload = self.codec.encode(target, rng)
        except ValueError as error:
            raise ValueError(f"stage {self.name!r}: {error}") from None
        metrics = {"bytes": float(len(payload))}
        if not self.error_feedback:
            return payload, {}, metrics
        remainder = (target - self.codec.decode(payload, target.shape[0])).astype(np.float32)
        metrics["residual_norm"] = float(np.linalg.norm(remainder.astype(np.float64)))
        return payload, {RESIDUAL: remainder}, metrics

    def decode(self, payload: bytes, entries: int) -> Vector:
        return self.codec.decode(payload, entries)

    def server(
        self, aggregate: Vector, state: StageState, client_metrics: Sequence[Mapping[str, float]]
    ) -> tuple[Vector, StageState, dict[str, float]]:
        metrics: dict[str, float] = {}
        sizes = [m["bytes"] for m in client_metrics if "bytes" in m]
        if sizes:
            metrics["bytes_mean"] = float(np.mean(sizes))
            metrics["ratio"] = 4.0 * aggregate.shape[0] / metrics["bytes_mean"]
        norms = [m["residual_norm"] for m in client_metrics if "residual_norm" in m]
        if norms:
            metrics["residual_norm_mean"] = float(np.mean(norms))
        return aggregate, state, metrics
