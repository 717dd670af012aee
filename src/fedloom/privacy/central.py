"""Central user-level DP: DP-FedAvg with a fixed or an adaptive clipping bound.

DP-FedAvg (McMahan, Ramage, Talwar and Zhang, *Learning Differentially Private Recurrent
Language Models*, ICLR 2018): every client clips its update to L2 norm ``C`` on the client; the
server adds Gaussian noise with standard deviation ``z·C`` to the **sum** of the clipped updates
and divides by the **expected** cohort size (``q·N`` under Poisson sampling, ``m`` for a fixed
cohort), the paper's fixed-denominator estimator. Dividing by the expected size instead of the
actual count keeps the sensitivity of the released average at ``C / (q·N)``.

The stage therefore needs the reducer to hand it the plain sum ``Σ uᵢ``: it declares
``needs_sum`` and the pipeline refuses any other reducer (``algorithm.with_privacy(stage)``
puts the stage first and sets :class:`fedloom.reducers.Sum`). Weighting clients by their example
counts would make the sensitivity unbounded, so every client weighs the same.

Adaptive clipping (Andrew, Thakkar, McMahan and Ramaswamy, *Differentially Private Learning with
Adaptive Clipping*, NeurIPS 2021): each client also reports ``bᵢ − ½`` where
``bᵢ = 1[‖Δᵢ‖ ≤ C]``; the server releases ``b̄ = (Σ(bᵢ − ½) + N(0, σ_b²)) / E[m] + ½`` and
updates the bound geometrically, ``C ← C · exp(−η_C (b̄ − γ))``: when fewer than the target
quantile ``γ`` of updates are unclipped, ``b̄ < γ`` and the bound rises. The noise is split so
the round as a whole is a Gaussian mechanism with multiplier ``z``:
``z_Δ = (z⁻² − (2σ_b)⁻²)^(−½)`` on the update and ``2σ_b`` on the count (whose sensitivity is ½).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedloom.core import validate
from fedloom.core.layout import Layout, Vector
from fedloom.privacy.accounting import DpEvent, sampled_gaussian
from fedloom.privacy.sampling import Sampling
from fedloom.stages import StageState, StageTraits, clip_to_norm

_UNCLIPPED = "unclipped"


@dataclass(frozen=True)
class AdaptiveClipping:
    """Andrew et al. (2021)'s quantile tracking: target quantile ``γ`` (``target_quantile``),
    learning rate ``η_C`` (``learning_rate``) and the count's noise ``σ_b`` (``count_stddev``,
    in clients; the paper suggests ``E[m] / 20``)."""

    target_quantile: float = 0.5
    learning_rate: float = 0.2
    count_stddev: float = 0.0

    def __post_init__(self) -> None:
        validate.in_range("target_quantile", self.target_quantile, 0.0, 1.0)
        validate.positive("learning_rate", self.learning_rate)
        validate.non_negative("count_stddev", self.count_stddev)


@dataclass(frozen=True)
class CentralGaussian:
    """DP-FedAvg's clip on the client and Gaussian noise on the server's sum.

    ``clip`` is the L2 bound (the initial one with ``adaptive``), ``noise_multiplier`` the ``z``
    of the whole round, ``sampling`` the cohort sampling the engine performs (the accountant and
    the fixed denominator both come from it). ``seed`` makes the server's noise reproducible
    (tests, research); leave it ``None`` in any real use, so each round draws fresh entropy from
    the operating system and nothing that could regenerate the noise is stored.
    """

    clip: float
    noise_multiplier: float
    sampling: Sampling
    adaptive: AdaptiveClipping | None = None
    seed: int | None = None
    name: str = "dp"

    def __post_init__(self) -> None:
        validate.positive("clip", self.clip)
        if not isinstance(self.noise_multiplier, int | float) or self.noise_multiplier <= 0:
            raise ValueError(
                f"noise_multiplier must be a finite number > 0 when differential privacy is "
                f"requested, got {self.noise_multiplier!r} (0 would add no noise: drop the "
                "privacy stage instead, and no ε can be claimed)"
            )
        validate.positive("noise_multiplier", self.noise_multiplier)
        if self.seed is not None:
            validate.positive_int("seed", self.seed, minimum=0)
        adaptive = self.adaptive
        if adaptive is not None and 0 < 2 * adaptive.count_stddev <= self.noise_multiplier:
            raise ValueError(
                f"adaptive clipping's count_stddev={adaptive.count_stddev} leaves no noise "
                f"budget for the update: 2·count_stddev must exceed noise_multiplier="
                f"{self.noise_multiplier} (Andrew et al. 2021 split z between the two); "
                f"use count_stddev > {self.noise_multiplier / 2:g}"
            )

    @property
    def traits(self) -> StageTraits:
        return StageTraits(
            needs_linear_reducer=True, needs_sum=True, private=True, private_client_metrics=True
        )

    @property
    def update_noise_multiplier(self) -> float:
        """``z_Δ``: the noise multiplier on the update sum after the count takes its share."""
        if self.adaptive is None or self.adaptive.count_stddev == 0:
            return self.noise_multiplier
        z, count = self.noise_multiplier, 2 * self.adaptive.count_stddev
        return float((z**-2 - count**-2) ** -0.5)

    def round_event(self, dimension: int | None = None) -> DpEvent:
        """One round as a ``dp_accounting`` event, matching :attr:`sampling` (whatever the
        update's ``dimension``)."""
        if self.adaptive is None:
            return sampled_gaussian(self.sampling, self.noise_multiplier)
        if self.adaptive.count_stddev == 0:
            raise ValueError(
                "adaptive clipping without count noise (count_stddev=0) releases the clipped "
                "count exactly, so no ε can be claimed; set count_stddev > 0"
            )
        return sampled_gaussian(
            self.sampling, self.update_noise_multiplier, 2 * self.adaptive.count_stddev
        )

    def init(self, layout: Layout) -> StageState:
        return {"clip": float(self.clip), "round": 0}

    def config(self, state: StageState) -> Mapping[str, float]:
        return {"clip": float(state["clip"])}

    def client(
        self, update: Vector, config: Mapping[str, float], rng: np.random.Generator
    ) -> tuple[Vector, dict[str, float]]:
        bound = float(config.get("clip", self.clip))
        clipped, norm = clip_to_norm(update, bound)
        metrics = {}
        if self.adaptive is not None:
            metrics[_UNCLIPPED] = (1.0 if norm <= bound else 0.0) - 0.5
        return clipped, metrics

    def server(
        self, aggregate: Vector, state: StageState, client_metrics: Sequence[Mapping[str, float]]
    ) -> tuple[Vector, StageState, dict[str, float]]:
        bound = float(state["clip"])
        round_ = int(state["round"])
        rng = np.random.default_rng(None if self.seed is None else [self.seed, round_])
        expected = self.sampling.expected_size
        std = self.update_noise_multiplier * bound
        noisy = aggregate.astype(np.float64) + rng.normal(0.0, std, size=aggregate.shape)
        mean = (noisy / expected).astype(np.float32)
        metrics = {"clip": bound, "noise_std": std / expected}
        next_bound = bound
        if self.adaptive is not None:
            count = sum(m.get(_UNCLIPPED, 0.0) for m in client_metrics)
            noisy_count = count + rng.normal(0.0, self.adaptive.count_stddev)
            fraction = noisy_count / expected + 0.5
            next_bound = adapt_clip(bound, fraction, self.adaptive)
            metrics["unclipped_fraction"] = fraction
        return mean, {"clip": next_bound, "round": round_ + 1}, metrics


def adapt_clip(bound: float, unclipped_fraction: float, adaptive: AdaptiveClipping) -> float:
    """Andrew et al. (2021), geometric update: ``C · exp(−η_C (b̄ − γ))``."""
    return bound * math.exp(
        -adaptive.learning_rate * (unclipped_fraction - adaptive.target_quantile)
    )


def central_gaussian(
    *,
    clip: float,
    noise_multiplier: float,
    sampling: Sampling,
    adaptive: AdaptiveClipping | None = None,
    seed: int | None = None,
) -> CentralGaussian:
    """DP-FedAvg's stage; see :class:`CentralGaussian`."""
    return CentralGaussian(clip, noise_multiplier, sampling, adaptive, seed)
