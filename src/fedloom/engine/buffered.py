"""Asynchronous training with a buffer, driven by a virtual clock: FedBuff.

Nguyen et al., *Federated Learning with Buffered Asynchronous Aggregation*, AISTATS 2022.
``concurrency`` clients train at once, each from the model version current when it started.
Whenever a client finishes, its update enters a buffer and an idle client starts in its place;
once the buffer holds ``buffer_size`` updates the server takes a step with their
staleness-weighted mean, ``Δ = (1/K) Σ w(s_i) Δ_i`` with ``w(s) = 1/√(1+s)`` and ``s`` the number
of server steps since the client started, then applies the server optimizer as a synchronous
round would (stages' server halves included).

Time is simulated: ``clock(client, broadcast)`` gives each client's duration (see
:func:`fedloom.executors.devices.fleet_clock`). Training itself is batched: clients started on
the same model version are handed to the executor together, when the first of their results is
needed, so the vectorized executor trains them as one computation.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from fedloom.algorithms import Algorithm
from fedloom.core import validate
from fedloom.core.layout import Vector
from fedloom.core.messages import Broadcast, ClientResult
from fedloom.engine.delta import DeltaState, synced
from fedloom.engine.history import History, Rejection, RoundRecord
from fedloom.engine.loop import RoundCallback, ServerEvaluation
from fedloom.engine.payloads import (
    decode_reply,
    download_bytes,
    encode_broadcast,
    send_to,
    step_public_model,
    upload_bytes,
)
from fedloom.engine.rounds import apply_results, check_reply, client_seed, init_state
from fedloom.engine.tasks import Executor, Reply, TrainTask

Clock = Callable[[int, Broadcast], float]
"""Simulated seconds for a client to download, train from, and answer a broadcast."""


@dataclass(frozen=True)
class Buffered:
    """FedBuff's settings: clients in flight, updates per server step, server steps to run."""

    concurrency: int
    buffer_size: int
    updates: int
    seed: int = 0
    staleness: Literal["sqrt", "constant"] = "sqrt"
    max_staleness: int | None = None
    eval_every: int = 1

    def __post_init__(self) -> None:
        validate.positive_int("concurrency", self.concurrency)
        validate.positive_int("buffer_size", self.buffer_size)
        validate.positive_int("updates", self.updates)
        validate.positive_int("eval_every", self.eval_every)
        validate.one_of("staleness", self.staleness, ("sqrt", "constant"))
        if self.max_staleness is not None:
            validate.positive_int("max_staleness", self.max_staleness, minimum=0)
        if self.buffer_size > self.concurrency:
            raise ValueError(
                f"buffer_size={self.buffer_size} can never fill with concurrency="
                f"{self.concurrency} clients in flight; use buffer_size <= concurrency"
            )

    def weight(self, staleness: int) -> float:
        """``1/√(1+s)`` (the paper's choice) or 1."""
        return 1.0 / math.sqrt(1 + staleness) if self.staleness == "sqrt" else 1.0


@dataclass
class _Flight:
    finish: float
    order: int
    client: int
    version: int
    task: TrainTask

    def __lt__(self, other: _Flight) -> bool:
        return (self.finish, self.order) < (other.finish, other.order)


