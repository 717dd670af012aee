"""The round loop: run rounds, evaluate, stop on a rule.

The loop belongs to the engine, not to algorithms.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from fedloom.algorithms import Algorithm
from fedloom.core import validate
from fedloom.core.layout import Vector
from fedloom.engine.history import History, RoundRecord, weighted_average
from fedloom.engine.rounds import ServerState, init_state, run_round
from fedloom.engine.sampling import Sampler, as_sampler
from fedloom.engine.tasks import EvaluateTask, Evaluation, Executor

if TYPE_CHECKING:
    from fedloom.engine.privacy_guard import PrivacyGuard
    from fedloom.privacy.budget import PrivacyBudget

ServerEvaluation = Callable[[Vector], Mapping[str, float]]
"""Evaluate global parameters on the server's held-out data; keys are prefixed ``test_``."""


@dataclass(frozen=True)
class Target:
    """Stop once ``metric`` reaches ``threshold`` (``>=``, or ``<=`` when lower is better)."""

    metric: str
    threshold: float
    higher_is_better: bool = True

    def reached(self, metrics: Mapping[str, float]) -> bool:
        value = metrics.get(self.metric)
        if value is None or math.isnan(value):
            return False
        return value >= self.threshold if self.higher_is_better else value <= self.threshold


@dataclass(frozen=True)
class Schedule:
    """How the loop runs: rounds, cohort, minimum cohort, evaluation cadence, stopping target."""

    rounds: int
    cohort: Sampler
    seed: int = 0
    min_cohort: int = 1
    eval_every: int = 1
    federated_eval: bool = True
    target: Target | None = None
    budget: PrivacyBudget | None = None
    """A differential-privacy budget (:class:`fedloom.privacy.PrivacyBudget`): the run is
    refused if its plan would exceed it, and never runs a round that would."""

    def __post_init__(self) -> None:
        validate.positive_int("rounds", self.rounds)
        validate.positive_int("min_cohort", self.min_cohort)
        validate.positive_int("eval_every", self.eval_every)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")


def schedule(
    *,
    rounds: int,
    cohort: int | float | Sampler,
    seed: int = 0,
    min_cohort: int = 1,
    eval_every: int = 1,
    federated_eval: bool = True,
    target: Target | tuple[str, float] | None = None,
    budget: PrivacyBudget | None = None,
) -> Schedule:
    """Build a :class:`Schedule`; a ``(metric, value)`` target stops at ``>=``, or ``<=`` for
    metrics whose name contains ``loss``."""
    if isinstance(target, tuple):
        metric, value = target
        target = Target(metric, float(value), higher_is_better="loss" not in metric)
    return Schedule(
        rounds, as_sampler(cohort), seed, min_cohort, eval_every, federated_eval, target, budget
    )


RoundCallback = Callable[[RoundRecord, ServerState], None]


def train(
    algorithm: Algorithm,
    executor: Executor,
    plan: Schedule,
    *,
    population: Sequence[int],
    params: Vector | None = None,
    evaluate: ServerEvaluation | None = None,
    state: ServerState | None = None,
    on_round: RoundCallback | None = None,
) -> History:
    """Run ``plan.rounds`` rounds (or until the target) and return the history.

    Starts from ``state`` when resuming, else from ``params``, else from the model's
    initialization with ``plan.seed``. ``on_round`` sees each record and the state after it.
    """
    if len(population) == 0:
        raise ValueError("population must contain at least one client")
    plan.cohort.check(len(population))
    if plan.min_cohort > len(population):
        raise ValueError(
            f"min_cohort={plan.min_cohort} exceeds the population of {len(population)} clients"
        )
    model = algorithm.work.model
    if state is None:
        # init_state copies: no name keeps the initial vector for the whole run
        state = init_state(algorithm, model.init(plan.seed) if params is None else params)
    guard = privacy_guard(algorithm, plan, len(population), state.round)
    records: list[RoundRecord] = []
    stopped = f"completed {plan.rounds} rounds"
    while state.round < plan.rounds:
        refusal = None if guard is None else guard.refusal(state.round)
        if refusal is not None:
            stopped = refusal
            break
        state, record = run_round(
            algorithm,
            state,
            executor,
            population=population,
            sampler=plan.cohort,
            seed=plan.seed,
            min_cohort=plan.min_cohort,
        )
        if guard is not None:
            record = replace(record, metrics={**record.metrics, **guard.metrics(state.round)})
        if (record.round + 1) % plan.eval_every == 0 or state.round == plan.rounds:
            metrics = dict(record.metrics)
            if evaluate is not None:
                metrics.update({f"test_{k}": v for k, v in evaluate(state.params).items()})
            if plan.federated_eval:
                metrics.update(federated_evaluation(executor, population, state.params))
            record = replace(record, metrics=metrics)
        records.append(record)
        if on_round is not None:
            on_round(record, state)
        if plan.target is not None and plan.target.reached(record.metrics):
            stopped = (
                f"{plan.target.metric} reached {plan.target.threshold} in round {record.round}"
            )
            break
    return History(tuple(records), state.params, model.layout, stopped)


def privacy_guard(
    algorithm: Algorithm, plan: Schedule, population: int, rounds_done: int
) -> PrivacyGuard | None:
    """The accountant of a run with noise stages or a budget (``None`` without either), after
    every check that must pass before training (:mod:`fedloom.engine.privacy_guard`)."""
    if plan.budget is None and not any(s.traits.private for s in algorithm.stages):
        return None
    from fedloom.engine.privacy_guard import PrivacyGuard

    return PrivacyGuard.start(
        algorithm.stages,
        plan.budget,
        sampler=plan.cohort,
        population=population,
        rounds_done=rounds_done,
        rounds_planned=plan.rounds,
        min_cohort=plan.min_cohort,
        dimension=algorithm.work.model.layout.size,
    )


def federated_evaluation(
    executor: Executor, population: Sequence[int], params: Vector
) -> dict[str, float]:
    """Example-weighted mean of clients' metrics on their local test splits, ``client_test_*``."""
    frozen = np.array(params, copy=True)
    frozen.flags.writeable = False
    replies = executor.run([EvaluateTask(c, frozen) for c in population])
    evals = [r for r in replies if isinstance(r, Evaluation) and r.num_examples > 0]
    if not evals:
        return {}
    mean = weighted_average([e.metrics for e in evals], [e.num_examples for e in evals])
    return {f"client_test_{k}": v for k, v in mean.items()}
