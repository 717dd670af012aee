"""Update stages: a cross-cutting concern with a client half and a server half.

On every client the halves run in pipeline order on the update (clip → noise → compress → mask);
the reducer combines the cohort; on the server the halves run in reverse on the aggregate
(unmask → decode → add central noise). A stage's configuration is a frozen dataclass, so it can be
printed, recorded and sent to a client; its server state is explicit: ``init`` makes it and
``server`` returns the next one.

:func:`check_pipeline` runs when an algorithm is built and refuses combinations that cannot work,
naming the stage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from fedloom.core import validate
from fedloom.core.layout import Layout, Vector
from fedloom.core.messages import ClientState
from fedloom.reducers import Reducer

StageState = Any
"""A stage's server state: whatever its ``init`` returns; ``None`` for stateless stages."""


@dataclass(frozen=True)
class StageTraits:
    """What a stage needs from the rest of the pipeline, checked at build time.

    ``needs_linear_reducer``: the server half only works on a (weighted) sum of client outputs,
    as secure aggregation and quantizers decoded after summation do.
    ``secure_sum``: the server sees only the sum of the client outputs (SecAgg+), so the stage
    must come last and every stage before it must be ``sum_compatible``.
    ``sum_compatible``: the server half needs only the sum of the client outputs, not each one
    (the identity, a linear decoder, central noise), so the stage may sit before a secure sum.
    """

    needs_linear_reducer: bool = False
    secure_sum: bool = False
    sum_compatible: bool = False
    needs_sum: bool = False
    """The server half needs the plain sum ``Σ uᵢ`` of the client outputs (every client weighing
    one), as differential privacy's noise calibration does; the reducer must say
    ``unweighted_sum`` (:class:`fedloom.reducers.Sum`, or a secure sum)."""
    private: bool = False
    """The stage adds noise for differential privacy and describes each round as a
    ``dp_accounting`` event (``round_event()``) and its cohort sampling (``sampling``); the
    engine accounts for it every round (:mod:`fedloom.privacy`)."""
    private_client_metrics: bool = False
    """The client half's measurements reach only this stage's server half, never the round's
    recorded metrics (they are about individual clients)."""
    ring_bits: int | None = None
    """The stage works on integers modulo ``2^ring_bits``. A secure sum says which ring it adds
    in. Any other stage says that its client half already outputs ring integers in
    ``[0, 2^ring_bits)`` whose server half needs only their unweighted sum modulo
    ``2^ring_bits`` (the distributed discrete Gaussian's shares): a secure sum right after it
    carries them unchanged, in the same ring, with no clipping, weighting or quantizing of its
    own."""


class Stage(Protocol):
    """One concern, split across client and server."""

    @property
    def name(self) -> str: ...

    @property
    def traits(self) -> StageTraits: ...

    def init(self, layout: Layout) -> StageState:
        """Server state before the first round."""
        ...

    def config(self, state: StageState) -> Mapping[str, float]:
        """Numbers the client half needs this round (an adaptive clipping bound, say)."""
        ...

    def client(
        self, update: Vector, config: Mapping[str, float], rng: np.random.Generator
    ) -> tuple[Vector, dict[str, float]]:
        """Client half: transform this client's update; return it and measurements."""
        ...

    def server(
        self, aggregate: Vector, state: StageState, client_metrics: Sequence[Mapping[str, float]]
    ) -> tuple[Vector, StageState, dict[str, float]]:
        """Server half: transform the reduced aggregate; ``client_metrics`` are the cohort's
        measurements from the client half, in cohort order."""
        ...


@runtime_checkable
class Encoding(Protocol):
    """A stage whose client half turns the update into bytes for the wire (a codec).

    :class:`~fedloom.algorithms.ClientProgram` calls ``encode`` instead of ``client`` for such a
    stage, with the stage's own part of the client's kept state (``memory``: error feedback's
    residual, say, keyed without the stage's prefix). When the stage is the last of the pipeline
    its payload is what the client sends (``ClientResult.payload``) and the engine decodes it per
    client, before the reducer; elsewhere in the pipeline the client decodes it at once and the
    next stage sees the decoded vector.
    """

    @property
    def name(self) -> str: ...

    def encode(
        self,
        update: Vector,
        config: Mapping[str, float],
        rng: np.random.Generator,
        memory: ClientState,
    ) -> tuple[bytes, ClientState, dict[str, float]]:
        """This client's update as bytes, its next memory, and measurements."""
        ...

    def decode(self, payload: bytes, entries: int) -> Vector:
        """The update of ``entries`` values that ``payload`` holds; ValueError if it is damaged."""
        ...


def clip_to_norm(update: Vector, bound: float) -> tuple[Vector, float]:
    """``u · min(1, bound / ‖u‖)`` as float32, and ``‖u‖``: the norm and the product in
    float64, so every clipping client stage (:class:`ClipByNorm`, central and distributed DP's
    client halves) gives the same bits for the same update."""
    norm = float(np.linalg.norm(update.astype(np.float64)))
    scale = min(1.0, bound / norm) if norm > 0 else 1.0
    clipped = (update.astype(np.float64) * scale).astype(np.float32)
    return clipped, norm


