"""Secure aggregation's messages at the transport edge: every typed message survives protobuf
bytes unchanged, masked vectors travel packed to the ring's width in chunks that join to exactly
``pack_ring``, sizes other than the round's are refused, and a site that does not speak the
protocol is refused a secure run when it joins."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedloom.core.layout import Field, Layout
from fedloom.secagg.messages import (
    EncryptedShare,
    KeyAdvertisement,
    KeyRoster,
    MaskedInput,
    MaskingRequest,
    SecureTask,
    Setup,
    SharedKeys,
    UnmaskRequest,
    UnmaskShares,
    pack_ring,
)
from fedloom.transport import GrpcExecutor, ServiceConfig, Site, SiteRefused, StageOptions
from fedloom.transport import TrainingConfig as WireConfig
from fedloom.transport.codec import (
    ProtocolError,
    WireMessage,
    chunk_of,
    read_site_message,
    serialize_message,
)
from fedloom.transport.proto.v1 import fedloom_pb2 as pb
from fedloom.transport.secure_codec import (
    PackedReceiver,
    advertisement_from_pb,
    packed_chunks,
    reply_to_pb,
    request_from_pb,
    request_to_pb,
    setup_from_pb,
    setup_to_pb,
    shared_keys_from_pb,
    unmask_shares_from_pb,
)
from fedloom.transport.session import Session, Traffic

SETUP = Setup(
    round=3, cohort=(0, 2, 5), degree=2, threshold=2, bits=20, scale=1234.5, clip=10.0,
    max_weight=1000, weighted=True, dims=10,
)  # fmt: skip


def _wire(message: pb.ServerMessage | pb.SiteMessage | WireMessage) -> Any:
    """``message`` through its serialized bytes, as the other side's gRPC stream reads it (a
    site's chunks, serialized already, arrive as :class:`ChunkView` s)."""
    raw = serialize_message(message)
    if isinstance(message, pb.ServerMessage):
        return pb.ServerMessage.FromString(raw)
    return read_site_message(raw)


def test_requests_and_replies_survive_the_wire() -> None:
    assert (
        setup_from_pb(pb.SecureSetup.FromString(setup_to_pb(SETUP).SerializeToString()), dims=10)
        == SETUP
    )
    keys = tuple(KeyAdvertisement(c, os.urandom(32), os.urandom(32)) for c in SETUP.cohort)
    shares = tuple(EncryptedShare(s, 2, os.urandom(116)) for s in (0, 5))
    session = os.urandom(32)
    for request in (
        KeyRoster(keys, (0, 5)),
        MaskingRequest(session, shares),
        UnmaskRequest(session, (0, 2), (5,)),
    ):
        message = _wire(request_to_pb(7, SecureTask(2, request)))
        kind = message.WhichOneof("kind")
        assert getattr(message, kind).task == 7
        assert request_from_pb(getattr(message, kind)) == SecureTask(2, request)

    limbs = {0: np.arange(11, dtype=np.uint32), 2: np.arange(11, 22, dtype=np.uint32)}
    unmask = UnmaskShares(session, 2, limbs, {5: np.full(11, 2**31 - 2, dtype=np.uint32)})
    (message,) = reply_to_pb(9, unmask, bits=20, chunk_bytes=1024)
    back = unmask_shares_from_pb(_wire(message).unmask_shares)
    assert (back.session, back.client) == (session, 2)
    for mine, theirs in (
        (unmask.seed_shares, back.seed_shares),
        (unmask.key_shares, back.key_shares),
    ):
        assert mine.keys() == theirs.keys()
        for owner in mine:
            np.testing.assert_array_equal(mine[owner], theirs[owner])
    (message,) = reply_to_pb(9, keys[1], bits=20, chunk_bytes=1024)
    assert advertisement_from_pb(_wire(message).key_advertisement) == keys[1]
    shared = SharedKeys(session, 2, shares)
    (message,) = reply_to_pb(9, shared, bits=20, chunk_bytes=1024)
    assert shared_keys_from_pb(_wire(message).shared_keys) == shared


