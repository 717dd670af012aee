"""Central DP over gRPC: sites clip, the server adds the noise, accounts for it and checks that
every update it sums was clipped; the mechanisms sites cannot run yet are refused."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
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

from fedloom.algorithms import ClientProgram
from fedloom.auditing import AuditingExecutor
from fedloom.cli import main
from fedloom.core.messages import Broadcast, ClientResult
from fedloom.data import ClientData
from fedloom.deploy.clip_check import ClipCheck
from fedloom.engine.tasks import Executor, Failure, Reply, StreamingExecutor, Task, TrainTask
from fedloom.executors import InProcessExecutor
from fedloom.experiment import Experiment
from fedloom.runner import run_experiment
from fedloom.store import RunStore
from fedloom.testing import check_executor

SITES = ["site-a", "site-b", "site-c"]
# A bound well below the updates' natural norms (about 0.5 here), so clipping decides the run,
# and noise so small (z = 1e-3: std 5e-5 on each round's mean) that the server's fresh noise
# moves the parameters far less than one unclipped update would.
PRIVACY = '\n[privacy]\nmechanism = "gaussian"\nclip = 0.1\nnoise_multiplier = 0.001\n'


def _deploy(tmp_path: Path, text: str, launchers: list[tuple[str, ...]]) -> tuple[str, int]:
    (tmp_path / "exp.toml").write_text(text)
    fed = federation(tmp_path / "fed", SITES)
    data = write_site_data(Experiment.from_toml(text), tmp_path / "data")
    server = start_server(tmp_path, tmp_path / "exp.toml", fed, "--deadline", "60")
    sites = [
        start_site(tmp_path, server.port, fed, s, d, launcher=launcher)
        for s, d, launcher in zip(SITES, data, launchers, strict=True)
    ]
    try:
        code = finish(server.process)
        assert all(finish(s) == 0 for s in sites)
    finally:
        stop(server.process, *sites)
    return server.run_id, code


def test_deployed_central_dp_equals_the_simulation(tmp_path: Path) -> None:
    text = experiment_text(rounds=3, cohort=2) + PRIVACY
    experiment = Experiment.from_toml(text)
    run_id, code = _deploy(tmp_path, text, [("-m", "fedloom")] * 3)
    assert code == 0
    with RunStore.open(tmp_path / "sim.db") as sim_store:
        simulated = run_experiment(experiment, sim_store)
    without = run_experiment(Experiment.from_toml(experiment_text(rounds=3, cohort=2)),
                             RunStore.open(":memory:"))  # fmt: skip
    with RunStore.open(tmp_path / "runs" / "fedloom.db") as store:
        rounds = store.rounds(run_id)
        checkpoint = store.latest_checkpoint(run_id)
        assert checkpoint is not None
    assert all(not r.rejected for r in rounds)
    # The same clipped updates, each round's noise drawn afresh: equal within the noise.
    np.testing.assert_allclose(checkpoint.state.params, simulated.history.params, atol=2e-3)
    assert np.abs(without.history.params - simulated.history.params).max() > 0.1
    # The accountant ran on the server as in simulation: the same ε, recorded every round.
    local = simulated.history.records
    assert [r.metrics["dp.epsilon"] for r in rounds] == [r.metrics["dp.epsilon"] for r in local]
    assert [r.metrics["dp.clip"] for r in rounds] == [0.1, 0.1, 0.1]
    assert rounds[-1].metrics["dp.epsilon"] > rounds[0].metrics["dp.epsilon"] > 0


def test_a_site_that_skips_clipping_is_rejected(tmp_path: Path) -> None:
    text = experiment_text(rounds=2, cohort=3, min_cohort=2) + PRIVACY
    cheat = (str(HERE / "unclipping_site.py"),)
    run_id, code = _deploy(tmp_path, text, [("-m", "fedloom"), cheat, ("-m", "fedloom")])
    assert code == 0
    with RunStore.open(tmp_path / "runs" / "fedloom.db") as store:
        rounds = store.rounds(run_id)
    for record in rounds:
        assert record.accepted == (0, 2)
        (rejected,) = record.rejected
        assert rejected.client == 1
        assert "exceeds the round's clipping bound 0.1" in rejected.reason
        assert "the site did not clip it" in rejected.reason


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('mechanism = "distributed"\nclip = 1.0\nnoise_multiplier = 1.0\nmin_clients = 2\n',
         "'distributed' cannot be deployed yet"),
        ('mechanism = "gaussian"\nclip = 1.0\nnoise_multiplier = 1.0\n'
         '[[stages]]\nkind = "qsgd"\nlevels = 16\n', "codec stage 'qsgd' cannot be deployed"),
        ('mechanism = "gaussian"\nclip = 1.0\nnoise_multiplier = 1.0\n'
         '[[stages]]\nkind = "float16"\n[[stages]]\nkind = "clip"\nbound = 5.0\n',
         "codec stage 'float16' cannot be deployed"),
    ],
)  # fmt: skip
def test_privacy_that_sites_cannot_honour_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: str, message: str
) -> None:
    exp = tmp_path / "exp.toml"
    exp.write_text(experiment_text(clients=2, cohort=2, min_cohort=2) + "\n[privacy]\n" + extra)
    fed = federation(tmp_path / "fed", ["site-a", "site-b"])
    with pytest.raises(SystemExit) as exit_:
        main(["server", str(exp), "--dir", str(fed.root), "--listen", "127.0.0.1:0",
              "--runs", str(tmp_path / "runs")])  # fmt: skip
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert "listening on" not in captured.out


class Replies:
    """An executor that answers with the given replies (the check's input, chosen by hand)."""

    def __init__(self, replies: list[Reply]) -> None:
        self.replies = replies
        self.states: dict[int, object] = {}

    def run(self, tasks: list[Task]) -> list[Reply]:
        return self.replies


def _task(client: int, clip: float) -> TrainTask:
    params = np.zeros(4, dtype=np.float32)
    return TrainTask(client, Broadcast(0, params, seed=1, stage_config={"dp": {"clip": clip}}))


def _result(update: list[float], unclipped: float | None = None) -> ClientResult:
    metrics = {} if unclipped is None else {"dp.unclipped": unclipped}
    return ClientResult(np.array(update, dtype=np.float32), 10, metrics=metrics)


def test_clip_check_by_hand() -> None:
    # Norms: [3, 4, 0, 0] has 5; the bound is the round's (2.5 here), not the initial 9.
    results = [_result([1.5, 2.0, 0, 0]), _result([3, 4, 0, 0]), _result([0.6, 0.8, 0, 0])]
    check = ClipCheck(Replies(list(results)), initial=9.0, names=["a", "b", "c"])
    replies = check.run([_task(0, 2.5), _task(1, 2.5), _task(2, 2.5)])
    assert replies[0] is results[0]  # norm exactly 2.5: at the bound
    assert isinstance(replies[1], Failure)
    assert "L2 norm 5 exceeds the round's clipping bound 2.5" in replies[1].reason
    assert replies[2] is results[2]
    # A task without the stage's config falls back to the initial bound.
    bare = TrainTask(0, Broadcast(0, np.zeros(4, dtype=np.float32), seed=1))
    assert ClipCheck(Replies([results[1]]), initial=5.0).run([bare]) == [results[1]]


def test_adaptive_clip_check_needs_a_consistent_report() -> None:
    results = [
        _result([0.6, 0.8, 0, 0], unclipped=0.5),   # norm 1 inside 2: unclipped, says so
        _result([1.2, 1.6, 0, 0], unclipped=-0.5),  # norm 2 at the bound: was clipped
        _result([0.6, 0.8, 0, 0], unclipped=-0.5),  # norm 1 inside 2, yet "clipped"
        _result([0.6, 0.8, 0, 0]),                  # no report
        _result([0.6, 0.8, 0, 0], unclipped=3.0),   # a report that is no indicator
    ]  # fmt: skip
    check = ClipCheck(Replies(list(results)), initial=2.0, adaptive=True)
    replies = check.run([_task(c, 2.0) for c in range(5)])
    assert replies[:2] == results[:2]
    reasons = [r.reason for r in replies[2:] if isinstance(r, Failure)]
    assert len(reasons) == 3
    assert "reports a clipped update, but the update's norm 1 is inside the bound 2" in reasons[0]
    assert "dp.unclipped report is None" in reasons[1]
    assert "dp.unclipped report is 3.0" in reasons[2]


def test_sites_build_the_simulations_privacy_stage() -> None:
    # Adaptive clipping: the site's first stage is the simulation's, but for the server-only
    # sampling (a placeholder at the site), and it reports whether an update was clipped.
    from dataclasses import replace

    from fedloom.deploy.training import site_algorithm, training_config
    from fedloom.experiment import build
    from fedloom.privacy import CentralGaussian

    adaptive = (
        '\n[privacy]\nmechanism = "gaussian"\nclip = 0.1\nnoise_multiplier = 1.0\n'
        "target_quantile = 0.5\nclip_learning_rate = 0.2\ncount_stddev = 1.5\n"
    )
    experiment = Experiment.from_toml(experiment_text(rounds=1, cohort=2) + adaptive)
    simulated = build(experiment).algorithm
    model = simulated.work.model
    site = site_algorithm(training_config(experiment, task="classification"), model).client
    first, theirs = simulated.stages[0], site.stages[0]
    assert isinstance(first, CentralGaussian)
    assert isinstance(theirs, CentralGaussian)
    assert site.work == simulated.work
    assert theirs == replace(first, sampling=theirs.sampling)
    update = np.full(model.layout.size, 0.01, dtype=np.float32)  # norm 0.255 > 0.1
    clipped, metrics = theirs.client(update, {"clip": 0.1}, np.random.default_rng(0))
    assert np.isclose(np.linalg.norm(clipped), 0.1, rtol=1e-6)
    assert metrics == {"unclipped": -0.5}


def test_the_clip_check_keeps_a_streaming_executor_streaming() -> None:
    """Behind the check, a streaming executor still hands each reply over as it arrives (so a
    deployed DP round folds updates instead of stacking them), and the check's verdicts are the
    same either way."""

    def make(program: ClientProgram, clients: Sequence[ClientData]) -> Executor:
        return ClipCheck(AuditingExecutor(InProcessExecutor(program, clients)), initial=1e9)

    check_executor(make)  # a bound no update reaches: the check passes everything through
    results = [_result([3, 4, 0, 0]), _result([0.6, 0.8, 0, 0])]
    check = ClipCheck(AuditingExecutor(Replies(list(results))), initial=2.0)
    assert isinstance(check, StreamingExecutor)
    tasks: list[Task] = [_task(0, 2.0), _task(1, 2.0)]
    streamed: list[Reply | None] = [None, None]
    check.run_each(tasks, lambda position, reply: streamed.__setitem__(position, reply))
    assert isinstance(streamed[0], Failure)
    assert "exceeds the round's clipping bound 2" in streamed[0].reason
    assert streamed[1] is results[1]
