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

A run can be stopped from outside (the dashboard's token-guarded control action writes a stop
request to the store): after recording each round the runner checks for one, and if found it
checkpoints that round and marks the run ``interrupted``, to be resumed like any other.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from fedloom.auditing import AuditingExecutor, RunAuditor, auditing, run_facts
from fedloom.client import LocalSGD
from fedloom.core.messages import ClientState
from fedloom.engine import History, RoundRecord, ServerState, train
from fedloom.engine.buffered import train_buffered
from fedloom.executors import closing_executor, make_executor
from fedloom.executors.devices import fleet_clock, wire_update_bytes
from fedloom.experiment import Experiment, build
from fedloom.experiment.build import Built
from fedloom.experiment.devices_spec import DevicesSpec
from fedloom.experiment.policy_spec import admission
from fedloom.policy import Admission
from fedloom.simulation import held_out_evaluation
from fedloom.store import Checkpoint, RunStore, StopRequest, StoreError, code_version
from fedloom.store.control import now_iso

RoundObserver = Callable[[RoundRecord, ServerState], None]


class _StopRequested(Exception):
    """Raised between rounds when someone asked the store to stop this run."""

    def __init__(self, request: StopRequest, state: ServerState) -> None:
        super().__init__(f"stop requested by {request.origin}")
        self.request, self.state = request, state


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
    since = now_iso()  # stop requests made before this belonged to an earlier attempt
    admitted = None
    if experiment.policy is not None or experiment.sites:
        admitted = admission(experiment)  # raises before anything is written if too few remain
    built = build(experiment, population=None if admitted is None else len(admitted.population))
    population = range(len(built.data.clients)) if admitted is None else admitted.population
    if experiment.run.buffered is not None:
        return _run_buffered(
            experiment, built, store, population, admitted, resume=resume, on_round=on_round
        )
    executor = make_executor(experiment.run.executor, built.algorithm.client, built.data.clients)
    base = executor
    devices = None
    if experiment.devices is not None:
        devices = experiment.devices.executor(
            executor, built.algorithm.client, built.data.clients, seed=built.schedule.seed
        )
        executor = devices
    audited = auditing(executor)
    config = experiment.to_toml()
    state: ServerState | None = None
    if resume is None:
        run_id = store.create_run(
            name=experiment.name, config=config, seed=built.schedule.seed,
            code_version=code_version(),
        )  # fmt: skip
        auditor = _start_audit(store, run_id, experiment, config, admitted)
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
    recording = _Recording(store, run_id, since, auditor, on_round)

    def record(round_record: RoundRecord, server_state: ServerState) -> None:
        last = server_state.round == built.schedule.rounds
        due = server_state.round % every == 0 or last
        recording.save(round_record, server_state, executor.states, audited, last=last, due=due)

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
    except _StopRequested as stop:
        return recording.stopped(stop, built, started)
    except BaseException:
        recording.finish("interrupted", "interrupted before the last round")
        raise
    recording.finish("completed", history.stopped)
    return Outcome(run_id, history, time.perf_counter() - started)


def _run_buffered(
    experiment: Experiment,
    built: Built,
    store: RunStore,
    population: Sequence[int],
    admitted: Admission | None,
    *,
    resume: str | None,
    on_round: RoundObserver | None,
) -> Outcome:
    """A ``[run.buffered]`` run: FedBuff on the virtual clock of the run's devices (every device
    alike without a ``[devices]`` table), one stored record and audit entry per server step."""
    if resume is not None:
        raise StoreError(
            "a buffered (FedBuff) run cannot be resumed: the clients in flight and the buffer "
            "are not checkpointed; start it again"
        )
    clients = built.data.clients
    devices = experiment.devices or DevicesSpec()
    fleet = devices.fleet(len(clients), seed=built.schedule.seed)
    work = built.algorithm.work
    if not isinstance(work, LocalSGD):
        raise StoreError("buffered training times fedloom's LocalSGD client work only")
    executor = make_executor(experiment.run.executor, built.algorithm.client, clients)
    config = experiment.to_toml()
    run_id = store.create_run(
        name=experiment.name, config=config, seed=built.schedule.seed,
        code_version=code_version(),
    )  # fmt: skip
    auditor = _start_audit(store, run_id, experiment, config, admitted)
    plan = experiment.run.buffered_plan()
    recording = _Recording(store, run_id, now_iso(), auditor, on_round)

    def record(round_record: RoundRecord, server_state: ServerState) -> None:
        last = server_state.round == plan.updates
        recording.save(round_record, server_state, executor.states, None, last=last, due=last)

    started = time.perf_counter()
    try:
        with closing_executor(executor):
            history = train_buffered(
                built.algorithm, executor, plan,
                population=population,
                clock=fleet_clock(
                    fleet, work, clients,
                    update_bytes=wire_update_bytes(built.algorithm.client),
                ),
                evaluate=held_out_evaluation(work.model, built.data),
                on_round=record,
            )  # fmt: skip
    except _StopRequested as stop:
        return recording.stopped(stop, built, started)
    except BaseException:
        recording.finish("interrupted", "interrupted before the last step")
        raise
    recording.finish("completed", history.stopped)
    return Outcome(run_id, history, time.perf_counter() - started)


def _start_audit(
    store: RunStore,
    run_id: str,
    experiment: Experiment,
    config: str,
    admitted: Admission | None,
) -> RunAuditor:
    """The new run's auditor, its trail opened with the run's facts and policy decisions."""
    auditor = RunAuditor(store.audit(run_id))
    auditor.started(**run_facts(experiment, config))
    for kind, payload in () if admitted is None else admitted.decisions:
        auditor.decision(kind, payload)
    return auditor


@dataclass
class _Recording:
    """What happens after every round or server step: the audit entry, the stored round (with a
    checkpoint when one is due), the caller's observer, and a stop request honoured."""

    store: RunStore
    run_id: str
    since: str
    """Stop requests made before this belonged to an earlier attempt."""
    auditor: RunAuditor
    on_round: RoundObserver | None
    records: list[RoundRecord] = field(default_factory=list)

    def save(
        self,
        round_record: RoundRecord,
        state: ServerState,
        client_states: Mapping[int, ClientState],
        audited: AuditingExecutor | None,
        *,
        last: bool,
        due: bool,
    ) -> None:
        """Record one round; raise :class:`_StopRequested` after it if a stop was asked for."""
        request = None if last else self.store.stop_request(self.run_id, since=self.since)
        checkpoint = None
        if due or request is not None:
            checkpoint = Checkpoint(state, dict(client_states))
        # The audit entry first: a crash between the two leaves an entry for a round the store
        # lost (re-run on resume), never a stored round the trail does not vouch for.
        self.auditor.round(round_record, state, audited)
        self.store.record_round(self.run_id, round_record, checkpoint=checkpoint)
        if self.on_round is not None:
            self.on_round(round_record, state)
        self.records.append(round_record)
        if request is not None:
            raise _StopRequested(request, state)

    def finish(self, status: str, stopped: str) -> None:
        """The run's end, in the store and in its audit trail."""
        self.store.finish(self.run_id, status=status, stopped=stopped)
        self.auditor.finished(status, stopped)

    def stopped(self, stop: _StopRequested, built: Built, started: float) -> Outcome:
        """Close a run that stopped on request: interrupted in the store and the trail, and
        its history so far."""
        request = stop.request
        stopped = f"stopped on request ({request.origin}, {request.requested})"
        self.finish("interrupted", stopped)
        layout = built.algorithm.work.model.layout
        history = History(tuple(self.records), stop.state.params, layout, stopped)
        return Outcome(self.run_id, history, time.perf_counter() - started)
