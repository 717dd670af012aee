"""RunAuditor on hand-made rounds: privacy spent, refused updates, aborted rounds, and the
compliance report's wording of each."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedloom.auditing import AuditingExecutor, RunAuditor, vector_hash
from fedloom.compliance import compliance_report
from fedloom.core.messages import Broadcast, ClientResult
from fedloom.engine import RoundRecord, ServerState
from fedloom.engine.history import Rejection
from fedloom.engine.tasks import Failure, Reply, Task, TrainTask
from fedloom.optimizers import OptimizerState
from fedloom.store import RunStore

PARAMS = np.arange(4, dtype=np.float32)


class Echo:
    """A real executor: client 2 fails, the others send back their id as an update."""

    def run(self, tasks: list[Task]) -> list[Reply]:
        return [
            Failure("out of memory")
            if t.client == 2
            else ClientResult(np.full(4, t.client, np.float32), 10)
            for t in tasks
        ]


def test_rounds_with_privacy_refusals_and_an_abort(tmp_path: Path) -> None:
    audited = AuditingExecutor(Echo())
    with RunStore.open(tmp_path / "fedloom.db") as store:
        run = store.create_run(name="hand", config="", seed=0, code_version="t")
        auditor = RunAuditor(store.audit(run))
        auditor.started(stages=["clip"], algorithm="fedavg", reducer="median", attackers=1)
        audited.run([TrainTask(c, Broadcast(0, PARAMS, 0)) for c in (1, 2, 3)])
        record = RoundRecord(0, (1, 2, 3), (1, 3), (Rejection(2, "client failed: out of memory"),),
                             {"dp.epsilon": 1.25, "dp.delta": 1e-5})  # fmt: skip
        after = PARAMS + 1
        auditor.round(record, ServerState(1, after, OptimizerState(0), {}, ()), audited)
        auditor.round(RoundRecord(1, (4,), (), (), {}, aborted="1 usable updates, fewer than 2"),
                      ServerState(2, after, OptimizerState(0), {}, ()), audited)  # fmt: skip
        auditor.finished("completed", "done")
        entries = store.audit(run).entries()
        report = compliance_report(store, run)
    round0 = next(e.payload for e in entries if e.kind == "round")
    assert round0["privacy"] == {"dp.epsilon": 1.25, "dp.delta": 1e-5}
    assert round0["model_sent"] == vector_hash(PARAMS)
    assert round0["updates"] == {
        "client-1": vector_hash(np.full(4, 1, np.float32)),
        "client-3": vector_hash(np.full(4, 3, np.float32)),
    }
    assert round0["refused"] == [{"identity": "client-2", "reason": "client failed: out of memory"}]
    models = [e.payload for e in entries if e.kind == "model"]
    assert models == [{"round": 0, "hash": vector_hash(after), "parent": vector_hash(PARAMS),
                       "participants": ["client-1", "client-3"]}]  # fmt: skip
    assert [e.payload["identity"] for e in entries if e.kind == "join"] == [
        "client-1", "client-2", "client-3", "client-4"
    ]  # fmt: skip
    assert "ε = 1.25, δ = 1e-05" in report
    assert "Clipping:** yes" in report
    assert "median, tolerating 1 malicious parties" in report
    assert "round 0: update from client-2 not used: client failed: out of memory" in report
    assert "round 1 aborted: 1 usable updates, fewer than 2" in report
    assert "| client-2 | 0 | 0 | 1 |" in report
