"""What the gRPC server tells an observer, read from another thread while a round is in flight:
the connected site with the subject its certificate proved, and the round's tasks handed out,
streamed, answered and failed (mutual TLS in one process)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
from cryptography import x509

from fedloom.core.layout import Field, Layout, Vector
from fedloom.core.messages import Broadcast, ClientResult
from fedloom.engine.tasks import EvaluateTask, Evaluation, Failure, Reply, Task, TrainTask
from fedloom.pki import Verifier, init_ca, issue
from fedloom.transport import (
    FederationView,
    GrpcExecutor,
    RoundView,
    ServerCredentials,
    ServiceConfig,
    Site,
    SiteCredentials,
    TrainingConfig,
)

LAYOUT = Layout((Field("w", (4,)),))
T = TypeVar("T")


class Gated:
    """Trains and evaluates only once the test opens the gate, so a round stays in flight."""

    def __init__(self, gate: threading.Event) -> None:
        self.gate = gate

    def train(self, broadcast: Broadcast) -> ClientResult:
        self.gate.wait(30)
        return ClientResult(broadcast.params + 1, 2)

    def evaluate(self, params: Vector) -> Evaluation:
        self.gate.wait(30)
        return Evaluation(3, {"accuracy": 0.5})


def until(read: Callable[[], T], ok: Callable[[T], bool], what: str) -> T:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        value = read()
        if ok(value):
            return value
        time.sleep(0.02)
    raise AssertionError(f"never saw {what}; last: {value!r}")


def in_flight(executor: GrpcExecutor, tasks: list[Task]) -> tuple[threading.Thread, list[Reply]]:
    replies: list[Reply] = []
    thread = threading.Thread(target=lambda: replies.extend(executor.run(tasks)), daemon=True)
    thread.start()
    return thread, replies


def round_of(executor: GrpcExecutor) -> RoundView | None:
    view = executor.snapshot()
    assert view is not None
    return view.round


def test_snapshot_shows_the_site_and_the_round_in_flight(tmp_path: Path) -> None:
    fed = init_ca(tmp_path / "fed")
    issue(fed.root, "server", server=True)
    issue(fed.root, "clinic")
    issue(fed.root, "absent")  # on the allow-list, never connects
    config = ServiceConfig(
        run="run-7", layout=LAYOUT, training=TrainingConfig("fedavg", {"lr": 0.1}),
        sites=("clinic", "absent"), verifier=Verifier(fed.root), heartbeat=60.0,
    )  # fmt: skip
    server = ServerCredentials(
        fed.cert("server").read_bytes(), fed.key("server").read_bytes(), fed.ca_cert.read_bytes()
    )
    gate = threading.Event()
    serial = x509.load_pem_x509_certificate(fed.cert("clinic").read_bytes()).serial_number
    with GrpcExecutor(config, address="127.0.0.1:0", credentials=server, deadline=30) as executor:
        assert executor.snapshot() == FederationView("run-7", (), None)
        site = Site(
            target=f"127.0.0.1:{executor.port}", name="ignored-under-tls", layout=LAYOUT,
            prepare=lambda _: Gated(gate),
            credentials=SiteCredentials(fed.cert("clinic").read_bytes(),
                                        fed.key("clinic").read_bytes(), fed.ca_cert.read_bytes()),
        )  # fmt: skip
        before = time.time()
        threading.Thread(target=site.run, daemon=True).start()
        assert executor.wait_for_sites(1, timeout=30)
        joined = time.time()
        view = executor.snapshot()
        assert view is not None
        (clinic,) = view.sites
        assert (clinic.site, clinic.subject, clinic.serial) == ("clinic", "CN=clinic", serial)
        assert clinic.peer.startswith("ipv4:127.0.0.1:")
        assert before <= clinic.connected_at <= joined
        assert clinic.tasks == ()
        assert view.round is None

        params = np.zeros(4, np.float32)
        train: list[Task] = [TrainTask(c, Broadcast(3, params, seed=0)) for c in (0, 1)]
        thread, replies = in_flight(executor, train)
        # The absent site fails at once; the clinic's task is streamed out, then it trains.
        progress = until(
            lambda: round_of(executor), lambda r: r is not None and r.sent == 1, "the task sent"
        )
        assert progress is not None
        assert (progress.round, progress.phase, progress.tasks) == (3, "train", 2)
        assert (progress.replied, progress.failed) == (0, 1)
        view = executor.snapshot()
        assert view is not None
        assert view.sites[0].tasks == ("train",)
        assert view.sites[0].last_heard is not None
        gate.set()
        thread.join(30)
        assert isinstance(replies[0], ClientResult)
        assert isinstance(replies[1], Failure)
        assert replies[1].reason == "site absent is not connected"
        assert round_of(executor) is None  # between the engine's calls

        gate.clear()
        thread, replies = in_flight(executor, [EvaluateTask(0, params)])
        progress = until(
            lambda: round_of(executor), lambda r: r is not None and r.sent == 1, "the evaluation"
        )
        assert progress is not None
        assert (progress.round, progress.phase, progress.tasks, progress.failed) == (
            3, "evaluate", 1, 0,
        )  # fmt: skip
        gate.set()
        thread.join(30)
        assert replies == [Evaluation(3, {"accuracy": 0.5})]
    assert executor.snapshot() is None  # closed
