"""Kill a real ``fedloom run`` mid-run, resume it, and get bit-identical parameters."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
from cli_helpers import command_env, experiment_text, fedloom

from fedloom.store import RunStore


def _final_params(db: Path, run: str) -> np.ndarray:
    with RunStore.open(db) as store:
        checkpoint = store.latest_checkpoint(run)
    assert checkpoint is not None
    return checkpoint.state.params


def test_killed_run_resumes_to_bit_identical_parameters(tmp_path: Path) -> None:
    rounds = 12
    text = experiment_text(name="killed", algorithm="scaffold", rounds=rounds, epochs=8,
                           checkpoint_every=2)  # fmt: skip
    (tmp_path / "exp.toml").write_text(text)
    env = command_env(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "fedloom", "run", "exp.toml", "--json"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    seen = []
    for line in process.stdout:
        seen.append(json.loads(line)["round"])
        if len(seen) == 5:  # rounds 0..4 done; the last checkpoint is after round 3
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL

    db = tmp_path / "runs" / "fedloom.db"
    with RunStore.open(db) as store:
        (info,) = store.runs()
        checkpoint = store.latest_checkpoint(info.id)
    assert info.status == "running"  # it never got to say otherwise
    assert checkpoint is not None
    assert 4 <= checkpoint.state.round < rounds
    assert checkpoint.state.round % 2 == 0

    fedloom("run", "--resume", info.id[:15], cwd=tmp_path)
    with RunStore.open(db) as store:
        resumed = store.run(info.id)
        recorded = [r.round for r in store.rounds(info.id)]
    assert resumed.status == "completed"
    assert recorded == list(range(rounds))

    fedloom("run", "exp.toml", cwd=tmp_path)
    with RunStore.open(db) as store:
        straight = next(r for r in store.runs() if r.id != info.id)
    np.testing.assert_array_equal(_final_params(db, info.id), _final_params(db, straight.id))
    assert _final_params(db, info.id).dtype == np.float32
