"""`fedloom server` itself: Ctrl-C marks the run interrupted and gives the server's own command to
continue it (not `fedloom run --resume`, which would train it in simulation); the dashboard's
options are checked, and its port bound, before the federation starts."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest
from deploy_helpers import experiment_text, federation, finish, start_server, stop

from fedloom.cli import main
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


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--dashboard-host", "0.0.0.0"], "--dashboard: host '0.0.0.0' is not loopback"),
        (["--dashboard-token", "short"], "token must be at least 16 characters"),
        (["--dashboard-port", "{busy}"], "cannot serve the dashboard on 127.0.0.1:{busy}"),
    ],
)
def test_dashboard_options_are_checked_before_the_federation_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    exp = tmp_path / "exp.toml"
    exp.write_text(experiment_text(clients=2, cohort=2))
    fed = federation(tmp_path / "fed", ["site-a", "site-b"])
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        args = [o.format(busy=port) for o in options]
        with pytest.raises(SystemExit) as exit_:
            main(["server", str(exp), "--dir", str(fed.root), "--listen", "127.0.0.1:0",
                  "--runs", str(tmp_path / "runs"), "--dashboard", *args])  # fmt: skip
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert message.format(busy=port) in captured.err
    assert "listening on" not in captured.out


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--uploads", "0", "uploads must be an integer >= 1, got 0"),
        ("--uploads", "-1", "uploads must be an integer >= 1, got -1"),
        (
            "--malloc-arenas",
            "-1",
            "--malloc-arenas must be 0 (leave the allocator as it is) or a count >= 1, got -1",
        ),
    ],
)
def test_counts_below_their_minimum_are_refused_before_the_federation_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, message: str
) -> None:
    exp = tmp_path / "exp.toml"
    exp.write_text(experiment_text(clients=2, cohort=2))
    fed = federation(tmp_path / "fed", ["site-a", "site-b"])
    with pytest.raises(SystemExit) as exit_:
        main(["server", str(exp), "--dir", str(fed.root), "--listen", "127.0.0.1:0",
              "--runs", str(tmp_path / "runs"), flag, value])  # fmt: skip
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert message in " ".join(captured.err.split())
    assert "listening on" not in captured.out
