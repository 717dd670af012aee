"""Run an experiment as a real federation: the engine on this machine, clients at the sites.

:func:`serve` is what ``fedloom server`` calls. It builds the experiment as ``fedloom run``
does (the server's data provides only the model's shape and the held-out test set), opens a
gRPC server, waits for sites, and trains with the unchanged engine through a
:class:`~fedloom.transport.GrpcExecutor`. Every round goes to the run store with the bytes
that crossed the wire each way (with secure aggregation, also each way in each of its protocol
rounds: ``wire_bytes_down.secagg.mask`` and so on), and the run's population (client ``i`` is
the site named ``sites[i]``, the identity in its certificate) is recorded so the participants
of each round can be named. A killed server, started again with the same experiment, resumes
the newest unfinished run of that experiment from its checkpoint; sites reconnect on their own.
A stop request in the store (the dashboard's control action) is honoured as ``fedloom run``
honours it: after recording a round, the run is checkpointed and marked interrupted, to be
resumed.

Every site is told the run's terms when it joins (see
:func:`~fedloom.experiment.policy_spec.run_terms`). A site whose own policy refuses them says
why and leaves; the refusal goes to the run's audit trail (kind ``refusal``, by ``site``, with
the identity its certificate proves), the site sits the run out, and the run goes on with the
others, or fails, saying so, when too few remain.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from fedloom.algorithms import Algorithm
from fedloom.auditing import RunAuditor, auditing, run_facts
from fedloom.core import validate
from fedloom.deploy.clip_check import ClipCheck
from fedloom.deploy.live import FederationLive
from fedloom.deploy.training import check_deployable, training_config
from fedloom.engine import History, RoundRecord, ServerState, train
from fedloom.engine.loop import Schedule, ServerEvaluation
from fedloom.engine.tasks import Executor
from fedloom.experiment import Experiment, ExperimentError, build
from fedloom.experiment.compression_spec import CODEC_STAGES
from fedloom.experiment.policy_spec import run_terms
from fedloom.pki import Verifier, read_allowlist
from fedloom.policy import Admission, PolicyError, RunTerms, admit
from fedloom.runner import Outcome, RoundObserver
from fedloom.simulation import held_out_evaluation
from fedloom.store import Checkpoint, RunStore, StopRequest, StoreError, code_version
from fedloom.store.control import now_iso
from fedloom.transport import (
    MAX_CHUNK_BYTES,
    GrpcExecutor,
    ServerCredentials,
    ServiceConfig,
    SiteRefusal,
    TrainingConfig,
)
from fedloom.transport.allocator import tune_malloc

log = logging.getLogger("fedloom.server")


@dataclass(frozen=True)
class ServerOptions:
    """How the server listens and waits.

    ``sites`` is the population in order (the federation's allow-list). ``credentials`` None
    serves without TLS. ``wait_for`` sites must be connected before the first round (default:
    all). ``deadline`` bounds each round's wait for replies. ``uploads``: how many sites' replies
    the server holds at once (``ServiceConfig.uploads``; 1 holds one model less, 2 keeps two
    uploads moving on a distant link). ``malloc_arenas``: how many glibc malloc arenas the
    server process may use, with chunk-sized blocks kept on the heap
    (:func:`~fedloom.transport.allocator.tune_malloc`; 1 keeps about 60 MB less of gRPC's freed
    buffers resident with 20 sites, and chunks stop costing fresh pages); None leaves the
    allocator as it is, as do ``MALLOC_ARENA_MAX`` and the like set in the environment.
    """

    address: str
    sites: tuple[str, ...]
    credentials: ServerCredentials | None
    verifier: Verifier | None = None
    wait_for: int | None = None
    deadline: float = 60.0
    heartbeat: float = 5.0
    hello_timeout: float = 10.0
    chunk_bytes: int = 1 << 20
    uploads: int = 2
    malloc_arenas: int | None = 1

    def __post_init__(self) -> None:
        validate.positive_int("uploads", self.uploads)
        if self.malloc_arenas is not None:
            validate.positive_int("malloc_arenas", self.malloc_arenas)
        if not self.sites:
            raise ValueError("sites must name at least one site (the federation's allow-list)")
        if not 1024 <= self.chunk_bytes <= MAX_CHUNK_BYTES or self.chunk_bytes % 4:
            raise ValueError(
                f"chunk_bytes must be a multiple of 4 in [1024, {MAX_CHUNK_BYTES}], "
                f"got {self.chunk_bytes}"
            )
        for name in ("deadline", "heartbeat", "hello_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {getattr(self, name)!r}")
        if self.wait_for is not None and not 0 <= self.wait_for <= len(self.sites):
            raise ValueError(
                f"wait_for must be between 0 and the {len(self.sites)} sites, got {self.wait_for}"
            )


def serve(
    experiment: Experiment,
    store: RunStore,
    options: ServerOptions,
    *,
    resume: str | None = None,
    new: bool = False,
    on_round: RoundObserver | None = None,
    on_listening: Callable[[int, str], None] | None = None,
    live: FederationLive | None = None,
) -> Outcome:
    """Train ``experiment`` on the sites that join; see the module docstring.

    ``resume`` names a run to continue; otherwise the newest unfinished run of this very
    experiment is continued unless ``new``. ``on_listening(port, run_id)`` is called once the
    server accepts connections. ``live`` (for a dashboard) sees the server's sessions and
    rounds while it serves.
    """
    _check_privacy(experiment)
    sites = options.sites
    admitted = _admission(experiment, sites)
    built = build(experiment, population=len(admitted.population))
    if experiment.devices is not None or experiment.run.executor != "inprocess":
        log.warning(
            "[devices] and [run] executor describe simulations; a deployment ignores them "
            "(the sites are the devices)"
        )
    try:
        built.schedule.cohort.check(len(sites))
    except ValueError as error:
        raise ExperimentError(
            ("run", "cohort"), f"{error} (the federation has {len(sites)} sites)"
        ) from None
    task = "regression" if built.data.num_classes is None else "classification"
    config_text = experiment.to_toml()
    privacy = experiment.privacy
    plan = Plan(
        name=experiment.name,
        config=config_text,
        algorithm=built.algorithm,
        schedule=built.schedule,
        checkpoint_every=built.checkpoint_every,
        training=training_config(experiment, task=task),
        terms=run_terms(experiment),
        evaluate=held_out_evaluation(built.algorithm.work.model, built.data),
        admitted=admitted,
        facts=run_facts(experiment, config_text),
        policy_min=1 if experiment.policy is None else experiment.policy.min_cohort,
        cohort=experiment.run.cohort if isinstance(experiment.run.cohort, int) else 1,
        clip=None if privacy is None else (privacy.clip, privacy.target_quantile is not None),
    )
    return serve_plan(
        plan, store, options, resume=resume, new=new, on_round=on_round,
        on_listening=on_listening, live=live,
    )  # fmt: skip


@dataclass(frozen=True)
class Plan:
    """What a server needs to run a federation, whatever described it (an experiment file, an
    algorithm value): the algorithm and its schedule, what sites are told (``training``,
    ``terms``), the held-out evaluation, who is admitted, and what the store and the audit trail
    record (``name``, ``config``, ``facts``). ``policy_min`` and ``cohort`` are the fewest sites
    a round needs besides the schedule's ``min_cohort``; ``clip`` is central DP's initial
    clipping bound and whether it adapts (None: no DP), for the server's check on updates."""

    name: str
    config: str
    algorithm: Algorithm
    schedule: Schedule
    checkpoint_every: int
    training: TrainingConfig
    terms: RunTerms
    evaluate: ServerEvaluation | None
    admitted: Admission
    facts: Mapping[str, object]
    policy_min: int = 1
    cohort: int = 1
    clip: tuple[float, bool] | None = None


def serve_plan(
    plan: Plan,
    store: RunStore,
    options: ServerOptions,
    *,
    resume: str | None = None,
    new: bool = False,
    on_round: RoundObserver | None = None,
    on_listening: Callable[[int, str], None] | None = None,
    live: FederationLive | None = None,
) -> Outcome:
    """Serve ``plan`` (see :func:`serve`, which makes one from an experiment)."""
    since = now_iso()  # stop requests made before this belonged to an earlier attempt
    sites = options.sites
    admitted = plan.admitted
    training = plan.training
    run_id, state, resumed = _open_run(
        store, plan.name, plan.config, plan.schedule.seed, sites, resume=resume, new=new
    )
    auditor = RunAuditor(store.audit(run_id), identity=lambda client: sites[client])
    if resumed:
        auditor.check(rounds=[r.round for r in store.rounds(run_id)], finished=False)
        auditor.decision("note", {"resumed": True})
    else:
        auditor.started(**plan.facts)
        for kind, payload in admitted.decisions:
            auditor.decision(kind, payload)
    service = ServiceConfig(
        run=run_id,
        layout=plan.algorithm.work.model.layout,
        training=training,
        sites=sites,
        verifier=options.verifier,
        chunk_bytes=options.chunk_bytes,
        heartbeat=options.heartbeat,
        hello_timeout=options.hello_timeout,
        terms=plan.terms,
        uploads=options.uploads,
    )
    if options.malloc_arenas is not None:  # before gRPC's threads make arenas of their own
        log.info("malloc: %s", tune_malloc(options.malloc_arenas))
    started = time.perf_counter()
    with GrpcExecutor(
        service,
        address=options.address,
        credentials=options.credentials,
        deadline=options.deadline,
    ) as executor:
        audited = auditing(_clip_checked(executor, plan.clip, sites))
        if on_listening is not None:
            on_listening(executor.port, run_id)
        wanted = len(sites) if options.wait_for is None else options.wait_for
        last = (0, 0)
        last_phases: dict[str, tuple[int, int]] = {}
        records: list[RoundRecord] = []

        def record(round_record: RoundRecord, server_state: ServerState) -> None:
            nonlocal last, last_phases
            down, up = executor.traffic()
            wire = {"wire_bytes_down": float(down - last[0]), "wire_bytes_up": float(up - last[1])}
            last = (down, up)
            phases = executor.phase_traffic()
            for phase, (phase_down, phase_up) in phases.items():
                before = last_phases.get(phase, (0, 0))
                wire[f"wire_bytes_down.secagg.{phase}"] = float(phase_down - before[0])
                wire[f"wire_bytes_up.secagg.{phase}"] = float(phase_up - before[1])
            last_phases = phases
            _audit_refusals(auditor, executor.refusals())
            round_record = replace(round_record, metrics={**round_record.metrics, **wire})
            checkpoint = None
            final = server_state.round == plan.schedule.rounds
            request = None if final else store.stop_request(run_id, since=since)
            if server_state.round % plan.checkpoint_every == 0 or final or request is not None:
                checkpoint = Checkpoint(server_state, {})
            auditor.round(round_record, server_state, audited)
            store.record_round(run_id, round_record, checkpoint=checkpoint)
            records.append(round_record)
            names = [sites[c] for c in round_record.accepted]
            log.info(
                "round %d: %d/%d took part (%s)",
                round_record.round,
                len(names),
                len(round_record.cohort),
                ", ".join(names),
            )
            for rejection in round_record.rejected:
                log.warning(
                    "round %d: the update from site %s was rejected: %s",
                    round_record.round,
                    sites[rejection.client],
                    rejection.reason,
                )
            if on_round is not None:
                on_round(round_record, server_state)
            if request is not None:
                raise _StopRequested(request, server_state)

        if live is not None:
            live.attach(executor)
        try:
            log.info("run %s: waiting for %d of %d sites", run_id, wanted, len(sites))
            executor.wait_for_sites(wanted)
            _audit_refusals(auditor, executor.refusals())
            population = _remaining(plan, sites, executor.refused())
            last = executor.traffic()
            last_phases = executor.phase_traffic()
            history = train(
                plan.algorithm,
                audited,
                plan.schedule,
                population=population,
                evaluate=plan.evaluate,
                state=state,
                on_round=record,
            )
        except _StopRequested as stop:  # the sites keep trying: a restarted server resumes
            request, params = stop.request, stop.state.params
            stopped = f"stopped on request ({request.origin}, {request.requested})"
            store.finish(run_id, status="interrupted", stopped=stopped)
            auditor.finished("interrupted", stopped)
            log.info("run %s: %s", run_id, stopped)
            layout = plan.algorithm.work.model.layout
            history = History(tuple(records), params, layout, stopped)
            executor.close("the run was stopped on request", finished=False)
            return Outcome(run_id, history, time.perf_counter() - started)
        except _TooFew as error:
            _audit_refusals(auditor, executor.refusals())
            store.finish(run_id, status="failed", stopped=str(error))
            auditor.finished("failed", str(error))
            executor.close(str(error), finished=True)
            raise ExperimentError(("policy",), str(error)) from None
        except BaseException:
            store.finish(run_id, status="interrupted", stopped="interrupted before the last round")
            auditor.finished("interrupted", "interrupted before the last round")
            raise
        finally:
            if live is not None:
                live.detach()
        _audit_refusals(auditor, executor.refusals())
    store.finish(run_id, status="completed", stopped=history.stopped)
    auditor.finished("completed", history.stopped)
    return Outcome(run_id, history, time.perf_counter() - started)


def _check_privacy(experiment: Experiment) -> None:
    """Refuse, with the reason, a ``[privacy]`` table a deployment cannot honour: sites run only
    central DP's client half (clipping), and the server must see every update to check it
    (secure aggregation with central DP is refused everywhere, by the pipeline's own check)."""
    privacy = experiment.privacy
    if privacy is None:
        return
    check_deployable(privacy)
    codec = next((s.kind for s in experiment.stages if s.kind in CODEC_STAGES), None)
    if codec is not None:
        raise ExperimentError(
            ("privacy",),
            f"central DP with the codec stage {codec!r} cannot be deployed yet: an encoded "
            "update's norm is not the clipped one, so the server could not check that every "
            "site clipped; remove the codec stage, or run the experiment in simulation",
        )


def _clip_checked(
    executor: Executor, clip: tuple[float, bool] | None, sites: Sequence[str]
) -> Executor:
    """``executor`` behind the server's clipping check when the run has central DP."""
    if clip is None:
        return executor
    initial, adaptive = clip
    return ClipCheck(executor, initial, adaptive=adaptive, names=sites)


def _admission(experiment: Experiment, sites: Sequence[str]) -> Admission:
    """The sites the experiment's ``[policy]`` and ``[[sites]]`` admit, by the identity their
    certificates prove (every site, with one "policy in force" decision, when there are none)."""
    if experiment.policy is None and not experiment.sites:
        return Admission(tuple(range(len(sites))), ())
    cohort = experiment.run.cohort if isinstance(experiment.run.cohort, int) else 1
    try:
        return admit(
            experiment.policy, experiment.sites, run_terms(experiment), range(len(sites)),
            identity=lambda client: sites[client], cohort=cohort,
        )  # fmt: skip
    except PolicyError as error:
        raise ExperimentError(("policy",), str(error)) from None


def _audit_refusals(auditor: RunAuditor, refusals: Sequence[SiteRefusal]) -> None:
    """One ``refusal`` entry for each site that refused the run under its own policy."""
    for refusal in refusals:
        payload = {"identity": refusal.site, "by": "site", "reason": refusal.reason}
        if refusal.subject is not None:
            payload["subject"] = refusal.subject
        auditor.decision("refusal", payload)
        log.warning("site %s refused the run: %s", refusal.site, refusal.reason)


class _TooFew(Exception):
    """Too few sites remain after their own policies' refusals for a round to count."""


def _remaining(plan: Plan, sites: Sequence[str], refused: frozenset[str]) -> tuple[int, ...]:
    """The admitted population less the sites that refused the run (:class:`_TooFew` if fewer
    remain than a round needs)."""
    admitted = plan.admitted
    population = tuple(c for c in admitted.population if sites[c] not in refused)
    if len(population) == len(admitted.population):
        return population
    min_cohort = plan.schedule.min_cohort
    needed = max(plan.policy_min, min_cohort, plan.cohort)
    if len(population) < needed:
        who = sorted(refused & {sites[c] for c in admitted.population})
        raise _TooFew(
            f"only {len(population)} of {len(admitted.population)} sites remain after "
            f"{', '.join(who)} refused the run under their own policies, fewer than the "
            f"{needed} a round needs (policy.min_cohort = {plan.policy_min}, run.min_cohort = "
            f"{min_cohort}, run cohort {plan.cohort}); see the run's audit trail"
        )
    return population


class _StopRequested(Exception):
    """Raised between rounds when someone asked the store to stop this run."""

    def __init__(self, request: StopRequest, state: ServerState) -> None:
        super().__init__(f"stop requested by {request.origin}")
        self.request, self.state = request, state


def _open_run(
    store: RunStore,
    name: str,
    config: str,
    seed: int,
    sites: Sequence[str],
    *,
    resume: str | None,
    new: bool,
) -> tuple[str, ServerState | None, bool]:
    """The run to serve, the state it resumes from, and whether it is resumed."""
    if resume is None and not new:
        unfinished = [
            r
            for r in store.runs()
            if r.config == config and r.status != "completed" and store.sites(r.id)
        ]
        if unfinished:
            resume = unfinished[0].id
            log.info("resuming run %s, the newest unfinished run of this experiment", resume)
    if resume is None:
        run_id = store.create_run(
            name=name,
            config=config,
            seed=seed,
            code_version=code_version(),
        )
        store.record_sites(run_id, sites)
        return run_id, None, False
    info = store.run(resume)
    if info.config != config:
        raise StoreError(
            f"run {info.id} was started from a different experiment; resume it with "
            "the configuration it was recorded with (`fedloom show RUN --config`)"
        )
    recorded = store.sites(info.id)
    if recorded and list(recorded) != list(sites):
        raise StoreError(
            f"run {info.id} ran with the sites {recorded}; the federation now lists {list(sites)}."
            " Resume with the same allow-list, or start a new run with --new"
        )
    store.reopen(info.id)
    store.record_sites(info.id, sites)
    checkpoint = store.latest_checkpoint(info.id)
    return info.id, None if checkpoint is None else checkpoint.state, True


def site_names(path: Path) -> tuple[str, ...]:
    """The population from an allow-list file (see :func:`fedloom.pki.read_allowlist`)."""
    return tuple(read_allowlist(path))
