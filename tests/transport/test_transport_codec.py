"""The wire codec: chunked vectors reassemble exactly; malformed chunk streams are refused;
training configuration survives the round trip as plain values."""

from __future__ import annotations

import re
import tracemalloc
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedloom.transport.codec import (
    ProtocolError,
    VectorReceiver,
    chunk_message,
    chunk_messages,
    config_from_pb,
    config_to_pb,
    headers,
    message_kind,
    read_chunk,
    read_server_message,
    read_site_message,
    serialize_message,
    wire_bytes,
)
from fedloom.transport.config import PrivacyOptions, StageOptions, TrainingConfig
from fedloom.transport.proto.v1 import fedloom_pb2 as pb


@settings(max_examples=200, deadline=None)
@given(task=st.integers(0, 2**64 - 1), data=st.binary(min_size=1, max_size=400))
def test_a_hand_serialized_chunk_is_what_protobuf_writes(task: int, data: bytes) -> None:
    want = pb.ServerMessage(chunk=pb.Chunk(task=task, data=data))
    got = chunk_message(task, memoryview(data))
    assert got == want.SerializeToString()
    assert pb.ServerMessage.FromString(got) == want
    assert pb.SiteMessage.FromString(got).chunk == want.chunk  # the same field on both streams
    assert wire_bytes(got) == wire_bytes(want)
    assert serialize_message(got) is got
    assert serialize_message(want) == got


def test_serialized_chunks_reassemble_like_message_chunks() -> None:
    # A vector far longer than a chunk, with a partial last one: the serialized chunks are the
    # vector's bytes in order, and a receiver rebuilds it exactly from what protobuf reads of
    # them as from what read_chunk reads.
    vector = np.random.default_rng(4).standard_normal(70_001).astype(np.float32)
    messages = list(chunk_messages(300, vector, 4096))
    parsed = [pb.ServerMessage.FromString(m).chunk for m in messages]
    assert {c.task for c in parsed} == {300}
    assert [len(c.data) for c in parsed] == [4096] * 68 + [280_004 - 68 * 4096]
    assert b"".join(c.data for c in parsed) == vector.astype("<f4").tobytes()
    for reading in (parsed, [read_chunk(m) for m in messages]):
        receiver = VectorReceiver(
            300, headers([("w", vector)]), max_length=70_001, chunk_bytes=4096
        )
        for chunk in reading:
            assert chunk is not None
            receiver.add(chunk)
        np.testing.assert_array_equal(receiver.result()["w"], vector)


CHUNK = st.builds(
    lambda task, data: pb.Chunk(task=task, data=data),
    st.integers(0, 2**64 - 1),
    st.binary(max_size=300),
)


@settings(max_examples=300, deadline=None)
@given(chunk=CHUNK)
def test_read_chunk_reads_what_protobuf_writes(chunk: pb.Chunk) -> None:
    # Both streams' chunk messages, as protobuf serializes them, read without protobuf: the
    # same task and data, the data a view into the received bytes (no copy), the size exact.
    for message in (pb.ServerMessage(chunk=chunk), pb.SiteMessage(chunk=chunk)):
        raw = message.SerializeToString()
        got = read_chunk(raw)
        if not chunk.data:  # protobuf omits empty data; a chunk is never empty
            assert got is None
            continue
        assert got is not None
        assert (got.task, bytes(got.data), got.wire) == (chunk.task, chunk.data, len(raw))
        assert got.data.obj is raw
        assert wire_bytes(got) == wire_bytes(message)


def _other_encodings(chunk: pb.Chunk) -> list[bytes]:
    """Valid encodings of a chunk message that protobuf reads but that are not its own layout."""
    task = b"\x08" + _varint_bytes(chunk.task)
    data = b"\x12" + _varint_bytes(len(chunk.data)) + chunk.data
    unknown = b"\x18\x07"  # field 3, a varint: unknown to Chunk, kept by protobuf
    return [
        b"\x32" + _varint_bytes(len(data + task)) + data + task,  # fields in the other order
        b"\x32" + _varint_bytes(len(task * 2 + data)) + task * 2 + data,  # task twice
        b"\x32" + _varint_bytes(len(task + data + unknown)) + task + data + unknown,
        b"\x32\x80",  # a length that never ends
    ]


