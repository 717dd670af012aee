"""Server halves of SCAFFOLD and FedNova, the algorithms that need more than a mean."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedloom.client.local_sgd import CONTROL, FEDNOVA_NORM
from fedloom.core.layout import Layout, Vector
from fedloom.core.messages import ClientResult


@dataclass(frozen=True)
class ScaffoldControl:
    """SCAFFOLD's server control variate (Karimireddy et al. 2020, Algorithm 1, line 17):
    ``c ← c + (1/N) Σ_{i∈S} Δc_i``, with N the population size."""

    def init(self, params: Vector) -> dict[str, Vector]:
        return {CONTROL: np.zeros_like(params, dtype=np.float32)}

    def expected_extras(self, size: int) -> dict[str, int]:
        return {CONTROL: size}

    @property
    def summed(self) -> tuple[str, ...]:
        return (CONTROL,)

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
        control = (extras[CONTROL] + sums[CONTROL] / population).astype(np.float32)
        return aggregate, {CONTROL: control}


@dataclass(frozen=True)
class FedNovaScale:
    """FedNova's server step (Wang et al. 2020, eq. 7 with the default τ_eff):
    clients send ``Δ_i / ‖a_i‖₁``, the reducer takes their example-weighted mean, and this
    multiplies it by ``τ_eff = Σ p_i ‖a_i‖₁`` with ``p_i = n_i / Σ n``. Non-trainable entries
    (running statistics) are averaged plainly: they are not SGD steps."""

    def init(self, params: Vector) -> dict[str, Vector]:
        return {}

    def expected_extras(self, size: int) -> dict[str, int]:
        return {FEDNOVA_NORM: 1}

    @property
    def summed(self) -> tuple[str, ...]:
        return ()  # one number a client, weighted by its example count: kept with the result

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
        weights = np.array([r.num_examples for r in results], dtype=np.float64)
        norms = np.array([float(r.extras[FEDNOVA_NORM][0]) for r in results])
        tau_eff = float(weights @ norms / weights.sum())
        # Only SGD steps were normalized on the clients; running statistics were not.
        scale = np.where(layout.trainable_mask, np.float32(tau_eff), np.float32(1))
        return (aggregate * scale).astype(np.float32), {}
