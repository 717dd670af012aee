"""Several processes writing one store at the same time neither corrupt it nor fail."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from fedloom.store import RunStore

WORKER = r"""
import sys, time
from pathlib import Path
import numpy as np
from fedloom.engine.history import Rejection, RoundRecord
from fedloom.engine.rounds import ServerState
from fedloom.optimizers import OptimizerState
from fedloom.store import Checkpoint, RunStore

path, go, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
while not go.exists():
    time.sleep(0.005)
store = RunStore.open(path)
run_id = store.create_run(name=name, config="rounds = 50", seed=0, code_version="test")
rng = np.random.default_rng(abs(hash(name)) % 2**32)
for r in range(50):
    record = RoundRecord(r, (1, 2, 3), (1, 3), (Rejection(2, "late"),), {"loss": float(r)})
    params = rng.standard_normal(2000).astype(np.float32)
    state = ServerState(r + 1, params, OptimizerState(r, params, params), {}, (None,))
    store.record_round(run_id, record, checkpoint=Checkpoint(state, {1: {"c": params}}))
    if r % 10 == 0:
        store.runs()
store.finish(run_id, status="completed", stopped="completed 50 rounds")
store.close()
print(run_id)
"""


def test_four_processes_write_one_store_at_once(tmp_path: Path) -> None:
    path, go = tmp_path / "shared" / "fedloom.db", tmp_path / "go"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(path), str(go), f"worker{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    time.sleep(0.5)  # let every interpreter start and wait at the line
    go.touch()
    outputs = [w.communicate(timeout=120) for w in workers]
    for worker, (_out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
        assert err == ""
    run_ids = {out.strip() for out, _ in outputs}
    assert len(run_ids) == 4

    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    conn.close()
    with RunStore.open(path, create=False) as store:
        assert {r.id for r in store.runs()} == run_ids
        for run_id in run_ids:
            info = store.run(run_id)
            assert (info.status, info.rounds_done) == ("completed", 50)
            rounds = store.rounds(run_id)
            assert [r.round for r in rounds] == list(range(50))
            assert all(r.cohort == (1, 2, 3) and r.accepted == (1, 3) for r in rounds)
            latest = store.latest_checkpoint(run_id)
            assert latest is not None
            assert latest.round == 50
            assert latest.clients[1]["c"].tobytes() == latest.state.params.tobytes()
