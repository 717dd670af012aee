"""Shamir secret sharing over the prime field GF(2^31 - 1), vectorized with NumPy.

A secret ``s`` is the constant term of a random polynomial ``f`` of degree ``t - 1``; the share
for the party with x-coordinate ``x`` is ``f(x)``. Any ``t`` shares determine ``f`` and so
``s = f(0)`` by Lagrange interpolation; any ``t - 1`` are uniformly distributed whatever the
secret (Shamir, "How to Share a Secret", CACM 1979).

Everything works on many secrets at once: :func:`share` evaluates every polynomial at every
x-coordinate in one Horner loop over ``[secrets, parties]`` arrays, and :func:`reconstruct`
interpolates a batch of secrets, each from its own set of x-coordinates. The prime
``2^31 - 1`` keeps every product of two field elements below 2^62, so uint64 arithmetic never
overflows. 32-byte secrets (seeds, private keys) travel as 11 limbs of 3 bytes.
"""

from __future__ import annotations

import os

import numpy as np
import numpy.typing as npt

PRIME = (1 << 31) - 1
LIMB_BYTES = 3
Field = npt.NDArray[np.uint64]


def random_elements(shape: tuple[int, ...]) -> Field:
    """Uniform field elements from the OS CSPRNG (31-bit words, rejecting the one value ``p``)."""
    count = int(np.prod(shape))
    out = np.empty(0, dtype=np.uint64)
    while out.size < count:
        need = count - out.size
        words = np.frombuffer(os.urandom(4 * (need + need // 64 + 8)), dtype="<u4")
        words = (words & np.uint32(PRIME)).astype(np.uint64)
        out = np.concatenate([out, words[words < PRIME]])
    return out[:count].reshape(shape)


def share(secrets: Field, xs: npt.NDArray[np.int64], threshold: int) -> Field:
    """Shares ``[len(xs), len(secrets)]`` of every secret, ``threshold`` of which reconstruct.

    ``xs`` are distinct non-zero x-coordinates, one per party.
    """
    secrets = _elements(secrets, "secrets")
    points = _points(xs)
    if not 1 <= threshold <= len(points):
        raise ValueError(
            f"threshold must be in [1, {len(points)}] (the number of parties), got {threshold}"
        )
    coefficients = random_elements((threshold - 1, secrets.size))
    p = np.uint64(PRIME)
    x = points[:, None]
    acc = np.zeros((len(points), secrets.size), dtype=np.uint64)
    for row in coefficients[::-1]:
        acc = (acc + row[None, :]) * x % p
    return (acc + secrets[None, :]) % p


def reconstruct(xs: npt.NDArray[np.int64], shares: Field) -> Field:
    """Secrets from shares: ``xs [..., t]`` and ``shares [..., t, m]`` give ``[..., m]``.

    Leading dimensions batch independent reconstructions, each with its own x-coordinates.
    The result is the interpolating polynomial's value at 0, correct whenever the ``t`` shares
    come from one polynomial of degree below ``t``.
    """
    points = np.asarray(xs)
    values = _elements(shares, "shares")
    if values.shape[:-1] != points.shape:
        raise ValueError(
            f"shares must have shape xs.shape + (secrets,) = {points.shape} + (m,), "
            f"got {values.shape}"
        )
    weights = lagrange_at_zero(points)
    p = np.uint64(PRIME)
    total: Field = ((weights[..., None] * values) % p).sum(axis=-2) % p
    return total


def lagrange_at_zero(xs: npt.NDArray[np.int64]) -> Field:
    """Lagrange weights ``λ_j = Π_{m≠j} x_m / (x_m − x_j)`` for interpolation at 0, over the
    last axis of ``xs``; batched over the leading axes."""
    points = np.asarray(xs)
    if (
        not np.issubdtype(points.dtype, np.integer)
        or np.any(points <= 0)
        or np.any(points >= PRIME)
    ):
        raise ValueError(f"x-coordinates must be integers in [1, {PRIME - 1}]")
    points = points.astype(np.uint64)
    if np.any(np.diff(np.sort(points, axis=-1), axis=-1) == 0):
        raise ValueError("x-coordinates must be distinct within each reconstruction")
    p = np.uint64(PRIME)
    t = points.shape[-1]
    numerator = np.ones(points.shape, dtype=np.uint64)
    denominator = np.ones(points.shape, dtype=np.uint64)
    for m in range(t):
        xm = points[..., m : m + 1]
        others = np.arange(t) != m
        difference = (xm + p - points) % p
        numerator = np.where(others, numerator * xm % p, numerator)
        denominator = np.where(others, denominator * difference % p, denominator)
    return numerator * inverse(denominator) % p


def inverse(values: Field) -> Field:
    """Multiplicative inverses mod p by Fermat's little theorem, ``v^(p-2)``, elementwise."""
    p = np.uint64(PRIME)
    result = np.ones_like(values)
    base = values % p
    exponent = PRIME - 2
    while exponent:
        if exponent & 1:
            result = result * base % p
        base = base * base % p
        exponent >>= 1
    return result


def to_limbs(secret: bytes) -> Field:
    """A byte string as field elements of ``LIMB_BYTES`` bytes each (big-endian, zero-padded)."""
    padded = secret + bytes(-len(secret) % LIMB_BYTES)
    raw = np.frombuffer(padded, dtype=np.uint8).reshape(-1, LIMB_BYTES).astype(np.uint64)
    return (raw[:, 0] << np.uint64(16)) | (raw[:, 1] << np.uint64(8)) | raw[:, 2]


def from_limbs(limbs: Field, length: int) -> bytes:
    """The inverse of :func:`to_limbs` for a secret of ``length`` bytes; ValueError if a limb
    does not fit in ``LIMB_BYTES`` bytes (shares that were not consistent)."""
    limbs = np.asarray(limbs, dtype=np.uint64)
    if np.any(limbs >= np.uint64(1 << (8 * LIMB_BYTES))):
        raise ValueError("reconstructed limbs are out of range: the shares are inconsistent")
    raw = np.stack([(limbs >> np.uint64(s)) & np.uint64(0xFF) for s in (16, 8, 0)], axis=-1)
    return raw.astype(np.uint8).tobytes()[:length]


def limb_count(length: int) -> int:
    return -(-length // LIMB_BYTES)


def _points(xs: npt.NDArray[np.int64]) -> Field:
    points = np.asarray(xs)
    if points.ndim != 1 or points.size == 0:
        raise ValueError(f"xs must be a non-empty 1-d array, got shape {points.shape}")
    if (
        not np.issubdtype(points.dtype, np.integer)
        or np.any(points <= 0)
        or np.any(points >= PRIME)
    ):
        raise ValueError(f"x-coordinates must be integers in [1, {PRIME - 1}]")
    if len(np.unique(points)) != len(points):
        raise ValueError("x-coordinates must be distinct")
    return points.astype(np.uint64)


def _elements(values: Field, what: str) -> Field:
    array = np.asarray(values)
    if not np.issubdtype(array.dtype, np.integer) or np.any(array < 0) or np.any(array >= PRIME):
        raise ValueError(f"{what} must be integers in [0, {PRIME - 1}] (field elements)")
    return array.astype(np.uint64)
