"""Secure aggregation's typed messages (:mod:`fedloom.secagg.messages`) to protobuf and back.

The SecAgg+ rounds cross the wire only here: the server maps each
:class:`~fedloom.secagg.messages.SecureTask` to one :class:`pb.ServerMessage` and each site
reply back to a typed message; the site does the reverse. Masked vectors travel packed to the
ring's bit width (:func:`~fedloom.secagg.messages.pack_ring`) in chunks of at most the
negotiated size, and :class:`PackedReceiver` reassembles them, refusing any size but the one
the round's setup fixes. Every decoder checks counts and sizes and raises
:class:`~fedloom.transport.codec.ProtocolError`; what the values mean (keys, sessions, shares)
is checked by the protocol's own sessions, which name the client.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

from fedloom.engine.tasks import Failure
from fedloom.secagg.messages import (
    EncryptedShare,
    KeyAdvertisement,
    KeyRoster,
    MaskedInput,
    MaskingRequest,
    SecureReply,
    SecureTask,
    SecureTrainTask,
    Setup,
    SharedKeys,
    Shares,
    UnmaskRequest,
    UnmaskShares,
    pack_ring,
    unpack_ring,
)
from fedloom.secagg.primitives import RingVector
from fedloom.transport.codec import ChunkLike, ProtocolError, WireMessage, chunk_message
from fedloom.transport.proto.v1 import fedloom_pb2 as pb

FEATURE = "secagg.v1"
"""What a site lists in its Hello's features when it speaks the secure aggregation rounds."""
MAX_COHORT = 100_000
MAX_KEY_BYTES = 64
MAX_SEALED_BYTES = 1024
MAX_LIMBS = 64

REPLIES = ("key_advertisement", "shared_keys", "masked_input", "unmask_shares")
PHASE_OF_REPLY = dict(zip(REPLIES, ("advertise", "share", "mask", "unmask"), strict=True))
"""The protocol round each site reply answers, by its oneof case in ``SiteMessage``."""


def phase_of(task: SecureTrainTask | SecureTask) -> str:
    """The protocol round a task belongs to: ``advertise``, ``share``, ``mask`` or ``unmask``."""
    if isinstance(task, SecureTrainTask):
        return "advertise"
    if isinstance(task.request, KeyRoster):
        return "share"
    return "mask" if isinstance(task.request, MaskingRequest) else "unmask"


def _ids(what: str, values: Sequence[int], limit: int = MAX_COHORT) -> tuple[int, ...]:
    if len(values) > limit:
        raise ProtocolError(f"{what} lists {len(values)} clients; at most {limit}")
    return tuple(int(v) for v in values)


def _bytes(what: str, value: bytes, limit: int) -> bytes:
    if len(value) > limit:
        raise ProtocolError(f"{what} is {len(value)} bytes; at most {limit}")
    return bytes(value)


# ---- the setup ----


def setup_to_pb(setup: Setup) -> pb.SecureSetup:
    return pb.SecureSetup(
        round=setup.round,
        cohort=list(setup.cohort),
        degree=setup.degree,
        threshold=setup.threshold,
        bits=setup.bits,
        scale=setup.scale,
        clip=setup.clip,
        max_weight=setup.max_weight,
        weighted=setup.weighted,
        dims=setup.dims,
    )


def setup_from_pb(message: pb.SecureSetup, *, dims: int) -> Setup:
    """The setup, checked against this site's model of ``dims`` parameters."""
    cohort = _ids("the setup's cohort", message.cohort)
    if list(cohort) != sorted(set(cohort)) or not cohort:
        raise ProtocolError("the setup's cohort must be non-empty, increasing and distinct")
    if not 8 <= message.bits <= 32:
        raise ProtocolError(f"the setup's ring has {message.bits} bits; 8 to 32 are accepted")
    if message.dims != dims:
        raise ProtocolError(f"the setup is for {message.dims} parameters; this model has {dims}")
    if not (message.threshold >= 1 and message.degree < len(cohort)):
        raise ProtocolError(
            f"the setup's threshold {message.threshold} and degree {message.degree} do not fit "
            f"a cohort of {len(cohort)}"
        )
    for name in ("scale", "clip"):
        value = getattr(message, name)
        if not (math.isfinite(value) and value > 0):
            raise ProtocolError(f"the setup's {name} must be finite and > 0, got {value}")
    if message.max_weight < 1:
        raise ProtocolError(f"the setup's max_weight must be >= 1, got {message.max_weight}")
    return Setup(
        round=int(message.round),
        cohort=cohort,
        degree=int(message.degree),
        threshold=int(message.threshold),
        bits=int(message.bits),
        scale=float(message.scale),
        clip=float(message.clip),
        max_weight=int(message.max_weight),
        weighted=bool(message.weighted),
        dims=int(message.dims),
    )


