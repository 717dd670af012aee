"""A site keeps its client state on its own disk: SCAFFOLD over gRPC with a site killed between
two of its rounds and started again reaches the uninterrupted run's parameters; a state file
from another run, another configuration or model, or a damaged one is refused and ignored."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from deploy_helpers import (
    HERE,
    experiment_text,
    federation,
    finish,
    start_server,
    start_site,
    stop,
    write_site_data,
)

from fedloom.core.layout import Field, Layout
from fedloom.deploy import SiteStateFile, fingerprint
from fedloom.experiment import Experiment
from fedloom.runner import run_experiment
from fedloom.store import RunStore
from fedloom.transport import StageOptions, TrainingConfig

SITES = ["site-a", "site-b", "site-c"]
CONFIG = TrainingConfig("scaffold", {"lr": 0.1, "epochs": 1, "batch_size": 8})
LAYOUT = Layout((Field("w", (3, 2)), Field("b", (2,))))
CONTROL = np.arange(8, dtype=np.float32) / 7


def _wait(path: Path, pattern: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        found = re.search(pattern, text, re.MULTILINE)
        if found:
            return found.group(0)
        time.sleep(0.05)
    raise AssertionError(f"no {pattern!r} in {path}:\n{path.read_text()}")


def _site_log(cwd: Path, site: str, after: set[Path]) -> Path:
    (found,) = set(cwd.glob(f"site-{site}-*.log")) - after
    return found


def test_restarted_scaffold_site_goes_on_from_its_kept_state(tmp_path: Path) -> None:
    # With seed 5 the cohorts of 2 out of 3 are (1, 2), (0, 2), (0, 1), (1, 2): site-b trains in
    # round 0, sits out round 1 (killed and restarted meanwhile) and trains rounds 2 and 3.
    text = experiment_text(algorithm="scaffold", rounds=4, cohort=2, federated_eval=False)
    experiment = Experiment.from_toml(text)
    (tmp_path / "exp.toml").write_text(text)
    fed = federation(tmp_path / "fed", SITES)
    data = write_site_data(experiment, tmp_path / "data")
    with RunStore.open(tmp_path / "sim.db") as sim_store:
        simulated = run_experiment(experiment, sim_store)
        sim_checkpoint = sim_store.latest_checkpoint(simulated.run_id)
        assert sim_checkpoint is not None
    assert [r.cohort for r in simulated.history.records] == [(1, 2), (0, 2), (0, 1), (1, 2)]

    gate = tmp_path / "gate"
    gate.touch()  # sites a and c hold round 1 open until site-b is back
    server = start_server(tmp_path, tmp_path / "exp.toml", fed, "--deadline", "60")
    launcher = (str(HERE / "gated_site.py"), str(gate), "1")
    states = tmp_path / "states"
    state_args = ("--state-dir", str(states))
    others = [
        start_site(tmp_path, server.port, fed, s, d, *state_args, launcher=launcher)
        for s, d in ((SITES[0], data[0]), (SITES[2], data[2]))
    ]
    before = set(tmp_path.glob("site-site-b-*.log"))
    first = start_site(tmp_path, server.port, fed, "site-b", data[1], *state_args)
    restarted = []
    try:
        _wait(server.log, r"^round 0: 2/2 took part \(site-b, site-c\)")
        first_log = _site_log(tmp_path, "site-b", before)
        first.kill()  # SIGKILL, between its rounds 0 and 2
        first.wait()
        kept = SiteStateFile(states, "site-b")
        assert kept.path.exists()
        assert not list(states.glob(".*.tmp"))  # the atomic write left no temporary file
        before = set(tmp_path.glob("site-site-b-*.log"))
        restarted.append(start_site(tmp_path, server.port, fed, "site-b", data[1], *state_args))
        second_log = _site_log(tmp_path, "site-b", before)
        _wait(second_log, r"joined run")
        gate.unlink()
        assert finish(server.process) == 0, server.output()
        assert all(finish(s) == 0 for s in [*others, *restarted])
    finally:
        stop(server.process, first, *others, *restarted)

    with RunStore.open(tmp_path / "runs" / "fedloom.db") as store:
        rounds = store.rounds(server.run_id)
        checkpoint = store.latest_checkpoint(server.run_id)
        assert checkpoint is not None
    assert [r.accepted for r in rounds] == [r.cohort for r in simulated.history.records]
    # The restarted site went on from its control variate: the run is the uninterrupted one.
    np.testing.assert_allclose(checkpoint.state.params, simulated.history.params, atol=1e-5)
    np.testing.assert_allclose(
        checkpoint.state.extras["control"], sim_checkpoint.state.extras["control"], atol=1e-5
    )
    restored = re.findall(r"restored the client state of run (\S+) after round (\d+)",
                          second_log.read_text())  # fmt: skip
    assert restored == [(server.run_id, "0")]
    assert "restored" not in first_log.read_text()


def test_state_file_round_trip(tmp_path: Path) -> None:
    kept = SiteStateFile(tmp_path / "state", "site-a")
    mark = fingerprint(CONFIG, LAYOUT)
    kept.save({"control": CONTROL}, run="run-1", round=4, fingerprint=mark)
    saved = kept.load(run="run-1", fingerprint=mark, size=LAYOUT.size)
    assert saved is not None
    assert saved.round == 4
    np.testing.assert_array_equal(saved.state["control"], CONTROL)
    kept.save({}, run="run-1", round=5, fingerprint=mark)
    again = kept.load(run="run-1", fingerprint=mark, size=LAYOUT.size)
    assert again is not None
    assert again.round == 5
    assert dict(again.state) == {}
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["site-a.state.npz"]


@pytest.mark.parametrize(
    ("run", "other", "reason"),
    [
        ("run-2", CONFIG, r"it is from run 'run-1', and this run is 'run-2'"),
        ("run-1", TrainingConfig("scaffold", {"lr": 0.2, "epochs": 1, "batch_size": 8}),
         r"another training configuration or model layout"),
        ("run-1", TrainingConfig("scaffold", {**CONFIG.train}, stages=(StageOptions("qsgd"),)),
         r"another training configuration or model layout"),
    ],
)  # fmt: skip
def test_state_of_another_run_or_configuration_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, run: str, other: TrainingConfig, reason: str
) -> None:
    kept = SiteStateFile(tmp_path, "site-a")
    kept.save({"control": CONTROL}, run="run-1", round=0, fingerprint=fingerprint(CONFIG, LAYOUT))
    with caplog.at_level(logging.WARNING, "fedloom.site"):
        assert kept.load(run=run, fingerprint=fingerprint(other, LAYOUT), size=8) is None
    assert re.search(reason, caplog.text), caplog.text
    assert "starting afresh" in caplog.text


def test_state_for_another_layout_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kept = SiteStateFile(tmp_path, "site-a")
    kept.save({"control": CONTROL}, run="r", round=0, fingerprint=fingerprint(CONFIG, LAYOUT))
    wider = Layout((Field("w", (4, 2)), Field("b", (2,))))
    with caplog.at_level(logging.WARNING, "fedloom.site"):
        assert kept.load(run="r", fingerprint=fingerprint(CONFIG, wider), size=10) is None
    assert "another training configuration or model layout" in caplog.text


def _write_raw(path: Path, **arrays: object) -> None:
    with path.open("wb") as out:
        np.savez(out, **arrays)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("arrays", "reason"),
    [
        ({"state.control": np.array([object()], dtype=object)}, r"pickled|[Oo]bject"),
        ({"state.control": CONTROL}, r"no header"),
        ({"state.control": CONTROL.astype(np.float64)}, r"expected a float32 vector"),
        ({"state.control": np.full(8, np.nan, dtype=np.float32)}, r"not finite"),
        ({"state.control": np.zeros(9, dtype=np.float32)}, r"at most 8 entries"),
        ({"other": CONTROL}, r"unexpected array 'other'"),
    ],
)
def test_damaged_or_hostile_state_file_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, arrays: dict[str, object], reason: str
) -> None:
    kept = SiteStateFile(tmp_path, "site-a")
    mark = fingerprint(CONFIG, LAYOUT)
    kept.save({}, run="r", round=0, fingerprint=mark)
    with np.load(kept.path, allow_pickle=False) as archive:
        header = archive["header"]
    has_header = "no header" not in reason
    _write_raw(kept.path, **arrays, **({"header": header} if has_header else {}))
    with caplog.at_level(logging.WARNING, "fedloom.site"):
        assert kept.load(run="r", fingerprint=mark, size=8) is None
    assert re.search(reason, caplog.text), caplog.text
    assert "cannot be used" in caplog.text


def test_truncated_state_file_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    kept = SiteStateFile(tmp_path, "site-a")
    mark = fingerprint(CONFIG, LAYOUT)
    kept.save({"control": CONTROL}, run="r", round=0, fingerprint=mark)
    kept.path.write_bytes(kept.path.read_bytes()[:100])
    with caplog.at_level(logging.WARNING, "fedloom.site"):
        assert kept.load(run="r", fingerprint=mark, size=8) is None
    assert "cannot be used" in caplog.text


def test_failed_write_keeps_the_previous_file(tmp_path: Path) -> None:
    kept = SiteStateFile(tmp_path, "site-a")
    mark = fingerprint(CONFIG, LAYOUT)
    kept.save({"control": CONTROL}, run="r", round=0, fingerprint=mark)
    # Another process whose files may not grow past 4 KiB tries to write a 40 KB state.
    code = f"""
import resource, signal, sys
import numpy as np
from pathlib import Path
from fedloom.deploy import SiteStateFile
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    SiteStateFile(Path({str(tmp_path)!r}), "site-a").save(
        {{"control": np.ones(10000, dtype=np.float32)}}, run="r", round=1, fingerprint="x")
except OSError as error:
    print("failed:", error)
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.startswith("failed:"), out.stdout + out.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["site-a.state.npz"]  # no temporary left
    saved = kept.load(run="r", fingerprint=mark, size=8)
    assert saved is not None
    assert saved.round == 0
    np.testing.assert_array_equal(saved.state["control"], CONTROL)
