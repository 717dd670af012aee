"""Secure aggregation (SecAgg+) over gRPC with real processes on 127.0.0.1: a deployed run
reaches the parameters of the in-process simulated secure run for the same seed, and sites that
die between the protocol's rounds are dropouts the round survives with the exact sum."""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from pathlib import Path

import numpy as np
from deploy_helpers import (
    HERE,
    experiment_text,
    federation,
    finish,
    start_server,
    start_site,
    stop,
    write_site_data,
)

from fedloom.engine import train
from fedloom.engine.secure_rounds import SecureTaskKind
from fedloom.engine.tasks import Failure
from fedloom.executors import InProcessExecutor
from fedloom.experiment import Experiment, build
from fedloom.runner import run_experiment
from fedloom.secagg.messages import SecureReply, SecureTrainTask
from fedloom.simulation import held_out_evaluation
from fedloom.store import RunStore
from fedloom.transport.secure_codec import phase_of

STAGE = """
[[stages]]
kind = "secure_sum"
clip = 100.0
bits = {bits}
dropout_rate = {dropout}
corrupt_fraction = {corrupt}
"""


def secure_experiment(
    sites: int, rounds: int, dropout: float, corrupt: float, bits: int = 32
) -> str:
    text = experiment_text(
        clients=sites, rounds=rounds, cohort=sites, min_cohort=2, federated_eval=False
    )
    return text + STAGE.format(dropout=dropout, corrupt=corrupt, bits=bits)


def deploy(
    tmp_path: Path, text: str, sites: Sequence[str], crash: Mapping[str, tuple[str, int]]
) -> tuple[str, list[int]]:
    """Run ``text`` on a server and one process per site; ``crash[site] = (phase, round)``
    makes that site die when that protocol round's request reaches it. The run id and the
    sites' exit codes."""
    (tmp_path / "exp.toml").write_text(text)
    fed = federation(tmp_path / "fed", sites)
    data = write_site_data(Experiment.from_toml(text), tmp_path / "data")
    server = start_server(tmp_path, tmp_path / "exp.toml", fed, "--deadline", "60")
    processes = []
    for site, path in zip(sites, data, strict=True):
        launcher: tuple[str, ...] = ("-m", "fedloom")
        if site in crash:
            phase, round_ = crash[site]
            launcher = (str(HERE / "crashing_site.py"), phase, str(round_))
        processes.append(start_site(tmp_path, server.port, fed, site, path, launcher=launcher))
    try:
        assert finish(server.process) == 0, server.output()
        codes = [finish(p) for p in processes]
    finally:
        stop(server.process, *processes)
    return server.run_id, codes


def test_secure_grpc_run_equals_simulation(tmp_path: Path) -> None:
    sites = ["site-a", "site-b", "site-c"]
    # A 24-bit ring: masked inputs travel packed to 3 bytes an entry.
    text = secure_experiment(3, rounds=2, dropout=0.0, corrupt=0.0, bits=24)
    run_id, codes = deploy(tmp_path, text, sites, {})
    assert codes == [0, 0, 0]
    with RunStore.open(tmp_path / "sim.db") as sim_store:
        simulated = run_experiment(Experiment.from_toml(text), sim_store)
    with RunStore.open(tmp_path / "runs" / "fedloom.db") as store:
        assert store.run(run_id).status == "completed"
        checkpoint = store.latest_checkpoint(run_id)
        assert checkpoint is not None
        rounds = store.rounds(run_id)
    np.testing.assert_allclose(checkpoint.state.params, simulated.history.params, atol=1e-6)
    size = checkpoint.state.params.size
    for deployed, local in zip(rounds, simulated.history.records, strict=True):
        assert deployed.aborted is None
        assert deployed.accepted == local.accepted == (0, 1, 2)
        assert deployed.metrics["secagg.total_weight"] == local.metrics["secagg.total_weight"]
        # Each site sends its masked input (size + 1 entries of 24 bits) once, in chunks.
        masked = deployed.metrics["wire_bytes_up.secagg.mask"]
        assert 3 * 3 * (size + 1) < masked < 3 * 3 * (size + 1) + 600
        # Round 0 brings down the parameters, a float32 copy per site; only keys go up (no
        # update ever reaches the server).
        assert deployed.metrics["wire_bytes_down.secagg.advertise"] > 3 * 4 * size
        assert deployed.metrics["wire_bytes_up.secagg.advertise"] < 3 * 100
        phases = sum(
            deployed.metrics[f"wire_bytes_{way}.secagg.{p}"]
            for way in ("down", "up")
            for p in ("advertise", "share", "mask", "unmask")
        )
        total = deployed.metrics["wire_bytes_down"] + deployed.metrics["wire_bytes_up"]
        assert phases <= total < phases + 2000  # the rest: heartbeats