@settings(max_examples=60, deadline=None)
@given(
    bits=st.integers(8, 32),
    length=st.integers(1, 3000),
    chunk_bytes=st.integers(32, 900),
    seed=st.integers(0, 2**32 - 1),
)
def test_masked_vectors_travel_packed_in_chunks(
    bits: int, length: int, chunk_bytes: int, seed: int
) -> None:
    vector = np.random.default_rng(seed).integers(0, 2**bits, length, dtype=np.uint64)
    vector = vector.astype(np.uint32)
    parts = list(packed_chunks(vector, bits, chunk_bytes))
    assert b"".join(parts) == pack_ring(vector, bits)
    assert all(0 < len(p) <= chunk_bytes for p in parts)
    session = os.urandom(32)
    messages = [
        _wire(m)
        for m in reply_to_pb(4, MaskedInput(session, 5, vector), bits=bits, chunk_bytes=chunk_bytes)
    ]
    receiver = PackedReceiver(
        messages[0].masked_input, length=length, bits=bits, chunk_bytes=chunk_bytes
    )
    for message in messages[1:]:
        receiver.add(chunk_of(message))
    assert receiver.complete
    result = receiver.result()
    assert (result.session, result.client) == (session, 5)
    np.testing.assert_array_equal(result.vector, vector)


def test_wrong_sizes_are_refused_by_the_server_session() -> None:
    async def check() -> None:
        session = Session("site-x", "peer", max_length=10, chunk_bytes=1024, traffic=Traffic())
        future = session.expect(1, "mask", masked=(11, 20))
        header = pb.MaskedInput(task=1, session=b"s" * 32, client=2, length=12, bits=20)
        with pytest.raises(ProtocolError, match="12 entries of 20 bits; this round takes 11"):
            session.receive(pb.SiteMessage(masked_input=header))
        header.length, header.bits = 11, 32
        with pytest.raises(ProtocolError, match="11 entries of 32 bits"):
            session.receive(pb.SiteMessage(masked_input=header))
        header.bits = 20  # 11 entries of 20 bits: 28 bytes
        session.receive(pb.SiteMessage(masked_input=header))
        session.receive(pb.SiteMessage(chunk=pb.Chunk(task=1, data=b"\1" * 20)))
        with pytest.raises(ProtocolError, match="overflow the 28-byte masked input"):
            session.receive(pb.SiteMessage(chunk=pb.Chunk(task=1, data=b"\1" * 9)))
        session.receive(pb.SiteMessage(chunk=pb.Chunk(task=1, data=b"\1" * 8)))
        answer = await future
        assert isinstance(answer, MaskedInput)
        assert answer.vector.shape == (11,)
        # A reply of another round's kind is refused, naming the task.
        session.expect(2, "share")
        with pytest.raises(ProtocolError, match="a unmask reply to task 2, which is a share task"):
            session.receive(pb.SiteMessage(unmask_shares=pb.UnmaskShares(task=2)))

    asyncio.run(check())


def test_setup_for_another_model_is_refused() -> None:
    with pytest.raises(ProtocolError, match="for 10 parameters; this model has 11"):
        setup_from_pb(setup_to_pb(SETUP), dims=11)


def test_site_without_secure_aggregation_is_refused_a_secure_run() -> None:
    layout = Layout((Field("w", (10,)),))
    training = WireConfig(
        "fedavg", {"lr": 0.1}, stages=(StageOptions("secure_sum", {"clip": 1.0}),)
    )
    config = ServiceConfig(
        run="r", layout=layout, training=training, sites=("relay",), verifier=None
    )
    with GrpcExecutor(config, address="127.0.0.1:0", credentials=None) as executor:
        site = Site(
            target=f"127.0.0.1:{executor.port}", name="relay", layout=layout,
            prepare=lambda _: None, credentials=None, secure=False,  # type: ignore[arg-type,return-value]
        )  # fmt: skip
        failure: list[BaseException] = []

        def run() -> None:
            try:
                site.run()
            except SiteRefused as error:
                failure.append(error)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(timeout=30)
    assert len(failure) == 1
    assert "site relay's client does not speak it" in str(failure[0])
    assert "'secagg.v1'" in str(failure[0])
