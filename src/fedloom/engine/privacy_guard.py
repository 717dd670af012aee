"""The engine's side of differential privacy: check sampling, account every round, keep to budget.

Imported only when an algorithm has a noise stage or the schedule has a budget, so runs without
privacy never load ``dp-accounting``. Each noise stage states the cohort sampling its accounting
assumes; :func:`check_sampling` refuses to train unless the engine's sampler draws cohorts
exactly that way. Every round's (ε, δ) spent so far is added to the round's metrics as
``dp.epsilon`` and ``dp.delta``; a round that would take ε past the budget is never run.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from fedloom.engine.sampling import FixedCount, Fraction, Poisson, Sampler
from fedloom.privacy.accounting import DpEvent, calibrate_noise, spent
from fedloom.privacy.budget import PrivacyBudget, default_delta
from fedloom.privacy.central import CentralGaussian
from fedloom.privacy.protocol import NoiseStage
from fedloom.privacy.sampling import FixedSampling, PoissonSampling, Sampling
from fedloom.stages import Stage

EPSILON = "dp.epsilon"
DELTA = "dp.delta"


def engine_sampling(sampler: Sampler, population: int) -> Sampling:
    """What the engine's ``sampler`` does on ``population`` clients, as the accountant sees it."""
    if isinstance(sampler, Poisson):
        return PoissonSampling(population, sampler.rate)
    if isinstance(sampler, FixedCount):
        return FixedSampling(population, sampler.count)
    if isinstance(sampler, Fraction):
        return FixedSampling(population, max(1, round(sampler.fraction * population)))
    raise ValueError(
        f"differential privacy needs a cohort sampler the accountant understands (fixed count, "
        f"fraction or poisson), got {sampler!r}"
    )


def check_sampling(stage: NoiseStage, sampler: Sampler, population: int) -> None:
    """Refuse ``stage`` unless its stated sampling is what the engine will do."""
    actual = engine_sampling(sampler, population)
    if stage.sampling != actual:
        raise ValueError(
            f"stage {stage.name!r} is accounted for {stage.sampling.describe()}, but the engine "
            f"will draw {actual.describe()}; build the stage with sampling={actual!r} so its ε "
            "is the ε this run spends"
        )


@dataclass
class PrivacyGuard:
    """Accounts a run's noise stages round by round and keeps it within ``budget``."""

    event: DpEvent
    relation: str
    delta: float
    accountant: str
    budget: PrivacyBudget | None
    _cache: dict[int, float] = field(default_factory=dict)

    @classmethod
    def start(
        cls,
        stages: Sequence[Stage],
        budget: PrivacyBudget | None,
        *,
        sampler: Sampler,
        population: int,
        rounds_done: int,
        rounds_planned: int,
        min_cohort: int,
        dimension: int | None = None,
    ) -> PrivacyGuard:
        """Check everything before any training; raise ValueError with what to change."""
        private = [cast(NoiseStage, s) for s in stages if s.traits.private]
        if not private:
            raise ValueError(
                "a privacy budget needs a noise stage (fedloom.privacy.central_gaussian, "
                "distributed_gaussian…); clipping alone, or clipping on the server, gives no "
                "differential-privacy guarantee"
            )
        for stage in private:
            check_sampling(stage, sampler, population)
            needed = int(getattr(stage, "min_clients", 1))
            if min_cohort < needed:
                raise ValueError(
                    f"stage {stage.name!r} needs at least {needed} clients' noise in every sum; "
                    f"set min_cohort >= {needed}, got {min_cohort}"
                )
        import dp_accounting

        events = [stage.round_event(dimension) for stage in private]
        event = events[0] if len(events) == 1 else dp_accounting.ComposedDpEvent(events)
        relation = engine_sampling(sampler, population).relation
        delta = budget.delta if budget is not None else default_delta(population)
        if delta >= 1.0 / population:
            warnings.warn(
                f"WARNING: delta={delta:g} is not smaller than 1/population = "
                f"{1.0 / population:g}: a mechanism that publishes one client's whole update "
                f"with probability delta satisfies this guarantee. Use delta < 1/{population}, "
                f"for example {default_delta(population):.3g}.",
                UserWarning,
                stacklevel=3,
            )
        accountant = budget.accountant if budget is not None else "rdp"
        guard = cls(event, relation, delta, accountant, budget)
        if budget is not None:
            guard._check_plan(rounds_done, rounds_planned, private)
        return guard

    def epsilon(self, rounds: int) -> float:
        """ε at :attr:`delta` after ``rounds`` rounds."""
        if rounds not in self._cache:
            self._cache[rounds] = spent(
                [(self.event, rounds)],
                delta=self.delta,
                accountant=self.accountant,
                relation=self.relation,
            )
        return self._cache[rounds]

    def refusal(self, round_: int) -> str | None:
        """Why round ``round_`` must not run (it would exceed the budget), or ``None``."""
        if self.budget is None:
            return None
        after = self.epsilon(round_ + 1)
        if after > self.budget.max_epsilon:
            return (
                f"privacy budget: round {round_} would spend epsilon={after:.4g} > "
                f"max_epsilon={self.budget.max_epsilon:g} at delta={self.delta:g}; "
                f"stopped after {round_} rounds with epsilon={self.epsilon(round_):.4g}"
            )
        return None

    def metrics(self, rounds_done: int) -> dict[str, float]:
        """``dp.epsilon`` and ``dp.delta`` spent after ``rounds_done`` rounds."""
        return {EPSILON: self.epsilon(rounds_done), DELTA: self.delta}

    def _check_plan(self, done: int, planned: int, private: Sequence[NoiseStage]) -> None:
        assert self.budget is not None
        limit = self.budget.max_epsilon
        now = self.epsilon(done)
        if planned > done and self.epsilon(done + 1) > limit:
            spent_so_far = (
                f"the privacy budget is already spent: {done} rounds spent epsilon={now:.4g} and "
                if done > 0
                else "a single round spends more than the whole budget: "
            )
            raise ValueError(
                f"{spent_so_far}one more round would reach epsilon={self.epsilon(done + 1):.4g} "
                f"> max_epsilon={limit:g} at delta={self.delta:g}"
            )
        if planned <= done or self.budget.stop_early:
            return
        total = self.epsilon(planned)
        if total <= limit:
            return
        hint = ""
        first = private[0]
        if len(private) == 1 and isinstance(first, CentralGaussian) and first.adaptive is None:
            try:
                z = calibrate_noise(
                    first.sampling,
                    rounds=planned,
                    epsilon=limit,
                    delta=self.delta,
                    accountant=self.accountant,
                )
                hint = f" a noise multiplier of at least {z:.4g},"
            except ValueError:
                hint = ""
        raise ValueError(
            f"this run's plan of {planned} rounds would spend epsilon={total:.4g} > "
            f"max_epsilon={limit:g} at delta={self.delta:g} ({self.accountant} accountant); "
            f"use{hint} fewer rounds, or stop_early = true to stop before the budget runs out"
        )
