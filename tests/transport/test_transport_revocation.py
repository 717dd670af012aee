"""Mutual TLS in one process: a site joins with its certificate, trains, and once the CA revokes
that certificate its next task fails, its stream is closed and it cannot come back."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from fedloom.core.layout import Field, Layout, Vector
from fedloom.core.messages import Broadcast, ClientResult
from fedloom.engine.tasks import Evaluation, Failure, TrainTask
from fedloom.pki import Verifier, init_ca, issue, revoke
from fedloom.transport import (
    GrpcExecutor,
    ServerCredentials,
    ServiceConfig,
    Site,
    SiteCredentials,
    SiteRefused,
    TrainingConfig,
)

LAYOUT = Layout((Field("w", (4,)),))


class Echo:
    def train(self, broadcast: Broadcast) -> ClientResult:
        return ClientResult(broadcast.params + 1, 2)

    def evaluate(self, params: Vector) -> Evaluation:
        return Evaluation(0)


def test_revoked_site_is_cut_off(tmp_path: Path) -> None:
    fed = init_ca(tmp_path / "fed")
    issue(fed.root, "server", server=True)
    issue(fed.root, "clinic")
    config = ServiceConfig(
        run="r",
        layout=LAYOUT,
        training=TrainingConfig("fedavg", {"lr": 0.1}),
        sites=("clinic",),
        verifier=Verifier(fed.root),
        heartbeat=60.0,
    )
    server = ServerCredentials(
        fed.cert("server").read_bytes(), fed.key("server").read_bytes(), fed.ca_cert.read_bytes()
    )
    with GrpcExecutor(config, address="127.0.0.1:0", credentials=server, deadline=10) as executor:
        site = Site(
            target=f"127.0.0.1:{executor.port}",
            name="ignored-under-tls",
            layout=LAYOUT,
            prepare=lambda _: Echo(),
            credentials=SiteCredentials(
                fed.cert("clinic").read_bytes(),
                fed.key("clinic").read_bytes(),
                fed.ca_cert.read_bytes(),
            ),
        )
        outcome: list[BaseException | str] = []

        def take_part() -> None:
            try:
                outcome.append(site.run())
            except BaseException as error:
                outcome.append(error)

        thread = threading.Thread(target=take_part, daemon=True)
        thread.start()
        assert executor.wait_for_sites(1, timeout=30)
        assert executor.connected() == ["clinic"]  # the name comes from the certificate
        params = np.zeros(4, np.float32)
        (reply,) = executor.run([TrainTask(0, Broadcast(0, params, seed=0))])
        assert isinstance(reply, ClientResult)
        np.testing.assert_array_equal(reply.update, np.ones(4, np.float32))

        revoke(fed.root, "clinic")
        (reply,) = executor.run([TrainTask(0, Broadcast(1, params, seed=0))])
        assert isinstance(reply, Failure)
        assert reply.reason == "site clinic: certificate revoked"
        thread.join(timeout=30)
    assert len(outcome) == 1
    assert isinstance(outcome[0], SiteRefused)
    with pytest.raises(
        SiteRefused, match=r"certificate of 'clinic' \(serial [0-9a-f]+\) is revoked"
    ):
        raise outcome[0]