def _varint_bytes(value: int) -> bytes:
    return pb.Chunk(task=value).SerializeToString()[1:] if value else b"\x00"


@settings(max_examples=200, deadline=None)
@given(chunk=CHUNK, noise=st.binary(max_size=40), cut=st.integers(0, 400))
def test_read_chunk_leaves_everything_else_to_protobuf(
    chunk: pb.Chunk, noise: bytes, cut: int
) -> None:
    # Other layouts, other messages, truncations and random bytes: read_chunk reads them as
    # protobuf does, or not at all (None: the deserializer then asks protobuf).
    raw = pb.SiteMessage(chunk=chunk).SerializeToString()
    heartbeat = pb.SiteMessage(heartbeat=pb.Heartbeat(sent=1.5)).SerializeToString()
    for candidate in [*_other_encodings(chunk), raw[:cut], raw + noise, noise, heartbeat]:
        got = read_chunk(candidate)
        if got is None:
            continue
        parsed = pb.SiteMessage.FromString(candidate)
        assert parsed.WhichOneof("kind") == "chunk"
        assert (got.task, bytes(got.data)) == (parsed.chunk.task, parsed.chunk.data)
    for candidate in _other_encodings(chunk)[:3]:
        assert read_chunk(candidate) is None
        assert read_site_message(candidate) == pb.SiteMessage(
            chunk=pb.SiteMessage.FromString(candidate).chunk
        )
    assert message_kind(read_site_message(heartbeat)) == "heartbeat"
    assert message_kind(read_server_message(raw)) == "chunk"


