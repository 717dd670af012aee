"""Vectors far larger than the gRPC message limit stream through in chunks, both ways, and the
bytes counted per direction are exactly the frames protobuf's encoding predicts."""

from __future__ import annotations

import threading

import numpy as np

from fedloom.core.layout import Field, Layout, Vector
from fedloom.core.messages import Broadcast, ClientResult
from fedloom.engine.tasks import EvaluateTask, Evaluation, Failure, TrainTask
from fedloom.transport import GrpcExecutor, ServiceConfig, Site, TrainingConfig
from fedloom.transport.server import message_limit

SIZE = 1_000_003  # 4 MB of float32, an odd length so the last chunk is partial
CHUNK = 64 << 10


def _varint(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def _chunk_frames(task: int, nbytes: int, chunk: int) -> int:
    """Bytes of the chunk messages for one vector: ``ServerMessage{chunk: Chunk{task, data}}``
    (or ``SiteMessage``; both put the chunk in field 6), plus gRPC's 5-byte frame each."""
    total = 0
    for start in range(0, nbytes, chunk):
        data = min(chunk, nbytes - start)
        inner = 1 + _varint(task) + 1 + _varint(data) + data
        total += 1 + _varint(inner) + inner + 5
    return total


class Doubling:
    """A site program whose update is twice the parameters it was sent."""

    def train(self, broadcast: Broadcast) -> ClientResult:
        return ClientResult((2 * broadcast.params).astype(np.float32), 7, metrics={"m": 1.5})

    def evaluate(self, params: Vector) -> Evaluation:
        return Evaluation(3, {"sum": float(params.astype(np.float64).sum())})


def test_large_vectors_stream_in_chunks() -> None:
    assert 30 * message_limit(CHUNK) < 4 * SIZE
    layout = Layout((Field("w", (SIZE,)),))
    config = ServiceConfig(
        run="r", layout=layout, training=TrainingConfig("fedavg", {"lr": 0.1}),
        sites=("only",), verifier=None, chunk_bytes=CHUNK, heartbeat=60.0,
    )  # fmt: skip
    with GrpcExecutor(config, address="127.0.0.1:0", credentials=None, deadline=60) as executor:
        site = Site(
            target=f"127.0.0.1:{executor.port}", name="only", layout=layout,
            prepare=lambda _: Doubling(), credentials=None,
        )  # fmt: skip
        thread = threading.Thread(target=site.run, daemon=True)
        thread.start()
        assert executor.wait_for_sites(1, timeout=30)
        params = np.random.default_rng(0).standard_normal(SIZE).astype(np.float32)
        before = executor.traffic()
        (reply,) = executor.run([TrainTask(0, Broadcast(3, params, seed=11))])
        down, up = (a - b for a, b in zip(executor.traffic(), before, strict=True))
        assert isinstance(reply, ClientResult)
        np.testing.assert_array_equal(reply.update, 2 * params)
        assert reply.num_examples == 7
        assert reply.metrics == {"m": 1.5}
        # The first task is number 1; headers are small, chunks are what the formula says.
        assert 0 < down - _chunk_frames(1, 4 * SIZE, CHUNK) < 200
        assert 0 < up - _chunk_frames(1, 4 * SIZE, CHUNK) < 200
        (evaluation,) = executor.run([EvaluateTask(0, params)])
        assert isinstance(evaluation, Evaluation)
        assert evaluation.num_examples == 3
        assert np.isclose(evaluation.metrics["sum"], params.astype(np.float64).sum())
        (missing,) = executor.run([TrainTask(5, Broadcast(3, params, seed=1))])
        assert isinstance(missing, Failure)
        assert "not in the population" in missing.reason
    thread.join(timeout=30)
    assert not thread.is_alive()  # the site left when the server said goodbye
    assert site.tasks_done == 2
