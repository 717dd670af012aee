"""A deployed run's sites: client i's certificate identity, recorded once and read back; stores
that never held a deployed run keep exactly the version-1 tables."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from fedloom.store import RunStore, StoreError


def test_sites_round_trip_and_replace(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with RunStore.open(path) as store:
        run = store.create_run(name="d", config="x = 1\n", seed=0, code_version="t")
        other = store.create_run(name="s", config="x = 2\n", seed=0, code_version="t")
        tables = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")}
        assert "sites" not in tables
        assert store.sites(run) == []
        store.record_sites(run, ["hospital-b", "hospital-a"])
        assert store.sites(run) == ["hospital-b", "hospital-a"]  # order is the population's
        store.record_sites(run, ["hospital-a"])
        assert store.sites(run) == ["hospital-a"]
        assert store.sites(other) == []
        with pytest.raises(StoreError, match="no run 'nope'"):
            store.record_sites("nope", ["x"])
