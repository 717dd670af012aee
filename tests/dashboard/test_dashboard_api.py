"""The JSON API over a real SQLite store, through a real server on 127.0.0.1."""

from __future__ import annotations

import http.client
import logging
import math
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from dashboard_helpers import TOKEN, add_run, get_json, record, request, subprocess_env

from fedloom.dashboard import DashboardConfig, running
from fedloom.engine.history import Rejection
from fedloom.store import RunStore


@pytest.fixture
def two_runs(store_path: Path) -> tuple[str, str]:
    with RunStore.open(store_path) as store:
        rejected = (
            Rejection(1, "straggler: would take 3.00s, past the 1.00s deadline"),
            Rejection(2, "dropped out during the round"),
            Rejection(3, "update has non-finite values"),
        )
        first = add_run(store, "alpha", [
            record(0, accuracy=0.5, loss=1.5),
            record(1, accuracy=0.75, loss=1.0, rejected=rejected),
            record(2, accuracy=0.875, loss=float("nan")),
        ], config='[run]\nrounds = 3\n[tracking]\napi_token = "hunter2-very-secret"\n')  # fmt: skip
        second = add_run(store, "beta", [record(0, accuracy=0.25, loss=2.0)], status=None)
    return first, second


def test_runs_list_and_detail_equal_the_store(store_path: Path, two_runs: tuple[str, str]) -> None:
    first, second = two_runs
    with running(DashboardConfig(store=store_path, port=0)) as url:
        status, runs = get_json(url + "api/runs")
        assert status == 200
        assert [(r["id"], r["name"], r["status"], r["rounds_done"]) for r in runs] == [
            (second, "beta", "running", 1), (first, "alpha", "completed", 3),
        ]  # fmt: skip
        status, only = get_json(url + "api/runs?status=running")
        assert [r["id"] for r in only] == [second]
        status, detail = get_json(url + f"api/runs/{first}")
        assert status == 200
        assert detail["config"] == {"run": {"rounds": 3}, "tracking": {"api_token": "[redacted]"}}
        status, body = get_json(url + f"api/runs/{first}/rounds")
    with RunStore.open(store_path) as store:
        stored = store.rounds(first)
    assert [r["round"] for r in body["rounds"]] == [r.round for r in stored]
    for got, want in zip(body["rounds"], stored, strict=True):
        assert got["accepted"] == list(want.accepted)
        assert got["bytes_up"] == want.metrics["bytes_up"]
        for name, value in want.metrics.items():
            assert got["metrics"][name] == (None if math.isnan(value) else value)
    one = body["rounds"][1]
    assert [c["client"] for c in one["straggled"]] == [1]
    assert [c["client"] for c in one["dropped"]] == [2]
    assert [c["client"] for c in one["rejected"]] == [3]
    assert one["accepted"] == [0]


def test_rounds_since_returns_only_newer_rounds(
    store_path: Path, two_runs: tuple[str, str]
) -> None:
    first, _ = two_runs
    with running(DashboardConfig(store=store_path, port=0)) as url:
        _, body = get_json(url + f"api/runs/{first}/rounds?since=2")
    assert [r["round"] for r in body["rounds"]] == [2]


def test_compare_gives_each_run_its_metric(store_path: Path, two_runs: tuple[str, str]) -> None:
    first, second = two_runs
    with running(DashboardConfig(store=store_path, port=0)) as url:
        status, body = get_json(url + f"api/compare?runs={first},{second}&metric=test_accuracy")
    assert status == 200
    assert [(r["id"], r["values"]) for r in body["runs"]] == [
        (first, [0.5, 0.75, 0.875]), (second, [0.25]),
    ]  # fmt: skip
    assert "train_loss" in body["metrics"]


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("api/runs?status=sleeping", "status must be one of"),
        ("api/runs?colour=red", "unknown parameter 'colour'"),
        ("api/runs/{first}/rounds?since=-1", "since must be a whole number"),
        ("api/runs/{first}/rounds?since=abc", "since must be a whole number"),
        ("api/runs/{first}/rounds?since=1&since=2", "more than once"),
        ("api/compare", "runs is required"),
        ("api/compare?runs={first},{first}", "more than once"),
        ("api/compare?runs={first}&metric=a%20b", "metric must be"),
        ("api/runs/bad%20id", "run id must be"),
    ],
)
def test_malformed_parameters_get_400_with_the_reason(
    store_path: Path, two_runs: tuple[str, str], path: str, reason: str
) -> None:
    with running(DashboardConfig(store=store_path, port=0)) as url:
        status, body = get_json(url + path.format(first=two_runs[0]))
    assert status == 400
    assert reason in body["error"]


