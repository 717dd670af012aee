"""Typed fedloom values to protobuf messages and back; vectors cut into chunks and reassembled.

This module and the rest of :mod:`fedloom.transport` are the only places protobuf types appear
(an import-linter contract keeps it so). Every decoder checks what it reads and raises
:class:`ProtocolError` naming the problem; nothing from the wire is trusted.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedloom.core.layout import Layout, Vector
from fedloom.transport.config import PrivacyOptions, Scalar, StageOptions, TrainingConfig
from fedloom.transport.proto.v1 import fedloom_pb2 as pb

PROTOCOL_VERSION = 1
GRANT_FEATURE = "upload.grant.v1"
"""The feature by which a site waits for the server's ``UploadGrant`` before it sends a reply's
chunks (docs/protocol.md, "Upload grants"); the server's Welcome lists it back when it grants."""
FRAME_BYTES = 5
"""gRPC's length-prefixed framing adds 5 bytes to each message (a flag and a 4-byte length)."""
MAX_METRICS = 256
MAX_VECTORS = 8
MAX_NAME = 200
PAYLOAD_SLACK = 1024
"""Bytes an encoded payload may have beyond its model's float32 size: room for the compression
envelope's header, codec parameters and checksum (:mod:`fedloom.compression.wire`)."""


class ProtocolError(Exception):
    """A message that breaks the fedloom protocol; the session that sent it is closed."""


def wire_bytes(message: pb.SiteMessage | pb.ServerMessage | ChunkView | bytes) -> int:
    """Bytes ``message`` (or a serialized one) occupies in the gRPC stream: serialized size
    plus framing."""
    if isinstance(message, bytes):
        return len(message) + FRAME_BYTES
    if isinstance(message, ChunkView):
        return message.wire + FRAME_BYTES
    return int(message.ByteSize()) + FRAME_BYTES


# ---- layouts ----

LayoutKey = tuple[tuple[str, tuple[int, ...], bool], ...]


def layout_to_pb(layout: Layout) -> pb.Layout:
    return pb.Layout(
        tensors=[
            pb.Tensor(name=f.name, shape=f.shape, trainable=f.trainable) for f in layout.fields
        ]
    )


def layout_key(layout: Layout) -> LayoutKey:
    """What two parties must agree on: names, shapes and trainability, in order."""
    return tuple((f.name, tuple(f.shape), f.trainable) for f in layout.fields)


def layout_key_from_pb(message: pb.Layout) -> LayoutKey:
    return tuple(
        (t.name, tuple(int(d) for d in t.shape), bool(t.trainable)) for t in message.tensors
    )


def describe_layout(key: LayoutKey) -> str:
    size = sum(int(np.prod(shape)) for _, shape, _ in key)
    shown = ", ".join(f"{name}{list(shape)}" for name, shape, _ in key[:6])
    more = f", … ({len(key)} tensors)" if len(key) > 6 else ""
    return f"{size} parameters: {shown}{more}"


# ---- training configuration ----


def _scalar_to_pb(value: Scalar) -> pb.Scalar:
    if isinstance(value, bool):
        return pb.Scalar(flag=value)
    if isinstance(value, int):
        return pb.Scalar(integer=value)
    if isinstance(value, float):
        return pb.Scalar(number=value)
    return pb.Scalar(text=value)


def _scalar_from_pb(key: str, message: pb.Scalar) -> Scalar:
    which = message.WhichOneof("value")
    if which is None:
        raise ProtocolError(f"option {key!r} has no value")
    value: Scalar = getattr(message, which)
    return value


def _options(options: Mapping[str, pb.Scalar]) -> dict[str, Scalar]:
    return {key: _scalar_from_pb(key, value) for key, value in options.items()}


def config_to_pb(config: TrainingConfig) -> pb.TrainingConfig:
    train = config.train
    local = pb.LocalTraining(
        lr=float(train["lr"]),
        epochs=int(train.get("epochs") or 0),
        steps=int(train.get("steps") or 0),
        batch_size=int(train.get("batch_size", 32)),
        optimizer=str(train.get("optimizer", "sgd")),
        momentum=float(train.get("momentum", 0.0)),
        weight_decay=float(train.get("weight_decay", 0.0)),
    )
    return pb.TrainingConfig(
        algorithm=config.algorithm,
        algorithm_options={k: _scalar_to_pb(v) for k, v in config.algorithm_options.items()},
        train=local,
        stages=[
            pb.StageConfig(kind=s.kind, options={k: _scalar_to_pb(v) for k, v in s.options.items()})
            for s in config.stages
        ],
        loss=config.loss or "",
        privacy=None if config.privacy is None else _privacy_to_pb(config.privacy),
    )