def test_a_receiver_allocates_its_vectors_at_their_first_chunk() -> None:
    # A reply's header announces 40 MB of vectors and a 4 MB payload; nothing is allocated
    # until chunks come (a reply waiting for an upload slot holds no buffer), then one vector.
    announced = [
        pb.VectorHeader(name="a", length=5_000_000),
        pb.VectorHeader(name="b", length=5_000_000),
    ]
    tracemalloc.start()
    try:
        receiver = VectorReceiver(
            7, announced, max_length=5_000_000, chunk_bytes=1 << 20, payload_length=4 << 20
        )
        waiting, _ = tracemalloc.get_traced_memory()
        receiver.add(pb.Chunk(task=7, data=np.ones(1000, np.float32).tobytes()))
        started, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert waiting < 1 << 20
    assert 20_000_000 <= started < 21_000_000  # vector a only


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 3000), min_size=0, max_size=4),
    words=st.integers(1, 700),
)
def test_chunks_reassemble_exactly(lengths: list[int], words: int) -> None:
    rng = np.random.default_rng(len(lengths) * 1000 + words)
    vectors = [(f"v{i}", rng.standard_normal(n).astype(np.float32)) for i, n in enumerate(lengths)]
    chunk_bytes = 4 * words
    receiver = VectorReceiver(9, headers(vectors), max_length=3000, chunk_bytes=chunk_bytes)
    count = 0
    for _, vector in vectors:
        for message in chunk_messages(9, vector, chunk_bytes):
            chunk = read_chunk(message)
            assert chunk is not None
            assert 0 < len(chunk.data) <= chunk_bytes
            receiver.add(chunk)
            count += 1
    assert count == sum(-(-4 * n // chunk_bytes) for n in lengths)
    assert receiver.complete
    got = receiver.result()
    for name, vector in vectors:
        np.testing.assert_array_equal(got[name], vector)


def test_malformed_chunk_streams_are_refused() -> None:
    announce = [pb.VectorHeader(name="update", length=3)]
    with pytest.raises(ProtocolError, match="at most 2 are accepted"):
        VectorReceiver(1, announce, max_length=2, chunk_bytes=1024)
    receiver = VectorReceiver(1, announce, max_length=3, chunk_bytes=1024)
    with pytest.raises(ProtocolError, match="chunk for task 2"):
        receiver.add(pb.Chunk(task=2, data=b"\0" * 4))
    with pytest.raises(ProtocolError, match="multiple of 4"):
        receiver.add(pb.Chunk(task=1, data=b"\0" * 6))
    with pytest.raises(ProtocolError, match="overflow"):
        receiver.add(pb.Chunk(task=1, data=b"\0" * 16))
    with pytest.raises(ProtocolError, match="incomplete"):
        receiver.result()
    receiver.add(pb.Chunk(task=1, data=b"\0" * 12))
    with pytest.raises(ProtocolError, match="more chunks"):
        receiver.add(pb.Chunk(task=1, data=b"\0" * 4))
    twice = [pb.VectorHeader(name="a", length=1)] * 2
    with pytest.raises(ProtocolError, match="distinct"):
        VectorReceiver(1, twice, max_length=3, chunk_bytes=1024)


def test_training_config_round_trip() -> None:
    config = TrainingConfig(
        algorithm="fedprox",
        train={"lr": 0.25, "epochs": 2, "batch_size": 8, "optimizer": "adam", "momentum": 0.0,
               "weight_decay": 0.001},
        algorithm_options={"mu": 0.01, "server_lr": 1.0},
        stages=(StageOptions("clip", {"max_norm": 5.0}),),
        loss="cross_entropy",
    )  # fmt: skip
    wire = pb.TrainingConfig.FromString(config_to_pb(config).SerializeToString())
    assert config_from_pb(wire) == config
    with pytest.raises(ValueError, match="option 'betas' must be a number"):
        TrainingConfig("fedadam", {"lr": 0.1}, {"betas": (0.9, 0.99)})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    "privacy",
    [
        PrivacyOptions("gaussian", clip=0.5, noise_multiplier=1.1),
        PrivacyOptions("gaussian", 1.0, 1.1, target_quantile=0.5, clip_learning_rate=0.2,
                       count_stddev=0.0),
    ],
)  # fmt: skip
def test_privacy_options_round_trip(privacy: PrivacyOptions) -> None:
    train = {"lr": 0.1, "epochs": 1, "batch_size": 8, "optimizer": "sgd", "momentum": 0.0,
             "weight_decay": 0.0}  # fmt: skip
    config = TrainingConfig("fedavg", train, privacy=privacy)
    wire = pb.TrainingConfig.FromString(config_to_pb(config).SerializeToString())
    assert config_from_pb(wire) == config
    bare = config_to_pb(replace(config, privacy=None))
    plain = pb.TrainingConfig.FromString(bare.SerializeToString())
    assert not plain.HasField("privacy")
    assert config_from_pb(plain).privacy is None


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (pb.PrivacyConfig(mechanism="distributed", clip=1, noise_multiplier=1),
         "mechanism 'distributed' does not run at sites"),
        (pb.PrivacyConfig(mechanism="gaussian", clip=0, noise_multiplier=1),
         "privacy clip must be a finite number > 0, got 0.0"),
        (pb.PrivacyConfig(mechanism="gaussian", clip=1, noise_multiplier=float("nan")),
         "privacy noise_multiplier must be a finite number > 0"),
        (pb.PrivacyConfig(mechanism="gaussian", clip=1, noise_multiplier=1, target_quantile=0.5),
         "adaptive clipping needs all of"),
    ],
)  # fmt: skip
def test_bad_privacy_options_are_a_protocol_error(message: pb.PrivacyConfig, reason: str) -> None:
    config = config_to_pb(TrainingConfig("fedavg", {"lr": 0.1}))
    config.privacy.CopyFrom(message)
    with pytest.raises(ProtocolError, match=re.escape(reason)):
        config_from_pb(config)
