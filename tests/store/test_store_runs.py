"""Runs and rounds written to a real SQLite file come back as they went in."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from fedloom.engine.history import Rejection, RoundRecord
from fedloom.store import RunStore, StoreError


def assert_same_record(got: RoundRecord, want: RoundRecord) -> None:
    assert got.round == want.round
    assert got.cohort == want.cohort
    assert got.accepted == want.accepted
    assert got.rejected == want.rejected
    assert got.aborted == want.aborted
    assert got.seconds == want.seconds
    assert list(got.metrics) == list(want.metrics)
    for key, value in want.metrics.items():
        assert got.metrics[key] == value or (math.isnan(got.metrics[key]) and math.isnan(value))


RECORDS = [
    RoundRecord(
        0,
        cohort=(7, 2, 5),
        accepted=(7, 5),
        rejected=(Rejection(2, "update contains NaN or infinity"),),
        metrics={"train_loss": 0.6931471805599453, "bytes_up": 96.0, "bytes_down": 144.0},
        seconds=0.125,
    ),
    RoundRecord(
        1,
        cohort=(3, 9),
        accepted=(),
        rejected=(Rejection(3, "client failed: boom"), Rejection(9, "timed out")),
        metrics={"cohort": 2.0, "accepted": 0.0, "weird": math.nan, "big": math.inf},
        aborted="0 usable updates, fewer than min_cohort=1",
        seconds=0.0,
    ),
    RoundRecord(2, cohort=(), accepted=(), metrics={}, seconds=1e-9),
]


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore.open(tmp_path / "runs" / "fedloom.db")


def test_rounds_come_back_field_by_field(store: RunStore) -> None:
    run_id = store.create_run(name="digits", config="rounds = 3\n", seed=4, code_version="0.1.0")
    for record in RECORDS:
        store.record_round(run_id, record)
    got = store.rounds(run_id)
    assert len(got) == len(RECORDS)
    for g, want in zip(got, RECORDS, strict=True):
        assert_same_record(g, want)


def test_byte_counts_and_participants_land_in_their_columns(store: RunStore) -> None:
    run_id = store.create_run(name="r", config="", seed=0, code_version="v")
    store.record_round(run_id, RECORDS[0])
    store.record_round(run_id, RECORDS[1])
    store.close()
    with sqlite3.connect(store.path) as conn:
        rows = conn.execute("SELECT round, bytes_up, bytes_down FROM rounds ORDER BY round")
        assert rows.fetchall() == [(0, 96.0, 144.0), (1, None, None)]
        people = conn.execute(
            "SELECT client, status, reason FROM participants WHERE round = 0 ORDER BY client"
        ).fetchall()
        assert people == [
            (2, "rejected", "update contains NaN or infinity"),
            (5, "accepted", ""),
            (7, "accepted", ""),
        ]
        metrics = conn.execute("SELECT metrics FROM rounds WHERE round = 1").fetchone()[0]
        assert json.loads(metrics)["big"] == math.inf


def test_run_info_tracks_creation_progress_and_finish(store: RunStore) -> None:
    run_id = store.create_run(
        name="digits",
        config='{"rounds": 2}',
        seed=11,
        code_version="0.1.0+abc",
        config_format="json",
    )
    info = store.run(run_id)
    assert (info.id, info.name, info.status, info.seed) == (run_id, "digits", "running", 11)
    assert (info.config, info.config_format, info.code_version) == (
        '{"rounds": 2}',
        "json",
        "0.1.0+abc",
    )
    assert (info.finished, info.duration, info.rounds_done, info.last_metrics) == (
        None,
        None,
        0,
        {},
    )
    assert info.created.endswith("+00:00")

    store.record_round(run_id, RECORDS[0])
    store.record_round(run_id, RoundRecord(1, (1,), (1,), metrics={"train_loss": 0.5}))
    store.finish(run_id, status="completed", stopped="completed 2 rounds")
    info = store.run(run_id)
    assert info.status == "completed"
    assert info.stopped == "completed 2 rounds"
    assert info.rounds_done == 2
    assert info.last_metrics == {"train_loss": 0.5}
    assert info.finished is not None
    assert info.finished >= info.created
    assert info.duration is not None
    assert 0 <= info.duration < 60

    store.reopen(run_id)
    info = store.run(run_id)
    assert (info.status, info.finished, info.duration, info.stopped) == ("running", None, None, "")


def test_run_ids_are_timestamped_and_unique(store: RunStore) -> None:
    ids = [store.create_run(name="r", config="", seed=0, code_version="v") for _ in range(20)]
    assert len(set(ids)) == 20
    for run_id in ids:
        stamp, hexpart = run_id.rsplit("-", 1)
        assert len(stamp) == len("20240101-120000")
        assert stamp[8] == "-"
        assert len(hexpart) == 6
        assert int(hexpart, 16) >= 0


def test_runs_are_listed_newest_first(store: RunStore) -> None:
    ids = [store.create_run(name=f"run{i}", config="", seed=i, code_version="v") for i in range(5)]
    listed = store.runs()
    assert [r.id for r in listed] == ids[::-1]
    assert [r.name for r in listed] == ["run4", "run3", "run2", "run1", "run0"]


def test_prefix_resolution(store: RunStore) -> None:
    with sqlite3.connect(store.path) as conn:
        for run_id in (
            "20240101-000000-aaaaaa",
            "20240101-000000-aaabbb",
            "20240102-000000-cccccc",
        ):
            conn.execute(
                "INSERT INTO runs VALUES "
                "(?, 'n', 'running', ?, NULL, NULL, 0, 'v', '', 'toml', '')",
                (run_id, run_id),
            )
    assert store.run("20240102").id == "20240102-000000-cccccc"
    assert store.run("20240101-000000-aaab").id == "20240101-000000-aaabbb"
    assert store.run("20240101-000000-aaaaaa").id == "20240101-000000-aaaaaa"
    with pytest.raises(StoreError, match="matches 2 runs") as ambiguous:
        store.run("20240101")
    assert "20240101-000000-aaaaaa" in str(ambiguous.value)
    assert "20240101-000000-aaabbb" in str(ambiguous.value)
    with pytest.raises(StoreError, match="no run '2025'") as unknown:
        store.run("2025")
    assert "20240102-000000-cccccc" in str(unknown.value)
    # Prefixes match exactly, not as LIKE patterns or case-insensitively.
    with pytest.raises(StoreError, match="no run"):
        store.run("2024010_")
    with pytest.raises(StoreError, match="no run"):
        store.run("20240102-000000-CCC")


def test_unknown_runs_and_bad_records_are_refused(store: RunStore) -> None:
    with pytest.raises(StoreError, match="no run 'nope'"):
        store.record_round("nope", RECORDS[0])
    with pytest.raises(StoreError, match="no run 'nope'"):
        store.rounds("nope")
    with pytest.raises(StoreError, match="no run 'nope'"):
        store.finish("nope", status="failed")
    with pytest.raises(StoreError, match="the store has no runs"):
        store.run("nope")
    run_id = store.create_run(name="r", config="", seed=0, code_version="v")
    with pytest.raises(ValueError, match="status must be one of"):
        store.finish(run_id, status="done")
    for bad in (
        RoundRecord(0, cohort=(1, 1), accepted=(1, 1)),
        RoundRecord(0, cohort=(1, 2), accepted=(1,)),
        RoundRecord(0, cohort=(1,), accepted=(1,), rejected=(Rejection(1, "x"),)),
        RoundRecord(0, cohort=(1,), accepted=(2,)),
    ):
        with pytest.raises(ValueError, match="round 0: the cohort"):
            store.record_round(run_id, bad)
    assert store.rounds(run_id) == []


def test_a_closed_store_says_so(tmp_path: Path) -> None:
    with RunStore.open(tmp_path / "s.db") as store:
        run_id = store.create_run(name="r", config="", seed=0, code_version="v")
    with pytest.raises(StoreError, match="is closed"):
        store.runs()
    with RunStore.open(tmp_path / "s.db", create=False) as again:
        assert [r.id for r in again.runs()] == [run_id]


def test_numpy_numbers_in_a_record_are_stored_as_plain_numbers(store: RunStore) -> None:
    run_id = store.create_run(name="r", config="", seed=0, code_version="v")
    record = RoundRecord(
        np.int64(4),  # type: ignore[arg-type]
        cohort=tuple(np.array([3, 1], dtype=np.int64)),
        accepted=(np.int64(1),),  # type: ignore[arg-type]
        rejected=(Rejection(np.int64(3), "late"),),  # type: ignore[arg-type]
        metrics={"loss": np.float32(0.5)},  # type: ignore[dict-item]
        seconds=np.float64(2.0),
    )
    store.record_round(run_id, record)
    (got,) = store.rounds(run_id)
    assert got == RoundRecord(4, (3, 1), (1,), (Rejection(3, "late"),), {"loss": 0.5}, None, 2.0)
    assert type(got.round) is int
    assert type(got.cohort[0]) is int