def train_buffered(
    algorithm: Algorithm,
    executor: Executor,
    plan: Buffered,
    *,
    population: Sequence[int],
    clock: Clock,
    params: Vector | None = None,
    evaluate: ServerEvaluation | None = None,
    on_round: RoundCallback | None = None,
) -> History:
    """Run ``plan.updates`` buffered server steps; one :class:`RoundRecord` per server step.

    Each record's ``cohort`` lists the clients whose updates the step used (``accepted``) and
    the ones refused since the previous step; metrics add ``staleness_mean``,
    ``staleness_max`` and ``sim_clock`` (simulated seconds since the start). ``bytes_down`` and
    ``bytes_up`` are what moved since the previous step: the broadcasts of the tasks launched
    (the first step's include the first ``concurrency`` launches) and the replies received.
    """
    if algorithm.correction is not None:
        raise ValueError(
            f"{algorithm.name} keeps server-side state per round (SCAFFOLD, FedNova), which "
            "buffered asynchronous aggregation does not define; use fedavg, fedprox or an "
            "adaptive server optimizer"
        )
    if any(stage.traits.secure_sum for stage in algorithm.stages):
        raise ValueError(
            "buffered asynchronous aggregation (FedBuff) sums updates one by one as they "
            "arrive, so it cannot run secure aggregation, which needs a whole cohort in "
            "lockstep; drop the secure_sum stage or train in synchronous rounds"
        )
    private = [s.name for s in algorithm.stages if s.traits.private]
    if private:
        raise ValueError(
            f"stage {private[0]!r} adds differential-privacy noise accounted for synchronous "
            "rounds with Poisson or fixed-size sampling; buffered asynchronous aggregation "
            "samples clients by speed and weighs them by staleness, which no accountant here "
            "describes: use the synchronous engine (fedloom.engine.train)"
        )
    if plan.concurrency > len(population):
        raise ValueError(
            f"concurrency={plan.concurrency} exceeds the population of {len(population)} clients"
        )
    layout = algorithm.work.model.layout
    state = init_state(
        algorithm, algorithm.work.model.init(plan.seed) if params is None else params
    )
    rng = np.random.default_rng([plan.seed, 0xFEDB])
    idle = sorted(population)
    flights: list[_Flight] = []
    pending: list[_Flight] = []
    replies: dict[int, Reply] = {}
    launched = 0
    now = 0.0
    sent = {"down": 0, "up": 0}  # bytes since the previous server step
    delta: DeltaState | None = None  # a delta broadcast's: one public model per server step

    def launch(count: int) -> None:
        nonlocal launched, delta
        stage_config = {
            s.name: s.config(st) for s, st in zip(algorithm.stages, state.stages, strict=True)
        }
        frozen = state.params.copy()
        frozen.flags.writeable = False
        payload: bytes | None = None
        if algorithm.broadcast_window is None:
            frozen, payload = encode_broadcast(algorithm, frozen, plan.seed, launched)
        else:
            if delta is None or delta.round != state.round:
                delta = step_public_model(
                    algorithm, delta, frozen, seed=plan.seed, round_=state.round
                )
            frozen = delta.public
        for _ in range(count):
            client = idle.pop(int(rng.integers(len(idle))))
            held: int | None = None
            if delta is not None:
                payload, held = send_to(delta, delta.synced.get(client))
            broadcast = Broadcast(
                state.round, frozen, client_seed(plan.seed, launched, client), state.extras,
                stage_config, payload=payload, delta_from=held,
            )  # fmt: skip
            flight = _Flight(now + clock(client, broadcast), launched, client, state.round,
                             TrainTask(client, broadcast))  # fmt: skip
            launched += 1
            sent["down"] += download_bytes(broadcast)
            heapq.heappush(flights, flight)
            pending.append(flight)

    def reply_of(flight: _Flight) -> Reply:
        if flight.order not in replies:
            batch = list(pending)
            pending.clear()
            for f, r in zip(batch, executor.run([f.task for f in batch]), strict=True):
                replies[f.order] = r
        return replies.pop(flight.order)

    launch(plan.concurrency)
    records: list[RoundRecord] = []
    buffer: list[tuple[int, ClientResult, int]] = []
    refused: list[Rejection] = []
    started = time.perf_counter()
    while state.round < plan.updates and flights:
        flight = heapq.heappop(flights)
        now = flight.finish
        reply = reply_of(flight)
        sent["up"] += upload_bytes(reply)
        if delta is not None:  # the client holds the public model it was sent, or unknown
            trained = [flight.client] if isinstance(reply, ClientResult) else []
            failed = [] if trained else [flight.client]
            delta = synced(delta, trained, failed, round_=flight.version)
        idle.append(flight.client)
        idle.sort()
        staleness = state.round - flight.version
        reply = decode_reply(algorithm, flight.client, reply)
        problem = check_reply(reply, layout, {})
        if problem is None and plan.max_staleness is not None and staleness > plan.max_staleness:
            problem = (
                f"too stale: {staleness} server steps behind, max_staleness={plan.max_staleness}"
            )
        if problem is None:
            assert isinstance(reply, ClientResult)
            buffer.append((flight.client, reply, staleness))
        else:
            refused.append(Rejection(flight.client, problem))
        if len(buffer) == plan.buffer_size:
            scaled = [
                replace(r, update=(r.update * np.float32(plan.weight(s))).astype(np.float32))
                for _, r, s in buffer
            ]
            stalenesses = [s for _, _, s in buffer]
            state, metrics = apply_results(
                algorithm, state, scaled, np.ones(len(scaled)), population=len(population)
            )
            metrics.update(
                staleness_mean=float(np.mean(stalenesses)),
                staleness_max=float(max(stalenesses)),
                sim_clock=now,
                rejected=float(len(refused)),
                bytes_down=float(sent["down"]),
                bytes_up=float(sent["up"]),
            )
            sent.update(down=0, up=0)
            if evaluate is not None and (
                state.round % plan.eval_every == 0 or state.round == plan.updates
            ):
                metrics.update({f"test_{k}": v for k, v in evaluate(state.params).items()})
            used = tuple(c for c, _, _ in buffer)
            record = RoundRecord(
                state.round - 1, used + tuple(r.client for r in refused), used, tuple(refused),
                metrics, seconds=time.perf_counter() - started,
            )  # fmt: skip
            records.append(record)
            if on_round is not None:
                on_round(record, state)
            buffer.clear()
            refused = []
            started = time.perf_counter()
        launch(1)
    stopped = f"completed {state.round} buffered server steps"
    return History(tuple(records), state.params, layout, stopped)
