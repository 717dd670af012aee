"""Integer building blocks of distributed DP: discrete Gaussian noise and conditional rounding.

From Canonne, Kamath and Steinke, *The Discrete Gaussian for Differential Privacy* (NeurIPS 2020)
and Kairouz, Liu and Steinke, *The Distributed Discrete Gaussian Mechanism for Federated
Learning with Secure Aggregation* (ICML 2021).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from fedloom.core import validate

Ints = npt.NDArray[np.int64]


def discrete_gaussian(sigma: float, size: int, rng: np.random.Generator) -> Ints:
    """``size`` draws of the discrete Gaussian ``N_Z(0, σ²)``, ``P(x) ∝ exp(−x² / 2σ²)``.

    Canonne et al. (2020), Algorithm 3: propose from the discrete Laplace with scale
    ``t = ⌊σ⌋ + 1`` (a difference of two geometric variables) and accept with probability
    ``exp(−(|y| − σ²/t)² / 2σ²)``. The acceptance test uses floating point, not the paper's exact
    arithmetic.
    """
    validate.positive("sigma", sigma)
    t = math.floor(sigma) + 1
    p = -math.expm1(-1.0 / t)
    out = np.empty(size, dtype=np.int64)
    todo = np.arange(size)
    while todo.size:
        k = todo.size
        y = rng.geometric(p, k).astype(np.int64) - rng.geometric(p, k).astype(np.int64)
        accept = rng.random(k) < np.exp(-((np.abs(y) - sigma**2 / t) ** 2) / (2 * sigma**2))
        out[todo[accept]] = y[accept]
        todo = todo[~accept]
    return out


def rounding_bound(scaled_clip: float, dimension: int, beta: float) -> float:
    """Kairouz et al. (2021)'s L2 bound on a conditionally rounded vector whose norm was at most
    ``scaled_clip`` before rounding: ``min(c + √d, √(c² + d/4 + √(2 ln(1/β)) · (c + √d/2)))``;
    ``beta = 0`` gives the unconditional ``c + √d``."""
    validate.positive("scaled_clip", scaled_clip)
    validate.positive_int("dimension", dimension)
    validate.in_range("beta", beta, 0.0, 1.0, high_open=True)
    plain = scaled_clip + math.sqrt(dimension)
    if beta == 0:
        return plain
    conditional = math.sqrt(
        scaled_clip**2
        + dimension / 4
        + math.sqrt(2 * math.log(1 / beta)) * (scaled_clip + math.sqrt(dimension) / 2)
    )
    return min(plain, conditional)


def conditional_round(
    x: npt.NDArray[np.float64], bound: float, rng: np.random.Generator, *, tries: int = 1000
) -> Ints:
    """Randomized rounding of ``x`` to integers (unbiased: ``⌊x⌋ + Bernoulli(x − ⌊x⌋)``),
    redrawn until the result's L2 norm is at most ``bound`` (Kairouz et al. 2021)."""
    floor = np.floor(x)
    frac = x - floor
    for _ in range(tries):
        rounded = (floor + (rng.random(x.shape) < frac)).astype(np.int64)
        if float(np.linalg.norm(rounded.astype(np.float64))) <= bound:
            return rounded
    raise ValueError(
        f"conditional rounding found no rounding of norm <= {bound:g} in {tries} tries; "
        "raise beta's bound (a smaller beta) or use a finer granularity"
    )


def centered(values: npt.NDArray[np.float64], modulus: int) -> npt.NDArray[np.float64]:
    """``values mod m`` as the representative in ``[−m/2, m/2)``."""
    half = modulus // 2
    return np.mod(values + half, modulus) - half


def ddg_rho(*, l2: float, l1: float, sigma: float, clients: int, dimension: int) -> float:
    """zCDP ρ of the sum of ``clients`` independent ``N_Z(0, σ²)^d`` shares added to a sum whose
    sensitivity is ``l2`` (L2) and ``l1`` (L1): Kairouz et al. (2021), Theorem 1, which gives
    ``½ε²``-concentrated DP with ``τ = 10 Σ_{k=1}^{n−1} exp(−2π²σ² k/(k+1))`` and
    ``ε = min(√(Δ₂²/(nσ²) + τd/2), Δ₁/(√n σ) + τ√d)``."""
    validate.positive("sigma", sigma)
    validate.positive_int("clients", clients)
    validate.positive_int("dimension", dimension)
    n = clients
    tau = 10 * sum(math.exp(-2 * math.pi**2 * sigma**2 * k / (k + 1)) for k in range(1, n))
    eps = min(
        math.sqrt(l2**2 / (n * sigma**2) + tau * dimension / 2),
        l1 / (math.sqrt(n) * sigma) + tau * math.sqrt(dimension),
    )
    return eps**2 / 2