class Vanishing:
    """The in-process executor, with clients that stop answering from a chosen protocol round
    of a chosen training round on, as the killed sites do."""

    def __init__(self, inner: InProcessExecutor, vanish: Mapping[tuple[int, str], Set[int]]):
        self.inner, self.vanish = inner, vanish
        self.states = inner.states
        self.gone: set[int] = set()
        self.round = -1

    def run(self, tasks: Sequence[object]) -> list[object]:
        raise AssertionError("a secure run trains through run_secure")

    def run_secure(self, tasks: Sequence[SecureTaskKind]) -> list[SecureReply | Failure]:
        if tasks and isinstance(tasks[0], SecureTrainTask):
            self.round = tasks[0].setup.round
        if tasks:
            self.gone |= set(self.vanish.get((self.round, phase_of(tasks[0])), ()))
        live = [t for t in tasks if t.client not in self.gone]
        answers = dict(zip([t.client for t in live], self.inner.run_secure(live), strict=True))
        return [answers.get(t.client, Failure("connection lost")) for t in tasks]


def test_killed_sites_are_dropouts(tmp_path: Path) -> None:
    # Four sites tolerate one dropout (threshold 2 of 3 neighbours). site-d dies when round 0's
    # masking request reaches it (after sharing its keys, before its masked input); site-c
    # dies when round 1's unmasking request reaches it (after sending its masked input).
    sites = ["site-a", "site-b", "site-c", "site-d"]
    text = secure_experiment(4, rounds=2, dropout=0.25, corrupt=0.25)
    crash = {"site-d": ("mask", 0), "site-c": ("unmask", 1)}
    run_id, codes = deploy(tmp_path, text, sites, crash)
    assert codes == [0, 0, 3, 3]

    built = build(Experiment.from_toml(text))
    inner = InProcessExecutor(built.algorithm.client, built.data.clients)
    executor = Vanishing(inner, {(0, "mask"): {3}, (1, "unmask"): {2}})
    simulated = train(
        built.algorithm,
        executor,
        built.schedule,
        population=range(4),
        evaluate=held_out_evaluation(built.algorithm.work.model, built.data),
    )
    with RunStore.open(tmp_path / "runs" / "fedloom.db") as store:
        assert store.run(run_id).status == "completed"
        checkpoint = store.latest_checkpoint(run_id)
        assert checkpoint is not None
        rounds = store.rounds(run_id)
    np.testing.assert_allclose(checkpoint.state.params, simulated.params, atol=1e-6)
    first, second = rounds
    # Round 0: site-d's masked input never came; the sum is a, b and c's.
    assert first.aborted is None
    assert first.accepted == (0, 1, 2)
    assert first.metrics["secagg.dropped.mask"] == 1
    assert "site site-d" in {r.client: r.reason for r in first.rejected}[3]
    # Round 1: site-d is gone from the start; site-c's masked input is in the sum although it
    # died before unmasking (the survivors revealed its self-mask).
    assert second.aborted is None
    assert second.accepted == (0, 1, 2)
    assert second.metrics["secagg.dropped.advertise"] == 1
    for deployed, local in zip(rounds, simulated.records, strict=True):
        assert deployed.accepted == local.accepted
        assert deployed.metrics["secagg.total_weight"] == local.metrics["secagg.total_weight"]
