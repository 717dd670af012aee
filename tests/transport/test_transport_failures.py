"""Per-site failures stay per-site: a missed deadline, a late reply, a crashing program and a
peer that breaks the protocol each cost only that site its task."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np

from fedloom.core.layout import Field, Layout, Vector
from fedloom.core.messages import Broadcast, ClientResult
from fedloom.engine.tasks import Evaluation, Failure, TrainTask
from fedloom.transport import GrpcExecutor, ServiceConfig, Site, TrainingConfig
from fedloom.transport.codec import layout_to_pb
from fedloom.transport.proto.v1 import fedloom_pb2 as pb

LAYOUT = Layout((Field("w", (10,)),))


class Sleepy:
    """Sleeps ``first`` seconds on its first task, then answers at once."""

    def __init__(self, first: float) -> None:
        self.first = first

    def train(self, broadcast: Broadcast) -> ClientResult:
        time.sleep(self.first)
        self.first = 0.0
        return ClientResult(np.ones(10, np.float32), 1)

    def evaluate(self, params: Vector) -> Evaluation:
        return Evaluation(0)


class Crashing(Sleepy):
    def train(self, broadcast: Broadcast) -> ClientResult:
        raise ValueError("disk full")


def _site(port: int, name: str, program: object) -> Site:
    site = Site(
        target=f"127.0.0.1:{port}", name=name, layout=LAYOUT,
        prepare=lambda _: program, credentials=None,  # type: ignore[arg-type,return-value]
    )  # fmt: skip
    threading.Thread(target=site.run, daemon=True).start()
    return site


def test_failures_stay_with_their_site() -> None:
    config = ServiceConfig(
        run="r", layout=LAYOUT, training=TrainingConfig("fedavg", {"lr": 0.1}),
        sites=("slow", "crash", "rogue"), verifier=None, heartbeat=60.0,
    )  # fmt: skip
    params = np.zeros(10, np.float32)
    with GrpcExecutor(config, address="127.0.0.1:0", credentials=None, deadline=0.5) as executor:
        _site(executor.port, "slow", Sleepy(first=1.0))
        _site(executor.port, "crash", Crashing(0.0))
        assert executor.wait_for_sites(2, timeout=30)
        late, crashed, absent = executor.run(
            [TrainTask(c, Broadcast(0, params, seed=c)) for c in (0, 1, 2)]
        )
        assert isinstance(late, Failure)
        assert late.reason == "site slow did not answer within 0.5 s"
        assert isinstance(crashed, Failure)
        assert crashed.reason == "site crash: ValueError: disk full"
        assert isinstance(absent, Failure)
        assert absent.reason == "site rogue is not connected"

        # A peer that breaks the protocol loses its own stream, nothing else.
        channel = grpc.insecure_channel(f"127.0.0.1:{executor.port}")
        join = channel.stream_stream(
            "/fedloom.v1.Federation/Join", request_serializer=pb.SiteMessage.SerializeToString,
            response_deserializer=pb.ServerMessage.FromString,
        )  # fmt: skip
        hello = pb.SiteMessage(hello=pb.Hello(protocol_version=1, site="rogue",
                                              layout=layout_to_pb(LAYOUT)))  # fmt: skip
        bogus = pb.SiteMessage(chunk=pb.Chunk(task=99, data=b"\0" * 8))
        replies = list(join(iter([hello, bogus])))
        assert replies[0].WhichOneof("kind") == "welcome"
        channel.close()

        time.sleep(1.0)  # the slow site's late reply arrives now and is dropped quietly
        again = executor.run([TrainTask(0, Broadcast(1, params, seed=0))])
        assert isinstance(again[0], ClientResult)
        np.testing.assert_array_equal(again[0].update, np.ones(10, np.float32))
        assert sorted(executor.connected()) == ["crash", "slow"]


def test_silent_site_is_dropped_after_three_heartbeats() -> None:
    config = ServiceConfig(
        run="r", layout=LAYOUT, training=TrainingConfig("fedavg", {"lr": 0.1}),
        sites=("quiet",), verifier=None, heartbeat=0.2,
    )  # fmt: skip
    with GrpcExecutor(config, address="127.0.0.1:0", credentials=None, deadline=5) as executor:
        channel = grpc.insecure_channel(f"127.0.0.1:{executor.port}")
        join = channel.stream_stream(
            "/fedloom.v1.Federation/Join", request_serializer=pb.SiteMessage.SerializeToString,
            response_deserializer=pb.ServerMessage.FromString,
        )  # fmt: skip
        hello = pb.SiteMessage(hello=pb.Hello(protocol_version=1, site="quiet",
                                              layout=layout_to_pb(LAYOUT)))  # fmt: skip
        release = threading.Event()

        def requests() -> object:
            yield hello
            release.wait(30)  # then say nothing at all

        kinds = [m.WhichOneof("kind") for m in join(requests())]
        release.set()
        channel.close()
        # Welcome, then the server's own heartbeats, then it gives up on the silent site.
        assert kinds[0] == "welcome"
        assert set(kinds[1:]) == {"heartbeat"}
        assert executor.connected() == []
        (reply,) = executor.run([TrainTask(0, Broadcast(0, np.zeros(10, np.float32), seed=0))])
        assert isinstance(reply, Failure)
        assert reply.reason == "site quiet is not connected"
