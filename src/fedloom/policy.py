"""Federation policy and each site's own policy: who may join, and on what terms.

A :class:`FederationPolicy` is the consortium's rule for a run: which identities may join, the
smallest cohort a round may aggregate, whether secure aggregation and differential privacy are
required and the largest ε, which algorithms are allowed, and who may receive the trained model.
A :class:`SitePolicy` is one site's own rule, checked by its client: it refuses a run that asks
more than it allows (no secure aggregation, ε above its limit, an unknown model…).

:class:`RunTerms` is what a run asks. :func:`check_federation` finds contradictions between a
run and the federation policy (before anything starts); :func:`site_refusals` says why a site
refuses; :func:`admit` applies both to a population and returns who takes part, with every
decision worded for the audit trail.

Identities are strings matched by shell-style patterns (``"client-*"``, ``"CN=*.example.org"``).
In simulation client ``i`` is ``"client-<i>"``; a gRPC deployment passes each client's
certificate subject instead, through :func:`admit`'s ``identity`` argument, and calls
:meth:`FederationPolicy.may_receive` before it sends a trained model to anyone.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


class PolicyError(ValueError):
    """A policy that cannot be met, or a run its policy forbids; nothing has started."""


def _patterns(name: str, value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ValueError(f"{name} must be an array of strings, got {value!r}")
    if not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{name} must hold non-empty strings, got {list(value)!r}")
    return tuple(value)


def _flag(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")


def _epsilon(name: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")


def simulated_identity(client: int) -> str:
    """A simulated client's identity: ``"client-<id>"``."""
    return f"client-{client}"


def matches(identity: str, patterns: Sequence[str] | None) -> bool:
    """Whether ``identity`` matches one of ``patterns`` (``None``: anyone)."""
    return patterns is None or any(fnmatch.fnmatchcase(identity, p) for p in patterns)


@dataclass(frozen=True)
class RunTerms:
    """What a run asks of the sites that join it.

    ``epsilon``/``delta``: the planned differential-privacy budget for the whole run, ``None``
    without DP. ``recipients``: who will receive the trained model.
    """

    algorithm: str
    model: str
    secure_aggregation: bool = False
    epsilon: float | None = None
    delta: float | None = None
    recipients: tuple[str, ...] = ()


@dataclass(frozen=True)
class FederationPolicy:
    """The consortium's rule for a run (the ``[policy]`` table of a run file).

    ``allowed``: identity patterns that may join (``None``: anyone). ``min_cohort``: the
    fewest updates a round may aggregate. ``secure_aggregation``/``dp``: required or not.
    ``max_epsilon``: the largest planned ε. ``algorithms``: allowed recipes (``None``: any).
    ``recipients``: identity patterns that may receive the trained model (none by default:
    it stays with the server's operator).
    """

    allowed: tuple[str, ...] | None = None
    min_cohort: int = 1
    secure_aggregation: bool = False
    dp: bool = False
    max_epsilon: float | None = None
    algorithms: tuple[str, ...] | None = None
    recipients: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed", _patterns("allowed", self.allowed))
        object.__setattr__(self, "algorithms", _patterns("algorithms", self.algorithms))
        object.__setattr__(self, "recipients", _patterns("recipients", self.recipients) or ())
        if isinstance(self.min_cohort, bool) or not isinstance(self.min_cohort, int):
            raise ValueError(f"min_cohort must be an integer >= 1, got {self.min_cohort!r}")
        if self.min_cohort < 1:
            raise ValueError(f"min_cohort must be an integer >= 1, got {self.min_cohort!r}")
        _flag("secure_aggregation", self.secure_aggregation)
        _flag("dp", self.dp)
        _epsilon("max_epsilon", self.max_epsilon)
        if self.allowed == ():
            raise ValueError(
                "allowed must name at least one identity: as written, no run could "
                "satisfy this policy (leave it out to allow anyone)"
            )
        if self.algorithms == ():
            raise ValueError(
                "algorithms must name at least one recipe: as written, no run "
                "could satisfy this policy (leave it out to allow any)"
            )
        exact = self.allowed is not None and not any(_wild(p) for p in self.allowed)
        if exact and self.allowed is not None and self.min_cohort > len(set(self.allowed)):
            raise ValueError(
                f"min_cohort must be at most the {len(set(self.allowed))} identities allowed to "
                f"join, got {self.min_cohort}: no run could satisfy this policy"
            )

    def may_join(self, identity: str) -> bool:
        """Whether ``identity`` is on the allow-list."""
        return matches(identity, self.allowed)

    def may_receive(self, identity: str) -> bool:
        """Whether ``identity`` may receive the trained model (the deployment's hook)."""
        return matches(identity, self.recipients)


@dataclass(frozen=True)
class SitePolicy:
    """One site's own rule (a ``[[sites]]`` table in simulation; a file on the site in a
    deployment), checked by its client before it joins.

    ``max_epsilon``: the largest planned ε it accepts; ``secure_aggregation``/``dp``: whether
    it requires them; ``algorithms``/``models``: what it accepts (``None``: anything);
    ``recipients``: who it lets receive the model trained on its data (``None``: anyone the
    federation allows).
    """

    identity: str
    max_epsilon: float | None = None
    secure_aggregation: bool = False
    dp: bool = False
    algorithms: tuple[str, ...] | None = None
    models: tuple[str, ...] | None = None
    recipients: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.identity, str) or not self.identity:
            raise ValueError(f"identity must be a non-empty string, got {self.identity!r}")
        _epsilon("max_epsilon", self.max_epsilon)
        _flag("secure_aggregation", self.secure_aggregation)
        _flag("dp", self.dp)
        for name in ("algorithms", "models", "recipients"):
            object.__setattr__(self, name, _patterns(name, getattr(self, name)))


