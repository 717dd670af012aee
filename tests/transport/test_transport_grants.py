"""Upload grants (``upload.grant.v1``): a site that waits for an upload slot sends its reply's
header and nothing more until the server grants the slot, so its chunks stay at the site
instead of filling the server's stream window. What crosses the wire is counted by a TCP
forwarder between each site and the server."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import numpy as np
import pytest

from fedloom.core.layout import Field, Layout, Vector
from fedloom.core.messages import Broadcast, ClientResult
from fedloom.engine.tasks import EvaluateTask, Evaluation, Failure, TrainTask
from fedloom.transport import GrpcExecutor, ServiceConfig, Site, TrainingConfig

SIZE = 1_000_003  # 4 MB of float32
CHUNK = 64 << 10  # the server's stream window is one chunk


class Doubling:
    """Updates twice the parameters, after ``seconds``; evaluates to their sum."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds

    def train(self, broadcast: Broadcast) -> ClientResult:
        time.sleep(self.seconds)
        return ClientResult((2 * broadcast.params).astype(np.float32), 7, metrics={"m": 1.5})

    def evaluate(self, params: Vector) -> Evaluation:
        return Evaluation(3, {"sum": float(params.astype(np.float64).sum())})


class Forwarder:
    """Listens on 127.0.0.1 and forwards every connection to ``port``, counting the bytes that
    go towards it (``up``: what the site has put on the wire, HTTP/2 framing included)."""

    def __init__(self, port: int) -> None:
        self.port_to = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = 0
        self.rate = 0.0
        """Bytes a second towards the server, when > 0 (a slow link)."""
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                site, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.port_to))
            threading.Thread(target=self._pump, args=(site, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, site, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, up: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(1 << 16):
                if up:
                    if self.rate > 0:
                        time.sleep(len(data) / self.rate)
                    self.up += len(data)
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listener.close()


def _config(names: tuple[str, ...], grants: bool = True) -> ServiceConfig:
    layout = Layout((Field("w", (SIZE,)),))
    return ServiceConfig(
        run="r", layout=layout, training=TrainingConfig("fedavg", {"lr": 0.1}), sites=names,
        verifier=None, chunk_bytes=CHUNK, heartbeat=60.0, uploads=1, grants=grants,
    )  # fmt: skip


def _start(
    executor: GrpcExecutor, grants: dict[str, bool], delays: dict[str, float] | None = None
) -> dict[str, Forwarder]:
    layout = executor.config.layout
    forwarders = {name: Forwarder(executor.port) for name in grants}
    seconds = {name: (delays or {}).get(name, 0.0) for name in grants}
    for name, wants in grants.items():
        site = Site(
            target=f"127.0.0.1:{forwarders[name].port}", name=name, layout=layout,
            prepare=lambda _, s=seconds[name]: Doubling(s), credentials=None,
            grants=wants,
        )  # fmt: skip
        threading.Thread(target=site.run, daemon=True).start()
    assert executor.wait_for_sites(len(grants), timeout=30)
    return forwarders


@pytest.mark.parametrize(
    ("site", "server"),
    [(True, True), (False, True), (True, False)],
    ids=["grants", "old site", "old server"],
)
def test_a_waiting_site_sends_no_chunk_before_its_grant(site: bool, server: bool) -> None:
    # One upload slot, three sites answering at once; the first reply keeps the slot while its
    # consumer takes 0.5 s, so the other two wait. With grants they have sent only their
    # replies' headers meanwhile. A site without grants (one built before them, which this
    # server still serves), or a site that asks for them of a server that does not grant
    # (one built before them), has pushed a stream window of chunks into the server.
    names = ("s0", "s1", "s2")
    grants = site and server
    config = _config(names, grants=server)
    with GrpcExecutor(config, address="127.0.0.1:0", credentials=None, deadline=30) as ex:
        forwarders = _start(ex, dict.fromkeys(names, site))
        params = np.random.default_rng(0).standard_normal(SIZE).astype(np.float32)
        time.sleep(0.3)  # the connections settle
        before = {name: f.up for name, f in forwarders.items()}
        waiting: dict[str, int] = {}

        def consume(position: int, reply: object) -> None:
            assert isinstance(reply, ClientResult), reply
            np.testing.assert_array_equal(reply.update, 2 * (params + position))
            if not waiting:
                time.sleep(0.5)
                for name, forwarder in forwarders.items():
                    if name != names[position]:
                        waiting[name] = forwarder.up - before[name]

        tasks = [TrainTask(i, Broadcast(0, params + i, seed=i)) for i in range(3)]
        ex.run_each(tasks, consume)
        assert len(waiting) == 2
        if grants:
            # a header and a little HTTP/2 bookkeeping (window updates for the download)
            assert max(waiting.values()) < 4096, waiting
            assert ex.service.grants == 3
        else:
            assert min(waiting.values()) > CHUNK // 2, waiting
            assert ex.service.grants == 0
        for forwarder in forwarders.values():
            forwarder.close()


def test_a_site_whose_deadline_passes_while_it_waits_for_its_grant_takes_the_next_tasks() -> None:
    # s0 answers first and its upload, throttled to about 4 s, holds the only slot; s1 and s2
    # answer 0.3 s later and wait past the 3 s deadline. Every task of the round fails. An
    # evaluation then sent to s1 reaches it while it still waits for its grant: s1 keeps it,
    # uploads its late reply (read, then dropped) once granted, then answers it. s2 is a site
    # without grants, served alongside; every site answers the next round.
    names = ("s0", "s1", "s2")
    with GrpcExecutor(_config(names), address="127.0.0.1:0", credentials=None, deadline=3) as ex:
        forwarders = _start(ex, {"s0": True, "s1": True, "s2": False}, {"s1": 0.3, "s2": 0.3})
        params = np.random.default_rng(1).standard_normal(SIZE).astype(np.float32)
        forwarders["s0"].rate = 1e6  # 4 s for its 4 MB
        replies = ex.run([TrainTask(i, Broadcast(0, params + i, seed=i)) for i in range(3)])
        assert all(isinstance(r, Failure) for r in replies), replies
        assert all("did not answer within 3 s" in r.reason for r in replies)  # type: ignore[union-attr]
        assert forwarders["s0"].up < 4 * SIZE  # s0's upload goes on

        (evaluation,) = ex.run([EvaluateTask(1, params)])
        assert isinstance(evaluation, Evaluation), evaluation
        assert evaluation.num_examples == 3
        assert np.isclose(evaluation.metrics["sum"], params.astype(np.float64).sum())
        assert forwarders["s0"].up > 4 * SIZE  # s1 answered once s0's upload gave the slot up

        forwarders["s0"].rate = 0.0
        tasks = [TrainTask(i, Broadcast(1, params - i, seed=i)) for i in range(3)]
        for i, reply in enumerate(ex.run(tasks)):
            assert isinstance(reply, ClientResult), reply
            np.testing.assert_array_equal(reply.update, 2 * (params - i))
        assert sorted(ex.connected()) == list(names)
        for forwarder in forwarders.values():
            forwarder.close()
