"""A two-level federation: two relays, each serving two sites, under one central server. With
FedAvg and deterministic local training (full-batch steps) it reaches the parameters of the
flat, in-process run over all four clients."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from deploy_helpers import (
    federation,
    finish,
    free_port,
    start_relay,
    start_server,
    start_site,
    stop,
    write_site_data,
)

from fedloom.experiment import Experiment
from fedloom.runner import run_experiment
from fedloom.store import RunStore

TEXT = """
name = "hierarchy"

[data]
dataset = "digits"
clients = 4
test_fraction = 0.2
holdout = 0.2

[model]
kind = "softmax"

[train]
lr = 0.5
epochs = 3
batch_size = 2000

[algorithm]
name = "fedavg"

[run]
rounds = 2
cohort = 1.0
seed = 2
"""


def test_relays_equal_a_flat_federation(tmp_path: Path) -> None:
    experiment = Experiment.from_toml(TEXT)
    (tmp_path / "exp.toml").write_text(TEXT)
    sites = ["s0", "s1", "s2", "s3"]
    fed = federation(tmp_path / "fed", ["relay-1", "relay-2", *sites])
    data = write_site_data(experiment, tmp_path / "data")
    (tmp_path / "central.txt").write_text("relay-1\nrelay-2\n")
    (tmp_path / "region-1.txt").write_text("s0\ns1\n")
    (tmp_path / "region-2.txt").write_text("s2\ns3\n")
    server = start_server(tmp_path, tmp_path / "exp.toml", fed, "--allowlist",
                          str(tmp_path / "central.txt"))  # fmt: skip
    ports = [free_port(), free_port()]
    relays = [
        start_relay(tmp_path, server.port, fed, f"relay-{r + 1}", ports[r],
                    tmp_path / f"region-{r + 1}.txt")
        for r in range(2)
    ]  # fmt: skip
    # s3 brings a policy the run meets: the relay passes the central run's terms on to it.
    (tmp_path / "policy.toml").write_text('models = ["softmax"]\nalgorithms = ["fedavg"]\n')
    policy = {"s3": ("--policy", str(tmp_path / "policy.toml"))}
    members = [
        start_site(tmp_path, ports[i // 2], fed, s, data[i], *policy.get(s, ()))
        for i, s in enumerate(sites)
    ]
    try:
        assert finish(server.process) == 0, server.output()
        assert all(finish(p) == 0 for p in [*relays, *members])
    finally:
        stop(server.process, *relays, *members)

    with RunStore.open(tmp_path / "flat.db") as flat_store:
        flat = run_experiment(experiment, flat_store)
    with RunStore.open(tmp_path / "runs" / "fedloom.db") as store:
        checkpoint = store.latest_checkpoint(server.run_id)
        rounds = store.rounds(server.run_id)
        assert store.sites(server.run_id) == ["relay-1", "relay-2"]
    assert checkpoint is not None
    assert [r.accepted for r in rounds] == [(0, 1), (0, 1)]
    np.testing.assert_allclose(checkpoint.state.params, flat.history.params, atol=2e-6)
    for deployed, local in zip(rounds, flat.history.records, strict=True):
        for metric in ("train_loss", "client_test_accuracy", "test_accuracy"):
            assert np.isclose(deployed.metrics[metric], local.metrics[metric], atol=1e-6)