# ---- server -> site ----


def _shares_to_pb(shares: Sequence[EncryptedShare]) -> list[pb.EncryptedShare]:
    return [
        pb.EncryptedShare(sender=s.sender, recipient=s.recipient, sealed=s.sealed) for s in shares
    ]


def _shares_from_pb(what: str, shares: Sequence[pb.EncryptedShare]) -> tuple[EncryptedShare, ...]:
    if len(shares) > MAX_COHORT:
        raise ProtocolError(f"{what} holds {len(shares)} shares; at most {MAX_COHORT}")
    return tuple(
        EncryptedShare(int(s.sender), int(s.recipient), _bytes(what, s.sealed, MAX_SEALED_BYTES))
        for s in shares
    )


def _keys_to_pb(keys: KeyAdvertisement) -> pb.PublicKeys:
    return pb.PublicKeys(client=keys.client, cipher_key=keys.cipher_key, mask_key=keys.mask_key)


def _keys_from_pb(message: pb.PublicKeys) -> KeyAdvertisement:
    return KeyAdvertisement(
        int(message.client),
        _bytes("a public key", message.cipher_key, MAX_KEY_BYTES),
        _bytes("a public key", message.mask_key, MAX_KEY_BYTES),
    )


def request_to_pb(task: int, secure: SecureTask) -> pb.ServerMessage:
    """Rounds 1 to 3: the request ``secure`` as task ``task``."""
    request = secure.request
    if isinstance(request, KeyRoster):
        return pb.ServerMessage(
            key_roster=pb.KeyRoster(
                task=task,
                client=secure.client,
                keys=[_keys_to_pb(k) for k in request.keys],
                neighbours=list(request.neighbours),
            )
        )
    if isinstance(request, MaskingRequest):
        return pb.ServerMessage(
            masking_request=pb.MaskingRequest(
                task=task,
                client=secure.client,
                session=request.session,
                shares=_shares_to_pb(request.shares),
            )
        )
    return pb.ServerMessage(
        unmask_request=pb.UnmaskRequest(
            task=task,
            client=secure.client,
            session=request.session,
            survivors=list(request.survivors),
            dropped=list(request.dropped),
        )
    )


def request_from_pb(
    message: pb.KeyRoster | pb.MaskingRequest | pb.UnmaskRequest,
) -> SecureTask:
    """A site's view of a round 1 to 3 request (its structure checked, its meaning left to the
    client's session)."""
    client = int(message.client)
    if isinstance(message, pb.KeyRoster):
        if len(message.keys) > MAX_COHORT:
            raise ProtocolError(
                f"a key roster lists {len(message.keys)} keys; at most {MAX_COHORT}"
            )
        keys = tuple(_keys_from_pb(k) for k in message.keys)
        return SecureTask(client, KeyRoster(keys, _ids("the neighbours", message.neighbours)))
    session = _bytes("a session id", message.session, MAX_KEY_BYTES)
    if isinstance(message, pb.MaskingRequest):
        shares = _shares_from_pb("a masking request", message.shares)
        return SecureTask(client, MaskingRequest(session, shares))
    survivors = _ids("the survivors", message.survivors)
    dropped = _ids("the dropped", message.dropped)
    return SecureTask(client, UnmaskRequest(session, survivors, dropped))


# ---- site -> server ----


def _limbs_to_pb(owner: int, shares: Shares) -> pb.SecretShare:
    return pb.SecretShare(owner=owner, limbs=np.asarray(shares, dtype=np.uint32).tolist())


def _limbs_from_pb(what: str, entries: Sequence[pb.SecretShare]) -> dict[int, Shares]:
    if len(entries) > MAX_COHORT:
        raise ProtocolError(f"{len(entries)} {what} shares; at most {MAX_COHORT}")
    found: dict[int, Shares] = {}
    for entry in entries:
        if len(entry.limbs) > MAX_LIMBS:
            raise ProtocolError(f"a {what} share of {len(entry.limbs)} limbs; at most {MAX_LIMBS}")
        if int(entry.owner) in found:
            raise ProtocolError(f"two {what} shares of client {entry.owner}")
        found[int(entry.owner)] = np.array(entry.limbs, dtype=np.uint32)
    return found


