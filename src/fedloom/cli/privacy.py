"""``fedloom privacy plan``: the noise a target ε needs, or the ε a configuration spends.

Both answers come from dp-accounting (its RDP or PLD accountant, and its calibration search for
the noise multiplier), for the sampling the engine performs: ``--rate`` for Poisson sampling,
``--cohort`` for a fixed-size cohort without replacement.
"""

from __future__ import annotations

import json

import click


class PlanError(click.ClickException):
    """A bad planning question: one ``error:`` line, exit status 2."""

    exit_code = 2

    def show(self, file: object = None) -> None:
        click.echo(f"error: {self.message}", err=True)


@click.group()
def privacy() -> None:
    """Differential-privacy planning."""


@privacy.command()
@click.option("--population", type=int, required=True, help="Clients in the population (N).")
@click.option("--rate", type=float, help="Poisson sampling: each client joins with this chance.")
@click.option("--cohort", type=int, help="Fixed-size sampling: this many clients a round.")
@click.option("--rounds", type=int, required=True, help="Rounds of training.")
@click.option("--delta", type=float, help="Target delta (default 1/N^1.1).")
@click.option("--epsilon", "target", type=float, help="Find the noise multiplier for this ε.")
@click.option("--noise-multiplier", "z", type=float, help="Find the ε this noise spends.")
@click.option("--accountant", type=click.Choice(["rdp", "pld"]), default="rdp", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def plan(
    population: int,
    rate: float | None,
    cohort: int | None,
    rounds: int,
    delta: float | None,
    target: float | None,
    z: float | None,
    accountant: str,
    as_json: bool,
) -> None:
    """Which noise multiplier reaches --epsilon, or what ε --noise-multiplier spends.

    \b
      fedloom privacy plan --population 5000 --rate 0.05 --rounds 200 --epsilon 4
      fedloom privacy plan --population 5000 --cohort 250 --rounds 200 --noise-multiplier 1.1
    """
    if (rate is None) == (cohort is None):
        raise PlanError("give exactly one of --rate (Poisson sampling) or --cohort (fixed size)")
    if (target is None) == (z is None):
        raise PlanError("give exactly one of --epsilon (to find the noise) or --noise-multiplier")
    from fedloom import privacy as dp

    try:
        sampling: dp.Sampling = (
            dp.poisson_sampling(population=population, rate=rate)
            if rate is not None
            else dp.fixed_sampling(population=population, count=int(cohort or 0))
        )
        delta = dp.default_delta(population) if delta is None else delta
        if not 0 < delta < 1:
            raise ValueError(f"--delta must be in (0, 1), got {delta!r}")
        if delta >= 1 / population:
            click.echo(
                f"WARNING: delta={delta:g} is not smaller than 1/population = "
                f"{1 / population:g}; a mechanism that publishes one client's whole data with "
                "probability delta meets such a guarantee. Use a smaller --delta.",
                err=True,
            )
        if target is not None:
            z = dp.calibrate_noise(
                sampling, rounds=rounds, epsilon=target, delta=delta, accountant=accountant
            )
        assert z is not None
        if z <= 0:
            raise ValueError(
                f"--noise-multiplier must be > 0 (0 adds no noise and no ε holds), got {z!r}"
            )
        spent = dp.epsilon(
            dp.sampled_gaussian(sampling, z), rounds, delta=delta, accountant=accountant,
            relation=sampling.relation,
        )  # fmt: skip
    except ValueError as error:
        raise PlanError(str(error)) from None
    answer = {
        "population": population,
        "sampling": "poisson" if rate is not None else "fixed",
        "expected_cohort": sampling.expected_size,
        "rounds": rounds,
        "delta": delta,
        "accountant": accountant,
        "noise_multiplier": z,
        "epsilon": spent,
    }
    if as_json:
        click.echo(json.dumps(answer))
        return
    click.echo(f"sampling:          {sampling.describe()}")
    click.echo(f"rounds:            {rounds}")
    click.echo(f"noise multiplier:  {z:.4f}" + ("  (calibrated)" if target is not None else ""))
    click.echo(f"epsilon:           {spent:.4f} at delta = {delta:.3g} ({accountant})")
    click.echo(
        f"noise std on the average: {z:.4f} · clip / {sampling.expected_size:g} "
        "(DP-FedAvg's fixed denominator)"
    )
