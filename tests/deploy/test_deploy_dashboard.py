"""`fedloom server --dashboard` with two site processes over mutual TLS on 127.0.0.1: the
dashboard in the server's process shows the connected sites by the identity their certificates
proved, the round in flight, and the run's rounds by site name; a stop from the dashboard with
its token ends the run after a round, resumable."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deploy_helpers import (
    Server,
    experiment_text,
    federation,
    finish,
    start_server,
    start_site,
    stop,
    write_site_data,
)

from fedloom.deploy.live import site_status
from fedloom.experiment import Experiment
from fedloom.store import RunStore
from fedloom.transport import SessionView

SITES = ["site-a", "site-b"]
TOKEN = "dashboard-token-0123456789"


def get(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def until(read: Callable[[], Any], ok: Callable[[Any], bool], what: str, server: Server) -> Any:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        value = read()
        if ok(value):
            return value
        assert server.process.poll() is None, f"the server ended first:\n{server.output()}"
        time.sleep(0.05)
    raise AssertionError(f"never saw {what}; last: {value!r}")


def test_dashboard_beside_the_server_shows_sites_and_rounds(tmp_path: Path) -> None:
    text = experiment_text(clients=2, rounds=5, cohort=2, federated_eval=False)
    (tmp_path / "exp.toml").write_text(text)
    fed = federation(tmp_path / "fed", SITES)
    data = write_site_data(Experiment.from_toml(text), tmp_path / "data")
    server = start_server(tmp_path, tmp_path / "exp.toml", fed, "--dashboard", "--dashboard-port",
                          "0", "--dashboard-token", TOKEN, "--deadline", "60")  # fmt: skip
    sites = []
    try:
        found = re.search(r"dashboard on (http://127\.0\.0\.1:\d+/)", server.output())
        assert found, server.output()
        url = found.group(1)
        waiting = get(url + "api/live")
        assert (waiting["available"], waiting["sites"], waiting["progress"]) == (True, [], None)

        # About 1.5 s of 50 ms steps a round: the test reads the round while it is in flight.
        sites = [
            start_site(tmp_path, server.port, fed, s, d, model="site_models:slow_digits")
            for s, d in zip(SITES, data, strict=True)
        ]
        live = until(
            lambda: get(url + "api/live"),
            lambda body: len(body["sites"]) == 2 and body["progress"] is not None,
            "both sites and a round in flight",
            server,
        )
        assert [(s["site_id"], s["identity"]) for s in live["sites"]] == [
            ("site-a", "CN=site-a"), ("site-b", "CN=site-b"),
        ]  # fmt: skip
        assert all(s["address"].startswith("ipv4:127.0.0.1:") for s in live["sites"])
        progress = live["progress"]
        assert progress["run_id"] == server.run_id
        assert (progress["phase"], progress["expected"]) == ("train", 2)
        assert 0 <= progress["round"] < 5
        assert progress["received"] + progress["failed"] <= progress["sent"] <= 2
        assert progress["failed"] == 0

        detail = get(url + f"api/runs/{server.run_id}")
        assert detail["sites"] == SITES
        rounds = until(
            lambda: get(url + f"api/runs/{server.run_id}/rounds")["rounds"],
            lambda rs: len(rs) >= 1, "a recorded round", server,
        )  # fmt: skip
        assert rounds[0]["accepted"] == [0, 1]
        assert rounds[0]["accepted_sites"] == SITES

        stopping = get(url + f"api/runs/{server.run_id}/stop", method="POST",
                       headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
        assert stopping["action"] == "stop"
        assert finish(server.process) == 0, server.output()
    finally:
        stop(server.process, *sites)  # they wait for the server to come back
    assert f"--resume {server.run_id}` with the same options" in server.output()
    with RunStore.open(tmp_path / "runs" / "fedloom.db") as store:
        info = store.run(server.run_id)
        assert info.status == "interrupted"
        assert info.stopped.startswith("stopped on request (dashboard, client 127.0.0.1")
        assert 1 <= len(store.rounds(server.run_id)) < 5
        checkpoint = store.latest_checkpoint(server.run_id)
        assert checkpoint is not None
        assert checkpoint.state.round == info.rounds_done


def test_an_insecure_site_is_shown_as_unverified() -> None:
    view = SessionView(site="<b>clinic</b>", subject=None, serial=None, peer="ipv4:10.0.0.9:1",
                       connected_at=5.0, last_heard=None, tasks=("evaluate",))  # fmt: skip
    status = site_status(view)
    assert status.identity == "<b>clinic</b> (unverified: insecure)"
    assert (status.site_id, status.state, status.last_heartbeat) == ("<b>clinic</b>", "evaluating",
                                                                      None)  # fmt: skip
