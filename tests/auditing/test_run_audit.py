"""A real run writes its audit trail: joins, rounds with hashes, provenance, the end; a resumed
run refuses to continue from a trail that fails verification, changing nothing."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import pytest

from fedloom.auditing import simulated_identity, vector_hash
from fedloom.compliance import compliance_report
from fedloom.experiment import Experiment
from fedloom.runner import run_experiment
from fedloom.store import RunStore, StoreError

pytest.importorskip("sklearn")

RUN = """
name = "audited"
[data]
dataset = "digits"
clients = 8
[model]
kind = "softmax"
[train]
lr = 0.1
[algorithm]
name = "fedavg"
[run]
rounds = 3
cohort = 5
seed = 1
federated_eval = false
"""


def test_a_run_writes_joins_rounds_provenance_and_its_end(tmp_path: Path) -> None:
    with RunStore.open(tmp_path / "fedloom.db") as store:
        outcome = run_experiment(Experiment.from_toml(RUN), store)
        trail = store.audit(outcome.run_id)
        entries = trail.entries()
        rounds = store.rounds(outcome.run_id)
        assert trail.verify(rounds=[r.round for r in rounds], finished=True).ok
        report = compliance_report(store, outcome.run_id)
    kinds = [e.kind for e in entries]
    assert kinds[0] == "run_started"
    assert kinds[-1] == "run_finished"
    assert kinds.count("round") == kinds.count("model") == 3
    everyone = {c for r in rounds for c in r.cohort}
    joins = [e.payload["identity"] for e in entries if e.kind == "join"]
    assert sorted(joins) == sorted(simulated_identity(c) for c in everyone)
    round_entries = [e.payload for e in entries if e.kind == "round"]
    models = [e.payload for e in entries if e.kind == "model"]
    for record, entry, model in zip(rounds, round_entries, models, strict=True):
        assert entry["participants"] == [simulated_identity(c) for c in record.accepted]
        assert sorted(entry["updates"]) == sorted(entry["participants"])
        assert all(len(h) == 64 for h in entry["updates"].values())
        assert model["parent"] == entry["model_sent"]
        assert model["participants"] == entry["participants"]
    # Provenance links: each round starts from the model the previous one produced, and the
    # last model's hash is the hash of the run's final parameters.
    for before, after in itertools.pairwise(models):
        assert after["parent"] == before["hash"]
    assert models[-1]["hash"] == vector_hash(outcome.history.params)
    assert "**Verified.**" in report
    assert "**no**: the server saw each site's update individually" in report
    assert "Differential privacy:** **no**" in report


def test_resume_refuses_a_tampered_trail_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "fedloom.db"
    text = RUN.replace("rounds = 3", "rounds = 4")
    with RunStore.open(path) as store:
        run_id = run_experiment(Experiment.from_toml(text), store).run_id
        store.finish(run_id, status="interrupted", stopped="pretend it stopped")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("UPDATE audit SET payload = '{\"round\": 1}' WHERE kind = 'round' AND seq = "
                 "(SELECT MIN(seq) FROM audit WHERE kind = 'round')")  # fmt: skip
    conn.close()
    before = dump(path)
    with (
        RunStore.open(path, create=False) as store,
        pytest.raises(
            StoreError,
            match=r"fails verification: entry \d+ \(round\): altered.*nothing was trained",
        ),
    ):
        run_experiment(Experiment.from_toml(text), store, resume=run_id)
    # Not a row changed: no reopen, no round, no checkpoint. (Opening the store put back the
    # dropped append-only trigger; that guard is not data.)
    assert dump(path) == before


def dump(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [line for line in conn.iterdump() if not line.startswith("CREATE TRIGGER")]
    finally:
        conn.close()
