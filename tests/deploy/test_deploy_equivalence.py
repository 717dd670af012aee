"""A server and three site processes over mutual TLS on 127.0.0.1 train to the parameters the
in-process engine reaches with the same seed, and the store names who took part."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
from deploy_helpers import (
    environment,
    experiment_text,
    federation,
    finish,
    start_server,
    start_site,
    stop,
    write_site_data,
)

from fedloom.experiment import Experiment
from fedloom.runner import run_experiment
from fedloom.store import RunStore

SITES = ["site-a", "site-b", "site-c"]


def test_grpc_run_equals_simulation(tmp_path: Path) -> None:
    # SCAFFOLD: extra vectors travel both ways and each site keeps its control variate.
    text = experiment_text(algorithm="scaffold", rounds=3, cohort=2)
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
        sim_checkpoint = sim_store.latest_checkpoint(simulated.run_id)
        assert sim_checkpoint is not None
    with RunStore.open(tmp_path / "runs" / "fedloom.db") as store:
        info = store.run(server.run_id)
        assert info.status == "completed"
        checkpoint = store.latest_checkpoint(info.id)
        assert checkpoint is not None
        rounds = store.rounds(info.id)
        assert store.sites(info.id) == SITES
        trail = store.audit(info.id)
        verification = trail.verify(rounds=[r.round for r in rounds], finished=True)
        entries = trail.entries()
    # The deployed run's audit trail names sites by the identity their certificates proved.
    assert verification.ok, verification.problem
    joined = {e.payload["identity"] for e in entries if e.kind == "join"}
    assert joined == {SITES[c] for r in rounds for c in r.cohort}
    round_entries = [e.payload for e in entries if e.kind == "round"]
    assert [p["participants"] for p in round_entries] == [
        [SITES[c] for c in r.accepted] for r in rounds
    ]
    assert all(len(p["updates"]) == len(p["participants"]) for p in round_entries)
    # ... trained by a server whose malloc shares one arena (ServerOptions.malloc_arenas)
    assert "malloc: at most 1 arena; chunks kept on the heap" in server.output()
    # ... whose sites waited for upload grants before sending their replies' vectors
    joins = [line for line in server.output().splitlines() if " joined from " in line]
    assert {s for s in SITES if any(f"site {s} joined" in line for line in joins)} == set(SITES)
    assert all(line.endswith("(upload grants)") for line in joins), joins
    np.testing.assert_allclose(checkpoint.state.params, simulated.history.params, atol=1e-5)
    assert set(checkpoint.state.extras) == {"control"}
    np.testing.assert_allclose(
        checkpoint.state.extras["control"], sim_checkpoint.state.extras["control"], atol=1e-5
    )
    for deployed, local in zip(rounds, simulated.history.records, strict=True):
        assert deployed.cohort == local.cohort
        assert deployed.accepted == local.accepted
        assert np.isclose(deployed.metrics["test_accuracy"], local.metrics["test_accuracy"])
        assert np.isclose(
            deployed.metrics["client_test_accuracy"], local.metrics["client_test_accuracy"]
        )
        # Down: params and SCAFFOLD's c to 2 sites, then params to 3 for evaluation; up: an
        # update and a control-variate change from 2. Frames add a few bytes per chunk.
        size = checkpoint.state.params.nbytes
        assert 7 * size < deployed.metrics["wire_bytes_down"] < 7 * size + 2000
        assert 4 * size < deployed.metrics["wire_bytes_up"] < 4 * size + 2000
    named = (
        sqlite3.connect(tmp_path / "runs" / "fedloom.db")
        .execute(
            "SELECT p.round, s.site FROM participants p JOIN sites s "
            "ON s.run_id = p.run_id AND s.client = p.client "
            "WHERE p.run_id = ? AND p.status = 'accepted' ORDER BY p.round, p.position",
            (server.run_id,),
        )
        .fetchall()
    )
    assert [site for _, site in named] == [SITES[c] for r in rounds for c in r.accepted]
    shown = subprocess.run(
        [sys.executable, "-m", "fedloom", "show", server.run_id, "--json"],
        cwd=tmp_path,
        env=environment(tmp_path),
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(shown.stdout)["sites"] == SITES
