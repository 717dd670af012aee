"""Opening a store: created when missing, refused (and left untouched) when it cannot be read."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from fedloom.store import SCHEMA_VERSION, RunStore, StoreError


def snapshot(path: Path) -> tuple[bytes, int, int]:
    stat = path.stat()
    return path.read_bytes(), stat.st_mtime_ns, stat.st_size


def test_open_creates_folders_schema_and_version(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "fedloom.db"
    RunStore.open(path).close()
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        journal = conn.execute("PRAGMA journal_mode").fetchone()
    assert tables == {"meta", "runs", "rounds", "participants", "checkpoints"}
    assert version == (str(SCHEMA_VERSION),)
    assert journal == ("wal",)


def test_reopening_keeps_what_was_recorded(tmp_path: Path) -> None:
    path = tmp_path / "fedloom.db"
    with RunStore.open(path) as store:
        run_id = store.create_run(name="r", config="x", seed=1, code_version="v")
    with RunStore.open(path) as store:
        assert [r.id for r in store.runs()] == [run_id]
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT COUNT(*) FROM meta").fetchone() == (1,)


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_a_store_from_a_newer_schema_is_refused_untouched(tmp_path: Path, journal: str) -> None:
    path = tmp_path / "fedloom.db"
    with RunStore.open(path) as store:
        store.create_run(name="r", config="", seed=0, code_version="v")
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    # A newer fedloom might not use write-ahead logging; switching it back would be a write.
    conn.execute(f"PRAGMA journal_mode = {journal}")
    conn.commit()
    conn.close()
    before = snapshot(path)
    os.utime(path, ns=(before[1] - 10**9, before[1] - 10**9))  # so any write would show
    before = snapshot(path)
    for create in (True, False):
        with pytest.raises(StoreError, match="schema version 99") as refused:
            RunStore.open(path, create=create)
        assert "reads up to 1; upgrade fedloom" in str(refused.value)
        assert str(path) in str(refused.value)
    assert snapshot(path) == before


def test_a_file_that_is_not_a_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"not a database")
    before = snapshot(path)
    with pytest.raises(StoreError, match="is not a fedloom store") as refused:
        RunStore.open(path)
    assert str(path) in str(refused.value)
    assert snapshot(path) == before


def test_a_foreign_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE people (name TEXT)")
    conn.close()
    before = snapshot(path)
    with pytest.raises(StoreError, match="not a fedloom store"):
        RunStore.open(path)
    assert snapshot(path) == before


def test_a_path_under_a_regular_file_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "runs"
    blocker.write_text("I am a file")
    path = blocker / "fedloom.db"
    with pytest.raises(StoreError, match="cannot create the store") as refused:
        RunStore.open(path)
    assert str(path) in str(refused.value)
    assert blocker.read_text() == "I am a file"


def test_a_folder_or_a_missing_store_without_create_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is not a file"):
        RunStore.open(tmp_path)
    missing = tmp_path / "missing.db"
    with pytest.raises(StoreError, match="no store at"):
        RunStore.open(missing, create=False)
    assert not missing.exists()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions")
def test_an_unwritable_folder_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(StoreError, match="cannot open the store") as refused:
            RunStore.open(locked / "fedloom.db")
        assert str(locked / "fedloom.db") in str(refused.value)
    finally:
        locked.chmod(0o700)
