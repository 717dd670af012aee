"""Casting codecs: float32 (no compression: the baseline), float16 and bfloat16.

float16 (IEEE 754 binary16) keeps 11 significant bits and a range of ±65504; bfloat16 keeps
float32's range with 8 significant bits (Kalamkar et al., *A Study of BFLOAT16 for Deep Learning
Training*, 2019). Both round to nearest (ties to even), so they are deterministic and slightly
biased; values the format represents come back exactly.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedloom.compression.codec import CodecTraits, as_vector
from fedloom.compression.wire import expect_body, expect_entries, open_envelope, seal
from fedloom.core.layout import Vector

_NONE = struct.Struct("")
FLOAT16_MAX = float(np.finfo(np.float16).max)

_WIDTH = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclass(frozen=True)
class Cast:
    """Each entry in ``dtype``: ``"float32"``, ``"float16"`` or ``"bfloat16"``."""

    dtype: str = "float16"

    def __post_init__(self) -> None:
        if self.dtype not in _WIDTH:
            raise ValueError(f"dtype must be one of {list(_WIDTH)}, got {self.dtype!r}")

    @property
    def kind(self) -> str:
        return self.dtype

    @property
    def traits(self) -> CodecTraits:
        return CodecTraits(unbiased=self.dtype == "float32", summable=False)

    def check(self, entries: int) -> None:
        return None

    def encode(self, vector: Vector, rng: np.random.Generator) -> bytes:
        values = as_vector(vector, self.dtype)
        if self.dtype == "float32":
            body = values.astype("<f4", copy=False).tobytes()
        elif self.dtype == "float16":
            peak = float(np.abs(values).max(initial=0.0))
            if peak > FLOAT16_MAX:
                raise ValueError(
                    f"float16 holds magnitudes up to {FLOAT16_MAX:g}, the vector has {peak:g}; "
                    "use bfloat16, or clip the update first"
                )
            body = values.astype("<f2").tobytes()
        else:
            body = to_bfloat16(values).tobytes()
        return seal(self.dtype, values.shape[0], b"", body)

    def decode(self, payload: bytes, entries: int | None = None) -> Vector:
        envelope = open_envelope(payload, self.dtype)
        expect_entries(envelope, entries)
        expect_body(envelope, envelope.entries * _WIDTH[self.dtype])
        if self.dtype == "float32":
            return np.frombuffer(envelope.body, dtype="<f4").astype(np.float32)
        if self.dtype == "float16":
            return np.frombuffer(envelope.body, dtype="<f2").astype(np.float32)
        return from_bfloat16(np.frombuffer(envelope.body, dtype="<u2"))


def to_bfloat16(values: Vector) -> npt.NDArray[np.uint16]:
    """The bfloat16 bit patterns (``uint16``) nearest ``values``, ties to even."""
    bits = values.astype("<f4", copy=False).view("<u4")
    rounding = ((bits >> np.uint32(16)) & np.uint32(1)) + np.uint32(0x7FFF)
    patterns: npt.NDArray[np.uint16] = ((bits + rounding) >> np.uint32(16)).astype("<u2")
    return patterns


def from_bfloat16(bits: npt.NDArray[np.uint16]) -> Vector:
    """float32 values of bfloat16 bit patterns."""
    values: Vector = (bits.astype("<u4") << np.uint32(16)).view("<f4").astype(np.float32)
    return values
