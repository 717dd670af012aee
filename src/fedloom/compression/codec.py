"""What every codec is: an ``encode`` half that runs where a vector is sent and a ``decode`` half
that runs where it arrives, with traits that say how its errors behave."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from fedloom.core.layout import Vector


@dataclass(frozen=True)
class CodecTraits:
    """How a codec's output relates to its input.

    ``unbiased``: ``E[decode(encode(x))] = x`` over the codec's randomness (stochastic rounding,
    scaled random-k); a biased codec (top-k, casts that round to nearest) wants error feedback
    when its errors must not pile up. ``summable``: a sum of several clients' encodings decodes
    to the sum of their decodings, because every client shares the codec's scale and positions;
    only a summable codec can sit before secure aggregation, which reveals nothing but the sum
    (its stage is then ``StageTraits.sum_compatible``).
    """

    unbiased: bool
    summable: bool = False


class Codec(Protocol):
    """A vector's compact binary form: ``decode(encode(x, rng))`` approximates ``x``.

    ``encode`` raises ValueError for a vector the codec cannot take (k larger than it, values
    out of a format's range); ``decode`` raises :class:`~fedloom.compression.wire.PayloadError`
    for a payload that is truncated, corrupted, or was written by another codec, and never returns
    numbers the payload does not hold.
    """

    @property
    def kind(self) -> str:
        """The codec's name in payload headers and run files (``"qsgd"``)."""
        ...

    @property
    def traits(self) -> CodecTraits: ...

    def check(self, entries: int) -> None:
        """Raise ValueError unless the codec can encode vectors of ``entries`` values."""
        ...

    def encode(self, vector: Vector, rng: np.random.Generator) -> bytes: ...

    def decode(self, payload: bytes, entries: int | None = None) -> Vector:
        """The vector ``payload`` holds; ``entries``, when given, is the length it must have."""
        ...


def as_vector(vector: Vector, kind: str) -> Vector:
    """``vector`` as a finite 1-D float32 array, or ValueError naming the codec."""
    array = np.asarray(vector)
    if array.ndim != 1:
        raise ValueError(f"{kind} encodes 1-D vectors, got shape {array.shape}")
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise ValueError(f"{kind} cannot encode NaN or infinity")
    return array


def stochastic_codes(scaled: Vector, top: int, rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    """``min(floor(s + u), top)`` as ``uint8`` with ``u ~ U[0, 1)`` per entry, for ``s`` in
    ``[0, top]``: rounds each ``s`` down or up with probabilities that make the result's
    expectation ``s`` (unbiased stochastic rounding). ``scaled`` is overwritten."""
    scaled += np.asarray(rng.random(scaled.shape[0], dtype=np.float32))
    # Rounding can carry s + u past top (s = top + ε, or top + u rounding up to top + 1); clamp
    # before casting, which would wrap 256 to 0. Truncation is floor for the non-negative.
    np.minimum(scaled, np.float32(top), out=scaled)
    codes: npt.NDArray[np.uint8] = scaled.astype(np.uint8)
    return codes


def integer_in(name: str, value: int, low: int, high: int) -> int:
    """An integer (not a bool) in ``low..high``, or ValueError naming ``name`` and the range."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}, got {value!r}")
    return value
