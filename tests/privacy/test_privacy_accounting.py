"""ε reported by a run equals dp-accounting's for the same events, set by set."""

from __future__ import annotations

import dp_accounting
import pytest
from dp_accounting import pld, rdp

import fedloom as fl
from fedloom import privacy
from fedloom.data import FederatedData

REL = dp_accounting.NeighboringRelation

# (engine cohort, the stage's sampling, z, accountant, adaptive count stddev)
SETTINGS = [
    ("poisson", 0.25, 1.1, "rdp", 0.0),
    ("poisson", 0.1, 1.5, "pld", 0.0),
    ("poisson", 0.5, 2.0, "rdp", 0.0),
    ("fixed", 10, 1.0, "rdp", 0.0),
    ("fraction", 0.25, 1.3, "rdp", 0.0),
    ("poisson", 0.25, 1.0, "rdp", 2.0),
]


def _direct(kind: str, amount: float, z: float, accountant: str, count: float, rounds: int,
            delta: float, population: int) -> float:  # fmt: skip
    """The same rounds, built and accounted with dp-accounting alone."""
    gaussians: list[dp_accounting.DpEvent]
    if count:
        z_update = (z**-2 - (2 * count) ** -2) ** -0.5
        gaussians = [
            dp_accounting.GaussianDpEvent(z_update),
            dp_accounting.GaussianDpEvent(2 * count),
        ]
    else:
        gaussians = [dp_accounting.GaussianDpEvent(z)]
    if kind == "poisson":
        inner = gaussians[0] if len(gaussians) == 1 else dp_accounting.ComposedDpEvent(gaussians)
        event = dp_accounting.PoissonSampledDpEvent(amount, inner)
        relation = REL.ADD_OR_REMOVE_ONE
    else:
        size = int(amount) if kind == "fixed" else round(amount * population)
        # Replacing one client moves the sum by twice the clipping bound.
        event = dp_accounting.SampledWithoutReplacementDpEvent(
            population, size, dp_accounting.GaussianDpEvent(z / 2)
        )
        relation = REL.REPLACE_ONE
    acc = (
        rdp.RdpAccountant(neighboring_relation=relation)
        if accountant == "rdp"
        else pld.PLDAccountant(neighboring_relation=relation)
    )
    return float(acc.compose(event, rounds).get_epsilon(delta))


@pytest.mark.parametrize(("kind", "amount", "z", "accountant", "count"), SETTINGS)
def test_run_epsilon_equals_dp_accounting(
    digits_40: FederatedData, softmax_work: fl.LocalSGD, kind: str, amount: float, z: float,
    accountant: str, count: float,
) -> None:  # fmt: skip
    population, rounds, delta = 40, 3, 1e-3
    if kind == "poisson":
        sampling: privacy.Sampling = privacy.poisson_sampling(population=population, rate=amount)
        cohort: object = fl.poisson(amount)
    elif kind == "fixed":
        sampling = privacy.fixed_sampling(population=population, count=int(amount))
        cohort = int(amount)
    else:
        sampling = privacy.fixed_sampling(population=population, count=round(amount * population))
        cohort = float(amount)
    adaptive = privacy.AdaptiveClipping(count_stddev=count) if count else None
    stage = privacy.central_gaussian(
        clip=1.0, noise_multiplier=z, sampling=sampling, adaptive=adaptive, seed=0
    )
    history = fl.simulate(
        fl.fedavg(softmax_work).with_privacy(stage), digits_40, rounds=rounds,
        cohort=cohort,  # type: ignore[arg-type]
        federated_eval=False,
        budget=privacy.budget(max_epsilon=1e6, delta=delta, accountant=accountant),
    )  # fmt: skip
    reported = history.metric("dp.epsilon")
    expected = [
        _direct(kind, amount, z, accountant, count, r, delta, population)
        for r in range(1, rounds + 1)
    ]
    assert reported == pytest.approx(expected, rel=1e-9)
    assert history.metric("dp.delta") == [delta] * rounds
    assert reported == sorted(reported)
    assert reported[0] > 0


def test_adaptive_round_spends_what_one_gaussian_of_z_spends() -> None:
    # Andrew et al. split z so that the two releases compose to one Gaussian with multiplier z.
    sampling = privacy.poisson_sampling(population=1000, rate=0.05)
    split = privacy.central_gaussian(
        clip=1.0, noise_multiplier=1.0, sampling=sampling,
        adaptive=privacy.AdaptiveClipping(count_stddev=5.0),
    )  # fmt: skip
    whole = privacy.sampled_gaussian(sampling, 1.0)
    assert privacy.epsilon(split.round_event(), 50, delta=1e-6) == pytest.approx(
        privacy.epsilon(whole, 50, delta=1e-6), rel=1e-9
    )


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_calibrated_noise_reaches_the_target_and_no_less_noise_does(accountant: str) -> None:
    sampling = privacy.poisson_sampling(population=1000, rate=0.2)
    z = privacy.calibrate_noise(sampling, rounds=30, epsilon=4.0, delta=1e-5, accountant=accountant)
    spent = privacy.epsilon(
        privacy.sampled_gaussian(sampling, z), 30, delta=1e-5, accountant=accountant
    )
    assert spent <= 4.0
    assert spent == pytest.approx(4.0, rel=1e-2)
    less = privacy.epsilon(
        privacy.sampled_gaussian(sampling, z * 0.98), 30, delta=1e-5, accountant=accountant
    )
    assert less > 4.0


def test_pld_refuses_fixed_size_sampling_with_what_to_use() -> None:
    sampling = privacy.fixed_sampling(population=100, count=10)
    event = privacy.sampled_gaussian(sampling, 1.0)
    with pytest.raises(ValueError, match="use accountant 'rdp'"):
        privacy.epsilon(event, 3, delta=1e-5, accountant="pld", relation=sampling.relation)
    with pytest.raises(ValueError, match="supports only Poisson"):
        privacy.calibrate_noise(sampling, rounds=3, epsilon=1.0, delta=1e-5, accountant="pld")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_epsilon": 0.0, "delta": 1e-5}, "max_epsilon must be a finite number > 0"),
        ({"max_epsilon": -1.0, "delta": 1e-5}, "max_epsilon"),
        ({"max_epsilon": 1.0, "delta": 1.0}, r"delta must be in \(0.0, 1.0\)"),
        ({"max_epsilon": 1.0, "delta": 0.0}, "delta"),
        ({"max_epsilon": 1.0, "delta": 1e-5, "accountant": "moments"}, "accountant must be one"),
    ],
)
def test_budget_refuses_out_of_range_values(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        privacy.budget(**kwargs)  # type: ignore[arg-type]
