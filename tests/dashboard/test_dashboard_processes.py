"""Real processes: a ``fedloom run`` stopped from the dashboard, and one that outlives a
dashboard killed while it watched."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner
from dashboard_helpers import TOKEN, experiment_text, get_json, subprocess_env

from fedloom.cli import cli
from fedloom.compliance import verify_run
from fedloom.dashboard import DashboardConfig, running
from fedloom.store import RunStore, StoreError


def _start_run(tmp_path: Path, rounds: int) -> subprocess.Popen[str]:
    (tmp_path / "tiny.toml").write_text(experiment_text(rounds=rounds))
    env = {**subprocess_env(), "FEDLOOM_RUNS": str(tmp_path / "runs")}
    return subprocess.Popen(
        [sys.executable, "-m", "fedloom", "run", "tiny.toml", "--quiet"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait_for_rounds(store_path: Path, at_least: int, process: subprocess.Popen[str]) -> str:
    """The run's id once it has recorded ``at_least`` rounds (polling the store, not timing)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            with RunStore.open_read_only(store_path) as store:
                runs = store.runs()
        except StoreError:  # not created yet, or its tables not yet in place
            runs = []
        if runs and runs[0].rounds_done >= at_least:
            return runs[0].id
        time.sleep(0.05)
    raise AssertionError("the run recorded no round in 120 s")


def test_a_running_run_stops_after_its_round_when_asked_with_the_token(
    tmp_path: Path, store_path: Path
) -> None:
    rounds = 400
    process = _start_run(tmp_path, rounds)
    try:
        run_id = _wait_for_rounds(store_path, 1, process)
        with running(DashboardConfig(store=store_path, port=0, token=TOKEN)) as url:
            stop = url + f"api/runs/{run_id}/stop"
            assert get_json(stop, method="POST")[0] == 401
            assert process.poll() is None  # refused: the run goes on
            status, body = get_json(
                stop, method="POST", headers={"Authorization": f"Bearer {TOKEN}"}
            )
            assert status == 202
            out, err = process.communicate(timeout=120)
            status, audit = get_json(url + f"api/runs/{run_id}/audit")
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert out.strip() == run_id
    with RunStore.open_read_only(store_path) as store:
        info = store.run(run_id)
        checkpoint = store.latest_checkpoint(run_id)
    assert info.status == "interrupted"
    assert info.stopped.startswith("stopped on request (dashboard, client 127.0.0.1")
    assert 1 <= info.rounds_done < rounds
    assert checkpoint is not None
    assert checkpoint.round == info.rounds_done  # it resumes exactly where it stopped
    # The stop is in the trail, once, with who asked and when; the runner's entries after it
    # (its last rounds, run_finished) chain on, and the whole trail verifies.
    assert status == 200
    assert audit["verification"]["ok"], audit["verification"]
    controls = [e for e in audit["entries"] if e["kind"] == "control"]
    assert len(controls) == 1
    assert controls[0]["summary"] == (
        f"stop asked by dashboard, client 127.0.0.1 at {body['requested']}"
    )
    with RunStore.open_read_only(store_path) as store:
        entries = store.audit(run_id).entries()
        assert verify_run(store, info).ok
    control = next(e for e in entries if e.kind == "control")
    assert control.payload == {"action": "stop", "origin": "dashboard, client 127.0.0.1",
                               "requested": body["requested"]}  # fmt: skip
    assert entries[-1].kind == "run_finished"
    runs_dir = str(store_path.parent)
    verified = CliRunner().invoke(cli, ["audit", "verify", run_id, "--runs", runs_dir])
    assert verified.exit_code == 0, verified.output
    report = tmp_path / "report.md"
    CliRunner().invoke(cli, ["audit", "report", run_id, "--runs", runs_dir, "--out", str(report)])
    text = report.read_text()
    assert "**Verified.**" in text
    assert (
        f"- entry {control.seq}, {body['requested']}: **stop** asked by dashboard, client "
        "127.0.0.1" in text
    )


def test_killing_the_dashboard_costs_the_run_nothing(tmp_path: Path, store_path: Path) -> None:
    rounds = 30
    process = _start_run(tmp_path, rounds)
    env = subprocess_env()
    dashboard = subprocess.Popen(
        [sys.executable, "-m", "fedloom", "dashboard", "--store", str(store_path), "--port", "0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        run_id = _wait_for_rounds(store_path, 1, process)
        assert dashboard.stdout is not None
        banner = dashboard.stdout.readline()
        url = banner.split(" on ", 1)[1].split(" ", 1)[0]
        status, body = get_json(url + f"api/runs/{run_id}/rounds")
        assert status == 200
        assert body["status"] == "running"
        dashboard.send_signal(signal.SIGKILL)
        dashboard.wait(timeout=30)
        _, err = process.communicate(timeout=300)
    finally:
        for p in (process, dashboard):
            if p.poll() is None:
                p.kill()
    assert process.returncode == 0, err
    with RunStore.open_read_only(store_path) as store:
        info = store.run(run_id)
    assert info.status == "completed"
    assert info.rounds_done == rounds
