"""Clipping and fixed-point quantization of updates into the ring Z_(2^bits), and back.

A client sends ``[q(w · clip(u)), w]``: its update clipped to L2 norm ``clip``, multiplied by its
weight ``w`` (its example count, capped at ``max_weight``; 1 for an unweighted mean), scaled by
``scale`` and stochastically rounded to an integer, followed by the integer weight. Sums of these
vectors mod 2^bits are exact as long as the true sum stays inside ``(-2^(bits-1), 2^(bits-1))``;
:func:`scale_for` picks the largest scale for which no cohort of ``clients`` can leave that range,
so the server's decoded sum is ``Σ wᵢ uᵢ`` within ``clients / scale`` per entry, and ``Σ wᵢ``
exactly. Stochastic rounding keeps the quantized sum unbiased (Bonawitz et al. 2017, §2 and §7
use the same fixed-point encoding into Z_R).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fedloom.core.layout import Vector
from fedloom.secagg.primitives import RingVector


def scale_for(*, clients: int, clip: float, max_weight: int, bits: int) -> float:
    """The largest scale at which a sum over ``clients`` cannot overflow the signed ring."""
    half = (1 << (bits - 1)) - 1
    if clients * max_weight > half:
        raise ValueError(
            f"{clients} clients of weight up to max_weight={max_weight} overflow a 2^{bits} "
            f"ring; lower max_weight or raise bits (at most 32)"
        )
    # One more unit per client covers stochastic rounding up.
    scale = (half - clients) / (clients * max_weight * clip)
    if scale < 1.0:
        raise ValueError(
            f"a 2^{bits} ring leaves less than one quantization level per unit for {clients} "
            f"clients with clip={clip} and max_weight={max_weight}; raise bits or lower clip"
        )
    return scale


def encode(
    update: Vector, weight: int, *, clip: float, scale: float, bits: int, rng: np.random.Generator
) -> RingVector:
    """``[q(weight · clip(update)), weight]`` as ring elements (see the module docstring);
    ValueError for an update with NaN or infinity, which has no place in a ring."""
    values = update.astype(np.float64)  # a copy: everything below works on it in place
    norm = float(np.linalg.norm(values))
    # A NaN or an infinity makes the norm non-finite; so may finite entries whose squares
    # overflow, which are fine (clipping scales them to zero), hence the closer look.
    if not np.isfinite(norm) and not np.all(np.isfinite(values)):
        raise ValueError("the update contains NaN or infinity")
    if norm > clip:
        values *= clip / norm
    values *= weight * scale
    rounded = np.floor(values)
    values -= rounded  # the fractional parts, each the chance of rounding up
    rounded += rng.random(values.shape) < values
    out = np.empty(values.size + 1, dtype=np.uint32)
    # int64 to uint32 keeps the low 32 bits: two's complement is already the ring Z_2^32.
    np.copyto(out[:-1], rounded.astype(np.int64).ravel(), casting="unsafe")
    out[-1] = weight & ((1 << bits) - 1)
    if bits < 32:
        out &= np.uint32((1 << bits) - 1)
    return out


def to_signed(total: RingVector, bits: int) -> npt.NDArray[np.int64]:
    """Ring elements as integers in ``[-2^(bits-1), 2^(bits-1))``."""
    values = total.astype(np.int64) & ((1 << bits) - 1)
    return np.where(values >= (1 << (bits - 1)), values - (1 << bits), values)


def decode(total: RingVector, *, scale: float, bits: int) -> tuple[npt.NDArray[np.float64], int]:
    """``(Σ wᵢ uᵢ, Σ wᵢ)`` from the ring sum of :func:`encode`'s vectors."""
    signed = to_signed(total, bits)
    weight = int(signed[-1])
    return signed[:-1].astype(np.float64) / scale, weight
