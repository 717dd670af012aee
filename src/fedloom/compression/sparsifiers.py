"""Sparsifiers: send ``k`` of a vector's ``n`` entries.

Top-k keeps the ``k`` entries of largest magnitude: biased, and each client picks its own
positions, so it cannot be summed before decoding (or sit before secure aggregation); with error
feedback it converges at the rate of uncompressed SGD (Stich, Cordonnier, Jaggi, *Sparsified SGD
with Memory*, NeurIPS 2018). Random-k keeps ``k`` entries at positions drawn from a seed that
travels in the header, one from each of ``k`` equal strata; scaled by the stratum's size (``n/k``)
it is unbiased (Stich et al. 2018, section 2, with stratified rather than uniform positions).

A payload holds the sorted positions (2 bytes each when ``n ≤ 65536``, else 4) and the values
(float32, or float16 for half the bytes); random-k sends its seed instead of positions.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedloom.compression.casts import FLOAT16_MAX
from fedloom.compression.codec import CodecTraits, as_vector
from fedloom.compression.wire import (
    Envelope,
    PayloadError,
    expect_body,
    expect_entries,
    open_envelope,
    seal,
    unpack_params,
)
from fedloom.core import validate
from fedloom.core.layout import Vector

_TOP_K = struct.Struct("<QB")
_RANDOM_K = struct.Struct("<QBQ?")
_VALUE_DTYPES = {"float32": "<f4", "float16": "<f2"}


@dataclass(frozen=True)
class _Selection:
    """How many entries a sparsifier keeps: exactly one of ``k`` or ``fraction``."""

    k: int | None = None
    fraction: float | None = None
    values: str = "float32"

    def _validate(self) -> None:
        if (self.k is None) == (self.fraction is None):
            raise ValueError(
                f"give exactly one of k (an entry count) or fraction (of the vector), "
                f"got k={self.k!r}, fraction={self.fraction!r}"
            )
        if self.k is not None:
            validate.positive_int("k", self.k)
        if self.fraction is not None:
            validate.in_range("fraction", self.fraction, 0.0, 1.0, low_open=True)
        validate.one_of("values", self.values, _VALUE_DTYPES)

    def count(self, entries: int) -> int:
        """The entries kept of a vector of ``entries``; ValueError if k is larger than it."""
        if self.k is not None:
            if self.k > entries:
                raise ValueError(
                    f"k={self.k} is larger than the vector ({entries} entries); "
                    f"choose k ≤ {entries}, or a fraction"
                )
            return self.k
        assert self.fraction is not None
        return min(entries, max(1, round(self.fraction * entries))) if entries else 0

    def check(self, entries: int) -> None:
        self.count(entries)

    def _value_bytes(self, values: Vector) -> bytes:
        if self.values == "float16" and float(np.abs(values).max(initial=0.0)) > FLOAT16_MAX:
            raise ValueError(f"values='float16' holds magnitudes up to {FLOAT16_MAX:g}")
        return values.astype(_VALUE_DTYPES[self.values]).tobytes()


@dataclass(frozen=True)
class TopK(_Selection):
    """The ``k`` (or ``fraction·n``) largest-magnitude entries and their positions."""

    def __post_init__(self) -> None:
        self._validate()

    @property
    def kind(self) -> str:
        return "top_k"

    @property
    def traits(self) -> CodecTraits:
        return CodecTraits(unbiased=False, summable=False)

    def encode(self, vector: Vector, rng: np.random.Generator) -> bytes:
        values = as_vector(vector, self.kind)
        n = values.shape[0]
        k = self.count(n)
        if k == n:
            positions = np.arange(n, dtype=np.int64)
        else:
            positions = np.sort(np.argpartition(np.abs(values), n - k)[n - k :])
        width = _index_width(n)
        params = _TOP_K.pack(k, _value_code(self.values))
        body = positions.astype(f"<u{width}").tobytes() + self._value_bytes(values[positions])
        return seal(self.kind, n, params, body)

    def decode(self, payload: bytes, entries: int | None = None) -> Vector:
        envelope = open_envelope(payload, self.kind)
        expect_entries(envelope, entries)
        k, value_code = unpack_params(_TOP_K, envelope)
        assert isinstance(k, int) and isinstance(value_code, int)
        n = envelope.entries
        dtype = _value_dtype(value_code)
        if k > n:
            raise PayloadError(f"top_k payload header has k={k}, more than its {n} entries")
        width = _index_width(n)
        expect_body(envelope, k * (width + np.dtype(dtype).itemsize))
        positions = np.frombuffer(envelope.body[: k * width], dtype=f"<u{width}").astype(np.int64)
        if k and (positions[-1] >= n or (np.diff(positions) <= 0).any()):
            raise PayloadError("top_k payload positions are not increasing and below its length")
        return _scatter(envelope, n, positions, k * width, dtype, 1.0)


@dataclass(frozen=True)
class RandomK(_Selection):
    """``k`` (or ``fraction·n``) entries at seeded random positions, one per stratum of about
    ``n/k`` entries; times the stratum's size when ``unbiased``."""

    unbiased: bool = True

    def __post_init__(self) -> None:
        self._validate()

    @property
    def kind(self) -> str:
        return "random_k"

    @property
    def traits(self) -> CodecTraits:
        return CodecTraits(unbiased=self.unbiased, summable=False)

    def encode(self, vector: Vector, rng: np.random.Generator) -> bytes:
        values = as_vector(vector, self.kind)
        n = values.shape[0]
        k = self.count(n)
        seed = int(rng.integers(0, 2**63))
        positions, strata = random_positions(n, k, seed)
        kept = values[positions]
        if self.unbiased and k:
            kept = kept * strata.astype(np.float32)
        params = _RANDOM_K.pack(k, _value_code(self.values), seed, self.unbiased)
        return seal(self.kind, n, params, self._value_bytes(kept))

    def decode(self, payload: bytes, entries: int | None = None) -> Vector:
        envelope = open_envelope(payload, self.kind)
        expect_entries(envelope, entries)
        k, value_code, seed, _ = unpack_params(_RANDOM_K, envelope)
        assert isinstance(k, int) and isinstance(value_code, int) and isinstance(seed, int)
        n = envelope.entries
        dtype = _value_dtype(value_code)
        if k > n:
            raise PayloadError(f"random_k payload header has k={k}, more than its {n} entries")
        expect_body(envelope, k * np.dtype(dtype).itemsize)
        return _scatter(envelope, n, random_positions(n, k, seed)[0], 0, dtype, 1.0)


