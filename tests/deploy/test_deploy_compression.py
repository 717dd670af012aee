"""Compressed payloads over gRPC: a deployed run whose sites encode their updates (QSGD) and
whose server broadcasts float16 reaches the simulated run's parameters with far fewer bytes on
the wire, and a site whose payload is damaged in transit is rejected by name."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
from deploy_helpers import (
    HERE,
    experiment_text,
    federation,
    finish,
    free_port,
    start_relay,
    start_server,
    start_site,
    stop,
    write_site_data,
)

from fedloom.compression.quantizers import Uniform
from fedloom.deploy import training_config
from fedloom.deploy.training import site_algorithm
from fedloom.experiment import Experiment
from fedloom.linear import SoftmaxRegression
from fedloom.runner import run_experiment
from fedloom.store import RunStore

SITES = ["site-a", "site-b", "site-c"]


def compressed(text: str, broadcast: str = '"float16"') -> str:
    """``text`` with a broadcast codec and a QSGD stage ending the pipeline."""
    marked = text.replace('name = "fedavg"\n', f'name = "fedavg"\nbroadcast = {broadcast}\n')
    assert marked != text
    return marked + '\n[[stages]]\nkind = "qsgd"\nlevels = 16\n'


def test_compressed_grpc_run_equals_simulation(tmp_path: Path) -> None:
    text = compressed(experiment_text(rounds=2, cohort=3, federated_eval=False))
    experiment = Experiment.from_toml(text)
    (tmp_path / "exp.toml").write_text(text)
    fed = federation(tmp_path / "fed", SITES)
    data = write_site_data(experiment, tmp_path / "data")

    server = start_server(tmp_path, tmp_path / "exp.toml", fed, "--deadline", "60")
    sites = [start_site(tmp_path, server.port, fed, s, d) for s, d in zip(SITES, data, strict=True)]
    try:
        assert finish(server.process) == 0, server.output()
        assert all(finish(s) == 0 for s in sites)
    finally:
        stop(server.process, *sites)

    with RunStore.open(tmp_path / "sim.db") as sim_store:
        simulated = run_experiment(experiment, sim_store)
    with RunStore.open(tmp_path / "runs" / "fedloom.db") as store:
        info = store.run(server.run_id)
        assert info.status == "completed"
        checkpoint = store.latest_checkpoint(info.id)
        assert checkpoint is not None
        rounds = store.rounds(info.id)
    np.testing.assert_allclose(checkpoint.state.params, simulated.history.params, atol=1e-5)
    size = checkpoint.state.params.nbytes  # one float32 model
    for deployed, local in zip(rounds, simulated.history.records, strict=True):
        assert deployed.accepted == local.accepted == (0, 1, 2)
        m = deployed.metrics
        assert m["bytes_up"] == local.metrics["bytes_up"]
        assert m["bytes_down"] == local.metrics["bytes_down"]
        # The wire carries the payloads plus each message's fields (metrics, seeds) and framing.
        assert m["bytes_up"] < m["wire_bytes_up"] < m["bytes_up"] + 3 * 200
        assert m["bytes_down"] < m["wire_bytes_down"] < m["bytes_down"] + 3 * 200
        # Uncompressed, three updates take more than 3 float32 models up and three broadcasts
        # as many down (test_deploy_equivalence pins those counts); here ~4.5 bits an entry go
        # up and 16 down.
        assert m["wire_bytes_up"] < 0.3 * 3 * size
        assert m["wire_bytes_down"] < 0.6 * 3 * size


def test_a_damaged_payload_is_rejected_by_site_name(tmp_path: Path) -> None:
    text = compressed(experiment_text(rounds=1, cohort=3, federated_eval=False))
    experiment = Experiment.from_toml(text)
    (tmp_path / "exp.toml").write_text(text)
    fed = federation(tmp_path / "fed", SITES)
    data = write_site_data(experiment, tmp_path / "data")

    server = start_server(tmp_path, tmp_path / "exp.toml", fed, "--deadline", "60")
    damaging = [str(HERE / "corrupting_site.py")]
    sites = [
        start_site(tmp_path, server.port, fed, "site-a", data[0]),
        start_site(tmp_path, server.port, fed, "site-b", data[1], launcher=damaging),
        start_site(tmp_path, server.port, fed, "site-c", data[2]),
    ]
    try:
        assert finish(server.process) == 0, server.output()
        assert all(finish(s) == 0 for s in sites)
    finally:
        stop(server.process, *sites)

    with RunStore.open(tmp_path / "runs" / "fedloom.db") as store:
        assert store.run(server.run_id).status == "completed"
        (record,) = store.rounds(server.run_id)
    assert record.accepted == (0, 2)
    (rejection,) = record.rejected
    assert rejection.client == 1
    assert "payload refused by stage" in rejection.reason
    assert "checksum mismatch" in rejection.reason
    rejected = (
        sqlite3.connect(tmp_path / "runs" / "fedloom.db")
        .execute(
            "SELECT s.site FROM participants p JOIN sites s "
            "ON s.run_id = p.run_id AND s.client = p.client "
            "WHERE p.run_id = ? AND p.status = 'rejected'",
            (server.run_id,),
        )
        .fetchall()
    )
    assert rejected == [("site-b",)]
    assert "the update from site site-b was rejected" in server.output()


def test_a_broadcast_table_crosses_the_wire_as_scalars() -> None:
    text = compressed(experiment_text(), broadcast='{ kind = "uniform", bits = 6 }')
    config = training_config(Experiment.from_toml(text), task="classification")
    assert config.algorithm_options["broadcast"] == "uniform"
    assert config.algorithm_options["broadcast.bits"] == 6
    codec = site_algorithm(config, SoftmaxRegression(features=64, classes=10)).broadcast
    assert isinstance(codec, Uniform)
    assert codec.bits == 6


RELAYED = """
name = "relayed-float16"

