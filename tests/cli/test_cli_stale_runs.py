"""A run whose process was killed (SIGKILL: nothing could mark it) is shown as interrupted, not
"running" forever; a live one stays "running"; one owned by another machine that has gone
silent is shown as possibly stale."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from cli_helpers import command_env, experiment_text, fedloom

from fedloom.store import RunStore


def _runs(workdir: Path) -> list[dict[str, object]]:
    listed: list[dict[str, object]] = json.loads(fedloom("runs", "--json", cwd=workdir).stdout)
    return listed


def test_a_killed_run_is_shown_interrupted(workdir: Path) -> None:
    (workdir / "long.toml").write_text(experiment_text(name="long", rounds=500, epochs=3))
    process = subprocess.Popen(
        [sys.executable, "-m", "fedloom", "run", "long.toml", "--quiet"],
        cwd=workdir, env=command_env(workdir), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            store_file = workdir / "runs" / "fedloom.db"
            if store_file.exists():
                with RunStore.open(store_file) as store:
                    if store.runs() and store.runs()[0].rounds_done >= 1:
                        break
            assert process.poll() is None
            time.sleep(0.2)
        (alive,) = _runs(workdir)
        assert alive["status"] == alive["shown_status"] == "running"
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    (killed,) = _runs(workdir)
    assert killed["status"] == "running"  # the store itself is left as it was
    assert killed["shown_status"] == f"interrupted (stale: its process {process.pid} is gone)"
    table = fedloom("runs", cwd=workdir).stdout
    assert "interrupted (stale" in table
    shown = fedloom("show", str(killed["run"]), cwd=workdir).stdout
    assert f"interrupted (stale: its process {process.pid} is gone)" in shown.splitlines()[0]


def test_a_run_owned_elsewhere_is_stale_only_when_silent(tmp_path: Path) -> None:
    with RunStore.open(tmp_path / "s.db") as store:
        run_id = store.create_run(name="far", config="", seed=0, code_version="x")
        owner = store.owner(run_id)
        assert owner is not None
        assert owner.pid == os.getpid()
        info = store.run(run_id)
        assert store.shown_status(info) == "running"  # this very process owns it
    with sqlite3.connect(tmp_path / "s.db") as conn:
        conn.execute("UPDATE owners SET host = 'elsewhere', heartbeat = ?",
                     ("2026-01-01T00:00:00+00:00",))  # fmt: skip
    with RunStore.open(tmp_path / "s.db") as store:
        info = store.run(run_id)
        assert store.shown_status(info).startswith("stale? (nothing from elsewhere pid")
        assert store.shown_status(info, stale_after=1e12) == "running"
        store.finish(run_id, status="completed")
        assert store.shown_status(store.run(run_id)) == "completed"
