"""A run checkpointed into the store and resumed from it continues bit-identically."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import fedloom as fl
from fedloom.engine import RoundRecord, ServerState
from fedloom.engine.loop import RoundCallback
from fedloom.executors import InProcessExecutor
from fedloom.store import Checkpoint, RunStore

pytest.importorskip("sklearn")


def test_scaffold_resumed_from_the_store_matches_a_straight_run(tmp_path: Path) -> None:
    data = fl.data.digits().split(fl.data.iid(), clients=6, seed=0)
    model = fl.SoftmaxRegression(features=64, classes=10)
    algorithm = fl.scaffold(fl.local_sgd(model, lr=0.1, batch_size=64))
    population = [c.client_id for c in data.clients]
    plan = fl.engine.schedule(rounds=4, cohort=fl.poisson(0.6), seed=5, federated_eval=False)

    def executor() -> InProcessExecutor:
        return InProcessExecutor(algorithm.client, data.clients)

    straight = fl.engine.train(algorithm, executor(), plan, population=population)

    def recorder(store: RunStore, run_id: str, ex: InProcessExecutor) -> RoundCallback:
        def on_round(record: RoundRecord, state: ServerState) -> None:
            store.record_round(run_id, record, checkpoint=Checkpoint(state, ex.states))

        return on_round

    path = tmp_path / "runs" / "fedloom.db"
    with RunStore.open(path) as store:
        run_id = store.create_run(name="scaffold", config="", seed=5, code_version="test")
        first = executor()
        half = replace(plan, rounds=2)
        on_round = recorder(store, run_id, first)
        fl.engine.train(algorithm, first, half, population=population, on_round=on_round)
        store.finish(run_id, status="interrupted")

    with RunStore.open(path, create=False) as store:
        cp = store.latest_checkpoint(run_id)
        assert cp is not None
        assert cp.round == 2
        assert cp.clients, "SCAFFOLD clients keep control variates"
        store.reopen(run_id)
        second = executor()
        second.states.update(cp.clients)
        resumed = fl.engine.train(
            algorithm, second, plan, population=population, state=cp.state,
            on_round=recorder(store, run_id, second),
        )  # fmt: skip
        store.finish(run_id, status="completed", stopped=resumed.stopped)
        rounds = store.rounds(run_id)

    assert resumed.params.tobytes() == straight.params.tobytes()
    assert [r.round for r in rounds] == [0, 1, 2, 3]
    for got, want in zip(rounds, straight.records, strict=True):
        assert (got.cohort, got.accepted, got.rejected) == (
            want.cohort,
            want.accepted,
            want.rejected,
        )
        assert got.metrics == pytest.approx(dict(want.metrics))
    assert np.array_equal(
        rounds[-1].metrics["update_norm"], straight.records[-1].metrics["update_norm"]
    )
