"""Run an experiment with a run store: record every round, checkpoint, resume after a crash.

This is what ``fedloom run`` does, as one Python call::

    from fedloom.experiment import load_experiment
    from fedloom.runner import run_experiment
    from fedloom.store import RunStore

    with RunStore.open("runs/fedloom.db") as store:
        outcome = run_experiment(load_experiment("examples/digits-fedavg.toml"), store)

A resumed run continues from its last checkpoint: the sampler and every client's randomness are
derived from ``(seed, round, client)``, the data is rebuilt from the same seed, and the
checkpoint holds the whole server state and every client's kept state, so the final parameters
are bit-identical to a run that never stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from fedloom.auditing import AuditingExecutor, RunAuditor, run_facts
from fedloom.engine import History, RoundRecord, ServerState, train
from fedloom.executors import closing_executor, make_executor
from fedloom.experiment import Experiment, build
from fedloom.experiment.policy_spec import admission
from fedloom.simulation import held_out_evaluation
from fedloom.store import Checkpoint, RunStore, StoreError, code_version

RoundObserver = Callable[[RoundRecord, ServerState], None]


@dataclass(frozen=True)
class Outcome:
    """A finished (or resumed and finished) run: its id in the store and its history.

    ``history`` holds only the rounds this call ran; the store holds them all.
    """

    run_id: str
    history: History
    seconds: float


def run_experiment(
    experiment: Experiment,
    store: RunStore,
    *,
    resume: str | None = None,
    on_round: RoundObserver | None = None,
) -> Outcome:
    """Train ``experiment``, recording it in ``store``; with ``resume``, continue that run.

    Resuming checks that the stored configuration is the one given: a run continues only as the
    experiment it started as.
    """
    built = build(experiment)
    admitted = None
    if experiment.policy is not None or experiment.sites:
        admitted = admission(experiment)  # raises before anything is written if too few remain
    population = range(len(built.data.clients)) if admitted is None else admitted.population
    executor = make_executor(experiment.run.executor, built.algorithm.client, built.data.clients)
    base = executor
    devices = None
    if experiment.devices is not None:
        devices = experiment.devices.executor(
            executor, built.algorithm.client, built.data.clients, seed=built.schedule.seed
        )
        executor = devices
    audited = AuditingExecutor(executor)
    config = experiment.to_toml()
    state: ServerState | None = None
    if resume is None:
        run_id = store.create_run(
            name=experiment.name, config=config, seed=built.schedule.seed,
            code_version=code_version(),
        )  # fmt: skip
        auditor = RunAuditor(store.audit(run_id))
        auditor.started(**run_facts(experiment, config))
        for kind, payload in () if admitted is None else admitted.decisions:
            auditor.decision(kind, payload)
    else:
        info = store.run(resume)
        run_id = info.id
        if info.config != config:
            raise StoreError(
                f"run {run_id} was started from a different experiment; resume it with the "
                "configuration it was recorded with (`fedloom show RUN --config`)"
            )
        auditor = RunAuditor(store.audit(run_id))
        auditor.check(rounds=[r.round for r in store.rounds(run_id)], finished=False)
        store.reopen(run_id)
        auditor.decision("note", {"resumed": True})
        checkpoint = store.latest_checkpoint(run_id)
        if checkpoint is not None:
            state = checkpoint.state
            executor.states.update(checkpoint.clients)
            clocks = [
                r.metrics["sim_clock"]
                for r in store.rounds(run_id)
                if r.round < state.round and "sim_clock" in r.metrics
            ]
            if devices is not None and clocks:
                devices.clock = float(clocks[-1])  # the virtual clock goes on where it was

    every = built.checkpoint_every

    def record(round_record: RoundRecord, server_state: ServerState) -> None:
        last = server_state.round == built.schedule.rounds
        checkpoint = None
        if server_state.round % every == 0 or last:
            checkpoint = Checkpoint(server_state, dict(executor.states))
        # The audit entry first: a crash between the two leaves an entry for a round the store
        # lost (re-run on resume), never a stored round the trail does not vouch for.
        auditor.round(round_record, server_state, audited)
        store.record_round(run_id, round_record, checkpoint=checkpoint)
        if on_round is not None:
            on_round(round_record, server_state)

    started = time.perf_counter()
    try:
        with closing_executor(base):
            history = train(
                built.algorithm, audited, built.schedule,
                population=population,
                evaluate=held_out_evaluation(built.algorithm.work.model, built.data),
                state=state,
                on_round=record,
            )  # fmt: skip
    except BaseException:
        store.finish(run_id, status="interrupted", stopped="interrupted before the last round")
        auditor.finished("interrupted", "interrupted before the last round")
        raise
    store.finish(run_id, status="completed", stopped=history.stopped)
    auditor.finished("completed", history.stopped)
    return Outcome(run_id, history, time.perf_counter() - started)
