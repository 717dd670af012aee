"""Optional mirrors of a run's metrics into MLflow and TensorBoard.

Off by default; ``fedloom run --mlflow URI`` or ``--tensorboard DIR`` turns one on. Each sink is
a round observer (``(record, state) → None``) plus ``close()``, so the runner knows nothing of
them. The packages are the ``tracking`` extra (``mlflow-skinny``, ``tensorboard``); asking for a
sink whose package is missing fails before training with the install line to run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from fedloom.core.errors import MissingExtra
from fedloom.engine import RoundRecord, ServerState


class TrackingError(Exception):
    """A metrics mirror that cannot be opened; the message names it and why."""


class MetricsSink(Protocol):
    """Receives every round's metrics; ``close`` flushes and ends the run there."""

    def __call__(self, record: RoundRecord, state: ServerState) -> None: ...

    def close(self) -> None: ...


def _finite(metrics: Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if math.isfinite(v)}


class TensorBoardSink:
    """Writes each round's metrics as scalars (step = round) to a TensorBoard log directory."""

    def __init__(self, logdir: str | Path, *, run_name: str):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise MissingExtra("TensorBoard logging", "torch,tracking") from error
        self._writer: Any = SummaryWriter(log_dir=str(Path(logdir) / run_name))

    def __call__(self, record: RoundRecord, state: ServerState) -> None:
        for name, value in _finite(record.metrics).items():
            self._writer.add_scalar(name, value, global_step=record.round)

    def close(self) -> None:
        self._writer.flush()
        self._writer.close()


class MLflowSink:
    """Logs the experiment's settings as params and each round's metrics (step = round)."""

    def __init__(self, tracking_uri: str, *, run_name: str, params: Mapping[str, Any]):
        try:
            import mlflow
        except ImportError as error:
            raise MissingExtra("MLflow logging", "tracking") from error
        try:
            self._client: Any = mlflow.MlflowClient(tracking_uri=tracking_uri)
            experiment = self._client.get_experiment_by_name("fedloom")
            experiment_id = (
                experiment.experiment_id
                if experiment
                else self._client.create_experiment("fedloom")
            )
            self._run_id = self._client.create_run(experiment_id, run_name=run_name).info.run_id
            for key, value in params.items():
                self._client.log_param(self._run_id, key, value)
        except Exception as error:  # MLflow raises many types; the user needs one line
            message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise TrackingError(f"cannot log to MLflow at {tracking_uri!r}: {message}") from error

    @property
    def run_id(self) -> str:
        return str(self._run_id)

    def __call__(self, record: RoundRecord, state: ServerState) -> None:
        from mlflow.entities import Metric

        timestamp = 0
        metrics = [
            Metric(name, value, timestamp, record.round)
            for name, value in _finite(record.metrics).items()
        ]
        self._client.log_batch(self._run_id, metrics=metrics)

    def close(self) -> None:
        self._client.set_terminated(self._run_id)
