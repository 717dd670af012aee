"""Whole-vector checks and norms that allocate a block at a time, not a vector's length.

A model of ten million parameters is 38 MB of float32; ``np.isfinite(x)`` allocates a 10 MB mask
of it and ``x.astype(np.float64)`` a 76 MB copy. The server runs these on every reply and every
aggregate, so it computes them here a block of :data:`BLOCK` entries at a time, with the same
answers.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

BLOCK = 1 << 18
"""Entries handled at a time: temporaries stay at most 2 MB (float64) whatever the vector."""


def all_finite(values: npt.ArrayLike) -> bool:
    """Whether every entry of ``values`` is finite (no NaN, no infinity), as
    ``bool(np.all(np.isfinite(values)))`` says, without a mask of ``values``' length.

    A sum that is finite proves every entry finite (a NaN or an infinity makes the sum NaN or
    infinite); a sum that is not finite may only have overflowed, so the entries are then
    checked a block at a time.
    """
    array = np.asarray(values)
    if array.dtype.kind in "biu":  # booleans and integers are always finite
        return True
    flat = array.reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):
        if bool(np.isfinite(np.sum(flat))):
            return True
    return all(
        bool(np.isfinite(flat[start : start + BLOCK]).all())
        for start in range(0, flat.shape[0], BLOCK)
    )


def norm64(values: npt.ArrayLike) -> float:
    """The L2 norm of ``values`` computed in float64 (``np.linalg.norm(values.astype(float64))``
    to rounding), converting a block at a time."""
    flat = np.asarray(values).reshape(-1)
    total = 0.0
    for start in range(0, flat.shape[0], BLOCK):
        part = flat[start : start + BLOCK].astype(np.float64)
        total += float(np.dot(part, part))
    return math.sqrt(total)
