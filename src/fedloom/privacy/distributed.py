"""Distributed DP: the distributed discrete Gaussian (Kairouz, Liu and Steinke, *The Distributed
Discrete Gaussian Mechanism for Federated Learning with Secure Aggregation*, ICML 2021).

Each client clips its update to L2 norm ``c``, scales it by ``1/γ`` (``granularity``), rounds it
to integers with conditional randomized rounding (so the rounded norm is at most ``Δ₂``), adds
its own **share** of discrete Gaussian noise ``N_Z(0, σ²)`` per coordinate, and reduces the
result modulo ``m = 2^bits``. The sum of ``n ≥ min_clients`` shares carries noise of variance
``n σ² ≥ (z c / γ)²``: the whole cohort's noise is what protects each client, and no single
share is enough. The server half takes the sum modulo ``m``, maps it to ``[−m/2, m/2)``,
multiplies by ``γ`` and divides by the expected cohort size (DP-FedAvg's fixed denominator).

**Secure aggregation.** The client half's output is a vector of integers in ``[0, m)`` (held
exactly in float32, ``bits ≤ 24``), and the server half needs only their sum modulo
:attr:`DistributedGaussian.modulus`; the traits say so (``ring_bits``, ``sum_compatible``). Put
a secure sum of the same ring right after the stage
(``algorithm.with_privacy(ddg).with_stages(fedloom.secure_sum(clip, bits=ddg.bits))``): SecAgg+
carries the integers unchanged (no second clipping, weighting or quantizing), the engine aborts
the round before unmasking when fewer than ``min_clients`` inputs survive, and the server half
decodes the unmasked modular sum, so the server never sees a sum with less noise than the
guarantee assumes. With the plain :class:`fedloom.reducers.Sum` the server sees each client's
noisy, quantized update, which carries only ``1/√n`` of the noise: the guarantee then holds
against everyone who sees only the aggregate, **not** against the server.

Accounting: the theorem's bound is zCDP, ``ρ = ε²/2``; each round is a ``ZCDpEvent(ρ)`` composed
by dp-accounting's RDP accountant, with no amplification by sampling (dp-accounting has no
subsampled zCDP event), so the ε is conservative. Neighbouring populations add or remove one
client (fixed-size sampling: replace one, doubling both sensitivities).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedloom.core import validate
from fedloom.core.layout import Layout, Vector
from fedloom.privacy.accounting import DpEvent
from fedloom.privacy.discrete import (
    centered,
    conditional_round,
    ddg_rho,
    discrete_gaussian,
    rounding_bound,
)
from fedloom.privacy.sampling import Sampling
from fedloom.stages import StageState, StageTraits, clip_to_norm


@dataclass(frozen=True)
class DistributedGaussian:
    """The distributed discrete Gaussian; see the module docstring.

    ``noise_multiplier`` is ``z`` in the units of :class:`~fedloom.privacy.CentralGaussian`:
    the sum of ``min_clients`` shares has standard deviation ``z·clip``. ``granularity`` ``γ``
    defaults to ``clip / 2^(bits/2)``; ``beta`` is the conditional rounding's parameter.
    """

    clip: float
    noise_multiplier: float
    sampling: Sampling
    min_clients: int
    bits: int = 20
    granularity: float | None = None
    beta: float = math.exp(-0.5)
    name: str = "ddg"

    def __post_init__(self) -> None:
        validate.positive("clip", self.clip)
        if not isinstance(self.noise_multiplier, int | float) or self.noise_multiplier <= 0:
            raise ValueError(
                f"noise_multiplier must be a finite number > 0 when differential privacy is "
                f"requested, got {self.noise_multiplier!r}"
            )
        validate.positive("noise_multiplier", self.noise_multiplier)
        validate.positive_int("min_clients", self.min_clients)
        validate.positive_int("bits", self.bits, minimum=4)
        if self.bits > 24:
            raise ValueError(
                f"bits must be at most 24 (integers travel exactly in float32), got {self.bits}"
            )
        if self.granularity is not None:
            validate.positive("granularity", self.granularity)
        validate.in_range("beta", self.beta, 0.0, 1.0, high_open=True)
        if self.min_clients > self.sampling.expected_size * 4:
            raise ValueError(
                f"min_clients={self.min_clients} is far above the expected cohort of "
                f"{self.sampling.expected_size:g}; use at most the cohort size"
            )

    @property
    def traits(self) -> StageTraits:
        return StageTraits(
            needs_linear_reducer=True,
            needs_sum=True,
            private=True,
            sum_compatible=True,
            ring_bits=self.bits,
        )

    @property
    def modulus(self) -> int:
        """``m = 2^bits``: the secure sum must add the client outputs modulo this."""
        return int(2**self.bits)

    @property
    def gamma(self) -> float:
        """The quantization step ``γ``."""
        if self.granularity is not None:
            return self.granularity
        return self.clip / 2 ** (self.bits / 2)

    @property
    def share_sigma(self) -> float:
        """Each client's discrete Gaussian ``σ`` in integer units: ``z·c / (γ √min_clients)``."""
        return self.noise_multiplier * self.clip / (self.gamma * math.sqrt(self.min_clients))

    def l2_bound(self, dimension: int) -> float:
        """``Δ₂``: the L2 norm bound of one client's rounded, scaled update."""
        return rounding_bound(self.clip / self.gamma, dimension, self.beta)

    def rho(self, dimension: int) -> float:
        """zCDP ρ of one round (Kairouz et al. 2021, Theorem 1) for ``dimension`` coordinates."""
        factor = self.sampling.sensitivity_factor
        l2 = self.l2_bound(dimension)
        l1 = min(math.sqrt(dimension) * l2, l2**2)  # integer vectors: ‖v‖₁ ≤ ‖v‖₂²
        return ddg_rho(
            l2=factor * l2, l1=factor * l1, sigma=self.share_sigma,
            clients=self.min_clients, dimension=dimension,
        )  # fmt: skip

    def round_event(self, dimension: int | None = None) -> DpEvent:
        """One round as ``ZCDpEvent(ρ)`` (no amplification by sampling)."""
        import dp_accounting

        if dimension is None:
            raise ValueError("the distributed discrete Gaussian's ε depends on the dimension")
        return dp_accounting.ZCDpEvent(self.rho(dimension))

    def init(self, layout: Layout) -> StageState:
        return None

    def config(self, state: StageState) -> Mapping[str, float]:
        return {}

    def client(
        self, update: Vector, config: Mapping[str, float], rng: np.random.Generator
    ) -> tuple[Vector, dict[str, float]]:
        clipped, _ = clip_to_norm(update, self.clip)
        scaled = clipped.astype(np.float64) / self.gamma
        rounded = conditional_round(scaled, self.l2_bound(update.size), rng)
        noisy = rounded + discrete_gaussian(self.share_sigma, update.size, rng)
        return np.mod(noisy, self.modulus).astype(np.float32), {}

    def server(
        self, aggregate: Vector, state: StageState, client_metrics: Sequence[Mapping[str, float]]
    ) -> tuple[Vector, StageState, dict[str, float]]:
        total = centered(np.rint(aggregate.astype(np.float64)), self.modulus)
        mean = (total * self.gamma / self.sampling.expected_size).astype(np.float32)
        peak = float(np.max(np.abs(total))) / (self.modulus / 2) if total.size else 0.0
        metrics = {
            "noise_std": self.share_sigma * math.sqrt(len(client_metrics)) * self.gamma
            / self.sampling.expected_size,
            "modulus_use": peak,
        }  # fmt: skip
        return mean, state, metrics


def distributed_gaussian(
    *,
    clip: float,
    noise_multiplier: float,
    sampling: Sampling,
    min_clients: int,
    bits: int = 20,
    granularity: float | None = None,
) -> DistributedGaussian:
    """The distributed discrete Gaussian stage; see :class:`DistributedGaussian`."""
    return DistributedGaussian(clip, noise_multiplier, sampling, min_clients, bits, granularity)
