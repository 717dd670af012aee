"""A relay: a server to a region's sites, one site to the central server (a two-level hierarchy).

Each training task from upstream is run on every connected site of the region; the relay
answers with the example-weighted mean of their updates and the sum of their example counts,
so the central server's weighted mean over relays equals the weighted mean over all sites:
``Σ_r n_r (Σ_{i∈r} n_i u_i / n_r) / Σ_r n_r = Σ_i n_i u_i / Σ_i n_i``. For FedAvg and the other
algorithms whose server needs only that mean (FedAvgM, FedAdam, FedYogi, FedAdagrad, FedProx), a
hierarchy therefore trains like a flat federation with every site in the cohort. Algorithms that
send vectors besides the update (SCAFFOLD, FedNova) are refused. Each site's seed is derived
from the relay's seed and the site's place in the region, so training whose result depends on
its seed (shuffled minibatches) matches a flat federation in distribution, not bit for bit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from fedloom.core.layout import Layout, Vector
from fedloom.core.messages import Broadcast, ClientResult
from fedloom.engine import EvaluateTask, Evaluation, Reply, TrainTask
from fedloom.engine.history import weighted_average
from fedloom.engine.rounds import check_reply, client_seed
from fedloom.experiment.compression_spec import CODEC_STAGES
from fedloom.pki import Verifier
from fedloom.reducers import WeightedMean
from fedloom.transport import (
    GrpcExecutor,
    ServerCredentials,
    ServiceConfig,
    Site,
    SiteCredentials,
    TrainingConfig,
)

log = logging.getLogger("fedloom.relay")

RELAY_ALGORITHMS = ("fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "fedprox")
"""Algorithms whose server side needs only the weighted mean of the updates."""


class RelayProgram:
    """What the relay runs for each upstream task: the task on every site of its region."""

    def __init__(
        self, executor: GrpcExecutor, layout: Layout, *, wait_for: int, wait_timeout: float
    ) -> None:
        self.executor = executor
        self.layout = layout
        self.wait_for = wait_for
        self.wait_timeout = wait_timeout
        self.sites = executor.config.sites
        self._waited = False

    def _wait(self) -> None:
        if not self._waited:
            self.executor.wait_for_sites(self.wait_for, timeout=self.wait_timeout)
            self._waited = True

    def train(self, broadcast: Broadcast) -> ClientResult:
        self._wait()
        tasks = [
            TrainTask(i, replace(broadcast, seed=client_seed(broadcast.seed, broadcast.round, i)))
            for i in range(len(self.sites))
        ]
        fold = WeightedMean().fold(self.layout.size)
        kept: dict[int, ClientResult] = {}  # without their updates, folded in as they arrive
        problems = []

        def consume(position: int, reply: Reply) -> None:
            site = self.sites[position]
            problem = check_reply(reply, self.layout, {})
            if problem is None:
                assert isinstance(reply, ClientResult)
                fold.add(reply.update, reply.num_examples)
                kept[position] = replace(reply, update=np.zeros(0, dtype=np.float32))
            else:
                problems.append(f"{site}: {problem}")
                log.warning("round %d: site %s left out: %s", broadcast.round, site, problem)

        self.executor.run_each(tasks, consume)
        if not kept:
            raise RuntimeError(f"no site of this region answered ({'; '.join(problems)})")
        results = [kept[i] for i in sorted(kept)]
        counts = [r.num_examples for r in results]
        update = fold.result()
        metrics = weighted_average([r.metrics for r in results], counts)
        return ClientResult(update, int(sum(counts)), metrics=metrics)

    def evaluate(self, params: Vector) -> Evaluation:
        self._wait()
        replies = self.executor.run([EvaluateTask(i, params) for i in range(len(self.sites))])
        done = [r for r in replies if isinstance(r, Evaluation) and r.num_examples > 0]
        if not done:
            return Evaluation(0)
        counts = [e.num_examples for e in done]
        return Evaluation(sum(counts), weighted_average([e.metrics for e in done], counts))


@dataclass(frozen=True)
class RelayOptions:
    """Where the relay listens for its region and how it treats it (see :class:`ServerOptions`
    of :mod:`fedloom.deploy.server` for the same fields)."""

    address: str
    sites: tuple[str, ...]
    credentials: ServerCredentials | None
    verifier: Verifier | None = None
    wait_for: int | None = None
    deadline: float = 60.0
    heartbeat: float = 5.0


def relay(
    *,
    upstream: str,
    name: str,
    layout: Layout,
    upstream_credentials: SiteCredentials | None,
    options: RelayOptions,
    give_up_after: float | None = None,
) -> str:
    """Join ``upstream`` as site ``name`` and serve the region until the run is over; return
    the central server's closing reason."""
    executors: list[GrpcExecutor] = []

    def prepare(config: TrainingConfig) -> RelayProgram:
        if config.algorithm not in RELAY_ALGORITHMS:
            raise ValueError(
                f"a relay forwards one weighted-mean update, which suits {list(RELAY_ALGORITHMS)};"
                f" the run uses {config.algorithm!r}"
            )
        if config.stages and config.stages[-1].kind in CODEC_STAGES:
            raise ValueError(
                f"a relay forwards its region's mean as float32, so the run's last stage, codec "
                f"{config.stages[-1].kind!r}, cannot encode updates through it; run without a "
                "relay or without the codec stage"
            )
        if not executors:
            service = ServiceConfig(
                run=f"relay {name}",
                layout=layout,
                training=config,
                sites=options.sites,
                verifier=options.verifier,
                heartbeat=options.heartbeat,
                terms=site.terms,  # the central run's, for the region's sites to check
            )
            executors.append(
                GrpcExecutor(
                    service,
                    address=options.address,
                    credentials=options.credentials,
                    deadline=options.deadline,
                )
            )
            log.info("relay %s serves its region on port %d", name, executors[0].port)
        wanted = len(options.sites) if options.wait_for is None else options.wait_for
        return RelayProgram(executors[0], layout, wait_for=wanted, wait_timeout=options.deadline)

    site = Site(
        target=upstream,
        name=name,
        layout=layout,
        prepare=prepare,
        credentials=upstream_credentials,
        give_up_after=give_up_after,
        secure=False,  # a relay would see its region's updates: it refuses secure aggregation
        private=False,  # its update is its region's mean: the server's clipping check refuses it
    )
    try:
        return site.run()
    finally:
        for executor in executors:
            executor.close()
