"""Policies in run files: contradictions named before data is loaded; refused sites sit the run
out and every decision reaches the audit trail and the compliance report."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedloom.compliance import compliance_report
from fedloom.experiment import Experiment, ExperimentError
from fedloom.policy import FederationPolicy, SitePolicy
from fedloom.runner import run_experiment
from fedloom.store import RunStore

pytest.importorskip("sklearn")

RUN = """
name = "governed"
[data]
dataset = "digits"
clients = 6
[model]
kind = "softmax"
[train]
lr = 0.1
[algorithm]
name = "fedavg"
[run]
rounds = 2
cohort = {cohort}
min_cohort = 2
federated_eval = false
{extra}
"""


def experiment(extra: str, cohort: int = 3) -> Experiment:
    return Experiment.from_toml(RUN.format(extra=extra, cohort=cohort), source="g.toml")


POLICY = """
[policy]
allowed = ["client-*"]
min_cohort = 2
algorithms = ["fedavg", "fedprox"]

[[sites]]
identity = "client-1"
models = ["mlp:*"]

[[sites]]
identity = "client-4"
algorithms = ["fedprox"]
"""


def test_policies_round_trip_through_the_run_file() -> None:
    exp = experiment(POLICY)
    assert exp.policy == FederationPolicy(allowed=("client-*",), min_cohort=2,
                                          algorithms=("fedavg", "fedprox"))  # fmt: skip
    assert exp.sites[0] == SitePolicy(identity="client-1", models=("mlp:*",))
    assert Experiment.from_toml(exp.to_toml()) == exp


def test_refusing_sites_sit_the_run_out_and_the_trail_says_why(tmp_path: Path) -> None:
    with RunStore.open(tmp_path / "fedloom.db") as store:
        outcome = run_experiment(experiment(POLICY), store)
        entries = store.audit(outcome.run_id).entries()
        report = compliance_report(store, outcome.run_id)
    for record in outcome.history.records:
        assert not {1, 4} & set(record.cohort)
    refusals = {e.payload["identity"]: e.payload["reason"] for e in entries if e.kind == "refusal"}
    assert refusals == {
        "client-1": "model 'softmax' is not one the site knows",
        "client-4": "algorithm 'fedavg' is not one the site accepts",
    }
    decisions = [e.payload["decision"] for e in entries if e.kind == "policy"]
    assert decisions == ["federation policy in force", "admitted"]
    assert "client-1 refused by site: model 'softmax' is not one the site knows" in report
    assert "**federation policy in force**" in report


@pytest.mark.parametrize(
    ("extra", "cohort", "message"),
    [
        ('[policy]\nsecure_aggregation = true', 3,
         r"g.toml:\d+: key 'policy.secure_aggregation': the federation requires secure agg"),
        ('[policy]\ndp = true\nmax_epsilon = 8.0', 3,
         r"key 'policy.dp': the federation requires differential privacy"),
        ('[policy]\nalgorithms = ["scaffold"]', 3,
         r"key 'policy.algorithms': algorithm 'fedavg' is not among the allowed \['scaffold'\]"),
        ('[policy]\nmin_cohort = 3', 3,
         r"key 'run.min_cohort': must be at least policy.min_cohort = 3"),
        ('[policy]\nallowed = ["client-0", "client-1"]', 3,
         r"only 2 of 6 clients may take part .* fewer than the 3 a round needs"),
        ('[policy]\nallowed = []', 3,
         r"key 'policy.allowed': must name at least one identity: as written, no run could"),
        ('[policy]\nmax_epsilon = "four"', 3, r"key 'policy.max_epsilon': must be a number > 0"),
        ('[policy]\nalowed = ["x"]', 3, r"key 'policy.alowed': unknown key.*did you mean"),
        ('[[sites]]\nmax_epsilon = 4.0', 3, r"key 'sites\[0\].identity': required, missing"),
        ('[[sites]]\nidentity = "client-0"\n[[sites]]\nidentity = "client-0"', 3,
         r"key 'sites\[1\].identity': \"client-0\" has two \[\[sites\]\] tables"),
        ('[[sites]]\nidentity = "client-0"\nmodels = ["mlp:*"]\n'
         '[[sites]]\nidentity = "client-1"\nmodels = ["mlp:*"]', 5,
         r"only 4 of 6 clients may take part"),
    ],
)  # fmt: skip
def test_a_bad_or_contradictory_policy_fails_before_anything_runs(
    extra: str, cohort: int, message: str, tmp_path: Path
) -> None:
    """Contradictions fail when the file is read; too few clients left once the policies have
    refused some fails when the run starts (the identities are known only then: simulated
    clients here, certificate subjects in a deployment), before anything is written."""
    with RunStore.open(tmp_path / "fedloom.db") as store:
        with pytest.raises(ExperimentError, match=message):
            run_experiment(experiment(extra, cohort), store)
        assert store.runs() == []


PRIVATE = """
[privacy]
mechanism = "gaussian"
clip = 1.0
noise_multiplier = 1.0
max_epsilon = {budget}
delta = 1e-3
stop_early = true
"""


def test_a_private_run_meets_a_dp_policy_and_a_strict_site_sits_it_out(tmp_path: Path) -> None:
    """The planned ε a policy checks is the [privacy] budget the run promises never to exceed."""
    sites = (
        '[policy]\ndp = true\nmax_epsilon = 50.0\n[[sites]]\nidentity = "client-2"\n'
        "max_epsilon = 4.0\n"
    )
    exp = experiment(PRIVATE.format(budget=40.0) + sites)
    with RunStore.open(tmp_path / "fedloom.db") as store:
        outcome = run_experiment(exp, store)
        entries = store.audit(outcome.run_id).entries()
    refusals = {e.payload["identity"]: e.payload["reason"] for e in entries if e.kind == "refusal"}
    assert refusals == {"client-2": "the run plans ε = 40, above the site's limit ε = 4"}
    assert all(2 not in record.cohort for record in outcome.history.records)
    with pytest.raises(ExperimentError, match=r"policy.max_epsilon.*ε = 80, above the federation"):
        experiment(PRIVATE.format(budget=80.0) + sites)
