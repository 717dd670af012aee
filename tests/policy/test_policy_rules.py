"""Federation and site policies: who may join, on what terms, and contradictions found early."""

from __future__ import annotations

import pytest

from fedloom.policy import (
    FederationPolicy,
    PolicyError,
    RunTerms,
    SitePolicy,
    admit,
    check_federation,
    simulated_identity,
    site_refusals,
)

TERMS = RunTerms(algorithm="fedavg", model="mlp:64", epsilon=8.0, delta=1e-5)


def test_a_site_whose_limit_is_epsilon_4_refuses_a_run_planned_at_epsilon_8() -> None:
    site = SitePolicy(identity="client-1", max_epsilon=4.0)
    assert site_refusals(site, TERMS) == ["the run plans ε = 8, above the site's limit ε = 4"]
    assert site_refusals(site, RunTerms("fedavg", "mlp:64", epsilon=3.5)) == []
    admitted = admit(None, [site], TERMS, range(3), identity=simulated_identity)
    assert admitted.population == (0, 2)
    refusals = [p for kind, p in admitted.decisions if kind == "refusal"]
    assert refusals == [
        {"identity": "client-1", "by": "site",
         "reason": "the run plans ε = 8, above the site's limit ε = 4"}
    ]  # fmt: skip


def test_an_identity_not_on_the_allow_list_is_refused() -> None:
    policy = FederationPolicy(allowed=("client-0", "client-2", "hospital-*"))
    names = {0: "client-0", 1: "client-1", 2: "client-2", 3: "hospital-a"}
    admitted = admit(policy, [], TERMS, range(4), identity=names.__getitem__)
    assert admitted.population == (0, 2, 3)
    refusals = [p for kind, p in admitted.decisions if kind == "refusal"]
    assert refusals == [
        {"identity": "client-1", "by": "federation", "reason": "identity not on the allow-list"}
    ]
    assert policy.may_join("hospital-b")
    assert not policy.may_join("clinic-b")


def test_a_run_without_secure_aggregation_is_refused_where_policy_requires_it() -> None:
    policy = FederationPolicy(secure_aggregation=True)
    problems = check_federation(policy, TERMS)
    assert [key for key, _ in problems] == ["secure_aggregation"]
    with pytest.raises(PolicyError, match=r"policy\.secure_aggregation: the federation requires"):
        admit(policy, [], TERMS, range(3), identity=simulated_identity)
    secure = RunTerms("fedavg", "mlp:64", secure_aggregation=True)
    assert check_federation(policy, secure) == []
    site = SitePolicy(identity="client-0", secure_aggregation=True)
    assert site_refusals(site, TERMS) == ["the site requires secure aggregation; the run has none"]
    assert site_refusals(site, secure) == []


def test_each_federation_rule_names_what_the_run_breaks() -> None:
    policy = FederationPolicy(dp=True, max_epsilon=4.0, algorithms=("fedprox",),
                              recipients=("CN=board",))  # fmt: skip
    no_dp = RunTerms("fedavg", "softmax", recipients=("CN=vendor",))
    assert [k for k, _ in check_federation(policy, no_dp)] == ["dp", "algorithms", "recipients"]
    assert [k for k, _ in check_federation(policy, TERMS)] == ["max_epsilon", "algorithms"]
    assert policy.may_receive("CN=board")
    assert not policy.may_receive("CN=vendor")
    assert not FederationPolicy().may_receive("anyone")  # by default the model stays put


def test_site_rules_on_models_algorithms_dp_and_recipients() -> None:
    site = SitePolicy(identity="s", dp=True, algorithms=("fedprox",), models=("softmax",),
                      recipients=("CN=board",))  # fmt: skip
    terms = RunTerms("fedavg", "mlp:64", recipients=("CN=vendor",))
    assert site_refusals(site, terms) == [
        "the site requires differential privacy; the run plans none",
        "algorithm 'fedavg' is not one the site accepts",
        "model 'mlp:64' is not one the site knows",
        "'CN=vendor' would receive the model, which the site does not allow",
    ]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: FederationPolicy(allowed=()), "allowed must name at least one identity"),
        (lambda: FederationPolicy(algorithms=()), "algorithms must name at least one recipe"),
        (lambda: FederationPolicy(allowed=("a", "b"), min_cohort=3),
         "min_cohort must be at most the 2 identities allowed to join, got 3"),
        (lambda: FederationPolicy(max_epsilon=0.0), "max_epsilon must be a number > 0"),
        (lambda: FederationPolicy(max_epsilon=float("inf")), "max_epsilon must be finite"),
        (lambda: FederationPolicy(min_cohort=0), "min_cohort must be an integer >= 1"),
        (lambda: FederationPolicy(dp="yes"), "dp must be true or false"),  # type: ignore[arg-type]
        (lambda: FederationPolicy(allowed="client-*"), "allowed must be an array"),  # type: ignore[arg-type]
        (lambda: SitePolicy(identity=""), "identity must be a non-empty string"),
    ],
)  # fmt: skip
def test_a_policy_no_run_could_satisfy_is_refused(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


def test_too_few_clients_left_is_refused_before_anything_starts() -> None:
    policy = FederationPolicy(allowed=("client-0", "client-1", "client-2"), min_cohort=2)
    site = SitePolicy(identity="client-0", max_epsilon=1.0)  # ε 8 planned: both refuse
    with pytest.raises(PolicyError, match=r"only 1 of 5 clients may take part .* fewer than the 2"):
        admit(policy, [site, SitePolicy(identity="client-1", max_epsilon=1.0)], TERMS, range(5),
              identity=simulated_identity)  # fmt: skip
