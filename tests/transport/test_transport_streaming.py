"""Vectors far larger than the gRPC message limit stream through in chunks, both ways, and the
bytes counted per direction are exactly the frames protobuf's encoding predicts."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

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


class Slow(Doubling):
    """:class:`Doubling`, answering only after ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def train(self, broadcast: Broadcast) -> ClientResult:
        time.sleep(self.seconds)
        return super().train(broadcast)


def _sites(executor: GrpcExecutor, layout: Layout, delays: dict[str, float]) -> list[Site]:
    sites = [
        Site(
            target=f"127.0.0.1:{executor.port}",
            name=name,
            layout=layout,
            prepare=lambda _, s=seconds: Slow(s),
            credentials=None,
        )
        for name, seconds in delays.items()
    ]
    for site in sites:
        threading.Thread(target=site.run, daemon=True).start()
    assert executor.wait_for_sites(len(sites), timeout=30)
    return sites


def test_run_each_hands_replies_over_as_they_arrive() -> None:
    delays = {"slow": 1.5, "quick": 0.0, "middle": 0.5}
    layout = Layout((Field("w", (SIZE,)),))
    config = ServiceConfig(
        run="r", layout=layout, training=TrainingConfig("fedavg", {"lr": 0.1}),
        sites=tuple(delays), verifier=None, chunk_bytes=CHUNK, heartbeat=60.0,
    )  # fmt: skip
    with GrpcExecutor(config, address="127.0.0.1:0", credentials=None, deadline=60) as executor:
        _sites(executor, layout, delays)
        params = np.random.default_rng(1).standard_normal(SIZE).astype(np.float32)
        tasks = [TrainTask(i, Broadcast(0, params * (i + 1), seed=i)) for i in range(3)]
        handed: list[tuple[int, object]] = []
        executor.run_each(tasks, lambda i, reply: handed.append((i, reply)))
        assert [i for i, _ in handed] == [1, 2, 0]  # quick, middle, slow
        for i, reply in handed:
            assert isinstance(reply, ClientResult)
            np.testing.assert_array_equal(reply.update, 2 * (params * (i + 1)))


def test_one_upload_slot_still_collects_every_site_and_keeps_queued_sites() -> None:
    # Six sites answer at once; the server reads one reply's vectors at a time, and the
    # others wait unread past three heartbeat intervals without being dropped as silent.
    delays = {f"s{i}": 0.0 for i in range(6)}
    size = 8 * SIZE  # 32 MB: five uploads outlast the 0.6 s a silent site is given
    layout = Layout((Field("w", (size,)),))
    config = ServiceConfig(
        run="r", layout=layout, training=TrainingConfig("fedavg", {"lr": 0.1}),
        sites=tuple(delays), verifier=None, chunk_bytes=CHUNK, heartbeat=0.2, uploads=1,
    )  # fmt: skip
    with GrpcExecutor(config, address="127.0.0.1:0", credentials=None, deadline=60) as executor:
        _sites(executor, layout, delays)
        params = np.random.default_rng(2).standard_normal(size).astype(np.float32)
        for round_ in range(2):
            tasks = [TrainTask(i, Broadcast(round_, params + i, seed=i)) for i in range(6)]
            handed: dict[int, object] = {}
            executor.run_each(tasks, handed.__setitem__)
            assert sorted(handed) == list(range(6))
            for i, reply in handed.items():
                assert isinstance(reply, ClientResult), reply
                np.testing.assert_array_equal(reply.update, 2 * (params + i))
        assert len(executor.connected()) == 6


@pytest.mark.parametrize(("uploads", "want"), [(1, [1, 2, 3, 4]), (2, [2, 3, 4, 4])])
def test_a_streamed_reply_keeps_its_upload_slot_until_it_is_consumed(
    uploads: int, want: list[int]
) -> None:
    # Four sites answer at once and the consumer takes 0.4 s over each reply, ample time for
    # another 4 MB reply to cross loopback. A reply keeps its slot until consumed, so while the
    # consumer holds one, the server has read at most uploads − 1 more: with one slot nothing
    # else, with two one more. Replies wait at their sites, not in the server.
    delays = {f"s{i}": 0.0 for i in range(4)}
    layout = Layout((Field("w", (SIZE,)),))
    config = ServiceConfig(
        run="r", layout=layout, training=TrainingConfig("fedavg", {"lr": 0.1}),
        sites=tuple(delays), verifier=None, chunk_bytes=CHUNK, heartbeat=60.0, uploads=uploads,
    )  # fmt: skip
    with GrpcExecutor(config, address="127.0.0.1:0", credentials=None, deadline=20) as executor:
        _sites(executor, layout, delays)
        params = np.random.default_rng(3).standard_normal(SIZE).astype(np.float32)
        tasks = [TrainTask(i, Broadcast(0, params + i, seed=i)) for i in range(4)]
        replied: list[int] = []

        def slow(position: int, reply: object) -> None:
            assert isinstance(reply, ClientResult), reply
            np.testing.assert_array_equal(reply.update, 2 * (params + position))
            time.sleep(0.4)
            view = executor.snapshot()
            assert view is not None
            # no round in flight: every reply of the call has arrived
            replied.append(len(tasks) if view.round is None else view.round.replied)

        executor.run_each(tasks, slow)
        assert replied == want

        # A consumer that fails gives every slot back: the next round reads every reply.
        def failing(position: int, reply: object) -> None:
            raise RuntimeError("the engine failed")

        with pytest.raises(RuntimeError, match="the engine failed"):
            executor.run_each(tasks, failing)
        handed: dict[int, object] = {}
        executor.run_each([replace_round(t, 1) for t in tasks], handed.__setitem__)
        assert sorted(handed) == [0, 1, 2, 3]
        assert all(isinstance(r, ClientResult) for r in handed.values()), handed


def replace_round(task: TrainTask, round_: int) -> TrainTask:
    b = task.broadcast
    return TrainTask(task.client, Broadcast(round_, b.params, seed=b.seed))


def test_upload_slots_must_be_a_positive_integer() -> None:
    layout = Layout((Field("w", (4,)),))
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="uploads must be an integer >= 1"):
            ServiceConfig(
                run="r", layout=layout, training=TrainingConfig("fedavg", {}),
                sites=("a",), verifier=None, uploads=bad,  # type: ignore[arg-type]
            )  # fmt: skip