def check_federation(policy: FederationPolicy, terms: RunTerms) -> list[tuple[str, str]]:
    """Every way ``terms`` breaks ``policy``, as ``(policy key, reason)``; empty if none."""
    problems = []
    if policy.secure_aggregation and not terms.secure_aggregation:
        problems.append(
            (
                "secure_aggregation",
                "the federation requires secure aggregation, but the run has no secure "
                "aggregation stage",
            )
        )
    if policy.dp and terms.epsilon is None:
        problems.append(
            (
                "dp",
                "the federation requires differential privacy, but the run "
                "plans none (no DP stage with a privacy budget)",
            )
        )
    if _above(terms.epsilon, policy.max_epsilon):
        problems.append(
            (
                "max_epsilon",
                f"the run plans ε = {terms.epsilon:g}, above the "
                f"federation's max_epsilon = {policy.max_epsilon:g}",
            )
        )
    if policy.algorithms is not None and terms.algorithm not in policy.algorithms:
        problems.append(
            (
                "algorithms",
                f"algorithm {terms.algorithm!r} is not among the allowed {list(policy.algorithms)}",
            )
        )
    for who in terms.recipients:
        if not policy.may_receive(who):
            problems.append(
                (
                    "recipients",
                    f"{who!r} would receive the model but is not an "
                    f"allowed recipient {list(policy.recipients)}",
                )
            )
    return problems


def site_refusals(site: SitePolicy, terms: RunTerms) -> list[str]:
    """Why ``site`` refuses ``terms``; empty if it accepts."""
    reasons = []
    if site.secure_aggregation and not terms.secure_aggregation:
        reasons.append("the site requires secure aggregation; the run has none")
    if site.dp and terms.epsilon is None:
        reasons.append("the site requires differential privacy; the run plans none")
    if _above(terms.epsilon, site.max_epsilon):
        reasons.append(
            f"the run plans ε = {terms.epsilon:g}, above the site's limit ε = {site.max_epsilon:g}"
        )
    if not matches(terms.algorithm, site.algorithms):
        reasons.append(f"algorithm {terms.algorithm!r} is not one the site accepts")
    if not matches(terms.model, site.models):
        reasons.append(f"model {terms.model!r} is not one the site knows")
    for who in terms.recipients:
        if not matches(who, site.recipients):
            reasons.append(f"{who!r} would receive the model, which the site does not allow")
    return reasons


Identity = Callable[[int], str]
Decision = tuple[str, dict[str, Any]]
"""An audit entry: ``(kind, payload)`` with kind ``"policy"`` or ``"refusal"``."""


@dataclass(frozen=True)
class Admission:
    """Who may take part in a run, and every decision that led there (for the audit trail)."""

    population: tuple[int, ...]
    decisions: tuple[Decision, ...]


def admit(
    policy: FederationPolicy | None,
    sites: Sequence[SitePolicy],
    terms: RunTerms,
    population: Sequence[int],
    *,
    identity: Identity,
    cohort: int = 1,
) -> Admission:
    """Apply the federation policy and the sites' own policies to ``population``.

    Raises :class:`PolicyError` when the run breaks the federation policy, or when fewer
    clients remain than the policy's ``min_cohort`` or the run's ``cohort`` need.
    """
    policy = policy or FederationPolicy()
    problems = check_federation(policy, terms)
    if problems:
        raise PolicyError("; ".join(f"policy.{key}: {reason}" for key, reason in problems))
    own = {site.identity: site for site in sites}
    decisions: list[Decision] = [
        (
            "policy",
            {"decision": "federation policy in force", **_public(policy), "run": _public(terms)},
        )
    ]
    admitted = []
    for client in population:
        who = identity(client)
        if not policy.may_join(who):
            decisions.append(
                (
                    "refusal",
                    {
                        "identity": who,
                        "by": "federation",
                        "reason": "identity not on the allow-list",
                    },
                )
            )
            continue
        site = own.get(who)
        reasons = [] if site is None else site_refusals(site, terms)
        if reasons:
            decisions.append(
                ("refusal", {"identity": who, "by": "site", "reason": "; ".join(reasons)})
            )
            continue
        admitted.append(client)
    needed = max(policy.min_cohort, cohort)
    if len(admitted) < needed:
        raise PolicyError(
            f"only {len(admitted)} of {len(population)} clients may take part after the "
            f"federation's and the sites' policies, fewer than the {needed} a round needs "
            f"(policy.min_cohort = {policy.min_cohort}, run cohort {cohort})"
        )
    decisions.append(
        (
            "policy",
            {
                "decision": "admitted",
                "clients": len(admitted),
                "refused": len(population) - len(admitted),
            },
        )
    )
    return Admission(tuple(admitted), tuple(decisions))


def _public(value: Any) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(value).items()}


def _above(planned: float | None, limit: float | None) -> bool:
    return planned is not None and limit is not None and planned > limit


def _wild(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def from_mapping(kind: type[Any], table: Mapping[str, Any]) -> Any:
    """A policy from a parsed TOML table, lists as tuples."""
    return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in table.items()})
