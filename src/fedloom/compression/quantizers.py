"""Stochastic quantizers: uniform ``b``-bit quantization and QSGD, both unbiased.

Uniform quantization maps a vector onto ``2**b`` evenly spaced levels between its minimum and
maximum and rounds each entry up or down at random so that its expectation is the entry itself
(Suresh, Yu, Kumar, McMahan, *Distributed Mean Estimation with Limited Communication*, ICML 2017,
stochastic k-level quantization). QSGD sends each bucket's L2 norm and, per entry, a sign and a
level in ``0..s`` of ``|x| / norm``, again rounded stochastically (Alistarh, Grubic, Li, Tomioka,
Vojnovic, *QSGD: Communication-Efficient SGD via Gradient Quantization and Encoding*, NeurIPS 2017);
the signed levels are packed at a fixed width (see :func:`qsgd_bits`) rather than Elias-coded.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

from fedloom.compression._bits import (
    Codes,
    base_size,
    pack,
    pack_base,
    packed_size,
    per_byte,
    unpack,
    unpack_base,
)
from fedloom.compression.codec import CodecTraits, as_vector, integer_in, stochastic_codes
from fedloom.compression.wire import (
    PayloadError,
    expect_body,
    expect_entries,
    open_envelope,
    seal,
    unpack_params,
)
from fedloom.core import validate
from fedloom.core.layout import Vector

_UNIFORM = struct.Struct("<Bff")
_QSGD = struct.Struct("<BI")
_SIGN = struct.Struct("<I")


@dataclass(frozen=True)
class Uniform:
    """``bits``-bit codes (1 to 8) on ``2**bits`` levels spanning ``[min(x), max(x)]``, or
    ``[-bound, bound]`` for every client when ``bound`` is given.

    A payload holds ``ceil(n·bits/8)`` bytes of codes plus 9 bytes (bit width, min, max) and the
    envelope, so 2 bits cut a float32 vector about 16-fold. With a shared ``bound`` every client
    quantizes onto the same grid, so the codes of a cohort can be summed before decoding
    (summable: it may sit before secure aggregation); entries beyond ``±bound`` are clipped to it,
    which is the one place it is biased — clip updates first (``clip_by_norm(bound)`` bounds every
    entry by ``bound``).
    """

    bits: int = 8
    bound: float | None = None

    def __post_init__(self) -> None:
        integer_in("bits", self.bits, 1, 8)
        if self.bound is not None:
            validate.positive("bound", self.bound)

    @property
    def kind(self) -> str:
        return "uniform"

    @property
    def traits(self) -> CodecTraits:
        return CodecTraits(unbiased=True, summable=self.bound is not None)

    def check(self, entries: int) -> None:
        return None

    def encode(self, vector: Vector, rng: np.random.Generator) -> bytes:
        values = as_vector(vector, self.kind)
        levels = (1 << self.bits) - 1
        if self.bound is not None:
            low, high = -float(np.float32(self.bound)), float(np.float32(self.bound))
            values = np.clip(values, np.float32(low), np.float32(high))
        else:
            # The vector's own range (not widened to include 0: that would waste levels).
            low = float(values.min()) if values.size else 0.0
            high = float(values.max()) if values.size else 0.0
        step = np.float32((high - low) / levels)
        if values.size == 0 or step == 0:
            codes = np.zeros(values.shape[0], dtype=np.uint8)
        else:
            scaled = values - np.float32(low)
            scaled *= np.float32(1 / step)
            np.maximum(scaled, np.float32(0), out=scaled)
            codes = stochastic_codes(scaled, levels, rng)
        params = _UNIFORM.pack(self.bits, low, high)
        return seal(self.kind, values.shape[0], params, pack(codes, self.bits))

    def decode(self, payload: bytes, entries: int | None = None) -> Vector:
        envelope = open_envelope(payload, self.kind)
        expect_entries(envelope, entries)
        bits, low, high = unpack_params(_UNIFORM, envelope)
        assert isinstance(bits, int) and isinstance(low, float) and isinstance(high, float)
        _check_bits(bits, 8)
        expect_body(envelope, packed_size(envelope.entries, bits))
        codes = unpack(envelope.body, envelope.entries, bits)
        step = np.float32((high - low) / ((1 << bits) - 1))
        return (codes.astype(np.float32) * step + np.float32(low)).astype(np.float32)


@dataclass(frozen=True)
class QSGD:
    """QSGD with ``levels`` = s (1 to 127) per bucket of ``bucket`` entries.

    Each entry costs :func:`qsgd_bits` (s = 1: 1.6 bits, s = 2: 2.67, s = 7: 4, s = 127: 8) and
    each bucket a float32 norm. Smaller buckets lower the variance (Alistarh et al. bound it
    by ``min(d/s², √d/s)·‖x‖²`` for a bucket of d entries) at 32/``bucket`` bits an entry.
    ``norm="max"`` scales by each bucket's largest magnitude instead of its L2 norm, which is
    still unbiased and has far lower variance; with s = 1 it is TernGrad (Wen, Xu, Yan, Wu, Wang,
    Chen, Li, *TernGrad: Ternary Gradients to Reduce Communication in Distributed Deep
    Learning*, NeurIPS 2017). The decoder does not need to know which.
    """

    levels: int = 16
    bucket: int = 512
    norm: str = "l2"

    def __post_init__(self) -> None:
        integer_in("levels", self.levels, 1, 127)
        integer_in("bucket", self.bucket, 1, 2**31)
        validate.one_of("norm", self.norm, ("l2", "max"))

    @property
    def kind(self) -> str:
        return "qsgd"

    @property
    def traits(self) -> CodecTraits:
        return CodecTraits(unbiased=True, summable=False)

    @property
    def bits(self) -> float:
        """Bits an entry takes, bucket norms aside."""
        return qsgd_bits(self.levels)

    def check(self, entries: int) -> None:
        return None

    def encode(self, vector: Vector, rng: np.random.Generator) -> bytes:
        values = as_vector(vector, self.kind)
        count = values.shape[0]
        buckets = -(-count // self.bucket)
        padded = np.zeros(buckets * self.bucket, dtype=np.float32)
        padded[:count] = values
        rows = padded.reshape(buckets, self.bucket)
        np.abs(rows, out=rows)  # ``padded`` is this call's own copy; signs come from ``values``
        if self.norm == "max":
            norms = rows.max(axis=1)
        else:
            norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))
        safe = np.where(norms > 0, norms, np.float32(1))
        rows *= (np.float32(self.levels) / safe)[:, None]
        magnitude = stochastic_codes(padded[:count], self.levels, rng)
        top = np.uint8(self.levels)
        codes = np.where(values < 0, top - magnitude, top + magnitude)
        params = _QSGD.pack(self.levels, self.bucket)
        body = norms.astype("<f4").tobytes() + _pack_levels(codes, self.levels)
        return seal(self.kind, count, params, body)

    def decode(self, payload: bytes, entries: int | None = None) -> Vector:
        envelope = open_envelope(payload, self.kind)
        expect_entries(envelope, entries)
        levels, bucket = unpack_params(_QSGD, envelope)
        assert isinstance(levels, int) and isinstance(bucket, int)
        if not 1 <= levels <= 127 or bucket < 1:
            raise PayloadError(
                f"qsgd payload header has levels={levels}, bucket={bucket}; "
                "accepted: levels 1..127, bucket ≥ 1"
            )
        count = envelope.entries
        buckets = -(-count // bucket)
        expect_body(envelope, 4 * buckets + _levels_size(count, levels))
        norms = np.frombuffer(envelope.body[: 4 * buckets], dtype="<f4").astype(np.float32)
        if not np.isfinite(norms).all() or (norms < 0).any():
            raise PayloadError("qsgd payload has a negative or non-finite bucket norm")
        codes = _unpack_levels(envelope.body[4 * buckets :], count, levels)
        if count and int(codes.max()) > 2 * levels:
            raise PayloadError(f"qsgd payload has a code above 2·levels = {2 * levels}")
        padded = np.full(buckets * bucket, levels, dtype=np.uint8)
        padded[:count] = codes
        signed = padded.astype(np.float32).reshape(buckets, bucket)
        signed -= np.float32(levels)
        signed *= (norms / np.float32(levels))[:, None]
        out: Vector = signed.reshape(-1)[:count]
        return out


@dataclass(frozen=True)
class Sign:
    """One bit an entry: its sign, times the mean magnitude of its bucket of ``bucket`` entries.

    The scaled sign of Karimireddy, Rebjock, Stich, Jaggi (*Error Feedback Fixes SignSGD and other
    Gradient Compression Schemes*, ICML 2019): biased, but contractive
    (``‖C(x) − x‖² ≤ (1 − δ)‖x‖²``), which is what error feedback needs to converge; use it with
    error feedback. A payload holds ``n/8`` bytes of signs and a float32 per bucket.
    """

    bucket: int = 512

    def __post_init__(self) -> None:
        integer_in("bucket", self.bucket, 1, 2**31)

    @property
    def kind(self) -> str:
        return "sign"

    @property
    def traits(self) -> CodecTraits:
        return CodecTraits(unbiased=False, summable=False)

    def check(self, entries: int) -> None:
        return None

    def encode(self, vector: Vector, rng: np.random.Generator) -> bytes:
        values = as_vector(vector, self.kind)
        count = values.shape[0]
        buckets = -(-count // self.bucket)
        padded = np.zeros(buckets * self.bucket, dtype=np.float32)
        padded[:count] = values
        scales = np.abs(padded.reshape(buckets, self.bucket)).sum(axis=1, dtype=np.float64)
        sizes = np.full(buckets, self.bucket, dtype=np.float64)
        if buckets:
            sizes[-1] = count - (buckets - 1) * self.bucket
        means = (scales / sizes).astype("<f4")
        signs = np.packbits(values >= 0, bitorder="little")
        return seal(self.kind, count, _SIGN.pack(self.bucket), means.tobytes() + signs.tobytes())

    def decode(self, payload: bytes, entries: int | None = None) -> Vector:
        envelope = open_envelope(payload, self.kind)
        expect_entries(envelope, entries)
        (bucket,) = unpack_params(_SIGN, envelope)
        assert isinstance(bucket, int)
        if bucket < 1:
            raise PayloadError(f"sign payload header has bucket={bucket}; accepted: ≥ 1")
        count = envelope.entries
        buckets = -(-count // bucket)
        expect_body(envelope, 4 * buckets + -(-count // 8))
        means = np.frombuffer(envelope.body[: 4 * buckets], dtype="<f4").astype(np.float32)
        if not np.isfinite(means).all() or (means < 0).any():
            raise PayloadError("sign payload has a negative or non-finite bucket scale")
        bits = np.unpackbits(
            np.frombuffer(envelope.body[4 * buckets :], dtype=np.uint8), count=count,
            bitorder="little",
        )  # fmt: skip
        signs = bits.astype(np.float32) * np.float32(2) - np.float32(1)
        return (signs * np.repeat(means, bucket)[:count]).astype(np.float32)


def qsgd_bits(levels: int) -> float:
    """Bits of one QSGD code, one of ``2·levels + 1`` (a sign and a level in ``0..levels``):
    ``ceil(log2(2s + 1))`` bit-packed, or ``8 / m`` with ``m`` base-``(2s + 1)`` digits a byte
    where that is denser (s = 1: 5 ternary digits a byte, 1.6 bits; s = 2: 3 a byte, 2.67)."""
    symbols = 2 * levels + 1
    return min(float(math.ceil(math.log2(symbols))), 8 / per_byte(symbols))


def _dense_base(levels: int) -> bool:
    symbols = 2 * levels + 1
    return 8 / per_byte(symbols) < math.ceil(math.log2(symbols))


def _pack_levels(codes: Codes, levels: int) -> bytes:
    if _dense_base(levels):
        return pack_base(codes, 2 * levels + 1)
    return pack(codes, math.ceil(math.log2(2 * levels + 1)))


def _unpack_levels(data: memoryview, count: int, levels: int) -> Codes:
    if _dense_base(levels):
        return unpack_base(data, count, 2 * levels + 1)
    return unpack(data, count, math.ceil(math.log2(2 * levels + 1)))


def _levels_size(count: int, levels: int) -> int:
    if _dense_base(levels):
        return base_size(count, 2 * levels + 1)
    return packed_size(count, math.ceil(math.log2(2 * levels + 1)))


def _check_bits(bits: int, most: int) -> None:
    if not 1 <= bits <= most:
        raise PayloadError(f"payload header has bit width {bits}; accepted: 1..{most}")
