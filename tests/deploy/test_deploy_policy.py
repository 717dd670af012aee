"""A federation policy applies to deployed sites by the identity their certificates prove, and
every decision reaches the run's audit trail."""

from __future__ import annotations

from pathlib import Path

from deploy_helpers import (
    experiment_text,
    federation,
    finish,
    start_server,
    start_site,
    stop,
    write_site_data,
)

from fedloom.experiment import Experiment
from fedloom.store import RunStore

SITES = ["site-a", "site-b", "site-c"]
POLICY = '\n[policy]\nallowed = ["site-a", "site-b"]\nmin_cohort = 2\n'


def test_a_site_the_policy_does_not_allow_never_trains(tmp_path: Path) -> None:
    text = experiment_text(rounds=2, cohort=2, min_cohort=2, federated_eval=False) + POLICY
    experiment = Experiment.from_toml(text)
    (tmp_path / "exp.toml").write_text(text)
    fed = federation(tmp_path / "fed", SITES)
    data = write_site_data(experiment, tmp_path / "data")
    server = start_server(tmp_path, tmp_path / "exp.toml", fed, "--deadline", "60")
    sites = [start_site(tmp_path, server.port, fed, s, d) for s, d in zip(SITES, data, strict=True)]
    try:
        assert finish(server.process) == 0, server.output()
    finally:
        stop(server.process, *sites)
    with RunStore.open(tmp_path / "runs" / "fedloom.db") as store:
        rounds = store.rounds(server.run_id)
        trail = store.audit(server.run_id)
        assert trail.verify(rounds=[r.round for r in rounds], finished=True).ok
        entries = trail.entries()
    assert len(rounds) == 2
    assert all(set(r.cohort) == {0, 1} for r in rounds)
    refusals = [e.payload for e in entries if e.kind == "refusal"]
    assert refusals == [
        {"identity": "site-c", "by": "federation", "reason": "identity not on the allow-list"}
    ]
