"""What a site holds from a delta broadcast, as the server's session of it keeps track: set by
each training reply, forgotten on a failure or a missed deadline, never from a malformed digest."""

from __future__ import annotations

import asyncio

import numpy as np

from fedloom.core.messages import ClientResult
from fedloom.transport.codec import (
    FromSite,
    WireMessage,
    held_from_pb,
    held_to_pb,
    read_site_message,
    serialize_message,
)
from fedloom.transport.proto.v1 import fedloom_pb2 as pb
from fedloom.transport.session import Session, Traffic
from fedloom.transport.site import _train_reply

DIGEST = bytes(range(8))


def arrived(message: pb.SiteMessage | WireMessage) -> FromSite:
    """``message`` as the server's gRPC stream hands it to the session."""
    return read_site_message(serialize_message(message))


def test_a_report_needs_an_eight_byte_digest() -> None:
    assert held_from_pb(pb.Hello()) is None
    assert held_from_pb(pb.Hello(held=held_to_pb((3, DIGEST)))) == (3, DIGEST)
    assert held_from_pb(pb.Hello(held=pb.HeldModel(round=3, digest=DIGEST[:7]))) is None
    assert held_from_pb(pb.TrainReply(held=pb.HeldModel(round=0, digest=DIGEST))) == (0, DIGEST)


def test_the_session_follows_replies_failures_and_deadlines() -> None:
    result = ClientResult(np.ones(4, np.float32), 5)

    async def run() -> list[tuple[int, bytes] | None]:
        session = Session("site-x", "peer", 4, 1024, Traffic(), held=(1, DIGEST))
        seen = [session.held]
        session.expect(1, "train")
        for message in _train_reply(1, result, 1024, held_to_pb((2, DIGEST[::-1]))):
            session.receive(arrived(message))
        seen.append(session.held)
        session.expect(2, "train")
        session.receive(
            arrived(pb.SiteMessage(task_failed=pb.TaskFailed(task=2, reason="no model")))
        )
        seen.append(session.held)
        session.held = (3, DIGEST)
        session.expect(3, "train")
        session.cancel(3)
        seen.append(session.held)
        for message in _train_reply(3, result, 1024, held_to_pb((3, DIGEST))):  # late, still read
            session.receive(arrived(message))
        seen.append(session.held)
        return seen

    assert asyncio.run(run()) == [(1, DIGEST), (2, DIGEST[::-1]), None, None, (3, DIGEST)]


def test_a_deadline_that_passes_while_a_reply_arrives_drops_the_rest_quietly() -> None:
    """The reply's header came before the deadline, its chunks after: the session reads the
    chunks, drops them, and serves the site's next task (it used to fail an assertion)."""
    result = ClientResult(np.arange(600, dtype=np.float32), 5)

    async def run() -> tuple[int, object, bool]:
        session = Session("site-x", "peer", 4096, 1024, Traffic())
        first = session.expect(1, "train")
        messages = list(_train_reply(1, result, 1024))
        assert len(messages) > 2  # a header and several chunks
        session.receive(arrived(messages[0]))
        session.cancel(1)
        for message in messages[1:]:
            session.receive(arrived(message))
        second = session.expect(2, "train")
        for message in _train_reply(2, result, 1024):
            session.receive(arrived(message))
        answer = await second
        return len(session.pending), answer, first.done()

    pending, answer, first_done = asyncio.run(run())
    assert pending == 0
    assert not first_done
    assert isinstance(answer, ClientResult)
    np.testing.assert_array_equal(answer.update, result.update)
