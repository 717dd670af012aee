"""One round of training through secure aggregation (SecAgg+), driven through the executor.

When an algorithm's pipeline ends in a secure sum (:class:`fedloom.secagg.SecureSum`),
:func:`fedloom.engine.rounds.run_round` hands the round to :func:`run_secure_round`, which runs
the protocol's four rounds as four calls to the executor's ``run_secure``, each with typed tasks
(:class:`~fedloom.secagg.messages.SecureTrainTask`, :class:`~fedloom.secagg.messages.SecureTask`)
and typed replies, so the same code drives clients in this process, in the vectorized simulator,
and (through a transport that maps the messages) over the network. The server half of the
protocol is :class:`fedloom.secagg.server.ServerSession`; it sees masked vectors, never an update.

**Ring inputs.** When the stage right before the secure sum says ``ring_bits`` (the distributed
discrete Gaussian, :class:`fedloom.privacy.DistributedGaussian`), its client half has already
clipped, scaled, rounded and noised the update into integers modulo ``2^bits``; the protocol then
carries them unchanged (:meth:`SecureSum.setup` with ``ring=True``: scale 1, a clip bound no
ring vector reaches, every client weighing one) and the stage's server half receives the
survivors' modular sum, never one client's integers. Such a round also aborts before
unmasking when fewer than the stage's ``min_clients`` inputs survive, so no sum with too little
noise is ever revealed.

A round that cannot complete securely (too few survivors, too few shares, a cohort the graph
cannot cover) is recorded as aborted with its reason and leaves the model unchanged; it never
falls back to plain aggregation.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

import numpy as np

from fedloom.algorithms import Algorithm
from fedloom.core.blocks import norm64
from fedloom.core.layout import Vector
from fedloom.core.messages import Broadcast
from fedloom.engine.delta import DeltaState, synced
from fedloom.engine.history import Rejection, RoundRecord
from fedloom.engine.payloads import broadcast_models
from fedloom.engine.rounds import ServerState, apply_step, client_seed
from fedloom.engine.sampling import Sampler, draw
from fedloom.engine.tasks import Failure
from fedloom.reducers import Mean, WeightedMean
from fedloom.secagg.messages import SecureReply, SecureTask, SecureTrainTask, message_bytes
from fedloom.secagg.primitives import RingVector
from fedloom.secagg.quantize import decode
from fedloom.secagg.server import PHASES, SecureAggregationAborted, ServerSession
from fedloom.secagg.stage import SecureSum
from fedloom.stages import Stage

SecureTaskKind = SecureTrainTask | SecureTask


@runtime_checkable
class SecureExecutor(Protocol):
    """An executor that can run the secure aggregation rounds: one reply per task, in order."""

    def run_secure(self, tasks: Sequence[SecureTaskKind]) -> list[SecureReply | Failure]: ...


def secure_stage(algorithm: Algorithm) -> SecureSum | None:
    """The algorithm's secure sum stage, if its pipeline ends in one."""
    if algorithm.stages and isinstance(algorithm.stages[-1], SecureSum):
        return algorithm.stages[-1]
    return None


def ring_input(algorithm: Algorithm) -> Stage | None:
    """The stage whose ring integers the secure sum carries unchanged (``ring_bits``), if the
    stage right before the secure sum is one (:func:`fedloom.stages.check_pipeline` has checked
    that its ring is the secure sum's)."""
    if len(algorithm.stages) >= 2 and algorithm.stages[-2].traits.ring_bits is not None:
        return algorithm.stages[-2]
    return None


def check_secure(algorithm: Algorithm, executor: object) -> None:
    """Raise ValueError unless ``algorithm`` can run securely on ``executor``."""
    if not isinstance(executor, SecureExecutor):
        raise ValueError(
            f"{type(executor).__name__} cannot run secure aggregation (it has no run_secure for "
            "the SecAgg+ rounds); use executor='inprocess', 'vectorized', 'process' or 'ray'"
        )
    ring = ring_input(algorithm)
    if ring is not None:
        if not getattr(algorithm.reducer, "unweighted_sum", False):
            raise ValueError(
                f"the ring integers of stage {ring.name!r} are summed unweighted, not by "
                f"{type(algorithm.reducer).__name__}; use fedloom.reducers.Sum()"
            )
    elif not isinstance(algorithm.reducer, WeightedMean | Mean):
        raise ValueError(
            f"secure aggregation computes a weighted_mean or a mean, not "
            f"{type(algorithm.reducer).__name__}"
        )
    if algorithm.correction is not None:
        raise ValueError(
            f"algorithm {algorithm.name!r} needs each client's own vectors "
            f"({type(algorithm.correction).__name__}), which a secure sum cannot deliver; "
            "use fedavg, fedprox or a server-optimizer variant"
        )


