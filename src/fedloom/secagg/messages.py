"""The typed messages of the four SecAgg+ rounds, and the task kinds that carry them.

Round 0, advertise keys: the server sends :class:`SecureTrainTask` (the broadcast and this
round's :class:`Setup`); the client trains, quantizes its update, keeps it, and answers with
:class:`KeyAdvertisement`. Round 1, share keys: :class:`KeyRoster` in, :class:`SharedKeys` out.
Round 2, masked input collection: :class:`MaskingRequest` in, :class:`MaskedInput` out. Round 3,
unmasking: :class:`UnmaskRequest` in, :class:`UnmaskShares` out (Bonawitz et al., "Practical
Secure Aggregation for Privacy-Preserving Machine Learning", CCS 2017, Fig. 4; Bell et al. 2020
for the neighbour graph).

Every message after round 0 carries the session id, a hash over the setup and all advertised
public keys; encrypted shares bind it as associated data. Messages hold bytes, integers and
NumPy vectors only, so a transport maps each one field by field (protobuf at the gRPC edge).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import numpy.typing as npt

from fedloom.core.messages import Broadcast
from fedloom.secagg.primitives import RingVector

Shares = npt.NDArray[np.uint32]
"""One party's Shamir shares of one secret: field elements of GF(2^31 - 1), one per limb."""


@dataclass(frozen=True)
class Setup:
    """The round's public parameters, fixed by the server before any key is advertised.

    ``cohort`` lists the sampled clients in increasing order; client ``cohort[i]`` holds Shamir
    x-coordinate ``i + 1``. A client's input is ``dims + 1`` ring elements (the weight last).
    """

    round: int
    cohort: tuple[int, ...]
    degree: int
    threshold: int
    bits: int
    scale: float
    clip: float
    max_weight: int
    weighted: bool
    dims: int

    def header(self) -> bytes:
        """A canonical encoding, hashed into the session id."""
        fixed = struct.pack(
            ">qqqqdd?qq",
            self.round,
            self.degree,
            self.threshold,
            self.bits,
            self.scale,
            self.clip,
            self.weighted,
            self.max_weight,
            self.dims,
        )
        return fixed + b"".join(c.to_bytes(8, "big", signed=True) for c in self.cohort)

    def x_coordinate(self, client: int) -> int:
        """The client's Shamir x-coordinate: its position in the cohort, plus one."""
        return self._positions[client] + 1

    @cached_property
    def _positions(self) -> dict[int, int]:
        return {c: i for i, c in enumerate(self.cohort)}


@dataclass(frozen=True)
class SecureTrainTask:
    """Round 0: train from ``broadcast``, then advertise fresh keys under ``setup``."""

    client: int
    broadcast: Broadcast
    setup: Setup


@dataclass(frozen=True)
class KeyAdvertisement:
    """A client's two fresh X25519 public keys: one to encrypt shares, one to agree masks."""

    client: int
    cipher_key: bytes
    mask_key: bytes


@dataclass(frozen=True)
class KeyRoster:
    """Round 1 request: every advertised key, and the recipient's neighbours in the graph."""

    keys: tuple[KeyAdvertisement, ...]
    neighbours: tuple[int, ...]


@dataclass(frozen=True)
class EncryptedShare:
    """``sender``'s shares of its two secrets for ``recipient``, sealed with AES-GCM under their
    agreed key, with (session, sender, recipient) as associated data."""

    sender: int
    recipient: int
    sealed: bytes


@dataclass(frozen=True)
class SharedKeys:
    """Round 1 answer: one encrypted share per neighbour."""

    session: bytes
    client: int
    shares: tuple[EncryptedShare, ...]


@dataclass(frozen=True)
class MaskingRequest:
    """Round 2 request: the shares addressed to this client by the neighbours that sent any."""

    session: bytes
    shares: tuple[EncryptedShare, ...]


@dataclass(frozen=True)
class MaskedInput:
    """Round 2 answer: ``x + PRG(b) + Σ ± PRG(s_uv)`` over the ring."""

    session: bytes
    client: int
    vector: RingVector


@dataclass(frozen=True)
class UnmaskRequest:
    """Round 3 request: whose masked input arrived (``survivors``) and who shared keys but sent
    none (``dropped``)."""

    session: bytes
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]


@dataclass(frozen=True)
class UnmaskShares:
    """Round 3 answer: shares of each surviving neighbour's self-mask seed and of each dropped
    neighbour's mask key, keyed by that neighbour's id."""

    session: bytes
    client: int
    seed_shares: Mapping[int, Shares] = field(default_factory=dict)
    key_shares: Mapping[int, Shares] = field(default_factory=dict)


@dataclass(frozen=True)
class SecureTask:
    """Rounds 1 to 3: one request for one client."""

    client: int
    request: KeyRoster | MaskingRequest | UnmaskRequest


SecureReply = KeyAdvertisement | SharedKeys | MaskedInput | UnmaskShares
"""What a client answers in some round (a failure is the executor's ``Failure``)."""


def pack_ring(vector: RingVector, bits: int) -> bytes:
    """Ring elements packed to ``bits`` bits each (little-endian bit order): how a transport
    sends a masked vector, ``ceil(len · bits / 8)`` bytes instead of 4 bytes an entry."""
    words = np.ascontiguousarray(vector, dtype="<u4").view(np.uint8).reshape(-1, 4)
    planes = np.unpackbits(words, axis=1, bitorder="little")[:, :bits]
    return np.packbits(planes.reshape(-1), bitorder="little").tobytes()


def unpack_ring(data: bytes, bits: int, size: int) -> RingVector:
    """The inverse of :func:`pack_ring`; ValueError if ``data`` has the wrong length."""
    if len(data) != -(-size * bits // 8):
        raise ValueError(
            f"{size} ring elements of {bits} bits take {-(-size * bits // 8)} bytes, "
            f"got {len(data)}"
        )
    planes = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    padded = np.zeros((size, 32), dtype=np.uint8)
    padded[:, :bits] = planes[: size * bits].reshape(size, bits)
    words = np.packbits(padded, axis=1, bitorder="little")
    return words.view("<u4").reshape(-1).astype(np.uint32)


def message_bytes(message: object, *, bits: int = 32) -> int:
    """Bytes a message's payload fields take on the wire, before framing; masked vectors packed
    to ``bits`` bits an entry (:func:`pack_ring`)."""
    if isinstance(message, SecureTrainTask):
        b = message.broadcast
        model = len(b.payload) if b.payload is not None else int(np.asarray(b.params).nbytes)
        return model + 8 * len(message.setup.cohort)
    if isinstance(message, KeyAdvertisement):
        return len(message.cipher_key) + len(message.mask_key)
    if isinstance(message, KeyRoster):
        return 64 * len(message.keys) + 8 * len(message.neighbours)
    if isinstance(message, SharedKeys | MaskingRequest):
        return len(message.session) + sum(len(s.sealed) + 16 for s in message.shares)
    if isinstance(message, MaskedInput):
        return len(message.session) + -(-np.asarray(message.vector).size * bits // 8)
    if isinstance(message, UnmaskRequest):
        return len(message.session) + 8 * (len(message.survivors) + len(message.dropped))
    if isinstance(message, UnmaskShares):
        parts = [*message.seed_shares.values(), *message.key_shares.values()]
        return len(message.session) + sum(8 + int(np.asarray(s).nbytes) for s in parts)
    if isinstance(message, SecureTask):
        return message_bytes(message.request, bits=bits)
    return 0