def test_unknown_run_is_404_for_the_api_and_the_page(
    store_path: Path, two_runs: tuple[str, str]
) -> None:
    with running(DashboardConfig(store=store_path, port=0)) as url:
        status, body = get_json(url + "api/runs/20200101-000000-abcdef")
        page_status, headers, page = request(url + "runs/%3Cscript%3Ealert(1)%3C%2Fscript%3E")
    assert status == 404
    assert "no run '20200101-000000-abcdef'" in body["error"]
    assert page_status == 404
    assert headers["Content-Type"].startswith("text/html")
    assert b"<script>" not in page
    assert b"&lt;script&gt;" in page


def test_store_problems_give_a_clear_503_page(tmp_path: Path, store_path: Path) -> None:
    missing = tmp_path / "nowhere" / "fedloom.db"
    with running(DashboardConfig(store=missing, port=0)) as url:
        status, _, page = request(url)
        api_status, body = get_json(url + "api/runs")
    assert status == 200  # the page loads, and shows the API's error
    assert api_status == 503
    assert "no store at" in body["error"]

    with RunStore.open(store_path) as store:
        run_id = add_run(store, "x", [record(0, accuracy=0.5, loss=1.0)])
    with sqlite3.connect(store_path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with running(DashboardConfig(store=store_path, port=0)) as url:
        status, _headers, page = request(url + f"runs/{run_id}")
    assert status == 503
    assert b"schema version 99" in page
    assert b"Traceback" not in page


def test_a_locked_store_gives_503_not_a_hang_or_a_trace(store_path: Path) -> None:
    with RunStore.open(store_path) as store:
        run_id = add_run(store, "x", [record(0, accuracy=0.5, loss=1.0)])
    holder = sqlite3.connect(store_path, isolation_level=None)
    try:
        holder.execute("PRAGMA locking_mode = EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        with running(DashboardConfig(store=store_path, port=0)) as url:
            status, body = get_json(url + f"api/runs/{run_id}")
            page_status, _, page = request(url + f"runs/{run_id}")
    finally:
        holder.close()
    assert status == 503
    assert "locked" in body["error"]
    assert page_status == 503
    assert b"locked" in page
    assert b"Traceback" not in page


def test_stop_needs_the_token_and_is_recorded(store_path: Path, two_runs: tuple[str, str]) -> None:
    first, second = two_runs
    with running(DashboardConfig(store=store_path, port=0)) as url:
        status, body = get_json(url + f"api/runs/{second}/stop", method="POST")
    assert status == 403
    assert "--token" in body["error"]
    with running(DashboardConfig(store=store_path, port=0, token=TOKEN)) as url:
        stop = url + f"api/runs/{second}/stop"
        assert get_json(stop, method="POST")[0] == 401
        wrong = {"Authorization": "Bearer " + "x" * len(TOKEN)}
        status, body = get_json(stop, method="POST", headers=wrong)
        assert status == 401
        assert TOKEN not in str(body)
        with RunStore.open(store_path) as store:
            assert store.stop_request(second, since="") is None
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        status, body = get_json(stop, method="POST", headers=bearer)
        assert status == 202
        finished, _ = get_json(url + f"api/runs/{first}/stop", method="POST", headers=bearer)
        assert finished == 409
        assert get_json(stop, headers=bearer)[0] == 405
    with RunStore.open(store_path) as store:
        request_ = store.stop_request(second, since="")
    assert request_ is not None
    assert request_.requested == body["requested"]
    assert TOKEN not in request_.origin


def test_every_response_has_a_strict_csp_and_loopback_host_only(
    store_path: Path, two_runs: tuple[str, str]
) -> None:
    with running(DashboardConfig(store=store_path, port=0)) as url:
        for path in ("", "api/runs", "static/run.js", "runs/nope"):
            _, headers, _ = request(url + path)
            assert "script-src 'self'" in headers["Content-Security-Policy"]
            assert "unsafe-inline" not in headers["Content-Security-Policy"]
            assert headers["X-Content-Type-Options"] == "nosniff"
        status, _ = get_json(url + "api/runs", headers={"Host": "evil.example:80"})
        assert status == 400
        assert request(url + "static/../__init__.py")[0] == 404


def test_pages_and_scripts_hold_no_inline_script(store_path: Path) -> None:
    with running(DashboardConfig(store=store_path, port=0)) as url:
        for page in ("", "compare"):
            _, _, body = request(url + page)
            text = body.decode()
            assert "<script>" not in text
            assert "onload=" not in text
            assert "style=" not in text
            assert text.count("<script src=") == 3
        _, _, script = request(url + "static/run.js")
    assert b"innerHTML" not in script


def test_pages_load_everything_from_the_dashboard_itself(store_path: Path) -> None:
    """No CDN: every script, stylesheet and link a page names is served by the dashboard."""
    with running(DashboardConfig(store=store_path, port=0)) as url:
        for page in ("", "compare", "static/run.html"):
            _, _, body = request(url + page)
            for target in re.findall(r'(?:src|href)="([^"]*)"', body.decode()):
                if target.startswith("data:") or not target.startswith("/static/"):
                    assert target in ("data:,", "/", "/compare"), target
                    continue
                status, _, content = request(url + target.lstrip("/"))
                assert status == 200, target
                assert content, target


def test_away_from_loopback_every_request_needs_the_token(
    store_path: Path, two_runs: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fedloom.dashboard")
    with pytest.raises(ValueError, match="needs an access token"):
        DashboardConfig(store=store_path, host="0.0.0.0")
    config = DashboardConfig(store=store_path, host="0.0.0.0", port=0, token=TOKEN)
    with running(config) as url:
        url = url.replace("0.0.0.0", "127.0.0.1")
        assert get_json(url + "api/runs")[0] == 401
        assert request(url)[0] == 401
        assert get_json(url + "api/runs", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
        assert get_json(url + "api/runs", headers={"Cookie": f"fedloom_token={TOKEN}"})[0] == 200
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", f"/compare?token={TOKEN}&runs=a")
        answer = conn.getresponse()
        conn.close()
    assert answer.status == 303
    assert answer.getheader("Location") == "/compare?runs=a"
    cookie = answer.getheader("Set-Cookie", "")
    assert cookie.startswith(f"fedloom_token={TOKEN};")
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "token=[redacted]" in caplog.text
    assert TOKEN not in caplog.text


def test_privacy_and_secure_aggregation_are_summarized_when_present(store_path: Path) -> None:
    def dp(round_: int, epsilon: float, **extra: float) -> dict[str, float]:
        return {"dp.epsilon": epsilon, "dp.delta": 1e-5, "secagg.dropouts": 0.0, **extra}

    with RunStore.open(store_path) as store:
        run_id = add_run(store, "private", [
            record(0, accuracy=0.5, loss=1.0, extra=dp(0, 0.5)),
            record(1, accuracy=0.5, loss=1.0, extra=dp(1, 0.75, **{"secagg.aborted": 1.0}),
                   aborted="secure aggregation: too few survivors"),
            record(2, accuracy=0.5, loss=1.0, extra=dp(2, 1.0)),
        ], config="[privacy]\nepsilon_budget = 3.0\n")  # fmt: skip
        plain = add_run(store, "plain", [record(0, accuracy=0.5, loss=1.0)])
    with running(DashboardConfig(store=store_path, port=0)) as url:
        _, detail = get_json(url + f"api/runs/{run_id}")
        _, other = get_json(url + f"api/runs/{plain}")
    assert detail["privacy"] == {"rounds": [0, 1, 2], "epsilon": [0.5, 0.75, 1.0],
                                 "delta": 1e-5, "budget": 3.0}  # fmt: skip
    assert detail["secure_aggregation"] == {
        "rounds": [0, 1, 2],
        "aborted": [{"round": 1, "reason": "secure aggregation: too few survivors"}],
    }
    assert other["privacy"] is None
    assert other["secure_aggregation"] is None


def test_the_command_refuses_a_public_host_without_a_token(store_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fedloom", "dashboard", "--store", str(store_path),
         "--host", "0.0.0.0"],
        env=subprocess_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "needs an access token" in done.stderr
    assert "Traceback" not in done.stderr


def test_reading_never_changes_the_store(store_path: Path, two_runs: tuple[str, str]) -> None:
    first, second = two_runs
    before = store_path.read_bytes()  # the writers closed: everything is in the main file
    wal = store_path.with_name(store_path.name + "-wal")
    with running(DashboardConfig(store=store_path, port=0)) as url:
        for path in ("", "api/info", "api/runs", f"api/runs/{first}", f"runs/{first}",
                     f"api/runs/{first}/rounds", f"api/compare?runs={first},{second}",
                     "api/runs/20200101-000000-abcdef", "api/runs?status=bad"):  # fmt: skip
            request(url + path)
    assert store_path.read_bytes() == before
    assert not wal.exists() or wal.stat().st_size == 0
