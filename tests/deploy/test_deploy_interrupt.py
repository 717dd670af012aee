"""Ctrl-C on `fedloom server`: the run is marked interrupted and the message gives the server's
own command to continue it (not `fedloom run --resume`, which would train it in simulation)."""

from __future__ import annotations

import signal
from pathlib import Path

from deploy_helpers import experiment_text, federation, finish, start_server, stop

from fedloom.store import RunStore


def test_ctrl_c_names_the_server_command_that_resumes_the_run(tmp_path: Path) -> None:
    exp = tmp_path / "exp.toml"
    exp.write_text(experiment_text(clients=2, cohort=2))
    fed = federation(tmp_path / "fed", ["site-a", "site-b"])
    server = start_server(tmp_path, exp, fed)  # waits for sites that never come
    try:
        server.process.send_signal(signal.SIGINT)
        assert finish(server.process, timeout=60) == 130
    finally:
        stop(server.process)
    output = server.output()
    assert f"`fedloom server {exp} --resume {server.run_id}`" in output, output
    assert "fedloom run --resume" not in output
    assert "Traceback" not in output
    assert "Task was destroyed" not in output
    with RunStore.open(tmp_path / "runs" / "fedloom.db") as store:
        assert store.run(server.run_id).status == "interrupted"