def _privacy_to_pb(options: PrivacyOptions) -> pb.PrivacyConfig:
    return pb.PrivacyConfig(
        mechanism=options.mechanism,
        clip=options.clip,
        noise_multiplier=options.noise_multiplier,
        target_quantile=options.target_quantile,
        clip_learning_rate=options.clip_learning_rate,
        count_stddev=options.count_stddev,
    )


def _privacy_from_pb(message: pb.PrivacyConfig) -> PrivacyOptions:
    adaptive = {
        name: getattr(message, name) if message.HasField(name) else None
        for name in ("target_quantile", "clip_learning_rate", "count_stddev")
    }
    return PrivacyOptions(message.mechanism, message.clip, message.noise_multiplier, **adaptive)


def config_from_pb(message: pb.TrainingConfig) -> TrainingConfig:
    local = message.train
    train: dict[str, Scalar] = {
        "lr": local.lr,
        "batch_size": local.batch_size,
        "optimizer": local.optimizer,
        "momentum": local.momentum,
        "weight_decay": local.weight_decay,
    }
    if local.epochs:
        train["epochs"] = local.epochs
    if local.steps:
        train["steps"] = local.steps
    try:
        return TrainingConfig(
            algorithm=message.algorithm,
            train=train,
            algorithm_options=_options(message.algorithm_options),
            stages=tuple(StageOptions(s.kind, _options(s.options)) for s in message.stages),
            loss=message.loss or None,
            privacy=_privacy_from_pb(message.privacy) if message.HasField("privacy") else None,
        )
    except ValueError as error:
        raise ProtocolError(f"training configuration: {error}") from None


# ---- metrics ----


def check_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    if len(metrics) > MAX_METRICS:
        raise ProtocolError(f"{len(metrics)} metrics in one message; at most {MAX_METRICS}")
    for name in metrics:
        if len(name) > MAX_NAME:
            raise ProtocolError(f"a metric name is {len(name)} characters; at most {MAX_NAME}")
    return {str(k): float(v) for k, v in metrics.items()}


def stage_config_to_pb(config: Mapping[str, Mapping[str, float]]) -> dict[str, pb.NumberMap]:
    return {k: pb.NumberMap(values={n: float(x) for n, x in v.items()}) for k, v in config.items()}


def stage_config_from_pb(config: Mapping[str, pb.NumberMap]) -> dict[str, dict[str, float]]:
    return {k: check_metrics(v.values) for k, v in config.items()}


# ---- vectors ----


HeldReport = tuple[int, bytes]
"""What a site says it holds from a delta broadcast: a round and its public model's digest."""

DIGEST_BYTES = 8


def held_to_pb(held: HeldReport | None) -> pb.HeldModel | None:
    return None if held is None else pb.HeldModel(round=held[0], digest=held[1])


def held_from_pb(message: pb.Hello | pb.TrainReply | pb.KeyAdvertisement) -> HeldReport | None:
    """The model a Hello, TrainReply or KeyAdvertisement says the site holds; None if it names
    none (a digest of the wrong length is read as none: the site is then sent the whole
    model)."""
    if not message.HasField("held") or len(message.held.digest) != DIGEST_BYTES:
        return None
    return int(message.held.round), bytes(message.held.digest)


WireMessage = bytes
"""A ``ServerMessage`` or ``SiteMessage`` already serialized (:func:`chunk_messages`); both
streams write it as it is (:func:`serialize_message`)."""

_CHUNK_FIELD = b"\x32"  # ServerMessage.chunk (and SiteMessage.chunk): field 6, length-delimited
_TASK_FIELD = b"\x08"  # Chunk.task: field 1, varint
_DATA_FIELD = b"\x12"  # Chunk.data: field 2, length-delimited


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if not value:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def chunk_message(task: int, data: bytes | memoryview) -> WireMessage:
    """``ServerMessage(chunk=Chunk(task=task, data=data))`` serialized, byte for byte what
    protobuf writes, with ``data`` (a slice of a vector, say) copied once, straight into the
    message's bytes: protobuf would copy it into a message and again to serialize it, for every
    chunk of every site's copy of the model."""
    size = len(data)
    body = (_TASK_FIELD + _varint(task) if task else b"") + _DATA_FIELD + _varint(size)
    return _CHUNK_FIELD + _varint(len(body) + size) + body + data


