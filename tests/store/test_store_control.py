"""Stop requests in the store, and read-only opening."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from fedloom.engine.history import RoundRecord
from fedloom.store import RunStore, StoreError


def _run(store: RunStore) -> str:
    run_id = store.create_run(name="r", config="", seed=0, code_version="t")
    store.record_round(run_id, RoundRecord(round=0, cohort=(0,), accepted=(0,)))
    return run_id


def test_a_stop_request_is_seen_from_its_time_on(tmp_path: Path) -> None:
    with RunStore.open(tmp_path / "s.db") as store:
        run_id = _run(store)
        assert store.stop_request(run_id, since="") is None  # no table yet: no request
        request = store.request_stop(run_id, origin="test")
        assert store.stop_request(run_id, since="") == request
        assert store.stop_request(run_id, since=request.requested) == request
        later = request.requested.replace(request.requested[:4], "9999", 1)
        assert store.stop_request(run_id, since=later) is None  # stale for a later attempt


def test_only_a_running_run_can_be_asked_to_stop(tmp_path: Path) -> None:
    with RunStore.open(tmp_path / "s.db") as store:
        run_id = _run(store)
        store.finish(run_id, status="completed")
        with pytest.raises(StoreError, match="is completed, not running"):
            store.request_stop(run_id, origin="test")
        with pytest.raises(StoreError, match="no run 'nope'"):
            store.request_stop("nope", origin="test")
        assert store.stop_request(run_id, since="") is None


def test_a_read_only_store_refuses_writes_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with RunStore.open(path) as store:
        run_id = _run(store)
    with RunStore.open_read_only(path) as store:
        assert [r.id for r in store.runs()] == [run_id]
        with pytest.raises(StoreError, match="readonly"):
            store.request_stop(run_id, origin="test")
    with pytest.raises(StoreError, match="no store at"):
        RunStore.open_read_only(tmp_path / "missing.db")
    (tmp_path / "junk.db").write_bytes(b"not a database at all, just some bytes" * 40)
    with pytest.raises(StoreError, match="is not a fedloom store"):
        RunStore.open_read_only(tmp_path / "junk.db")


def test_a_stop_request_is_a_control_entry_in_the_same_transaction(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with RunStore.open(path) as store:
        run_id = _run(store)
        store.audit(run_id).append("round", {"round": 0})
        request = store.request_stop(run_id, origin="dashboard, client 127.0.0.1")
        entries = store.audit(run_id).entries()
        assert [(e.seq, e.kind) for e in entries] == [(0, "round"), (1, "control")]
        assert entries[1].payload == {"action": "stop", "origin": "dashboard, client 127.0.0.1",
                                      "requested": request.requested}  # fmt: skip
        assert store.audit(run_id).verify(rounds=[0]).ok
        store.finish(run_id, status="completed")
        with pytest.raises(StoreError, match="not running"):
            store.request_stop(run_id, origin="late")
        assert len(store.audit(run_id).entries()) == 2  # refused: nothing audited either


def test_a_stop_that_cannot_be_audited_is_not_stored(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with RunStore.open(path) as store:
        run_id = _run(store)
        store.audit(run_id).append("round", {"round": 0})
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("""CREATE TRIGGER audit_full BEFORE INSERT ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit table takes no more'); END""")
    conn.close()
    with RunStore.open(path, create=False) as store:
        with pytest.raises(StoreError, match="takes no more"):
            store.request_stop(run_id, origin="test")
        assert store.stop_request(run_id, since="") is None
        assert [e.kind for e in store.audit(run_id).entries()] == ["round"]
