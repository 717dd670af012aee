"""The secure sum as an update stage: what a user adds to an algorithm's pipeline.

``algorithm.with_stages(secure_sum(clip=…))`` makes the engine run every round through the
SecAgg+ protocol (:mod:`fedloom.engine.secure_rounds`): clients clip, weight and quantize their
updates into the ring, mask them, and the server learns only the sum of the survivors' inputs.
The stage itself carries the configuration; its client half passes the update on unchanged to
the protocol, and its server half refuses to run outside the protocol, so a secure algorithm can
never fall back to plain aggregation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedloom.core import validate
from fedloom.core.layout import Layout, Vector
from fedloom.secagg.graph import choose_parameters
from fedloom.secagg.messages import Setup
from fedloom.secagg.quantize import scale_for
from fedloom.stages import StageState, StageTraits


@dataclass(frozen=True)
class SecureSum:
    """SecAgg+ (Bell et al., "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead",
    CCS 2020; Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving Machine
    Learning", CCS 2017, on the complete graph).

    ``clip``: L2 bound each update is clipped to before quantization. ``bits``: the ring is
    Z_(2^bits), 8 <= bits <= 32. ``max_weight``: example counts are capped at this weight (so
    that no sum overflows). ``dropout_rate`` and ``corrupt_fraction``: the largest fractions of
    the cohort that may drop out and that may collude with the server; with ``privacy_bits`` and
    ``correctness_bits`` they fix the neighbour graph and the threshold (see
    :func:`fedloom.secagg.graph.choose_parameters`). Cohorts up to ``complete_up_to`` clients use
    the complete graph.
    """

    clip: float
    bits: int = 32
    max_weight: int = 1000
    dropout_rate: float = 0.1
    corrupt_fraction: float = 0.1
    privacy_bits: float = 40.0
    correctness_bits: float = 20.0
    complete_up_to: int = 50
    name: str = "secure_sum"

    def __post_init__(self) -> None:
        validate.positive("clip", self.clip)
        if (
            isinstance(self.bits, bool)
            or not isinstance(self.bits, int)
            or not 8 <= self.bits <= 32
        ):
            raise ValueError(f"bits must be an integer in [8, 32], got {self.bits!r}")
        validate.positive_int("max_weight", self.max_weight)
        validate.in_range("dropout_rate", self.dropout_rate, 0.0, 1.0, high_open=True)
        validate.in_range("corrupt_fraction", self.corrupt_fraction, 0.0, 1.0, high_open=True)
        validate.positive("privacy_bits", self.privacy_bits)
        validate.positive("correctness_bits", self.correctness_bits)
        validate.positive_int("complete_up_to", self.complete_up_to, minimum=0)

    @property
    def traits(self) -> StageTraits:
        return StageTraits(needs_linear_reducer=True, secure_sum=True, ring_bits=self.bits)

    def init(self, layout: Layout) -> StageState:
        return None

    def config(self, state: StageState) -> Mapping[str, float]:
        return {}

    def client(
        self, update: Vector, config: Mapping[str, float], rng: np.random.Generator
    ) -> tuple[Vector, dict[str, float]]:
        """The update, unchanged: clipping, quantizing and masking happen in the protocol."""
        return update, {}

    def server(
        self, aggregate: Vector, state: StageState, client_metrics: Sequence[Mapping[str, float]]
    ) -> tuple[Vector, StageState, dict[str, float]]:
        raise RuntimeError(
            f"stage {self.name!r} runs only inside the engine's secure aggregation rounds "
            "(fedloom.engine.secure_rounds); a round without them would not be secure"
        )

    def setup(
        self, round_: int, cohort: Sequence[int], *, dims: int, weighted: bool, ring: bool = False
    ) -> Setup:
        """The public parameters of a round over ``cohort`` (distinct client ids).

        ``ring``: the inputs already are integers in ``[0, 2^bits)`` (a stage with
        ``StageTraits.ring_bits`` in front, such as the distributed discrete Gaussian), so the
        protocol carries them unchanged: scale 1, every client weighing one, and a clip bound
        of ``√dims · 2^bits``, above the norm of any vector in the ring, so that clipping never
        acts (finite, as every transport's setup check demands); ``clip`` and ``max_weight`` of
        this stage are unused."""
        members = tuple(sorted(int(c) for c in cohort))
        if len(set(members)) != len(members):
            raise ValueError("a secure aggregation cohort must list each client once")
        graph = choose_parameters(
            len(members),
            dropout_rate=self.dropout_rate,
            corrupt_fraction=self.corrupt_fraction,
            privacy_bits=self.privacy_bits,
            correctness_bits=self.correctness_bits,
            complete_up_to=self.complete_up_to,
        )
        if ring:
            if weighted:
                raise ValueError("ring integers are summed unweighted; weighted must be False")
            return Setup(
                round=round_,
                cohort=members,
                degree=graph.degree,
                threshold=graph.threshold,
                bits=self.bits,
                scale=1.0,
                clip=math.sqrt(dims) * float(1 << self.bits),
                max_weight=1,
                weighted=False,
                dims=dims,
            )
        max_weight = self.max_weight if weighted else 1
        scale = scale_for(
            clients=len(members), clip=self.clip, max_weight=max_weight, bits=self.bits
        )
        return Setup(
            round=round_,
            cohort=members,
            degree=graph.degree,
            threshold=graph.threshold,
            bits=self.bits,
            scale=scale,
            clip=self.clip,
            max_weight=max_weight,
            weighted=weighted,
            dims=dims,
        )


def secure_sum(
    clip: float,
    *,
    bits: int = 32,
    max_weight: int = 1000,
    dropout_rate: float = 0.1,
    corrupt_fraction: float = 0.1,
) -> SecureSum:
    """A stage that sums the cohort's updates with SecAgg+, so the server sees only the sum."""
    return SecureSum(
        clip=clip,
        bits=bits,
        max_weight=max_weight,
        dropout_rate=dropout_rate,
        corrupt_fraction=corrupt_fraction,
    )
