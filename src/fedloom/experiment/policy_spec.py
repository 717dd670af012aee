"""``[policy]`` and ``[[sites]]``: a run file's federation policy and, in simulation, the
sites' own policies (see :mod:`fedloom.policy`).

::

    [policy]
    allowed = ["client-*"]          # identity patterns that may join
    min_cohort = 5                  # the fewest updates a round may aggregate
    secure_aggregation = false      # required?
    dp = false                      # required?
    max_epsilon = 8.0
    algorithms = ["fedavg", "fedprox"]
    recipients = ["CN=consortium-board"]

    [[sites]]                       # one site's own limits, checked by its client
    identity = "client-3"
    max_epsilon = 4.0
    models = ["mlp:64"]

Everything is checked when the experiment is made, so a contradiction (a policy no run could
satisfy, a run the policy forbids, too few sites left after their refusals) fails before any
data is loaded. Sites that refuse are not errors: they sit the run out, and the refusal goes to
the audit trail.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fedloom.experiment import checks
from fedloom.experiment.errors import ExperimentError, KeyPath
from fedloom.policy import (
    Admission,
    FederationPolicy,
    PolicyError,
    RunTerms,
    SitePolicy,
    admit,
    check_federation,
    from_mapping,
    simulated_identity,
)

if TYPE_CHECKING:
    from fedloom.experiment.experiment import Experiment
    from fedloom.experiment.specs import ModelSpec

SECURE_AGGREGATION_STAGES = ("secagg", "secure_aggregation", "secure_sum")
"""Stage kinds that make a run's aggregation secure (none ship yet; the names are reserved)."""


def federation_policy(table: Mapping[str, Any]) -> FederationPolicy:
    """The ``[policy]`` table as a :class:`FederationPolicy`."""
    return _build(FederationPolicy, table, ("policy",))  # type: ignore[no-any-return]


def site_policy(table: Mapping[str, Any], index: int) -> SitePolicy:
    """The ``index``-th ``[[sites]]`` table as a :class:`SitePolicy`."""
    return _build(SitePolicy, table, ("sites", index))  # type: ignore[no-any-return]


def _build(kind: type[Any], table: Mapping[str, Any], at: KeyPath) -> Any:
    if not isinstance(table, Mapping):
        raise ExperimentError(at, f"must be a table, got {checks.kind_of(table)}")
    names = [f.name for f in dataclasses.fields(kind)]
    checks.no_unknown_keys(at, table, names)
    try:
        return from_mapping(kind, table)
    except TypeError:  # a required key is missing
        missing = [f.name for f in dataclasses.fields(kind)
                   if f.default is dataclasses.MISSING and f.name not in table]  # fmt: skip
        raise ExperimentError((*at, *missing[:1]), "required, missing") from None
    except ValueError as error:
        raise checks.blamed(at, dict(table), error) from None


def model_id(spec: ModelSpec) -> str:
    """How a site names the model it accepts: ``"softmax"``, ``"mlp:64-32"``, or the
    factory's ``"package.module:function"``."""
    if spec.kind == "mlp":
        return "mlp:" + "-".join(str(w) for w in spec.hidden or ())
    if spec.kind == "factory":
        return str(spec.factory)
    return spec.kind


def run_terms(experiment: Experiment) -> RunTerms:
    """What ``experiment`` asks of the sites. The planned ε is the ``[privacy]`` budget's
    ``max_epsilon``, which the run never exceeds; a private run without a budget promises no
    bound (ε = ∞), and a run without ``[privacy]`` plans no DP."""
    secure = any(s.kind in SECURE_AGGREGATION_STAGES for s in experiment.stages)
    recipients = () if experiment.policy is None else experiment.policy.recipients
    privacy = experiment.privacy
    epsilon = delta = None
    if privacy is not None:
        epsilon = math.inf if privacy.max_epsilon is None else privacy.max_epsilon
        delta = privacy.delta
    return RunTerms(
        algorithm=experiment.algorithm.name,
        model=model_id(experiment.model),
        secure_aggregation=secure,
        epsilon=epsilon,
        delta=delta,
        recipients=tuple(r for r in recipients if not any(ch in r for ch in "*?[")),
    )


def admission(experiment: Experiment) -> Admission:
    """Who takes part in ``experiment`` under its policies (``ExperimentError`` if too few)."""
    policy = experiment.policy
    cohort = experiment.run.cohort if isinstance(experiment.run.cohort, int) else 1
    try:
        return admit(
            policy, experiment.sites, run_terms(experiment), range(experiment.data.clients),
            identity=simulated_identity, cohort=cohort,
        )  # fmt: skip
    except PolicyError as error:
        raise ExperimentError(("policy",), str(error)) from None


def check_policies(experiment: Experiment) -> None:
    """Refuse contradictions between ``experiment`` and its policies, naming the key."""
    policy = experiment.policy
    _unique_sites(experiment.sites)
    if policy is not None:
        for key, reason in check_federation(policy, run_terms(experiment)):
            raise ExperimentError(("policy", key), reason)
        if experiment.run.min_cohort < policy.min_cohort:
            raise ExperimentError(
                ("run", "min_cohort"),
                f"must be at least policy.min_cohort = {policy.min_cohort} (a round may not "
                f"aggregate fewer updates), got {experiment.run.min_cohort}",
            )
    # Who remains after the policies is checked when the run starts, against the identities it
    # really has: simulated clients (`fedloom run`) or the sites' certificates (`fedloom server`).


def _unique_sites(sites: Sequence[SitePolicy]) -> None:
    seen: set[str] = set()
    for index, site in enumerate(sites):
        if site.identity in seen:
            raise ExperimentError(
                ("sites", index, "identity"),
                f"{checks.show(site.identity)} has two [[sites]] tables; give each site one",
            )
        seen.add(site.identity)
