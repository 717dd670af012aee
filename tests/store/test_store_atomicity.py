"""A round is recorded whole or not at all."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from fedloom.engine.history import Rejection, RoundRecord
from fedloom.engine.rounds import ServerState
from fedloom.optimizers import OptimizerState
from fedloom.store import Checkpoint, RunStore, StoreError


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        found = conn.execute(sql).fetchall()
    conn.close()
    return found


def checkpoint(round_: int, stages: tuple[object, ...] = ()) -> Checkpoint:
    params = np.full(3, round_, dtype=np.float32)
    return Checkpoint(ServerState(round_, params, OptimizerState(), {}, stages))


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[RunStore, str]:
    store = RunStore.open(tmp_path / "fedloom.db")
    run_id = store.create_run(name="r", config="", seed=0, code_version="v")
    first = RoundRecord(0, (1, 2), (1, 2), metrics={"x": 1.0})
    store.record_round(run_id, first, checkpoint=checkpoint(1))
    return store, run_id


def test_a_participant_insert_failing_midway_leaves_no_trace(
    recorded: tuple[RunStore, str],
) -> None:
    store, run_id = recorded
    # A real constraint failure inside the transaction, after the round's row went in.
    with sqlite3.connect(store.path) as conn:
        conn.execute(
            "CREATE TRIGGER refuse_client_13 BEFORE INSERT ON participants "
            "WHEN NEW.client = 13 BEGIN SELECT RAISE(ABORT, 'client 13 refused'); END"
        )
    conn.close()
    record = RoundRecord(1, (12, 13), (12,), (Rejection(13, "late"),), {"x": 2.0})
    with pytest.raises(StoreError, match="client 13 refused"):
        store.record_round(run_id, record, checkpoint=checkpoint(2))
    assert rows(store.path, "SELECT round FROM rounds") == [(0,)]
    assert rows(store.path, "SELECT DISTINCT round FROM participants") == [(0,)]
    assert rows(store.path, "SELECT round FROM checkpoints") == [(1,)]

    # Re-recording an existing round that fails keeps the old version of it.
    redo = RoundRecord(0, (12, 13), (12, 13), metrics={"x": 9.0})
    with pytest.raises(StoreError, match="client 13 refused"):
        store.record_round(run_id, redo)
    assert store.rounds(run_id) == [RoundRecord(0, (1, 2), (1, 2), metrics={"x": 1.0})]

    # The store is still usable after the rollback.
    store.record_round(run_id, RoundRecord(1, (12,), (12,), metrics={"x": 3.0}))
    assert [r.round for r in store.rounds(run_id)] == [0, 1]


def test_a_checkpoint_that_cannot_be_encoded_records_nothing(
    recorded: tuple[RunStore, str],
) -> None:
    store, run_id = recorded
    record = RoundRecord(1, (3,), (3,), metrics={"x": 2.0})
    with pytest.raises(TypeError, match="stage 1: cannot checkpoint a state of type set"):
        store.record_round(run_id, record, checkpoint=checkpoint(2, (None, {1, 2})))
    assert rows(store.path, "SELECT round FROM rounds") == [(0,)]
    latest = store.latest_checkpoint(run_id)
    assert latest is not None
    assert latest.round == 1