[data]
dataset = "digits"
clients = 2
test_fraction = 0.2
holdout = 0.2

[model]
kind = "softmax"

[train]
lr = 0.5
epochs = 2
batch_size = 2000

[algorithm]
name = "fedavg"
broadcast = "float16"

[run]
rounds = 2
cohort = 1.0
seed = 2
federated_eval = false
"""


def test_a_relay_forwards_the_encoded_broadcast(tmp_path: Path) -> None:
    # Full-batch steps make local training deterministic, so one relay over two sites equals
    # the flat run over two clients (see test_deploy_relay).
    experiment = Experiment.from_toml(RELAYED)
    (tmp_path / "exp.toml").write_text(RELAYED)
    fed = federation(tmp_path / "fed", ["relay-1", "s0", "s1"])
    data = write_site_data(experiment, tmp_path / "data")
    (tmp_path / "central.txt").write_text("relay-1\n")
    (tmp_path / "region.txt").write_text("s0\ns1\n")
    server = start_server(
        tmp_path, tmp_path / "exp.toml", fed, "--allowlist", str(tmp_path / "central.txt")
    )
    port = free_port()
    relay = start_relay(tmp_path, server.port, fed, "relay-1", port, tmp_path / "region.txt")
    members = [start_site(tmp_path, port, fed, f"s{i}", d) for i, d in enumerate(data)]
    try:
        assert finish(server.process) == 0, server.output()
        assert all(finish(p) == 0 for p in [relay, *members])
    finally:
        stop(server.process, relay, *members)

    with RunStore.open(tmp_path / "flat.db") as flat_store:
        flat = run_experiment(experiment, flat_store)
    with RunStore.open(tmp_path / "runs" / "fedloom.db") as store:
        checkpoint = store.latest_checkpoint(server.run_id)
        rounds = store.rounds(server.run_id)
    assert checkpoint is not None
    np.testing.assert_allclose(checkpoint.state.params, flat.history.params, atol=2e-6)
    size = checkpoint.state.params.nbytes
    for deployed in rounds:
        assert deployed.accepted == (0,)
        # The relay received the float16 model (half a float32 one) and sent a float32 mean.
        assert deployed.metrics["wire_bytes_down"] < 0.6 * size
        assert size < deployed.metrics["wire_bytes_up"] < size + 200
