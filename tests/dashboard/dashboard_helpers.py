"""Helpers for the dashboard tests: stores with runs in them, a server, HTTP requests."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import fedloom
from fedloom.engine import RoundRecord
from fedloom.engine.history import Rejection
from fedloom.store import RunStore

TOKEN = "test-token-0123456789abcdef"
EVIL = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"

EXPERIMENT = """
name = "{name}"

[data]
dataset = "digits"
clients = 12
test_fraction = 0.2
holdout = 0.2

[data.partition]
kind = "dirichlet"
alpha = 0.5

[model]
kind = "softmax"

[train]
lr = 0.5
epochs = 1
batch_size = 32

[algorithm]
name = "fedavg"

[run]
rounds = {rounds}
cohort = 6
seed = 1
"""


def experiment_text(name: str = "tiny", rounds: int = 3) -> str:
    return EXPERIMENT.format(name=name, rounds=rounds)


def record(
    round_: int, *, accuracy: float, loss: float, cohort: tuple[int, ...] = (0, 1, 2, 3),
    rejected: tuple[Rejection, ...] = (), extra: dict[str, float] | None = None,
    aborted: str | None = None,
) -> RoundRecord:  # fmt: skip
    """A round as the engine records one: accepted = cohort less the rejected."""
    out = {r.client for r in rejected}
    metrics = {
        "test_accuracy": accuracy, "test_loss": loss, "train_loss": loss + 0.5,
        "bytes_up": 1000.0 * (round_ + 1), "bytes_down": 2000.0 * (round_ + 1),
        **(extra or {}),
    }  # fmt: skip
    return RoundRecord(
        round=round_, cohort=cohort, accepted=tuple(c for c in cohort if c not in out),
        rejected=rejected, metrics=metrics, aborted=aborted, seconds=0.25,
    )  # fmt: skip


def add_run(
    store: RunStore, name: str, records: list[RoundRecord], *, status: str | None = "completed",
    config: str = "[run]\nrounds = 5\n",
) -> str:  # fmt: skip
    """A run with these rounds; ``status=None`` leaves it running."""
    run_id = store.create_run(name=name, config=config, seed=0, code_version="test")
    for r in records:
        store.record_round(run_id, r)
    if status is not None:
        store.finish(run_id, status=status, stopped="test")
    return run_id


def request(
    url: str, *, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of a real HTTP request; HTTP errors are answers, not raised."""
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def get_json(url: str, **kwargs: Any) -> tuple[int, Any]:
    status, _, body = request(url, **kwargs)
    return status, json.loads(body)


def subprocess_env() -> dict[str, str]:
    """The environment for a ``python -m fedloom`` child that imports this same fedloom, whatever
    its working directory."""
    source = str(Path(fedloom.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def store_file(tmp_path: Path) -> Path:
    return tmp_path / "runs" / "fedloom.db"
