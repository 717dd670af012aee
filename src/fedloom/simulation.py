"""``simulate``: train an algorithm over a federated dataset on this machine."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from fedloom.algorithms import Algorithm
from fedloom.core.layout import Vector
from fedloom.core.model import Model
from fedloom.data import FederatedData
from fedloom.engine import Executor, History, Sampler, Target, schedule, train
from fedloom.engine.loop import RoundCallback, ServerEvaluation
from fedloom.executors import EXECUTORS, closing_executor, make_executor

if TYPE_CHECKING:
    from fedloom.privacy.budget import PrivacyBudget


def simulate(
    algorithm: Algorithm,
    data: FederatedData,
    *,
    rounds: int,
    cohort: int | float | Sampler,
    seed: int = 0,
    min_cohort: int = 1,
    eval_every: int = 1,
    federated_eval: bool = True,
    target: Target | tuple[str, float] | None = None,
    executor: str | Executor = "inprocess",
    params: Vector | None = None,
    on_round: RoundCallback | None = None,
    budget: PrivacyBudget | None = None,
) -> History:
    """Train ``algorithm`` on ``data``'s clients for ``rounds`` rounds and return the history.

    ``cohort`` is a client count, a fraction of the population, or a sampler
    (``fedloom.fixed``, ``fedloom.fraction``, ``fedloom.poisson``). Every ``eval_every`` rounds
    the global model is evaluated on the held-out test set (``test_*`` metrics) and, with
    ``federated_eval``, on every client's local test split (``client_test_*``, example-weighted).
    The same ``seed`` gives bit-identical parameters. ``budget`` (a
    :class:`fedloom.privacy.PrivacyBudget`) bounds the (ε, δ) of the algorithm's noise stages.
    """
    plan = schedule(
        rounds=rounds,
        cohort=cohort,
        seed=seed,
        min_cohort=min_cohort,
        eval_every=eval_every,
        federated_eval=federated_eval,
        target=target,
        budget=budget,
    )
    if not isinstance(executor, str):
        return train(
            algorithm,
            executor,
            plan,
            population=range(len(data.clients)),
            params=params,
            evaluate=held_out_evaluation(algorithm.work.model, data),
            on_round=on_round,
        )
    if executor not in EXECUTORS:
        raise ValueError(
            f"executor must be one of {list(EXECUTORS)} or an Executor, got {executor!r}"
        )
    with closing_executor(make_executor(executor, algorithm.client, data.clients)) as own:
        return simulate(
            algorithm, data, rounds=rounds, cohort=cohort, seed=seed, min_cohort=min_cohort,
            eval_every=eval_every, federated_eval=federated_eval, target=target,
            executor=own, params=params, on_round=on_round, budget=budget,
        )  # fmt: skip


def held_out_evaluation(model: Model, data: FederatedData) -> ServerEvaluation | None:
    """Evaluation of global parameters on ``data``'s central test set; None if it has none."""
    if len(data.test_y) == 0:
        return None

    def evaluate(params: Vector) -> Mapping[str, float]:
        return model.evaluate(params, data.test_x, data.test_y)

    return evaluate
