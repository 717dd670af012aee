"""Random rotation before quantization: a randomized Hadamard transform per block.

Multiplying by ``H·D / √B`` (``D`` random signs, ``H`` the ``B × B`` Walsh–Hadamard matrix)
spreads a vector's mass evenly over its entries, so a quantizer's range (max − min, or a norm)
shrinks and its error with it: for uniform ``b``-bit quantization the mean squared error falls
from ``O(d)`` to ``O(log d)`` times ``‖x‖² / (2^b − 1)²`` (Suresh, Yu, Kumar, McMahan,
*Distributed Mean Estimation with Limited Communication*, ICML 2017, section 4). The rotation is
orthonormal, so an unbiased inner quantizer stays unbiased after rotating back.

The vector is rotated in blocks of ``block`` entries (a power of two; the last block zero-padded)
with one matrix product, which keeps the cost at ``block`` multiply-adds an entry. The signs
(one draw of ``block`` of them, shared by the blocks) come from a seed drawn by the encoder and
sent in the header, so the decoder needs no shared state.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedloom.compression.codec import Codec, CodecTraits, as_vector
from fedloom.compression.wire import (
    PayloadError,
    expect_entries,
    open_envelope,
    seal,
    unpack_params,
)
from fedloom.core.layout import Vector

_ROTATED = struct.Struct("<IQ")
MAX_BLOCK = 4096


@dataclass(frozen=True)
class Rotated:
    """``inner`` applied to the randomly rotated vector, blocks of ``block`` entries."""

    inner: Codec
    block: int = 64

    def __post_init__(self) -> None:
        if (
            isinstance(self.block, bool)
            or not isinstance(self.block, int)
            or not 2 <= self.block <= MAX_BLOCK
            or self.block & (self.block - 1)
        ):
            raise ValueError(
                f"block must be a power of two from 2 to {MAX_BLOCK}, got {self.block!r}"
            )

    @property
    def kind(self) -> str:
        return "rotated"

    @property
    def traits(self) -> CodecTraits:
        return CodecTraits(unbiased=self.inner.traits.unbiased, summable=False)

    def check(self, entries: int) -> None:
        self.inner.check(_padded(entries, self.block))

    def encode(self, vector: Vector, rng: np.random.Generator) -> bytes:
        values = as_vector(vector, self.kind)
        seed = int(rng.integers(0, 2**63))
        rotated = rotate(values, self.block, seed)
        params = _ROTATED.pack(self.block, seed)
        return seal(self.kind, values.shape[0], params, self.inner.encode(rotated, rng))

    def decode(self, payload: bytes, entries: int | None = None) -> Vector:
        envelope = open_envelope(payload, self.kind)
        expect_entries(envelope, entries)
        block, seed = unpack_params(_ROTATED, envelope)
        assert isinstance(block, int) and isinstance(seed, int)
        if not 2 <= block <= MAX_BLOCK or block & (block - 1):
            raise PayloadError(f"rotated payload has block {block}, not a power of two ≤ 4096")
        padded = _padded(envelope.entries, block)
        rotated = self.inner.decode(bytes(envelope.body), padded)
        return unrotate(rotated, block, seed)[: envelope.entries].copy()


def rotate(values: Vector, block: int, seed: int) -> Vector:
    """``H·D·x / √block`` per block of ``values``, zero-padded to whole blocks."""
    padded = np.zeros(_padded(values.shape[0], block), dtype=np.float32)
    padded[: values.shape[0]] = values
    out: Vector = (padded.reshape(-1, block) @ _rotation(block, seed)).reshape(-1)
    return out


def unrotate(rotated: Vector, block: int, seed: int) -> Vector:
    """The inverse of :func:`rotate`: the rotation is orthonormal, so its transpose."""
    rows = rotated.astype(np.float32, copy=False).reshape(-1, block)
    out: Vector = (rows @ _rotation(block, seed).T).reshape(-1)
    return out


def _padded(entries: int, block: int) -> int:
    return max(1, -(-entries // block)) * block


def _rotation(block: int, seed: int) -> npt.NDArray[np.float32]:
    """``D·H / √block`` with ``D`` the random signs ``seed`` draws: a row vector times it is the
    transpose of ``H·D·x / √block``. One ``D`` serves every block, which keeps each block's
    rotation random (the variance bound is per block) at no cost beyond the product."""
    signs = np.where(np.random.default_rng(seed).random(block) < 0.5, -1.0, 1.0)
    rotation: npt.NDArray[np.float32] = (signs[:, None] * _hadamard(block)).astype(np.float32)
    return rotation


@functools.cache
def _hadamard(block: int) -> npt.NDArray[np.float32]:
    """The ``block × block`` Walsh–Hadamard matrix divided by ``√block`` (orthonormal)."""
    matrix = np.ones((1, 1), dtype=np.float32)
    while matrix.shape[0] < block:
        matrix = np.block([[matrix, matrix], [matrix, -matrix]])
    scaled: npt.NDArray[np.float32] = (matrix / np.sqrt(np.float32(block))).astype(np.float32)
    scaled.flags.writeable = False
    return scaled