@dataclass(frozen=True)
class ClipByNorm:
    """Scale each client's update to L2 norm at most ``bound``: ``u · min(1, bound / ‖u‖)``.

    Reports each update's norm before clipping and the fraction of the cohort that was clipped.
    Clipping bounds a client's influence on the aggregate; it is the first stage of DP-FedAvg.
    """

    bound: float
    name: str = "clip"

    def __post_init__(self) -> None:
        validate.positive("bound", self.bound)

    @property
    def traits(self) -> StageTraits:
        return StageTraits(sum_compatible=True)

    def init(self, layout: Layout) -> StageState:
        return None

    def config(self, state: StageState) -> Mapping[str, float]:
        return {"bound": self.bound}

    def client(
        self, update: Vector, config: Mapping[str, float], rng: np.random.Generator
    ) -> tuple[Vector, dict[str, float]]:
        bound = config.get("bound", self.bound)
        clipped, norm = clip_to_norm(update, bound)
        return clipped, {"norm": norm, "clipped": float(norm > bound)}

    def server(
        self, aggregate: Vector, state: StageState, client_metrics: Sequence[Mapping[str, float]]
    ) -> tuple[Vector, StageState, dict[str, float]]:
        clipped = [m["clipped"] for m in client_metrics if "clipped" in m]
        norms = [m["norm"] for m in client_metrics if "norm" in m]
        metrics = {}
        if clipped:
            metrics = {
                "clipped_fraction": float(np.mean(clipped)),
                "median_norm": float(np.median(norms)),
            }
        return aggregate, state, metrics


def clip_by_norm(bound: float) -> ClipByNorm:
    """A stage that clips every client update to L2 norm ``bound``."""
    return ClipByNorm(bound=bound)


def check_pipeline(stages: Sequence[Stage], reducer: Reducer) -> None:
    """Refuse a pipeline whose stages cannot work together, naming the stage at fault."""
    names = [s.name for s in stages]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(
            f"stage names must be unique within a pipeline; repeated: {repeated}. "
            "Give the second instance its own name= argument."
        )
    for stage in stages:
        if stage.traits.needs_sum and not getattr(reducer, "unweighted_sum", False):
            raise ValueError(
                f"stage {stage.name!r} adds noise calibrated to the plain sum of clipped client "
                f"updates, but the reducer {type(reducer).__name__} does not return that sum; "
                "use fedloom.reducers.Sum() (algorithm.with_privacy(stage) sets it), and clip on "
                "the clients: clipping on the server gives no client-level guarantee"
            )
        if stage.traits.needs_linear_reducer and not reducer.linear:
            raise ValueError(
                f"stage {stage.name!r} can only be decoded from a (weighted) sum, but the reducer "
                f"{type(reducer).__name__} is not linear; use weighted_mean or mean, "
                "or drop the stage"
            )
    for position, stage in enumerate(stages):
        if not stage.traits.secure_sum:
            continue
        if position != len(stages) - 1:
            raise ValueError(
                f"stage {stages[position + 1].name!r} comes after the secure sum {stage.name!r}, "
                "but nothing can act on masked values; put the secure sum last"
            )
        _check_ring_input(stages[:position], stage, reducer)
        for earlier in stages[:position]:
            if not earlier.traits.sum_compatible:
                raise ValueError(
                    f"stage {earlier.name!r} cannot run before the secure sum {stage.name!r}: "
                    "its server half needs each client's output, and the server sees only "
                    "their sum (a non-linear codec, say); remove it, or use one whose decoder "
                    "is linear"
                )


def _check_ring_input(earlier: Sequence[Stage], secure: Stage, reducer: Reducer) -> None:
    """Refuse ring-integer stages (``ring_bits``) that the secure sum ``secure`` cannot carry
    unchanged: not directly before it, in another ring, or behind a weighted reducer."""
    for position, stage in enumerate(earlier):
        bits = stage.traits.ring_bits
        if bits is None:
            continue
        if position != len(earlier) - 1:
            raise ValueError(
                f"stage {stage.name!r} outputs integers mod 2^{bits} for the secure sum "
                f"{secure.name!r}, but stage {earlier[position + 1].name!r} comes between them "
                f"and would change them; put {stage.name!r} directly before {secure.name!r}"
            )
        if secure.traits.ring_bits != bits:
            raise ValueError(
                f"stage {stage.name!r} outputs integers mod 2^{bits}, but the secure sum "
                f"{secure.name!r} adds modulo 2^{secure.traits.ring_bits}; give "
                f"{secure.name!r} bits={bits} so that it adds in the same ring"
            )
        if not getattr(reducer, "unweighted_sum", False):
            raise ValueError(
                f"stage {stage.name!r} outputs integers mod 2^{bits} that the secure sum "
                f"{secure.name!r} must add unweighted, but the reducer {type(reducer).__name__} "
                "would weight them; use fedloom.reducers.Sum() (algorithm.with_privacy(stage) "
                "sets it)"
            )
