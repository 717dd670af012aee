"""The audit trail on real SQLite files: the chain by hand, and tampering of every kind found."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from fedloom.store import RunStore, StoreError, Verification
from fedloom.store.audit import GENESIS, entry_hash


def new_run(tmp_path: Path, entries: int = 5) -> tuple[Path, str]:
    path = tmp_path / "fedloom.db"
    with RunStore.open(path) as store:
        run = store.create_run(name="r", config="x = 1\n", seed=0, code_version="t")
        trail = store.audit(run)
        for i in range(entries):
            trail.append("round", {"round": i, "participants": [f"client-{i}"], "eps": 0.5 * i})
    return path, run


def raw(path: Path) -> sqlite3.Connection:
    """A plain connection to the file, with the append-only triggers dropped, as a tamperer
    with write access would."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("DROP TRIGGER audit_no_delete")
    return conn


def verify(path: Path, run: str, **kwargs: Any) -> Verification:
    with RunStore.open(path, create=False) as store:
        return store.audit(run).verify(**kwargs)


def test_the_chain_by_hand(tmp_path: Path) -> None:
    path, run = new_run(tmp_path, entries=2)
    with RunStore.open(path, create=False) as store:
        first, second = store.audit(run).entries()
    body = json.dumps(
        {"created": first.created, "kind": "round", "payload": first.payload, "run": run,
         "seq": 0},
        sort_keys=True, separators=(",", ":"),
    )  # fmt: skip
    assert first.prev_hash == GENESIS
    assert first.hash == hashlib.sha256((GENESIS + body).encode()).hexdigest()
    assert second.prev_hash == first.hash
    result = verify(path, run)
    assert result.ok
    assert result.entries == 2
    assert result.head == second.hash


def test_sqlite_refuses_updates_and_deletes_of_audit_entries(tmp_path: Path) -> None:
    path, _ = new_run(tmp_path)
    conn = sqlite3.connect(path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE audit SET payload = '{}' WHERE seq = 1")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit WHERE seq = 1")


@pytest.mark.parametrize("index", range(5))
def test_editing_any_entry_is_found(tmp_path: Path, index: int) -> None:
    path, run = new_run(tmp_path)
    conn = raw(path)
    payload = json.dumps({"round": index, "participants": ["someone-else"], "eps": 0.0})
    conn.execute("UPDATE audit SET payload = ? WHERE seq = ?", (payload, index))
    conn.close()
    problem = verify(path, run).problem
    assert problem is not None
    assert (problem.seq, problem.kind) == (index, "round")
    assert "altered" in problem.reason


@pytest.mark.parametrize("index", range(4))
def test_deleting_any_entry_but_the_last_is_found(tmp_path: Path, index: int) -> None:
    path, run = new_run(tmp_path)
    conn = raw(path)
    conn.execute("DELETE FROM audit WHERE seq = ?", (index,))
    conn.close()
    problem = verify(path, run).problem
    assert problem is not None
    assert problem.seq == index
    assert f"entry {index} is missing" in problem.reason


def test_deleting_the_last_entry_is_found_against_the_published_head(tmp_path: Path) -> None:
    path, run = new_run(tmp_path)
    with RunStore.open(path, create=False) as store:
        _, head = store.audit(run).head()
    conn = raw(path)
    conn.execute("DELETE FROM audit WHERE seq = 4")
    conn.close()
    assert verify(path, run).ok  # without an anchor, a removed tail is not visible
    problem = verify(path, run, expected_head=head).problem
    assert problem is not None
    assert problem.seq == 4
    assert "removed" in problem.reason
    # ...and against the run store's own record of its rounds
    problem = verify(path, run, rounds=range(5)).problem
    assert problem is not None
    assert "round 4 is in the run store but has no audit entry" in problem.reason


@pytest.mark.parametrize("index", range(4))
def test_reordering_any_two_neighbours_is_found(tmp_path: Path, index: int) -> None:
    path, run = new_run(tmp_path)
    conn = raw(path)
    conn.execute("UPDATE audit SET seq = -1 WHERE seq = ?", (index,))
    conn.execute("UPDATE audit SET seq = ? WHERE seq = ?", (index, index + 1))
    conn.execute("UPDATE audit SET seq = ? WHERE seq = -1", (index + 1,))
    conn.close()
    problem = verify(path, run).problem
    assert problem is not None
    assert problem.seq == index


def test_a_renumbered_deletion_breaks_the_next_link(tmp_path: Path) -> None:
    path, run = new_run(tmp_path)
    conn = raw(path)
    conn.execute("DELETE FROM audit WHERE seq = 2")
    conn.execute("UPDATE audit SET seq = seq - 1 WHERE seq > 2")
    conn.close()
    problem = verify(path, run).problem
    assert problem is not None
    assert problem.seq == 2


def test_append_refuses_what_json_cannot_hold_and_writes_nothing(tmp_path: Path) -> None:
    path, run = new_run(tmp_path, entries=1)
    with RunStore.open(path, create=False) as store:
        trail = store.audit(run)
        with pytest.raises(TypeError):
            trail.append("note", {"x": object()})
        with pytest.raises(ValueError, match="kind must be"):
            trail.append("", {})
        assert len(trail.entries()) == 1
        # non-finite floats are kept as strings, so the hash is well defined
        trail.append("note", {"eps": float("inf")})
        assert trail.entries()[-1].payload == {"eps": "Infinity"}
        assert trail.verify().ok
        with pytest.raises(StoreError, match="no run"):
            store.audit("nope")


def test_the_audit_table_is_made_by_the_first_entry(tmp_path: Path) -> None:
    path, run = new_run(tmp_path, entries=0)
    tables = "SELECT name FROM sqlite_master WHERE type IN ('table', 'trigger') ORDER BY name"
    with sqlite3.connect(path) as conn:
        assert "audit" not in {r[0] for r in conn.execute(tables)}
    with RunStore.open(path, create=False) as store:
        assert store.audit(run).entries() == []
        assert store.audit(run).verify().ok
        store.audit(run).append("note", {"hello": 1})
        assert store.audit(run).verify().ok
    with sqlite3.connect(path) as conn:
        made = {r[0] for r in conn.execute(tables)}
    assert {"audit", "audit_no_update", "audit_no_delete"} <= made


def test_hash_depends_on_every_field() -> None:
    base = entry_hash(GENESIS, "r", 0, "round", "t", {"a": 1})
    assert base != entry_hash(GENESIS, "r", 1, "round", "t", {"a": 1})
    assert base != entry_hash(GENESIS, "s", 0, "round", "t", {"a": 1})
    assert base != entry_hash(GENESIS, "r", 0, "model", "t", {"a": 1})
    assert base != entry_hash(GENESIS, "r", 0, "round", "u", {"a": 1})
    assert base != entry_hash(GENESIS, "r", 0, "round", "t", {"a": 2})
    assert base != entry_hash("1" * 64, "r", 0, "round", "t", {"a": 1})