def chunk_messages(task: int, vector: Vector, chunk_bytes: int) -> Iterator[WireMessage]:
    """``vector``'s little-endian float32 bytes in slices of at most ``chunk_bytes``, each a
    serialized chunk message (:func:`chunk_message`), made one at a time from views of
    ``vector`` so only one slice is ever copied."""
    data = np.ascontiguousarray(vector, dtype="<f4")
    view = data.data.cast("B")
    for start in range(0, len(view), chunk_bytes):
        yield chunk_message(task, view[start : start + chunk_bytes])


def payload_chunk_messages(task: int, payload: bytes, chunk_bytes: int) -> Iterator[WireMessage]:
    """An encoded payload's bytes in slices of at most ``chunk_bytes``, each a serialized chunk
    message."""
    view = memoryview(payload)
    for start in range(0, len(view), chunk_bytes):
        yield chunk_message(task, view[start : start + chunk_bytes])


def serialize_message(message: pb.ServerMessage | pb.SiteMessage | WireMessage) -> bytes:
    """Both streams' serializer: a message's bytes, or a serialized one as it is."""
    if isinstance(message, bytes):
        return message
    return bytes(message.SerializeToString())


@dataclass(frozen=True, slots=True)
class ChunkView:
    """A ``chunk`` message read without protobuf (:func:`read_chunk`): its task, and its data as
    a view into the bytes that arrived, so the receiver copies them once, into the vector."""

    task: int
    data: memoryview
    wire: int
    """The serialized message's size in bytes."""


ChunkLike = pb.Chunk | ChunkView
FromSite = pb.SiteMessage | ChunkView
"""A message from a site as the server's deserializer hands it over (:func:`read_site_message`)."""
FromServer = pb.ServerMessage | ChunkView
"""A message from the server as a site's deserializer hands it over."""


def _varint_at(raw: bytes, at: int) -> tuple[int, int] | None:
    """The varint starting at ``raw[at]`` and the offset after it; None if it runs past the end
    or past 10 bytes."""
    value = shift = 0
    for offset in range(at, min(at + 10, len(raw))):
        byte = raw[offset]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, offset + 1
        shift += 7
    return None


def read_chunk(raw: bytes) -> ChunkView | None:
    """``raw`` as a ``ServerMessage`` or ``SiteMessage`` holding only a chunk (both use field 6)
    in the layout protobuf itself writes (and :func:`chunk_message` copies): the chunk field's
    tag and length, then the task's (if not 0) and the data's, filling ``raw`` exactly. Anything
    else (another message, other field orders, repeated or unknown fields, a task of 2^64 or
    more) is None: the caller hands it to protobuf, which reads every valid encoding. Where this
    returns a chunk, protobuf reads the same task and data
    (tests/transport/test_transport_codec.py)."""
    if raw[:1] != _CHUNK_FIELD:
        return None
    outer = _varint_at(raw, 1)
    if outer is None or outer[0] != len(raw) - outer[1]:
        return None
    at, task = outer[1], 0
    if raw[at : at + 1] == _TASK_FIELD:
        got = _varint_at(raw, at + 1)
        if got is None or got[0] >= 1 << 64:
            return None
        task, at = got
    if raw[at : at + 1] != _DATA_FIELD:
        return None
    size = _varint_at(raw, at + 1)
    if size is None or size[0] != len(raw) - size[1]:
        return None
    return ChunkView(task, memoryview(raw)[size[1] :], len(raw))


def read_site_message(raw: bytes) -> FromSite:
    """The server's deserializer: a site's chunk read in place, any other message by protobuf."""
    chunk = read_chunk(raw)
    return pb.SiteMessage.FromString(raw) if chunk is None else chunk


def read_server_message(raw: bytes) -> FromServer:
    """A site's deserializer: the server's chunk read in place, anything else by protobuf."""
    chunk = read_chunk(raw)
    return pb.ServerMessage.FromString(raw) if chunk is None else chunk


def message_kind(message: FromSite | FromServer) -> str:
    """Which of its message's ``kind`` fields a message sets ("" if none)."""
    if isinstance(message, ChunkView):
        return "chunk"
    return message.WhichOneof("kind") or ""


def chunk_of(message: FromSite | FromServer) -> ChunkLike:
    """A chunk message's chunk."""
    return message if isinstance(message, ChunkView) else message.chunk


def max_payload(entries: int) -> int:
    """The most bytes an encoded payload for a model of ``entries`` parameters may have: its
    float32 size plus :data:`PAYLOAD_SLACK`. A codec that writes more compresses nothing."""
    return 4 * entries + PAYLOAD_SLACK


def headers(vectors: Sequence[tuple[str, Vector]]) -> list[pb.VectorHeader]:
    return [pb.VectorHeader(name=name, length=len(vector)) for name, vector in vectors]


