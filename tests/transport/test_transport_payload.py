"""Encoded payloads on the wire: a site's reply with an encoded update reaches the server's session
byte for byte, in chunks after the extras; oversized or overflowing payloads are refused."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedloom import compression
from fedloom.core.messages import ClientResult
from fedloom.transport.codec import (
    PAYLOAD_SLACK,
    ProtocolError,
    VectorReceiver,
    chunk_of,
    max_payload,
    payload_chunk_messages,
    read_site_message,
    serialize_message,
    wire_bytes,
)
from fedloom.transport.proto.v1 import fedloom_pb2 as pb
from fedloom.transport.session import Session, Traffic
from fedloom.transport.site import _train_reply


def deliver(result: ClientResult, *, entries: int, chunk_bytes: int) -> tuple[object, int, int]:
    """``result`` sent as a site sends it, into a server session: (what the session made of it,
    the messages sent, the bytes counted up)."""

    async def run() -> tuple[object, int, int]:
        traffic = Traffic()
        session = Session("site-x", "peer", entries, chunk_bytes, traffic)
        future = session.expect(7, "train")
        messages = list(_train_reply(7, result, chunk_bytes))
        for message in messages:  # as the server's gRPC stream reads them
            session.receive(read_site_message(serialize_message(message)))
        assert traffic.up == sum(wire_bytes(m) for m in messages)
        return future.result(), len(messages), traffic.up

    return asyncio.run(run())


@settings(max_examples=40, deadline=None)
@given(entries=st.integers(1, 3000), extra=st.integers(0, 40), words=st.integers(1, 300))
def test_an_encoded_update_arrives_byte_for_byte(entries: int, extra: int, words: int) -> None:
    extra = min(extra, entries)  # no vector may be longer than the model
    rng = np.random.default_rng([entries, extra, words])
    update = rng.standard_normal(entries).astype(np.float32)
    payload = compression.qsgd().codec.encode(update, rng)
    extras = {"norm": rng.standard_normal(extra).astype(np.float32)}
    sent = ClientResult(np.zeros(0, np.float32), 12, extras, {"loss": 0.5}, payload=payload)
    chunk_bytes = 4 * words

    got, messages, up = deliver(sent, entries=entries, chunk_bytes=chunk_bytes)

    assert isinstance(got, ClientResult)
    assert got.payload == payload
    assert got.update.shape == (0,)
    np.testing.assert_array_equal(got.extras["norm"], extras["norm"])
    assert (got.num_examples, dict(got.metrics)) == (12, {"loss": 0.5})
    # One header, the extra's chunks, then the payload's: no float32 update on the wire.
    expected = 1 + -(-4 * extra // chunk_bytes) + -(-len(payload) // chunk_bytes)
    assert messages == expected
    assert len(payload) + 4 * extra < up < len(payload) + 4 * extra + 16 * messages + 60


def test_a_raw_update_still_travels_as_float32() -> None:
    update = np.arange(100, dtype=np.float32)
    got, messages, _ = deliver(ClientResult(update, 3), entries=100, chunk_bytes=1024)
    assert isinstance(got, ClientResult)
    assert got.payload is None
    np.testing.assert_array_equal(got.update, update)
    assert messages == 2


def test_payload_size_limit_is_the_float32_size_plus_slack() -> None:
    assert max_payload(1000) == 4000 + PAYLOAD_SLACK
    VectorReceiver(1, [], max_length=1000, chunk_bytes=1024, payload_length=max_payload(1000))
    with pytest.raises(ProtocolError, match=r"payload of 5025 bytes announced; at most 5024"):
        VectorReceiver(1, [], max_length=1000, chunk_bytes=1024, payload_length=5025)


def test_payload_chunks_may_not_overflow_or_exceed_the_chunk_size() -> None:
    receiver = VectorReceiver(3, [], max_length=100, chunk_bytes=64, payload_length=100)
    for message in payload_chunk_messages(3, bytes(range(90)), 64):
        receiver.add(chunk_of(read_site_message(message)))
    assert not receiver.complete
    with pytest.raises(ProtocolError, match="overflow task 3's payload of 100 bytes"):
        receiver.add(pb.Chunk(task=3, data=b"x" * 11))
    with pytest.raises(ProtocolError, match="chunks hold 1 to 64 bytes"):
        receiver.add(pb.Chunk(task=3, data=b"x" * 65))
    receiver.add(pb.Chunk(task=3, data=b"\xff" * 10))
    assert receiver.payload_result() == bytes(range(90)) + b"\xff" * 10


def test_a_reply_with_both_a_payload_and_an_update_is_refused() -> None:
    async def run() -> None:
        session = Session("site-x", "peer", 10, 1024, Traffic())
        session.expect(5, "train")
        header = pb.TrainReply(
            task=5, num_examples=1, vectors=[pb.VectorHeader(name="update", length=1)]
        )
        header.payload_length = 3
        session.receive(pb.SiteMessage(train_reply=header))
        session.receive(pb.SiteMessage(chunk=pb.Chunk(task=5, data=b"\0" * 4)))
        with pytest.raises(ProtocolError, match="encoded payload has no 'update'"):
            session.receive(pb.SiteMessage(chunk=pb.Chunk(task=5, data=b"abc")))

    asyncio.run(run())
