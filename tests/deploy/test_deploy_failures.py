"""Failures in a real federation on 127.0.0.1: a site killed mid-round is dropped and the round
completes without it; the server killed mid-run resumes from its store when started again, and
the sites (one of them restarted too) reconnect on their own."""

from __future__ import annotations

import re
import time
from pathlib import Path

from deploy_helpers import (
    Server,
    experiment_text,
    federation,
    finish,
    free_port,
    start_server,
    start_site,
    stop,
    write_site_data,
)

from fedloom.experiment import Experiment
from fedloom.store import RunStore

SITES = ["site-a", "site-b", "site-c"]


def _wait_for(server: Server, pattern: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(pattern, server.output(), re.MULTILINE):
            return
        assert server.process.poll() is None, server.output()
        time.sleep(0.05)
    raise AssertionError(f"no {pattern!r} in the server's output:\n{server.output()}")


def test_killed_site_and_killed_server(tmp_path: Path) -> None:
    text = experiment_text(rounds=4, cohort=3, min_cohort=2, federated_eval=False)
    (tmp_path / "exp.toml").write_text(text)
    fed = federation(tmp_path / "fed", SITES)
    data = write_site_data(Experiment.from_toml(text), tmp_path / "data")
    listen = f"127.0.0.1:{free_port()}"
    args = ("--listen", listen, "--deadline", "30")
    server = start_server(tmp_path, tmp_path / "exp.toml", fed, *args)
    # Every site takes about 1 s a round (50 ms steps), so the test acts mid-round.
    fast = [
        start_site(tmp_path, server.port, fed, s, d, model="site_models:slow_digits")
        for s, d in zip(SITES[:2], data[:2], strict=True)
    ]
    slow = start_site(
        tmp_path, server.port, fed, "site-c", data[2], model="site_models:slow_digits"
    )
    restarted = []
    try:
        _wait_for(server, r"^round 0: 3/3")
        slow.kill()  # while it trains round 1 (about 1 s of 50 ms steps)
        _wait_for(server, r"^round 1: 2/3")
        server.process.kill()
        server.process.wait()
        restarted.append(start_site(tmp_path, server.port, fed, "site-c", data[2]))
        again = start_server(tmp_path, tmp_path / "exp.toml", fed, *args)
        assert again.run_id == server.run_id
        assert finish(again.process) == 0, again.output()
        assert all(finish(s) == 0 for s in [*fast, *restarted])
    finally:
        stop(server.process, *fast, slow, *restarted)
    with RunStore.open(tmp_path / "runs" / "fedloom.db") as store:
        info = store.run(server.run_id)
        assert info.status == "completed"
        assert len(store.runs()) == 1
        rounds = store.rounds(info.id)
    assert [r.round for r in rounds] == [0, 1, 2, 3]
    assert rounds[0].accepted == (0, 1, 2)
    assert rounds[1].accepted == (0, 1)
    assert rounds[1].aborted is None
    (dropped,) = rounds[1].rejected
    assert dropped.client == 2
    assert "site site-c" in dropped.reason
    assert rounds[2].accepted == rounds[3].accepted == (0, 1, 2)  # all three back
    assert all(r.metrics["wire_bytes_up"] > 0 for r in rounds)
