"""Bit packing of small unsigned integers, vectorized: ``b``-bit codes (1 ≤ b ≤ 8) in about
``b / 8`` bytes each.

A width is split into planes of 8, 4, 2 and 1 bits (``b = 7`` is 4 + 2 + 1): each plane packs
``8 / w`` codes a byte with a few whole-array shifts and ors in ``uint8`` (``numpy.packbits`` for
the 1-bit plane), so packing runs at memory speed rather than one Python step per code, and the
planes together take ``b`` bits a code (plus at most one byte of rounding per plane).
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

Codes = npt.NDArray[np.uint8]


def _planes(bits: int) -> list[tuple[int, int]]:
    """``(shift, width)`` of each plane of a ``bits``-bit code, low bits first."""
    planes = []
    shift = 0
    for width in (8, 4, 2, 1):
        if bits - shift >= width:
            planes.append((shift, width))
            shift += width
    return planes


def _plane_size(count: int, width: int) -> int:
    return -(-count * width // 8)


def packed_size(count: int, bits: int) -> int:
    """Bytes that ``count`` codes of ``bits`` bits take once packed."""
    return sum(_plane_size(count, width) for _, width in _planes(bits))


def pack(codes: Codes, bits: int) -> bytes:
    """``codes`` (each < 2**bits) as ``packed_size(len(codes), bits)`` bytes."""
    return b"".join(_pack_plane(codes, shift, width) for shift, width in _planes(bits))


def unpack(data: bytes | memoryview, count: int, bits: int) -> Codes:
    """The ``count`` codes of ``bits`` bits that :func:`pack` wrote into ``data``."""
    raw = np.frombuffer(data, dtype=np.uint8)
    out = np.zeros(count, dtype=np.uint8)
    start = 0
    for shift, width in _planes(bits):
        size = _plane_size(count, width)
        plane = _unpack_plane(raw[start : start + size], count, width)
        if shift:
            plane <<= np.uint8(shift)
        out |= plane
        start += size
    return out


def _pack_plane(codes: Codes, shift: int, width: int) -> bytes:
    plane = codes >> np.uint8(shift) if shift else codes
    if width == 8:
        return plane.tobytes()
    mask = np.uint8((1 << width) - 1)
    if width == 1:
        return np.packbits(plane & mask, bitorder="little").tobytes()
    per_byte = 8 // width
    count = plane.shape[0]
    padded = np.zeros(-(-count // per_byte) * per_byte, dtype=np.uint8)
    padded[:count] = plane & mask
    lanes = padded.reshape(-1, per_byte)
    out = lanes[:, 0].copy()
    for j in range(1, per_byte):
        out |= lanes[:, j] << np.uint8(width * j)
    return out.tobytes()


def _unpack_plane(raw: npt.NDArray[np.uint8], count: int, width: int) -> Codes:
    if width == 8:
        return raw[:count].copy()
    if width == 1:
        return np.unpackbits(raw, count=count, bitorder="little")
    per_byte = 8 // width
    mask = np.uint8((1 << width) - 1)
    lanes = np.empty((raw.shape[0], per_byte), dtype=np.uint8)
    for j in range(per_byte):
        lanes[:, j] = (raw >> np.uint8(width * j)) & mask
    return lanes.reshape(-1)[:count]


def per_byte(levels: int) -> int:
    """How many base-``levels`` digits fit one byte (``levels ** m ≤ 256``)."""
    count = 0
    while levels ** (count + 1) <= 256:
        count += 1
    return count


def pack_base(codes: Codes, levels: int) -> bytes:
    """``codes`` (each < ``levels``) as base-``levels`` digits, ``per_byte(levels)`` a byte:
    three-valued codes take 1.6 bits each instead of 2."""
    m = per_byte(levels)
    count = codes.shape[0]
    padded = np.zeros(-(-count // m) * m, dtype=np.uint8)
    padded[:count] = codes
    lanes = padded.reshape(-1, m)
    out = lanes[:, m - 1].copy()
    for j in range(m - 2, -1, -1):
        out *= np.uint8(levels)
        out += lanes[:, j]
    return out.tobytes()


def unpack_base(data: bytes | memoryview, count: int, levels: int) -> Codes:
    """The ``count`` codes that :func:`pack_base` wrote into ``data``."""
    digits = _digits(levels)
    lanes = digits[np.frombuffer(data, dtype=np.uint8)]
    return lanes.reshape(-1)[:count]


@functools.cache
def _digits(levels: int) -> Codes:
    """Row ``b``: the ``per_byte(levels)`` base-``levels`` digits of byte ``b``, lowest first."""
    m = per_byte(levels)
    rest = np.arange(256, dtype=np.int64)
    table = np.empty((256, m), dtype=np.uint8)
    for j in range(m):
        table[:, j] = rest % levels
        rest //= levels
    table.flags.writeable = False
    return table


def base_size(count: int, levels: int) -> int:
    """Bytes that :func:`pack_base` writes for ``count`` codes."""
    return -(-count // per_byte(levels))
