"""The envelope every encoded payload travels in: a header, the codec's body, a CRC-32.

::

    magic "FL" | version u8 | codec u8 | entries u64 | params length u16 | params | body | crc32 u32

All integers are little-endian. ``entries`` is the decoded vector's length; ``params`` are the
codec's own numbers (a bit width, a norm, a seed); the CRC-32 (``zlib.crc32``) covers everything
before it. :func:`open_envelope` checks the magic, the version, the codec, the length and the
checksum before a codec reads a byte of the body, so a truncated or corrupted payload is refused
with :class:`PayloadError` and never decodes into wrong numbers. (CRC-32 detects accidents —
truncation, bit flips — not tampering; integrity against an attacker is the transport's TLS.)
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

MAGIC = b"FL"
VERSION = 1
_HEAD = struct.Struct("<2sBBQH")
_CRC = struct.Struct("<I")
OVERHEAD = _HEAD.size + _CRC.size
"""Bytes an envelope adds to its params and body: 14 of header, 4 of checksum."""

CODEC_IDS = {
    "float32": 1,
    "float16": 2,
    "bfloat16": 3,
    "uniform": 4,
    "qsgd": 5,
    "rotated": 6,
    "top_k": 7,
    "random_k": 8,
    "sign": 9,
}
"""The codec byte of each codec; a payload's header names the codec that wrote it."""


class PayloadError(ValueError):
    """An encoded payload that cannot be decoded: truncated, corrupted, or not what was expected."""


@dataclass(frozen=True)
class Envelope:
    """An opened payload: the codec's params and body, checked against the header and CRC."""

    codec: str
    entries: int
    params: bytes
    body: memoryview
    """The codec's bytes: a view into the payload, not a copy."""


def seal(codec: str, entries: int, params: bytes, body: bytes) -> bytes:
    """``params`` and ``body`` in an envelope for ``codec``, a vector of ``entries`` values."""
    head = _HEAD.pack(MAGIC, VERSION, CODEC_IDS[codec], entries, len(params))
    crc = zlib.crc32(body, zlib.crc32(params, zlib.crc32(head)))
    return b"".join((head, params, body, _CRC.pack(crc)))


def open_envelope(payload: bytes, codec: str) -> Envelope:
    """The envelope of ``payload``, which ``codec`` must have written; PayloadError otherwise."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise PayloadError(f"a payload must be bytes, got {type(payload).__name__}")
    data = memoryview(payload).cast("B")
    if len(data) < OVERHEAD:
        raise PayloadError(
            f"payload has {len(data)} bytes, fewer than the {OVERHEAD}-byte envelope: truncated"
        )
    (crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
    if zlib.crc32(data[: len(data) - _CRC.size]) != crc:
        raise PayloadError(
            f"payload checksum mismatch (CRC-32 over {len(data) - _CRC.size} bytes): "
            "corrupted or truncated in transit"
        )
    magic, version, codec_id, entries, params_length = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise PayloadError(f"payload does not start with {MAGIC!r}: not a fedloom payload")
    if version != VERSION:
        raise PayloadError(f"payload has envelope version {version}; this fedloom reads {VERSION}")
    expected = CODEC_IDS[codec]
    if codec_id != expected:
        names = {v: k for k, v in CODEC_IDS.items()}
        raise PayloadError(
            f"payload was written by codec {names.get(codec_id, codec_id)!r}, expected {codec!r}"
        )
    start = _HEAD.size
    if start + params_length > len(data) - _CRC.size:
        raise PayloadError(
            f"payload header announces {params_length} parameter bytes, more than it holds"
        )
    params = bytes(data[start : start + params_length])
    body = data[start + params_length : len(data) - _CRC.size]
    return Envelope(codec, entries, params, body)


def expect_body(envelope: Envelope, size: int) -> None:
    """Refuse ``envelope`` unless its body has exactly ``size`` bytes, as its header implies."""
    if len(envelope.body) != size:
        raise PayloadError(
            f"{envelope.codec} payload body has {len(envelope.body)} bytes, but its header "
            f"({envelope.entries} entries) implies {size}"
        )


def expect_entries(envelope: Envelope, entries: int | None) -> None:
    """Refuse ``envelope`` unless it holds ``entries`` values (None: any number)."""
    if entries is not None and envelope.entries != entries:
        raise PayloadError(
            f"{envelope.codec} payload holds {envelope.entries} entries, expected {entries}"
        )


def unpack_params(fmt: struct.Struct, envelope: Envelope) -> tuple[object, ...]:
    """The codec params of ``envelope`` read with ``fmt``; PayloadError if they do not fit."""
    if len(envelope.params) != fmt.size:
        raise PayloadError(
            f"{envelope.codec} payload has {len(envelope.params)} parameter bytes, "
            f"expected {fmt.size}"
        )
    return fmt.unpack(envelope.params)
