"""One round of federated training, as a plain function from server state to server state.

sample → broadcast → collect → check → reduce → server stages → correction → server optimizer.
The loop around it (:mod:`fedloom.engine.loop`) adds evaluation and stopping rules.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from fedloom.algorithms import Algorithm
from fedloom.core.blocks import all_finite, norm64
from fedloom.core.layout import Layout, Vector
from fedloom.core.messages import Broadcast, ClientResult
from fedloom.core.seeding import client_seeds
from fedloom.engine.delta import DeltaState
from fedloom.engine.history import Rejection, RoundRecord, weighted_average
from fedloom.engine.payloads import (
    after_round,
    broadcast_models,
    decode_reply,
    download_bytes,
    upload_bytes,
)
from fedloom.engine.sampling import Sampler, draw
from fedloom.engine.tasks import Executor, Failure, Reply, TrainTask, run_each
from fedloom.optimizers import OptimizerState
from fedloom.reducers import Fold, FoldableReducer, StatefulReducer, reduce_with_state
from fedloom.stages import StageState


@dataclass(frozen=True)
class ServerState:
    """Everything the server carries from one round to the next; a checkpoint is this value."""

    round: int
    params: Vector
    optimizer: OptimizerState
    extras: Mapping[str, Vector]
    stages: tuple[StageState, ...]
    reducer: Vector | None = None
    """A stateful reducer's state (centered clipping's previous aggregate); None otherwise."""
    broadcast: DeltaState | None = None
    """A delta broadcast's public model, recent links and who holds what; None otherwise."""


def init_state(algorithm: Algorithm, params: Vector) -> ServerState:
    """Server state before round 0, starting from ``params``."""
    layout = algorithm.work.model.layout
    params = layout.check(params, what="initial params").copy()
    extras = algorithm.correction.init(params) if algorithm.correction else {}
    return ServerState(
        round=0,
        params=params,
        optimizer=algorithm.server_optimizer.init(params),
        extras=extras,
        stages=tuple(stage.init(layout) for stage in algorithm.stages),
        reducer=(
            algorithm.reducer.init(layout.size)
            if isinstance(algorithm.reducer, StatefulReducer)
            else None
        ),
    )


def client_seed(seed: int, round_: int, client: int) -> int:
    """A client's own seed for a round: independent of which other clients were sampled."""
    return int(client_seeds(seed, round_, [client])[0])


