"""A site brings its own policy (``fedloom client --policy``): real server and site processes
with mutual TLS on 127.0.0.1. A site that refuses the run's terms says why, exits with status
3, and the refusal reaches the run's audit trail under the identity its certificate proves; the
run goes on with the other sites, or fails, saying so, when too few remain."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from deploy_helpers import (
    environment,
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

SECURE_ONLY = "# this site's data leaves only under secure aggregation\nsecure_aggregation = true\n"
SECURE_SUM = """
[[stages]]
kind = "secure_sum"
clip = 100.0
dropout_rate = 0.0
corrupt_fraction = 0.0
"""
REASON = "the site requires secure aggregation; the run has none"


def _setup(tmp_path: Path, sites: list[str], **run: int) -> tuple[Experiment, list[Path]]:
    text = experiment_text(clients=len(sites), federated_eval=False, **run)
    (tmp_path / "exp.toml").write_text(text)
    experiment = Experiment.from_toml(text)
    return experiment, write_site_data(experiment, tmp_path / "data")


def test_a_site_requiring_secure_aggregation_refuses_and_the_run_goes_on(tmp_path: Path) -> None:
    names = ["site-a", "site-b", "site-c"]
    _, data = _setup(tmp_path, names, rounds=2, cohort=2, min_cohort=2)
    fed = federation(tmp_path / "fed", names)
    (tmp_path / "strict.toml").write_text(SECURE_ONLY)
    (tmp_path / "lenient.toml").write_text('models = ["softmax"]\nalgorithms = ["fed*"]\n')
    server = start_server(tmp_path, tmp_path / "exp.toml", fed, "--deadline", "60")
    refusing = start_site(
        tmp_path, server.port, fed, "site-c", data[2], "--policy", str(tmp_path / "strict.toml")
    )
    others: list[subprocess.Popen[str]] = []
    try:
        assert finish(refusing, timeout=60) == 3
        out = next(tmp_path.glob("site-site-c-*.log")).read_text()
        assert f"refused: site-c refused the run under its own policy: {REASON}" in out
        others = [
            start_site(tmp_path, server.port, fed, name, path, "--policy", str(policy))
            for name, path, policy in (
                ("site-a", data[0], tmp_path / "lenient.toml"),
                ("site-b", data[1], tmp_path / "lenient.toml"),
            )
        ]
        assert finish(server.process) == 0, server.output()
        assert [finish(p) for p in others] == [0, 0]
    finally:
        stop(server.process, refusing, *others)
    with RunStore.open(tmp_path / "runs" / "fedloom.db") as store:
        rounds = store.rounds(server.run_id)
        trail = store.audit(server.run_id)
        assert trail.verify(rounds=[r.round for r in rounds], finished=True).ok
        entries = trail.entries()
        assert store.run(server.run_id).status == "completed"
    assert len(rounds) == 2
    assert all(set(r.accepted) == {0, 1} for r in rounds)  # site-c never trained
    refusals = [e.payload for e in entries if e.kind == "refusal"]
    assert refusals == [
        {"identity": "site-c", "by": "site", "reason": REASON, "subject": "CN=site-c"}
    ]
    kinds = [e.kind for e in entries]
    assert kinds.index("refusal") < kinds.index("round")  # refused before any round


def test_too_few_sites_left_after_refusals_fail_the_run_clearly(tmp_path: Path) -> None:
    names = ["site-a", "site-b"]
    _, data = _setup(tmp_path, names, rounds=1, cohort=2, min_cohort=2)
    fed = federation(tmp_path / "fed", names)
    (tmp_path / "strict.toml").write_text(SECURE_ONLY)
    server = start_server(tmp_path, tmp_path / "exp.toml", fed, "--deadline", "60")
    refusing = start_site(
        tmp_path, server.port, fed, "site-b", data[1], "--policy", str(tmp_path / "strict.toml")
    )
    waiting: subprocess.Popen[str] | None = None
    try:
        assert finish(refusing, timeout=60) == 3
        waiting = start_site(tmp_path, server.port, fed, "site-a", data[0])
        assert finish(server.process) == 2
    finally:
        stop(server.process, refusing, *([] if waiting is None else [waiting]))
    assert (
        "error: key 'policy': only 1 of 2 sites remain after site-b refused the run under their "
        "own policies, fewer than the 2 a round needs" in server.output()
    )
    with RunStore.open(tmp_path / "runs" / "fedloom.db") as store:
        assert store.run(server.run_id).status == "failed"
        trail = store.audit(server.run_id)
        assert trail.verify(rounds=[], finished=True).ok
        entries = trail.entries()
        assert not store.rounds(server.run_id)
    assert [e.payload["identity"] for e in entries if e.kind == "refusal"] == ["site-b"]
    assert entries[-1].kind == "run_finished"
    assert entries[-1].payload["status"] == "failed"


def test_a_malformed_policy_file_is_refused_before_connecting(tmp_path: Path) -> None:
    fed = federation(tmp_path / "fed", ["site-a"])
    data = tmp_path / "nothing.npz"  # never read: the policy is checked first
    cases = {
        "max_epsilon = -4\n": "bad.toml:1: key 'max_epsilon': must be a number > 0, got -4",
        "dp = true\nmodel = ['softmax']\n": "bad.toml:2: key 'model': unknown key; accepted keys",
        'algorithms = "fedavg"\n': "bad.toml:1: key 'algorithms': must be an array of strings",
        'identity = "site-z"\n': "bad.toml:1: key 'identity': a site's policy file names no",
        "secure_aggregation = \n": "bad.toml:1: invalid TOML",
    }
    port = str(free_port())  # nothing listens there: the client must fail before connecting
    for text, expected in cases.items():
        (tmp_path / "bad.toml").write_text(text)
        done = subprocess.run(
            [
                sys.executable, "-m", "fedloom", "client", "--server", f"127.0.0.1:{port}",
                "--identity", str(fed.cert("site-a")), "--key", str(fed.key("site-a")),
                "--ca", str(fed.ca_cert), "--data", str(data), "--model",
                "site_models:digits_softmax", "--policy", "bad.toml", "--give-up-after", "1",
            ],
            cwd=tmp_path, env=environment(tmp_path), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert expected in done.stderr, done.stderr


def test_a_site_requiring_secure_aggregation_trains_in_a_secure_run(tmp_path: Path) -> None:
    names = ["site-a", "site-b", "site-c"]
    text = experiment_text(clients=3, rounds=1, cohort=3, min_cohort=2, federated_eval=False)
    text += SECURE_SUM
    (tmp_path / "exp.toml").write_text(text)
    data = write_site_data(Experiment.from_toml(text), tmp_path / "data")
    fed = federation(tmp_path / "fed", names)
    (tmp_path / "strict.toml").write_text(SECURE_ONLY + "max_epsilon = 4.0\n")
    server = start_server(tmp_path, tmp_path / "exp.toml", fed, "--deadline", "60")
    policy = ("--policy", str(tmp_path / "strict.toml"))
    sites = [
        start_site(tmp_path, server.port, fed, name, path, *policy)
        for name, path in zip(names, data, strict=True)
    ]
    try:
        assert finish(server.process) == 0, server.output()
        assert [finish(p) for p in sites] == [0, 0, 0]
    finally:
        stop(server.process, *sites)
    with RunStore.open(tmp_path / "runs" / "fedloom.db") as store:
        (only,) = store.rounds(server.run_id)
        entries = store.audit(server.run_id).entries()
    assert only.accepted == (0, 1, 2)
    assert not [e for e in entries if e.kind == "refusal"]
