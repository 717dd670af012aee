"""The protocol's cryptographic primitives, all from the ``cryptography`` library.

X25519 key agreement, HKDF-SHA256 key derivation, AES-256-GCM for the encrypted shares and
AES-256-CTR as the pseudorandom generator that expands a 256-bit seed into a mask over the ring
(Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving Machine Learning", CCS
2017, §4: "PRG", "KA", "AE"). Nothing here is hand-rolled; masks never come from NumPy's or
Python's non-cryptographic generators.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

KEY_BYTES = 32
"""Length of an X25519 public or private key, an AEAD key and a PRG seed."""

NONCE_BYTES = 12
TAG_BYTES = 16

RingVector = npt.NDArray[np.uint32]
"""A vector over the ring Z_(2^bits), bits <= 32, held as uint32 (arithmetic wraps mod 2^32)."""


class MalformedKey(ValueError):
    """A public key that is not 32 bytes or not a usable X25519 point."""


def random_seed() -> bytes:
    """A fresh 256-bit seed from the operating system's CSPRNG."""
    return os.urandom(KEY_BYTES)


def generate_keypair() -> tuple[X25519PrivateKey, bytes]:
    """A fresh X25519 key pair: the private key and the raw 32-byte public key."""
    private = X25519PrivateKey.generate()
    return private, public_bytes(private)


def public_bytes(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def private_bytes(private: X25519PrivateKey) -> bytes:
    return private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def load_private(raw: bytes) -> X25519PrivateKey:
    """An X25519 private key from its 32 raw bytes (a reconstructed secret)."""
    if len(raw) != KEY_BYTES:
        raise ValueError(f"an X25519 private key is {KEY_BYTES} bytes, got {len(raw)}")
    return X25519PrivateKey.from_private_bytes(raw)


def key_problem(raw: object) -> str | None:
    """What is wrong with a raw public key's type or size, or None. Every 32-byte string is an
    X25519 encoding; low-order points are caught when a key agreement uses them."""
    if not isinstance(raw, bytes):
        return f"a public key must be bytes, got {type(raw).__name__}"
    if len(raw) != KEY_BYTES:
        return f"a public key must be {KEY_BYTES} bytes, got {len(raw)}"
    return None


def load_public(raw: object) -> X25519PublicKey:
    """An X25519 public key from its 32 raw bytes; MalformedKey if not 32 bytes."""
    problem = key_problem(raw)
    if problem is not None:
        raise MalformedKey(problem)
    assert isinstance(raw, bytes)
    try:
        return X25519PublicKey.from_public_bytes(raw)
    except ValueError as error:
        raise MalformedKey(f"not an X25519 public key: {error}") from error


def agree(private: X25519PrivateKey, peer: bytes, *, purpose: bytes, session: bytes) -> bytes:
    """A 256-bit key shared with ``peer``: HKDF-SHA256 over the X25519 shared secret.

    ``purpose`` separates the share-encryption key from the mask seed; ``session`` binds both to
    this round's session id. Raises MalformedKey for a low-order (all-zero result) peer key.
    """
    try:
        secret = private.exchange(load_public(peer))
    except ValueError as error:
        raise MalformedKey(f"key agreement failed: {error}") from error
    return HKDF(
        algorithm=hashes.SHA256(), length=KEY_BYTES, salt=session, info=b"fedloom/secagg/" + purpose
    ).derive(secret)


def encrypt(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """AES-256-GCM with a random 96-bit nonce: ``nonce || ciphertext || tag``."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def decrypt(key: bytes, sealed: bytes, associated: bytes) -> bytes | None:
    """The plaintext of :func:`encrypt`'s output, or None when it is not authentic."""
    if len(sealed) < NONCE_BYTES + TAG_BYTES:
        return None
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)
    except InvalidTag:
        return None


def expand(seed: bytes, size: int, bits: int) -> RingVector:
    """``size`` uniform elements of Z_(2^bits) from a 256-bit seed, by AES-256-CTR.

    Each seed is used for one vector only (every seed is fresh per round), so a fixed counter
    block is safe. Uniform 32-bit words reduced mod 2^bits stay uniform.
    """
    words = MaskStream(size).keystream(seed).copy()
    return words & np.uint32((1 << bits) - 1) if bits < 32 else words


class MaskStream:
    """:func:`expand` for many seeds of one vector size, without a copy per mask.

    The AES-256-CTR keystream of each seed is written into one reused buffer
    (``update_into``) and read as little-endian 32-bit words in place, so adding a mask into a
    running total is one pass over memory. The words are the same as :func:`expand`'s with
    ``bits = 32``; reducing the total mod 2^bits once at the end gives the same ring element as
    reducing every mask first, because 2^bits divides 2^32.
    """

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"a mask has at least one element, got size {size}")
        self.size = size
        self._zeros = bytes(4 * size)
        # CTR mode writes exactly the input's length, but update_into asks for a block more.
        self._buffer = bytearray(4 * size + 15)
        self._words = np.frombuffer(self._buffer, dtype="<u4", count=size)

    def keystream(self, seed: bytes) -> npt.NDArray[np.uint32]:
        """The mask of ``seed`` as 32-bit words: a view of the reused buffer, overwritten by
        the next call."""
        if len(seed) != KEY_BYTES:
            raise ValueError(f"a PRG seed is {KEY_BYTES} bytes, got {len(seed)}")
        encryptor = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
        encryptor.update_into(self._zeros, self._buffer)
        encryptor.finalize()
        return self._words

    def add(self, total: RingVector, seed: bytes) -> None:
        """``total += PRG(seed)`` modulo 2^32, in place."""
        np.add(total, self.keystream(seed), out=total)

    def subtract(self, total: RingVector, seed: bytes) -> None:
        """``total -= PRG(seed)`` modulo 2^32, in place."""
        np.subtract(total, self.keystream(seed), out=total)


def session_id(header: bytes, keys: Iterable[tuple[int, bytes, bytes]]) -> bytes:
    """SHA-256 over the round's parameters and every advertised ``(client, cipher, mask)`` key,
    in client order: equal for all clients exactly when they saw the same keys."""
    digest = hashlib.sha256(b"fedloom/secagg/session\x00" + header)
    for client, cipher, mask in sorted(keys):
        digest.update(client.to_bytes(8, "big", signed=True) + cipher + mask)
    return digest.digest()
