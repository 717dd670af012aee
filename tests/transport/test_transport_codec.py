"""The wire codec: chunked vectors reassemble exactly; malformed chunk streams are refused;
training configuration survives the round trip as plain values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedloom.transport.codec import (
    ProtocolError,
    VectorReceiver,
    chunks,
    config_from_pb,
    config_to_pb,
    headers,
)
from fedloom.transport.config import StageOptions, TrainingConfig
from fedloom.transport.proto.v1 import fedloom_pb2 as pb


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
        for chunk in chunks(9, vector, chunk_bytes):
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