def run_round(
    algorithm: Algorithm,
    state: ServerState,
    executor: Executor,
    *,
    population: Sequence[int],
    sampler: Sampler,
    seed: int,
    min_cohort: int = 1,
) -> tuple[ServerState, RoundRecord]:
    """Run round ``state.round``; return the next state and what happened.

    An algorithm whose pipeline ends in a secure sum runs through the SecAgg+ rounds instead
    (:mod:`fedloom.engine.secure_rounds`).
    """
    from fedloom.engine import secure_rounds  # it builds on this module

    secure = secure_rounds.secure_stage(algorithm)
    if secure is not None:
        return secure_rounds.run_secure_round(
            algorithm,
            state,
            executor,
            stage=secure,
            population=population,
            sampler=sampler,
            seed=seed,
            min_cohort=min_cohort,
        )
    started = time.perf_counter()
    round_ = state.round
    positions = draw(sampler, len(population), round_, seed)
    cohort = tuple(int(population[p]) for p in positions)
    params = state.params.view()  # the engine's own array (init_state copied it), never
    params.flags.writeable = False  # changed in place: a read-only view, not another copy
    params, sends, delta = broadcast_models(
        algorithm, state.broadcast, params, cohort, seed=seed, round_=round_, executor=executor
    )
    stage_config = {
        stage.name: stage.config(st)
        for stage, st in zip(algorithm.stages, state.stages, strict=True)
    }
    seeds = client_seeds(seed, round_, cohort).tolist()
    tasks = [
        TrainTask(
            c,
            Broadcast(
                round_, params, s, state.extras, stage_config, payload=payload, delta_from=held
            ),
        )
        for c, s, (payload, held) in zip(cohort, seeds, sends, strict=True)
    ]
    layout = algorithm.work.model.layout
    expected = algorithm.correction.expected_extras(layout.size) if algorithm.correction else {}
    fold = streaming_fold(algorithm)
    summed = algorithm.correction.summed if algorithm.correction else ()
    sums = {name: Fold(expected[name], weighted=False, mean=False) for name in summed}
    sent_up = 0
    checked: dict[int, ClientResult | Rejection] = {}
    trained = [False] * len(cohort)

    def consume(position: int, reply: Reply) -> None:
        """Decode and check one reply as it arrives; a streamed round folds the update in and
        keeps only the rest (weights, metrics, extras)."""
        nonlocal sent_up
        if position in checked:
            raise RuntimeError(f"{type(executor).__name__} answered task {position} twice")
        client = cohort[position]
        trained[position] = isinstance(reply, ClientResult)
        sent_up += upload_bytes(reply)
        reply = decode_reply(algorithm, client, reply)
        problem = check_reply(reply, layout, expected)
        if problem is not None:
            checked[position] = Rejection(client, problem)
            return
        assert isinstance(reply, ClientResult)
        if fold is not None:
            fold.add(reply.update, reply.num_examples)
            reply = replace(reply, update=_FOLDED)
        if sums:
            for name, total in sums.items():
                total.add(reply.extras[name], 1.0)
            kept = {k: v for k, v in reply.extras.items() if k not in sums}
            reply = replace(reply, extras=kept)
        checked[position] = reply

    if tasks:
        run_each(executor, tasks, consume)
    if len(checked) != len(cohort):
        raise RuntimeError(
            f"{type(executor).__name__} answered {len(checked)} of {len(cohort)} tasks"
        )
    delta = after_round(delta, cohort, trained)
    # cohort order, whatever order the replies arrived in
    accepted = [(c, r) for i, c in enumerate(cohort) if isinstance(r := checked[i], ClientResult)]
    rejected = [r for i in range(len(cohort)) if isinstance(r := checked[i], Rejection)]

    base = {
        "cohort": float(len(cohort)),
        "accepted": float(len(accepted)),
        "rejected": float(len(rejected)),
        "bytes_down": float(sum(download_bytes(t.broadcast) for t in tasks)),
        "bytes_up": float(sent_up),
    }
    if len(accepted) < min_cohort:
        record = RoundRecord(
            round_,
            cohort,
            tuple(c for c, _ in accepted),
            tuple(rejected),
            base,
            aborted=f"{len(accepted)} usable updates, fewer than min_cohort={min_cohort}",
            seconds=time.perf_counter() - started,
        )
        return replace(state, round=round_ + 1, broadcast=delta), record

    results = [r for _, r in accepted]
    weights = np.array([r.num_examples for r in results], dtype=np.float64)
    next_state, metrics = apply_results(
        algorithm,
        state,
        results,
        weights,
        population=len(population),
        aggregate=None if fold is None else fold.result(),
        sums={name: total.result64() for name, total in sums.items()},
    )
    record = RoundRecord(
        round_,
        cohort,
        tuple(c for c, _ in accepted),
        tuple(rejected),
        {**base, **metrics},
        seconds=time.perf_counter() - started,
    )
    return replace(next_state, broadcast=delta), record


