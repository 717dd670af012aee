"""Per-round output of ``fedloom run``: a live bar on a terminal, plain lines in a log, JSON lines
for machines, or nothing.

A live bar is drawn only when stdout is a terminal, so a log file never fills with redraws.
"""

from __future__ import annotations

import json
import math
import sys
import time
from types import TracebackType
from typing import Literal

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from fedloom.engine import RoundRecord, ServerState

Mode = Literal["auto", "bar", "lines", "json", "quiet"]
SHOWN = ("train_loss", "test_loss", "test_accuracy", "client_test_accuracy", "dp.epsilon")


class RoundProgress:
    """A context manager whose ``update`` is the runner's per-round observer."""

    def __init__(self, *, name: str, rounds: int, done: int = 0, mode: Mode = "auto"):
        if mode == "auto":
            mode = "bar" if sys.stdout.isatty() else "lines"
        self.mode = mode
        self.name, self.rounds, self.done = name, rounds, done
        self.started = time.perf_counter()
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> RoundProgress:
        if self.mode == "bar":
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=Console(),
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(
                self.name, total=self.rounds, completed=self.done, status=""
            )
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.__exit__(kind, error, trace)

    def update(self, record: RoundRecord, state: ServerState) -> None:
        status = f"clients {len(record.accepted)}/{len(record.cohort)}"
        if record.aborted:
            status += " aborted"
        shown = {k: record.metrics[k] for k in SHOWN if k in record.metrics}
        if self.mode == "json":
            line = {
                "run": self.name,
                "round": record.round,
                "rounds": self.rounds,
                "cohort": list(record.cohort),
                "accepted": list(record.accepted),
                "rejected": [{"client": r.client, "reason": r.reason} for r in record.rejected],
                "aborted": record.aborted,
                "seconds": record.seconds,
                "metrics": {k: _json_number(v) for k, v in record.metrics.items()},
            }
            print(json.dumps(line), flush=True)
        elif self.mode == "lines":
            metrics = "  ".join(f"{k}={v:.4f}" for k, v in shown.items())
            eta = self._eta(state.round)
            print(
                f"{self.name}  round {state.round}/{self.rounds}  {status}  {metrics}  eta {eta}",
                flush=True,
            )
        elif self._progress is not None and self._task is not None:
            metrics = "  ".join(f"{k.replace('test_', '')} {v:.3f}" for k, v in shown.items())
            self._progress.update(self._task, completed=state.round, status=f"{status}  {metrics}")

    def _eta(self, completed: int) -> str:
        ran = completed - self.done
        if ran <= 0:
            return "?"
        seconds = (time.perf_counter() - self.started) / ran * (self.rounds - completed)
        return f"{seconds:.0f}s"


def _json_number(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)