def reply_to_pb(
    task: int,
    reply: SecureReply | Failure,
    *,
    bits: int,
    chunk_bytes: int,
    held: pb.HeldModel | None = None,
) -> Iterator[pb.SiteMessage | WireMessage]:
    """A site's answer to task ``task``: one message, and for a masked input its chunks (packed
    to the round's ``bits``, serialized already); ``held`` goes with a key advertisement (delta
    broadcasts)."""
    if isinstance(reply, Failure):
        yield pb.SiteMessage(task_failed=pb.TaskFailed(task=task, reason=reply.reason[:500]))
    elif isinstance(reply, KeyAdvertisement):
        yield pb.SiteMessage(
            key_advertisement=pb.KeyAdvertisement(task=task, keys=_keys_to_pb(reply), held=held)
        )
    elif isinstance(reply, SharedKeys):
        yield pb.SiteMessage(
            shared_keys=pb.SharedKeys(
                task=task,
                session=reply.session,
                client=reply.client,
                shares=_shares_to_pb(reply.shares),
            )
        )
    elif isinstance(reply, UnmaskShares):
        yield pb.SiteMessage(
            unmask_shares=pb.UnmaskShares(
                task=task,
                session=reply.session,
                client=reply.client,
                seed_shares=[_limbs_to_pb(o, s) for o, s in reply.seed_shares.items()],
                key_shares=[_limbs_to_pb(o, s) for o, s in reply.key_shares.items()],
            )
        )
    else:
        vector = np.asarray(reply.vector, dtype=np.uint32)
        yield pb.SiteMessage(
            masked_input=pb.MaskedInput(
                task=task, session=reply.session, client=reply.client, length=len(vector), bits=bits
            )
        )
        for data in packed_chunks(vector, bits, chunk_bytes):
            yield chunk_message(task, data)


def packed_chunks(vector: RingVector, bits: int, chunk_bytes: int) -> Iterator[bytes]:
    """``vector`` packed to ``bits`` bits an entry, in slices of at most ``chunk_bytes``: each
    slice packs a multiple of 8 entries (a whole number of bytes), so the slices joined are
    exactly :func:`pack_ring` of the whole vector, made one slice at a time."""
    entries = (chunk_bytes // bits) * 8
    for start in range(0, len(vector), entries):
        yield pack_ring(vector[start : start + entries], bits)


def advertisement_from_pb(message: pb.KeyAdvertisement) -> KeyAdvertisement:
    return _keys_from_pb(message.keys)


def shared_keys_from_pb(message: pb.SharedKeys) -> SharedKeys:
    return SharedKeys(
        _bytes("a session id", message.session, MAX_KEY_BYTES),
        int(message.client),
        _shares_from_pb("shared keys", message.shares),
    )


def unmask_shares_from_pb(message: pb.UnmaskShares) -> UnmaskShares:
    return UnmaskShares(
        _bytes("a session id", message.session, MAX_KEY_BYTES),
        int(message.client),
        _limbs_from_pb("self-mask", message.seed_shares),
        _limbs_from_pb("mask-key", message.key_shares),
    )


class PackedReceiver:
    """Reassembles one masked vector from its chunks: exactly ``length`` entries of ``bits``
    bits, as the round's setup fixed; anything else, or more bytes than that, is an error."""

    def __init__(self, header: pb.MaskedInput, *, length: int, bits: int, chunk_bytes: int):
        if header.length != length or header.bits != bits:
            raise ProtocolError(
                f"a masked input of {header.length} entries of {header.bits} bits; this round "
                f"takes {length} entries of {bits} bits"
            )
        self.task = int(header.task)
        self.header = header
        self.bits = bits
        self.length = length
        self.chunk_bytes = chunk_bytes
        self._data = bytearray()
        self._size = -(-length * bits // 8)

    @property
    def complete(self) -> bool:
        return len(self._data) == self._size

    def add(self, chunk: ChunkLike) -> None:
        if chunk.task != self.task:
            raise ProtocolError(f"chunk for task {chunk.task} while receiving task {self.task}")
        data = chunk.data
        size = len(data)
        if size == 0 or size > self.chunk_bytes:
            raise ProtocolError(f"chunk of {size} bytes; chunks hold 1 to {self.chunk_bytes}")
        if len(self._data) + size > self._size:
            raise ProtocolError(f"chunks overflow the {self._size}-byte masked input")
        self._data += data

    def result(self) -> MaskedInput:
        if not self.complete:
            raise ProtocolError(f"task {self.task}'s masked input is incomplete")
        vector = unpack_ring(bytes(self._data), self.bits, self.length)
        session = _bytes("a session id", self.header.session, MAX_KEY_BYTES)
        return MaskedInput(session, int(self.header.client), vector)