def apply_results(
    algorithm: Algorithm,
    state: ServerState,
    results: Sequence[ClientResult],
    weights: npt.NDArray[np.float64],
    *,
    population: int,
    aggregate: Vector | None = None,
    sums: Mapping[str, npt.NDArray[np.float64]] | None = None,
) -> tuple[ServerState, dict[str, float]]:
    """The server's half of a round on checked results: reduce with ``weights``, the stages'
    server halves in reverse order, the algorithm's correction, then the server optimizer.

    ``aggregate``: the reducer's result, already folded as the updates arrived (a streamed
    round, :func:`streaming_fold`); the results' updates are then not read. ``sums``: the
    correction's :attr:`~fedloom.algorithms.algorithm.ServerCorrection.summed` extras, summed
    as the replies arrived (:func:`run_round` folds them; the results no longer carry them).

    Returns the state of the next round and the metrics: the clients' example-weighted mean
    metrics, the stages' own, and the aggregate's norm.
    """
    layout = algorithm.work.model.layout
    reducer_state = state.reducer
    if aggregate is None:
        aggregate, reducer_state = reduce_with_state(
            algorithm.reducer, state.reducer, np.stack([r.update for r in results]), weights
        )
    hidden = tuple(f"{s.name}." for s in algorithm.stages if s.traits.private_client_metrics)
    metrics = weighted_average(
        [{k: v for k, v in r.metrics.items() if not k.startswith(hidden)} for r in results]
        if hidden
        else [r.metrics for r in results],
        [r.num_examples for r in results],
    )
    stage_states = list(state.stages)
    client_metrics = [r.metrics for r in results]
    for i in reversed(range(len(algorithm.stages))):
        stage = algorithm.stages[i]
        prefix = f"{stage.name}."
        own = [
            {k[len(prefix) :]: v for k, v in m.items() if k.startswith(prefix)}
            for m in client_metrics
        ]
        aggregate, stage_states[i], stage_metrics = stage.server(aggregate, stage_states[i], own)
        metrics.update({f"{prefix}{k}": v for k, v in stage_metrics.items()})

    extras = state.extras
    if algorithm.correction is not None:
        sums = sums or {}
        missing = sorted(set(algorithm.correction.summed) - set(sums))
        if missing:
            raise ValueError(f"the correction needs the summed extras {missing}; none were given")
        aggregate, extras = algorithm.correction.apply(
            aggregate, results, extras, sums=sums, population=population, layout=layout
        )

    step, opt_state = algorithm.server_optimizer.update(aggregate, state.optimizer)
    new_params = apply_step(layout, state.params, step, aggregate)
    metrics["update_norm"] = norm64(aggregate)
    next_state = ServerState(
        state.round + 1, new_params, opt_state, extras, tuple(stage_states), reducer_state
    )
    return next_state, metrics


_FOLDED = np.zeros(0, dtype=np.float32)
_FOLDED.flags.writeable = False
"""A streamed round's stand-in for an update already folded into the running sum."""


def streaming_fold(algorithm: Algorithm) -> Fold | None:
    """A running sum for this round's updates when its reduction can fold them one at a time
    as they arrive (a :class:`~fedloom.reducers.FoldableReducer` that keeps no state between
    rounds), or None: the round stacks its updates and reduces them at once (robust reducers).

    Secure aggregation never gets here (it has its own rounds). The stages' server halves,
    the correction and the server optimizer act on the aggregate either way.
    """
    reducer = algorithm.reducer
    if (
        not reducer.linear
        or isinstance(reducer, StatefulReducer)
        or not isinstance(reducer, FoldableReducer)
    ):
        return None
    return reducer.fold(algorithm.work.model.layout.size)


def apply_step(layout: Layout, params: Vector, step: Vector, aggregate: Vector) -> Vector:
    """``params + step`` on trainable entries; non-trainable ones (BatchNorm statistics) take the
    plain aggregate, so server optimizers never act on running statistics."""
    if all(f.trainable for f in layout.fields):  # no mask of the model's length
        return (params + step).astype(np.float32, copy=False)
    return np.where(layout.trainable_mask, params + step, params + aggregate).astype(
        np.float32, copy=False
    )


def check_reply(
    reply: object,
    layout: Layout,
    expected_extras: Mapping[str, int],
) -> str | None:
    """Why a client's reply cannot enter the aggregate, or ``None`` if it can."""
    if isinstance(reply, Failure):
        return f"client failed: {reply.reason}"
    if not isinstance(reply, ClientResult):
        return f"expected a training result, got {type(reply).__name__}"
    update = np.asarray(reply.update)
    if update.shape != (layout.size,):
        return f"update has shape {update.shape}, expected ({layout.size},)"
    if not all_finite(update):
        return "update contains NaN or infinity"
    if isinstance(reply.num_examples, bool) or not isinstance(reply.num_examples, int | np.integer):
        return f"num_examples must be an integer, got {reply.num_examples!r}"
    if reply.num_examples <= 0:
        return f"num_examples must be > 0, got {reply.num_examples}"
    for name, size in expected_extras.items():
        extra = reply.extras.get(name)
        if extra is None:
            return f"missing the {name!r} vector this algorithm needs"
        extra = np.asarray(extra)
        if extra.shape != (size,):
            return f"{name!r} has shape {extra.shape}, expected ({size},)"
        if not all_finite(extra):
            return f"{name!r} contains NaN or infinity"
    return None
