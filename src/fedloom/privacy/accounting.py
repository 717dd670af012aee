"""Privacy accounting, only through Google's ``dp-accounting`` library.

Each noise stage describes one round as a ``dp_accounting`` event; this module turns a run's
rounds into (ε, δ) with the RDP accountant (the default; Mironov, *Rényi Differential Privacy*,
CSF 2017) or the PLD accountant (Koskela et al. and Doroshenko et al., *Connect the Dots:
Tighter Discrete Approximations of Privacy Loss Distributions*, PETS 2022), and calibrates a
noise multiplier to a target ε with the library's own search. Nothing here re-derives a bound.

The events a round can be:

- ``PoissonSampledDpEvent(q, GaussianDpEvent(z))`` for Poisson sampling (add or remove one
  client);
- ``SampledWithoutReplacementDpEvent(N, m, GaussianDpEvent(z / 2))`` for fixed-size sampling
  (replace one client, so one client moves the sum by up to twice the clipping bound; only the
  RDP accountant supports it);
- a ``ComposedDpEvent`` of Gaussians inside either, when a round releases two noisy sums (the
  update and adaptive clipping's count);
- ``ZCDpEvent(ρ)`` for distributed discrete Gaussian noise, without amplification by sampling.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, TypeAlias

import dp_accounting
from dp_accounting import pld, rdp

from fedloom.core import validate
from fedloom.privacy.sampling import ADD_OR_REMOVE, REPLACE, FixedSampling, Sampling

ACCOUNTANTS = ("rdp", "pld")
"""``rdp``: Rényi DP, fast and a little loose; ``pld``: privacy loss distributions, tighter."""


def _drop_skipped_orders(record: logging.LogRecord) -> bool:
    """The RDP accountant logs each Rényi order it cannot evaluate and then leaves it out of the
    minimum over orders, which stays a valid bound; those lines only alarm users."""
    return "failed to converge" not in record.getMessage()


logging.getLogger("absl").addFilter(_drop_skipped_orders)

DpEvent: TypeAlias = Any
"""A ``dp_accounting.DpEvent`` (the library ships no type information)."""
_RELATIONS = {
    ADD_OR_REMOVE: dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE,
    REPLACE: dp_accounting.NeighboringRelation.REPLACE_ONE,
}


def make_accountant(kind: str = "rdp", relation: str = ADD_OR_REMOVE) -> Any:
    """A fresh ``dp_accounting`` accountant of ``kind`` for the neighbouring ``relation``."""
    validate.one_of("accountant", kind, ACCOUNTANTS)
    validate.one_of("relation", relation, _RELATIONS)
    if kind == "rdp":
        return rdp.RdpAccountant(neighboring_relation=_RELATIONS[relation])
    return pld.PLDAccountant(neighboring_relation=_RELATIONS[relation])


def sampled_gaussian(sampling: Sampling, *noise_multipliers: float) -> DpEvent:
    """One round that adds Gaussian noise to sums of the sampled clients' clipped values.

    Each ``noise_multipliers[i]`` is a noise standard deviation over the add-or-remove
    sensitivity of one released sum (one client's clipping bound). Several multipliers describe
    several sums released in the same round.
    """
    if not noise_multipliers:
        raise ValueError("sampled_gaussian needs at least one noise multiplier")
    for z in noise_multipliers:
        validate.positive("noise_multiplier", z)
    factor = sampling.sensitivity_factor
    gaussians = [dp_accounting.GaussianDpEvent(z / factor) for z in noise_multipliers]
    inner: DpEvent = (
        gaussians[0] if len(gaussians) == 1 else dp_accounting.ComposedDpEvent(gaussians)
    )
    if isinstance(sampling, FixedSampling):
        return dp_accounting.SampledWithoutReplacementDpEvent(
            sampling.population, sampling.count, inner
        )
    return dp_accounting.PoissonSampledDpEvent(sampling.rate, inner)


def spent(
    rounds: Sequence[tuple[DpEvent, int]],
    *,
    delta: float,
    accountant: str = "rdp",
    relation: str = ADD_OR_REMOVE,
) -> float:
    """ε at ``delta`` after composing each ``(event, times)`` of ``rounds``."""
    validate.in_range("delta", delta, 0.0, 1.0, low_open=True, high_open=True)
    acc = make_accountant(accountant, relation)
    for event, times in rounds:
        if times == 0:
            continue
        if not acc.supports(event):
            raise ValueError(
                f"the {accountant} accountant cannot account for {type(event).__name__} under "
                f"{relation}: "
                + (
                    "use accountant 'rdp' (dp-accounting's PLD accountant takes only Poisson "
                    "sampling of one Gaussian: not fixed-size sampling, adaptive clipping's two "
                    "releases or distributed discrete noise)"
                    if accountant == "pld"
                    else "use Poisson sampling"
                )
            )
        acc.compose(event, times)
    return float(acc.get_epsilon(delta))


def epsilon(
    event: DpEvent,
    rounds: int,
    *,
    delta: float,
    accountant: str = "rdp",
    relation: str = ADD_OR_REMOVE,
) -> float:
    """ε at ``delta`` after ``rounds`` rounds that are each ``event``."""
    validate.positive_int("rounds", rounds, minimum=0)
    return spent([(event, rounds)], delta=delta, accountant=accountant, relation=relation)


def calibrate_noise(
    sampling: Sampling,
    *,
    rounds: int,
    epsilon: float,
    delta: float,
    accountant: str = "rdp",
) -> float:
    """The smallest noise multiplier z (searched from 0.05 up) whose ``rounds`` rounds under
    ``sampling`` spend at most ``epsilon`` at ``delta`` (``dp_accounting.calibrate_dp_mechanism``).
    For targets so large that z = 0.05 already meets them, the answer is about 0.05."""
    validate.positive_int("rounds", rounds)
    validate.positive("epsilon", epsilon)
    validate.in_range("delta", delta, 0.0, 1.0, low_open=True, high_open=True)
    validate.one_of("accountant", accountant, ACCOUNTANTS)
    relation = sampling.relation

    def make_event(z: float) -> DpEvent:
        return dp_accounting.SelfComposedDpEvent(sampled_gaussian(sampling, z), rounds)

    if accountant == "pld" and isinstance(sampling, FixedSampling):
        raise ValueError("accountant 'pld' supports only Poisson sampling; use 'rdp'")
    brackets: list[Any] = [dp_accounting.LowerEndpointAndGuess(0.05, 1.0)]
    if accountant == "pld":
        # PLDs of small noise multipliers are huge; RDP's answer (at least as much noise, RDP
        # being the looser bound) brackets the search from above.
        upper = calibrate_noise(sampling, rounds=rounds, epsilon=epsilon, delta=delta)
        brackets = [
            dp_accounting.ExplicitBracketInterval(0.8 * upper, upper),
            dp_accounting.ExplicitBracketInterval(0.25 * upper, upper),
        ]
    for bracket in brackets:
        try:
            z = dp_accounting.calibrate_dp_mechanism(
                lambda: make_accountant(accountant, relation),
                make_event,
                epsilon,
                delta,
                bracket_interval=bracket,
                tol=1e-4,
            )
            return float(z)
        except (dp_accounting.mechanism_calibration.NoBracketIntervalFoundError, ValueError):
            continue
    raise ValueError(
        f"no noise multiplier between 0.05 and 2**30 reaches epsilon={epsilon} at "
        f"delta={delta} over {rounds} rounds of {sampling.describe()}"
    )
