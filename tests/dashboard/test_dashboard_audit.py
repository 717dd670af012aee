"""The audit trail through the dashboard's API: a real run's trail and its verification, tampering
found and named, and a stop from the dashboard written to the trail."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from dashboard_helpers import EVIL, TOKEN, experiment_text, get_json, request

from fedloom.compliance import compliance_report, verify_run
from fedloom.dashboard import DashboardConfig, running
from fedloom.dashboard.trail import MAX_SUMMARY, summary
from fedloom.experiment import Experiment
from fedloom.runner import run_experiment
from fedloom.store import RunStore


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A store holding one finished two-round run, recorded by the real runner."""
    path = tmp_path_factory.mktemp("audit") / "fedloom.db"
    experiment = Experiment.from_toml(experiment_text(rounds=2), source="test")
    with RunStore.open(path) as store:
        run_id = run_experiment(experiment, store).run_id
    return path, run_id


def copy_of(path: Path, tmp_path: Path) -> Path:
    target = tmp_path / "fedloom.db"
    source, dest = sqlite3.connect(path), sqlite3.connect(target)
    source.backup(dest)
    source.close()
    dest.close()
    return target


def tamperer(path: Path) -> sqlite3.Connection:
    """A plain connection with the append-only triggers dropped, as someone with write access
    to the file would do."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("DROP TRIGGER audit_no_delete")
    return conn


def test_a_real_runs_trail_is_listed_and_verifies_read_only(
    real_run: tuple[Path, str], tmp_path: Path
) -> None:
    path = copy_of(real_run[0], tmp_path)
    run_id = real_run[1]
    with RunStore.open(path, create=False) as store:
        stored = store.audit(run_id).entries()
        expected = verify_run(store, store.run(run_id))
    before = path.read_bytes()
    with running(DashboardConfig(store=path, port=0)) as url:
        status, body = get_json(url + f"api/runs/{run_id}/audit")
        _, later = get_json(url + f"api/runs/{run_id}/audit?since=3")
    assert path.read_bytes() == before  # verifying wrote nothing
    assert status == 200
    assert body["verification"] == {"ok": True, "entries": len(stored), "head": expected.head,
                                    "problem": None}  # fmt: skip
    assert body["total"] == len(stored)
    assert [(e["seq"], e["kind"], e["created"], e["hash"]) for e in body["entries"]] == [
        (e.seq, e.kind, e.created, e.hash[:16]) for e in stored
    ]
    assert {e["state"] for e in body["entries"]} == {"ok"}
    kinds = [e.kind for e in stored]
    assert kinds[0] == "run_started"
    assert kinds[-1] == "run_finished"
    assert kinds.count("round") == 2
    first_round = next(e for e in stored if e.kind == "round")
    shown = next(e for e in body["entries"] if e["seq"] == first_round.seq)
    took_part = len(first_round.payload["participants"])
    assert shown["summary"].startswith(f"round 0: {took_part} took part, 0 refused, ")
    assert [e["seq"] for e in later["entries"]] == [e.seq for e in stored if e.seq >= 3]
    assert later["verification"]["ok"]  # the whole chain is checked whatever is listed


@pytest.mark.parametrize("tamper", ["edit", "delete"])
def test_tampering_shows_the_first_bad_entry(
    real_run: tuple[Path, str], tmp_path: Path, tamper: str
) -> None:
    path = copy_of(real_run[0], tmp_path)
    run_id = real_run[1]
    conn = tamperer(path)
    seq = conn.execute("SELECT MIN(seq) FROM audit WHERE kind = 'join'").fetchone()[0] + 1
    if tamper == "edit":
        payload = json.dumps({"identity": EVIL, "round": 0})
        conn.execute("UPDATE audit SET payload = ? WHERE seq = ?", (payload, seq))
    else:
        conn.execute("DELETE FROM audit WHERE seq = ?", (seq,))
    conn.close()
    with running(DashboardConfig(store=path, port=0)) as url:
        status, body = get_json(url + f"api/runs/{run_id}/audit")
        page_status, _, _ = request(url + f"runs/{run_id}")
    assert status == 200
    assert page_status == 200
    result = body["verification"]
    assert result["ok"] is False
    assert result["entries"] == seq
    problem = result["problem"]
    assert problem["seq"] == seq
    states = [e["state"] for e in body["entries"]]
    assert states[:seq] == ["ok"] * seq
    assert states[seq] == "bad"
    assert set(states[seq + 1 :]) <= {"unverified"}
    if tamper == "edit":
        assert (problem["kind"], problem["reason"]) == ("join", "altered: its contents do not "
                                                        "match its hash")  # fmt: skip
        assert problem["text"] == f"entry {seq} (join): altered: its contents do not match its hash"
        assert body["entries"][seq]["summary"] == f"{EVIL} joined in round 0"  # as data, for text
    else:
        assert problem["kind"] is None
        assert (
            problem["reason"] == f"removed: entry {seq} is missing (the next stored is {seq + 1})"
        )
        assert [e["seq"] for e in body["entries"]][seq] == seq + 1


def test_a_stop_with_the_token_is_audited_and_the_trail_verifies(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "fedloom.db"
    with RunStore.open(path) as store:
        run_id = store.create_run(name="live", config="", seed=0, code_version="test")
        store.audit(run_id).append("run_started", {"name": "live"})
    with running(DashboardConfig(store=path, port=0, token=TOKEN)) as url:
        stop = url + f"api/runs/{run_id}/stop"
        assert get_json(stop, method="POST")[0] == 401
        _, refused = get_json(url + f"api/runs/{run_id}/audit")
        assert [e["kind"] for e in refused["entries"]] == ["run_started"]  # a refusal: no entry
        status, body = get_json(stop, method="POST", headers={"Authorization": f"Bearer {TOKEN}"})
        assert status == 202
        _, audit = get_json(url + f"api/runs/{run_id}/audit")
    assert audit["verification"]["ok"]
    assert [e["kind"] for e in audit["entries"]] == ["run_started", "control"]
    assert audit["entries"][1]["summary"] == (
        f"stop asked by dashboard, client 127.0.0.1 at {body['requested']}"
    )
    with RunStore.open(path, create=False) as store:
        control = store.audit(run_id).entries()[1]
        store.finish(run_id, status="interrupted", stopped="stopped on request")
        store.audit(run_id).append("run_finished", {"status": "interrupted", "stopped": "x"})
        assert verify_run(store, store.run(run_id)).ok
        report = compliance_report(store, run_id)
    assert TOKEN not in json.dumps(control.payload)
    assert control.payload == {"action": "stop", "origin": "dashboard, client 127.0.0.1",
                               "requested": body["requested"]}  # fmt: skip
    assert "## Control actions" in report
    assert (
        f"- entry 1, {body['requested']}: **stop** asked by dashboard, client 127.0.0.1" in report
    )


def test_a_run_with_no_trail_and_bad_parameters(tmp_path: Path) -> None:
    path = tmp_path / "fedloom.db"
    with RunStore.open(path) as store:
        run_id = store.create_run(name="old", config="", seed=0, code_version="test")
    with running(DashboardConfig(store=path, port=0)) as url:
        status, body = get_json(url + f"api/runs/{run_id}/audit")
        assert (status, body["total"], body["verification"]["ok"]) == (200, 0, True)
        status, body = get_json(url + f"api/runs/{run_id}/audit?since=-1")
        assert (status, body["error"]) == (400, "since must be a whole number of entries >= 0, "
                                                "got '-1'")  # fmt: skip
        assert get_json(url + f"api/runs/{run_id}/audit?limit=3")[0] == 400
        assert get_json(url + "api/runs/20200101-000000-abcdef/audit")[0] == 404


def test_summaries_are_brief_plain_text() -> None:
    model = {"round": 2, "hash": "ab" * 32, "parent": None, "participants": ["a", "b"]}
    assert summary("model", model) == "round 2: model abababababab… from –, 2 parties"
    assert summary("note", {"resumed": True, "rounds": [1, 2, 3, 4]}) == (
        "resumed = True; rounds = [4 items]"
    )
    assert summary("round", ["not", "a", "mapping"]) == "[not, a, mapping]"
    assert len(summary("join", {"identity": "x" * 1000, "round": 0})) == MAX_SUMMARY