def run_secure_round(
    algorithm: Algorithm,
    state: ServerState,
    executor: object,
    *,
    stage: SecureSum,
    population: Sequence[int],
    sampler: Sampler,
    seed: int,
    min_cohort: int = 1,
) -> tuple[ServerState, RoundRecord]:
    """Run round ``state.round`` with SecAgg+; return the next state and what happened."""
    check_secure(algorithm, executor)
    assert isinstance(executor, SecureExecutor)
    started = time.perf_counter()
    round_ = state.round
    positions = draw(sampler, len(population), round_, seed)
    cohort = tuple(sorted({int(population[p]) for p in positions}))
    layout = algorithm.work.model.layout
    params = state.params.view()  # never changed in place: a read-only view, not a copy
    params.flags.writeable = False
    params, sends, delta = broadcast_models(
        algorithm, state.broadcast, params, cohort, seed=seed, round_=round_, executor=executor
    )
    skipped = replace(state, round=round_ + 1, broadcast=delta)

    def record(
        wire: _Wire | None,
        server: ServerSession | None,
        aborted: str | None,
        metrics: Mapping[str, float] | None = None,
    ) -> RoundRecord:
        survivors = server.survivors if server is not None and aborted is None else ()
        failures = wire.failures if wire is not None else {}
        rejected = tuple(
            Rejection(c, _reason(c, server, failures)) for c in cohort if c not in survivors
        )
        base = {
            "cohort": float(len(cohort)),
            "accepted": float(len(survivors)),
            "rejected": float(len(rejected)),
            "bytes_down": wire.bytes_down if wire is not None else 0.0,
            "bytes_up": wire.bytes_up if wire is not None else 0.0,
            **_protocol_metrics(cohort, server),
        }
        return RoundRecord(
            round_,
            cohort,
            survivors,
            rejected,
            {**base, **(metrics or {})},
            aborted=aborted,
            seconds=time.perf_counter() - started,
        )

    ring = ring_input(algorithm)
    if ring is not None:
        # A sum of fewer noise shares than the stage needs must never be unmasked.
        min_cohort = max(min_cohort, int(getattr(ring, "min_clients", 1)))
    try:
        weighted = isinstance(algorithm.reducer, WeightedMean)
        setup = stage.setup(
            round_, cohort, dims=layout.size, weighted=weighted, ring=ring is not None
        )
    except ValueError as error:
        return skipped, record(None, None, f"secure aggregation cannot start: {error}")
    server = ServerSession(setup)
    wire = _Wire(executor, setup.bits)
    config = {s.name: s.config(st) for s, st in zip(algorithm.stages, state.stages, strict=True)}
    training = [
        SecureTrainTask(
            c,
            Broadcast(
                round_, params, client_seed(seed, round_, c), {}, config,
                payload=payload, delta_from=held,
            ),
            setup,
        )
        for c, (payload, held) in zip(cohort, sends, strict=True)
    ]  # fmt: skip
    try:
        total = _protocol(wire, server, training, min_cohort=min_cohort)
    except SecureAggregationAborted as error:
        skipped = replace(skipped, broadcast=wire.synced(delta, cohort))
        return skipped, record(wire, server, f"secure aggregation aborted: {error.reason}")
    skipped = replace(skipped, broadcast=wire.synced(delta, cohort))
    survivors = len(server.survivors)
    if ring is not None:
        # The modular sum itself, in [0, 2^bits): integers below 2^24 are exact in float32.
        if int(total[-1]) != survivors % (1 << setup.bits):
            return skipped, record(wire, server, f"the ring sum counts {total[-1]} inputs")
        total_weight = survivors
        aggregate = total[:-1].astype(np.float32)
    else:
        weighted_sum, total_weight = decode(total, scale=setup.scale, bits=setup.bits)
        if total_weight <= 0:
            return skipped, record(wire, server, f"the decoded total weight is {total_weight}")
        aggregate = (weighted_sum / total_weight).astype(np.float32)
    next_state, metrics = _server_halves(algorithm, state, aggregate, survivors)
    metrics["secagg.total_weight"] = float(total_weight)
    return replace(next_state, broadcast=skipped.broadcast), record(wire, server, None, metrics)


