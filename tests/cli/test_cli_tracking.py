"""``fedloom run --tensorboard DIR --mlflow URI`` mirrors every round's metrics there."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import experiment_text, fedloom

from fedloom.store import RunStore


def test_metrics_reach_tensorboard_and_mlflow(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MLflow 3 keeps its file store for users who opt in; a server URI needs no such flag.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    pytest.importorskip("mlflow")
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    (workdir / "a.toml").write_text(experiment_text(name="tracked", rounds=3))
    uri = (workdir / "mlruns").as_uri()
    fedloom("run", "a.toml", "--tensorboard", "tb", "--mlflow", uri, cwd=workdir)

    with RunStore.open(workdir / "runs" / "fedloom.db") as store:
        (info,) = store.runs()
        stored = [r.metrics["test_accuracy"] for r in store.rounds(info.id)]

    events = accumulator.EventAccumulator(str(workdir / "tb" / "tracked"))
    events.Reload()
    scalars = events.Scalars("test_accuracy")
    assert [s.step for s in scalars] == [0, 1, 2]
    assert [s.value for s in scalars] == pytest.approx(stored, rel=1e-6)

    import mlflow

    bad = fedloom("run", "a.toml", "--mlflow", "nosuch://x", cwd=workdir, check=False)
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: cannot log to MLflow at 'nosuch://x'")

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("fedloom")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "tracked"
    assert run.data.params["algorithm"] == "fedavg"
    history = client.get_metric_history(run.info.run_id, "test_accuracy")
    assert [m.step for m in history] == [0, 1, 2]
    assert [m.value for m in history] == pytest.approx(stored, rel=1e-9)
