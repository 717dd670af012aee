"""A delta broadcast's chain: the encoded changes that carry a client from a model it holds to
this round's public model, one link per round.

The server keeps a public model ``p_r = p_{r-1} + decode(encode(x_r - p_{r-1}))`` next to the true
model ``x_r``; each round's encoding is that round's *link*. What the codec loses one round is
still in ``x - p`` the next, so the error is fed back rather than piled up (server-side error
feedback, as Karimireddy et al. 2019 do for client updates). A client that holds ``p_k``
receives the links of rounds ``k+1..r`` and applies them with :func:`apply_links`, the one
function the server also uses to step ``p``, so both sides compute the same float32 sums in the
same order and arrive at the same bits.

A chain on the wire::

    magic "FD" | version u8 | links u32 | (length u32 | link){links}

Each link is a codec payload in its checked envelope (:mod:`fedloom.compression.wire`).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

import numpy as np

from fedloom.compression.codec import Codec
from fedloom.compression.wire import PayloadError
from fedloom.core.layout import Vector

MAGIC = b"FD"
VERSION = 1
_HEAD = struct.Struct("<2sBI")
_LENGTH = struct.Struct("<I")
CHAIN_OVERHEAD = _HEAD.size
"""Bytes a chain adds once: magic, version and the number of links (7)."""
LINK_OVERHEAD = _LENGTH.size
"""Bytes a chain adds per link: its length (4)."""
DIGEST_BYTES = 8


def pack_chain(links: Sequence[bytes]) -> bytes:
    """``links`` framed as one chain."""
    parts = [_HEAD.pack(MAGIC, VERSION, len(links))]
    for link in links:
        parts += [_LENGTH.pack(len(link)), bytes(link)]
    return b"".join(parts)


def chain_size(links: Sequence[bytes]) -> int:
    """``len(pack_chain(links))`` without building it."""
    return CHAIN_OVERHEAD + sum(LINK_OVERHEAD + len(link) for link in links)


def unpack_chain(data: bytes) -> list[bytes]:
    """The links of the chain ``data``; PayloadError if it is truncated or not a chain."""
    view = memoryview(data).cast("B")
    if len(view) < _HEAD.size:
        raise PayloadError(f"chain has {len(view)} bytes, fewer than its {_HEAD.size}-byte head")
    magic, version, count = _HEAD.unpack_from(view)
    if magic != MAGIC:
        raise PayloadError(f"chain does not start with {MAGIC!r}: not a delta broadcast")
    if version != VERSION:
        raise PayloadError(f"chain has version {version}; this fedloom reads {VERSION}")
    links: list[bytes] = []
    at = _HEAD.size
    for i in range(count):
        if at + _LENGTH.size > len(view):
            raise PayloadError(f"chain truncated before link {i} of {count}")
        (length,) = _LENGTH.unpack_from(view, at)
        at += _LENGTH.size
        if at + length > len(view):
            raise PayloadError(f"chain link {i} announces {length} bytes, more than remain")
        links.append(bytes(view[at : at + length]))
        at += length
    if at != len(view):
        raise PayloadError(f"chain has {len(view) - at} bytes after its {count} links")
    return links


def apply_links(base: Vector, links: Sequence[bytes], codec: Codec) -> Vector:
    """``base`` plus each link's decoding, in order, in float32: the model the chain leads to.

    The server steps its public model with this function and clients replay chains with it, so
    a client's reconstruction equals the server's model bit for bit. PayloadError for a damaged
    link or one of another length than ``base``."""
    model = np.array(base, dtype=np.float32, copy=True)
    for link in links:
        model += codec.decode(link, model.shape[0])
    return model


def model_digest(model: Vector) -> bytes:
    """A short fingerprint of a model's exact float32 bits (BLAKE2b, 8 bytes): how a site tells
    the server which model it holds, so a diverged site is sent the whole model instead."""
    data = np.ascontiguousarray(model, dtype="<f4").tobytes()
    return hashlib.blake2b(data, digest_size=DIGEST_BYTES).digest()