def random_positions(
    n: int, k: int, seed: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """``k`` sorted positions below ``n`` drawn from ``seed``, one uniformly from each of ``k``
    consecutive strata of ``⌊n/k⌋`` or ``⌈n/k⌉`` entries, and each stratum's size.

    An entry is kept with probability one over its stratum's size, so scaling a kept value by
    that size makes the decoding unbiased; drawing ``k`` integers costs far less than choosing
    ``k`` of ``n`` without replacement.
    """
    bounds = np.arange(k + 1, dtype=np.int64) * n // max(k, 1)
    strata = np.diff(bounds)
    positions = np.random.default_rng(seed).integers(bounds[:-1], bounds[1:])
    return positions.astype(np.int64), strata


def _scatter(
    envelope: Envelope,
    n: int,
    positions: npt.NDArray[np.int64],
    start: int,
    dtype: str,
    scale: float,
) -> Vector:
    out = np.zeros(n, dtype=np.float32)
    out[positions] = np.frombuffer(envelope.body[start:], dtype=dtype).astype(np.float32) * scale
    if not np.isfinite(out).all():
        raise PayloadError(f"{envelope.codec} payload holds NaN or infinite values")
    return out


def _index_width(n: int) -> int:
    return 2 if n <= 2**16 else 4


def _value_code(values: str) -> int:
    return list(_VALUE_DTYPES).index(values)


def _value_dtype(code: int) -> str:
    names = list(_VALUE_DTYPES.values())
    if not 0 <= code < len(names):
        raise PayloadError(f"payload header has value type {code}; accepted: 0 (float32), 1 (f16)")
    return names[code]
