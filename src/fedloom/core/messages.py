"""The typed messages of one round: what the server broadcasts and what a client sends back.

These are the only things that cross between server and client, in every place an algorithm
runs (one process, the simulator, gRPC). They hold flat vectors and numbers, never code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from fedloom.core.layout import Vector

ClientState = Mapping[str, Vector]
"""What a client keeps between the rounds it joins (SCAFFOLD's control variate, say).

It lives with the client: in a deployment on the client's machine, in simulation in the
executor's per-client store. An empty mapping before a client's first round.
"""

StageConfig = Mapping[str, Mapping[str, float]]
"""Per-round numbers each stage's client half needs from the server, keyed by stage name."""


@dataclass(frozen=True)
class Broadcast:
    """Sent to every client of a round's cohort.

    ``extras`` carries algorithm vectors besides the model (SCAFFOLD's server control variate);
    ``seed`` is this client's own seed for this round, derived by the engine from the run's seed,
    so a client's randomness never depends on which other clients were sampled.
    """

    round: int
    params: Vector
    seed: int
    extras: Mapping[str, Vector] = field(default_factory=dict)
    stage_config: StageConfig = field(default_factory=dict)
    max_steps: int | None = None
    """The most local steps this client may take this round (what fits before a deadline);
    None for no limit beyond the client work's own epochs or steps."""
    payload: bytes | None = None
    """``params`` as the algorithm's broadcast codec encoded them (None: sent as float32); a
    transport sends these bytes and the client decodes them into ``params``."""
    delta_from: int | None = None
    """Set when ``payload`` is a delta broadcast's chain (:mod:`fedloom.compression.chain`): the
    round whose public model the client holds, which the chain's links turn into ``params``."""


@dataclass(frozen=True)
class ClientResult:
    """A client's answer: its update (new minus old parameters), weight and measurements.

    ``extras`` holds further named vectors some algorithms return (SCAFFOLD's control-variate
    change, FedNova's normalizer as a length-1 vector).
    """

    update: Vector
    num_examples: int
    extras: Mapping[str, Vector] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    payload: bytes | None = None
    """The update as the pipeline's last stage encoded it (a codec), or None. When set, the
    update travels only as these bytes: ``update`` is empty and the server decodes the payload,
    per client, before reducing."""