@dataclass
class _Wire:
    """The executor as the server sees it: one round's tasks out, replies in, bytes counted
    (masked vectors packed to ``bits`` an entry), failures noted by client."""

    executor: SecureExecutor
    bits: int
    bytes_down: float = 0.0
    bytes_up: float = 0.0
    failures: dict[int, str] = field(default_factory=dict)
    trained: set[int] = field(default_factory=set)
    """Clients that answered round 0: they hold the round's model."""

    def exchange(self, tasks: Sequence[SecureTaskKind]) -> dict[int, SecureReply]:
        replies = self.executor.run_secure(tasks) if tasks else []
        answers: dict[int, SecureReply] = {}
        for task, reply in zip(tasks, replies, strict=True):
            self.bytes_down += message_bytes(task, bits=self.bits)
            if isinstance(reply, Failure):
                self.failures[task.client] = reply.reason
            else:
                self.bytes_up += message_bytes(reply, bits=self.bits)
                answers[task.client] = reply
                if isinstance(task, SecureTrainTask):
                    self.trained.add(task.client)
        return answers

    def synced(self, delta: DeltaState | None, cohort: Sequence[int]) -> DeltaState | None:
        """A delta broadcast's state once round 0 is over: who trained holds the round's
        model; who did not may hold anything."""
        if delta is None:
            return None
        return synced(delta, self.trained, [c for c in cohort if c not in self.trained])


def _protocol(
    wire: _Wire, server: ServerSession, training: Sequence[SecureTrainTask], *, min_cohort: int
) -> RingVector:
    """The four rounds; the exact ring sum of the survivors' inputs, or SecureAggregationAborted."""
    rosters = server.roster(wire.exchange(training))
    shared = wire.exchange([SecureTask(c, r) for c, r in sorted(rosters.items())])
    masked = wire.exchange([SecureTask(c, r) for c, r in sorted(server.forward(shared).items())])
    unmask = server.unmask_requests(masked)
    if len(server.survivors) < min_cohort:
        raise SecureAggregationAborted(
            f"{len(server.survivors)} masked inputs, fewer than min_cohort={min_cohort}"
        )
    return server.finish(wire.exchange([SecureTask(c, r) for c, r in sorted(unmask.items())]))


def _server_halves(
    algorithm: Algorithm, state: ServerState, aggregate: Vector, survivors: int
) -> tuple[ServerState, dict[str, float]]:
    """The server halves of the stages before the secure sum (in reverse), then the server
    optimizer, as a plain round applies them; no per-client measurements reach them (one empty
    mapping per survivor: they learn how many inputs the sum holds, nothing more)."""
    layout = algorithm.work.model.layout
    metrics: dict[str, float] = {}
    stage_states = list(state.stages)
    for i in reversed(range(len(algorithm.stages) - 1)):
        inner = algorithm.stages[i]
        aggregate, stage_states[i], stage_metrics = inner.server(
            aggregate, stage_states[i], [{} for _ in range(survivors)]
        )
        metrics.update({f"{inner.name}.{k}": v for k, v in stage_metrics.items()})
    step, opt_state = algorithm.server_optimizer.update(aggregate, state.optimizer)
    new_params = apply_step(layout, state.params, step, aggregate)
    metrics["update_norm"] = norm64(aggregate)
    stages = tuple(stage_states)
    return ServerState(state.round + 1, new_params, opt_state, state.extras, stages), metrics


def _reason(client: int, server: ServerSession | None, failures: Mapping[int, str]) -> str:
    if client in failures:
        return f"client failed: {failures[client]}"
    if server is not None and client in server.rejected:
        return f"malformed reply: {server.rejected[client]}"
    if server is not None and client in server.vanished:
        return f"dropped out in the {server.vanished[client]} round"
    return "not in the sum: the round aborted"


def _protocol_metrics(cohort: Sequence[int], server: ServerSession | None) -> dict[str, float]:
    if server is None:
        return {}
    gone = server.vanished
    metrics = {
        "secagg.survivors": float(len(server.survivors)),
        "secagg.dropped": float(len(cohort) - len(server.survivors)),
        "secagg.threshold": float(server.setup.threshold),
        "secagg.degree": float(server.setup.degree),
        "secagg.rejected": float(len(server.rejected)),
    }
    for phase in PHASES:
        metrics[f"secagg.dropped.{phase}"] = float(sum(1 for p in gone.values() if p == phase))
    return metrics
