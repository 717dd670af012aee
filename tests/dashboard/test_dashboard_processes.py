"""Real processes: a ``fedloom run`` stopped from the dashboard, and one that outlives a
dashboard killed while it watched."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from dashboard_helpers import TOKEN, experiment_text, get_json, subprocess_env

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
            status, _ = get_json(stop, method="POST", headers={"Authorization": f"Bearer {TOKEN}"})
            assert status == 202
            out, err = process.communicate(timeout=120)
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