class VectorReceiver:
    """Reassembles the vectors one message announced from the chunks that follow it.

    Each announced vector is allocated once at its declared length, which must not exceed
    ``max_length``; chunks fill it in order, and a chunk that would overflow is an error. A
    message may also announce an encoded payload of ``payload_length`` bytes (at most
    :func:`max_payload` of ``max_length``), whose chunks follow the vectors'.
    """

    def __init__(
        self,
        task: int,
        announced: Sequence[pb.VectorHeader],
        *,
        max_length: int,
        chunk_bytes: int,
        payload_length: int = 0,
    ) -> None:
        if len(announced) > MAX_VECTORS:
            raise ProtocolError(f"{len(announced)} vectors in one message; at most {MAX_VECTORS}")
        names = [h.name for h in announced]
        if len(set(names)) != len(names) or any(not n or len(n) > MAX_NAME for n in names):
            raise ProtocolError(f"vector names must be distinct and non-empty, got {names}")
        for header in announced:
            if header.length > max_length:
                raise ProtocolError(
                    f"vector {header.name!r} announces {header.length} entries; "
                    f"at most {max_length} are accepted"
                )
        if payload_length > max_payload(max_length):
            raise ProtocolError(
                f"an encoded payload of {payload_length} bytes announced; at most "
                f"{max_payload(max_length)} (the model's float32 size plus {PAYLOAD_SLACK}) "
                "are accepted"
            )
        self.task = task
        self.chunk_bytes = chunk_bytes
        self.names = names
        self.lengths = [int(h.length) for h in announced]
        # Allocated at their first chunk: a reply waiting for an upload slot holds no buffer.
        self.vectors: list[npt.NDArray[np.float32] | None] = [None] * len(announced)
        self.payload_length = payload_length
        self.payload = bytearray()
        self._payload_filled = 0
        self._index = 0
        self._filled = 0
        self._skip_empty()

    @property
    def complete(self) -> bool:
        return self._index >= len(self.lengths) and self._payload_filled == self.payload_length

    def add(self, chunk: ChunkLike) -> None:
        if chunk.task != self.task:
            raise ProtocolError(f"chunk for task {chunk.task} while receiving task {self.task}")
        if self.complete:
            raise ProtocolError(f"more chunks than task {self.task}'s vectors hold")
        data = chunk.data  # once: protobuf's Chunk copies its bytes at every read
        if self._index >= len(self.lengths):
            self._add_payload(data)
            return
        size = len(data)
        if size == 0 or size % 4 or size > self.chunk_bytes:
            raise ProtocolError(
                f"chunk of {size} bytes; chunks hold a positive multiple of 4 bytes, "
                f"at most {self.chunk_bytes}"
            )
        target = self.vectors[self._index]
        if target is None:
            target = np.empty(self.lengths[self._index], dtype=np.float32)
            self.vectors[self._index] = target
        count = size // 4
        if self._filled + count > len(target):
            raise ProtocolError(f"chunks overflow vector {self.names[self._index]!r}")
        target[self._filled : self._filled + count] = np.frombuffer(data, dtype="<f4")
        self._filled += count
        self._skip_empty()

    def result(self) -> dict[str, Vector]:
        if not self.complete:
            raise ProtocolError(f"task {self.task}'s vectors are incomplete")
        vectors = [
            np.empty(n, dtype=np.float32) if v is None else v  # None: no entries, so no chunk
            for v, n in zip(self.vectors, self.lengths, strict=True)
        ]
        return dict(zip(self.names, vectors, strict=True))

    def payload_result(self) -> bytes | None:
        """The announced payload's bytes, or None if the message announced none."""
        if not self.complete:
            raise ProtocolError(f"task {self.task}'s payload is incomplete")
        return bytes(self.payload) if self.payload_length else None

    def _add_payload(self, data: bytes | memoryview) -> None:
        size = len(data)
        if size == 0 or size > self.chunk_bytes:
            raise ProtocolError(
                f"payload chunk of {size} bytes; chunks hold 1 to {self.chunk_bytes} bytes"
            )
        if self._payload_filled + size > self.payload_length:
            raise ProtocolError(
                f"chunks overflow task {self.task}'s payload of {self.payload_length} bytes"
            )
        if not self.payload:
            self.payload = bytearray(self.payload_length)
        self.payload[self._payload_filled : self._payload_filled + size] = data
        self._payload_filled += size

    def _skip_empty(self) -> None:
        while self._index < len(self.lengths) and self._filled == self.lengths[self._index]:
            self._index += 1
            self._filled = 0


def finite(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise ProtocolError(f"{name} must be finite, got {value}")
    return value
